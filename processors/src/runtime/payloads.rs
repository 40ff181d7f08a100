//! Payload resolution: the bytes of every `BlobRef` of an event, inline or reassembled from
//! chunks staged in S3, checked against the size and SHA-256 the gateway recorded.

use std::collections::HashMap;

use buildstats_schemas::BlobRef;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::sink::{ChangeKind, Rejected};

/// Every payload reference of a change.
pub fn blob_refs(kind: &ChangeKind) -> Vec<&BlobRef> {
    match kind {
        ChangeKind::Started(e) => vec![&e.start_document],
        ChangeKind::WorkunitsUpdated(e) => vec![&e.workunits],
        ChangeKind::Ended(e) => vec![&e.final_document],
        ChangeKind::ArtifactsUploaded(e) => e.artifacts.iter().map(|a| &a.blob).collect(),
        ChangeKind::Tombstone => Vec::new(),
    }
}

/// Join chunk bodies `0..count` in order and check them against the reference.
pub fn assemble(blob: &BlobRef, chunks: &HashMap<i32, Bytes>) -> Result<Bytes, Rejected> {
    let count = blob.chunk_count;
    let mut out = Vec::with_capacity(blob.size.max(0) as usize);
    for index in 0..count {
        let chunk = chunks.get(&index).ok_or_else(|| {
            Rejected(format!(
                "chunk {index} of {count} of blob {} was never seen (staged chunks expire; the gateway publishes every chunk before its event)",
                blob.blob_id
            ))
        })?;
        out.extend_from_slice(chunk);
    }
    verify(blob, Bytes::from(out))
}

/// Check a payload's size and digest.
pub fn verify(blob: &BlobRef, bytes: Bytes) -> Result<Bytes, Rejected> {
    if bytes.len() as i64 != blob.size {
        return Err(Rejected(format!("blob {} has {} bytes, its reference says {}", blob.blob_id, bytes.len(), blob.size)));
    }
    let digest = hex::encode(Sha256::digest(&bytes));
    if !blob.sha256.is_empty() && digest != blob.sha256 {
        return Err(Rejected(format!("blob {} has SHA-256 {digest}, its reference says {}", blob.blob_id, blob.sha256)));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(data: &[u8], chunks: i32) -> BlobRef {
        BlobRef {
            blob_id: "b".into(),
            kind: "artifact".into(),
            content_type: "text/plain".into(),
            size: data.len() as i64,
            sha256: hex::encode(Sha256::digest(data)),
            chunk_count: chunks,
            inline: None,
        }
    }

    #[test]
    fn chunks_join_in_index_order_and_are_checked() {
        let r = blob(b"hello world", 3);
        let chunks: HashMap<i32, Bytes> =
            [(2, "rld"), (0, "hello"), (1, " wo")].into_iter().map(|(i, s)| (i, Bytes::from(s))).collect();
        assert_eq!(&assemble(&r, &chunks).unwrap()[..], b"hello world");

        let mut missing = chunks.clone();
        missing.remove(&1);
        assert!(assemble(&r, &missing).unwrap_err().0.contains("chunk 1 of 3"));

        let mut wrong = chunks.clone();
        wrong.insert(1, Bytes::from(" WO"));
        assert!(assemble(&r, &wrong).unwrap_err().0.contains("SHA-256"));
        assert!(verify(&r, Bytes::from("short")).unwrap_err().0.contains("5 bytes"));
    }
}
