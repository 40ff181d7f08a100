//! A repo's builds: list and search, values of a filter field, completion. All from the
//! search index.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{TimeZone, Utc};
use processors::sink::BuildKey;
use serde_json::{json, Value};

use super::{build_link, now_ms, query_pairs, tenant};
use crate::error::ApiError;
use crate::params::{list_params, single_values};
use crate::search::{derived_outcome, encode_cursor, facet_body, facet_values, list_body, suggest_body};
use crate::AppState;

fn rfc3339_ms(ms: Option<i64>) -> Value {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()).map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))).unwrap_or(Value::Null)
}

/// One build of a list, from its search document.
pub fn summary(src: &Value, now: i64, timeout_ms: i64) -> Value {
    let started = src["started_at"].as_i64();
    let last_seen = src["last_seen"].as_i64().or(started).unwrap_or(0);
    let state = src["state"].as_str().unwrap_or("running");
    let key = BuildKey {
        org: src["org"].as_str().unwrap_or_default().into(),
        repo: src["repo"].as_str().unwrap_or_default().into(),
        run_id: src["run_id"].as_str().unwrap_or_default().into(),
    };
    json!({
        "run_id": key.run_id,
        "org": key.org,
        "repo": key.repo,
        "title": src["title"],
        "user": src["user"],
        "branch": src["branch"],
        "revision": src["revision"],
        "machine": src["machine"],
        "goals": src["goals"],
        "outcome": derived_outcome(state, src["outcome"].as_str().unwrap_or(""), last_seen, now, timeout_ms),
        "state": state,
        "started_at": rfc3339_ms(started),
        "ended_at": rfc3339_ms(src["ended_at"].as_i64()),
        "run_time_ms": src["run_time_ms"],
        "is_ci": src["is_ci"],
        "ci": src["ci"],
        "pants_version": src["pants_version"],
        "workunit_count": src["workunit_count"],
        "link": build_link(&key, ""),
    })
}

/// `GET builds/`: one page, newest first unless `sort` says otherwise.
pub async fn list(State(state): State<Arc<AppState>>, Path((org, repo)): Path<(String, String)>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (org, repo) = tenant(&state, &headers, &org, &repo).await?;
    let params = list_params(&query_pairs(raw.as_deref())?, state.default_page_size)?;
    let now = now_ms();
    let body = list_body(&org, &repo, &params, now, state.running_timeout_ms)?;
    let answer = state.stores.search(&body).await?;
    let hits = answer["hits"]["hits"].as_array().cloned().unwrap_or_default();
    let more = hits.len() > params.page_size;
    let page = &hits[..hits.len().min(params.page_size)];
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => json!(encode_cursor(params.sort, &last["sort"])),
        _ => Value::Null,
    };
    let results: Vec<Value> = page.iter().map(|h| summary(&h["_source"], now, state.running_timeout_ms)).collect();
    Ok(Json(json!({
        "results": results,
        "total": answer["hits"]["total"]["value"].as_u64().unwrap_or(results.len() as u64),
        "next_cursor": next_cursor,
    })))
}

/// `OPTIONS builds/?field=F`: the values present for a filter field, with counts.
pub async fn field_values(State(state): State<Arc<AppState>>, Path((org, repo)): Path<(String, String)>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (org, repo) = tenant(&state, &headers, &org, &repo).await?;
    let map = single_values(&query_pairs(raw.as_deref())?, &["field"])?;
    let field = map.get("field").ok_or_else(|| ApiError::bad("give field=NAME: the filter field whose values to list"))?;
    let body = facet_body(&org, &repo, field, now_ms(), state.running_timeout_ms)?;
    let answer = state.stores.search(&body).await?;
    let values: Vec<Value> = facet_values(field, &answer).into_iter().map(|(v, n)| json!({"value": v, "count": n})).collect();
    Ok(Json(json!({"field": field, "results": values.clone(), "total": values.len(), "next_cursor": null})))
}

/// `GET builds/suggest/?q=`: completions over titles, branches and users.
pub async fn suggest(State(state): State<Arc<AppState>>, Path((org, repo)): Path<(String, String)>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (org, repo) = tenant(&state, &headers, &org, &repo).await?;
    let map = single_values(&query_pairs(raw.as_deref())?, &["q"])?;
    let q = map.get("q").map(|q| q.trim()).unwrap_or("");
    if q.is_empty() || q.chars().count() > 100 {
        return Err(ApiError::bad("q: give 1 to 100 characters to complete"));
    }
    let answer = state.stores.search(&suggest_body(&org, &repo, q)).await?;
    let mut results = Vec::new();
    for kind in ["title", "branch", "user"] {
        for bucket in answer["aggregations"][kind]["values"]["buckets"].as_array().into_iter().flatten() {
            results.push(json!({"kind": kind, "value": bucket["key"], "count": bucket["doc_count"]}));
        }
    }
    Ok(Json(json!({"results": results.clone(), "total": results.len(), "next_cursor": null})))
}
