//! Build events from validated documents: one function per event type, each returning the
//! records of one build (chunks first, completing event last).
//!
//! HTTP-free on purpose: the plugin routes, the OTLP path and the benchmark's baseline build
//! exactly the same records through these functions.

use buildstats_core::tenancy::{build_key, RunId, Slug};
use buildstats_schemas::{
    blob_kind, Artifact, ArtifactsUploaded, BlobRef, Event, EventHeader, EventType, RunEnded, RunRecord, RunStarted,
    WorkunitList, WorkunitsUpdated,
};

use crate::documents::{BuildStats, WorkunitsUpdate};
use crate::normalize;
use crate::records::{assemble, event_id, AssembleError, BuildRecords, Owner, Payload};

pub const WORKUNIT_LIST_CONTENT_TYPE: &str = "application/vnd.buildstats.workunit-list+avro";

/// Who the events are for and which request made them.
pub struct Source<'a> {
    pub org: &'a Slug,
    pub repo: &'a Slug,
    pub request_id: &'a str,
    pub record_limit: usize,
}

impl Source<'_> {
    fn header(&self, run_id: &RunId, event_id: String) -> EventHeader {
        EventHeader {
            event_id,
            org: self.org.to_string(),
            repo: self.repo.to_string(),
            run_id: run_id.to_string(),
            request_id: self.request_id.to_string(),
            emitted_at: chrono::Utc::now().timestamp_millis(),
        }
    }

    fn assemble(
        &self,
        run_id: &RunId,
        payloads: &[Payload],
        make: impl Fn(Vec<BlobRef>) -> Event,
        shrink: impl Fn(&mut Event) -> bool,
    ) -> Result<BuildRecords, AssembleError> {
        let key = build_key(self.org, self.repo, run_id);
        let owner = Owner { key: &key, org: self.org.as_str(), repo: self.repo.as_str(), run_id: run_id.as_str() };
        assemble(&owner, self.record_limit, payloads, make, shrink)
    }

    fn event_id(&self, run_id: &RunId, event_type: EventType, content: &[u8]) -> String {
        event_id(&build_key(self.org, self.repo, run_id), event_type, content)
    }
}

fn no_shrink(_: &mut Event) -> bool {
    false
}

/// Drop optional detail of a final report that does not fit one record.
fn shrink_run_ended(event: &mut Event) -> bool {
    match event {
        Event::RunEnded(e) if !e.rule_timings.is_empty() => {
            e.rule_timings.pop();
            true
        }
        Event::RunEnded(e) if !e.goal_timings.is_empty() => {
            e.goal_timings.pop();
            true
        }
        _ => false,
    }
}

/// A run start: the normalized record and the raw document, byte-exact.
pub fn run_started(src: &Source<'_>, run_id: &RunId, raw: Vec<u8>, run: RunRecord) -> Result<BuildRecords, AssembleError> {
    let id = src.event_id(run_id, EventType::RunStarted, &raw);
    let payloads = [Payload { kind: blob_kind::START_DOCUMENT, content_type: "application/json".into(), bytes: raw }];
    src.assemble(
        run_id,
        &payloads,
        |mut refs| {
            Event::RunStarted(RunStarted {
                header: src.header(run_id, id.clone()),
                run: run.clone(),
                start_document: refs.remove(0),
            })
        },
        no_shrink,
    )
}

/// A live workunits update, as a normalized [`WorkunitList`] blob.
pub fn workunits_updated(
    src: &Source<'_>,
    run_id: &RunId,
    raw: &[u8],
    update: &WorkunitsUpdate,
) -> Result<BuildRecords, AssembleError> {
    let list = WorkunitList {
        run_id: run_id.to_string(),
        workunits: update.workunits.iter().filter_map(normalize::workunit).collect(),
    };
    let last_update = list.workunits.iter().filter_map(|w| w.last_update).reduce(f64::max);
    let count = list.workunits.len() as i32;
    let encoded = buildstats_schemas::encode(&Event::WorkunitList(list))?;
    let id = src.event_id(run_id, EventType::WorkunitsUpdated, raw);
    let payloads = [Payload { kind: blob_kind::WORKUNITS, content_type: WORKUNIT_LIST_CONTENT_TYPE.into(), bytes: encoded }];
    src.assemble(
        run_id,
        &payloads,
        |mut refs| {
            Event::WorkunitsUpdated(WorkunitsUpdated {
                header: src.header(run_id, id.clone()),
                workunit_count: count,
                last_update,
                workunits: refs.remove(0),
            })
        },
        no_shrink,
    )
}

/// A final report (run end, batch entry, trace root): record, raw document, timings.
pub fn run_ended(
    src: &Source<'_>,
    run_id: &RunId,
    raw: &[u8],
    doc: &BuildStats,
    run: RunRecord,
    via: &str,
) -> Result<BuildRecords, AssembleError> {
    let workunits = doc.workunits.as_deref().unwrap_or_default();
    let goal_timings = normalize::goal_timings(workunits);
    let rule_timings = normalize::rule_timings(workunits);
    let id = src.event_id(run_id, EventType::RunEnded, raw);
    let payloads = [Payload { kind: blob_kind::FINAL_DOCUMENT, content_type: "application/json".into(), bytes: raw.to_vec() }];
    src.assemble(
        run_id,
        &payloads,
        |mut refs| {
            Event::RunEnded(RunEnded {
                header: src.header(run_id, id.clone()),
                run: run.clone(),
                final_document: refs.remove(0),
                workunit_count: workunits.len() as i32,
                via: via.to_string(),
                goal_timings: goal_timings.clone(),
                rule_timings: rule_timings.clone(),
            })
        },
        shrink_run_ended,
    )
}

/// One uploaded artifact before it becomes part of an event.
pub struct UploadedArtifact {
    pub name: String,
    pub workunit_id: Option<String>,
    pub path: Option<String>,
    pub descriptor_name: Option<String>,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Escape a part name into a storage-safe id (`core::tenancy::escape_segment`, tested there):
/// every byte outside `[A-Za-z0-9_-]` becomes `%XX`. Injective, so two names never share an
/// id, and `.`/`/` cannot survive.
pub fn artifact_id(name: &str) -> String {
    buildstats_core::tenancy::escape_segment(name)
}

/// The artifacts of one upload.
pub fn artifacts_uploaded(
    src: &Source<'_>,
    run_id: &RunId,
    artifacts: Vec<UploadedArtifact>,
) -> Result<BuildRecords, AssembleError> {
    let mut digest_input = Vec::new();
    for a in &artifacts {
        digest_input.extend_from_slice(a.name.as_bytes());
        digest_input.push(0);
        digest_input.extend_from_slice(&a.data);
    }
    let id = src.event_id(run_id, EventType::ArtifactsUploaded, &digest_input);
    drop(digest_input);
    let mut payloads = Vec::with_capacity(artifacts.len());
    let mut meta = Vec::with_capacity(artifacts.len());
    for a in artifacts {
        payloads.push(Payload { kind: blob_kind::ARTIFACT, content_type: a.content_type, bytes: a.data });
        meta.push((a.name, a.workunit_id, a.path, a.descriptor_name));
    }
    src.assemble(
        run_id,
        &payloads,
        |refs| {
            Event::ArtifactsUploaded(ArtifactsUploaded {
                header: src.header(run_id, id.clone()),
                artifacts: refs
                    .into_iter()
                    .zip(&meta)
                    .map(|(blob, (name, workunit_id, path, descriptor_name))| Artifact {
                        artifact_id: artifact_id(name),
                        name: name.clone(),
                        workunit_id: workunit_id.clone(),
                        path: path.clone(),
                        descriptor_name: descriptor_name.clone(),
                        blob,
                    })
                    .collect(),
            })
        },
        no_shrink,
    )
}
