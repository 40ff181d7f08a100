//! Encoding of run records into DynamoDB items (pure: no I/O).
//!
//! Table layout (`dynamodb.table`, created by `admin init-stores`):
//!
//! | attribute | role |
//! |---|---|
//! | `pk` (S) | `{org}/{repo}/{run_id}`: one build by id (GetItem) |
//! | `repo_key` (S) + `started_at` (N, µs) | GSI `by_repo`: a repo's builds, newest first |
//! | `user_key` (S) + `started_at` (N, µs) | GSI `by_user`: `{org}/{repo}/{user}`, newest first |
//! | `state` (S) | `running` until the first final report, then `final` (never back) |
//! | run record fields | every field of the normalized `RunRecord`; nulls are left out |
//! | `event_id`, `emitted_at` | the event that wrote the current state |
//! | `via`, `goal_timings`, `rule_timings` | final reports only |
//! | `workunit_count`, `last_update` | live progress (running builds only) and the final count |
//! | `artifact_ids` (SS) | escaped ids of uploaded artifacts (content lives in S3) |

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use buildstats_schemas::{EventHeader, RunEnded, RunRecord, RunStarted};
use serde_json::Value;

use crate::sink::{BuildKey, Rejected};

pub const PK: &str = "pk";
pub const REPO_KEY: &str = "repo_key";
pub const USER_KEY: &str = "user_key";
pub const STARTED_AT: &str = "started_at";
pub const STATE: &str = "state";
pub const BY_REPO: &str = "by_repo";
pub const BY_USER: &str = "by_user";
pub const RUNNING: &str = "running";
pub const FINAL: &str = "final";

pub type Item = HashMap<String, AttributeValue>;

/// JSON to a DynamoDB attribute; `None` for null (absent attributes read back as null).
pub fn attribute(value: &Value) -> Option<AttributeValue> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().filter_map(attribute).collect()),
        Value::Object(map) => AttributeValue::M(map.iter().filter_map(|(k, v)| Some((k.clone(), attribute(v)?))).collect()),
    })
}

fn base(key: &BuildKey, run: &RunRecord, header: &EventHeader, state: &str) -> Result<Item, Rejected> {
    key.check_record(run)?;
    let Value::Object(fields) = serde_json::to_value(run).map_err(|e| Rejected(format!("run record: {e}")))? else {
        return Err(Rejected("run record is not an object".into()));
    };
    let mut item: Item = fields.iter().filter_map(|(k, v)| Some((k.clone(), attribute(v)?))).collect();
    item.insert(PK.into(), AttributeValue::S(key.joined()));
    item.insert(REPO_KEY.into(), AttributeValue::S(format!("{}/{}", key.org, key.repo)));
    item.insert(USER_KEY.into(), AttributeValue::S(format!("{}/{}/{}", key.org, key.repo, run.user)));
    item.insert(STATE.into(), AttributeValue::S(state.into()));
    item.insert("event_id".into(), AttributeValue::S(header.event_id.clone()));
    item.insert("emitted_at".into(), AttributeValue::N(header.emitted_at.to_string()));
    Ok(item)
}

/// The item a run start creates (only when the build has no item yet).
pub fn run_started(key: &BuildKey, event: &RunStarted) -> Result<Item, Rejected> {
    base(key, &event.run, &event.header, RUNNING)
}

/// The item a final report writes (only over a missing or running item).
pub fn run_ended(key: &BuildKey, event: &RunEnded) -> Result<Item, Rejected> {
    let mut item = base(key, &event.run, &event.header, FINAL)?;
    item.insert("via".into(), AttributeValue::S(event.via.clone()));
    item.insert("workunit_count".into(), AttributeValue::N(event.workunit_count.to_string()));
    let goals = serde_json::to_value(&event.goal_timings).map_err(|e| Rejected(e.to_string()))?;
    let rules = serde_json::to_value(&event.rule_timings).map_err(|e| Rejected(e.to_string()))?;
    item.insert("goal_timings".into(), attribute(&goals).unwrap_or(AttributeValue::L(Vec::new())));
    item.insert("rule_timings".into(), attribute(&rules).unwrap_or(AttributeValue::L(Vec::new())));
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run() -> RunRecord {
        RunRecord {
            buildroot: Some("/src".into()),
            started_at: 1_600_000_000_000_000,
            run_time_ms: Some(1234),
            counters: BTreeMap::from([("local_cache_requests".to_string(), 3)]),
            ..crate::test_records::run_record("r1")
        }
    }

    fn header() -> EventHeader {
        crate::test_records::header("r1")
    }

    #[test]
    fn items_carry_the_query_keys_and_the_record_without_nulls() {
        let key = BuildKey { org: "acme".into(), repo: "rocket".into(), run_id: "r1".into() };
        let started = RunStarted {
            header: header(),
            run: run(),
            start_document: buildstats_schemas::BlobRef {
                blob_id: "b".into(),
                kind: "start_document".into(),
                content_type: "application/json".into(),
                size: 0,
                sha256: String::new(),
                chunk_count: 0,
                inline: None,
            },
        };
        let item = run_started(&key, &started).unwrap();
        assert_eq!(item[PK], AttributeValue::S("acme/rocket/r1".into()));
        assert_eq!(item[REPO_KEY], AttributeValue::S("acme/rocket".into()));
        assert_eq!(item[USER_KEY], AttributeValue::S("acme/rocket/ada".into()));
        assert_eq!(item[STARTED_AT], AttributeValue::N("1600000000000000".into()));
        assert_eq!(item[STATE], AttributeValue::S(RUNNING.into()));
        assert_eq!(item["goals"], AttributeValue::L(vec![AttributeValue::S("test".into())]));
        assert!(!item.contains_key("machine"), "nulls are left out");
        let AttributeValue::M(counters) = &item["counters"] else { panic!("counters is a map") };
        assert_eq!(counters["local_cache_requests"], AttributeValue::N("3".into()));

        let other = BuildKey { run_id: "r2".into(), ..key };
        assert!(run_started(&other, &started).is_err(), "a record naming another build is refused");
    }
}
