//! `POST /api/v1/token/refresh/`: trade a long-lived token for an access token.
//!
//! The plugin parses `expires_at` with Python 3.9's `datetime.fromisoformat`, which needs an
//! explicit `+00:00` offset (no `Z`); it reads `remote_cache.address` unconditionally; and it
//! treats a 403 as final only when the body is `application/json`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use buildstats_core::auth::bearer;
use chrono::SecondsFormat;
use serde_json::json;

use crate::http::ApiError;
use crate::AppState;

pub async fn refresh(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let reject = |e: buildstats_core::auth::AuthError| match ApiError::from(e) {
        ApiError::Forbidden { message, .. } => ApiError::Forbidden { message, rejected: true },
        other => other,
    };
    let token = bearer(headers.get("authorization").and_then(|v| v.to_str().ok())).map_err(reject)?;
    let principal = state.auth.authenticate(token).await.map_err(reject)?;
    let (access_token, expires_at) = state.auth.issue_access(&principal).map_err(reject)?;
    Ok(Json(json!({
        "token": {
            "access_token": access_token,
            "expires_at": expires_at.to_rfc3339_opts(SecondsFormat::Micros, false),
            "repo_id": principal.ids.repo_id.simple().to_string(),
            "customer_id": principal.ids.org_id.simple().to_string(),
        },
        "remote_cache": {"address": state.remote_cache_address},
    }))
    .into_response())
}
