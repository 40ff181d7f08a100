//! The parts of Pants' JSON documents the gateway reads. Everything else passes through
//! untouched in the raw bytes, which are kept byte-exact.
//!
//! Pants has changed these documents over the years (timestamps as floats or strings,
//! counters as objects, missing fields), so every field is optional and numbers are read
//! leniently.

use std::collections::{BTreeMap, HashMap};

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

/// A `build_stats` document: run start, run end, or one entry of a batch.
#[derive(Debug, Deserialize)]
pub struct BuildStats {
    pub run_info: Option<RunInfo>,
    #[serde(default)]
    pub ci_env: Option<HashMap<String, Value>>,
    #[serde(default)]
    pub cumulative_timings: Option<Vec<Timing>>,
    #[serde(default)]
    pub counters: Option<Value>,
    /// A list since Pants 2; Pants 1.x sent a tree object, which we keep raw but do not read.
    #[serde(default, deserialize_with = "workunit_list_or_legacy")]
    pub workunits: Option<Vec<WorkunitDoc>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RunInfo {
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub timestamp: Option<f64>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub datetime: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub machine: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub buildroot: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub path: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub cmd_line: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    pub specs_from_command_line: Vec<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub outcome: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub revision: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub branch: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    pub computed_goals: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Timing {
    #[serde(default, deserialize_with = "lenient_string")]
    pub label: Option<String>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub timing: Option<f64>,
}

/// A workunit as the plugin sends it, live or in a final report.
#[derive(Debug, Deserialize)]
pub struct WorkunitDoc {
    #[serde(default, deserialize_with = "lenient_string")]
    pub workunit_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub version: Option<f64>,
    #[serde(default, deserialize_with = "string_list")]
    pub parent_ids: Vec<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub parent_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub last_update: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub start_usecs: Option<f64>,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub end_usecs: Option<f64>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub level: Option<String>,
    #[serde(default)]
    pub counters: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl WorkunitDoc {
    pub fn parents(&self) -> Vec<String> {
        if self.parent_ids.is_empty() {
            self.parent_id.iter().cloned().collect()
        } else {
            self.parent_ids.clone()
        }
    }
}

/// Body of `POST {run_id}/workunits/`.
#[derive(Debug, Deserialize)]
pub struct WorkunitsUpdate {
    #[serde(default, deserialize_with = "lenient_string")]
    pub run_id: Option<String>,
    #[serde(default)]
    pub workunits: Vec<WorkunitDoc>,
}

/// Body of `POST batch/`. Entries stay raw so each is kept byte-exact.
#[derive(Debug, Deserialize)]
pub struct Batch<'a> {
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
    #[serde(borrow, default)]
    pub build_stats: Option<BTreeMap<String, &'a serde_json::value::RawValue>>,
}

/// Numeric entries of a counters object (non-numbers are skipped).
pub fn counters(value: Option<&Value>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(map)) = value {
        for (k, v) in map {
            if let Some(n) = v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)) {
                out.insert(k.clone(), n);
            }
        }
    }
    out
}

fn workunit_list_or_legacy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<WorkunitDoc>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| WorkunitDoc::deserialize(v).map_err(de::Error::custom))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Ok(None),
    }
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect()),
        Value::String(s) => Ok(vec![s]),
        other => Err(de::Error::custom(format!("expected a list of strings, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_strings_or_floats() {
        let a: BuildStats = serde_json::from_str(r#"{"run_info": {"id": "r", "timestamp": "1628640888.2337852"}}"#).unwrap();
        let b: BuildStats = serde_json::from_str(r#"{"run_info": {"id": "r", "timestamp": 1628640888.2337852}}"#).unwrap();
        assert_eq!(a.run_info.unwrap().timestamp, b.run_info.unwrap().timestamp);
    }

    #[test]
    fn every_fixture_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pants-runs");
        let mut parsed = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("fixtures at {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) else { continue };
            if !map.contains_key("run_info") {
                continue;
            }
            let doc: BuildStats = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(doc.run_info.unwrap().id.is_some(), "{}", path.display());
            parsed += 1;
        }
        assert!(parsed >= 50, "parsed {parsed} fixtures");
    }
}
