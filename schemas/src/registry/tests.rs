use std::collections::BTreeMap;

use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};

use super::*;

fn header() -> EventHeader {
    EventHeader {
        event_id: "6b1d2c1e-0000-4000-8000-000000000001".into(),
        org: "acme".into(),
        repo: "rocket".into(),
        run_id: "pants_run_2023_04_12_15_29_01_123_0123456789abcdef0123456789abcdef".into(),
        request_id: "req-1".into(),
        emitted_at: 1_700_000_000_123,
    }
}

fn blob(kind: &str, inline: Option<Vec<u8>>) -> BlobRef {
    BlobRef {
        blob_id: "b-1".into(),
        kind: kind.into(),
        content_type: "application/json".into(),
        size: 3,
        sha256: "ab".repeat(32),
        chunk_count: if inline.is_some() { 0 } else { 2 },
        inline,
    }
}

fn run() -> RunRecord {
    RunRecord {
        run_id: header().run_id,
        org: "acme".into(),
        repo: "rocket".into(),
        user: "asher".into(),
        machine: Some("host".into()),
        buildroot: None,
        branch: Some("main".into()),
        revision: Some("fa7e".into()),
        goals: vec!["check".into()],
        specs: vec!["src::".into()],
        cmd_line: Some("pants check src::".into()),
        outcome: "SUCCESS".into(),
        started_at: 1_681_311_580_956_347,
        datetime: None,
        run_time_ms: Some(25_919),
        pants_version: Some("2.16.0".into()),
        plugin_version: Some("0.27.0".into()),
        stats_version: Some("3".into()),
        ci: Some(CiInfo {
            provider: "github_actions".into(),
            run_type: "pull_request".into(),
            pull_request: Some(7011),
            job_name: Some("wf [job]".into()),
            build_num: Some(539),
            build_url: None,
            ref_name: Some("seinfeld".into()),
            username: Some("asherf".into()),
            sha1: None,
        }),
        counters: BTreeMap::from([("local_cache_requests".into(), 574)]),
        source: "plugin".into(),
    }
}

fn samples() -> Vec<Event> {
    vec![
        Event::BlobChunk(BlobChunk {
            blob_id: "b-1".into(),
            org: "acme".into(),
            repo: "rocket".into(),
            run_id: "r".into(),
            index: 0,
            count: 2,
            data: vec![0, 1, 2, 255],
        }),
        Event::RunStarted(RunStarted {
            header: header(),
            run: run(),
            start_document: blob(blob_kind::START_DOCUMENT, Some(b"{}\n".to_vec())),
        }),
        Event::WorkunitsUpdated(WorkunitsUpdated {
            header: header(),
            workunit_count: 3,
            last_update: Some(1681311607.5),
            workunits: blob(blob_kind::WORKUNITS, None),
        }),
        Event::RunEnded(RunEnded {
            header: header(),
            run: RunRecord { ci: None, ..run() },
            final_document: blob(blob_kind::FINAL_DOCUMENT, None),
            workunit_count: 3,
            via: "run_end".into(),
            goal_timings: vec![GoalTiming { goal: "check".into(), duration_ms: 22_905 }],
            rule_timings: vec![RuleTiming { name: "mypy".into(), count: 2, total_ms: 10, max_ms: 7 }],
        }),
        Event::ArtifactsUploaded(ArtifactsUploaded {
            header: header(),
            artifacts: vec![Artifact {
                artifact_id: "coverage_xml".into(),
                name: "coverage_xml".into(),
                workunit_id: Some("w1".into()),
                path: Some("dist/coverage.xml".into()),
                descriptor_name: Some("coverage_xml".into()),
                blob: blob(blob_kind::ARTIFACT, None),
            }],
        }),
        Event::WorkunitList(WorkunitList {
            run_id: "r".into(),
            workunits: vec![Workunit {
                workunit_id: "w1".into(),
                name: "pants.core.goals.check.check".into(),
                state: Some("finished".into()),
                version: Some(23),
                parent_ids: vec![],
                start_usecs: Some(1),
                end_usecs: Some(2),
                last_update: Some(3.0),
                description: Some("`check` goal".into()),
                level: None,
                counters: BTreeMap::new(),
                metadata_json: Some("{\"exit_code\":0}".into()),
            }],
        }),
    ]
}

#[test]
fn every_event_type_round_trips_through_its_current_schema() {
    let samples = samples();
    assert_eq!(samples.len(), EventType::ALL.len(), "one sample per event type");
    for event in samples {
        let bytes = encode(&event).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        let current = registry().current(EventType::of(&event));
        assert_eq!(&bytes[2..10], &current.fingerprint, "header names the writer schema");
        assert_eq!(decode(&bytes).unwrap(), event);
    }
}

#[test]
fn the_writer_uses_the_newest_shipped_version() {
    assert_eq!(registry().current(EventType::RunEnded).version, 2);
    for event_type in EventType::ALL {
        let newest = registry().versions(event_type).map(|v| v.version).max().unwrap();
        assert_eq!(registry().current(event_type).version, newest, "{}", event_type.name());
    }
}

#[test]
fn consecutive_versions_of_every_type_read_each_other() {
    let mut pairs = 0;
    for event_type in EventType::ALL {
        let versions: Vec<_> = registry().versions(event_type).collect();
        for pair in versions.windows(2) {
            let (old, new) = (&pair[0].schema, &pair[1].schema);
            SchemaCompatibility::can_read(old, new)
                .unwrap_or_else(|e| panic!("{} cannot read {}: {e}", pair[1].label(), pair[0].label()));
            SchemaCompatibility::can_read(new, old)
                .unwrap_or_else(|e| panic!("{} cannot read {}: {e}", pair[0].label(), pair[1].label()));
            pairs += 1;
        }
    }
    assert!(pairs >= 1, "at least one type has two versions to compare");
}

/// The shape of a `run_ended/v1` record, as a v1 writer (an older gateway) produced it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct RunEndedV1 {
    header: EventHeader,
    run: RunRecord,
    final_document: BlobRef,
    workunit_count: i32,
    via: String,
}

fn v1() -> &'static SchemaVersion {
    registry().versions(EventType::RunEnded).find(|v| v.version == 1).unwrap()
}

#[test]
fn a_record_written_by_the_previous_version_is_read_by_the_current_one() {
    let old = RunEndedV1 {
        header: header(),
        run: run(),
        final_document: blob(blob_kind::FINAL_DOCUMENT, Some(b"{\"run_info\":{}}".to_vec())),
        workunit_count: 7,
        via: "batch".into(),
    };
    let writer = GenericDatumWriter::builder(&v1().schema).build().unwrap();
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&v1().fingerprint);
    bytes.extend(writer.write_ser_to_vec(&old).unwrap());

    let Event::RunEnded(read) = decode(&bytes).unwrap() else { panic!("not a RunEnded") };
    assert_eq!(read.header, old.header);
    assert_eq!(read.run, old.run);
    assert_eq!(read.final_document, old.final_document);
    assert_eq!((read.workunit_count, read.via.as_str()), (7, "batch"));
    assert!(read.goal_timings.is_empty() && read.rule_timings.is_empty(), "new fields take defaults");
}

#[test]
fn a_record_written_by_the_current_version_is_read_by_the_previous_one() {
    let Event::RunEnded(new) = samples().remove(3) else { unreachable!() };
    let bytes = encode(&Event::RunEnded(new.clone())).unwrap();
    let current = registry().current(EventType::RunEnded);
    let reader = GenericDatumReader::builder(&current.schema)
        .reader_schema(&v1().schema)
        .build()
        .unwrap();
    let value = reader.read_value(&mut &bytes[10..]).unwrap();
    let old: RunEndedV1 = apache_avro::from_value(&value).unwrap();
    assert_eq!(
        old,
        RunEndedV1 {
            header: new.header,
            run: new.run,
            final_document: new.final_document,
            workunit_count: new.workunit_count,
            via: new.via,
        }
    );
}

#[test]
fn an_unknown_writer_schema_is_its_own_error_not_a_malformed_record() {
    let mut bytes = encode(&samples()[1]).unwrap();
    bytes[2..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownWriterSchema(_)), "{err}");
    assert!(err.to_string().contains("upgrade the sinks before the gateway"));
}

#[test]
fn garbage_and_truncated_records_are_rejected_with_what_is_wrong() {
    assert!(matches!(decode(b"{\"json\": true}"), Err(DecodeError::NotSingleObject(_))));
    assert!(matches!(decode(&[0xC3, 0x01, 0]), Err(DecodeError::NotSingleObject(_))));
    let bytes = encode(&samples()[1]).unwrap();
    let truncated = &bytes[..bytes.len() / 2];
    assert!(matches!(decode(truncated), Err(DecodeError::Malformed { .. })));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(decode(&trailing), Err(DecodeError::NotSingleObject(_))));
}

/// Named types (EventHeader, RunRecord, BlobRef, ...) are written out in each `.avsc`;
/// their current definitions must agree, or two event types would disagree on a record.
#[test]
fn shared_named_types_are_identical_in_every_current_schema() {
    fn collect(node: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match node {
            serde_json::Value::Object(map) => {
                if map.get("type").and_then(|t| t.as_str()) == Some("record") {
                    out.push((map["name"].as_str().unwrap().to_string(), node.clone()));
                }
                map.values().for_each(|v| collect(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut seen: HashMap<String, (String, serde_json::Value)> = HashMap::new();
    let mut shared = 0;
    for &(event_type, version, text) in SHIPPED {
        if registry().current(event_type).version != version {
            continue;
        }
        let mut records = Vec::new();
        collect(&serde_json::from_str(text).unwrap(), &mut records);
        for (name, definition) in records.into_iter().skip(1) {
            match seen.get(&name) {
                Some((first, other)) => {
                    shared += 1;
                    assert_eq!(other, &definition, "{name} differs between {first} and {}", event_type.name())
                }
                None => {
                    seen.insert(name, (event_type.name().to_string(), definition));
                }
            }
        }
    }
    assert!(shared >= 4, "EventHeader, RunRecord and BlobRef are shared");
}
