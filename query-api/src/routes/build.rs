//! One build: its record (DynamoDB), workunit tree, artifacts and raw documents (S3).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use buildstats_core::tenancy::is_escaped_segment;
use chrono::{TimeZone, Utc};
use futures::stream::{self, StreamExt};
use processors::sink::BuildKey;
use serde_json::{json, Map, Value};

use super::{build_key, build_link, now_ms};
use crate::error::ApiError;
use crate::search::derived_outcome;
use crate::stores::Object;
use crate::workunits::{from_final_report, merge_live, tree};
use crate::AppState;

fn not_found(key: &BuildKey) -> ApiError {
    ApiError::NotFound(format!("no build {:?} in {}/{}", key.run_id, key.org, key.repo))
}

fn rfc3339_us(us: Option<i64>) -> Value {
    us.and_then(|us| Utc.timestamp_micros(us).single()).map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))).unwrap_or(Value::Null)
}

/// Attributes of the runs table that are its own bookkeeping, not the build's.
const INTERNAL: [&str; 3] = ["pk", "repo_key", "user_key"];

/// The build as the API shows it, from its DynamoDB item.
pub fn detail_of(key: &BuildKey, mut item: Map<String, Value>, now: i64, timeout_ms: i64) -> Value {
    for k in INTERNAL {
        item.remove(k);
    }
    let started_us = item.get("started_at").and_then(Value::as_i64);
    let last_update_ms = item.get("last_update").and_then(Value::as_f64).map(|s| (s * 1000.0) as i64);
    let last_seen = last_update_ms.into_iter().chain(started_us.map(|u| u / 1000)).max().unwrap_or(0);
    let state = item.get("state").and_then(Value::as_str).unwrap_or("running").to_string();
    let outcome = derived_outcome(&state, item.get("outcome").and_then(Value::as_str).unwrap_or(""), last_seen, now, timeout_ms);
    let run_time = item.get("run_time_ms").and_then(Value::as_i64);
    let mut artifact_ids: Vec<String> = item.remove("artifact_ids").and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    artifact_ids.sort();
    let artifacts: Vec<Value> = artifact_ids
        .iter()
        .map(|id| json!({"artifact_id": id, "link": build_link(key, &format!("artifacts/{id}/"))}))
        .collect();
    let timings = json!({
        "started_at": rfc3339_us(started_us),
        "started_at_us": started_us,
        "ended_at": rfc3339_us(started_us.zip(run_time).map(|(s, r)| s + r * 1000)),
        "run_time_ms": run_time,
        "last_update": item.remove("last_update"),
        "goal_timings": item.remove("goal_timings").unwrap_or(json!([])),
        "rule_timings": item.remove("rule_timings").unwrap_or(json!([])),
    });
    item.remove("started_at");
    // `outcome` is what people see (RUNNING/TIMEOUT derived); the report's own stays too.
    let reported = item.get("outcome").cloned().unwrap_or(Value::Null);
    item.insert("outcome".into(), json!(outcome));
    item.insert("reported_outcome".into(), reported);
    let mut out = item;
    out.insert("run_id".into(), json!(key.run_id));
    out.insert("org".into(), json!(key.org));
    out.insert("repo".into(), json!(key.repo));
    out.insert("ci".into(), out.get("ci").cloned().unwrap_or(Value::Null));
    out.insert("counters".into(), out.get("counters").cloned().unwrap_or(json!({})));
    out.insert("timings".into(), timings);
    out.insert("artifacts".into(), Value::Array(artifacts));
    out.insert(
        "links".into(),
        json!({
            "self": build_link(key, ""),
            "workunits": build_link(key, "workunits/"),
            "artifacts": build_link(key, "artifacts/"),
            "documents": build_link(key, "documents/"),
        }),
    );
    Value::Object(out)
}

/// `GET builds/{run_id}/`.
pub async fn detail(State(state): State<Arc<AppState>>, Path((org, repo, run_id)): Path<(String, String, String)>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let key = build_key(&state, &headers, &org, &repo, &run_id).await?;
    let item = state.stores.run_record(&key).await?.ok_or_else(|| not_found(&key))?;
    Ok(Json(detail_of(&key, item, now_ms(), state.running_timeout_ms)))
}

fn parse_json(what: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::unavailable("archive", format!("{what} is not JSON: {e}")))
}

/// `GET builds/{run_id}/workunits/`: the tree, from the final report, else the live calls.
pub async fn workunits(State(state): State<Arc<AppState>>, Path((org, repo, run_id)): Path<(String, String, String)>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let key = build_key(&state, &headers, &org, &repo, &run_id).await?;
    let prefix = state.stores.build_prefix(&key);
    let (source, list) = match state.stores.object_bytes(&prefix.final_document()).await? {
        Some(bytes) => ("final_report", from_final_report(&parse_json("final.json", &bytes)?)),
        None => {
            let keys = state.stores.keys(&format!("{}workunits/", prefix.as_str())).await?;
            if keys.is_empty() && state.stores.object_bytes(&prefix.start_document()).await?.is_none() {
                return Err(not_found(&key));
            }
            let stores = &state.stores;
            let updates: Vec<Result<Option<bytes::Bytes>, ApiError>> =
                stream::iter(keys).map(|k| async move { stores.object_bytes(&k).await }).buffered(8).collect().await;
            let mut parsed = Vec::new();
            for update in updates {
                if let Some(bytes) = update? {
                    parsed.push(parse_json("a workunits update", &bytes)?);
                }
            }
            ("live", merge_live(&parsed))
        }
    };
    let (roots, count) = tree(&list);
    Ok(Json(json!({"run_id": key.run_id, "source": source, "results": roots, "total": count, "next_cursor": null})))
}

/// `GET builds/{run_id}/artifacts/`: the descriptors of the uploaded artifacts.
pub async fn artifacts(State(state): State<Arc<AppState>>, Path((org, repo, run_id)): Path<(String, String, String)>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let key = build_key(&state, &headers, &org, &repo, &run_id).await?;
    let prefix = state.stores.build_prefix(&key);
    let keys = state.stores.keys(&format!("{}artifacts/", prefix.as_str())).await?;
    let descriptors: Vec<String> = keys.into_iter().filter(|k| k.ends_with(".descriptor.json")).collect();
    if descriptors.is_empty() && state.stores.run_record(&key).await?.is_none() {
        return Err(not_found(&key));
    }
    let stores = &state.stores;
    let read: Vec<Result<Option<bytes::Bytes>, ApiError>> =
        stream::iter(descriptors).map(|k| async move { stores.object_bytes(&k).await }).buffered(8).collect().await;
    let mut results = Vec::new();
    for bytes in read {
        let Some(bytes) = bytes? else { continue };
        let mut d = parse_json("an artifact descriptor", &bytes)?;
        let id = d["artifact_id"].as_str().unwrap_or_default().to_string();
        d["link"] = json!(build_link(&key, &format!("artifacts/{id}/")));
        if let Some(obj) = d.as_object_mut() {
            obj.remove("event_id");
        }
        results.push(d);
    }
    results.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()).then(a["artifact_id"].as_str().cmp(&b["artifact_id"].as_str())));
    Ok(Json(json!({"results": results.clone(), "total": results.len(), "next_cursor": null})))
}

/// Stream an archived object with its content type, byte for byte.
fn stream_object(object: Object, fallback_type: &str) -> Response {
    let content_type = object.content_type.unwrap_or_else(|| fallback_type.to_string());
    let body = stream::unfold(object.body, |mut body| async move { body.next().await.map(|chunk| (chunk.map_err(std::io::Error::other), body)) });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")));
    if let Some(len) = object.length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len.max(0) as u64));
    }
    // Content a client uploaded is never run as a page of this origin.
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    response
}

/// `GET builds/{run_id}/artifacts/{artifact_id}/`: the content.
pub async fn artifact_content(
    State(state): State<Arc<AppState>>,
    Path((org, repo, run_id, artifact_id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = build_key(&state, &headers, &org, &repo, &run_id).await?;
    let missing = || ApiError::NotFound(format!("no artifact {artifact_id:?} in build {:?}", key.run_id));
    if !is_escaped_segment(&artifact_id) {
        return Err(missing());
    }
    let object_key = state.stores.build_prefix(&key).artifact(&artifact_id).map_err(|_| missing())?;
    let object = state.stores.object(&object_key).await?.ok_or_else(missing)?;
    Ok(stream_object(object, "application/octet-stream"))
}

/// The raw documents of a build, as the client sent them.
const DOCUMENTS: [&str; 2] = ["start", "final"];

/// `GET builds/{run_id}/documents/`: which raw documents the archive holds.
pub async fn documents(State(state): State<Arc<AppState>>, Path((org, repo, run_id)): Path<(String, String, String)>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let key = build_key(&state, &headers, &org, &repo, &run_id).await?;
    let prefix = state.stores.build_prefix(&key);
    let keys = state.stores.keys(prefix.as_str()).await?;
    let present: Vec<Value> = DOCUMENTS
        .iter()
        .filter(|d| keys.contains(&format!("{}{d}.json", prefix.as_str())))
        .map(|d| json!({"document": d, "link": build_link(&key, &format!("documents/{d}/"))}))
        .collect();
    if present.is_empty() {
        return Err(not_found(&key));
    }
    Ok(Json(json!({"results": present.clone(), "total": present.len(), "next_cursor": null})))
}

/// `GET builds/{run_id}/documents/{start|final}/`: the raw document, byte for byte.
pub async fn document(
    State(state): State<Arc<AppState>>,
    Path((org, repo, run_id, document)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = build_key(&state, &headers, &org, &repo, &run_id).await?;
    let prefix = state.stores.build_prefix(&key);
    let object_key = match document.as_str() {
        "start" => prefix.start_document(),
        "final" => prefix.final_document(),
        other => return Err(ApiError::NotFound(format!("no document {other:?}: the documents are {}", DOCUMENTS.join(", ")))),
    };
    let object = state.stores.object(&object_key).await?.ok_or_else(|| ApiError::NotFound(format!("build {:?} has no {document} document", key.run_id)))?;
    Ok(stream_object(object, "application/json"))
}
