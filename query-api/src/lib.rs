//! The query API (`buildstats query`): JSON over HTTP for the stored builds, read with a
//! token scoped to one repository. Which store answers what:
//!
//! | endpoint | store |
//! |---|---|
//! | lists, search, facets, suggestions | OpenSearch (the index alias) |
//! | a build's record | DynamoDB (the runs table) |
//! | workunits, artifacts, raw documents | S3 (the build's prefix) |
//! | indicators | InfluxDB |
//!
//! - [`routes`]: the endpoints; [`auth`]: token → tenant check; [`error`]: the error shape.
//! - [`params`], [`search`], [`workunits`], [`indicators`]: pure request/answer logic.
//! - `openapi.json` (served at `/api/v1/openapi.json`) describes every route; a test keeps
//!   it and the router in step.

pub mod auth;
pub mod error;
pub mod indicators;
pub mod params;
pub mod routes;
pub mod search;
pub mod stores;
pub mod workunits;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use axum::Router;
use buildstats_core::auth::Authenticator;
use buildstats_core::config::Config;
use buildstats_core::db;
use buildstats_core::telemetry::{ops_router, ReadyCheck};
use tokio::net::TcpListener;

use error::ApiError;
use stores::Stores;

/// The committed OpenAPI document.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub struct AppState {
    pub auth: Authenticator,
    pub stores: Stores,
    pub running_timeout_ms: i64,
    pub default_page_size: usize,
}

/// Every route: (path, methods). The OpenAPI document lists exactly these.
pub const ROUTES: [(&str, &[&str]); 10] = [
    ("/api/v1/openapi.json", &["get"]),
    ("/api/v1/repos/{org}/{repo}/builds/", &["get", "options"]),
    ("/api/v1/repos/{org}/{repo}/builds/suggest/", &["get"]),
    ("/api/v1/repos/{org}/{repo}/builds/indicators/", &["get"]),
    ("/api/v1/repos/{org}/{repo}/builds/{run_id}/", &["get"]),
    ("/api/v1/repos/{org}/{repo}/builds/{run_id}/workunits/", &["get"]),
    ("/api/v1/repos/{org}/{repo}/builds/{run_id}/artifacts/", &["get"]),
    ("/api/v1/repos/{org}/{repo}/builds/{run_id}/artifacts/{artifact_id}/", &["get"]),
    ("/api/v1/repos/{org}/{repo}/builds/{run_id}/documents/{document}/", &["get"]),
    ("/api/v1/repos/{org}/{repo}/builds/{run_id}/documents/", &["get"]),
];

fn handler(path: &str) -> MethodRouter<Arc<AppState>> {
    use axum::routing::options;
    use routes::{build, builds};
    match path {
        "/api/v1/openapi.json" => get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        "/api/v1/repos/{org}/{repo}/builds/" => get(builds::list).merge(options(builds::field_values)),
        "/api/v1/repos/{org}/{repo}/builds/suggest/" => get(builds::suggest),
        "/api/v1/repos/{org}/{repo}/builds/indicators/" => get(routes::indicators::indicators),
        "/api/v1/repos/{org}/{repo}/builds/{run_id}/" => get(build::detail),
        "/api/v1/repos/{org}/{repo}/builds/{run_id}/workunits/" => get(build::workunits),
        "/api/v1/repos/{org}/{repo}/builds/{run_id}/artifacts/" => get(build::artifacts),
        "/api/v1/repos/{org}/{repo}/builds/{run_id}/artifacts/{artifact_id}/" => get(build::artifact_content),
        "/api/v1/repos/{org}/{repo}/builds/{run_id}/documents/{document}/" => get(build::document),
        "/api/v1/repos/{org}/{repo}/builds/{run_id}/documents/" => get(build::documents),
        other => unreachable!("route {other} has no handler"),
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let mut api = Router::new();
    for (path, _) in ROUTES {
        // The trailing slash is optional, as on the gateway.
        let bare = path.trim_end_matches('/');
        api = api.route(path, handler(path));
        if bare != path {
            api = api.route(bare, handler(path));
        }
    }
    let ready_state = state.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let state = ready_state.clone();
        Box::pin(async move {
            db::ping(state.auth.pool()).await.map_err(|e| format!("postgres: {e}"))?;
            state.stores.check_ready().await
        })
    });
    api.fallback(|| async { ApiError::NotFound("no such endpoint: see /api/v1/openapi.json".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .merge(ops_router(ready))
        .layer(axum::middleware::from_fn(observe))
}

/// Request metrics by route template (never by raw path: no tenant names in labels).
async fn observe(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("query_http_requests_total", "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!("query_http_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// Connect to Postgres (tokens) and the stores, and build the state.
pub async fn prepare(config: &Config) -> anyhow::Result<Arc<AppState>> {
    buildstats_core::telemetry::metrics_handle();
    let pool = db::connect(&config.postgres).await?;
    db::check_migrated(&pool).await?;
    let auth = Authenticator::new(&config.auth, pool)?;
    let stores = Stores::from_config(config).await?;
    Ok(Arc::new(AppState {
        auth,
        stores,
        running_timeout_ms: config.query.running_timeout_seconds.max(1) * 1000,
        default_page_size: config.query.default_page_size,
    }))
}

/// Serve until `shutdown` resolves, then finish the requests in flight.
pub async fn serve(state: Arc<AppState>, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "query API listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    tracing::info!("query API stopped");
    Ok(())
}

/// Bound a store call: past `timeout`, the request answers 503.
pub async fn bounded<T>(store: &str, timeout: Duration, call: impl Future<Output = T>) -> Result<T, ApiError> {
    tokio::time::timeout(timeout, call).await.map_err(|_| ApiError::unavailable(store, format!("no answer within {} ms", timeout.as_millis())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in ROUTES {
            let entry = paths.get(path).unwrap_or_else(|| panic!("{path} is not in openapi.json"));
            for m in methods {
                assert!(entry.get(*m).is_some(), "{m} {path} is not in openapi.json");
            }
            let documented: Vec<&String> = entry.as_object().unwrap().keys().filter(|k| *k != "parameters").collect();
            assert_eq!(documented.len(), methods.len(), "{path}: openapi.json has methods {documented:?}, the router {methods:?}");
        }
        assert_eq!(paths.len(), ROUTES.len(), "openapi.json has paths the router does not serve");
    }
}
