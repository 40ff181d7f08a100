//! From a raw record of the builds topic to what the runtime does with it. Pure: no I/O.

use buildstats_schemas::{decode, BlobChunk, DecodeError, Event};

use crate::sink::{BuildKey, ChangeKind};

/// What one record of the builds topic is, for one sink.
#[derive(Debug)]
pub enum Classified {
    /// A build-changing record.
    Change(BuildKey, ChangeKind),
    /// One slice of a payload, to stage until its completing event arrives.
    Chunk(BuildKey, BlobChunk),
    /// Nothing for this sink (a record redriven for another sink).
    Skip(&'static str),
    /// Can never be written: dead-letter it and go on.
    Poison(String),
    /// Written by a schema this reader does not know: stop the partition (never skip
    /// live data; deploy the newer reader).
    UnknownSchema(String),
}

/// The parts of a record `classify` looks at (kept apart from rdkafka for tests).
pub struct RawRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The `bs-redrive-for` header, if any.
    pub redrive_for: Option<&'a [u8]>,
}

pub fn classify(sink: &str, record: &RawRecord<'_>) -> Classified {
    if let Some(target) = record.redrive_for {
        if target != sink.as_bytes() {
            return Classified::Skip("redriven for another sink");
        }
    }
    let Some(raw_key) = record.key else {
        return Classified::Poison("record has no key: every record of the builds topic is keyed {org}/{repo}/{run_id}".into());
    };
    let key = match std::str::from_utf8(raw_key).map_err(|e| e.to_string()).and_then(|k| BuildKey::parse(k).map_err(|e| e.to_string())) {
        Ok(key) => key,
        Err(e) => return Classified::Poison(format!("record key is not a build key: {e}")),
    };
    let Some(value) = record.value else {
        return Classified::Change(key, ChangeKind::Tombstone);
    };
    let event = match decode(value) {
        Ok(event) => event,
        Err(e @ DecodeError::UnknownWriterSchema { .. }) => return Classified::UnknownSchema(e.to_string()),
        Err(e) => return Classified::Poison(format!("record value cannot be decoded: {e}")),
    };
    let kind = match event {
        Event::BlobChunk(chunk) => {
            if (chunk.org.as_str(), chunk.repo.as_str(), chunk.run_id.as_str())
                != (key.org.as_str(), key.repo.as_str(), key.run_id.as_str())
            {
                return Classified::Poison(mismatch(&key, &chunk.org, &chunk.repo, &chunk.run_id));
            }
            if chunk.count < 1 || chunk.index < 0 || chunk.index >= chunk.count {
                return Classified::Poison(format!("chunk {} of {} of blob {} is out of range", chunk.index, chunk.count, chunk.blob_id));
            }
            if !is_blob_id(&chunk.blob_id) {
                return Classified::Poison(format!("blob id {:?} is not a UUID", chunk.blob_id));
            }
            return Classified::Chunk(key, chunk);
        }
        Event::WorkunitList(_) => return Classified::Poison("a workunit list is blob content, not a topic record".into()),
        completing => ChangeKind::from_event(completing).expect("every other event is a completing event"),
    };
    let header = kind.header().expect("a completing event has a header");
    let (org, repo, run_id) = (header.org.as_str(), header.repo.as_str(), header.run_id.as_str());
    // The key decides the partition and the storage location; an event naming another
    // build is never written anywhere (it could be used to write into another tenant).
    if (org, repo, run_id) != (key.org.as_str(), key.repo.as_str(), key.run_id.as_str()) {
        return Classified::Poison(mismatch(&key, org, repo, run_id));
    }
    Classified::Change(key, kind)
}

fn mismatch(key: &BuildKey, org: &str, repo: &str, run_id: &str) -> String {
    format!("record is keyed {} but its content names {org}/{repo}/{run_id}", key.joined())
}

/// Blob ids are UUIDs (content-derived, v5): the only shape that may become a staging key.
pub fn is_blob_id(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildstats_schemas::{encode, BlobRef, EventHeader, WorkunitsUpdated};

    fn workunits(org: &str, repo: &str, run: &str) -> Vec<u8> {
        encode(&Event::WorkunitsUpdated(WorkunitsUpdated {
            header: EventHeader {
                event_id: "e".into(),
                org: org.into(),
                repo: repo.into(),
                run_id: run.into(),
                request_id: "q".into(),
                emitted_at: 1,
            },
            workunit_count: 0,
            last_update: None,
            workunits: BlobRef {
                blob_id: "00000000-0000-0000-0000-000000000000".into(),
                kind: "workunits".into(),
                content_type: "x".into(),
                size: 0,
                sha256: String::new(),
                chunk_count: 0,
                inline: Some(Vec::new()),
            },
        }))
        .unwrap()
    }

    fn raw<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> RawRecord<'a> {
        RawRecord { key, value, redrive_for: None }
    }

    #[test]
    fn good_records_tombstones_and_poison_are_told_apart() {
        let value = workunits("acme", "rocket", "r1");
        assert!(matches!(classify("s3", &raw(Some(b"acme/rocket/r1"), Some(&value))), Classified::Change(_, ChangeKind::WorkunitsUpdated(_))));
        assert!(matches!(classify("s3", &raw(Some(b"acme/rocket/r1"), None)), Classified::Change(_, ChangeKind::Tombstone)));
        for (key, value, why) in [
            (None, Some(&value[..]), "no key"),
            (Some(&b"acme/../r1"[..]), Some(&value[..]), "not a build key"),
            (Some(&b"acme/rocket/r1"[..]), Some(&b"garbage"[..]), "cannot be decoded"),
            (Some(&b"acme/other/r1"[..]), Some(&value[..]), "content names acme/rocket/r1"),
        ] {
            match classify("s3", &raw(key, value)) {
                Classified::Poison(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_writer_schema_stops_instead_of_dead_lettering() {
        let mut value = workunits("acme", "rocket", "r1");
        value[2] ^= 0xff; // another fingerprint
        assert!(matches!(classify("s3", &raw(Some(b"acme/rocket/r1"), Some(&value))), Classified::UnknownSchema(_)));
    }

    #[test]
    fn redriven_records_reach_only_their_sink() {
        let value = workunits("acme", "rocket", "r1");
        let record = RawRecord { key: Some(b"acme/rocket/r1"), value: Some(&value), redrive_for: Some(b"s3") };
        assert!(matches!(classify("dynamodb", &record), Classified::Skip(_)));
        assert!(matches!(classify("s3", &record), Classified::Change(..)));
    }
}
