//! `buildstats admin topic migrate --to TOPIC --partitions N`: copy the builds topic to a new
//! topic version with another partition count, every build's records in their order.
//!
//! Why a new topic: a topic's partition count is fixed at creation (`kafka.partitions`). Kafka
//! can add partitions in place, but a key's partition is `murmur2(key) mod count`: raising the
//! count sends the later records of builds in progress to another partition than their earlier
//! ones, and a sink may then see a run's end before its start, or a payload's chunks after the
//! event that names them. (The test broker, tansu, cannot add partitions at all.) A new topic
//! version has every build on one partition from its first record.
//!
//! Order: all records of a key are on one source partition. Each source partition is copied by
//! its own task, in offset order, with the builds topic's producer settings (idempotent,
//! `acks=all`, the `murmur2_random` partitioner: a key lands on the partition the gateways
//! will write its later records to once they switch). A task keeps a window of records in
//! flight and takes their acknowledgements in order. The idempotent producer writes a target
//! partition in the order records were handed to it, retries included (the broker refuses a
//! record whose predecessor is missing); records never time out locally
//! (`message.timeout.ms=0`: a timed-out record is the one case where librdkafka skips a record
//! and goes on), and `enable.gapless.guarantee` (experimental in librdkafka, which logs a
//! warning saying so) makes any other error that would leave a gap a fatal producer error. So
//! what reaches the target of a key is always a prefix of its records, in order. Key, value (a
//! null value, a tombstone, stays null), every header and the original timestamp are kept.
//!
//! Resumable: the copy's own consumer group (`{sinks.group_prefix}-topic-migrate-{TOPIC}`)
//! commits, every `sinks.commit_interval_ms` (as the sinks do) and at the end, only offsets
//! whose record and every record before it were acknowledged by the target. A run copies up
//! to the end the source had when it started; a rerun (once the gateways are stopped) copies
//! only the tail, and one with nothing left copies nothing. A crash or a stop repeats what was acknowledged since the last commit and
//! what was in flight: at-least-once, a build's latest records may follow themselves again on
//! the target, which sinks (idempotent) take as they take any replay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use buildstats_core::config::Config;
use buildstats_core::kafka;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::runtime::dead_letter::copy_of;

/// Records of one source partition sent to the target and not yet acknowledged.
const IN_FLIGHT_PER_PARTITION: usize = 100;
/// Records read from one source partition and waiting for its task.
const QUEUED_PER_PARTITION: usize = 64;
/// Progress is printed this often (offsets are committed every `sinks.commit_interval_ms`).
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// No record read and none acknowledged for this long: the copy gives up, keeping what was
/// acknowledged (a rerun continues). Records themselves never time out.
const STALL_AFTER: Duration = Duration::from_secs(60);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a migration run did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MigrateSummary {
    /// Records copied (acknowledged by the target) by this run.
    pub copied: u64,
    /// Tombstones (null values) among them.
    pub tombstones: u64,
    /// Records this run found to copy: from the group's position to the source's end at start.
    pub total: u64,
    /// Partitions of the source topic.
    pub source_partitions: i32,
    /// Partitions of the target topic.
    pub target_partitions: i32,
    /// Topics this run created (the target and its dead-letter topic, when missing).
    pub created: Vec<String>,
}

pub async fn migrate(config: &Config, to: &str, partitions: i32) -> anyhow::Result<MigrateSummary> {
    let source = config.kafka.topic.clone();
    let to = to.trim();
    if to.is_empty() {
        anyhow::bail!("--to needs the name of the new topic (e.g. {})", next_version(&source));
    }
    if to == source {
        anyhow::bail!(
            "--to {to} is the builds topic itself (kafka.topic): a migration copies to a new topic version, e.g. --to {}",
            next_version(&source)
        );
    }
    if to == config.kafka.dead_letter_topic {
        anyhow::bail!(
            "--to {to} is the dead-letter topic (kafka.dead_letter_topic): name a new topic version, e.g. --to {}",
            next_version(&source)
        );
    }
    if partitions < 1 {
        anyhow::bail!("--partitions must be at least 1");
    }
    let dead_letters = format!("{to}.dlq");
    let source_partitions = kafka::partition_count(&config.kafka, &source, METADATA_TIMEOUT).await?;
    if source_partitions == 0 {
        anyhow::bail!(
            "the builds topic {source} (kafka.topic) does not exist on {}: nothing to migrate. Run `buildstats admin init` to create it, or set BUILDSTATS_KAFKA_TOPIC to the topic to copy",
            config.kafka.brokers
        );
    }
    let created = ensure_target(config, &[to, dead_letters.as_str()], partitions).await?;
    if created.is_empty() {
        eprintln!("topic migrate: {to} and {dead_letters} exist with {partitions} partitions");
    } else {
        eprintln!("topic migrate: created {} with {partitions} partitions", created.join(" and "));
    }

    let group = format!("{}-topic-migrate-{to}", config.sinks.group_prefix);
    let mut consumer_config = kafka::consumer_config(&config.kafka, &group, config.sinks.commit_interval_ms)?;
    consumer_config.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = consumer_config.create().context("cannot create the migration consumer")?;
    let mut producer_config = kafka::producer_config(&config.kafka)?;
    producer_config
        .set("max.in.flight.requests.per.connection", "5")
        .set("enable.gapless.guarantee", "true")
        // No local timeout: a timed-out record would be skipped while later ones of its key
        // are written. A copy that makes no progress is ended by the stall check instead.
        .set("message.timeout.ms", "0");
    let producer: FutureProducer = producer_config.create().context("cannot create the migration producer")?;

    // Where to start (the group's commit, else the oldest record) and where to stop (the end now).
    let mut wanted = TopicPartitionList::new();
    for p in 0..source_partitions {
        wanted.add_partition(&source, p);
    }
    let committed = consumer
        .committed_offsets(wanted, METADATA_TIMEOUT)
        .with_context(|| format!("cannot read the offsets of the migration group {group}"))?;
    let mut start = vec![0i64; source_partitions as usize];
    let mut end = vec![0i64; source_partitions as usize];
    let mut assignment = TopicPartitionList::new();
    let mut total = 0u64;
    for p in 0..source_partitions {
        let (low, high) = consumer
            .fetch_watermarks(&source, p, METADATA_TIMEOUT)
            .with_context(|| format!("cannot read the offsets of {source} partition {p}"))?;
        let from = match committed.find_partition(&source, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        start[p as usize] = from;
        end[p as usize] = high;
        if from < high {
            assignment.add_partition_offset(&source, p, Offset::Offset(from))?;
            total += (high - from) as u64;
        }
    }
    let mut summary = MigrateSummary { total, source_partitions, target_partitions: partitions, created, ..MigrateSummary::default() };
    let busy = assignment.count();
    if busy == 0 {
        eprintln!(
            "topic migrate: nothing to copy: group {group} is at the end of all {source_partitions} partitions of {source}; {to} has everything"
        );
        print_next_steps(config, to, &dead_letters);
        return Ok(summary);
    }
    eprintln!(
        "topic migrate: copying {total} records from {busy} of {source_partitions} partitions of {source} to {to} ({partitions} partitions); group {group}"
    );

    let progress = Arc::new(Progress {
        acked: start.iter().map(|s| AtomicI64::new(*s)).collect(),
        copied: AtomicU64::new(0),
        tombstones: AtomicU64::new(0),
    });
    let mut senders: HashMap<i32, mpsc::Sender<OwnedMessage>> = HashMap::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    for element in assignment.elements() {
        let p = element.partition();
        let (tx, rx) = mpsc::channel(QUEUED_PER_PARTITION);
        senders.insert(p, tx);
        tasks.spawn(copy_partition(producer.clone(), to.to_string(), p, rx, progress.clone()));
    }
    consumer.assign(&assignment).context("cannot assign the source partitions")?;

    let started = Instant::now();
    let mut run = CopyRun {
        consumer: &consumer,
        source: &source,
        end: &end,
        progress: &progress,
        committed: start.clone(),
        commit_every: Duration::from_millis(config.sinks.commit_interval_ms.max(1)),
        started,
        total,
    };
    let outcome = run.copy(&mut senders, &mut tasks).await;
    // Whatever happened, keep what the target acknowledged.
    drop(senders);
    tasks.abort_all();
    let commit = run.commit();
    summary.copied = progress.copied.load(Ordering::Acquire);
    summary.tombstones = progress.tombstones.load(Ordering::Acquire);
    if let Err(e) = outcome {
        let kept = match commit {
            Ok(()) => format!("the {} records acknowledged so far are committed", summary.copied),
            Err(c) => format!("committing the acknowledged offsets failed too ({c:#}); a rerun repeats some records (harmless)"),
        };
        return Err(e.context(format!("topic migrate {source} → {to} stopped: {kept}; run it again to continue")));
    }
    commit.context("the copy is complete but its offsets could not be committed; a rerun repeats it (harmless)")?;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "topic migrate done: copied {} records ({} tombstones) from {busy} partitions of {source} to {to} ({partitions} partitions) in {elapsed:.1} s, {:.0} records/s",
        summary.copied,
        summary.tombstones,
        summary.copied as f64 / elapsed.max(0.001),
    );
    print_next_steps(config, to, &dead_letters);
    Ok(summary)
}

/// `buildstats.builds.v1` → `buildstats.builds.v2`; anything else gains `.v2`.
fn next_version(topic: &str) -> String {
    if let Some((base, n)) = topic.rsplit_once(".v") {
        if let Ok(n) = n.parse::<u32>() {
            return format!("{base}.v{}", n + 1);
        }
    }
    format!("{topic}.v2")
}

fn print_next_steps(config: &Config, to: &str, dead_letters: &str) {
    let source = &config.kafka.topic;
    eprintln!(
        "next steps:
  1. stop the gateways and the retention worker, so nothing new reaches {source}, and let the
     sinks drain it; redrive what {old_dlq} still holds (`buildstats dlq redrive`)
  2. run this command again: it copies only what was written since (\"nothing to copy\" = done)
  3. set BUILDSTATS_KAFKA_TOPIC={to} and BUILDSTATS_KAFKA_DEAD_LETTER_TOPIC={dead_letters}
     for every role (gateways, sinks, retention worker)
  4. restart them: a sink's group starts on {to} at its beginning and rewrites what its store
     holds (every write is idempotent), or give the sinks new groups (`--group`)
  5. once every role runs on {to}, {source} and {old_dlq} can be deleted",
        old_dlq = config.kafka.dead_letter_topic,
    );
}

/// Create the target topics when missing, with the builds topic's settings; refuse ones that
/// exist with another partition count. Returns the topics created.
async fn ensure_target(config: &Config, topics: &[&str], partitions: i32) -> anyhow::Result<Vec<String>> {
    let mismatch = |topic: &str, actual: i32| {
        anyhow::anyhow!(
            "topic {topic} already exists with {actual} partitions, not {partitions}: a topic's partition count is fixed. \
             Rerun with --partitions {actual} to continue a migration to it, or choose another --to"
        )
    };
    for topic in topics {
        let actual = kafka::partition_count(&config.kafka, topic, METADATA_TIMEOUT).await?;
        if actual != 0 && actual != partitions {
            return Err(mismatch(topic, actual));
        }
    }
    let wanted: Vec<(&str, i32)> = topics.iter().map(|t| (*t, partitions)).collect();
    let created = kafka::create_topics(&config.kafka, &wanted).await?;
    for topic in topics {
        // A topic just created may take a moment to show in the metadata.
        let deadline = Instant::now() + METADATA_TIMEOUT;
        let actual = loop {
            let actual = kafka::partition_count(&config.kafka, topic, METADATA_TIMEOUT).await?;
            if actual != 0 || Instant::now() > deadline {
                break actual;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if actual != partitions {
            return Err(mismatch(topic, actual));
        }
    }
    Ok(created)
}

/// Shared between the reading loop and the partition tasks.
struct Progress {
    /// Per source partition: the offset after the last record that, with every record before
    /// it, the target acknowledged (what may be committed).
    acked: Vec<AtomicI64>,
    copied: AtomicU64,
    tombstones: AtomicU64,
}

struct CopyRun<'a> {
    consumer: &'a StreamConsumer,
    source: &'a str,
    /// Per source partition: the end when the run started (copy below it).
    end: &'a [i64],
    progress: &'a Progress,
    /// Per source partition: what the group has committed.
    committed: Vec<i64>,
    /// How often acknowledged offsets are committed (`sinks.commit_interval_ms`).
    commit_every: Duration,
    started: Instant,
    total: u64,
}

impl CopyRun<'_> {
    /// Read every assigned partition up to its end, hand each record to its partition's task,
    /// wait for the tasks to have every record acknowledged; commit and report meanwhile.
    /// A failed commit is retried at the next one: what it would have kept is repeated by a
    /// rerun after a crash, nothing is lost.
    async fn copy(
        &mut self,
        senders: &mut HashMap<i32, mpsc::Sender<OwnedMessage>>,
        tasks: &mut JoinSet<anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        let mut ticker = every(REPORT_EVERY);
        let mut commits = every(self.commit_every);
        let mut commit_error: Option<String> = None;
        let mut last_activity = Instant::now();
        let mut last_copied = 0u64;
        while !(senders.is_empty() && tasks.is_empty()) {
            tokio::select! {
                message = self.consumer.recv(), if !senders.is_empty() => {
                    let message = match message {
                        Ok(m) => m,
                        Err(e) => {
                            // Transient (a broker restarting) or not: a lasting one ends in the stall check.
                            eprintln!("topic migrate: reading {}: {e}", self.source);
                            continue;
                        }
                    };
                    last_activity = Instant::now();
                    let p = message.partition();
                    let offset = message.offset();
                    let Some(tx) = senders.get(&p) else { continue };
                    let end = self.end[p as usize];
                    if offset >= end {
                        // Written after the run started: left for the next run.
                        self.finish(senders, p);
                        continue;
                    }
                    if tx.send(message.detach()).await.is_err() {
                        // The task stopped; its error arrives through the join set.
                        senders.remove(&p);
                        continue;
                    }
                    if offset + 1 >= end {
                        self.finish(senders, p);
                    }
                }
                joined = tasks.join_next(), if !tasks.is_empty() => match joined {
                    Some(Ok(Ok(()))) | None => {}
                    Some(Ok(Err(e))) => return Err(e),
                    Some(Err(e)) => anyhow::bail!("a partition copy task failed: {e}"),
                },
                _ = commits.tick() => {
                    commit_error = self.commit().err().map(|e| format!("{e:#}"));
                }
                _ = ticker.tick() => {
                    let copied = self.progress.copied.load(Ordering::Acquire);
                    if copied != last_copied {
                        last_copied = copied;
                        last_activity = Instant::now();
                    }
                    if last_activity.elapsed() >= STALL_AFTER {
                        anyhow::bail!(
                            "no record of {} arrived and none was acknowledged for {} s: is the broker up?",
                            self.source,
                            STALL_AFTER.as_secs()
                        );
                    }
                    if let Some(e) = commit_error.take() {
                        eprintln!("topic migrate: {e} (retried every {} ms)", self.commit_every.as_millis());
                    }
                    let elapsed = self.started.elapsed().as_secs_f64();
                    eprintln!(
                        "topic migrate: copied {copied} of {} ({:.0}%), {:.0} records/s",
                        self.total,
                        100.0 * copied as f64 / self.total.max(1) as f64,
                        copied as f64 / elapsed.max(0.001)
                    );
                }
            }
        }
        Ok(())
    }

    /// Partition `p` is read to its end: close its task's queue (it finishes what it holds)
    /// and stop fetching it.
    fn finish(&self, senders: &mut HashMap<i32, mpsc::Sender<OwnedMessage>>, p: i32) {
        senders.remove(&p);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(self.source, p);
        let _ = self.consumer.pause(&tpl);
    }

    /// Commit, for every partition that moved, the offset after its acknowledged records.
    fn commit(&mut self) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (p, acked) in self.progress.acked.iter().enumerate() {
            let acked = acked.load(Ordering::Acquire);
            if acked > self.committed[p] {
                tpl.add_partition_offset(self.source, p as i32, Offset::Offset(acked))?;
                moved.push((p, acked));
            }
        }
        if moved.is_empty() {
            return Ok(());
        }
        self.consumer.commit(&tpl, CommitMode::Sync).context("cannot commit the migration group's offsets")?;
        for (p, acked) in moved {
            self.committed[p] = acked;
        }
        Ok(())
    }
}

/// Ticks every `period`, the first one `period` from now; a late tick delays the next ones.
fn every(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// Copy one source partition's records, in the order they arrive (offset order): send with a
/// window in flight, take the acknowledgements in order, and advance the partition's
/// acknowledged offset only past an unbroken run of acknowledged records.
async fn copy_partition(
    producer: FutureProducer,
    target: String,
    partition: i32,
    mut records: mpsc::Receiver<OwnedMessage>,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    let (ack_tx, mut ack_rx) = mpsc::channel::<(i64, bool, DeliveryFuture)>(IN_FLIGHT_PER_PARTITION);
    let send = async move {
        while let Some(record) = records.recv().await {
            let delivery = enqueue(&producer, &target, &record)
                .await
                .with_context(|| format!("cannot send the record at offset {} of source partition {partition}", record.offset()))?;
            if ack_tx.send((record.offset(), record.payload().is_none(), delivery)).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    };
    let acknowledge = async {
        while let Some((offset, tombstone, delivery)) = ack_rx.recv().await {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    anyhow::bail!("the target did not take the record at offset {offset} of source partition {partition}: {e}")
                }
                Err(_) => anyhow::bail!("the producer dropped the record at offset {offset} of source partition {partition}"),
            }
            progress.acked[partition as usize].store(offset + 1, Ordering::Release);
            progress.copied.fetch_add(1, Ordering::AcqRel);
            if tombstone {
                progress.tombstones.fetch_add(1, Ordering::AcqRel);
            }
        }
        anyhow::Ok(())
    };
    tokio::try_join!(send, acknowledge)?;
    Ok(())
}

/// Put a copy of `record` (key, value or null, every header, timestamp) in the producer's
/// queue for `target`, waiting while the queue is full.
async fn enqueue(producer: &FutureProducer, target: &str, record: &OwnedMessage) -> anyhow::Result<DeliveryFuture> {
    let mut out = copy_of(target, record, |_| false, &[]);
    if let Some(ms) = record.timestamp().to_millis() {
        out = out.timestamp(ms);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer.send_result(out) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if Instant::now() < deadline => {
                out = back;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_version;

    #[test]
    fn next_version_counts_up() {
        assert_eq!(next_version("buildstats.builds.v1"), "buildstats.builds.v2");
        assert_eq!(next_version("buildstats.builds.v9"), "buildstats.builds.v10");
        assert_eq!(next_version("builds"), "builds.v2");
    }
}
