//! The build API of the Pants plugin, under `/api/v1/repos/{org}/{repo}/buildsense/`.
//!
//! Every write handler follows the same steps: authenticate (403 before reading the body),
//! read the body under the size limits, decode and validate **everything**, build the
//! records, publish, and answer 201 only once the broker acknowledged. Nothing is published
//! before validation is complete, so a refused request leaves no record.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use buildstats_core::auth::{bearer, Principal};
use buildstats_core::tenancy::{RunId, Slug};
use buildstats_core::tokens::Scope;
use buildstats_schemas::RunRecord;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{self, Part};
use crate::documents::{Batch, BuildStats, WorkunitsUpdate};
use crate::http::{ApiError, RequestId};
use crate::events::{self, Source, UploadedArtifact};
use crate::normalize::{self, RequestContext};
use crate::records::BuildRecords;
use crate::AppState;

pub const IMPERSONATE_HEADER: &str = "x-toolchain-impersonate";
const RUN_LOG_PART: &str = "pants_run_log";
const DESCRIPTORS_PART: &str = "descriptors.json";

/// An authenticated request on one repo's build API.
struct Call {
    org: Slug,
    repo: Slug,
    principal: Principal,
    request_id: String,
    ctx: RequestContext,
    impersonated: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    org: &str,
    repo: &str,
    request_id: &RequestId,
    needed: Scope,
) -> Result<Call, ApiError> {
    let token = bearer(header(headers, "authorization"))?;
    let principal = state.auth.authenticate(token).await?;
    principal.require(org, repo, needed)?;
    crate::rate_limit::enforce(&state.rate_limit, &principal)?;
    // The token matched the path, so these are the token's own (already valid) slugs.
    let org = Slug::parse("org", org).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let repo = Slug::parse("repo", repo).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let impersonated = header(headers, IMPERSONATE_HEADER).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    if impersonated.is_some() && !principal.ci {
        return Err(buildstats_core::auth::AuthError::NotCi.into());
    }
    let (pants_version, plugin_version) = normalize::versions_from_user_agent(header(headers, "user-agent"));
    let ctx = RequestContext {
        org: org.to_string(),
        repo: repo.to_string(),
        token_is_ci: principal.ci,
        pants_version,
        plugin_version,
        stats_version: header(headers, "x-pants-stats-version").map(str::to_string),
        source: "plugin",
    };
    Ok(Call { org, repo, principal, request_id: request_id.0.clone(), ctx, impersonated })
}

async fn read_parts(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<Part>, ApiError> {
    let limits = state.limits;
    if let Some(len) = header(headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        if len > limits.max_body_bytes {
            return Err(body::BodyError::BodyTooLarge { limit: limits.max_body_bytes }.into());
        }
    }
    let bytes: Bytes = axum::body::to_bytes(body, limits.max_body_bytes)
        .await
        .map_err(|_| ApiError::from(body::BodyError::BodyTooLarge { limit: limits.max_body_bytes }))?;
    Ok(body::parts(bytes, header(headers, "content-type"), header(headers, "content-encoding"), limits).await?)
}

fn parse_document<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::BadRequest("the body is not a JSON object".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

fn url_run_id(run_id: &str) -> Result<RunId, ApiError> {
    RunId::parse(run_id).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The common start of a run's JSON endpoints: an ingest caller of this repo, a valid run
/// id, and the request's one document (decompressed).
async fn run_document(
    state: &AppState,
    headers: &HeaderMap,
    (org, repo, run_id): (&str, &str, &str),
    request_id: &RequestId,
    body: Body,
) -> Result<(Call, RunId, Vec<u8>), ApiError> {
    let call = authorize(state, headers, org, repo, request_id, Scope::Ingest).await?;
    let run_id = url_run_id(run_id)?;
    let raw = body::single_document(read_parts(state, headers, body).await?)?;
    Ok((call, run_id, raw))
}

impl Call {
    fn source<'a>(&'a self, state: &AppState) -> Source<'a> {
        Source { org: &self.org, repo: &self.repo, request_id: &self.request_id, record_limit: state.record_limit }
    }
}

fn link(state: &AppState, call: &Call, run_id: &str) -> Value {
    if state.public_url.is_empty() {
        Value::Null
    } else {
        json!(format!("{}/{}/{}/builds/{run_id}/", state.public_url.trim_end_matches('/'), call.org, call.repo))
    }
}

/// Attribution must agree on every endpoint: an impersonation header has to name the CI
/// actor this document's environment names.
fn check_impersonation(call: &Call, run: &RunRecord) -> Result<(), ApiError> {
    if let Some(claimed) = &call.impersonated {
        let expected = run.ci.as_ref().and_then(|ci| normalize::ci_user_api_id(&call.ctx.org, &call.ctx.repo, ci));
        if expected.as_deref() != Some(claimed.as_str()) {
            return Err(ApiError::Forbidden {
                message: "X-Toolchain-Impersonate does not name the CI user of this build".into(),
                rejected: false,
            });
        }
    }
    Ok(())
}

/// The records of one final report (run end, or one batch entry).
fn final_report(
    state: &AppState,
    call: &Call,
    run_id: &RunId,
    raw: &[u8],
    doc: &BuildStats,
    via: &'static str,
) -> Result<BuildRecords, ApiError> {
    let run = normalize::run_record(doc, &call.ctx, run_id.as_str())?;
    // A batch carries the impersonation header of the run that sends it, not of the older
    // runs inside it: there, attribution comes from each report's own CI environment.
    if via != "batch" {
        check_impersonation(call, &run)?;
    }
    Ok(events::run_ended(&call.source(state), run_id, raw, doc, run, via)?)
}

/// `OPTIONS buildsense/`: which workunit artifacts, metadata and CI variables to send.
pub async fn plugin_config(
    State(state): State<Arc<AppState>>,
    Path((org, repo)): Path<(String, String)>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The answer is the same for everyone, but only a caller of this repo gets it.
    authorize(&state, &headers, &org, &repo, &request_id, Scope::Read).await?;
    let ci_capture = json!({
        "CIRCLECI": "^CIRCLE.*", "TRAVIS": "^TRAVIS.*", "GITHUB_ACTIONS": "^GITHUB.*",
        "BITBUCKET_BUILD_NUMBER": "^BITBUCKET.*", "BUILDKITE": "^BUILDKITE.*"
    });
    Ok(Json(json!({
        "ci_capture": ci_capture,
        "config": {
            "work_units": {
                "artifacts": ["stdout", "stderr", "xml_results"],
                "metadata": ["exit_code", "definition", "source", "address", "addresses",
                             "action_digest", "environment_type", "environment_name"]
            },
            "ci_capture": ci_capture
        }
    }))
    .into_response())
}

/// `POST {run_id}/`: run start.
pub async fn run_start(
    State(state): State<Arc<AppState>>,
    Path((org, repo, run_id)): Path<(String, String, String)>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (call, run_id, raw) = run_document(&state, &headers, (&org, &repo, &run_id), &request_id, body).await?;
    let doc: BuildStats = parse_document(&raw)?;
    normalize::run_id_of(&doc, Some(run_id.as_str()))?;
    let run = normalize::run_record(&doc, &call.ctx, run_id.as_str())?;
    check_impersonation(&call, &run)?;
    let ci_user_api_id = match (&run.ci, call.principal.ci) {
        (Some(ci), true) => normalize::ci_user_api_id(&call.ctx.org, &call.ctx.repo, ci),
        _ => None,
    };
    let records = events::run_started(&call.source(&state), &run_id, raw, run)?;
    state.publisher.publish(&[records], &call.request_id).await?;
    let body = json!({"saved": true, "link": link(&state, &call, run_id.as_str()), "ci_user_api_id": ci_user_api_id});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST {run_id}/workunits/`: live workunits of a running build.
pub async fn workunits(
    State(state): State<Arc<AppState>>,
    Path((org, repo, run_id)): Path<(String, String, String)>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (call, run_id, raw) = run_document(&state, &headers, (&org, &repo, &run_id), &request_id, body).await?;
    let update: WorkunitsUpdate = parse_document(&raw)?;
    if let Some(body_id) = update.run_id.as_deref() {
        if body_id != run_id.as_str() {
            return Err(ApiError::BadRequest(format!(
                "run_id {body_id:?} in the body does not match the run id in the URL {run_id:?}"
            )));
        }
    }
    let records = events::workunits_updated(&call.source(&state), &run_id, &raw, &update)?;
    state.publisher.publish(&[records], &call.request_id).await?;
    Ok((StatusCode::CREATED, Json(json!("OK"))).into_response())
}

/// `PATCH {run_id}/`: the final report.
pub async fn run_end(
    State(state): State<Arc<AppState>>,
    Path((org, repo, run_id)): Path<(String, String, String)>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (call, run_id, raw) = run_document(&state, &headers, (&org, &repo, &run_id), &request_id, body).await?;
    let doc: BuildStats = parse_document(&raw)?;
    normalize::run_id_of(&doc, Some(run_id.as_str()))?;
    let records = final_report(&state, &call, &run_id, &raw, &doc, "run_end")?;
    state.publisher.publish(&[records], &call.request_id).await?;
    let body = json!({"created": true, "link": link(&state, &call, run_id.as_str())});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST batch/`: final reports of earlier runs, kept by the client after a failed run end.
pub async fn batch(
    State(state): State<Arc<AppState>>,
    Path((org, repo)): Path<(String, String)>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let call = authorize(&state, &headers, &org, &repo, &request_id, Scope::Ingest).await?;
    let raw = body::single_document(read_parts(&state, &headers, body).await?)?;
    let batch: Batch = parse_document(&raw)?;
    match batch.version.as_deref() {
        Some("1") => {}
        Some(other) => return Err(ApiError::BadRequest(format!("unknown batch version {other:?}: this server reads version \"1\""))),
        None => return Err(ApiError::BadRequest("the batch has no version".into())),
    }
    let entries = batch.build_stats.unwrap_or_default();
    if entries.is_empty() {
        return Err(ApiError::BadRequest("the batch is empty".into()));
    }
    let mut all = Vec::with_capacity(entries.len());
    for (key, raw_doc) in &entries {
        let run_id = RunId::parse(key).map_err(|e| ApiError::BadRequest(format!("batch entry: {e}")))?;
        let bytes = raw_doc.get().as_bytes();
        let doc: BuildStats = parse_document(bytes).map_err(|e| ApiError::BadRequest(format!("batch entry {key}: {e}")))?;
        normalize::run_id_of(&doc, Some(key)).map_err(|e| ApiError::BadRequest(format!("batch entry {key}: {e}")))?;
        all.push(final_report(&state, &call, &run_id, bytes, &doc, "batch")?);
    }
    state.publisher.publish(&all, &call.request_id).await?;
    Ok((StatusCode::CREATED, Json(json!("OK"))).into_response())
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(default)]
    workunit_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

fn artifact_content_type(part_name: &str, path: Option<&str>) -> &'static str {
    if part_name == RUN_LOG_PART {
        return "text/plain; charset=utf-8";
    }
    let name = path.unwrap_or(part_name).to_ascii_lowercase();
    match name.rsplit('.').next() {
        Some("xml") => "application/xml",
        Some("json") => "application/json",
        Some("txt" | "log" | "out" | "err") => "text/plain; charset=utf-8",
        Some("html" | "htm") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `POST {run_id}/artifacts/`: the run log and artifacts of a finished run.
pub async fn artifacts(
    State(state): State<Arc<AppState>>,
    Path((org, repo, run_id)): Path<(String, String, String)>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let call = authorize(&state, &headers, &org, &repo, &request_id, Scope::Ingest).await?;
    let run_id = url_run_id(&run_id)?;
    let parts = read_parts(&state, &headers, body).await?;
    let part_key = |p: &Part| if p.name.is_empty() { p.file_name.clone().unwrap_or_default() } else { p.name.clone() };
    let mut descriptors: Option<HashMap<String, Descriptor>> = None;
    let mut files = Vec::new();
    for part in parts {
        let name = part_key(&part);
        if name == DESCRIPTORS_PART {
            let parsed: HashMap<String, Descriptor> = parse_document(&part.data)
                .map_err(|e| ApiError::BadRequest(format!("descriptors.json: {e}")))?;
            descriptors = Some(parsed);
        } else {
            files.push((name, part.data));
        }
    }
    if files.is_empty() {
        return Err(ApiError::BadRequest("the upload has no artifact".into()));
    }
    if descriptors.is_none() && files.iter().any(|(name, _)| name != RUN_LOG_PART) {
        return Err(ApiError::BadRequest(
            "artifact upload without descriptors.json: only pants_run_log may be sent without one".into(),
        ));
    }
    let descriptors = descriptors.unwrap_or_default();
    let uploads = files
        .into_iter()
        .map(|(name, data)| {
            let descriptor = descriptors.get(&name);
            let path = descriptor.and_then(|d| d.path.clone());
            UploadedArtifact {
                content_type: artifact_content_type(&name, path.as_deref()).to_string(),
                workunit_id: descriptor.and_then(|d| d.workunit_id.clone()),
                descriptor_name: descriptor.and_then(|d| d.name.clone()),
                path,
                name,
                data,
            }
        })
        .collect();
    let records = events::artifacts_uploaded(&call.source(&state), &run_id, uploads)?;
    state.publisher.publish(&[records], &call.request_id).await?;
    Ok((StatusCode::CREATED, Json(json!("OK"))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_path() {
        assert_eq!(artifact_content_type("pants_run_log", None), "text/plain; charset=utf-8");
        assert_eq!(artifact_content_type("coverage_xml", Some("dist/coverage.xml")), "application/xml");
        assert_eq!(artifact_content_type("x", Some("a.bin")), "application/octet-stream");
    }
}
