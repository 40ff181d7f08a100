//! From one build's event and payloads to the Kafka records that carry them.
//!
//! The rule (ARCHITECTURE.md, "chunking"): no record value exceeds `kafka.record_limit_bytes`.
//! Payloads that fit beside the completing event travel inline in it; the others are split
//! into ordered [`BlobChunk`] records, published **before** the completing event, on the same
//! key (so the same partition). Sinks act only on completing events, so chunks of a request
//! that failed half-way are never seen by anyone.
//!
//! Ids are content-derived (UUID v5): a client retry of the same request produces the same
//! blob and event ids, which lets sinks recognise repeats.

use buildstats_schemas::{encode, BlobChunk, BlobRef, Event, EventType};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Room for a chunk's own fields (ids, key parts) beside its data.
const CHUNK_FIELDS_BYTES: usize = 1024;
/// Bytes an inline payload costs beyond its length (union index, length varint).
const INLINE_OVERHEAD_BYTES: usize = 16;

const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5f1b_7a2e_8c3d_4e5f_9a0b_1c2d_3e4f_5a6b);

/// A payload of the event: a raw document, a workunit list, an artifact.
#[derive(Debug, Clone)]
pub struct Payload {
    pub kind: &'static str,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// An encoded record of the builds topic.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    pub event_type: EventType,
    pub value: Vec<u8>,
}

/// Every record of one build from one request: chunks first, the completing event last.
#[derive(Debug, Clone)]
pub struct BuildRecords {
    pub key: String,
    pub records: Vec<EncodedRecord>,
}

impl BuildRecords {
    pub fn completing(&self) -> &EncodedRecord {
        self.records.last().expect("at least the completing event")
    }

    pub fn chunks(&self) -> &[EncodedRecord] {
        &self.records[..self.records.len() - 1]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("the event of {key} is {size} bytes even with every payload chunked, over the record limit of {limit} bytes: raise kafka.record_limit_bytes")]
    EventTooLarge { key: String, size: usize, limit: usize },
    #[error(transparent)]
    Encode(#[from] buildstats_schemas::EncodeError),
}

/// Who the records belong to.
pub struct Owner<'a> {
    pub key: &'a str,
    pub org: &'a str,
    pub repo: &'a str,
    pub run_id: &'a str,
}

/// Deterministic id of an event: its build key, type and content digest.
pub fn event_id(key: &str, event_type: EventType, content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    let mut name = Vec::with_capacity(key.len() + 64);
    name.extend_from_slice(key.as_bytes());
    name.push(0);
    name.extend_from_slice(event_type.name().as_bytes());
    name.push(0);
    name.extend_from_slice(&digest);
    Uuid::new_v5(&ID_NAMESPACE, &name).to_string()
}

/// Largest data slice one chunk carries under `limit`.
pub fn chunk_data_bytes(limit: usize) -> usize {
    limit.saturating_sub(CHUNK_FIELDS_BYTES).max(256)
}

/// Build the records of one completing event.
///
/// `make` builds the event from the payloads' [`BlobRef`]s (same order as `payloads`);
/// `shrink` drops optional detail from an event that is still too large (return false when
/// nothing is left to drop).
pub fn assemble(
    owner: &Owner<'_>,
    limit: usize,
    payloads: &[Payload],
    make: impl Fn(Vec<BlobRef>) -> Event,
    shrink: impl Fn(&mut Event) -> bool,
) -> Result<BuildRecords, AssembleError> {
    let refs: Vec<BlobRef> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let sha = hex::encode(Sha256::digest(&p.bytes));
            let name = format!("{}\0{}\0{i}\0{sha}", owner.key, p.kind);
            BlobRef {
                blob_id: Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string(),
                kind: p.kind.to_string(),
                content_type: p.content_type.clone(),
                size: p.bytes.len() as i64,
                sha256: sha,
                chunk_count: p.bytes.len().div_ceil(chunk_data_bytes(limit)).max(1) as i32,
                inline: None,
            }
        })
        .collect();

    // Measure the event with everything chunked, shrinking it until it fits.
    let mut event = make(refs.clone());
    let mut base = encode(&event)?.len();
    while base > limit {
        if !shrink(&mut event) {
            return Err(AssembleError::EventTooLarge { key: owner.key.to_string(), size: base, limit });
        }
        base = encode(&event)?.len();
    }

    // Inline the smallest payloads while the event stays under the limit.
    let mut order: Vec<usize> = (0..payloads.len()).collect();
    order.sort_by_key(|&i| payloads[i].bytes.len());
    let mut inline = vec![false; payloads.len()];
    let mut size = base;
    for i in order {
        let cost = payloads[i].bytes.len() + INLINE_OVERHEAD_BYTES;
        if size + cost <= limit {
            inline[i] = true;
            size += cost;
        }
    }
    let final_refs: Vec<BlobRef> = refs
        .into_iter()
        .zip(payloads)
        .zip(&inline)
        .map(|((r, p), &is_inline)| {
            if is_inline {
                BlobRef { chunk_count: 0, inline: Some(p.bytes.clone()), ..r }
            } else {
                r
            }
        })
        .collect();

    let mut records = Vec::new();
    let step = chunk_data_bytes(limit);
    for (r, p) in final_refs.iter().zip(payloads) {
        if r.inline.is_some() {
            continue;
        }
        let count = r.chunk_count;
        let pieces: Vec<&[u8]> = if p.bytes.is_empty() { vec![&[][..]] } else { p.bytes.chunks(step).collect() };
        debug_assert_eq!(pieces.len(), count as usize);
        for (index, data) in pieces.into_iter().enumerate() {
            let chunk = Event::BlobChunk(BlobChunk {
                blob_id: r.blob_id.clone(),
                org: owner.org.to_string(),
                repo: owner.repo.to_string(),
                run_id: owner.run_id.to_string(),
                index: index as i32,
                count,
                data: data.to_vec(),
            });
            records.push(EncodedRecord { event_type: EventType::BlobChunk, value: encode(&chunk)? });
        }
    }

    // Rebuild with the final refs, carrying over whatever shrinking removed.
    let mut completing = make(final_refs);
    while encode(&completing)?.len() > limit {
        if !shrink(&mut completing) {
            let size = encode(&completing)?.len();
            return Err(AssembleError::EventTooLarge { key: owner.key.to_string(), size, limit });
        }
    }
    let event_type = EventType::of(&completing);
    records.push(EncodedRecord { event_type, value: encode(&completing)? });
    Ok(BuildRecords { key: owner.key.to_string(), records })
}

/// Concatenate the chunks of one blob back into its payload (used by tests and sinks).
pub fn reassemble(chunks: &mut [BlobChunk]) -> Option<Vec<u8>> {
    chunks.sort_by_key(|c| c.index);
    let count = chunks.first()?.count as usize;
    if chunks.len() != count || chunks.iter().enumerate().any(|(i, c)| c.index as usize != i) {
        return None;
    }
    Some(chunks.iter().flat_map(|c| c.data.iter().copied()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildstats_schemas::{decode, blob_kind, EventHeader, WorkunitsUpdated};

    fn owner() -> Owner<'static> {
        Owner { key: "acme/rocket/r1", org: "acme", repo: "rocket", run_id: "r1" }
    }

    fn make(refs: Vec<BlobRef>) -> Event {
        Event::WorkunitsUpdated(WorkunitsUpdated {
            header: EventHeader {
                event_id: "e".into(),
                org: "acme".into(),
                repo: "rocket".into(),
                run_id: "r1".into(),
                request_id: "q".into(),
                emitted_at: 0,
            },
            workunit_count: 1,
            last_update: None,
            workunits: refs.into_iter().next().unwrap(),
        })
    }

    fn payload(n: usize) -> Payload {
        Payload {
            kind: blob_kind::WORKUNITS,
            content_type: "application/octet-stream".into(),
            bytes: (0..n).map(|i| (i % 251) as u8).collect(),
        }
    }

    #[test]
    fn small_payloads_travel_inline_in_one_record() {
        let out = assemble(&owner(), 4096, &[payload(100)], make, |_| false).unwrap();
        assert_eq!(out.records.len(), 1);
        let Event::WorkunitsUpdated(e) = decode(&out.completing().value).unwrap() else { panic!() };
        assert_eq!(e.workunits.inline.as_deref(), Some(&payload(100).bytes[..]));
        assert_eq!(e.workunits.chunk_count, 0);
    }

    #[test]
    fn large_payloads_are_chunked_in_order_and_every_record_fits() {
        let big = payload(50_000);
        let out = assemble(&owner(), 4096, &[big.clone()], make, |_| false).unwrap();
        assert!(out.records.len() > 10);
        assert!(out.records.iter().all(|r| r.value.len() <= 4096), "every record under the limit");
        assert_eq!(out.completing().event_type, EventType::WorkunitsUpdated, "completing event last");
        let mut chunks: Vec<BlobChunk> = out
            .chunks()
            .iter()
            .map(|r| match decode(&r.value).unwrap() {
                Event::BlobChunk(c) => c,
                other => panic!("{other:?}"),
            })
            .collect();
        let Event::WorkunitsUpdated(e) = decode(&out.completing().value).unwrap() else { panic!() };
        assert_eq!(e.workunits.chunk_count as usize, chunks.len());
        assert!(chunks.iter().all(|c| c.blob_id == e.workunits.blob_id));
        assert_eq!(reassemble(&mut chunks).unwrap(), big.bytes);
        assert_eq!(e.workunits.sha256, hex::encode(Sha256::digest(&big.bytes)));
    }

    #[test]
    fn ids_are_stable_across_retries_of_the_same_content() {
        let a = assemble(&owner(), 4096, &[payload(9000)], make, |_| false).unwrap();
        let b = assemble(&owner(), 4096, &[payload(9000)], make, |_| false).unwrap();
        assert_eq!(a.records.len(), b.records.len());
        assert!(a.records.iter().zip(&b.records).all(|(x, y)| x.value == y.value));
        assert_eq!(event_id("k", EventType::RunEnded, b"x"), event_id("k", EventType::RunEnded, b"x"));
        assert_ne!(event_id("k", EventType::RunEnded, b"x"), event_id("k", EventType::RunStarted, b"x"));
    }

    #[test]
    fn an_event_that_cannot_fit_is_an_error_not_an_oversized_record() {
        let err = assemble(&owner(), 100, &[payload(10)], make, |_| false).unwrap_err();
        assert!(matches!(err, AssembleError::EventTooLarge { .. }), "{err}");
    }

    #[test]
    fn reassembly_refuses_incomplete_sets() {
        let out = assemble(&owner(), 4096, &[payload(20_000)], make, |_| false).unwrap();
        let mut chunks: Vec<BlobChunk> = out.chunks()[1..]
            .iter()
            .map(|r| match decode(&r.value).unwrap() {
                Event::BlobChunk(c) => c,
                _ => unreachable!(),
            })
            .collect();
        assert!(reassemble(&mut chunks).is_none());
    }
}
