//! Who may read what: the bearer token must be known, unrevoked, and scoped to the path's
//! org/repo. Any scope may read (an ingest token may read its builds back); reading never
//! writes. Another tenant's repository answers 404, as if it did not exist.

use axum::http::HeaderMap;
use buildstats_core::auth::{bearer, AuthError, Principal};
use buildstats_core::tokens::Scope;

use crate::error::ApiError;
use crate::AppState;

pub async fn authorize(state: &AppState, headers: &HeaderMap, org: &str, repo: &str) -> Result<Principal, ApiError> {
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = bearer(header).map_err(|_| ApiError::Unauthorized)?;
    let principal = state.auth.authenticate(token).await.map_err(|e| match e {
        AuthError::Unavailable(e) => ApiError::unavailable("token", e),
        AuthError::Missing => ApiError::Unauthorized,
        other => ApiError::Forbidden(other.to_string()),
    })?;
    match principal.require(org, repo, Scope::Read) {
        Ok(()) => Ok(principal),
        Err(AuthError::WrongTenant) => Err(ApiError::NotFound(format!("no repository {org}/{repo} for this token"))),
        Err(other) => Err(ApiError::Forbidden(other.to_string())),
    }
}
