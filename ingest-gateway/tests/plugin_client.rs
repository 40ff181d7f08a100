//! The published Pants plugin's own client code (toolchain.pants.plugin 0.27.0, driven by
//! tests/plugin-client/drive.py) against a real gateway, then the topic read back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;

use buildstats_core::tokens::Scope;
use buildstats_schemas::Event;
use common::*;

/// `dev/python-env` (idempotent), then the venv's python.
async fn python() -> PathBuf {
    let root = repo_root();
    let status = tokio::process::Command::new(root.join("dev/python-env"))
        .stdout(Stdio::null())
        .status()
        .await
        .expect("dev/python-env runs");
    assert!(status.success(), "dev/python-env failed: the plugin-client tests need the Python venv (see its output)");
    root.join("target/venv/bin/python")
}

async fn drive(gw: &TestGateway, token: Option<&str>, scenario: &str, extra: &[&str]) -> serde_json::Value {
    let out = std::env::temp_dir().join(format!("bs-drive-{}.json", uuid::Uuid::new_v4().simple()));
    let mut command = tokio::process::Command::new(python().await);
    command
        .arg(repo_root().join("tests/plugin-client/drive.py"))
        .args(["--base-url", &gw.base_url, "--org", &gw.org, "--repo", &gw.repo, "--scenario", scenario])
        .arg("--fixtures")
        .arg(fixtures_dir())
        .arg("--out")
        .arg(&out)
        .args(extra);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    let output = command.output().await.expect("drive.py runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "plugin client scenario {scenario} failed:\n{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    assert_eq!(result["ok"], serde_json::json!(true), "{scenario}: {}", result["failures"]);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_plugin_client_completes_every_call_and_its_runs_are_on_the_topic() {
    let gw = TestGateway::start().await;
    let (token, _) = gw.token_for(&gw.org, &gw.repo, Scope::Ingest, true).await;
    let result = drive(&gw, Some(&token), "all", &[]).await;

    // Every request the client made got a 2xx and an X-Request-Id.
    let sent = result["sent"].as_array().unwrap();
    assert!(sent.len() >= 8, "{} requests", sent.len());
    for request in sent {
        let status = request["status"].as_u64().unwrap();
        assert!((200..300).contains(&status), "{request}");
        assert!(request["request_id"].is_string(), "{request}");
    }
    let steps: BTreeSet<&str> = result["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for step in ["token_refresh", "plugin_config", "run_start", "workunits", "run_end", "artifacts", "run_end_big", "batch"] {
        assert!(steps.contains(step), "step {step} missing: {steps:?}");
    }

    let topic = gw.topic().await;
    let by_step: BTreeMap<String, Vec<String>> = serde_json::from_value(result["run_ids"].clone()).unwrap();
    let all: Vec<String> = serde_json::from_value(result["all_run_ids"].clone()).unwrap();
    assert!(!all.is_empty());
    for run_id in &all {
        assert!(!topic.events_of(run_id).is_empty(), "accepted run {run_id} has no records");
    }
    let main_run = &by_step["run_start"][0];
    let events = topic.events_of(main_run);
    assert!(matches!(events[0], Event::RunStarted(_)), "run start first");
    assert!(events.iter().any(|e| matches!(e, Event::WorkunitsUpdated(_))));
    assert!(events.iter().any(|e| matches!(e, Event::RunEnded(_))));
    let Some(Event::ArtifactsUploaded(up)) = events.iter().find(|e| matches!(e, Event::ArtifactsUploaded(_))) else {
        panic!("no artifacts for {main_run}")
    };
    let log = up.artifacts.iter().find(|a| a.name == "pants_run_log").expect("the run log");
    assert!(topic.blob(&log.blob).len() >= 5 * 1024 * 1024, "multi-MB log stored whole");
    assert!(up.artifacts.iter().any(|a| a.descriptor_name.as_deref() == Some("coverage_xml")));
    let Some(Event::RunEnded(end)) = events.iter().find(|e| matches!(e, Event::RunEnded(_))) else { unreachable!() };
    assert_eq!(end.run.user, "asherf", "CI token: attributed to the CI actor");

    let big = &by_step["run_end_big"][0];
    let Event::RunEnded(big_end) = topic.events_of(big)[0] else { panic!("no run end for the big report") };
    assert!(topic.blob(&big_end.final_document).len() > 3_000_000, "the 3.4 MB report, whole");
    for run_id in &by_step["batch"] {
        assert!(topic.events_of(run_id).iter().any(|e| matches!(e, Event::RunEnded(r) if r.via == "batch")), "{run_id}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_sends_uncompressed_bodies_too() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let result = drive(&gw, Some(&token), "run", &["--compression-threshold", "1000000000"]).await;
    let topic = gw.topic().await;
    let all: Vec<String> = serde_json::from_value(result["all_run_ids"].clone()).unwrap();
    for run_id in &all {
        assert!(!topic.events_of(run_id).is_empty(), "{run_id}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_is_refused_with_bad_tokens_and_on_other_repos() {
    let gw = TestGateway::start().await;
    drive(&gw, None, "bad-token", &[]).await;
    let token = gw.token().await;
    let result = drive(&gw, Some(&token), "wrong-repo", &[]).await;
    let topic = gw.topic().await;
    let all: Vec<String> = serde_json::from_value(result["all_run_ids"].clone()).unwrap_or_default();
    for run_id in &all {
        assert!(topic.for_run(run_id).is_empty(), "a refused request left records for {run_id}");
    }
    assert!(topic.records.is_empty());
    gw.stop().await;
}
