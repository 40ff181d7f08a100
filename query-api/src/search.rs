//! OpenSearch request bodies for lists, facets and suggestions, the cursor, and the derived
//! outcome of builds without a final report (pure: no I/O).
//!
//! Every query is filtered by the tenant's `org` and `repo` first: the path names them, the
//! token was checked against them, and no filter a client sends can widen that.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::{BuildFilter, ListParams, Sort};

/// The outcome people see: the final report's, or `RUNNING` / `TIMEOUT` for a build whose
/// last sign of life is younger / older than the timeout.
pub fn derived_outcome(state: &str, outcome: &str, last_seen_ms: i64, now_ms: i64, timeout_ms: i64) -> String {
    if state == "final" {
        outcome.to_string()
    } else if last_seen_ms >= now_ms - timeout_ms {
        "RUNNING".into()
    } else {
        "TIMEOUT".into()
    }
}

fn tenant(org: &str, repo: &str) -> Vec<Value> {
    vec![json!({"term": {"org": org}}), json!({"term": {"repo": repo}})]
}

fn outcome_clause(outcome: &str, now_ms: i64, timeout_ms: i64) -> Value {
    let cutoff = now_ms - timeout_ms;
    match outcome {
        "RUNNING" => json!({"bool": {"filter": [{"term": {"state": "running"}}, {"range": {"last_seen": {"gte": cutoff}}}]}}),
        "TIMEOUT" => json!({"bool": {"filter": [{"term": {"state": "running"}}, {"range": {"last_seen": {"lt": cutoff}}}]}}),
        other => json!({"bool": {"filter": [{"term": {"state": "final"}}, {"term": {"outcome": other}}]}}),
    }
}

/// The `query` of a list or a facet: the tenant plus every filter.
pub fn query(org: &str, repo: &str, f: &BuildFilter, now_ms: i64, timeout_ms: i64) -> Value {
    let mut filter = tenant(org, repo);
    if !f.users.is_empty() {
        filter.push(json!({"terms": {"user": f.users}}));
    }
    if !f.branches.is_empty() {
        filter.push(json!({"terms": {"branch": f.branches}}));
    }
    if !f.goals.is_empty() {
        filter.push(json!({"terms": {"goals": f.goals}}));
    }
    if !f.outcomes.is_empty() {
        let any: Vec<Value> = f.outcomes.iter().map(|o| outcome_clause(o, now_ms, timeout_ms)).collect();
        filter.push(json!({"bool": {"should": any, "minimum_should_match": 1}}));
    }
    if let Some(ci) = f.ci {
        filter.push(json!({"term": {"is_ci": ci}}));
    }
    if let Some(pr) = f.pull_request {
        filter.push(json!({"term": {"ci.pull_request": pr}}));
    }
    let mut run_time = serde_json::Map::new();
    if let Some(min) = f.run_time_min_ms {
        run_time.insert("gte".into(), json!(min));
    }
    if let Some(max) = f.run_time_max_ms {
        run_time.insert("lte".into(), json!(max));
    }
    if !run_time.is_empty() {
        filter.push(json!({"range": {"run_time_ms": run_time}}));
    }
    let mut started = serde_json::Map::new();
    if let Some(e) = f.earliest_ms {
        started.insert("gte".into(), json!(e));
    }
    if let Some(l) = f.latest_ms {
        started.insert("lt".into(), json!(l));
    }
    if !started.is_empty() {
        filter.push(json!({"range": {"started_at": started}}));
    }
    let mut bool_query = json!({"filter": filter});
    if let Some(text) = &f.text {
        bool_query["must"] = json!([{"multi_match": {"query": text, "fields": ["title^2", "cmd_line"], "operator": "and"}}]);
    }
    json!({"bool": bool_query})
}

/// Sort values of the list: the order, then the build key so that ties never reorder
/// between pages. Builds without a run time (still running) sort last either way.
fn sort_clause(sort: Sort) -> Value {
    let tiebreak = json!({"build_key": "asc"});
    match sort {
        Sort::StartedDesc => json!([{"started_at": "desc"}, tiebreak]),
        Sort::StartedAsc => json!([{"started_at": "asc"}, tiebreak]),
        Sort::RunTimeDesc => json!([{"run_time_ms": {"order": "desc", "missing": "_last"}}, tiebreak]),
        Sort::RunTimeAsc => json!([{"run_time_ms": {"order": "asc", "missing": "_last"}}, tiebreak]),
    }
}

/// The cursor: the last hit's sort values, tied to the sort order they belong to.
pub fn encode_cursor(sort: Sort, values: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!({"s": sort.name(), "v": values})).expect("json"))
}

pub fn decode_cursor(cursor: &str, sort: Sort) -> Result<Value, ApiError> {
    let bad = || ApiError::bad("cursor is not one this API gave out: pass next_cursor from the previous page unchanged");
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let values = value["v"].as_array().filter(|v| v.len() == 2).ok_or_else(bad)?;
    if value["s"].as_str() != Some(sort.name()) {
        return Err(ApiError::bad(format!(
            "cursor belongs to sort={}, not sort={}: keep the sort while paging",
            value["s"].as_str().unwrap_or("?"),
            sort.name()
        )));
    }
    Ok(Value::Array(values.clone()))
}

/// The search body of one page: one more hit than the page, to know whether another follows.
pub fn list_body(org: &str, repo: &str, p: &ListParams, now_ms: i64, timeout_ms: i64) -> Result<Value, ApiError> {
    let mut body = json!({
        "query": query(org, repo, &p.filter, now_ms, timeout_ms),
        "sort": sort_clause(p.sort),
        "size": p.page_size + 1,
        "track_total_hits": true,
        "_source": {"excludes": ["cmd_line", "specs", "event_id"]},
    });
    if let Some(cursor) = &p.cursor {
        body["search_after"] = decode_cursor(cursor, p.sort)?;
    }
    Ok(body)
}

/// Fields `OPTIONS builds/?field=` answers for, and the index field behind each.
pub const FACETS: [(&str, &str); 10] = [
    ("user", "user"),
    ("branch", "branch"),
    ("outcome", "outcome"),
    ("goals", "goals"),
    ("machine", "machine"),
    ("pants_version", "pants_version"),
    ("ci_provider", "ci.provider"),
    ("ci_run_type", "ci.run_type"),
    ("ci_job_name", "ci.job_name"),
    ("pr", "ci.pull_request"),
];

/// The body counting a field's values in the repo. For `outcome`, finished builds count by
/// their outcome and the others as `RUNNING` / `TIMEOUT`.
pub fn facet_body(org: &str, repo: &str, field: &str, now_ms: i64, timeout_ms: i64) -> Result<Value, ApiError> {
    let (_, index_field) = FACETS.iter().find(|(name, _)| *name == field).ok_or_else(|| {
        ApiError::bad(format!("field={field:?} is not one of {}", FACETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))
    })?;
    let terms = json!({"terms": {"field": index_field, "size": 200}});
    let aggs = if field == "outcome" {
        json!({
            "final": {"filter": {"term": {"state": "final"}}, "aggs": {"values": terms}},
            "running": {"filter": outcome_clause("RUNNING", now_ms, timeout_ms)},
            "timeout": {"filter": outcome_clause("TIMEOUT", now_ms, timeout_ms)},
        })
    } else {
        json!({ "values": terms })
    };
    Ok(json!({"size": 0, "query": {"bool": {"filter": tenant(org, repo)}}, "aggs": aggs}))
}

/// `(value, count)` pairs of a facet answer, most frequent first.
pub fn facet_values(field: &str, answer: &Value) -> Vec<(Value, u64)> {
    let aggs = &answer["aggregations"];
    let buckets = |terms: &Value| -> Vec<(Value, u64)> {
        terms["buckets"].as_array().into_iter().flatten().map(|b| (b["key"].clone(), b["doc_count"].as_u64().unwrap_or(0))).collect()
    };
    let mut values = if field == "outcome" { buckets(&aggs["final"]["values"]) } else { buckets(&aggs["values"]) };
    if field == "outcome" {
        for (name, agg) in [("RUNNING", "running"), ("TIMEOUT", "timeout")] {
            let n = aggs[agg]["doc_count"].as_u64().unwrap_or(0);
            if n > 0 {
                values.push((json!(name), n));
            }
        }
    }
    values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.to_string().cmp(&b.0.to_string())));
    values
}

/// Completion over titles, branches and users: titles by phrase prefix, branches and users
/// by case-insensitive prefix.
pub fn suggest_body(org: &str, repo: &str, q: &str) -> Value {
    let prefix = |field: &str| json!({"prefix": {field: {"value": q, "case_insensitive": true}}});
    json!({
        "size": 0,
        "query": {"bool": {"filter": tenant(org, repo)}},
        "aggs": {
            "title": {"filter": {"match_phrase_prefix": {"title": q}}, "aggs": {"values": {"terms": {"field": "title.keyword", "size": 10}}}},
            "branch": {"filter": prefix("branch"), "aggs": {"values": {"terms": {"field": "branch", "size": 10}}}},
            "user": {"filter": prefix("user"), "aggs": {"values": {"terms": {"field": "user", "size": 10}}}},
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::list_params;

    #[test]
    fn every_query_is_held_to_the_tenant() {
        let p = list_params(&[("user".into(), "ada".into())], 20).unwrap();
        let body = list_body("acme", "rocket", &p, 0, 1).unwrap();
        let filters = body["query"]["bool"]["filter"].as_array().unwrap();
        assert_eq!(filters[0], json!({"term": {"org": "acme"}}));
        assert_eq!(filters[1], json!({"term": {"repo": "rocket"}}));
        assert_eq!(body["size"], 21);
        for field in FACETS.map(|(f, _)| f) {
            let facet = facet_body("acme", "rocket", field, 0, 1).unwrap();
            assert_eq!(facet["query"]["bool"]["filter"][1], json!({"term": {"repo": "rocket"}}));
        }
        assert_eq!(suggest_body("acme", "rocket", "ma")["query"]["bool"]["filter"][0], json!({"term": {"org": "acme"}}));
        assert!(facet_body("acme", "rocket", "secret", 0, 1).is_err());
    }

    #[test]
    fn cursors_round_trip_and_are_tied_to_their_sort() {
        let c = encode_cursor(Sort::StartedDesc, &json!([1700000000000i64, "acme/rocket/r1"]));
        assert_eq!(decode_cursor(&c, Sort::StartedDesc).unwrap(), json!([1700000000000i64, "acme/rocket/r1"]));
        assert!(decode_cursor(&c, Sort::RunTimeAsc).unwrap_err().to_string().contains("keep the sort"));
        assert!(decode_cursor("not-a-cursor!", Sort::StartedDesc).is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode(b"{\"s\":\"-started_at\",\"v\":[1]}"), Sort::StartedDesc).is_err());
    }

    #[test]
    fn running_builds_time_out_after_the_heartbeat_stops() {
        assert_eq!(derived_outcome("final", "FAILURE", 0, 1_000_000, 300_000), "FAILURE");
        assert_eq!(derived_outcome("running", "NOT_AVAILABLE", 800_000, 1_000_000, 300_000), "RUNNING");
        assert_eq!(derived_outcome("running", "NOT_AVAILABLE", 600_000, 1_000_000, 300_000), "TIMEOUT");
    }
}
