//! The store frozen for 30 s (SIGSTOP to moto, then SIGCONT) while builds keep arriving: the
//! sinks wait and retry, skip nothing, and resume. Its own test binary so no other test sees
//! moto frozen. moto keeps its data only in memory: it is never restarted here.

mod support;

use std::time::Duration;

use reqwest::Method;
use support::common::{fixture_with_new_run_id, send_doc, status_json};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_frozen_for_30_s_loses_nothing_and_the_sinks_resume() {
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } = SinkTest::start().await;
    let dynamo = SinkProcess::spawn(&config, "dynamodb", None);
    let s3 = SinkProcess::spawn(&config, "s3", None);
    dynamo.wait_ready().await;
    s3.wait_ready().await;
    let pid_file = support::common::services_env()
        .get("BUILDSTATS_DEV_MOTO_PID_FILE")
        .cloned()
        .expect("BUILDSTATS_DEV_MOTO_PID_FILE is not set: run `dev/services up` (it starts moto)");
    let moto_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{pid_file}: {e}; run `dev/services up`"))
        .trim()
        .parse()
        .expect("a pid");

    let c = reqwest::Client::new();
    let mut sent = Vec::new();
    let names = ["ci_build_pr_final_1.json", "run_lint_failed.json", "typecheck_with_local_cache.json"];
    let mut send = |i: usize| {
        let (run_id, doc) = fixture_with_new_run_id(names[i % names.len()]);
        sent.push((run_id.clone(), doc.clone()));
        let c = c.clone();
        let start = gw.url(&format!("{run_id}/"));
        let token = token.clone();
        async move {
            let (status, body, _) = status_json(send_doc(&c, Method::POST, &start, &token, &doc).await).await;
            assert_eq!(status, 201, "{body}");
            let (status, body, _) = status_json(send_doc(&c, Method::PATCH, &start, &token, &doc).await).await;
            assert_eq!(status, 201, "{body}");
        }
    };
    for i in 0..10 {
        send(i).await;
    }
    signal(moto_pid, "STOP");
    // Make sure moto comes back whatever happens below.
    struct Thaw(i32);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").arg("-CONT").arg(self.0.to_string()).status();
        }
    }
    let thaw = Thaw(moto_pid);
    let frozen_at = std::time::Instant::now();
    for i in 10..30 {
        send(i).await;
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(frozen_at.elapsed())).await;
    let retries_while_frozen = dynamo.metric("sink_retries_total").await + s3.metric("sink_retries_total").await;
    signal(moto_pid, "CONT");
    drop(thaw);
    assert!(retries_while_frozen > 0.0, "the sinks noticed the store was gone");

    let group = |sink: &str| format!("{}-{sink}", config.sinks.group_prefix);
    wait_caught_up(&config, &group("dynamodb"), Duration::from_secs(240)).await;
    wait_caught_up(&config, &group("s3"), Duration::from_secs(240)).await;
    let items = stores.items().await;
    assert_eq!(items.len(), sent.len(), "every build, once");
    assert!(items.values().all(|i| s(i, "state") == "final"));
    let objects = stores.objects(&format!("{}/", config.s3.prefix)).await;
    assert_eq!(objects.len(), sent.len() * 4, "per build: the start and final documents and their archived events");
    for (run_id, doc) in &sent {
        let (back, _) = stores.get(&format!("{}/{}/{}/{run_id}/final.json", config.s3.prefix, gw.org, gw.repo)).await;
        assert_eq!(&back, doc);
    }
    assert_eq!(dynamo.metric("sink_dead_lettered_total").await, 0.0, "an outage never dead-letters");
    assert_eq!(s3.metric("sink_dead_lettered_total").await, 0.0, "an outage never dead-letters");
    gw.stop().await;
}
