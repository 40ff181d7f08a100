//! Encoding of builds into search documents (pure: no I/O).
//!
//! One document per build, id `{org}/{repo}/{run_id}` (the Kafka key), in the index behind
//! `opensearch.alias`. The mapping is [`super::index::mapping`]; fields not in it stay in
//! `_source` unindexed (`dynamic: false`).
//!
//! Versions (`version_type: external`) make every write order-proof:
//! - a run start indexes version [`STARTED_VERSION`]; a final report [`FINAL_VERSION`];
//! - a live workunits call is a partial `update` of `last_seen` only, which bumps the
//!   version by one and never creates a document;
//! - so a repeated or late run start (1) never overwrites anything, and the first final
//!   report wins: a second one (same version) is a 409, which is success.

use buildstats_schemas::{RunEnded, RunRecord, RunStarted};
use serde_json::{json, Map, Value};

use crate::sink::{BuildKey, Rejected};

/// Version of a document written by a run start.
pub const STARTED_VERSION: i64 = 1;
/// Version of a document written by a final report: above any number of live updates.
pub const FINAL_VERSION: i64 = 1 << 40;

pub const RUNNING: &str = "running";
pub const FINAL: &str = "final";

/// Longest title kept (the keyword sub-field ignores longer ones anyway).
const TITLE_MAX_CHARS: usize = 512;

/// What people read in a list: the command line with the executable's directory dropped
/// (`/home/ada/bin/pants test ::` → `pants test ::`); without one, `pants` and the goals.
pub fn title(run: &RunRecord) -> String {
    let line = run.cmd_line.as_deref().map(str::trim).unwrap_or("");
    let text = if line.is_empty() {
        std::iter::once("pants").chain(run.goals.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    } else {
        let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let exe = first.rsplit('/').next().unwrap_or(first);
        if rest.is_empty() { exe.to_string() } else { format!("{exe} {}", rest.trim_start()) }
    };
    text.chars().take(TITLE_MAX_CHARS).collect()
}

fn base(key: &BuildKey, run: &RunRecord, state: &str, event_id: &str) -> Result<Map<String, Value>, Rejected> {
    key.check_record(run)?;
    let started_ms = run.started_at.div_euclid(1000);
    let ci = run.ci.as_ref().map(|ci| {
        json!({
            "provider": ci.provider,
            "run_type": ci.run_type,
            "pull_request": ci.pull_request,
            "job_name": ci.job_name,
            "build_num": ci.build_num,
            "build_url": ci.build_url,
            "ref_name": ci.ref_name,
            "username": ci.username,
        })
    });
    let doc = json!({
        "build_key": key.joined(),
        "org": key.org,
        "repo": key.repo,
        "run_id": key.run_id,
        "user": run.user,
        "machine": run.machine,
        "branch": run.branch,
        "revision": run.revision,
        "outcome": run.outcome,
        "state": state,
        "goals": run.goals,
        "specs": run.specs,
        "title": title(run),
        "cmd_line": run.cmd_line,
        "pants_version": run.pants_version,
        "plugin_version": run.plugin_version,
        "source": run.source,
        "started_at": started_ms,
        "last_seen": started_ms,
        "run_time_ms": run.run_time_ms,
        "is_ci": ci.is_some(),
        "ci": ci,
        "event_id": event_id,
    });
    let Value::Object(map) = doc else { unreachable!("json! of an object") };
    Ok(map)
}

/// The document of a running build.
pub fn run_started(key: &BuildKey, event: &RunStarted) -> Result<Value, Rejected> {
    Ok(Value::Object(base(key, &event.run, RUNNING, &event.header.event_id)?))
}

/// The document of a finished build.
pub fn run_ended(key: &BuildKey, event: &RunEnded) -> Result<Value, Rejected> {
    let mut doc = base(key, &event.run, FINAL, &event.header.event_id)?;
    doc.insert("workunit_count".into(), json!(event.workunit_count));
    doc.insert("via".into(), json!(event.via));
    if let Some(run_time) = event.run.run_time_ms {
        doc.insert("ended_at".into(), json!(event.run.started_at.div_euclid(1000) + run_time));
    }
    Ok(Value::Object(doc))
}

/// The partial document of a live workunits call: the build's last sign of life (ms), from
/// the call's `last_update` or, without one, the time the gateway took it.
pub fn live_update(last_update_s: Option<f64>, emitted_at_ms: i64) -> Value {
    let seen = last_update_s.filter(|s| s.is_finite() && *s > 0.0).map(|s| (s * 1000.0) as i64).unwrap_or(emitted_at_ms);
    json!({ "last_seen": seen })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cmd_line: Option<&str>) -> RunRecord {
        RunRecord { goals: vec!["lint".into(), "test".into()], cmd_line: cmd_line.map(String::from), ..crate::test_records::run_record("r1") }
    }

    #[test]
    fn titles_drop_the_executables_directory_or_fall_back_to_the_goals() {
        assert_eq!(title(&run(Some("/home/ada/.local/bin/pants --no-pantsd test src::"))), "pants --no-pantsd test src::");
        assert_eq!(title(&run(Some("pants"))), "pants");
        assert_eq!(title(&run(None)), "pants lint test");
        assert_eq!(title(&run(Some(&"x".repeat(2000)))).len(), TITLE_MAX_CHARS);
    }

    #[test]
    fn documents_hold_the_query_fields_and_refuse_another_builds_record() {
        let key = crate::test_records::key("r1");
        let ended = RunEnded { workunit_count: 12, ..crate::test_records::run_ended(run(Some("pants test ::"))) };
        let doc = run_ended(&key, &ended).unwrap();
        assert_eq!(doc["build_key"], "acme/rocket/r1");
        assert_eq!(doc["state"], FINAL);
        assert_eq!(doc["started_at"], 1_700_000_000_123i64);
        assert_eq!(doc["ended_at"], 1_700_000_002_123i64);
        assert_eq!(doc["is_ci"], false);
        assert_eq!(doc["workunit_count"], 12);
        let other = BuildKey { run_id: "r2".into(), ..key };
        assert!(run_ended(&other, &ended).is_err());
        assert_eq!(live_update(Some(1_700_000_010.5), 1), json!({"last_seen": 1_700_000_010_500i64}));
        assert_eq!(live_update(None, 99), json!({"last_seen": 99}));
        assert!(FINAL_VERSION > STARTED_VERSION + 1_000_000_000, "room for live updates below the final version");
    }
}
