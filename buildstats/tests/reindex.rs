//! Reindex: DynamoDB, OpenSearch and InfluxDB, wiped, are rebuilt by `buildstats reindex`
//! from the S3 archive alone (their sinks stopped, the topic never read), exactly as they
//! were; builds in the deleted register and builds past their repo's retention are skipped;
//! `--org/--repo` and `--since` narrow it. Real tansu, moto, osmem-server, InfluxDB, Postgres
//! and real `buildstats sink` processes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buildstats_core::config::Config;
use buildstats_core::tokens::Scope;
use serde_json::{json, Value};
use support::common::{send_doc, status_json};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(240);
const SINKS: [&str; 4] = ["dynamodb", "s3", "opensearch", "influxdb"];
const REBUILT: [&str; 3] = ["dynamodb", "opensearch", "influxdb"];

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The rows of every series of an InfluxQL answer.
fn values(answer: &Value) -> Vec<Value> {
    answer["results"][0]["series"].as_array().into_iter().flatten().flat_map(|s| s["values"].as_array().cloned().unwrap_or_default()).collect()
}

/// Every point of every measurement, by measurement, as rows (time in ns first).
async fn points(config: &Config) -> BTreeMap<String, BTreeSet<String>> {
    let influx = processors::sinks::influxdb::client(config).unwrap();
    let mut out = BTreeMap::new();
    for m in processors::sinks::influxdb::points::MEASUREMENTS {
        let answer = influx.query(&format!("SELECT * FROM \"{m}\""), Some("ns"), false).await.unwrap();
        let rows: BTreeSet<String> = values(&answer).iter().map(|r| r.to_string()).collect();
        out.insert(m.to_string(), rows);
    }
    out
}

/// The point time of a build, read from its `builds` point.
async fn point_time(config: &Config, run_id: &str) -> i64 {
    let influx = processors::sinks::influxdb::client(config).unwrap();
    let answer = influx.query(&format!("SELECT \"count\" FROM \"builds\" WHERE \"run_id\" = '{run_id}'"), Some("ns"), false).await.unwrap();
    let rows = values(&answer);
    assert_eq!(rows.len(), 1, "one builds point for {run_id}: {answer}");
    rows[0][0].as_i64().unwrap()
}

async fn wipe(config: &Config, stores: &Stores) {
    wipe_search_index(config).await;
    wipe_table(config, stores).await;
    let influx = processors::sinks::influxdb::client(config).unwrap();
    influx.query(&format!("DROP DATABASE \"{}\"", config.influxdb.database), None, true).await.unwrap();
    init_stores(config).await;
    assert!(stores.items().await.is_empty() && documents(config).await.is_empty(), "wiped");
    assert!(points(config).await.values().all(BTreeSet::is_empty), "wiped");
}

fn reindex(config: &Config, args: &[&str]) -> String {
    let mut all = vec!["reindex"];
    all.extend_from_slice(args);
    let (status, _, err) = run_cli(config, &all);
    assert!(status.success(), "buildstats {}: {err}", all.join(" "));
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_stores_are_rebuilt_exactly_from_the_archive_without_deleted_or_expired_builds() {
    let SinkTest { config, gw, token, stores, broker: _broker, serial: _serial } =
        SinkTest::start_with(|c| c.kafka.record_limit_bytes = 64 * 1024).await;
    let mut sinks: Vec<SinkProcess> = SINKS.iter().map(|s| SinkProcess::spawn(&config, s, None)).collect();
    let key = |repo: &str, id: &str| format!("{}/{repo}/{id}", gw.org);
    let hour = 3600.0;
    let c = reqwest::Client::new();

    // The test's repo: finished builds an hour apart, one still running with a live workunits
    // update, one with a log; a build 50 days old (its repo gets a 30-day policy later); and
    // one build that will be in the deleted register. A second repo of the same org.
    let mut repo_builds: Vec<(String, f64)> = Vec::new();
    for (i, name) in ["pants_jvm_rules_run.json", "run_lint_failed.json", "ci_build_pr_final_1.json", "run_test_with_coverage.json"].iter().enumerate() {
        let at = now_s() - hour * (i as f64 + 1.0);
        repo_builds.push((send_fixture(&gw, &token, name, at, false).await.0, at));
    }
    let (running, running_doc) = send_fixture(&gw, &token, "pants_run_mypy_with_wu_local_env.json", now_s() - 60.0, true).await;
    let fixture: Value = serde_json::from_slice(&running_doc).unwrap();
    let update = serde_json::to_vec(&json!({"run_id": running, "workunits": fixture["workunits"]})).unwrap();
    let (status, body, _) = status_json(send_doc(&c, reqwest::Method::POST, &gw.url(&format!("{running}/workunits/")), &token, &update).await).await;
    assert_eq!(status, 201, "{body}");
    let log: Vec<u8> = (0..3_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    let (status, body, _) = status_json(
        support::common::send_artifacts(&c, &gw.url(&format!("{}/artifacts/", repo_builds[0].0)), &token, &[("pants_run_log", &log)]).await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (old, _) = send_fixture(&gw, &token, "remote_execution_failed.json", now_s() - 50.0 * 24.0 * hour, false).await;
    let (gone, _) = send_fixture(&gw, &token, "sample1.json", now_s() - 30.0 * 60.0, false).await;
    let other_repo = "other";
    let (other_token, _) = gw.token_for(&gw.org, other_repo, Scope::Ingest, false).await;
    let (other, _) = send_fixture_to(&gw, other_repo, &other_token, "typecheck_with_local_cache.json", now_s() - 2.0 * hour, false).await;
    for sink in SINKS {
        wait_caught_up(&config, &format!("{}-{sink}", config.sinks.group_prefix), CATCH_UP).await;
    }

    // What the stores hold, less what a reindex must skip: the old build once its repo has a
    // deleting 30-day policy, and `gone`, registered as deleted (as when its tombstone reached
    // the other sinks before the S3 sink).
    let skipped = [key(&gw.repo, &old), key(&gw.repo, &gone)];
    let skipped_times = [point_time(&config, &old).await, point_time(&config, &gone).await];
    let all_items = stores.items().await;
    assert_eq!(all_items.len(), repo_builds.len() + 4, "every build has an item before");
    let items: BTreeMap<_, _> = all_items.into_iter().filter(|(k, _)| !skipped.contains(k)).collect();
    let docs: BTreeMap<_, _> = documents(&config).await.into_iter().filter(|(k, _)| !skipped.contains(k)).collect();
    let rows: BTreeMap<String, BTreeSet<String>> = points(&config)
        .await
        .into_iter()
        .map(|(m, rows)| {
            let kept = rows.into_iter().filter(|r| !skipped_times.iter().any(|t| r.starts_with(&format!("[{t},")))).collect();
            (m, kept)
        })
        .collect();
    assert_eq!(docs.len(), items.len());
    assert_eq!(rows["builds"].len(), repo_builds.len() + 1, "one builds point per finished build kept: {rows:?}");
    let (status, _, err) = run_cli(&config, &["retention", "set", "--org", &gw.org, "--repo", &gw.repo, "--days", "30", "--period", "60", "--no-dry-run"]);
    assert!(status.success(), "{err}");
    let pool = buildstats_core::db::connect(&config.postgres).await.unwrap();
    buildstats_core::retention::record_deleted(&pool, &[key(&gw.repo, &gone)], "tombstone").await.unwrap();

    // The three sinks stop; their stores are wiped and recreated empty.
    for sink in sinks.iter_mut().filter(|s| REBUILT.contains(&s.name.as_str())) {
        assert!(sink.terminate().success(), "{} exits cleanly", sink.name);
    }
    wipe(&config, &stores).await;

    // Refusals change nothing.
    let (status, _, err) = run_cli(&config, &["reindex", "--sink", "s3"]);
    assert!(!status.success() && err.contains("replay --sink s3"), "the archive cannot rebuild itself: {err}");
    let (status, _, err) = run_cli(&config, &["reindex", "--sink", "dynamodb", "--repo", &gw.repo]);
    assert!(!status.success() && err.contains("--org"), "--repo needs --org: {err}");
    let (status, _, err) = run_cli(&config, &["reindex", "--sink", "opensearch", "--since", "soon"]);
    assert!(!status.success() && err.contains("RFC 3339"), "{err}");
    assert!(stores.items().await.is_empty() && documents(&config).await.is_empty());

    // A dry run reads and judges everything and writes nothing.
    let err = reindex(&config, &["--sink", "dynamodb", "--dry-run"]);
    assert!(err.contains(&format!("{} builds listed, {} would be written (dry run", items.len() + 2, items.len())), "{err}");
    assert!(stores.items().await.is_empty(), "a dry run writes nothing");

    // DynamoDB: one repo, then the whole org (the other repo too).
    let err = reindex(&config, &["--sink", "dynamodb", "--org", &gw.org, "--repo", other_repo]);
    assert!(err.contains("reindex dynamodb done: 1 builds listed, 1 written"), "{err}");
    assert_eq!(stores.items().await.into_keys().collect::<Vec<_>>(), [key(other_repo, &other)], "only the other repo's build");
    let err = reindex(&config, &["--sink", "dynamodb", "--org", &gw.org]);
    assert!(err.contains(&format!("{} builds listed, {} written", items.len() + 2, items.len())), "{err}");
    assert!(err.contains("0 started before --since, 1 deleted, 1 past their retention policy"), "{err}");
    assert_eq!(stores.items().await, items, "DynamoDB holds exactly the items it held");

    // OpenSearch: builds since a time, then everything.
    let since = chrono::DateTime::from_timestamp((now_s() - 2.5 * hour) as i64, 0).unwrap().to_rfc3339();
    let err = reindex(&config, &["--sink", "opensearch", "--since", &since]);
    let recent: BTreeSet<String> = repo_builds[..2]
        .iter()
        .map(|(id, _)| key(&gw.repo, id))
        .chain([key(&gw.repo, &running), key(other_repo, &other)])
        .collect();
    assert_eq!(documents(&config).await.into_keys().collect::<BTreeSet<_>>(), recent, "only builds started since {since}: {err}");
    let err = reindex(&config, &["--sink", "opensearch"]);
    assert!(err.contains("1 deleted, 1 past their retention policy"), "{err}");
    assert_eq!(documents(&config).await, docs, "OpenSearch holds exactly the documents (and versions) it held");

    // InfluxDB: everything.
    reindex(&config, &["--sink", "influxdb"]);
    assert_eq!(points(&config).await, rows, "InfluxDB holds exactly the points it held");

    // A second reindex into a full store changes nothing.
    reindex(&config, &["--sink", "dynamodb"]);
    assert_eq!(stores.items().await, items, "a repeated reindex changes nothing");

    // An unreadable archived event is named and left out; the command fails, the rest stands.
    let bad = format!("{}/{}/{}/{}/events/garbage.avro", config.s3.prefix, gw.org, gw.repo, repo_builds[1].0);
    stores.s3.put_object().bucket(&stores.bucket).key(&bad).body(b"not avro".to_vec().into()).send().await.unwrap();
    let (status, _, err) = run_cli(&config, &["reindex", "--sink", "dynamodb"]);
    assert!(!status.success(), "{err}");
    assert!(err.contains(&format!("refused {bad}: cannot be decoded")) && err.contains("1 archived events could not be written"), "{err}");
    assert_eq!(stores.items().await, items, "the other events were written, as before");

    // The sinks resume from the topic where they stopped, and nothing moves.
    for sink in sinks.iter_mut().filter(|s| REBUILT.contains(&s.name.as_str())) {
        sink.restart();
    }
    for sink in REBUILT {
        wait_caught_up(&config, &format!("{}-{sink}", config.sinks.group_prefix), CATCH_UP).await;
    }
    assert_eq!(stores.items().await, items);
    assert_eq!(documents(&config).await, docs);
    for sink in &sinks {
        assert_eq!(sink.metric("sink_dead_lettered_total").await, 0.0, "{}: {}", sink.name, sink.log_text());
    }
    gw.stop().await;
}
