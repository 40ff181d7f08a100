//! The DynamoDB and S3 sinks end to end: the gateway (in-process) publishes to tansu, real
//! `buildstats sink` processes consume, moto stores. Faults are done to the real processes.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use buildstats_core::config::Config;
use buildstats_core::kafka;
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::Method;
use serde_json::json;
use support::common::{
    build_stats_fixtures, fixture_with_new_run_id, fixtures_dir, new_run_id, send_artifacts, send_doc, status_json,
    TestGateway,
};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);

fn group(config: &Config, sink: &str) -> String {
    format!("{}-{sink}", config.sinks.group_prefix)
}

struct SentBuild {
    run_id: String,
    doc: Vec<u8>,
}

/// Run start and run end of a fixture, as the plugin sends them (a 503 is retried after its
/// `Retry-After`, as the plugin does: the shared test broker can be slow to acknowledge).
async fn send_build(gw: &TestGateway, token: &str, name: &str) -> SentBuild {
    let c = reqwest::Client::new();
    let (run_id, doc) = fixture_with_new_run_id(name);
    let url = gw.url(&format!("{run_id}/"));
    for (method, what) in [(Method::POST, "run start"), (Method::PATCH, "run end")] {
        send_accepted(&c, method, &url, token, &doc, &format!("{what} of {name}")).await;
    }
    SentBuild { run_id, doc }
}

/// Everything the stores hold for this test: items, and objects with their ETags.
async fn snapshot(stores: &Stores) -> (BTreeMap<String, Item>, BTreeMap<String, (i64, String)>) {
    (stores.items().await, stores.objects("").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_becomes_one_item_and_one_build_prefix_and_duplicates_change_nothing() {
    // Big reports and the log still travel in chunks, in a tenth of the records of the 4 KiB
    // limit (the gateway tests cover that one); tansu's SQLite store stalls under far more.
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } =
        SinkTest::start_with(|c| c.kafka.record_limit_bytes = 64 * 1024).await;
    let dynamo = SinkProcess::spawn(&config, "dynamodb", None);
    let s3 = SinkProcess::spawn(&config, "s3", None);

    let mut sent = Vec::new();
    for name in build_stats_fixtures() {
        sent.push((name.clone(), send_build(&gw, &token, &name).await));
    }
    assert!(sent.len() >= 50, "{} fixtures", sent.len());

    // One build with a live workunit update and artifacts: a multi-MB log (chunked at the
    // 4 KiB test record limit), a coverage report with a descriptor, and a hostile name.
    let c = reqwest::Client::new();
    let extra_run = new_run_id();
    let fixture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures_dir().join("pants_pytest_with_address.json")).unwrap()).unwrap();
    let workunits = fixture["workunits"].as_array().unwrap().clone();
    let update = serde_json::to_vec(&json!({"run_id": extra_run, "workunits": workunits})).unwrap();
    let mut start_doc = fixture.clone();
    start_doc["run_info"]["id"] = json!(extra_run);
    let start_doc = serde_json::to_vec(&start_doc).unwrap();
    let (status, body, _) = status_json(send_doc(&c, Method::POST, &gw.url(&format!("{extra_run}/")), &token, &start_doc).await).await;
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = status_json(send_doc(&c, Method::POST, &gw.url(&format!("{extra_run}/workunits/")), &token, &update).await).await;
    assert_eq!(status, 201, "{body}");
    let log: Vec<u8> = (0..60_000).flat_map(|i| format!("12:00:{:02} [INFO] line {i} of the run\n", i % 60).into_bytes()).collect();
    let coverage = std::fs::read(fixtures_dir().join("pytest_coverage.xml")).unwrap();
    let part = "7f3e2a10c0b111ee8f0e0242ac120002";
    let descriptors = serde_json::to_vec(&json!({part: {"workunit_id": "abc", "name": "coverage_xml", "path": "dist/coverage.xml"}})).unwrap();
    let parts: [(&str, &[u8]); 4] = [("pants_run_log", &log), (part, &coverage), ("../../x", b"sneaky"), ("descriptors.json", &descriptors)];
    let response = send_artifacts(&c, &gw.url(&format!("{extra_run}/artifacts/")), &token, &parts).await;
    let (status, body, _) = status_json(response).await;
    assert_eq!(status, 201, "{body}");

    wait_caught_up(&config, &group(&config, "dynamodb"), CATCH_UP).await;
    wait_caught_up(&config, &group(&config, "s3"), CATCH_UP).await;

    let items = stores.items().await;
    assert_eq!(items.len(), sent.len() + 1, "one item per build");
    let build_prefix = |run_id: &str| format!("{}/{}/{}/{run_id}/", config.s3.prefix, gw.org, gw.repo);
    let objects = stores.objects("").await;
    for (name, build) in &sent {
        let pk = format!("{}/{}/{}", gw.org, gw.repo, build.run_id);
        let item = items.get(&pk).unwrap_or_else(|| panic!("{name}: no item {pk}"));
        assert_eq!(s(item, "state"), "final", "{name}");
        assert_eq!(s(item, "run_id"), build.run_id, "{name}");
        assert_eq!(s(item, "repo_key"), format!("{}/{}", gw.org, gw.repo));
        assert_eq!(s(item, "via"), "run_end", "{name}: written by the final report");
        let prefix = build_prefix(&build.run_id);
        let (start, start_type) = stores.get(&format!("{prefix}start.json")).await;
        assert_eq!(start, build.doc, "{name}: start document byte-exact");
        let (end, end_type) = stores.get(&format!("{prefix}final.json")).await;
        assert_eq!(end, build.doc, "{name}: final document byte-exact");
        assert_eq!(start_type.as_deref(), Some("application/json"));
        assert_eq!(end_type.as_deref(), Some("application/json"));
        let (events, documents) = archive_of(&objects, &prefix);
        assert_eq!(documents, [format!("{prefix}final.json"), format!("{prefix}start.json")], "{name}");
        assert_eq!(events.len(), 2, "{name}: the run start and the final report are archived: {events:?}");
    }
    // One prefix per build, nothing else outside the staging area.
    let prefixes: std::collections::BTreeSet<String> = objects
        .keys()
        .filter(|k| !k.starts_with(&format!("{}/", config.sinks.staging_prefix)))
        .map(|k| k.rsplitn(2, '/').nth(1).unwrap().split('/').take(4).collect::<Vec<_>>().join("/"))
        .collect();
    assert_eq!(prefixes.len(), sent.len() + 1, "{prefixes:?}");

    // The extra build: running (no final report), its workunits, its artifacts.
    let extra_item = &items[&format!("{}/{}/{extra_run}", gw.org, gw.repo)];
    assert_eq!(s(extra_item, "state"), "running");
    let prefix = build_prefix(&extra_run);
    let mine: Vec<&String> = objects.keys().filter(|k| k.starts_with(&prefix)).collect();
    assert!(mine.iter().all(|k| !k[prefix.len()..].contains("..")), "{mine:?}");
    let (log_back, log_type) = stores.get(&format!("{prefix}artifacts/pants_run_log")).await;
    assert_eq!(log_back, log, "log byte-exact");
    assert!(log_type.unwrap().starts_with("text/plain"));
    let (cov_back, cov_type) = stores.get(&format!("{prefix}artifacts/{part}")).await;
    assert_eq!(cov_back, coverage);
    assert_eq!(cov_type.as_deref(), Some("application/xml"));
    let (descriptor, _) = stores.get(&format!("{prefix}artifacts/{part}.descriptor.json")).await;
    let descriptor: serde_json::Value = serde_json::from_slice(&descriptor).unwrap();
    assert_eq!(descriptor["descriptor_name"], json!("coverage_xml"));
    assert_eq!(descriptor["path"], json!("dist/coverage.xml"));
    let (sneaky, _) = stores.get(&format!("{prefix}artifacts/%2E%2E%2F%2E%2E%2Fx")).await;
    assert_eq!(sneaky, b"sneaky", "a hostile artifact name stays one segment inside its build");
    let (events, _) = archive_of(&objects, &prefix);
    assert_eq!(events.len(), 3, "run start, workunits and artifacts are archived: {events:?}");
    let workunit_keys: Vec<&&String> = mine.iter().filter(|k| k.contains("/workunits/")).collect();
    assert_eq!(workunit_keys.len(), 1, "{mine:?}");
    let (list, _) = stores.get(workunit_keys[0]).await;
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(list["workunits"].as_array().unwrap().len(), workunits.len());
    let artifact_ids = match &extra_item["artifact_ids"] {
        aws_sdk_dynamodb::types::AttributeValue::Ss(ids) => ids.clone(),
        other => panic!("artifact_ids: {other:?}"),
    };
    assert_eq!(artifact_ids.len(), 3, "{artifact_ids:?}");

    // Duplicates: the client retries every run end, then every record is delivered again.
    let before = snapshot(&stores).await;
    for (_, build) in sent.iter().take(10) {
        let (status, _, _) = status_json(send_doc(&c, Method::PATCH, &gw.url(&format!("{}/", build.run_id)), &token, &build.doc).await).await;
        assert_eq!(status, 201);
    }
    let republished = republish_topic(&config).await;
    assert!(republished > sent.len() * 2, "{republished} records");
    wait_caught_up(&config, &group(&config, "dynamodb"), CATCH_UP).await;
    wait_caught_up(&config, &group(&config, "s3"), CATCH_UP).await;
    let after = snapshot(&stores).await;
    assert_eq!(before.0, after.0, "DynamoDB items changed on duplicate delivery");
    assert_eq!(before.1, after.1, "S3 objects changed on duplicate delivery");
    assert_eq!(dynamo.metric("sink_dead_lettered_total").await, 0.0, "nothing dead-lettered:\n{}", dynamo.log_text());
    assert_eq!(s3.metric("sink_dead_lettered_total").await, 0.0, "nothing dead-lettered:\n{}", s3.log_text());
    // Caught up, each sink reports a lag of 0 for every partition (from librdkafka's
    // statistics, every 5 s): the gauge `buildstats replay` tells operators to watch.
    for sink in [&dynamo, &s3] {
        wait_until(&format!("{} to report sink_consumer_lag 0 on every partition", sink.name), Duration::from_secs(30), || async {
            let text = sink.metrics().await;
            let lags: Vec<&str> = text.lines().filter(|l| l.starts_with("sink_consumer_lag{")).collect();
            lags.len() == config.kafka.partitions as usize && metric_sum(&text, "sink_consumer_lag") == 0.0
        })
        .await;
    }
    gw.stop().await;
}

/// `n` builds from a rotation of fixtures.
async fn send_builds(gw: &TestGateway, token: &str, n: usize) -> Vec<SentBuild> {
    let names = ["ci_build_pr_final_1.json", "run_lint_failed.json", "typecheck_with_local_cache.json", "pants_pytest_with_address.json"];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(send_build(gw, token, names[i % names.len()]).await);
    }
    out
}

/// Exactly the sent builds, each final, each with both documents.
async fn assert_exactly(config: &Config, gw: &TestGateway, stores: &Stores, sent: &[SentBuild], sinks: &[&str]) {
    if sinks.contains(&"dynamodb") {
        let items = stores.items().await;
        assert_eq!(items.len(), sent.len(), "one item per build");
        for b in sent {
            let item = &items[&format!("{}/{}/{}", gw.org, gw.repo, b.run_id)];
            assert_eq!(s(item, "state"), "final");
        }
    }
    if sinks.contains(&"s3") {
        let objects = stores.objects(&format!("{}/", config.s3.prefix)).await;
        assert_eq!(objects.len(), sent.len() * 4, "per build: a start and a final document, and their two archived events");
        for b in sent {
            let prefix = format!("{}/{}/{}/{}/", config.s3.prefix, gw.org, gw.repo, b.run_id);
            assert!(objects.contains_key(&format!("{prefix}final.json")), "{prefix}final.json");
            // Reassembled exactly, also when a restart fell between a report's chunks.
            let (back, _) = stores.get(&format!("{prefix}final.json")).await;
            assert!(back == b.doc, "{prefix}final.json differs from what the client sent");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_nothing() {
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } = SinkTest::start().await;
    let mut dynamo = SinkProcess::spawn(&config, "dynamodb", None);
    let mut s3 = SinkProcess::spawn(&config, "s3", None);
    let mut sent = send_builds(&gw, &token, 60).await;
    // Mid-stream: some builds are in, the rest keep coming.
    wait_until("the first builds in DynamoDB", Duration::from_secs(120), || async { !stores.items().await.is_empty() }).await;
    let (producing, ()) = tokio::join!(send_builds(&gw, &token, 60), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        dynamo.kill9();
        s3.kill9();
    });
    sent.extend(producing);
    let in_store_at_kill = stores.items().await.len();
    assert!(in_store_at_kill < sent.len(), "the kill must come mid-stream ({in_store_at_kill} of {})", sent.len());
    dynamo.restart();
    s3.restart();
    wait_caught_up(&config, &group(&config, "dynamodb"), CATCH_UP).await;
    wait_caught_up(&config, &group(&config, "s3"), CATCH_UP).await;
    assert_exactly(&config, &gw, &stores, &sent, &["dynamodb", "s3"]).await;
    // A clean stop commits and exits 0.
    assert!(dynamo.terminate().success(), "{}", dynamo.log_text());
    assert!(s3.terminate().success(), "{}", s3.log_text());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_the_rest_flows_and_redrive_sends_them_back_once() {
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } = SinkTest::start().await;
    let mut dynamo = SinkProcess::spawn(&config, "dynamodb", None);
    let s3 = SinkProcess::spawn(&config, "s3", None);
    // Poison: undecodable bytes on a valid key, and a record without a key.
    let producer: FutureProducer = kafka::producer_config(&config.kafka).unwrap().create().unwrap();
    let poison_key = format!("{}/{}/poisoned_run", gw.org, gw.repo);
    producer
        .send(FutureRecord::to(&config.kafka.topic).key(&poison_key).payload(b"definitely not avro".as_slice()), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    producer
        .send(FutureRecord::<[u8], [u8]>::to(&config.kafka.topic).payload(b"no key".as_slice()), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let sent = send_builds(&gw, &token, 6).await;
    wait_caught_up(&config, &group(&config, "dynamodb"), CATCH_UP).await;
    wait_caught_up(&config, &group(&config, "s3"), CATCH_UP).await;
    assert_exactly(&config, &gw, &stores, &sent, &["dynamodb", "s3"]).await;
    assert_eq!(dynamo.metric("sink_dead_lettered_total").await, 2.0);
    assert_eq!(s3.metric("sink_dead_lettered_total").await, 2.0);

    let dlq = read_raw(&config, &config.kafka.dead_letter_topic).await;
    assert_eq!(dlq.len(), 4, "each sink dead-letters both records");
    let mine: Vec<_> = dlq.iter().filter(|r| r.headers.get("bs-dlq-sink").map(String::as_str) == Some("dynamodb")).collect();
    assert_eq!(mine.len(), 2);
    let poisoned = mine.iter().find(|r| r.key.as_deref() == Some(poison_key.as_str())).expect("the poisoned record");
    assert_eq!(poisoned.value.as_deref(), Some(b"definitely not avro".as_slice()), "kept byte for byte");
    assert!(poisoned.headers["bs-dlq-error"].contains("cannot be decoded"), "{:?}", poisoned.headers);
    assert_eq!(poisoned.headers["bs-dlq-source-topic"], config.kafka.topic);
    assert!(poisoned.headers["bs-dlq-source-partition"].parse::<i32>().is_ok());
    assert!(poisoned.headers["bs-dlq-source-offset"].parse::<i64>().is_ok());

    // Redrive for dynamodb, with that sink stopped so nothing new is dead-lettered meanwhile:
    // both go back, marked for dynamodb only; a second run sends nothing.
    assert!(dynamo.terminate().success(), "{}", dynamo.log_text());
    let redrive = |config: &Config| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_buildstats"))
            .args(["dlq", "redrive", "--sink", "dynamodb"])
            .envs(config_env(config))
            .env("BUILDSTATS_ENV_FILE", "/nonexistent")
            .output()
            .unwrap();
        assert!(out.status.success(), "redrive failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let first = redrive(&config);
    assert!(first.contains("sent back 2 "), "{first}");
    let second = redrive(&config);
    assert!(second.contains("nothing to do"), "a second redrive sends nothing: {second}");
    let back: Vec<_> = read_raw(&config, &config.kafka.topic)
        .await
        .into_iter()
        .filter(|r| r.headers.get("bs-redrive-for").map(String::as_str) == Some("dynamodb"))
        .collect();
    assert_eq!(back.len(), 2, "each dead letter back once");
    assert!(back.iter().all(|r| !r.headers.contains_key("bs-dlq-error")), "dead-letter headers are not carried back");

    dynamo.restart();
    wait_caught_up(&config, &group(&config, "dynamodb"), CATCH_UP).await;
    wait_caught_up(&config, &group(&config, "s3"), CATCH_UP).await;
    let s3_skipped = s3.metric("sink_records_skipped_total").await;
    assert!(s3_skipped >= 2.0, "s3 skips records redriven for dynamodb ({s3_skipped})");
    assert_eq!(s3.metric("sink_dead_lettered_total").await, 2.0, "s3 did not take them again");
    // Still poison for dynamodb (nothing was fixed): dead-lettered again, nothing else changed.
    assert_eq!(dynamo.metric("sink_dead_lettered_total").await, 2.0, "{}", dynamo.log_text());
    assert_eq!(read_raw(&config, &config.kafka.dead_letter_topic).await.len(), 6);
    assert_exactly(&config, &gw, &stores, &sent, &["dynamodb", "s3"]).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_in_one_group_split_the_partitions_and_write_each_build_once() {
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } = SinkTest::start().await;
    let a = SinkProcess::spawn(&config, "dynamodb", None);
    let b = SinkProcess::spawn(&config, "dynamodb", None);
    wait_until("both members to own partitions", Duration::from_secs(90), || async {
        let (pa, pb) = (a.metric("sink_partitions_assigned").await, b.metric("sink_partitions_assigned").await);
        pa >= 1.0 && pb >= 1.0 && pa + pb == config.kafka.partitions as f64
    })
    .await;
    let sent = send_builds(&gw, &token, 40).await;
    wait_caught_up(&config, &group(&config, "dynamodb"), CATCH_UP).await;
    assert_exactly(&config, &gw, &stores, &sent, &["dynamodb"]).await;
    let (wa, wb) = (a.metric("sink_records_written_total").await, b.metric("sink_records_written_total").await);
    assert!(wa > 0.0 && wb > 0.0, "both members wrote ({wa}, {wb})");
    assert_eq!(wa + wb, (sent.len() * 2) as f64, "each record written once between them");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_joining_mid_stream_takes_partitions_and_every_build_is_stored_once() {
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } = SinkTest::start().await;
    let a = SinkProcess::spawn(&config, "s3", None);
    wait_until("the first replica to own every partition", Duration::from_secs(90), || async {
        a.metric("sink_partitions_assigned").await == config.kafka.partitions as f64
    })
    .await;
    let mut sent = send_builds(&gw, &token, 20).await;
    // Scale out while the first replica is still working through those builds.
    let b = SinkProcess::spawn(&config, "s3", None);
    let more = send_builds(&gw, &token, 20).await;
    sent.extend(more);
    wait_until("both replicas to share the partitions", Duration::from_secs(120), || async {
        let (pa, pb) = (a.metric("sink_partitions_assigned").await, b.metric("sink_partitions_assigned").await);
        pa >= 1.0 && pb >= 1.0 && pa + pb == config.kafka.partitions as f64
    })
    .await;
    let last = send_builds(&gw, &token, 10).await;
    sent.extend(last);
    wait_caught_up(&config, &group(&config, "s3"), CATCH_UP).await;
    // Each build stored once, byte-exact: a partition that moved mid-batch is finished by its
    // new owner, and the create-only writes make any repeat a no-op.
    assert_exactly(&config, &gw, &stores, &sent, &["s3"]).await;
    let (wa, wb) = (a.metric("sink_records_written_total").await, b.metric("sink_records_written_total").await);
    assert!(wb > 0.0, "the new replica wrote ({wa}, {wb})");
    assert!(wa + wb >= (sent.len() * 2) as f64, "every record was written ({wa} + {wb})");
    eprintln!("scale-out: {wa} + {wb} records written for {} (repeated after the rebalance: {})", sent.len() * 2, wa + wb - (sent.len() * 2) as f64);
    for p in [&a, &b] {
        assert_eq!(p.metric("sink_dead_lettered_total").await, 0.0, "nothing dead-lettered:\n{}", p.log_text());
    }
    gw.stop().await;
}

/// One span of an OTLP/JSON export (the mapping's field names; ids in hex).
fn json_span(trace_id: &str, id: u64, parent: Option<u64>, name: &str, start_ns: u64, end_ns: u64) -> serde_json::Value {
    let mut span = json!({
        "traceId": trace_id,
        "spanId": format!("{id:016x}"),
        "name": name,
        "startTimeUnixNano": start_ns.to_string(),
        "endTimeUnixNano": end_ns.to_string(),
        "attributes": [],
    });
    if let Some(p) = parent {
        span["parentSpanId"] = json!(format!("{p:016x}"));
    } else {
        span["attributes"] = json!([{"key": "pantsbuild.metrics-v0", "value": {"stringValue": "{\"local_cache_requests\": 4}"}}]);
    }
    span
}

fn json_export(spans: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "pantsbuild"}}]},
        "scopeSpans": [{"scope": {"name": "pants"}, "spans": spans}],
    }]}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_spans_after_the_root_join_the_workunit_tree_but_never_change_the_final_record() {
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } = SinkTest::start().await;
    let _dynamo = SinkProcess::spawn(&config, "dynamodb", None);
    let _s3 = SinkProcess::spawn(&config, "s3", None);
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let t0 = 1_764_806_400_000_000_000u64;
    let c = reqwest::Client::new();
    let export = |body: Vec<u8>| {
        let c = c.clone();
        let url = format!("{}/v1/traces", gw.base_url);
        let token = token.clone();
        async move {
            let r = c.post(url).bearer_auth(token).header("content-type", "application/json").body(body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        }
    };
    // The root and a child, then (after the root) a late child.
    export(json_export(vec![
        json_span(&trace_id, 2, Some(1), "pants.core.goals.lint.lint", t0 + 1_000, t0 + 5_000_000_000),
        json_span(&trace_id, 1, None, "pants_run", t0, t0 + 6_000_000_000),
    ]))
    .await;
    wait_caught_up(&config, &group(&config, "dynamodb"), CATCH_UP).await;
    wait_caught_up(&config, &group(&config, "s3"), CATCH_UP).await;
    let pk = format!("{}/{}/otlp_{trace_id}", gw.org, gw.repo);
    let final_item = stores.items().await.remove(&pk).unwrap_or_else(|| panic!("no item {pk}"));
    assert_eq!(s(&final_item, "state"), "final");
    assert_eq!(s(&final_item, "via"), "otlp");
    let aws_sdk_dynamodb::types::AttributeValue::M(counters) = &final_item["counters"] else { panic!("counters") };
    assert_eq!(counters["local_cache_requests"], aws_sdk_dynamodb::types::AttributeValue::N("4".into()), "the root's pantsbuild.metrics-v0");

    export(json_export(vec![json_span(&trace_id, 3, Some(1), "pants.late.rule", t0 + 6_100_000_000, t0 + 6_200_000_000)])).await;
    wait_caught_up(&config, &group(&config, "dynamodb"), CATCH_UP).await;
    wait_caught_up(&config, &group(&config, "s3"), CATCH_UP).await;
    assert_eq!(stores.items().await.remove(&pk).unwrap(), final_item, "the final record did not change");
    let prefix = format!("{}/{}/{}/otlp_{trace_id}/", config.s3.prefix, gw.org, gw.repo);
    let objects = stores.objects(&prefix).await;
    let updates: Vec<&String> = objects.keys().filter(|k| k.contains("/workunits/")).collect();
    assert_eq!(updates.len(), 2, "both batches' workunits are in the tree: {objects:?}");
    let mut names = Vec::new();
    for key in updates {
        let (list, _) = stores.get(key).await;
        let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
        names.extend(list["workunits"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_string()));
    }
    names.sort();
    assert_eq!(names, ["pants.core.goals.lint.lint", "pants.late.rule", "pants_run"]);
    assert!(objects.contains_key(&format!("{prefix}start.json")) && objects.contains_key(&format!("{prefix}final.json")));
    gw.stop().await;
}
