//! The shape every sink has: what the runtime hands it (a [`Change`] per record, in partition
//! order) and what it answers (written, or rejected for good, or "try again later").
//!
//! A sink never commits offsets, never retries and never dead-letters: the runtime does all
//! three the same way for every store. A sink only has to be idempotent: writing the same
//! change twice must leave the store exactly as writing it once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use buildstats_schemas::{ArtifactsUploaded, BlobRef, Event, EventHeader, RunEnded, RunRecord, RunStarted, WorkunitsUpdated};
use bytes::Bytes;

/// One build-changing record of the builds topic, decoded and with its payloads resolved.
#[derive(Debug, Clone)]
pub struct Change {
    /// `{org}/{repo}/{run_id}`, validated.
    pub key: BuildKey,
    pub partition: i32,
    pub offset: i64,
    pub kind: ChangeKind,
    /// Payload bytes by `blob_id` (inline or reassembled from chunks), present only for sinks
    /// whose [`Sink::needs_payloads`] is true.
    pub payloads: Payloads,
}

#[derive(Debug, Clone)]
pub enum ChangeKind {
    Started(RunStarted),
    WorkunitsUpdated(WorkunitsUpdated),
    Ended(RunEnded),
    ArtifactsUploaded(ArtifactsUploaded),
    /// A null value on the build's key: delete everything held for the build.
    Tombstone,
}

impl ChangeKind {
    /// The change a completing event makes; `None` for chunks and workunit lists, which are
    /// not build changes.
    pub fn from_event(event: Event) -> Option<ChangeKind> {
        match event {
            Event::RunStarted(e) => Some(ChangeKind::Started(e)),
            Event::WorkunitsUpdated(e) => Some(ChangeKind::WorkunitsUpdated(e)),
            Event::RunEnded(e) => Some(ChangeKind::Ended(e)),
            Event::ArtifactsUploaded(e) => Some(ChangeKind::ArtifactsUploaded(e)),
            Event::BlobChunk(_) | Event::WorkunitList(_) => None,
        }
    }

    /// The event's header; `None` for a tombstone.
    pub fn header(&self) -> Option<&EventHeader> {
        match self {
            ChangeKind::Started(e) => Some(&e.header),
            ChangeKind::WorkunitsUpdated(e) => Some(&e.header),
            ChangeKind::Ended(e) => Some(&e.header),
            ChangeKind::ArtifactsUploaded(e) => Some(&e.header),
            ChangeKind::Tombstone => None,
        }
    }

    /// When the build started (epoch µs), for the changes that carry its run record.
    pub fn started_at_us(&self) -> Option<i64> {
        match self {
            ChangeKind::Started(e) => Some(e.run.started_at),
            ChangeKind::Ended(e) => Some(e.run.started_at),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::Started(_) => "run_started",
            ChangeKind::WorkunitsUpdated(_) => "workunits_updated",
            ChangeKind::Ended(_) => "run_ended",
            ChangeKind::ArtifactsUploaded(_) => "artifacts_uploaded",
            ChangeKind::Tombstone => "tombstone",
        }
    }
}

/// A validated build key and its parts (none of them can contain `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BuildKey {
    pub org: String,
    pub repo: String,
    pub run_id: String,
}

impl BuildKey {
    pub fn parse(key: &str) -> Result<BuildKey, buildstats_core::tenancy::NameError> {
        let (org, repo, run_id) = buildstats_core::tenancy::parse_build_key(key)?;
        Ok(BuildKey { org: org.as_str().into(), repo: repo.as_str().into(), run_id: run_id.as_str().into() })
    }

    /// Refuse a run record that names another build than the record's key: a producer bug
    /// that must never write one build's data under another's key.
    pub fn check_record(&self, run: &RunRecord) -> Result<(), Rejected> {
        if (run.org.as_str(), run.repo.as_str(), run.run_id.as_str()) != (self.org.as_str(), self.repo.as_str(), self.run_id.as_str()) {
            return Err(Rejected(format!("run record names {}/{}/{} but the record is keyed {}", run.org, run.repo, run.run_id, self.joined())));
        }
        Ok(())
    }

    /// `{org}/{repo}/{run_id}`, the Kafka key and the DynamoDB partition key.
    pub fn joined(&self) -> String {
        format!("{}/{}/{}", self.org, self.repo, self.run_id)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Payloads(pub Arc<HashMap<String, Bytes>>);

impl Payloads {
    /// The bytes of a payload; `None` when the sink did not ask for payloads.
    pub fn get(&self, blob: &BlobRef) -> Option<&Bytes> {
        self.0.get(&blob.blob_id)
    }
}

/// Why a change can never be written: it goes to the dead-letter topic.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Why a store call failed for now (throttled, 5xx, unreachable, misconfigured): retried
/// with backoff, never skipped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

/// What became of each change of a batch, in batch order.
pub type BatchOutcome = Result<Vec<Result<(), Rejected>>, Transient>;

pub trait Sink: Send + Sync + 'static {
    /// `dynamodb`, `s3`, ...: the subcommand, the consumer group suffix, the metric label.
    fn name(&self) -> &'static str;

    /// Whether the runtime must resolve payloads (documents, logs, artifacts, workunit lists)
    /// for this sink. Sinks that only need the run record skip chunk staging entirely.
    fn needs_payloads(&self) -> bool;

    /// Write a batch of one partition, in offset order. Changes of one build must apply in
    /// order; changes of different builds may run concurrently. `Err` retries the whole
    /// batch, so every write must be idempotent.
    fn write(&self, batch: Arc<Vec<Change>>) -> impl Future<Output = BatchOutcome> + Send;

    /// `Err(reason)` while the store cannot be used (for `/readyz`).
    fn check_ready(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Apply `write_one` to every change, builds concurrently (at most `concurrency` at a time),
/// each build's changes in order. The first transient error fails the batch (after the
/// builds already running finish, so nothing is left half-sent).
/// `write_one` gets the index of the change in `batch`.
pub async fn per_build<F, Fut>(batch: &[Change], concurrency: usize, write_one: F) -> BatchOutcome
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Result<(), Rejected>, Transient>>,
{
    use futures::stream::{self, StreamExt};
    // Group by build, in first-seen order; owned index lists keep the futures free of
    // higher-ranked borrows (so they stay `Send`).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<&BuildKey, usize> = HashMap::new();
    for (i, change) in batch.iter().enumerate() {
        let g = *group_of.entry(&change.key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    let write_one = &write_one;
    let results: Vec<Result<Vec<(usize, Result<(), Rejected>)>, Transient>> = stream::iter(groups)
        .map(|indexes| async move {
            let mut out = Vec::with_capacity(indexes.len());
            for i in indexes {
                out.push((i, write_one(i).await?));
            }
            Ok(out)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut outcome: Vec<Option<Result<(), Rejected>>> = vec![None; batch.len()];
    for build in results {
        for (i, result) in build? {
            outcome[i] = Some(result);
        }
    }
    Ok(outcome.into_iter().map(|o| o.expect("every change was written")).collect())
}
