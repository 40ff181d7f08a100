//! The ingest gateway: the HTTP API the published Pants plugin talks to, unchanged.
//!
//! Request path: [`http::observe`] (request id, metrics) → a handler in [`routes`] →
//! auth ([`buildstats_core::auth`]) → [`body`] (limits, multipart, decompression) →
//! [`documents`] + [`normalize`] + [`ci`] (validate, normalize) → [`events`] + [`records`]
//! (events, chunking) → [`publish`] (Kafka, acks) → 2xx. See ARCHITECTURE.md for the invariants.

pub mod body;
pub mod ci;
pub mod documents;
pub mod events;
pub mod http;
pub mod normalize;
pub mod otlp;
pub mod otlp_started;
pub mod publish;
pub mod rate_limit;
pub mod records;
pub mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{options, patch, post};
use axum::Router;
use buildstats_core::auth::Authenticator;
use buildstats_core::config::Config;
use buildstats_core::telemetry::{ops_router, ReadyCheck};
use buildstats_core::{db, kafka};
use tokio::net::TcpListener;

use crate::body::Limits;
use crate::publish::Publisher;

/// Shared by every handler.
pub struct AppState {
    pub auth: Arc<Authenticator>,
    pub publisher: Arc<Publisher>,
    pub limits: Limits,
    pub record_limit: usize,
    pub public_url: String,
    pub remote_cache_address: String,
    /// Traces whose run start this gateway published (OTLP).
    pub started_traces: otlp_started::StartedTraces,
    /// Per-token request budget.
    pub rate_limit: rate_limit::RateLimiter,
}

/// Register `path` with and without its trailing slash (the plugin always sends one).
fn both<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    path: &str,
    method_router: axum::routing::MethodRouter<S>,
) -> Router<S> {
    let bare = path.trim_end_matches('/');
    router.route(path, method_router.clone()).route(bare, method_router)
}

pub fn router(state: Arc<AppState>) -> Router {
    use routes::buildsense as b;
    let base = "/api/v1/repos/{org}/{repo}/buildsense";
    let mut api = Router::new();
    api = both(api, "/api/v1/token/refresh/", post(routes::token::refresh));
    api = both(api, &format!("{base}/"), options(b::plugin_config));
    api = both(api, &format!("{base}/batch/"), post(b::batch));
    api = both(api, &format!("{base}/{{run_id}}/"), post(b::run_start).merge(patch(b::run_end)));
    api = both(api, &format!("{base}/{{run_id}}/workunits/"), post(b::workunits));
    api = both(api, &format!("{base}/{{run_id}}/artifacts/"), post(b::artifacts));
    // OTLP/HTTP traces. Both Pants exporters can join the endpoint into `//v1/traces`.
    api = api.route("/v1/traces", post(routes::otlp::export)).route("//v1/traces", post(routes::otlp::export));
    let publisher = state.publisher.clone();
    let pool = state.auth.pool().clone();
    let ready: ReadyCheck = Arc::new(move || {
        let publisher = publisher.clone();
        let pool = pool.clone();
        Box::pin(async move {
            db::ping(&pool).await.map_err(|e| format!("postgres: {e}"))?;
            publisher.ready().await
        })
    });
    api.fallback(|| async { http::ApiError::NotFound })
        .method_not_allowed_fallback(|| async { http::ApiError::MethodNotAllowed })
        .with_state(state)
        .merge(ops_router(ready))
        .layer(axum::middleware::from_fn(http::observe))
}

/// Connect to Postgres and Kafka, check the schema and topics, build the state.
pub async fn prepare(config: &Config) -> anyhow::Result<Arc<AppState>> {
    let pool = db::connect(&config.postgres).await?;
    db::check_migrated(&pool).await?;
    let auth = Authenticator::new(&config.auth, pool)?;
    let created = kafka::ensure_topics(&config.kafka).await?;
    if !created.is_empty() {
        tracing::info!(?created, "created topics");
    }
    let publisher = Publisher::new(&config.kafka)?;
    let _ = http::RETRY_AFTER_SECONDS.set(config.gateway.retry_after_seconds);
    Ok(Arc::new(AppState {
        auth: Arc::new(auth),
        publisher: Arc::new(publisher),
        limits: Limits {
            max_body_bytes: config.gateway.max_body_bytes,
            max_decompressed_bytes: config.gateway.max_decompressed_bytes,
            max_parts: config.gateway.max_parts,
        },
        record_limit: config.kafka.record_limit_bytes,
        public_url: config.gateway.public_url.clone(),
        remote_cache_address: config.gateway.remote_cache_address.clone(),
        started_traces: otlp_started::StartedTraces::new(200_000),
        rate_limit: rate_limit::RateLimiter::new(config.gateway.rate_limit_per_second, config.gateway.rate_limit_burst),
    }))
}

/// Serve until `shutdown` resolves, then finish in-flight requests and flush the producer.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, topic = state.publisher.topic(), "gateway listening");
    let publisher = state.publisher.clone();
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    // Every answered request was already acknowledged; this drains anything still queued.
    let flush = tokio::task::spawn_blocking(move || publisher.flush(grace));
    let _ = flush.await;
    tracing::info!("gateway stopped");
    Ok(())
}
