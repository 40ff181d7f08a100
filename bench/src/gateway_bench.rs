//! gateway-bench: sustained throughput and latency of the ingest gateway, against a baseline
//! measured in the same run on the same broker: a raw rdkafka producer (same acks,
//! idempotence, compression and batching settings) sending the records the gateway would
//! send for the same requests, with the same concurrency.
//!
//! Release builds only. The gateway runs as its own process (`target/release/buildstats
//! gateway`), so its RSS is measured alone; the load generator runs in this process, on the
//! same machine. Needs the servers of `dev/services up`.
//!
//!   cargo build --release -p buildstats -p bench && target/release/gateway-bench

#[path = "common.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buildstats_core::auth::Authenticator;
use buildstats_core::kafka::{headers, producer_config};
use buildstats_core::tenancy::{RunId, Slug};
use buildstats_core::tokens::Scope;
use buildstats_core::{db, kafka};
use clap::Parser;
use common::status_kb;
use ingest_gateway::documents::{BuildStats, WorkunitsUpdate};
use ingest_gateway::events::{self, Source};
use ingest_gateway::normalize;
use ingest_gateway::otlp;
use ingest_gateway::records::BuildRecords;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Parser)]
#[command(about = "Gateway throughput/latency vs a raw-producer baseline, same broker, same run")]
struct Args {
    /// Seconds of load per measurement (after a 3 s warm-up).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Concurrent connections (gateway) or concurrent requests (baseline), workunits updates.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The same for run ends: 64 concurrent 500 KB reports is more than tansu takes within any
    /// sane timeout on this machine, and its producer-epoch defect then kills it.
    #[arg(long, default_value_t = 8)]
    run_end_connections: usize,
    /// kafka.produce_timeout_ms for the baseline producer and the gateway alike.
    #[arg(long, default_value_t = 30_000)]
    produce_timeout_ms: u64,
    /// workunits, run-end, otlp or all.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// The gateway binary.
    #[arg(long, default_value = "target/release/buildstats")]
    gateway_bin: PathBuf,
    /// Fixtures directory (real Pants payloads).
    #[arg(long, default_value = "../shared/fixtures/pants-runs")]
    fixtures: PathBuf,
    /// Port for the gateway under test.
    #[arg(long, default_value_t = 18080)]
    port: u16,
}

/// One kind of request: the HTTP body the plugin sends and the records it turns into.
struct Workload {
    name: &'static str,
    /// `workunits`, `run-end` or `otlp` (for --scenario).
    scenario: &'static str,
    method: reqwest::Method,
    /// Path under the buildsense base, `{run}` replaced by the run id; an absolute path
    /// (starting with `/`) is under the gateway's root.
    path: &'static str,
    body: Vec<u8>,
    compressed: bool,
    content_type: &'static str,
    /// Builds the gateway's records for one run id (for the baseline, once per run, up front).
    records: Box<dyn Fn(&str) -> BuildRecords + Send + Sync>,
}

#[derive(Default, Clone)]
struct Stats {
    ok: u64,
    failed: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index] as f64 / 1000.0
    }
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn multipart(data: &[u8]) -> (Vec<u8>, &'static str) {
    const BOUNDARY: &str = "benchboundary7d1c";
    let mut body = Vec::with_capacity(data.len() + 200);
    write!(body, "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"buildsense\"; filename=\"buildsense\"\r\n\r\n").unwrap();
    body.extend_from_slice(data);
    write!(body, "\r\n--{BOUNDARY}--\r\n").unwrap();
    (body, "multipart/form-data; boundary=benchboundary7d1c")
}

fn run_id(workload: usize, n: u64) -> String {
    format!("pants_run_2026_12_04_00_00_00_000_{workload:04x}{n:028x}")
}

fn workloads(fixtures: &Path, org: &'static Slug, repo: &'static Slug, limit: usize) -> anyhow::Result<Vec<Workload>> {
    let ctx = common::plugin_context(org.as_str(), repo.as_str());

    // (a) A workunits update as the plugin sends every second: 40 workunits of a real run.
    let fixture: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures.join("pants_pytest_with_address.json"))?)?;
    let workunits: Vec<_> = fixture["workunits"].as_array().context("workunits")?.iter().take(40).cloned().collect();
    let update_doc = serde_json::to_vec(&serde_json::json!({"run_id": "RUN", "workunits": workunits}))?;
    // (b) The final report of a real ~500 KB run.
    let end_doc = std::fs::read(fixtures.join("ci_branch_final_lint.json"))?;

    let update_template = update_doc.clone();
    let wu_records = move |run: &str| {
        let raw = String::from_utf8(update_template.clone()).unwrap().replace("RUN", run).into_bytes();
        let update: WorkunitsUpdate = serde_json::from_slice(&raw).unwrap();
        let src = Source { org, repo, request_id: "bench", record_limit: limit };
        events::workunits_updated(&src, &RunId::parse(run).unwrap(), &raw, &update).unwrap()
    };
    let end_template = end_doc.clone();
    let end_records = move |run: &str| {
        let mut doc: serde_json::Value = serde_json::from_slice(&end_template).unwrap();
        doc["run_info"]["id"] = serde_json::json!(run);
        let raw = serde_json::to_vec(&doc).unwrap();
        let parsed: BuildStats = serde_json::from_slice(&raw).unwrap();
        let record = normalize::run_record(&parsed, &ctx, run).unwrap();
        let src = Source { org, repo, request_id: "bench", record_limit: limit };
        events::run_ended(&src, &RunId::parse(run).unwrap(), &raw, &parsed, record, "run_end").unwrap()
    };
    // (c) An OTLP export of 100 Pants-shaped spans (no root: a batch in the middle of a run).
    let otlp_records = move |run: &str| {
        let request = otlp_batch(run);
        let export = otlp::split(&request);
        let trace = &export.traces[0];
        let run_id = RunId::parse(&otlp::run_id_for_trace(&trace.trace_id)).unwrap();
        let doc = serde_json::to_vec(&otlp::workunits_document(run_id.as_str(), &trace.spans)).unwrap();
        let update: WorkunitsUpdate = serde_json::from_slice(&doc).unwrap();
        let src = Source { org, repo, request_id: "bench", record_limit: limit };
        events::workunits_updated(&src, &run_id, &doc, &update).unwrap()
    };
    Ok(vec![
        Workload {
            name: "workunits update (40 workunits, ~12 KB JSON)",
            scenario: "workunits",
            method: reqwest::Method::POST,
            path: "{run}/workunits/",
            compressed: update_doc.len() > 10 * 1024,
            content_type: "multipart/form-data; boundary=benchboundary7d1c",
            body: update_doc,
            records: Box::new(wu_records),
        },
        Workload {
            name: "run end (real 500 KB final report)",
            scenario: "run-end",
            method: reqwest::Method::PATCH,
            path: "{run}/",
            compressed: true,
            content_type: "multipart/form-data; boundary=benchboundary7d1c",
            body: end_doc,
            records: Box::new(end_records),
        },
        Workload {
            name: "OTLP export (100 spans, protobuf)",
            scenario: "otlp",
            method: reqwest::Method::POST,
            path: "/v1/traces",
            compressed: false,
            content_type: "application/x-protobuf",
            body: Vec::new(),
            records: Box::new(otlp_records),
        },
    ])
}

/// 100 spans of one Pants run (trace id derived from `run`), as the OTel exporter sends them.
fn otlp_batch(run: &str) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let text = |v: String| Some(AnyValue { value: Some(any_value::Value::StringValue(v)) });
    let kv = |k: &str, value: Option<AnyValue>| KeyValue { key: k.into(), value, ..Default::default() };
    let trace_id: [u8; 16] = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, run.as_bytes()).into_bytes();
    let t0 = 1_764_806_400_000_000_000u64;
    let spans = (0..100u64)
        .map(|i| Span {
            trace_id: trace_id.to_vec(),
            span_id: (i + 2).to_be_bytes().to_vec(),
            parent_span_id: 1u64.to_be_bytes().to_vec(),
            name: "pants.engine.process.fallible_to_exec_result_or_raise".into(),
            start_time_unix_nano: t0 + i * 1_000_000,
            end_time_unix_nano: t0 + i * 1_000_000 + 500_000,
            attributes: vec![
                kv("pantsbuild.workunit.span_id", text(format!("{:016x}", i + 2))),
                kv(
                    "pantsbuild.workunit.parent_span_ids",
                    Some(AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![text("0000000000000001".into()).unwrap()] })) }),
                ),
                kv("pantsbuild.workunit.level", text("DEBUG".into())),
                kv("pantsbuild.workunit.metadata.exit_code", Some(AnyValue { value: Some(any_value::Value::IntValue(0)) })),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", text("pantsbuild".into()))], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// The body of one request for `run`: the document with its run id, as the plugin encodes it.
fn request_body(workload: &Workload, run: &str) -> Vec<u8> {
    if workload.scenario == "otlp" {
        return otlp_batch(run).encode_to_vec();
    }
    let doc = if workload.path.ends_with("workunits/") {
        String::from_utf8(workload.body.clone()).unwrap().replace("RUN", run).into_bytes()
    } else {
        let mut doc: serde_json::Value = serde_json::from_slice(&workload.body).unwrap();
        doc["run_info"]["id"] = serde_json::json!(run);
        serde_json::to_vec(&doc).unwrap()
    };
    let data = if workload.compressed { zlib(&doc) } else { doc };
    multipart(&data).0
}

/// Run `op` from `concurrency` tasks for warm-up + `duration`; record only the measured part.
async fn drive<F, Fut>(concurrency: usize, duration: Duration, label: &str, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let warmup = Duration::from_secs(3);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (op, measuring, stop, done) = (op.clone(), measuring.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = op(worker, n).await;
                n += 1;
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    if ok {
                        stats.ok += 1;
                        stats.latencies_us.push(t.elapsed().as_micros() as u64);
                    } else {
                        stats.failed += 1;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            stats
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let measure_start = Instant::now();
    let mut last = 0;
    while measure_start.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(5).min(duration.saturating_sub(measure_start.elapsed())).max(Duration::from_millis(10))).await;
        let now = done.load(Ordering::Relaxed);
        eprintln!("  {label}: {:>5.1} s, {now} requests ({:.0}/s over the last interval)", measure_start.elapsed().as_secs_f64(), (now - last) as f64 / 5.0);
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = measure_start.elapsed();
    let mut total = Stats { elapsed, ..Stats::default() };
    for task in tasks {
        let s = task.await.unwrap();
        total.ok += s.ok;
        total.failed += s.failed;
        total.latencies_us.extend(s.latencies_us);
    }
    total
}

struct GatewayProcess {
    child: Child,
}

impl GatewayProcess {
    fn rss_kb(&self) -> u64 {
        status_kb(self.child.id(), "VmRSS:")
    }
    fn peak_kb(&self) -> u64 {
        status_kb(self.child.id(), "VmHWM:")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}


fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut config, unique) = common::bench_config("gateway-bench", &args.gateway_bin)?;
    config.kafka.produce_timeout_ms = args.produce_timeout_ms;
    let limit = config.kafka.record_limit_bytes;

    eprintln!("[1/4] set-up: migrations, topic {} ({} partitions), token", config.kafka.topic, config.kafka.partitions);
    db::migrate(&config.postgres).await?;
    kafka::ensure_topics(&config.kafka).await?;
    let org: &'static Slug = Box::leak(Box::new(Slug::parse("org", &format!("bench{unique}"))?));
    let repo: &'static Slug = Box::leak(Box::new(Slug::parse("repo", "repo")?));
    let auth = Authenticator::new(&config.auth, db::connect(&config.postgres).await?)?;
    let token = auth.create_token(org, repo, Scope::Ingest, false, "bench", Some(1)).await?.token;

    eprintln!("[2/4] starting the gateway: {} gateway on 127.0.0.1:{}", args.gateway_bin.display(), args.port);
    let listen = format!("127.0.0.1:{}", args.port);
    let child = Command::new(&args.gateway_bin)
        .arg("gateway")
        .env("BUILDSTATS_GATEWAY_LISTEN", &listen)
        .env("BUILDSTATS_KAFKA_TOPIC", &config.kafka.topic)
        .env("BUILDSTATS_KAFKA_DEAD_LETTER_TOPIC", &config.kafka.dead_letter_topic)
        .env("BUILDSTATS_LOG_LEVEL", "warn")
        .env("BUILDSTATS_KAFKA_PRODUCE_TIMEOUT_MS", args.produce_timeout_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the gateway")?;
    let gateway = GatewayProcess { child };
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.connections).build()?;
    let ready_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://{listen}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > ready_deadline {
            bail!("the gateway did not become ready on {listen} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle_rss = gateway.rss_kb();

    let producer: Arc<FutureProducer> = Arc::new(producer_config(&config.kafka)?.create()?);
    let all = workloads(&args.fixtures, org, repo, limit)?;
    let selected: Vec<Workload> = all
        .into_iter()
        .filter(|w| args.scenario == "all" || args.scenario == w.scenario)
        .collect();
    let duration = Duration::from_secs(args.duration);
    let mut report = Vec::new();
    for (i, workload) in selected.into_iter().enumerate() {
        let workload = Arc::new(workload);
        let connections = if workload.scenario == "run-end" { args.run_end_connections } else { args.connections };
        eprintln!("[3/4] {}: baseline (raw producer, {connections} concurrent requests)", workload.name);
        // The same 64 runs for both: their records encoded once, up front.
        let runs: Vec<String> = (0..64).map(|k| run_id(i, k)).collect();
        let prepared: Arc<Vec<BuildRecords>> = Arc::new(runs.iter().map(|r| (workload.records)(r)).collect());
        let (p, topic) = (producer.clone(), config.kafka.topic.clone());
        let baseline = drive(connections, duration, "baseline", move |worker, n| {
            let (p, topic, prepared) = (p.clone(), topic.clone(), prepared.clone());
            async move {
                let k = ((worker as u64) * 7919 + n) % 64;
                send_like_the_gateway(&p, &topic, &prepared[k as usize]).await
            }
        })
        .await;

        eprintln!("[3/4] {}: gateway ({connections} connections)", workload.name);
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new(runs.iter().map(|r| request_body(&workload, r)).collect());
        let runs = Arc::new(runs);
        let (w, c, t, base) = (workload.clone(), client.clone(), token.clone(), format!("http://{listen}/api/v1/repos/{org}/{repo}/buildsense/"));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let sampler = {
            let peak_rss = peak_rss.clone();
            let pid = gateway.child.id();
            tokio::spawn(async move {
                loop {
                    peak_rss.fetch_max(status_kb(pid, "VmRSS:"), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        let gateway_stats = drive(connections, duration, "gateway", move |worker, n| {
            let (w, c, t, base, bodies, runs) = (w.clone(), c.clone(), t.clone(), base.clone(), bodies.clone(), runs.clone());
            async move {
                // The body's run id is one of the 64 prepared ones; the URL's must match it.
                let k = ((worker as u64) * 7919 + n) % 64;
                let url = if w.path.starts_with('/') {
                    format!("{}{}", base.split("/api/").next().unwrap(), w.path)
                } else {
                    format!("{base}{}", w.path.replace("{run}", &runs[k as usize]))
                };
                let mut request = c
                    .request(w.method.clone(), url)
                    .bearer_auth(&t)
                    .header("content-type", w.content_type)
                    .header("user-agent", "pants/v2.16.0 toolchain/v0.27.0")
                    .body(bodies[k as usize].clone());
                if w.compressed {
                    request = request.header("content-encoding", "compress");
                }
                matches!(request.send().await, Ok(r) if r.status().is_success())
            }
        })
        .await;
        sampler.abort();
        report.push((workload.name, connections, baseline, gateway_stats, peak_rss.load(Ordering::Relaxed)));
    }

    eprintln!("[4/4] summary");
    println!("machine: {} cores, {}; broker tansu 0.6.0 (SQLite) on the same machine; load generator in-process on the same machine", num_cpus(), cpu_model());
    println!("settings: {} s measured after 3 s warm-up, record limit {} bytes, {} partitions, acks=all, idempotent, {} compression, linger {} ms, produce timeout {} ms", args.duration, limit, config.kafka.partitions, config.kafka.compression, config.kafka.linger_ms, args.produce_timeout_ms);
    println!("gateway RSS idle {} MB, peak (VmHWM) {} MB", idle_rss / 1024, gateway.peak_kb() / 1024);
    println!();
    println!("| workload | concurrency | path | req/s | p50 ms | p99 ms | failed | gateway/baseline req/s | peak RSS MB |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for (name, connections, baseline, gw, peak) in &report {
        if name.starts_with("OTLP") {
            println!("| {name} | {connections} | = spans/s | {:.0} (baseline) / {:.0} (gateway) | | | | | |", baseline.rate() * 100.0, gw.rate() * 100.0);
        }
        println!("| {name} | {connections} | baseline (raw producer) | {:.0} | {:.1} | {:.1} | {} | | |", baseline.rate(), baseline.percentile_ms(0.5), baseline.percentile_ms(0.99), baseline.failed);
        println!("| {name} | {connections} | gateway (HTTP) | {:.0} | {:.1} | {:.1} | {} | {:.2} | {} |", gw.rate(), gw.percentile_ms(0.5), gw.percentile_ms(0.99), gw.failed, gw.rate() / baseline.rate(), peak / 1024);
    }
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// What the gateway's publisher does for one request: chunks, their acks, then the
/// completing event and its ack.
async fn send_like_the_gateway(producer: &FutureProducer, topic: &str, records: &BuildRecords) -> bool {
    fn send(
        producer: &FutureProducer,
        topic: &str,
        key: &str,
        r: &ingest_gateway::records::EncodedRecord,
    ) -> Option<rdkafka::producer::DeliveryFuture> {
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: headers::EVENT_TYPE, value: Some(r.event_type.name()) })
            .insert(Header { key: headers::REQUEST_ID, value: Some("bench") });
        producer.send_result(FutureRecord::to(topic).key(key).payload(&r.value).headers(headers)).ok()
    }
    let mut pending = Vec::new();
    for r in records.chunks() {
        match send(producer, topic, &records.key, r) {
            Some(d) => pending.push(d),
            None => return false,
        }
    }
    for d in futures::future::join_all(pending).await {
        if !matches!(d, Ok(Ok(_))) {
            return false;
        }
    }
    match send(producer, topic, &records.key, records.completing()) {
        Some(d) => matches!(d.await, Ok(Ok(_))),
        None => false,
    }
}
