//! `buildstats dlq redrive --sink NAME`: send the records one sink dead-lettered back to the
//! builds topic, once whatever made them unwritable is fixed (a sink bug, a store limit).
//!
//! Each redriven record keeps its key, value and original headers and gains
//! `bs-redrive-for: NAME`, so only that sink takes it (the others wrote it already). The
//! redrive's own consumer group (`{sinks.group_prefix}-NAME-redrive`) remembers how far it got:
//! running it twice sends nothing twice. It reads up to the end the dead-letter topic had
//! when it started, then stops with a summary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use buildstats_core::config::Config;
use buildstats_core::kafka::{self, headers};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::runtime::dead_letter::forward;
use crate::sinks::SinkName;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RedriveSummary {
    /// Dead-letter records read.
    pub read: u64,
    /// Sent back to the builds topic for this sink.
    pub redriven: u64,
    /// Dead-lettered by other sinks (left for their own redrive).
    pub other_sinks: u64,
}

pub async fn redrive(config: &Config, sink: SinkName) -> anyhow::Result<RedriveSummary> {
    let dlq = config.kafka.dead_letter_topic.clone();
    let group = format!("{}-{}-redrive", config.sinks.group_prefix, sink.as_str());
    let mut consumer_config = kafka::consumer_config(&config.kafka, &group, config.sinks.commit_interval_ms)?;
    consumer_config.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = consumer_config.create().context("cannot create the redrive consumer")?;
    let producer: FutureProducer = kafka::producer_config(&config.kafka)?.create().context("cannot create the redrive producer")?;

    let partitions = kafka::partition_count(&config.kafka, &dlq, Duration::from_secs(10)).await?;
    if partitions == 0 {
        anyhow::bail!("dead-letter topic {dlq} does not exist: run `buildstats admin init`");
    }
    // Where to start (the group's commit, else the beginning) and where to stop (the end now).
    let mut wanted = TopicPartitionList::new();
    for p in 0..partitions {
        wanted.add_partition(&dlq, p);
    }
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10)).context("cannot read the redrive group's offsets")?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut total = 0i64;
    for p in 0..partitions {
        let (low, high) =
            consumer.fetch_watermarks(&dlq, p, Duration::from_secs(10)).context("cannot read the dead-letter topic's offsets")?;
        let start = match committed.find_partition(&dlq, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        if start < high {
            remaining.insert(p, high);
            assignment.add_partition_offset(&dlq, p, Offset::Offset(start))?;
            total += high - start;
        }
    }
    eprintln!("redrive {sink}: {total} dead-letter records to read on {} of {partitions} partitions of {dlq}", remaining.len());
    let mut summary = RedriveSummary::default();
    if remaining.is_empty() {
        eprintln!("redrive {sink}: nothing to do");
        return Ok(summary);
    }
    consumer.assign(&assignment)?;
    let mut last_progress = Instant::now();
    let mut to_commit = assignment.clone();
    while !remaining.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("no dead-letter record arrived for 30 s before the end was reached; is the broker up?")??;
        let p = message.partition();
        let offset = message.offset();
        summary.read += 1;
        let for_this_sink = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == headers::DLQ_SINK).and_then(|h| h.value))
            .is_some_and(|v| v == sink.as_str().as_bytes());
        if for_this_sink {
            let not_carried = |key: &str| key.starts_with("bs-dlq-") || key == headers::REDRIVE_FOR;
            forward(&producer, &config.kafka.topic, &message, not_carried, &[(headers::REDRIVE_FOR, sink.as_str())])
                .await
                .map_err(|e| anyhow::anyhow!("cannot send a record back to {}: {e}. Nothing past offset {offset} of partition {p} was committed; run the redrive again", config.kafka.topic))?;
            summary.redriven += 1;
        } else {
            summary.other_sinks += 1;
        }
        to_commit.set_partition_offset(&dlq, p, Offset::Offset(offset + 1))?;
        if remaining.get(&p).is_some_and(|high| offset + 1 >= *high) {
            remaining.remove(&p);
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            consumer.commit(&to_commit, CommitMode::Sync)?;
            eprintln!("redrive {sink}: read {} of {total}, sent back {}", summary.read, summary.redriven);
            last_progress = Instant::now();
        }
    }
    consumer.commit(&to_commit, CommitMode::Sync)?;
    eprintln!(
        "redrive {sink} done: read {}, sent back {} to {} (marked {}: {sink}), left {} of other sinks",
        summary.read, summary.redriven, config.kafka.topic, headers::REDRIVE_FOR, summary.other_sinks
    );
    Ok(summary)
}
