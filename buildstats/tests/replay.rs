//! Backfill: a wiped store is rebuilt from the topic by `buildstats replay` and the sink's
//! real process, exactly as it was (documents, items), with deleted builds staying deleted.
//! Real tansu, moto and osmem-server.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buildstats_core::config::Config;
use buildstats_core::kafka;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(240);

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

async fn publish_tombstone(config: &Config, build_key: &str) {
    let producer: FutureProducer = kafka::producer_config(&config.kafka).unwrap().create().unwrap();
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&config.kafka.topic).key(build_key);
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_store_is_rebuilt_exactly_by_a_replay_and_deleted_builds_stay_deleted() {
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } =
        SinkTest::start_with(|c| c.kafka.record_limit_bytes = 64 * 1024).await;
    let mut sinks: Vec<SinkProcess> = ["dynamodb", "opensearch"].iter().map(|s| SinkProcess::spawn(&config, s, None)).collect();
    let key = |id: &str| format!("{}/{}/{id}", gw.org, gw.repo);

    // Builds that ended, one still running, and one deleted by a tombstone after it ended.
    let fixtures = [
        "pants_jvm_rules_run.json",
        "run_lint_failed.json",
        "pants_run_mypy_with_wu_local_env.json",
        "remote_execution_failed.json",
        "ci_build_pr_final_1.json",
        "run_test_with_coverage.json",
    ];
    let mut kept = Vec::new();
    for (i, name) in fixtures.iter().enumerate() {
        kept.push(send_fixture(&gw, &token, name, now_s() - 3600.0 * (i as f64 + 1.0), false).await.0);
    }
    kept.push(send_fixture(&gw, &token, "sample_10_start.json", now_s() - 60.0, true).await.0);
    let (deleted, deleted_doc) = send_fixture(&gw, &token, "sample1.json", now_s() - 7200.0, false).await;
    publish_tombstone(&config, &key(&deleted)).await;
    // A late record of the deleted build, after its tombstone on the topic: must not bring it back.
    send_accepted(&reqwest::Client::new(), reqwest::Method::PATCH, &gw.url(&format!("{deleted}/")), &token, &deleted_doc, "late run end").await;

    for sink in ["dynamodb", "opensearch"] {
        wait_caught_up(&config, &format!("{}-{sink}", config.sinks.group_prefix), CATCH_UP).await;
    }
    let items = stores.items().await;
    let docs = documents(&config).await;
    let expected: Vec<String> = kept.iter().map(|id| key(id)).collect();
    assert_eq!(items.keys().cloned().collect::<Vec<_>>(), { let mut e = expected.clone(); e.sort(); e }, "one item per kept build");
    assert_eq!(docs.keys().cloned().collect::<Vec<_>>(), { let mut e = expected.clone(); e.sort(); e }, "one document per kept build");
    assert!(!items.contains_key(&key(&deleted)) && !docs.contains_key(&key(&deleted)), "the deleted build stays deleted");

    // (A replay refuses while the group has members on brokers that list them; tansu 0.6.0
    // does not answer DescribeGroups, so that refusal is not exercised here.)

    // Stop the sinks, wipe both stores, recreate them empty, replay, restart.
    for sink in sinks.iter_mut() {
        assert!(sink.terminate().success(), "{} exits cleanly", sink.name);
    }
    wipe_search_index(&config).await;
    wipe_table(&config, &stores).await;
    init_stores(&config).await;
    assert!(documents(&config).await.is_empty() && stores.items().await.is_empty(), "the stores are wiped");
    let records = read_raw(&config, &config.kafka.topic).await.len();
    for sink in ["dynamodb", "opensearch"] {
        let (status, _, err) = run_cli(&config, &["replay", "--sink", sink, "--from", "earliest"]);
        assert!(status.success(), "replay {sink}: {err}");
        assert!(err.contains(&format!("{records} records from the oldest record the topic holds will be re-read")), "{err}");
    }
    for sink in sinks.iter_mut() {
        sink.restart();
    }
    for sink in ["dynamodb", "opensearch"] {
        wait_caught_up(&config, &format!("{}-{sink}", config.sinks.group_prefix), CATCH_UP).await;
    }
    assert_eq!(stores.items().await, items, "DynamoDB after the replay holds exactly the items it held");
    assert_eq!(documents(&config).await, docs, "OpenSearch after the replay holds exactly the documents (and versions) it held");
    for sink in &sinks {
        assert_eq!(sink.metric("sink_dead_lettered_total").await, 0.0, "{}: {}", sink.name, sink.log_text());
    }

    // Replaying from a time moves the group to the first record at or after it: a time after
    // every record leaves nothing to re-read; a new group name starts a fresh group.
    for sink in sinks.iter_mut() {
        assert!(sink.terminate().success());
    }
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let (status, _, err) = run_cli(&config, &["replay", "--sink", "dynamodb", "--from", &later.to_rfc3339()]);
    assert!(status.success(), "{err}");
    assert!(err.contains("ready: 0 records from"), "{err}");
    let fresh = format!("{}-backfill", config.sinks.group_prefix);
    let (status, _, err) = run_cli(&config, &["replay", "--sink", "opensearch", "--from", "2020-01-01", "--group", &fresh]);
    assert!(status.success(), "{err}");
    assert!(err.contains(&format!("{records} records from 2020-01-01 00:00:00 UTC")) && err.contains(&format!("--group {fresh}")), "{err}");
    let (status, _, err) = run_cli(&config, &["replay", "--sink", "opensearch", "--from", "yesterday"]);
    assert!(!status.success() && err.contains("RFC 3339"), "a bad --from is refused with what it takes: {err}");
    gw.stop().await;
}
