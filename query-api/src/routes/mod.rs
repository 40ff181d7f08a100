//! The endpoints, grouped by what they answer about: a repo's builds ([`builds`]), one
//! build ([`build`]), time series ([`indicators`]).

pub mod build;
pub mod builds;
pub mod indicators;

use axum::http::HeaderMap;
use buildstats_core::tenancy::{RunId, Slug};
use processors::sink::BuildKey;

use crate::auth::authorize;
use crate::error::ApiError;
use crate::AppState;

/// The query string as pairs; a malformed one is a 400 in the API's error shape.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or("")).map_err(|e| ApiError::bad(format!("the query string is not valid: {e}")))
}

/// Check the path's org/repo and the token; returns them as validated strings.
pub async fn tenant(state: &AppState, headers: &HeaderMap, org: &str, repo: &str) -> Result<(String, String), ApiError> {
    let not_found = || ApiError::NotFound(format!("no repository {org}/{repo} for this token"));
    let org = Slug::parse("org", org).map_err(|_| not_found())?;
    let repo = Slug::parse("repo", repo).map_err(|_| not_found())?;
    authorize(state, headers, org.as_str(), repo.as_str()).await?;
    Ok((org.as_str().to_string(), repo.as_str().to_string()))
}

/// [`tenant`], plus the build's key.
pub async fn build_key(state: &AppState, headers: &HeaderMap, org: &str, repo: &str, run_id: &str) -> Result<BuildKey, ApiError> {
    let (org, repo) = tenant(state, headers, org, repo).await?;
    let run_id = RunId::parse(run_id).map_err(|_| ApiError::NotFound(format!("no build {run_id:?} in {org}/{repo}")))?;
    Ok(BuildKey { org, repo, run_id: run_id.as_str().to_string() })
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `/api/v1/repos/{org}/{repo}/builds/{run_id}/` and below.
pub fn build_link(key: &BuildKey, rest: &str) -> String {
    let run = buildstats_core::tenancy::escape_segment(&key.run_id);
    format!("/api/v1/repos/{}/{}/builds/{run}/{rest}", key.org, key.repo)
}
