//! Retention end to end: policies set with the real CLI, `buildstats retention run --once`
//! publishing tombstones, and the four real sink processes deleting what they hold (moto,
//! osmem-server, InfluxDB); newer builds stay untouched, a dry run deletes nothing, late
//! records of a deleted build do not bring it back, and builds past the policy are dropped on
//! arrival.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::common::{send_artifacts, status_json};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(240);
const SINKS: [&str; 4] = ["dynamodb", "s3", "opensearch", "influxdb"];

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// What the four stores hold for the test's repo: DynamoDB keys, S3 build prefixes, search
/// documents, and builds with points in InfluxDB.
async fn holdings(config: &buildstats_core::config::Config, stores: &Stores) -> [BTreeSet<String>; 4] {
    let items: BTreeSet<String> = stores.items().await.into_keys().collect();
    let prefixes: BTreeSet<String> = stores
        .objects(&format!("{}/", config.s3.prefix))
        .await
        .into_keys()
        .filter_map(|k| {
            let parts: Vec<&str> = k.split('/').collect();
            (parts.len() > 4).then(|| format!("{}/{}/{}", parts[1], parts[2], parts[3]))
        })
        .collect();
    let search = processors::sinks::opensearch::client(config).unwrap();
    let (_, answer) = search
        .call_json(opensearch::http::Method::Post, &format!("/{}/_search", config.opensearch.alias), &serde_json::json!({"size": 100, "_source": ["build_key"]}))
        .await
        .unwrap();
    let docs: BTreeSet<String> = answer["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_id"].as_str().unwrap().to_string()).collect();
    let influx = processors::sinks::influxdb::client(config).unwrap();
    let points = influx.query("SELECT \"run_id\" FROM \"builds\"", None, false).await.unwrap();
    let org_repo = items.iter().next().map(|k| k.rsplitn(2, '/').nth(1).unwrap().to_string()).unwrap_or_default();
    let with_points: BTreeSet<String> = points["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .map(|row| format!("{org_repo}/{}", row[1].as_str().unwrap()))
        .collect();
    [items, prefixes, docs, with_points]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_builds_leave_every_store_newer_ones_stay_and_a_dry_run_deletes_nothing() {
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } = SinkTest::start_with(|c| c.kafka.record_limit_bytes = 64 * 1024).await;
    let sinks: Vec<SinkProcess> = SINKS.iter().map(|s| SinkProcess::spawn(&config, s, None)).collect();
    let key = |id: &str| format!("{}/{}/{id}", gw.org, gw.repo);
    // Two builds 40 days old (one with a log), two from yesterday; the policy keeps 30 days.
    let day = 86_400.0;
    let (old1, old1_doc) = send_fixture(&gw, &token, "pants_jvm_rules_run.json", now_s() - 40.0 * day, false).await;
    let (old2, _) = send_fixture(&gw, &token, "run_lint_failed.json", now_s() - 35.0 * day, false).await;
    let (new1, _) = send_fixture(&gw, &token, "pants_run_mypy_with_wu_local_env.json", now_s() - day, false).await;
    let (new2, _) = send_fixture(&gw, &token, "remote_execution_failed.json", now_s() - day, false).await;
    let c = reqwest::Client::new();
    let log: Vec<u8> = (0..5_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    let (status, body, _) = status_json(send_artifacts(&c, &gw.url(&format!("{old1}/artifacts/")), &token, &[("pants_run_log", &log)]).await).await;
    assert_eq!(status, 201, "{body}");
    for sink in SINKS {
        wait_caught_up(&config, &format!("{}-{sink}", config.sinks.group_prefix), CATCH_UP).await;
    }
    let all: BTreeSet<String> = [&old1, &old2, &new1, &new2].iter().map(|id| key(id)).collect();
    let newer: BTreeSet<String> = [&new1, &new2].iter().map(|id| key(id)).collect();
    let before = holdings(&config, &stores).await;
    for (store, held) in SINKS.iter().zip(&before) {
        assert_eq!(held, &all, "{store} holds every build before retention");
    }
    let records_before = read_raw(&config, &config.kafka.topic).await.len();

    // A dry run: counts, publishes nothing, deletes nothing.
    let (status, out, err) = run_cli(&config, &["retention", "set", "--org", &gw.org, "--repo", &gw.repo, "--days", "30", "--period", "60"]);
    assert!(status.success(), "{err}");
    assert!(out.contains("keep 30 days") && out.contains("DRY RUN"), "{out}");
    let (status, _, err) = run_cli(&config, &["retention", "run", "--once"]);
    assert!(status.success(), "{err}");
    assert!(err.contains(&format!("{}/{}: would delete (dry run) 2 builds", gw.org, gw.repo)), "{err}");
    assert_eq!(read_raw(&config, &config.kafka.topic).await.len(), records_before, "a dry run publishes nothing");
    let (_, shown, _) = run_cli(&config, &["retention", "show", "--org", &gw.org, "--repo", &gw.repo]);
    assert!(shown.contains("last pass") && shown.contains("2 builds, dry run"), "{shown}");
    // Not due again within its period (other repos' policies may be: the test database is shared).
    let (_, _, err) = run_cli(&config, &["retention", "run", "--once"]);
    assert!(!err.contains(&format!("{}/{}:", gw.org, gw.repo)), "{err}");

    // For real.
    let (status, out, err) = run_cli(&config, &["retention", "set", "--org", &gw.org, "--repo", &gw.repo, "--days", "30", "--period", "60", "--no-dry-run"]);
    assert!(status.success() && out.contains("deleting"), "{out}{err}");
    let (status, _, err) = run_cli(&config, &["retention", "run", "--once"]);
    assert!(status.success(), "{err}");
    assert!(err.contains(&format!("{}/{}: tombstoned 2 builds", gw.org, gw.repo)), "{err}");
    let records = read_raw(&config, &config.kafka.topic).await;
    assert_eq!(records.len(), records_before + 2, "one tombstone per expired build, nothing else");
    let tombstones: Vec<&RawRecord> = records.iter().filter(|r| r.headers.contains_key("bs-tombstone-reason")).collect();
    assert_eq!(tombstones.len(), 2, "one tombstone per expired build");
    for t in &tombstones {
        assert!(t.value.is_none(), "a tombstone has a null value");
        assert_eq!(t.headers.get("bs-tombstone-reason").map(String::as_str), Some("retention"));
        assert_eq!(t.headers.get("bs-tombstone-retention-days").map(String::as_str), Some("30"));
    }
    assert_eq!(tombstones.iter().map(|t| t.key.clone().unwrap()).collect::<BTreeSet<_>>(), [key(&old1), key(&old2)].into_iter().collect());
    for sink in SINKS {
        wait_caught_up(&config, &format!("{}-{sink}", config.sinks.group_prefix), CATCH_UP).await;
    }
    let after = holdings(&config, &stores).await;
    for (store, held) in SINKS.iter().zip(&after) {
        assert_eq!(held, &newer, "{store}: the old builds are gone, the newer ones untouched");
    }
    assert!(stores.objects(&format!("{}/{}/{}/{old1}/", config.s3.prefix, gw.org, gw.repo)).await.is_empty(), "the log went with its build");
    for sink in &sinks {
        assert_eq!(sink.metric("sink_dead_lettered_total").await, 0.0, "{}: {}", sink.name, sink.log_text());
    }

    // Deleted builds stay deleted: a late final report of a deleted build (as the plugin's
    // batch re-upload sends) and a late log are dropped by every sink; a build already past
    // the policy (and its day of grace) when it first arrives is never written. The sinks
    // re-read the policies every 10 s.
    send_accepted(&c, reqwest::Method::PATCH, &gw.url(&format!("{old1}/")), &token, &old1_doc, "late run end of a deleted build").await;
    let (status, body, _) = status_json(send_artifacts(&c, &gw.url(&format!("{old1}/artifacts/")), &token, &[("pants_run_log", &b"late line\n"[..])]).await).await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (ancient, _) = send_fixture(&gw, &token, "run_lint_failed.json", now_s() - 60.0 * day, false).await;
    let (fresh, _) = send_fixture(&gw, &token, "sample1.json", now_s() - 60.0, false).await;
    for sink in SINKS {
        wait_caught_up(&config, &format!("{}-{sink}", config.sinks.group_prefix), CATCH_UP).await;
    }
    let mut expected = newer.clone();
    expected.insert(key(&fresh));
    let late = holdings(&config, &stores).await;
    for (store, held) in SINKS.iter().zip(&late) {
        assert_eq!(held, &expected, "{store}: the deleted build did not come back, the 60-day-old one was never written ({}), the fresh one was", key(&ancient));
    }
    let mut expired_anywhere = 0.0;
    for sink in &sinks {
        let text = sink.metrics().await;
        let dropped = |reason: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with("sink_records_dropped_total{") && l.contains(&format!("reason=\"{reason}\"")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        // The late final report and log of the deleted build, the start and end of the
        // 60-day-old one. The first sink to see that one finds it expired and records it as
        // deleted, so the others (and its own later batches) count it as deleted.
        assert_eq!(dropped("deleted") + dropped("expired"), 4.0, "{}: four records dropped:\n{text}", sink.name);
        assert!(dropped("deleted") >= 2.0, "{}: the deleted build's late records count as deleted:\n{text}", sink.name);
        expired_anywhere += dropped("expired");
    }
    assert!(expired_anywhere >= 1.0, "some sink found the 60-day-old build expired on arrival");

    let (status, out, _) = run_cli(&config, &["retention", "unset", "--org", &gw.org, "--repo", &gw.repo]);
    assert!(status.success() && out.contains("policy removed"), "{out}");
    let (status, _, err) = run_cli(&config, &["retention", "unset", "--org", &gw.org, "--repo", &gw.repo]);
    assert!(!status.success() && err.contains("has no retention policy"), "{err}");
    gw.stop().await;
}
