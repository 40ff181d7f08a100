//! HTTP plumbing of the gateway: error answers, `X-Request-Id`, per-route metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use buildstats_core::auth::AuthError;
use serde_json::json;

use crate::body::BodyError;
use crate::normalize::DocumentError;
use crate::publish::PublishError;
use crate::records::AssembleError;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request (from the client when sane, else generated).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Every refusal the gateway answers, each with a JSON body that names the problem.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `{"error": {"message": ...}}`, the original's shape for bad payloads.
    #[error("{0}")]
    BadRequest(String),
    /// 413, same shape.
    #[error("{0}")]
    TooLarge(String),
    /// 403 `{"detail": ...}`, the original's shape for auth; `rejected` marks a refresh
    /// token the plugin should stop using.
    #[error("{message}")]
    Forbidden { message: String, rejected: bool },
    /// 503 with `Retry-After`: nothing of the request was acknowledged, try again.
    #[error("{0}")]
    Unavailable(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 415, e.g. an OTLP body that is neither protobuf nor JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 with `Retry-After`: this token's rate limit (`gateway.rate_limit_per_second`).
    #[error("too many requests for this token: retry after {retry_after_seconds} s")]
    TooManyRequests { retry_after_seconds: u64 },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// Seconds a client is told to wait after a 503 (set once at start-up from config).
pub static RETRY_AFTER_SECONDS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        match self {
            ApiError::Forbidden { rejected, .. } => {
                let mut body = json!({"detail": message});
                if rejected {
                    body["rejected"] = json!(true);
                }
                (status, Json(body)).into_response()
            }
            ApiError::Unavailable(_) => {
                let retry = RETRY_AFTER_SECONDS.get().copied().unwrap_or(5).to_string();
                (status, [(axum::http::header::RETRY_AFTER, retry)], Json(json!({"error": {"message": message}})))
                    .into_response()
            }
            ApiError::TooManyRequests { retry_after_seconds } => {
                (status, [(axum::http::header::RETRY_AFTER, retry_after_seconds.to_string())], Json(json!({"error": {"message": message}})))
                    .into_response()
            }
            _ => (status, Json(json!({"error": {"message": message}}))).into_response(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        if e.is_transient() {
            tracing::error!(error = %e, "auth store unavailable");
            return ApiError::Unavailable("authentication is temporarily unavailable".into());
        }
        ApiError::Forbidden { message: e.to_string(), rejected: false }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        if e.is_too_large() {
            ApiError::TooLarge(e.to_string())
        } else {
            ApiError::BadRequest(e.to_string())
        }
    }
}

impl From<DocumentError> for ApiError {
    fn from(e: DocumentError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        ApiError::Unavailable(format!("the build could not be stored right now ({e}); retry later"))
    }
}

impl From<AssembleError> for ApiError {
    fn from(e: AssembleError) -> Self {
        match e {
            AssembleError::EventTooLarge { .. } => ApiError::TooLarge(e.to_string()),
            AssembleError::Encode(_) => {
                tracing::error!(error = %e, "event encoding failed");
                ApiError::BadRequest(format!("the document cannot be encoded: {e}"))
            }
        }
    }
}

fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| s.to_string())
}

/// Give every request an id (the client's when sane), log it, answer with it, and count
/// requests, statuses, bytes and latency per route.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let bytes_in: u64 = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    request.extensions_mut().insert(RequestId(id.clone()));

    let in_flight = metrics::gauge!("gateway_http_requests_in_flight", "route" => route.clone());
    in_flight.increment(1.0);
    let mut response = next.run(request).await;
    in_flight.decrement(1.0);

    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!("gateway_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.clone())
        .increment(1);
    metrics::counter!("gateway_http_request_bytes_total", "route" => route.clone()).increment(bytes_in);
    metrics::histogram!("gateway_http_request_seconds", "route" => route.clone()).record(elapsed);
    if response.status().is_client_error() || response.status().is_server_error() {
        tracing::info!(request_id = %id, %method, %route, %status, elapsed_ms = elapsed * 1000.0, "request refused");
    } else {
        tracing::debug!(request_id = %id, %method, %route, %status, elapsed_ms = elapsed * 1000.0, "request");
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}
