//! The versioned index behind the alias: its mapping, and its creation by
//! `admin init-stores` (idempotent).
//!
//! Queries always go through the alias (`opensearch.alias`); the index is
//! `{alias}-v{index_version}`. A mapping change is a new `index_version`: init-stores creates
//! the new index, a replay of the topic fills it, and moving the alias switches readers.

use anyhow::bail;
use buildstats_core::config::OpenSearchConfig;
use opensearch::http::Method;
use serde_json::{json, Value};

use super::client::{error_reason, SearchClient};

/// Fields every query relies on; an existing index must have them with these types.
pub const REQUIRED_FIELDS: [(&str, &str); 8] = [
    ("build_key", "keyword"),
    ("org", "keyword"),
    ("repo", "keyword"),
    ("user", "keyword"),
    ("outcome", "keyword"),
    ("state", "keyword"),
    ("started_at", "date"),
    ("title", "text"),
];

/// The explicit mapping: keywords for what is filtered and faceted, dates, numbers, text
/// for what is searched. Everything else stays in `_source` only (`dynamic: false`).
pub fn mapping() -> Value {
    let keyword = json!({"type": "keyword", "ignore_above": 1024});
    let date = json!({"type": "date", "format": "epoch_millis"});
    let long = json!({"type": "long"});
    json!({
        "dynamic": false,
        "properties": {
            "build_key": keyword, "org": keyword, "repo": keyword, "run_id": keyword,
            "user": keyword, "machine": keyword, "branch": keyword, "revision": keyword,
            "outcome": keyword, "state": keyword, "goals": keyword, "specs": keyword,
            "pants_version": keyword, "plugin_version": keyword, "source": keyword, "via": keyword,
            "title": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 512}}},
            "cmd_line": {"type": "text"},
            "started_at": date, "last_seen": date, "ended_at": date,
            "run_time_ms": long, "workunit_count": long,
            "is_ci": {"type": "boolean"},
            "ci": {"properties": {
                "provider": keyword, "run_type": keyword, "pull_request": long, "job_name": keyword,
                "build_num": long, "build_url": {"type": "keyword", "index": false}, "ref_name": keyword,
                "username": keyword,
            }},
            "event_id": {"type": "keyword", "index": false},
        }
    })
}

/// Create the index with its mapping and point the alias at it, unless both exist. An
/// existing index is checked for the fields the queries need. Returns whether anything was
/// created.
pub async fn ensure_index(client: &SearchClient, config: &OpenSearchConfig) -> anyhow::Result<bool> {
    let index = config.index();
    let (status, answer) = client.call(Method::Get, &format!("/{index}/_mapping"), None, false).await?;
    let mut created = false;
    if status.as_u16() == 404 {
        let body = json!({
            "settings": {"number_of_shards": config.shards, "number_of_replicas": config.replicas},
            "mappings": mapping(),
        });
        let (status, answer) = client.call_json(Method::Put, &format!("/{index}"), &body).await?;
        let raced = status.as_u16() == 400 && error_reason(&answer).contains("already_exists");
        if !status.is_success() && !raced {
            bail!("creating index {index} at {}: {status}: {}", client.url(), error_reason(&answer));
        }
        created = !raced;
    } else if status.is_success() {
        let properties = &answer[&index]["mappings"]["properties"];
        for (field, kind) in REQUIRED_FIELDS {
            let found = properties[field]["type"].as_str().unwrap_or("missing");
            if found != kind {
                bail!(
                    "index {index} exists but field {field} is {found}, not {kind}: it was not made by this version. \
                     Set opensearch.index_version to a new number, run `buildstats admin init-stores`, then `buildstats replay --sink opensearch`"
                );
            }
        }
    } else {
        bail!("reading the mapping of {index} at {}: {status}: {}", client.url(), error_reason(&answer));
    }
    let (status, answer) = client.call(Method::Get, &format!("/_alias/{}", config.alias), None, false).await?;
    let points_here = status.is_success() && answer.get(&index).is_some();
    if !points_here {
        // Add to the new index and remove from any other, atomically.
        let mut actions = vec![json!({"add": {"index": index, "alias": config.alias}})];
        if status.is_success() {
            if let Some(others) = answer.as_object() {
                for other in others.keys().filter(|k| **k != index) {
                    actions.push(json!({"remove": {"index": other, "alias": config.alias}}));
                }
            }
        }
        let (status, answer) = client.call_json(Method::Post, "/_aliases", &json!({ "actions": actions })).await?;
        if !status.is_success() {
            bail!("pointing alias {} at {index}: {status}: {}", config.alias, error_reason(&answer));
        }
        created = true;
    }
    Ok(created)
}
