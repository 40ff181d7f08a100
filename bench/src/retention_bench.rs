//! retention-bench: how fast each sink rebuilds a wiped store by a replay (and from the S3
//! archive by a reindex), against its first ingestion of the same topic, and how fast it applies tombstones, against the same deletes
//! through `Sink::write` from memory, all measured in the same run.
//!
//! 1. Set-up: a fresh topic, Postgres migrated (the sinks read `deleted_builds`), three sets of
//!    fresh stores: `first`, `replay`, `baseline`. N builds pre-filled (run start + run end of
//!    real reports, as `sink-bench` does).
//! 2. Per sink: `baseline` is filled with the builds by `Sink::write` (the store-alone rate);
//!    **first ingestion**: `buildstats sink NAME` (own process, fresh group) reads the topic
//!    into `first`, then is stopped (SIGTERM, exit: offsets committed, group left);
//!    **replay**: `buildstats replay --sink NAME --from earliest` moves the group back and the
//!    sink, restarted on the empty `replay` stores, rebuilds them from the topic.
//!    **reindex** (after every sink's first ingestion, S3's included): `buildstats reindex
//!    --sink NAME` rebuilds an empty `reindex` store from the S3 sink's archive in `first`
//!    (no Kafka), timed as the command runs, start-up and listing included; its baseline is
//!    the same command with `--dry-run` (list, read and judge the archive, write nothing).
//! 3. One tombstone per build is published (key = build key, no value, `bs-event-type:
//!    tombstone`). Only now: a sink that applies a tombstone records the build in Postgres'
//!    `deleted_builds`, which every sink reads, and every sink drops later records of a deleted
//!    build. Tombstones before any sink's first ingestion or replay would empty that phase.
//! 4. Per sink: the **baseline** deletes the builds from `baseline` by `Sink::write` of
//!    `ChangeKind::Tombstone` changes (same batches, per-partition order, partitions
//!    concurrently); the **sink** is started again on `replay` (its group resumes after the
//!    builds' records) and applies the tombstones from the topic.
//!
//! Sink rates run from the sink's first record read to its last record written (`/metrics`), so
//! process start-up and the group join are not counted. Every phase checks what the store
//! then holds (N builds after ingestion and replay, none after the tombstones).
//!
//!   cargo build --release -p buildstats -p bench && target/release/retention-bench --builds 1000

#[path = "common.rs"]
mod common;
#[path = "sink_common.rs"]
mod sink_common;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buildstats_core::config::Config;
use buildstats_core::kafka::{self, headers, producer_config};
use clap::Parser;
use futures::stream::{self, StreamExt};
use processors::sink::Change;
use processors::sinks::dynamodb::DynamoDbSink;
use processors::sinks::influxdb::InfluxDbSink;
use processors::sinks::opensearch::OpenSearchSink;
use processors::sinks::s3::S3Sink;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use sink_common::{baseline, changes_by_partition, consume_all, prefill, run_sink_process, selected, Measured, Produced, SINKS};

#[derive(Parser)]
#[command(about = "Replay and reindex rates vs first ingestion, and tombstones/s per sink vs Sink::write deletes, same run")]
struct Args {
    /// Builds to pre-fill (each a run start and a run end: two records; then one tombstone).
    #[arg(long, default_value_t = 1000)]
    builds: usize,
    #[command(flatten)]
    target: sink_common::Target,
}

/// The config with its own stores: table, bucket, alias `bench-{unique}-{role}`, database
/// `bench_{unique}_{role}`.
fn with_stores(config: &Config, unique: &str, role: &str) -> Config {
    let mut c = config.clone();
    c.dynamodb.table = format!("bench-{unique}-{role}");
    c.s3.bucket = format!("bench-{unique}-{role}");
    c.opensearch.alias = format!("bench-{unique}-{role}");
    c.influxdb.database = format!("bench_{unique}_{role}");
    c
}

/// `fut`, with a line on stderr every 5 s while it runs.
async fn ticking<T>(label: &str, fut: impl Future<Output = T>) -> T {
    let started = Instant::now();
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => eprintln!("      {label}: {:.0} s", started.elapsed().as_secs_f64()),
        }
    }
}

/// `Sink::write` of `by_partition` into `config`'s store of sink `name`, like the runtime.
async fn write_baseline(config: &Config, name: &str, by_partition: BTreeMap<i32, Vec<Change>>) -> anyhow::Result<Duration> {
    let batch = config.sinks.batch_max_records;
    match name {
        "dynamodb" => baseline(Arc::new(DynamoDbSink::from_config(config).await), by_partition, batch).await,
        "s3" => baseline(Arc::new(S3Sink::from_config(config).await), by_partition, batch).await,
        "opensearch" => baseline(Arc::new(OpenSearchSink::from_config(config)?), by_partition, batch).await,
        _ => baseline(Arc::new(InfluxDbSink::from_config(config)?), by_partition, batch).await,
    }
}

/// How many of the bench's builds (org `org`, repo `repo`) `config`'s store of sink `name` holds.
async fn held(config: &Config, name: &str, org: &str) -> anyhow::Result<u64> {
    match name {
        "dynamodb" => {
            let client = processors::sinks::dynamodb::client(config).await;
            let mut count = 0u64;
            let mut start = None;
            loop {
                let out = client
                    .scan()
                    .table_name(&config.dynamodb.table)
                    .projection_expression("#k")
                    .expression_attribute_names("#k", "pk")
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .context("scan the table")?;
                count += u64::try_from(out.count()).unwrap_or(0);
                match out.last_evaluated_key() {
                    Some(k) if !k.is_empty() => start = Some(k.clone()),
                    _ => return Ok(count),
                }
            }
        }
        "s3" => {
            let client = processors::sinks::s3::client(config).await;
            let prefix = format!("{}{org}/repo/", processors::sinks::s3::keys::lead(&config.s3.prefix));
            let mut builds = HashSet::new();
            let mut token: Option<String> = None;
            loop {
                let out = client
                    .list_objects_v2()
                    .bucket(&config.s3.bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .context("list the bucket")?;
                for object in out.contents() {
                    if let Some(run) = object.key().and_then(|k| k.strip_prefix(prefix.as_str())).and_then(|rest| rest.split('/').next()) {
                        builds.insert(run.to_string());
                    }
                }
                match out.next_continuation_token() {
                    Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => return Ok(builds.len() as u64),
                }
            }
        }
        "opensearch" => {
            use opensearch::http::Method;
            let search = processors::sinks::opensearch::client(config)?;
            let alias = &config.opensearch.alias;
            let _ = search.call(Method::Post, &format!("/{alias}/_refresh"), None, false).await;
            let body = json!({"size": 0, "track_total_hits": true, "query": {"match_all": {}}});
            let (status, answer) = search.call_json(Method::Post, &format!("/{alias}/_search"), &body).await?;
            if !status.is_success() {
                bail!("count the documents of {alias}: {status}: {answer}");
            }
            let total = &answer["hits"]["total"];
            Ok(total["value"].as_u64().or_else(|| total.as_u64()).unwrap_or(0))
        }
        _ => {
            let influx = processors::sinks::influxdb::client(config)?;
            let answer =
                influx.query("SELECT count(\"run_id\") FROM \"builds\"", None, false).await.map_err(|e| anyhow::anyhow!("count the build points: {e}"))?;
            Ok(processors::sinks::influxdb::client::rows(&answer).first().and_then(|s| s["values"][0][1].as_u64()).unwrap_or(0))
        }
    }
}

async fn expect_held(config: &Config, name: &str, org: &str, want: u64, what: &str) -> anyhow::Result<()> {
    let got = held(config, name, org).await?;
    if got != want {
        bail!("{name} after {what}: the store holds {got} builds, expected {want}");
    }
    eprintln!("      checked: the store holds {got} builds");
    Ok(())
}

/// `buildstats replay --sink NAME --from earliest`; its summary (stderr). Retried for a while
/// if the broker still lists the stopped sink as a member of the group.
fn replay_cli(bin: &Path, config: &Config, name: &str) -> anyhow::Result<String> {
    let mut c = config.clone();
    c.log.level = "warn".into();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = Command::new(bin)
            .args(["replay", "--sink", name, "--from", "earliest"])
            .envs(c.to_env())
            .env("BUILDSTATS_ENV_FILE", "/nonexistent")
            .output()
            .with_context(|| format!("running {} replay", bin.display()))?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            return Ok(err);
        }
        if err.contains("running member") && Instant::now() < deadline {
            eprintln!("      the group still lists a member; retrying in 3 s");
            std::thread::sleep(Duration::from_secs(3));
            continue;
        }
        bail!("buildstats replay --sink {name} failed ({}):\n{err}", out.status);
    }
}

/// `buildstats reindex --sink NAME [--dry-run]`; its summary (stderr).
fn reindex_cli(bin: &Path, config: &Config, name: &str, dry_run: bool) -> anyhow::Result<String> {
    let mut c = config.clone();
    c.log.level = "warn".into();
    let mut args = vec!["reindex", "--sink", name];
    if dry_run {
        args.push("--dry-run");
    }
    let out = Command::new(bin)
        .args(args)
        .envs(c.to_env())
        .env("BUILDSTATS_ENV_FILE", "/nonexistent")
        .output()
        .with_context(|| format!("running {} reindex", bin.display()))?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("buildstats reindex --sink {name} failed ({}):\n{err}", out.status);
    }
    Ok(err)
}

/// One tombstone per build key, sent concurrently (each after its build's records, which
/// are already acknowledged).
async fn publish_tombstones(config: &Config, keys: Vec<String>) -> anyhow::Result<Vec<Produced>> {
    let producer: FutureProducer = producer_config(&config.kafka)?.create()?;
    let topic = config.kafka.topic.as_str();
    let producer = &producer;
    let sent: Vec<anyhow::Result<Produced>> = stream::iter(keys)
        .map(|key| async move {
            let h = OwnedHeaders::new().insert(Header { key: headers::EVENT_TYPE, value: Some("tombstone") });
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key.as_str()).headers(h);
            let delivery = producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| anyhow::anyhow!("tombstone {key}: {e}"))?;
            Ok(Produced { partition: delivery.partition, offset: delivery.offset, key, value: None })
        })
        .buffer_unordered(32)
        .collect()
        .await;
    sent.into_iter().collect()
}

/// The first `field` line of a `/proc` file, its value part.
fn proc_field(file: &str, field: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

struct Row {
    name: &'static str,
    store_alone: Duration,
    first: Measured,
    replay: Measured,
    replay_cli: Duration,
    /// The whole `reindex` command, from the archive.
    reindex: Option<Duration>,
    /// `reindex --dry-run`: listing and reading the archive alone.
    archive_read: Option<Duration>,
    tomb_base: Option<Duration>,
    tomb_sink: Option<Measured>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut config, unique) = common::bench_config("retention-bench", &args.target.bin)?;
    config.sinks.group_prefix = format!("bench-{unique}");
    let first = with_stores(&config, &unique, "first");
    let replay = with_stores(&config, &unique, "replay");
    let base = with_stores(&config, &unique, "baseline");
    // Rebuilt from the S3 archive the S3 sink wrote into `first`.
    let mut reindexed = with_stores(&config, &unique, "reindex");
    reindexed.s3.bucket = first.s3.bucket.clone();
    let names: Vec<&'static str> = SINKS.into_iter().filter(|n| selected(&args.target.sink, n)).collect();
    if names.is_empty() {
        bail!("--sink {} selects no sink: dynamodb, s3, opensearch, influxdb or all", args.target.sink);
    }
    let load_at_start = load_average();

    eprintln!(
        "[1/6] set-up: topic {} ({} partitions); stores bench-{unique}-{{first,replay,baseline,reindex}}, databases bench_{unique}_{{first,replay,baseline,reindex}}",
        config.kafka.topic, config.kafka.partitions
    );
    // The sinks read and write `deleted_builds`: the database must exist and be migrated.
    let migrated = match buildstats_core::db::connect(&config.postgres).await {
        Ok(pool) => {
            let checked = buildstats_core::db::check_migrated(&pool).await;
            pool.close().await;
            checked.map_err(anyhow::Error::from)
        }
        Err(e) => Err(e.into()),
    };
    match migrated {
        Ok(()) => eprintln!("      Postgres: migrated"),
        Err(e) => {
            eprintln!("      Postgres: {e}; migrating (buildstats_core::db::migrate)");
            let applied = buildstats_core::db::migrate(&config.postgres).await.context("the sinks need Postgres (deleted_builds)")?;
            eprintln!("      Postgres: {applied} migrations applied");
        }
    }
    kafka::ensure_topics(&config.kafka).await?;
    for c in [&first, &replay, &base, &reindexed] {
        processors::init::init_stores(c).await?;
    }

    eprintln!("[2/6] pre-filling the topic with {} builds (run start + run end of real reports)", args.builds);
    let prefilled = prefill(&config, &args.target.fixtures, &unique, args.builds).await?;
    let org = prefilled.org.clone();
    let produced = prefilled.records;
    let records = produced.len();
    let builds = args.builds as f64;
    let build_count = args.builds as u64;
    eprintln!("      {records} records ({} MB of documents) in {:.1} s", prefilled.doc_bytes / 1_000_000, prefilled.elapsed.as_secs_f64());

    eprintln!("[3/6] broker alone: a consumer with the sinks' settings reads the topic and does nothing");
    let kafka_time = ticking("reading", consume_all(&config, records)).await?;
    let kafka_rate = records as f64 / kafka_time.as_secs_f64();
    eprintln!("      {records} records in {:.1} s: {kafka_rate:.0} records/s", kafka_time.as_secs_f64());

    let mut rows: Vec<Row> = Vec::new();
    for name in &names {
        let name = *name;
        eprintln!("[4/6] {name}: store alone: the builds written into bench-{unique}-baseline by Sink::write from memory");
        let store_alone = ticking("writing", write_baseline(&base, name, changes_by_partition(&produced, name)?)).await?;
        eprintln!("      {records} records in {:.1} s: {:.0} builds/s", store_alone.as_secs_f64(), builds / store_alone.as_secs_f64());
        expect_held(&base, name, &org, build_count, "the baseline writes").await?;

        eprintln!("[4/6] {name}: first ingestion: `buildstats sink {name}` into bench-{unique}-first, fresh group");
        let first_run = run_sink_process(&args.target.bin, &first, name, records as f64, None, &format!("{name} first")).await?;
        eprintln!(
            "      {records} records in {:.1} s: {:.0} builds/s; sink stopped",
            first_run.elapsed.as_secs_f64(),
            builds / first_run.elapsed.as_secs_f64()
        );
        expect_held(&first, name, &org, build_count, "the first ingestion").await?;

        eprintln!("[4/6] {name}: replay: `buildstats replay --sink {name} --from earliest`, then the sink on the empty bench-{unique}-replay");
        let cli_started = Instant::now();
        let summary = replay_cli(&args.target.bin, &replay, name)?;
        let cli_time = cli_started.elapsed();
        if let Some(line) = summary.lines().find(|l| l.contains("will be re-read")) {
            eprintln!("      ({:.1} s) {line}", cli_time.as_secs_f64());
        }
        let replay_run = run_sink_process(&args.target.bin, &replay, name, records as f64, None, &format!("{name} replay")).await?;
        eprintln!(
            "      {records} records in {:.1} s: {:.0} builds/s ({:.2} of the first ingestion); sink stopped",
            replay_run.elapsed.as_secs_f64(),
            builds / replay_run.elapsed.as_secs_f64(),
            first_run.elapsed.as_secs_f64() / replay_run.elapsed.as_secs_f64()
        );
        expect_held(&replay, name, &org, build_count, "the replay").await?;
        rows.push(Row { name, store_alone, first: first_run, replay: replay_run, replay_cli: cli_time, reindex: None, archive_read: None, tomb_base: None, tomb_sink: None });
    }

    // Before the tombstones: a reindex skips builds in the deleted register.
    if names.contains(&"s3") {
        for row in rows.iter_mut().filter(|r| r.name != "s3") {
            let name = row.name;
            eprintln!("[4/6] {name}: reindex: `buildstats reindex --sink {name}` from the archive in bench-{unique}-first into the empty bench-{unique}-reindex");
            let started = Instant::now();
            let summary = ticking("reindexing", async { reindex_cli(&args.target.bin, &reindexed, name, false) }).await?;
            let took = started.elapsed();
            if let Some(line) = summary.lines().find(|l| l.contains(" done: ")) {
                eprintln!("      {line}");
            }
            eprintln!(
                "      {} builds in {:.1} s: {:.0} builds/s ({:.2} of the first ingestion)",
                args.builds,
                took.as_secs_f64(),
                builds / took.as_secs_f64(),
                row.first.elapsed.as_secs_f64() / took.as_secs_f64()
            );
            expect_held(&reindexed, name, &org, build_count, "the reindex").await?;
            row.reindex = Some(took);
            // The archive-read baseline: the same command reading and judging, writing nothing.
            let started = Instant::now();
            reindex_cli(&args.target.bin, &reindexed, name, true)?;
            let read_alone = started.elapsed();
            eprintln!("      baseline: `reindex --dry-run` (read the archive, write nothing) {:.1} s: {:.0} builds/s", read_alone.as_secs_f64(), builds / read_alone.as_secs_f64());
            row.archive_read = Some(read_alone);
        }
    } else {
        eprintln!("[4/6] reindex: skipped (it reads the archive the S3 sink writes: add s3 to --sink)");
    }

    eprintln!("[5/6] publishing one tombstone per build (key only, bs-event-type: tombstone)");
    let mut keys: Vec<String> = Vec::with_capacity(args.builds);
    let mut seen = HashSet::new();
    for r in &produced {
        if seen.insert(r.key.clone()) {
            keys.push(r.key.clone());
        }
    }
    let published = Instant::now();
    let tombstones = ticking("publishing", publish_tombstones(&config, keys)).await?;
    let publish_time = published.elapsed();
    eprintln!("      {} tombstones in {:.1} s", tombstones.len(), publish_time.as_secs_f64());

    for row in rows.iter_mut() {
        let name = row.name;
        eprintln!("[6/6] {name}: baseline: the tombstones by Sink::write from memory on bench-{unique}-baseline");
        let t = ticking("deleting", write_baseline(&base, name, changes_by_partition(&tombstones, name)?)).await?;
        eprintln!("      {} tombstones in {:.1} s: {:.0}/s", tombstones.len(), t.as_secs_f64(), builds / t.as_secs_f64());
        expect_held(&base, name, &org, 0, "the baseline tombstones").await?;
        row.tomb_base = Some(t);

        eprintln!("[6/6] {name}: `buildstats sink {name}` on bench-{unique}-replay applies the tombstones from the topic");
        let m = run_sink_process(&args.target.bin, &replay, name, builds, Some("tombstone"), &format!("{name} tombstones")).await?;
        eprintln!(
            "      {} tombstones in {:.1} s: {:.0}/s ({:.2} of the baseline); sink stopped",
            tombstones.len(),
            m.elapsed.as_secs_f64(),
            builds / m.elapsed.as_secs_f64(),
            t.as_secs_f64() / m.elapsed.as_secs_f64()
        );
        expect_held(&replay, name, &org, 0, "the tombstones").await?;
        row.tomb_sink = Some(m);
    }

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpu = proc_field("/proc/cpuinfo", "model name");
    let mem_gb = proc_field("/proc/meminfo", "MemTotal").split_whitespace().next().and_then(|kb| kb.parse::<f64>().ok()).unwrap_or(0.0) / 1_048_576.0;
    println!();
    println!(
        "retention-bench: {} builds = {records} records + {} tombstones, {} partitions, batches of {}, write concurrency {}",
        args.builds,
        tombstones.len(),
        config.kafka.partitions,
        config.sinks.batch_max_records,
        config.sinks.write_concurrency
    );
    println!(
        "broker alone (consume, no store): {kafka_rate:.0} records/s; tombstones published at {:.0}/s",
        tombstones.len() as f64 / publish_time.as_secs_f64()
    );
    println!();
    println!("| sink | first ingestion builds/s (records/s) | replay builds/s (records/s) | replay / first | reindex builds/s (whole command) | reindex / first | reindex / archive read alone | tombstones/s (sink) | tombstones/s (baseline, `Sink::write`) | sink / baseline |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let first = builds / r.first.elapsed.as_secs_f64();
        let again = builds / r.replay.elapsed.as_secs_f64();
        let tomb_sink = r.tomb_sink.as_ref().map(|m| builds / m.elapsed.as_secs_f64()).unwrap_or(0.0);
        let tomb_base = r.tomb_base.map(|t| builds / t.as_secs_f64()).unwrap_or(0.0);
        let (reindex, ratio, vs_read) = match (r.reindex, r.archive_read) {
            (Some(t), Some(read)) => (
                format!("{:.0}", builds / t.as_secs_f64()),
                format!("**{:.2}**", builds / t.as_secs_f64() / first),
                format!("**{:.2}**", read.as_secs_f64() / t.as_secs_f64()),
            ),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {first:.0} ({:.0}) | {again:.0} ({:.0}) | **{:.2}** | {reindex} | {ratio} | {vs_read} | {tomb_sink:.0} | {tomb_base:.0} | **{:.2}** |",
            r.name,
            first * 2.0,
            again * 2.0,
            again / first,
            tomb_sink / tomb_base
        );
    }
    println!();
    println!("| sink | store alone builds/s (`Sink::write`, no Kafka) | replay command s | sink CPU ms/build: first, replay | sink CPU ms/tombstone | sink retries: first, replay, tombstones | sink peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let tomb = r.tomb_sink.as_ref();
        println!(
            "| {} | {:.0} | {:.1} | {:.2}, {:.2} | {:.2} | {:.0}, {:.0}, {:.0} | {} MB |",
            r.name,
            builds / r.store_alone.as_secs_f64(),
            r.replay_cli.as_secs_f64(),
            r.first.cpu_seconds * 1000.0 / builds,
            r.replay.cpu_seconds * 1000.0 / builds,
            tomb.map(|m| m.cpu_seconds * 1000.0 / builds).unwrap_or(0.0),
            r.first.retries,
            r.replay.retries,
            tomb.map(|m| m.retries).unwrap_or(0.0),
            [Some(r.first.peak_rss_kb), Some(r.replay.peak_rss_kb), tomb.map(|m| m.peak_rss_kb)].into_iter().flatten().max().unwrap_or(0) / 1024
        );
    }
    println!();
    println!(
        "machine: {cores} cores ({cpu}), {mem_gb:.0} GB; load average {load_at_start} at start, {} at end; servers on the same cores: Kafka API {}, DynamoDB/S3 {}, OpenSearch {}, InfluxDB {}, Postgres",
        load_average(),
        config.kafka.brokers,
        config.aws.endpoint_url,
        config.opensearch.url,
        config.influxdb.url
    );
    Ok(())
}
