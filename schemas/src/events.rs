//! Rust types of the current version of each schema. Field names and order follow the
//! `.avsc` files exactly; `registry::tests` proves every type round-trips through its schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What every build event carries first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventHeader {
    pub event_id: String,
    pub org: String,
    pub repo: String,
    pub run_id: String,
    pub request_id: String,
    /// Epoch milliseconds.
    pub emitted_at: i64,
}

/// Kinds of [`BlobRef`] payloads.
pub mod blob_kind {
    pub const START_DOCUMENT: &str = "start_document";
    pub const FINAL_DOCUMENT: &str = "final_document";
    pub const WORKUNITS: &str = "workunits";
    pub const ARTIFACT: &str = "artifact";
}

/// A payload of an event: inline when it fits in the completing event, else the id of the
/// [`BlobChunk`]s published before it on the same partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobRef {
    pub blob_id: String,
    pub kind: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub chunk_count: i32,
    #[serde(with = "apache_avro::serde::bytes_opt", default)]
    pub inline: Option<Vec<u8>>,
}

/// One ordered piece of a payload too large for one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobChunk {
    pub blob_id: String,
    pub org: String,
    pub repo: String,
    pub run_id: String,
    pub index: i32,
    pub count: i32,
    #[serde(with = "apache_avro::serde::bytes")]
    pub data: Vec<u8>,
}

/// CI details derived from the captured CI environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiInfo {
    pub provider: String,
    pub run_type: String,
    pub pull_request: Option<i64>,
    pub job_name: Option<String>,
    pub build_num: Option<i64>,
    pub build_url: Option<String>,
    pub ref_name: Option<String>,
    pub username: Option<String>,
    pub sha1: Option<String>,
}

/// The normalized run record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub org: String,
    pub repo: String,
    pub user: String,
    pub machine: Option<String>,
    pub buildroot: Option<String>,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub goals: Vec<String>,
    pub specs: Vec<String>,
    pub cmd_line: Option<String>,
    pub outcome: String,
    /// Epoch microseconds (run_info.timestamp).
    pub started_at: i64,
    pub datetime: Option<String>,
    pub run_time_ms: Option<i64>,
    pub pants_version: Option<String>,
    pub plugin_version: Option<String>,
    pub stats_version: Option<String>,
    pub ci: Option<CiInfo>,
    pub counters: BTreeMap<String, i64>,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    pub header: EventHeader,
    pub run: RunRecord,
    pub start_document: BlobRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkunitsUpdated {
    pub header: EventHeader,
    pub workunit_count: i32,
    pub last_update: Option<f64>,
    /// Content: a [`WorkunitList`], Avro single-object encoded.
    pub workunits: BlobRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalTiming {
    pub goal: String,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleTiming {
    pub name: String,
    pub count: i64,
    pub total_ms: i64,
    pub max_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnded {
    pub header: EventHeader,
    pub run: RunRecord,
    pub final_document: BlobRef,
    pub workunit_count: i32,
    /// `run_end`, `batch` or `otlp`.
    pub via: String,
    #[serde(default)]
    pub goal_timings: Vec<GoalTiming>,
    #[serde(default)]
    pub rule_timings: Vec<RuleTiming>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub artifact_id: String,
    pub name: String,
    pub workunit_id: Option<String>,
    pub path: Option<String>,
    pub descriptor_name: Option<String>,
    pub blob: BlobRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactsUploaded {
    pub header: EventHeader,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workunit {
    pub workunit_id: String,
    pub name: String,
    pub state: Option<String>,
    pub version: Option<i64>,
    pub parent_ids: Vec<String>,
    pub start_usecs: Option<i64>,
    pub end_usecs: Option<i64>,
    pub last_update: Option<f64>,
    pub description: Option<String>,
    pub level: Option<String>,
    pub counters: BTreeMap<String, i64>,
    pub metadata_json: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkunitList {
    pub run_id: String,
    pub workunits: Vec<Workunit>,
}

/// Any record of the builds topic, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    BlobChunk(BlobChunk),
    RunStarted(RunStarted),
    WorkunitsUpdated(WorkunitsUpdated),
    RunEnded(RunEnded),
    ArtifactsUploaded(ArtifactsUploaded),
    /// Not a topic record: the content of a workunits blob.
    WorkunitList(WorkunitList),
}

impl Event {
    /// The header of a completing event; `None` for chunks and workunit lists.
    pub fn header(&self) -> Option<&EventHeader> {
        match self {
            Event::RunStarted(e) => Some(&e.header),
            Event::WorkunitsUpdated(e) => Some(&e.header),
            Event::RunEnded(e) => Some(&e.header),
            Event::ArtifactsUploaded(e) => Some(&e.header),
            Event::BlobChunk(_) | Event::WorkunitList(_) => None,
        }
    }
}
