//! One partition's worker: batch, decode, stage chunks, resolve payloads, write, dead-letter,
//! store the offset. Records are handled strictly in offset order; the offset after a batch
//! is stored only when every record of it is in the store or on the dead-letter topic.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use buildstats_core::kafka::headers;
use buildstats_schemas::BlobRef;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use tokio::sync::mpsc;

use super::backoff::Backoff;
use super::decode::{classify, Classified, RawRecord};
use super::deleted::{Dropped, Seen};
use super::metrics as m;
use super::payloads::{assemble, blob_refs, verify};
use super::Shared;
use crate::aws::StoreError;
use crate::sink::{BuildKey, Change, ChangeKind, Payloads, Rejected, Sink, Transient};

pub(crate) async fn run<S: Sink>(
    shared: Arc<Shared<S>>,
    partition: i32,
    generation: u64,
    mut rx: mpsc::Receiver<OwnedMessage>,
    queued_bytes: Arc<AtomicUsize>,
) {
    let sink = shared.sink.name();
    loop {
        let Some(batch) = collect_batch(&shared, &mut rx).await else { return };
        let taken: usize = batch.iter().map(|m| m.payload().map_or(0, <[u8]>::len)).sum();
        queued_bytes.fetch_sub(taken, Ordering::AcqRel);
        if shared.stopping() || !shared.is_current(partition, generation) {
            return;
        }
        match process(&shared, partition, generation, batch).await {
            Flow::Continue => {}
            Flow::Abandon => return,
            Flow::Stop { offset, reason } => {
                // The schemas rollout rule: a reader never skips live data it cannot read.
                tracing::error!(
                    sink, partition, offset, %reason,
                    "partition stopped: a record was written with a schema this build does not know. Deploy a buildstats version that knows it; the partition resumes from this record"
                );
                ::metrics::gauge!(m::PARTITIONS_STOPPED, "sink" => sink, "partition" => partition.to_string()).set(1.0);
                // Keep the queue (so dispatch pauses the partition) until shutdown or revoke.
                let mut stop = shared.stop.clone();
                while !shared.stopping() && shared.is_current(partition, generation) {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stop.changed()).await;
                }
                ::metrics::gauge!(m::PARTITIONS_STOPPED, "sink" => sink, "partition" => partition.to_string()).set(0.0);
                return;
            }
        }
    }
}

enum Flow {
    Continue,
    /// Shutdown or revoke while waiting for the store: nothing more is stored.
    Abandon,
    Stop { offset: i64, reason: String },
}

async fn collect_batch<S: Sink>(shared: &Shared<S>, rx: &mut mpsc::Receiver<OwnedMessage>) -> Option<Vec<OwnedMessage>> {
    let s = &shared.settings;
    let first = rx.recv().await?;
    let mut bytes = first.payload().map_or(0, <[u8]>::len);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + s.batch_linger;
    while batch.len() < s.batch_max_records && bytes < s.batch_max_bytes {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(message)) => {
                bytes += message.payload().map_or(0, <[u8]>::len);
                batch.push(message);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Some(batch)
}

fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value)
}

async fn process<S: Sink>(shared: &Shared<S>, partition: i32, generation: u64, batch: Vec<OwnedMessage>) -> Flow {
    let started = Instant::now();
    let sink = shared.sink.name();
    let needs_payloads = shared.sink.needs_payloads();
    let mut changes: Vec<(usize, Change)> = Vec::new();
    let mut chunks = Vec::new();
    let mut dead: Vec<(usize, String)> = Vec::new();
    let mut stop: Option<(usize, String)> = None;
    for (i, message) in batch.iter().enumerate() {
        let raw = RawRecord { key: message.key(), value: message.payload(), redrive_for: header(message, headers::REDRIVE_FOR) };
        let classified = classify(sink, &raw);
        let kind = match &classified {
            Classified::Change(_, k) => k.name(),
            Classified::Chunk(..) => "blob_chunk",
            Classified::Skip(_) => "skipped",
            Classified::Poison(_) => "invalid",
            Classified::UnknownSchema(_) => "unknown_schema",
        };
        ::metrics::counter!(m::RECORDS_IN, "sink" => sink, "kind" => kind).increment(1);
        match classified {
            Classified::Change(key, kind) => changes.push((
                i,
                Change { key, partition, offset: message.offset(), kind, payloads: Payloads::default() },
            )),
            Classified::Chunk(key, chunk) => {
                if needs_payloads {
                    chunks.push((i, key, chunk));
                } else {
                    ::metrics::counter!(m::RECORDS_SKIPPED, "sink" => sink).increment(1);
                }
            }
            Classified::Skip(_) => ::metrics::counter!(m::RECORDS_SKIPPED, "sink" => sink).increment(1),
            Classified::Poison(reason) => dead.push((i, reason)),
            Classified::UnknownSchema(reason) => {
                stop = Some((i, reason));
                break;
            }
        }
    }

    // 0. Drop what belongs to deleted builds, or to builds past their repo's retention.
    if !changes.is_empty() || !chunks.is_empty() {
        let tombstones: Vec<String> =
            changes.iter().filter(|(_, c)| matches!(c.kind, ChangeKind::Tombstone)).map(|(_, c)| c.key.joined()).collect();
        let seen: Vec<Seen> = changes
            .iter()
            .filter(|(_, c)| !matches!(c.kind, ChangeKind::Tombstone))
            .map(|(_, c)| Seen { build_key: c.key.joined(), started_at_us: c.kind.started_at_us() })
            .chain(chunks.iter().map(|(_, key, _)| Seen { build_key: key.joined(), started_at_us: None }))
            .collect();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let Some(drop) = retry(shared, partition, generation, "check for deleted builds", || shared.deleted.to_drop(&tombstones, &seen, now_ms)).await
        else {
            return Flow::Abandon;
        };
        if !drop.is_empty() {
            let dropped = |key: &BuildKey| drop.get(&key.joined()).copied();
            let count = |why: Dropped| ::metrics::counter!(m::RECORDS_DROPPED, "sink" => sink, "reason" => why.as_str()).increment(1);
            changes.retain(|(_, c)| match (&c.kind, dropped(&c.key)) {
                (ChangeKind::Tombstone, _) | (_, None) => true,
                (_, Some(why)) => {
                    count(why);
                    false
                }
            });
            chunks.retain(|(_, key, _)| match dropped(key) {
                None => true,
                Some(why) => {
                    count(why);
                    false
                }
            });
        }
    }

    // 1. Stage chunks durably, keeping this batch's in memory for the events that follow.
    let mut batch_chunks: HashMap<String, HashMap<i32, Bytes>> = HashMap::new();
    if !chunks.is_empty() {
        let stage = shared.stage.as_ref().expect("a sink that needs payloads is always given a chunk stage");
        let chunks_ref = &chunks;
        let puts = stream::iter(0..chunks.len())
            .map(|j| async move {
                let (i, key, chunk) = &chunks_ref[j];
                let data = Bytes::copy_from_slice(&chunk.data);
                let result = retry(shared, partition, generation, "stage a chunk", || stage.put(key, &chunk.blob_id, chunk.index, data.clone())).await;
                (*i, result)
            })
            .buffer_unordered(shared.settings.write_concurrency)
            .collect::<Vec<_>>()
            .await;
        for (i, result) in puts {
            match result {
                None => return Flow::Abandon,
                Some(Err(rejected)) => dead.push((i, rejected.0)),
                Some(Ok(())) => ::metrics::counter!(m::CHUNKS_STAGED, "sink" => sink).increment(1),
            }
        }
        for (_, _, chunk) in chunks {
            batch_chunks.entry(chunk.blob_id).or_default().insert(chunk.index, Bytes::from(chunk.data));
        }
    }

    // 2. Resolve payloads.
    if needs_payloads {
        let mut resolved = Vec::with_capacity(changes.len());
        for (i, mut change) in changes {
            let mut payloads = HashMap::new();
            let mut rejected = None;
            for blob in blob_refs(&change.kind) {
                match resolve(shared, partition, generation, &change, blob, &batch_chunks).await {
                    None => return Flow::Abandon,
                    Some(Ok(bytes)) => {
                        payloads.insert(blob.blob_id.clone(), bytes);
                    }
                    Some(Err(r)) => {
                        rejected = Some(r);
                        break;
                    }
                }
            }
            match rejected {
                Some(r) => dead.push((i, r.0)),
                None => {
                    change.payloads = Payloads(Arc::new(payloads));
                    resolved.push((i, change));
                }
            }
        }
        changes = resolved;
    }

    // 3. Write.
    if !changes.is_empty() {
        let (indexes, list): (Vec<usize>, Vec<Change>) = changes.into_iter().unzip();
        let list = Arc::new(list);
        let Some(outcomes) = retry(shared, partition, generation, "write a batch", || shared.sink.write(list.clone())).await else {
            return Flow::Abandon;
        };
        let mut written = 0u64;
        for (i, outcome) in indexes.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => written += 1,
                Err(r) => dead.push((i, r.0)),
            }
        }
        ::metrics::counter!(m::RECORDS_WRITTEN, "sink" => sink).increment(written);
    }

    // 4. Dead-letter, acknowledged before the offset moves past.
    dead.sort_by_key(|(i, _)| *i);
    for (i, reason) in &dead {
        let message = &batch[*i];
        tracing::warn!(sink, partition, offset = message.offset(), error = %reason, "record can never be written: sent to the dead-letter topic");
        let sent = retry(shared, partition, generation, "dead-letter a record", || shared.dead_letters.send(message, reason)).await;
        if sent.is_none() {
            return Flow::Abandon;
        }
        ::metrics::counter!(m::DEAD_LETTERED, "sink" => sink).increment(1);
    }

    // 5. Store the offset after what is done.
    let next = match &stop {
        Some((i, _)) => batch[*i].offset(),
        None => batch.last().expect("batches are never empty").offset() + 1,
    };
    if stop.as_ref().is_none_or(|(i, _)| *i > 0) {
        shared.store_offset(partition, generation, next);
    }
    ::metrics::histogram!(m::BATCH_SECONDS, "sink" => sink).record(started.elapsed().as_secs_f64());
    ::metrics::histogram!(m::BATCH_RECORDS, "sink" => sink).record(batch.len() as f64);
    match stop {
        Some((i, reason)) => Flow::Stop { offset: batch[i].offset(), reason },
        None => Flow::Continue,
    }
}

/// The bytes of one payload: inline, or its chunks from this batch and the stage.
async fn resolve<S: Sink>(
    shared: &Shared<S>,
    partition: i32,
    generation: u64,
    change: &Change,
    blob: &BlobRef,
    batch_chunks: &HashMap<String, HashMap<i32, Bytes>>,
) -> Option<Result<Bytes, Rejected>> {
    if blob.chunk_count <= 0 {
        let Some(inline) = &blob.inline else {
            return Some(Err(Rejected(format!("blob {} is neither inline nor chunked", blob.blob_id))));
        };
        return Some(verify(blob, Bytes::copy_from_slice(inline)));
    }
    let mut have = batch_chunks.get(&blob.blob_id).cloned().unwrap_or_default();
    let stage = shared.stage.as_ref().expect("a sink that needs payloads is always given a chunk stage");
    for index in 0..blob.chunk_count {
        if have.contains_key(&index) {
            continue;
        }
        let fetched = retry(shared, partition, generation, "read a staged chunk", || async {
            match stage.get(&change.key, &blob.blob_id, index).await {
                Ok(found) => Ok(Ok(found)),
                Err(StoreError::Transient(t)) => Err(t),
                Err(StoreError::Rejected(r)) => Ok(Err(r)),
            }
        })
        .await?;
        match fetched {
            Ok(Some(bytes)) => {
                have.insert(index, bytes);
            }
            Ok(None) => break, // assemble names the missing chunk
            Err(r) => return Some(Err(r)),
        }
    }
    Some(assemble(blob, &have))
}

/// Call `f` until it succeeds, backing off between attempts. `None` when the process is
/// stopping or the partition was revoked meanwhile (the caller abandons the batch).
async fn retry<S, T, F, Fut>(shared: &Shared<S>, partition: i32, generation: u64, what: &str, mut f: F) -> Option<T>
where
    S: Sink,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Transient>>,
{
    let sink = shared.sink.name();
    let mut backoff = Backoff::new(shared.settings.retry_initial, shared.settings.retry_max);
    let mut stop = shared.stop.clone();
    loop {
        match f().await {
            Ok(value) => {
                if backoff.attempts() > 0 {
                    tracing::info!(sink, partition, attempts = backoff.attempts(), "{what}: succeeded after retrying");
                }
                return Some(value);
            }
            Err(Transient(error)) => {
                ::metrics::counter!(m::RETRIES, "sink" => sink).increment(1);
                let delay = backoff.next_delay();
                tracing::warn!(
                    sink, partition, attempt = backoff.attempts(), delay_ms = delay.as_millis() as u64, %error,
                    "{what} failed; retrying (the partition waits, nothing is skipped)"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
                if shared.stopping() || !shared.is_current(partition, generation) {
                    return None;
                }
            }
        }
    }
}
