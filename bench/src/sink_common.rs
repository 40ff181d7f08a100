//! What the sink benches share (`sink-bench`, `retention-bench`): pre-filling a topic with
//! realistic builds, the changes the runtime would hand a sink, the `Sink::write` baseline,
//! a consumer that only reads, and a `buildstats sink NAME` child process watched through its
//! `/metrics`.
#![allow(dead_code)] // each bench uses some of these

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buildstats_core::config::Config;
use buildstats_core::kafka::{self, headers, producer_config};
use buildstats_core::tenancy::{RunId, Slug};
use futures::stream::{self, StreamExt};
use ingest_gateway::documents::BuildStats;
use ingest_gateway::events::{self, Source};
use ingest_gateway::normalize;
use processors::runtime::decode::{classify, Classified, RawRecord};
use processors::runtime::payloads::{blob_refs, verify};
use processors::sink::{Change, Payloads, Sink};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::status_kb;

/// The four sinks, in the order the benches run them.
pub const SINKS: [&str; 4] = ["dynamodb", "s3", "opensearch", "influxdb"];

/// Whether `--sink` (`all` or a comma-separated list) selects `name`.
pub fn selected(arg: &str, name: &str) -> bool {
    arg == "all" || arg.split(',').any(|s| s.trim() == name)
}

/// One record the bench put on the topic.
pub struct Produced {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// What the pre-fill put on the topic.
pub struct Prefilled {
    /// The builds' org (`bench{unique}`); the repo is `repo`.
    pub org: String,
    /// Every record, in send order (a build's run start before its run end).
    pub records: Vec<Produced>,
    /// Bytes of raw documents the records carry.
    pub doc_bytes: usize,
    pub elapsed: Duration,
}

/// Pre-fill the topic with `builds` builds, each a run start and a run end made by the
/// gateway's own event builders from four real reports (inline: no chunks).
pub async fn prefill(config: &Config, fixtures_dir: &Path, unique: &str, builds: usize) -> anyhow::Result<Prefilled> {
    let org = Slug::parse("org", &format!("bench{unique}"))?;
    let repo = Slug::parse("repo", "repo")?;
    let ctx = crate::common::plugin_context(org.as_str(), repo.as_str());
    let fixtures = ["ci_build_pr_final_1.json", "run_lint_failed.json", "typecheck_with_local_cache.json", "pants_pytest_with_address.json"];
    let docs: Vec<serde_json::Value> = fixtures
        .iter()
        .map(|f| Ok(serde_json::from_slice(&std::fs::read(fixtures_dir.join(f)).with_context(|| format!("fixture {f}"))?)?))
        .collect::<anyhow::Result<_>>()?;
    let producer: FutureProducer = producer_config(&config.kafka)?.create()?;
    let src = Source { org: &org, repo: &repo, request_id: "bench", record_limit: config.kafka.record_limit_bytes };
    let mut produced = Vec::with_capacity(builds * 2);
    let mut doc_bytes = 0usize;
    let started = Instant::now();
    let mut last_report = Instant::now();
    for i in 0..builds {
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
            produced.push(Produced { partition, offset, key: records.key.clone(), value: Some(r.value.clone()) });
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("      {} of {builds} builds", i + 1);
            last_report = Instant::now();
        }
    }
    Ok(Prefilled { org: org.to_string(), records: produced, doc_bytes, elapsed: started.elapsed() })
}

/// The sum of every series of a metric (`name{...} value` and `name value` lines).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    metric_sum_where(text, name, "")
}

/// The sum of the series of a metric whose labels contain `label` (`kind="tombstone"`);
/// every series when `label` is empty.
pub fn metric_sum_where(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .filter(|l| label.is_empty() || l.split(' ').next().is_some_and(|series| series.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

/// The changes the runtime would hand the sink, per partition in offset order. Tombstones
/// (records without a value) become `ChangeKind::Tombstone` changes, as the runtime makes them.
pub fn changes_by_partition(records: &[Produced], sink: &str) -> anyhow::Result<BTreeMap<i32, Vec<Change>>> {
    let mut out: BTreeMap<i32, Vec<Change>> = BTreeMap::new();
    let mut sorted: Vec<&Produced> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in sorted {
        let raw = RawRecord { key: Some(r.key.as_bytes()), value: r.value.as_deref(), redrive_for: None };
        let Classified::Change(key, kind) = classify(sink, &raw) else { bail!("bench records are all inline completing events or tombstones") };
        let mut payloads = std::collections::HashMap::new();
        for blob in blob_refs(&kind) {
            let inline = blob.inline.clone().context("bench payloads are inline")?;
            let bytes = verify(blob, bytes::Bytes::from(inline)).map_err(|e| anyhow::anyhow!(e.0))?;
            payloads.insert(blob.blob_id.clone(), bytes);
        }
        out.entry(r.partition).or_default().push(Change { key, partition: r.partition, offset: r.offset, kind, payloads: Payloads(Arc::new(payloads)) });
    }
    Ok(out)
}

/// Every partition's batches in order, partitions concurrently: what the runtime does.
pub async fn baseline<S: Sink>(sink: Arc<S>, by_partition: BTreeMap<i32, Vec<Change>>, batch: usize) -> anyhow::Result<Duration> {
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
pub async fn consume_all(config: &Config, total: usize) -> anyhow::Result<Duration> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let group = format!("{}-kafka-baseline", config.sinks.group_prefix);
    let consumer: StreamConsumer = kafka::consumer_config(&config.kafka, &group, config.sinks.commit_interval_ms)?.create()?;
    consumer.subscribe(&[config.kafka.topic.as_str()])?;
    let mut seen = 0usize;
    let mut started: Option<Instant> = None;
    while seen < total {
        let message = tokio::time::timeout(Duration::from_secs(120), consumer.recv()).await.context("the broker delivered nothing for 120 s")??;
        started.get_or_insert_with(Instant::now);
        drop(message);
        seen += 1;
    }
    Ok(started.map(|s| s.elapsed()).unwrap_or_default())
}

/// A `buildstats sink NAME` child; dropping it stops it (SIGTERM, then waits for the exit,
/// so its offsets are committed and it has left its consumer group).
pub struct SinkProcess {
    child: Child,
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

pub struct Measured {
    /// From the first record read to the last one written, as seen by polling `/metrics`
    /// (every 25 ms, after 3 s every 100 ms): never shorter than the truth, longer by at most
    /// a poll on each side.
    pub elapsed: Duration,
    pub peak_rss_kb: u64,
    /// User + system CPU seconds the sink process used.
    pub cpu_seconds: f64,
    /// `sink_retries_total` at the end.
    pub retries: f64,
}

fn cpu_seconds(pid: u32) -> f64 {
    // /proc/PID/stat fields 14 and 15 (after the parenthesized command): utime, stime in ticks.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Run `buildstats sink NAME` (its own process, default group) until it has written `total`
/// records, then stop it. With `kind` (`tombstone`), until it has read `total` records of that
/// kind and written every record it read (records its group re-reads after a restart do not
/// end the wait early). Progress every 5 s on stderr, each line starting with `label`.
pub async fn run_sink_process(bin: &Path, config: &Config, name: &str, total: f64, kind: Option<&str>, label: &str) -> anyhow::Result<Measured> {
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
    let mut process = SinkProcess { child };
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(1800);
    // The first record was read after the last poll that saw none: start there.
    let mut idle_at = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last_report = Instant::now();
    loop {
        let polled_at = Instant::now();
        if let Some(status) = process.child.try_wait()? {
            bail!("the {name} sink exited ({status}) before writing {total} records: see its log above");
        }
        let text = match client.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let seen = metric_sum(&text, "sink_records_in_total");
        let written = metric_sum(&text, "sink_records_written_total");
        let dead = metric_sum(&text, "sink_dead_lettered_total");
        let dropped = metric_sum(&text, "sink_records_dropped_total");
        if seen == 0.0 {
            idle_at = polled_at;
        } else if first.is_none() {
            first = Some(idle_at);
        }
        if dead > 0.0 {
            bail!("the {name} sink dead-lettered {dead} records: see its log above");
        }
        if dropped > 0.0 {
            bail!("the {name} sink dropped {dropped} records as deleted or expired: these builds are in Postgres' deleted_builds");
        }
        let done = match kind {
            None => written >= total,
            Some(k) => metric_sum_where(&text, "sink_records_in_total", &format!("kind=\"{k}\"")) >= total && written >= seen,
        };
        if done {
            let start = first.unwrap_or_else(Instant::now);
            return Ok(Measured {
                elapsed: start.elapsed(),
                peak_rss_kb: status_kb(process.child.id(), "VmHWM:"),
                cpu_seconds: cpu_seconds(process.child.id()),
                retries: metric_sum(&text, "sink_retries_total"),
            });
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            let rate = first.map(|f| written / f.elapsed().as_secs_f64().max(0.001)).unwrap_or(0.0);
            eprintln!("      {label}: {written:.0} of {total:.0} written ({rate:.0}/s so far), RSS {} MB", status_kb(process.child.id(), "VmRSS:") / 1024);
            last_report = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("the {name} sink did not write {total} records within 30 min ({written} so far)");
        }
        // Fine polls while a short phase needs them; then fewer, so scraping `/metrics` costs
        // the measured process (and the shared cores) next to nothing.
        let busy_for = first.map(|f| f.elapsed()).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(if busy_for < Duration::from_secs(3) { 25 } else { 100 })).await;
    }
}

/// The options both sink benches take: which sinks, which binary, which fixtures.
#[derive(clap::Args)]
pub struct Target {
    /// dynamodb, s3, opensearch, influxdb (comma-separated) or all.
    #[arg(long, default_value = "all")]
    pub sink: String,
    #[arg(long, default_value = "target/release/buildstats")]
    pub bin: std::path::PathBuf,
    #[arg(long, default_value = "../shared/fixtures/pants-runs")]
    pub fixtures: std::path::PathBuf,
}
