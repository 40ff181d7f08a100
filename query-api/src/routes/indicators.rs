//! `GET builds/indicators/`: time series from InfluxDB.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::{now_ms, query_pairs, tenant};
use crate::error::ApiError;
use crate::indicators::{params, points, statement};
use crate::AppState;

pub async fn indicators(State(state): State<Arc<AppState>>, Path((org, repo)): Path<(String, String)>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (org, repo) = tenant(&state, &headers, &org, &repo).await?;
    let p = params(&query_pairs(raw.as_deref())?, now_ms())?;
    let answer = state.stores.influx(&statement(&org, &repo, &p)).await?;
    let results = points(&answer, &p);
    Ok(Json(json!({
        "interval": p.interval,
        "group_by": p.group_by,
        "results": results.clone(),
        "total": results.len(),
        "next_cursor": null,
    })))
}
