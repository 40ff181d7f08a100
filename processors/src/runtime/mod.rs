//! The consumer-group runtime every sink runs on.
//!
//! One rdkafka consumer per process, in the sink's own group. The dispatch loop here reads
//! records and hands each partition's records, in order, to that partition's worker task
//! ([`partition`]), which batches them, writes them through the [`Sink`], and only then
//! *stores* the offset after the batch. librdkafka commits stored offsets every
//! `sinks.commit_interval_ms`, on every rebalance and on close: an offset is never committed
//! before the store holds that record and every record before it (at-least-once; a `kill -9`
//! repeats at most the uncommitted tail, which idempotent sinks absorb).
//!
//! Backpressure: a worker's queue holds `sinks.partition_buffer` records; when it is full the
//! dispatch loop pauses that partition (and only that one) until the worker catches up, so a
//! partition waiting for a store that is down never starves the others of memory.
//!
//! Rebalances: a revoked partition's generation is bumped inside librdkafka's rebalance
//! callback, before librdkafka commits. A worker stores an offset only while its generation
//! is current, so work finished after a revoke is never committed by this process (the new
//! owner repeats it).

pub mod backoff;
pub mod dead_letter;
pub mod decode;
pub mod deleted;
pub mod metrics;
mod partition;
pub mod payloads;
pub mod staging;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use buildstats_core::config::Config;
use buildstats_core::kafka;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::sink::Sink;
use dead_letter::DeadLetters;
use staging::ChunkStage;

/// The runtime's knobs, from `[sinks]` and `[kafka]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub topic: String,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub batch_linger: Duration,
    pub write_concurrency: usize,
    pub partition_buffer: usize,
    pub partition_buffer_bytes: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub shutdown_grace: Duration,
}

impl Settings {
    /// A sink that needs payloads holds each payload twice while its batch is written (the
    /// record, and the resolved bytes it puts), so its partition queues get half of
    /// `sinks.partition_buffer_bytes`: the S3 sink's peak RSS then stays near the others'
    /// (`docs/BENCHMARKS.md`, sink memory).
    pub fn for_sink(config: &Config, needs_payloads: bool) -> Settings {
        let mut settings = Settings::from_config(config);
        if needs_payloads {
            settings.partition_buffer_bytes = (settings.partition_buffer_bytes / 2).max(1);
        }
        settings
    }

    pub fn from_config(config: &Config) -> Settings {
        let s = &config.sinks;
        Settings {
            topic: config.kafka.topic.clone(),
            batch_max_records: s.batch_max_records.max(1),
            batch_max_bytes: s.batch_max_bytes.max(1),
            batch_linger: Duration::from_millis(s.batch_linger_ms),
            write_concurrency: s.write_concurrency.max(1),
            partition_buffer: s.partition_buffer.max(1),
            partition_buffer_bytes: s.partition_buffer_bytes.max(1),
            retry_initial: Duration::from_millis(s.retry_initial_ms),
            retry_max: Duration::from_millis(s.retry_max_ms),
            shutdown_grace: Duration::from_secs(s.shutdown_grace_seconds),
        }
    }
}

/// Which generation of each partition's ownership is current, and the offsets stored in it.
#[derive(Default)]
struct Ownership {
    generation: HashMap<i32, u64>,
    stored: HashMap<i32, i64>,
    revoked: Vec<i32>,
}

impl Ownership {
    fn generation_of(&self, partition: i32) -> u64 {
        self.generation.get(&partition).copied().unwrap_or(0)
    }
}

/// The consumer's context: rebalance and statistics callbacks.
pub struct SinkContext {
    sink: &'static str,
    ownership: Mutex<Ownership>,
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    ::metrics::gauge!(metrics::CONSUMER_LAG, "sink" => self.sink, "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut own = self.ownership.lock().expect("ownership lock");
            for e in tpl.elements() {
                *own.generation.entry(e.partition()).or_default() += 1;
                own.stored.remove(&e.partition());
                own.revoked.push(e.partition());
            }
            tracing::info!(sink = self.sink, partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions revoked: committing what is written, dropping the rest");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(sink = self.sink, partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(sink = self.sink, error = %e, "rebalance failed"),
        }
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        ::metrics::gauge!(metrics::PARTITIONS_ASSIGNED, "sink" => self.sink).set(assigned as f64);
    }
}

pub(crate) type SinkConsumer = StreamConsumer<SinkContext>;

/// What the partition workers share.
pub(crate) struct Shared<S: Sink> {
    pub sink: Arc<S>,
    pub consumer: Arc<SinkConsumer>,
    pub dead_letters: DeadLetters,
    pub stage: Option<ChunkStage>,
    /// Drops records of deleted and expired builds ([`deleted`]).
    pub deleted: Arc<deleted::DeletedBuilds>,
    pub settings: Settings,
    pub stop: watch::Receiver<bool>,
}

impl<S: Sink> Shared<S> {
    fn current_generation(&self, partition: i32) -> u64 {
        self.consumer.context().ownership.lock().expect("ownership lock").generation_of(partition)
    }

    pub fn is_current(&self, partition: i32, generation: u64) -> bool {
        self.current_generation(partition) == generation
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Store `next_offset` for commit, if this worker still owns the partition.
    pub fn store_offset(&self, partition: i32, generation: u64, next_offset: i64) {
        let mut own = self.consumer.context().ownership.lock().expect("ownership lock");
        if own.generation_of(partition) != generation {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(&self.settings.topic, partition, Offset::Offset(next_offset)).is_err() {
            return;
        }
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => {
                own.stored.insert(partition, next_offset);
            }
            // Not assigned any more: the new owner repeats the tail.
            Err(e) => tracing::debug!(partition, error = %e, "offset not stored"),
        }
    }
}

struct WorkerHandle {
    tx: mpsc::Sender<OwnedMessage>,
    /// Bytes of record values in `tx`'s queue (the worker subtracts what it takes).
    queued_bytes: Arc<AtomicUsize>,
    pending: VecDeque<OwnedMessage>,
    paused: bool,
}

/// Run a sink until `shutdown` resolves: consume, write, commit; then finish the batches in
/// flight (at most `sinks.shutdown_grace_seconds`), commit what they wrote and leave the group.
pub async fn run<S: Sink>(
    config: &Config,
    sink: Arc<S>,
    group_id: &str,
    stage: Option<ChunkStage>,
    deleted: Arc<deleted::DeletedBuilds>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let name = sink.name();
    let context = SinkContext { sink: name, ownership: Mutex::new(Ownership::default()) };
    let mut consumer_config = kafka::consumer_config(&config.kafka, group_id, config.sinks.commit_interval_ms)?;
    if !config.sinks.instance_id.is_empty() {
        consumer_config.set("group.instance.id", &config.sinks.instance_id);
    }
    // The lag gauge comes from librdkafka's statistics (`SinkContext::stats`); other consumers
    // (replay, migrate, redrive) have no use for them, and the default context logs each one.
    if consumer_config.get("statistics.interval.ms").is_none() {
        consumer_config.set("statistics.interval.ms", "5000");
    }
    let consumer: SinkConsumer = consumer_config
        .create_with_context(context)
        .with_context(|| format!("cannot create the {name} sink's consumer for {}", config.kafka.brokers))?;
    consumer
        .subscribe(&[config.kafka.topic.as_str()])
        .with_context(|| format!("cannot subscribe to {}", config.kafka.topic))?;
    let consumer = Arc::new(consumer);
    let producer: FutureProducer = kafka::producer_config(&config.kafka)?
        .create()
        .context("cannot create the dead-letter producer")?;
    let settings = Settings::for_sink(config, sink.needs_payloads());
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        sink,
        consumer: consumer.clone(),
        dead_letters: DeadLetters::new(producer, &config.kafka.dead_letter_topic, name),
        stage,
        deleted,
        settings: settings.clone(),
        stop: stop_rx,
    });
    tracing::info!(sink = name, group = group_id, topic = %settings.topic, "sink consuming");

    let mut workers: HashMap<i32, WorkerHandle> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            received = consumer.recv() => {
                // Revocations happen inside recv(): apply them before dispatching what it
                // returned, which already belongs to the new assignment.
                let message = received.map(|m| m.detach());
                drop_revoked(&consumer, &settings.topic, &mut workers);
                match message {
                    Ok(message) => dispatch(&shared, &mut workers, &mut tasks, message),
                    Err(e) => {
                        tracing::warn!(sink = name, error = %e, "consumer error; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            _ = tick.tick() => {
                drop_revoked(&consumer, &settings.topic, &mut workers);
                drain_pending(&shared, &mut workers);
                while let Some(done) = tasks.try_join_next() {
                    if let Err(e) = done {
                        tracing::error!(sink = name, error = %e, "a partition worker panicked");
                    }
                }
            }
        }
    }

    tracing::info!(sink = name, "stopping: finishing the batches in flight");
    let _ = stop_tx.send(true);
    workers.clear();
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(sink = name, grace = ?settings.shutdown_grace, "batches still in flight at the end of the grace period: abandoned uncommitted (they will be repeated)");
        tasks.abort_all();
    }
    let stored: Vec<(i32, i64)> = {
        let own = consumer.context().ownership.lock().expect("ownership lock");
        own.stored.iter().map(|(p, o)| (*p, *o)).collect()
    };
    if !stored.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &stored {
            let _ = tpl.add_partition_offset(&settings.topic, *p, Offset::Offset(*o));
        }
        let c = consumer.clone();
        let committed = tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync)).await;
        match committed {
            Ok(Ok(())) => tracing::info!(sink = name, partitions = stored.len(), "committed written offsets"),
            Ok(Err(e)) => tracing::warn!(sink = name, error = %e, "final commit failed (the tail will be repeated)"),
            Err(e) => tracing::warn!(sink = name, error = %e, "final commit task failed"),
        }
    }
    consumer.unsubscribe();
    tracing::info!(sink = name, "sink stopped");
    Ok(())
}

fn partition_list(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

fn drop_revoked(consumer: &SinkConsumer, topic: &str, workers: &mut HashMap<i32, WorkerHandle>) {
    let revoked = std::mem::take(&mut consumer.context().ownership.lock().expect("ownership lock").revoked);
    for p in revoked {
        if let Some(handle) = workers.remove(&p) {
            // Do not leave a pause behind for whoever gets the partition next (this process,
            // after an eager rebalance, included).
            if handle.paused {
                let _ = consumer.resume(&partition_list(topic, p));
            }
        }
    }
    update_paused_gauge(consumer.context().sink, workers);
}

fn dispatch<S: Sink>(
    shared: &Arc<Shared<S>>,
    workers: &mut HashMap<i32, WorkerHandle>,
    tasks: &mut JoinSet<()>,
    message: OwnedMessage,
) {
    let p = message.partition();
    let handle = workers.entry(p).or_insert_with(|| {
        let (tx, rx) = mpsc::channel(shared.settings.partition_buffer);
        let generation = shared.current_generation(p);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        tasks.spawn(partition::run(shared.clone(), p, generation, rx, queued_bytes.clone()));
        WorkerHandle { tx, queued_bytes, pending: VecDeque::new(), paused: false }
    });
    if !handle.pending.is_empty() {
        handle.pending.push_back(message);
        return;
    }
    if let Err(message) = try_hand_over(handle, message, shared.settings.partition_buffer_bytes) {
        handle.pending.push_back(message);
        if !handle.paused {
            if let Err(e) = shared.consumer.pause(&partition_list(&shared.settings.topic, p)) {
                tracing::warn!(partition = p, error = %e, "cannot pause partition");
            }
            handle.paused = true;
            update_paused_gauge(shared.sink.name(), workers);
        }
    }
}

/// Queue a record for its worker unless the worker's queue is full (records or bytes).
fn try_hand_over(handle: &mut WorkerHandle, message: OwnedMessage, max_bytes: usize) -> Result<(), OwnedMessage> {
    let size = message.payload().map_or(0, <[u8]>::len);
    let queued = handle.queued_bytes.load(Ordering::Acquire);
    // One record always fits an empty queue, however large.
    if queued > 0 && queued + size > max_bytes {
        return Err(message);
    }
    match handle.tx.try_send(message) {
        Ok(()) => {
            handle.queued_bytes.fetch_add(size, Ordering::AcqRel);
            Ok(())
        }
        Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => Err(m),
    }
}

fn drain_pending<S: Sink>(shared: &Arc<Shared<S>>, workers: &mut HashMap<i32, WorkerHandle>) {
    let mut changed = false;
    let max_bytes = shared.settings.partition_buffer_bytes;
    for (p, handle) in workers.iter_mut() {
        while let Some(message) = handle.pending.pop_front() {
            if let Err(message) = try_hand_over(handle, message, max_bytes) {
                handle.pending.push_front(message);
                break;
            }
        }
        if handle.pending.is_empty() && handle.paused {
            if let Err(e) = shared.consumer.resume(&partition_list(&shared.settings.topic, *p)) {
                tracing::warn!(partition = p, error = %e, "cannot resume partition");
            }
            handle.paused = false;
            changed = true;
        }
    }
    if changed {
        update_paused_gauge(shared.sink.name(), workers);
    }
}

fn update_paused_gauge(sink: &'static str, workers: &HashMap<i32, WorkerHandle>) {
    let paused = workers.values().filter(|w| w.paused).count();
    ::metrics::gauge!(metrics::PARTITIONS_PAUSED, "sink" => sink).set(paused as f64);
}
