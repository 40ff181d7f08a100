//! `POST /v1/traces` (also `//v1/traces`, which both Pants exporters can produce): OTLP/HTTP
//! trace export, protobuf or JSON, optionally gzip. The bearer token is a long-lived ingest
//! token (exporters cannot refresh) and names the org/repo every span is stored under.
//!
//! Answers per the OTLP spec: 200 with `ExportTraceServiceResponse` (in the request's
//! encoding; `partial_success` counts rejected spans), 400 for an undecodable body, 415 for
//! another content type, 503 with `Retry-After` when the broker cannot take the data (the
//! exporter retries; repeats are idempotent). Every refusal's body is a `google.rpc.Status`
//! (`code`, `message`), protobuf or JSON like the request (JSON when the type is unknown).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use buildstats_core::auth::bearer;
use buildstats_core::db;
use buildstats_core::tenancy::{RunId, Slug};
use buildstats_core::tokens::Scope;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::body::{self, BodyError};
use crate::documents::{BuildStats, WorkunitsUpdate};
use crate::events::{self, Source};
use crate::http::{ApiError, RequestId};
use crate::normalize::{self, RequestContext};
use crate::otlp;
use crate::AppState;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn unavailable(e: db::DbError) -> ApiError {
    tracing::error!(error = %e, "trace state unavailable");
    ApiError::Unavailable("trace state is temporarily unavailable; retry".into())
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

fn encoding(headers: &HeaderMap) -> Option<Encoding> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        PROTOBUF | "application/protobuf" => Some(Encoding::Protobuf),
        JSON => Some(Encoding::Json),
        _ => None,
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP specifies for failures. Its two scalar fields are
/// written here with prost's derive; `details` (repeated `Any`) is never sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The gRPC code that goes with an HTTP refusal (OTLP/HTTP names the pairs it expects).
fn grpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 | 413 | 415 => 3,  // INVALID_ARGUMENT
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        429 => 8,              // RESOURCE_EXHAUSTED
        503 => 14,             // UNAVAILABLE
        _ => 13,               // INTERNAL
    }
}

/// Keep the status and headers of the gateway's refusal (`Retry-After`...); replace the body
/// with a `google.rpc.Status` in the request's encoding.
fn rpc_status_response(error: ApiError, encoding: Option<Encoding>) -> Response {
    let message = error.to_string();
    let mut response = error.into_response();
    let status = RpcStatus { code: grpc_code(response.status()), message };
    let (content_type, body) = match encoding {
        Some(Encoding::Protobuf) => (PROTOBUF, status.encode_to_vec()),
        _ => (JSON, serde_json::to_vec(&serde_json::json!({"code": status.code, "message": status.message})).expect("JSON")),
    };
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    *response.body_mut() = Body::from(body);
    response
}

pub async fn export(
    state: State<Arc<AppState>>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let requested = encoding(&headers);
    match export_traces(state, request_id, headers, body).await {
        Ok(response) => response,
        Err(error) => rpc_status_response(error, requested),
    }
}

async fn export_traces(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let token = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))?;
    let principal = state.auth.authenticate(token).await?;
    principal.require_scope(Scope::Ingest)?;
    crate::rate_limit::enforce(&state.rate_limit, &principal)?;
    let org = Slug::parse("org", &principal.org).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let repo = Slug::parse("repo", &principal.repo).map_err(|e| ApiError::BadRequest(e.to_string()))?;

    let Some(encoding) = encoding(&headers) else {
        return Err(ApiError::UnsupportedMediaType(format!("send OTLP as {PROTOBUF} or {JSON}")));
    };
    let limits = state.limits;
    let bytes = axum::body::to_bytes(body, limits.max_body_bytes)
        .await
        .map_err(|_| ApiError::from(BodyError::BodyTooLarge { limit: limits.max_body_bytes }))?;
    let mut budget = limits.max_decompressed_bytes;
    let encoded = body::declares_compression(headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()));
    let raw = body::decompress(&bytes, encoded, &mut budget, limits.max_decompressed_bytes)?;
    let request: ExportTraceServiceRequest = match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(raw.as_slice())
            .map_err(|e| ApiError::BadRequest(format!("not an OTLP ExportTraceServiceRequest (protobuf): {e}")))?,
        Encoding::Json => {
            let bad = |e: serde_json::Error| ApiError::BadRequest(format!("not an OTLP ExportTraceServiceRequest (JSON): {e}"));
            let mut value: serde_json::Value = serde_json::from_slice(&raw).map_err(bad)?;
            otlp::fill_omitted_json_defaults(&mut value);
            serde_json::from_value(value).map_err(bad)?
        }
    };

    let export = otlp::split(&request);
    let ctx = RequestContext {
        org: org.to_string(),
        repo: repo.to_string(),
        token_is_ci: principal.ci,
        pants_version: None,
        plugin_version: None,
        stats_version: None,
        source: "otlp",
    };
    let src = Source { org: &org, repo: &repo, request_id: &request_id.0, record_limit: state.record_limit };
    let mut all = Vec::new();
    let pool = state.auth.pool();
    let mut starting: Vec<&[u8]> = Vec::new();
    for trace in &export.traces {
        let run_id = RunId::parse(&otlp::run_id_for_trace(&trace.trace_id)).expect("hex ids are valid run ids");
        // The trace's first batch also reports the run start.
        let started = state.started_traces.contains(principal.ids.repo_id, &trace.trace_id) || {
            let in_db = db::trace_started(pool, principal.ids.repo_id, &trace.trace_id).await.map_err(unavailable)?;
            if in_db {
                state.started_traces.insert(principal.ids.repo_id, &trace.trace_id);
            }
            in_db
        };
        if !started {
            let start = serde_json::to_vec(&otlp::start_document(run_id.as_str(), &trace.spans, &trace.resource, &principal.user))
                .expect("JSON");
            let doc: BuildStats = serde_json::from_slice(&start).expect("our own document parses");
            let mut run = normalize::run_record(&doc, &ctx, run_id.as_str())?;
            if let Some(ci) = otlp::ci_from_resource(&trace.resource) {
                run.ci = Some(ci);
            }
            all.push(events::run_started(&src, &run_id, start, run)?);
            starting.push(&trace.trace_id);
        }
        // Record an error before this batch is acknowledged, so the root's batch sees it.
        let batch_failed = otlp::has_error(&trace.spans);
        if batch_failed {
            db::mark_trace_failed(pool, principal.ids.repo_id, &trace.trace_id).await.map_err(unavailable)?;
        }
        let candidates = otlp::goal_candidates(&trace.spans);
        db::record_goal_candidates(pool, principal.ids.repo_id, &trace.trace_id, &candidates).await.map_err(unavailable)?;
        let update_doc = serde_json::to_vec(&otlp::workunits_document(run_id.as_str(), &trace.spans)).expect("JSON");
        let update: WorkunitsUpdate = serde_json::from_slice(&update_doc).expect("our own document parses");
        all.push(events::workunits_updated(&src, &run_id, &update_doc, &update)?);
        if let Some(root) = trace.spans.iter().find(|s| otlp::is_root(s)) {
            let earlier_error = !batch_failed
                && db::trace_failed(pool, principal.ids.repo_id, &trace.trace_id).await.map_err(unavailable)?;
            let earlier_goals = db::goal_candidates(pool, principal.ids.repo_id, &trace.trace_id, &otlp::root_workunit_id(root))
                .await
                .map_err(unavailable)?;
            let document = otlp::final_document(
                run_id.as_str(),
                root,
                &trace.spans,
                &trace.resource,
                &principal.user,
                earlier_error,
                &earlier_goals,
            );
            let final_doc = serde_json::to_vec(&document)
                .expect("JSON");
            let doc: BuildStats = serde_json::from_slice(&final_doc).expect("our own document parses");
            let mut run = normalize::run_record(&doc, &ctx, run_id.as_str())?;
            if let Some(ci) = otlp::ci_from_resource(&trace.resource) {
                run.ci = Some(ci);
            }
            all.push(events::run_ended(&src, &run_id, &final_doc, &doc, run, "otlp")?);
        }
    }
    if !all.is_empty() {
        state.publisher.publish(&all, &request_id.0).await?;
    }
    for trace_id in starting {
        db::mark_trace_started(pool, principal.ids.repo_id, trace_id).await.map_err(unavailable)?;
        state.started_traces.insert(principal.ids.repo_id, trace_id);
    }
    let accepted: usize = export.traces.iter().map(|t| t.spans.len()).sum();
    metrics::counter!("gateway_otlp_spans_total", "result" => "accepted").increment(accepted as u64);
    metrics::counter!("gateway_otlp_spans_total", "result" => "rejected").increment(export.rejected as u64);

    let response = ExportTraceServiceResponse {
        partial_success: (export.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: export.rejected,
            error_message: export.reasons.join("; "),
        }),
    };
    Ok(match encoding {
        Encoding::Protobuf => (StatusCode::OK, [(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response(),
        Encoding::Json => (StatusCode::OK, [(header::CONTENT_TYPE, JSON)], serde_json::to_vec(&response).expect("JSON"))
            .into_response(),
    })
}
