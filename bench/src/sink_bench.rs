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
#[path = "sink_common.rs"]
mod sink_common;

use std::sync::Arc;

use buildstats_core::kafka;
use clap::Parser;
use processors::sinks::dynamodb::DynamoDbSink;
use processors::sinks::influxdb::InfluxDbSink;
use processors::sinks::opensearch::OpenSearchSink;
use processors::sinks::s3::S3Sink;
use sink_common::{baseline, changes_by_partition, consume_all, prefill, run_sink_process, selected, SINKS};

#[derive(Parser)]
#[command(about = "Sink throughput from a pre-filled topic vs the same store calls without Kafka, same run")]
struct Args {
    /// Builds to pre-fill (each a run start and a run end: two records).
    #[arg(long, default_value_t = 2000)]
    builds: usize,
    #[command(flatten)]
    target: sink_common::Target,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut config, unique) = common::bench_config("sink-bench", &args.target.bin)?;
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
    let prefilled = prefill(&config, &args.target.fixtures, &unique, args.builds).await?;
    let produced = prefilled.records;
    let total = produced.len();
    eprintln!("      {total} records ({} MB of documents) in {:.1} s", prefilled.doc_bytes / 1_000_000, prefilled.elapsed.as_secs_f64());

    eprintln!("[3/4] broker alone: a consumer with the sinks' settings reads the topic and does nothing");
    let kafka_time = consume_all(&config, total).await?;
    let kafka_rate = total as f64 / kafka_time.as_secs_f64();
    eprintln!("      {total} records in {:.1} s: {kafka_rate:.0} records/s", kafka_time.as_secs_f64());

    let batch = config.sinks.batch_max_records;
    let mut rows = Vec::new();
    for name in SINKS {
        if !selected(&args.target.sink, name) {
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
        let measured = run_sink_process(&args.target.bin, &config, name, total as f64, None, name).await?;
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
