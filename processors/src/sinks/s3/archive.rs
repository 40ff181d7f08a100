//! The event archive: every completing event the S3 sink stores is also kept, with its
//! payloads stripped, at `{build}/events/{event_id}.avro`, so `buildstats reindex` can
//! rebuild the other stores after the topic has dropped the records (`kafka.retention_days`).
//!
//! Why events and not just the documents: what the other stores hold is the gateway's
//! normalized run record, which depends on request facts (the plugin and Pants versions of
//! the headers, the token's CI attribution) and carries the event's id and time. The archived
//! event is that record exactly as the topic carried it (same single-object Avro encoding,
//! same schema fingerprints, so older archives decode with the same registry); its payloads
//! are beside it byte-exact (start/final documents, workunits, artifacts), so only their
//! inline bytes are dropped.
//!
//! The key holds the event id only (content-derived, so a client's retry or a replay hits the
//! same key and the create-only put keeps the first). Order is restored from the events:
//! [`replay_order`].

use buildstats_schemas::{encode, BlobRef, Event};

use super::keys::BuildPrefix;
use crate::aws::{error_code, http_status};
use crate::sink::{ChangeKind, Rejected, Transient};

/// The archived form of a completing change: its key in the build's prefix and the Avro
/// single-object bytes of the event without inline payloads. `None` for tombstones.
pub fn archived(prefix: &BuildPrefix, kind: &ChangeKind) -> Option<Result<(String, Vec<u8>), Rejected>> {
    let event = match kind.clone() {
        ChangeKind::Started(mut e) => {
            strip(&mut e.start_document);
            Event::RunStarted(e)
        }
        ChangeKind::WorkunitsUpdated(mut e) => {
            strip(&mut e.workunits);
            Event::WorkunitsUpdated(e)
        }
        ChangeKind::Ended(mut e) => {
            strip(&mut e.final_document);
            Event::RunEnded(e)
        }
        ChangeKind::ArtifactsUploaded(mut e) => {
            e.artifacts.iter_mut().for_each(|a| strip(&mut a.blob));
            Event::ArtifactsUploaded(e)
        }
        ChangeKind::Tombstone => return None,
    };
    let header = event.header().expect("a completing event has a header");
    Some(prefix.event(&header.event_id).and_then(|key| {
        let bytes = encode(&event).map_err(|e| Rejected(format!("cannot archive event {}: {e}", header.event_id)))?;
        Ok((key, bytes))
    }))
}

fn strip(blob: &mut BlobRef) {
    blob.inline = None;
}

/// The order a build's archived events are applied in: as the gateway emitted them, and for
/// events of one request (same millisecond) in their lifecycle order; the event id settles
/// the rest so the order never depends on the listing.
pub fn replay_order(kind: &ChangeKind) -> (i64, u8, String) {
    let rank = match kind {
        ChangeKind::Started(_) => 0,
        ChangeKind::WorkunitsUpdated(_) => 1,
        ChangeKind::ArtifactsUploaded(_) => 2,
        ChangeKind::Ended(_) => 3,
        ChangeKind::Tombstone => return (i64::MAX, u8::MAX, String::new()),
    };
    let header = kind.header().expect("a completing change has a header");
    (header.emitted_at, rank, header.event_id.clone())
}

/// A key of the archive listing, taken apart: `{lead}{org}/{repo}/{run}/events/{name}` gives
/// the build prefix (`{lead}{org}/{repo}/{run}/`). Any other key (documents, artifacts,
/// workunits, staged chunks) is `None`.
pub fn event_key_build<'a>(lead: &str, key: &'a str) -> Option<&'a str> {
    let rest = key.strip_prefix(lead)?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() != 5 || parts[3] != "events" || !parts[4].ends_with(".avro") || parts[..3].iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(&key[..key.len() - "events/".len() - parts[4].len()])
}

/// The bytes of one archived event; `None` when it is gone (its build was deleted meanwhile).
pub async fn read(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<bytes::Bytes>, Transient> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out.body.collect().await.map(|b| Some(b.into_bytes())).map_err(|e| Transient(format!("read {key}: {e}"))),
        Err(e) if error_code(&e) == Some("NoSuchKey") || http_status(&e) == Some(404) => Ok(None),
        Err(e) => Err(Transient(format!("read {key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_records;
    use buildstats_schemas::{decode, RunStarted};

    fn ended(run_id: &str, emitted_at: i64) -> ChangeKind {
        let mut e = test_records::run_ended(test_records::run_record(run_id));
        e.header.emitted_at = emitted_at;
        e.final_document.inline = Some(b"{}".to_vec());
        ChangeKind::Ended(e)
    }

    fn started(run_id: &str, emitted_at: i64) -> ChangeKind {
        let mut header = test_records::header(run_id);
        header.emitted_at = emitted_at;
        header.event_id = "e0".into();
        let run = test_records::run_record(run_id);
        ChangeKind::Started(RunStarted { header, run, start_document: test_records::blob("start_document") })
    }

    #[test]
    fn an_archived_event_is_the_topic_event_without_inline_payloads() {
        let prefix = BuildPrefix::new("builds", &test_records::key("run:1"));
        let change = ended("run:1", 7);
        let ChangeKind::Ended(original) = &change else { unreachable!() };
        let (object, bytes) = archived(&prefix, &change).unwrap().unwrap();
        assert_eq!(object, "builds/acme/rocket/run%3A1/events/e1.avro");
        let Event::RunEnded(back) = decode(&bytes).unwrap() else { panic!("a run end comes back") };
        let mut expected = original.clone();
        expected.final_document.inline = None;
        assert_eq!(back, expected);
        assert!(archived(&prefix, &ChangeKind::Tombstone).is_none());
        assert_eq!(event_key_build("builds/", &object), Some("builds/acme/rocket/run%3A1/"));
    }

    #[test]
    fn an_event_id_that_is_not_a_plain_segment_is_refused() {
        let prefix = BuildPrefix::new("builds", &test_records::key("r1"));
        let mut change = ended("r1", 7);
        if let ChangeKind::Ended(e) = &mut change {
            e.header.event_id = "../x".into();
        }
        assert!(archived(&prefix, &change).unwrap().is_err());
    }

    #[test]
    fn only_event_keys_of_a_build_are_taken_from_the_listing() {
        for other in [
            "builds/acme/rocket/r1/start.json",
            "builds/acme/rocket/r1/artifacts/pants_run_log",
            "builds/acme/rocket/r1/workunits/e.json",
            "builds/acme/rocket/events/x.avro",
            "builds/acme/rocket/r1/events/x.json",
            "builds/acme/rocket/r1/events/deeper/x.avro",
            "_staging/s3/acme/events/r1/x.avro",
        ] {
            assert_eq!(event_key_build("builds/", other), None, "{other}");
        }
        assert_eq!(event_key_build("", "acme/rocket/r1/events/e.avro"), Some("acme/rocket/r1/"));
    }

    #[test]
    fn events_replay_by_time_then_lifecycle() {
        assert!(replay_order(&started("r1", 5)) < replay_order(&ended("r1", 5)), "same millisecond: the start first");
        assert!(replay_order(&ended("r1", 5)) < replay_order(&started("r1", 6)), "otherwise by emission time");
    }
}
