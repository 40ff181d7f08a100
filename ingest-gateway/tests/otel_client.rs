//! The real OpenTelemetry side: the shoalsoft plugin's span processor (the same code as Pants'
//! built-in backend) with the real OTLP/HTTP exporter, driven by tests/otel-client/emit.py.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;

use buildstats_core::tokens::Scope;
use buildstats_schemas::{decode, Event};
use common::*;

async fn emit(gw: &TestGateway, token: &str, args: &[&str]) -> serde_json::Value {
    let root = repo_root();
    let status = tokio::process::Command::new(root.join("dev/python-env")).stdout(Stdio::null()).status().await.unwrap();
    assert!(status.success(), "dev/python-env failed: the OTLP client tests need the Python venv");
    let out = std::env::temp_dir().join(format!("bs-emit-{}.json", uuid::Uuid::new_v4().simple()));
    let output = tokio::process::Command::new(root.join("target/venv/bin/python"))
        .arg(root.join("tests/otel-client/emit.py"))
        .args(["--endpoint", &gw.base_url, "--token", token, "--out"])
        .arg(&out)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "emit.py {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    result
}

/// The build of an emitted trace, checked against what the emitter says it sent.
fn check_build(topic: &TopicContents, result: &serde_json::Value) -> buildstats_schemas::RunEnded {
    let run_id = format!("otlp_{}", result["trace_id"].as_str().unwrap());
    let events = topic.events_of(&run_id);
    assert!(matches!(events[0], Event::RunStarted(_)), "{run_id}: the run start comes first");
    let ends: Vec<_> = events.iter().filter_map(|e| match e { Event::RunEnded(r) => Some(r.clone()), _ => None }).collect();
    assert!(!ends.is_empty(), "{run_id}: no final report");
    let distinct: BTreeSet<&str> = ends.iter().map(|e| e.header.event_id.as_str()).collect();
    assert_eq!(distinct.len(), 1, "{run_id}: a repeated root batch must repeat the same event, not a new one");
    assert!(ends.iter().all(|e| (&e.run, &e.final_document.sha256) == (&ends[0].run, &ends[0].final_document.sha256)));
    let mut workunits = BTreeSet::new();
    for e in &events {
        if let Event::WorkunitsUpdated(u) = e {
            let Event::WorkunitList(list) = decode(&topic.blob(&u.workunits)).unwrap() else { panic!() };
            workunits.extend(list.workunits.into_iter().map(|w| w.workunit_id));
        }
    }
    let sent: BTreeSet<String> = serde_json::from_value(result["workunit_ids"].clone()).unwrap();
    assert_eq!(workunits, sent, "every span the exporter sent is a workunit of the build");
    let counters: std::collections::BTreeMap<String, i64> = serde_json::from_value(result["counters"].clone()).unwrap();
    assert!(!counters.is_empty());
    assert_eq!(ends[0].run.counters, counters, "the root's pantsbuild.metrics-v0");
    ends[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_spans_from_the_real_exporter_become_one_build() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let plain = emit(&gw, &token, &["--spans", "3000"]).await;
    let gzip_shuffled = emit(&gw, &token, &["--spans", "2000", "--gzip", "--shuffle-seed", "7", "--repeat-batches"]).await;
    let json = emit(&gw, &token, &["--spans", "1500", "--encoding", "json", "--gzip"]).await;
    let failed = emit(&gw, &token, &["--spans", "1200", "--outcome", "failure", "--ci"]).await;
    assert!(plain["batches"].as_u64().unwrap() >= 30, "batches of at most 100 spans");

    let topic = gw.topic().await;
    let end = check_build(&topic, &plain);
    assert_eq!((end.via.as_str(), end.run.outcome.as_str()), ("otlp", "SUCCESS"));
    assert_eq!((end.run.org.as_str(), end.run.repo.as_str()), (gw.org.as_str(), gw.repo.as_str()));
    assert!(!end.run.goals.is_empty(), "goals recognised from rule names");
    assert!(end.run.run_time_ms.unwrap() > 0);
    check_build(&topic, &gzip_shuffled);
    check_build(&topic, &json);
    let failed_end = check_build(&topic, &failed);
    assert_eq!(failed_end.run.outcome, "FAILURE", "ERROR spans in earlier batches fail the run");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_exporter_is_refused_without_a_valid_ingest_token_and_for_garbage() {
    let gw = TestGateway::start().await;
    let (read_token, _) = gw.token_for(&gw.org, &gw.repo, Scope::Read, false).await;
    emit(&gw, "not-a-token", &["--spans", "200", "--expect-status", "403"]).await;
    emit(&gw, &read_token, &["--spans", "200", "--expect-status", "403"]).await;
    let token = gw.token().await;
    emit(&gw, &token, &["--malformed"]).await;
    // A run that never finished: workunits, but no final report (it shows as running).
    let unfinished = emit(&gw, &token, &["--spans", "300", "--no-root"]).await;
    let topic = gw.topic().await;
    let run_id = format!("otlp_{}", unfinished["trace_id"].as_str().unwrap());
    let events = topic.events_of(&run_id);
    assert!(matches!(events[0], Event::RunStarted(_)), "a running build has its run start");
    assert!(events[1..].iter().all(|e| matches!(e, Event::WorkunitsUpdated(_))), "and no final report");
    assert!(events.len() > 1);
    assert_eq!(topic.records.iter().filter(|r| !r.key.ends_with(&run_id)).count(), 0, "refused exports left records");
    gw.stop().await;
}
