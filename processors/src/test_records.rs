//! Records the sinks' unit tests start from (build `acme/rocket/r1`), each test changing
//! the fields it is about.

use std::collections::BTreeMap;

use buildstats_schemas::{BlobRef, EventHeader, RunEnded, RunRecord};

use crate::sink::BuildKey;

pub fn key(run_id: &str) -> BuildKey {
    BuildKey { org: "acme".into(), repo: "rocket".into(), run_id: run_id.into() }
}

pub fn run_record(run_id: &str) -> RunRecord {
    RunRecord {
        run_id: run_id.into(),
        org: "acme".into(),
        repo: "rocket".into(),
        user: "ada".into(),
        machine: None,
        buildroot: None,
        branch: Some("main".into()),
        revision: None,
        goals: vec!["test".into()],
        specs: vec![],
        cmd_line: Some("pants test ::".into()),
        outcome: "SUCCESS".into(),
        started_at: 1_700_000_000_123_456,
        datetime: None,
        run_time_ms: Some(2_000),
        pants_version: None,
        plugin_version: None,
        stats_version: None,
        ci: None,
        counters: BTreeMap::new(),
        source: "plugin".into(),
    }
}

pub fn header(run_id: &str) -> EventHeader {
    EventHeader { event_id: "e1".into(), org: "acme".into(), repo: "rocket".into(), run_id: run_id.into(), request_id: "q".into(), emitted_at: 7 }
}

pub fn blob(kind: &str) -> BlobRef {
    BlobRef { blob_id: "b".into(), kind: kind.into(), content_type: "application/json".into(), size: 0, sha256: String::new(), chunk_count: 0, inline: None }
}

/// A final report of `run` with 7 workunits and no timings.
pub fn run_ended(run: RunRecord) -> RunEnded {
    RunEnded {
        header: header(&run.run_id),
        run,
        final_document: blob("final_document"),
        workunit_count: 7,
        via: "run_end".into(),
        goal_timings: vec![],
        rule_timings: vec![],
    }
}
