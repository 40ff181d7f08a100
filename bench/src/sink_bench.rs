//! sink-bench: records/s each sink sustains from a pre-filled topic of realistic builds,
//! against a baseline measured in the same run: the same `Sink::write` calls (same SDK calls,
//! same batch size, same per-partition order and concurrency) fed from memory, without Kafka,
//! into a store of its own. For OpenSearch that is one direct `_bulk` per batch, for InfluxDB
//! one direct `/write` per batch. The ratio is what the runtime (consume, decode, stage, commit)
//! costs on top of the store's own limit.
//!
//! Release builds only; the sink runs as its own process (`target/release/buildstats sink
//! NAME`) so its RSS is measured alone. Needs the servers of `dev/services up`.
//!
//!   cargo build --release -p buildstats -p bench && target/release/sink-bench

#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buildstats_core::config::Config;
use buildstats_core::kafka::{self, headers, producer_config};
use buildstats_core::tenancy::{RunId, Slug};
use clap::Parser;
use common::status_kb;
use futures::stream::{self, StreamExt};
use ingest_gateway::documents::BuildStats;
use ingest_gateway::events::{self, Source};
use ingest_gateway::normalize::{self, RequestContext};
use processors::runtime::decode::{classify, Classified, RawRecord};
use processors::runtime::payloads::{blob_refs, verify};
use processors::sink::{Change, Payloads, Sink};
use processors::sinks::dynamodb::DynamoDbSink;
use processors::sinks::influxdb::InfluxDbSink;
use processors::sinks::opensearch::OpenSearchSink;
use processors::sinks::s3::S3Sink;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Parser)]
#[command(about = "Sink throughput from a pre-filled topic vs the same store calls without Kafka, same run")]
struct Args {
    /// Builds to pre-fill (each a run start and a run end: two records).
    #[arg(long, default_value_t = 2000)]
    builds: usize,
    /// dynamodb, s3, opensearch, influxdb (comma-separated) or all.
    #[arg(long, default_value = "all")]
    sink: String,
    #[arg(long, default_value = "target/release/buildstats")]
    bin: PathBuf,
    #[arg(long, default_value = "../shared/fixtures/pants-runs")]
    fixtures: PathBuf,
}

struct Produced {
    partition: i32,
    offset: i64,
    key: String,
    value: Vec<u8>,
}


fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The changes the runtime would hand the sink, per partition in offset order.
fn changes_by_partition(records: &[Produced], sink: &str) -> anyhow::Result<BTreeMap<i32, Vec<Change>>> {
    let mut out: BTreeMap<i32, Vec<Change>> = BTreeMap::new();
    let mut sorted: Vec<&Produced> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in sorted {
        let raw = RawRecord { key: Some(r.key.as_bytes()), value: Some(&r.value), redrive_for: None };
        let Classified::Change(key, kind) = classify(sink, &raw) else { bail!("bench records are all inline completing events") };
        let mut payloads = std::collections::HashMap::new();
        for blob in blob_refs(&kind) {
            let inline = blob.inline.clone().context("bench payloads are inline")?;
            let bytes = verify(blob, bytes::Bytes::from(inline)).map_err(|e| anyhow::anyhow!(e.0))?;
            payloads.insert(blob.blob_id.clone(), bytes);
        }
        out.entry(r.partition).or_default().push(Change {
            key,
            partition: r.partition,
            offset: r.offset,
            kind,
            payloads: Payloads(Arc::new(payloads)),
        });
    }
    Ok(out)
}

/// Every partition's batches in order, partitions concurrently: what the runtime does.
async fn baseline<S: Sink>(sink: Arc<S>, by_partition: BTreeMap<i32, Vec<Change>>, batch: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let results = stream::iter(by_partition.into_values())
        .map(|changes| {
            let sink = sink.clone();
            async move {
                for chunk in changes.chunks(batch) {
                    let outcome = sink.write(Arc::new(chunk.to_vec())).await.map_err(|e| anyhow::anyhow!("baseline write: {e}"))?;
                    if let Some(Err(r)) = outcome.into_iter().find(|o| o.is_err()) {
                        bail!("baseline write rejected a change: {r}");
                    }
                }
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<anyhow::Result<()>>>()
        .await;
    for r in results {
        r?;
    }
    Ok(started.elapsed())
}

/// How fast the broker alone delivers the topic: a consumer with the sinks' settings in a
/// fresh group, reading every record and doing nothing with it.
async fn consume_all(config: &Config, total: usize) -> anyhow::Result<Duration> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let group = format!("{}-kafka-baseline", config.sinks.group_prefix);
    let consumer: StreamConsumer = kafka::consumer_config(&config.kafka, &group, config.sinks.commit_interval_ms)?.create()?;
    consumer.subscribe(&[config.kafka.topic.as_str()])?;
    let mut seen = 0usize;
    let mut started: Option<Instant> = None;
    while seen < total {
        let message = tokio::time::timeout(Duration::from_secs(120), consumer.recv())
            .await
            .context("the broker delivered nothing for 120 s")??;
        started.get_or_insert_with(Instant::now);
        drop(message);
        seen += 1;
    }
    Ok(started.map(|s| s.elapsed()).unwrap_or_default())
}

struct SinkProcess {
    child: Child,
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

struct Measured {
    elapsed: Duration,
    peak_rss_kb: u64,
    /// User + system CPU seconds the sink process used.
    cpu_seconds: f64,
}

fn cpu_seconds(pid: u32) -> f64 {
    // /proc/PID/stat fields 14 and 15 (after the parenthesized command): utime, stime in ticks.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn run_sink_process(bin: &Path, config: &Config, name: &str, total: f64) -> anyhow::Result<Measured> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut c = config.clone();
    c.sinks.listen = format!("127.0.0.1:{port}");
    c.log.level = "warn".into();
    let child = Command::new(bin)
        .args(["sink", name])
        .envs(c.to_env())
        .env("BUILDSTATS_ENV_FILE", "/nonexistent")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let process = SinkProcess { child };
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut first: Option<Instant> = None;
    let mut last_report = Instant::now();
    loop {
        let text = match client.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let seen = metric_sum(&text, "sink_records_in_total");
        let written = metric_sum(&text, "sink_records_written_total");
        let dead = metric_sum(&text, "sink_dead_lettered_total");
        if seen > 0.0 && first.is_none() {
            first = Some(Instant::now());
        }
        if dead > 0.0 {
            bail!("the {name} sink dead-lettered {dead} records: see its log above");
        }
        if written >= total {
            let start = first.unwrap_or_else(Instant::now);
            return Ok(Measured {
                elapsed: start.elapsed(),
                peak_rss_kb: status_kb(process.child.id(), "VmHWM:"),
                cpu_seconds: cpu_seconds(process.child.id()),
            });
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("      {name}: {written:.0} of {total:.0} written, RSS {} MB", status_kb(process.child.id(), "VmRSS:") / 1024);
            last_report = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("the {name} sink did not write {total} records within 30 min ({written} so far)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut config, unique) = common::bench_config("sink-bench", &args.bin)?;
    config.sinks.group_prefix = format!("bench-{unique}");
    let mut base = config.clone();
    base.dynamodb.table = format!("bench-{unique}-baseline");
    base.s3.bucket = format!("bench-{unique}-baseline");
    config.dynamodb.table = format!("bench-{unique}-sink");
    config.s3.bucket = format!("bench-{unique}-sink");
    base.opensearch.alias = format!("bench-{unique}-baseline");
    config.opensearch.alias = format!("bench-{unique}-sink");
    base.influxdb.database = format!("bench_{unique}_baseline");
    config.influxdb.database = format!("bench_{unique}_sink");

    eprintln!(
        "[1/4] set-up: topic {} ({} partitions); tables, buckets, indexes bench-{unique}-{{baseline,sink}}, databases bench_{unique}_{{baseline,sink}}",
        config.kafka.topic, config.kafka.partitions
    );
    kafka::ensure_topics(&config.kafka).await?;
    processors::init::init_stores(&base).await?;
    processors::init::init_stores(&config).await?;

    eprintln!("[2/4] pre-filling the topic with {} builds (run start + run end of real reports)", args.builds);
    let org = Slug::parse("org", &format!("bench{unique}"))?;
    let repo = Slug::parse("repo", "repo")?;
    let ctx = RequestContext {
        org: org.to_string(),
        repo: repo.to_string(),
        token_is_ci: false,
        pants_version: Some("2.16.0".into()),
        plugin_version: Some("0.27.0".into()),
        stats_version: Some("3".into()),
        source: "plugin",
    };
    let fixtures = ["ci_build_pr_final_1.json", "run_lint_failed.json", "typecheck_with_local_cache.json", "pants_pytest_with_address.json"];
    let docs: Vec<serde_json::Value> = fixtures
        .iter()
        .map(|f| Ok(serde_json::from_slice(&std::fs::read(args.fixtures.join(f)).with_context(|| format!("fixture {f}"))?)?))
        .collect::<anyhow::Result<_>>()?;
    let producer: FutureProducer = producer_config(&config.kafka)?.create()?;
    let src = Source { org: &org, repo: &repo, request_id: "bench", record_limit: config.kafka.record_limit_bytes };
    let mut produced = Vec::with_capacity(args.builds * 2);
    let mut doc_bytes = 0usize;
    let prefill = Instant::now();
    for i in 0..args.builds {
        let run = format!("pants_run_bench_{unique}_{i:06}");
        let mut doc = docs[i % docs.len()].clone();
        doc["run_info"]["id"] = serde_json::json!(run);
        let raw = serde_json::to_vec(&doc)?;
        doc_bytes += raw.len() * 2;
        let parsed: BuildStats = serde_json::from_slice(&raw)?;
        let run_id = RunId::parse(&run)?;
        let mut start_record = normalize::run_record(&parsed, &ctx, &run)?;
        start_record.outcome = "NOT_AVAILABLE".into();
        let start = events::run_started(&src, &run_id, raw.clone(), start_record)?;
        let end_record = normalize::run_record(&parsed, &ctx, &run)?;
        let end = events::run_ended(&src, &run_id, &raw, &parsed, end_record, "run_end")?;
        for records in [start, end] {
            if !records.chunks().is_empty() {
                bail!("bench reports must fit one record at the default record limit");
            }
            let r = records.completing();
            let h = OwnedHeaders::new().insert(Header { key: headers::EVENT_TYPE, value: Some(r.event_type.name()) });
            let (partition, offset) = producer
                .send(FutureRecord::to(&config.kafka.topic).key(&records.key).payload(&r.value).headers(h), Duration::from_secs(60))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("pre-fill: {e}"))
                .map(|d| (d.partition, d.offset))?;
            produced.push(Produced { partition, offset, key: records.key.clone(), value: r.value.clone() });
        }
        if (i + 1) % 500 == 0 {
            eprintln!("      {} builds", i + 1);
        }
    }
    let total = produced.len();
    eprintln!("      {total} records ({} MB of documents) in {:.1} s", doc_bytes / 1_000_000, prefill.elapsed().as_secs_f64());

    eprintln!("[3/4] broker alone: a consumer with the sinks' settings reads the topic and does nothing");
    let kafka_time = consume_all(&config, total).await?;
    let kafka_rate = total as f64 / kafka_time.as_secs_f64();
    eprintln!("      {total} records in {:.1} s: {kafka_rate:.0} records/s", kafka_time.as_secs_f64());

    let batch = config.sinks.batch_max_records;
    let mut rows = Vec::new();
    for name in ["dynamodb", "s3", "opensearch", "influxdb"] {
        if args.sink != "all" && !args.sink.split(',').any(|s| s.trim() == name) {
            continue;
        }
        eprintln!("[3/4] {name}: baseline (Sink::write from memory, batches of {batch}, partitions concurrently)");
        let by_partition = changes_by_partition(&produced, name)?;
        let base_time = match name {
            "dynamodb" => baseline(Arc::new(DynamoDbSink::from_config(&base).await), by_partition, batch).await?,
            "s3" => baseline(Arc::new(S3Sink::from_config(&base).await), by_partition, batch).await?,
            "opensearch" => baseline(Arc::new(OpenSearchSink::from_config(&base)?), by_partition, batch).await?,
            _ => baseline(Arc::new(InfluxDbSink::from_config(&base)?), by_partition, batch).await?,
        };
        let base_rate = total as f64 / base_time.as_secs_f64();
        eprintln!("      {total} records in {:.1} s: {base_rate:.0} records/s", base_time.as_secs_f64());
        eprintln!("[4/4] {name}: `buildstats sink {name}` from the pre-filled topic");
        let measured = run_sink_process(&args.bin, &config, name, total as f64).await?;
        let rate = total as f64 / measured.elapsed.as_secs_f64();
        eprintln!("      {total} records in {:.1} s: {rate:.0} records/s, peak RSS {} MB", measured.elapsed.as_secs_f64(), measured.peak_rss_kb / 1024);
        rows.push((name, base_rate, rate, measured.peak_rss_kb, measured.cpu_seconds * 1000.0 / total as f64));
    }

    println!();
    println!("sink-bench: {} builds = {total} records, {} partitions, batches of {batch}, write concurrency {}", args.builds, config.kafka.partitions, config.sinks.write_concurrency);
    println!("broker alone (consume, no store): {kafka_rate:.0} records/s");
    println!("| sink | baseline records/s (Sink::write, no Kafka) | sink records/s (from the topic) | sink / baseline | ceiling if broker and store share the CPU | sink / ceiling | sink CPU ms/record | sink peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, base_rate, rate, rss, cpu_ms) in &rows {
        // Broker and store on the same cores: each record costs both their times.
        let ceiling = 1.0 / (1.0 / kafka_rate + 1.0 / base_rate);
        println!(
            "| {name} | {base_rate:.0} | {rate:.0} | **{:.2}** | {ceiling:.0} | {:.2} | {cpu_ms:.2} | {} MB |",
            rate / base_rate,
            rate / ceiling,
            rss / 1024
        );
    }
    let worst = rows.iter().map(|(_, b, r, _, _)| r / b).fold(f64::INFINITY, f64::min);
    let rss = rows.iter().map(|r| r.3).max().unwrap_or(0) / 1024;
    println!();
    println!(
        "targets: sink >= 0.70 x baseline: {} (worst {worst:.2}); sink RSS <= 200 MB: {} ({rss} MB)",
        if worst >= 0.70 { "met" } else { "NOT met" },
        if rss <= 200 { "met" } else { "NOT met" }
    );
    Ok(())
}
