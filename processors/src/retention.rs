//! `buildstats retention run`: turn builds older than their repo's policy into tombstones.
//!
//! Every `retention.tick_seconds` the worker takes the lease of each due policy
//! (`core::retention::claim_due`: one replica per policy, a crashed one's lease runs out), then
//! for each: finds the repo's builds that started before now − retention days in the search
//! index (oldest first, at most `retention.max_builds_per_pass`), and publishes one tombstone
//! per build on the builds topic, acknowledged by the broker: the build's key with a null
//! value and headers saying why. Every sink deletes what it holds for the build when its
//! consumer reaches the tombstone; since the tombstone follows the build's records on the
//! same partition, a replay of the topic ends with the build deleted too.
//!
//! A dry-run policy publishes nothing: the pass only counts and logs what would go. A pass
//! that fails (broker or index down) gives its lease back and is retried at the next tick;
//! a repeated tombstone is harmless (deleting twice is deleting once).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use buildstats_core::config::Config;
use buildstats_core::kafka::{self, headers};
use buildstats_core::retention::{self, Policy};
use buildstats_core::telemetry::{ops_router, ReadyCheck};
use buildstats_core::db;
use futures::stream::{self, StreamExt};
use opensearch::http::Method;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::sinks::opensearch::client::{error_reason, SearchClient};

/// What one pass of one policy did.
#[derive(Debug, Clone, PartialEq)]
pub struct Pass {
    pub org: String,
    pub repo: String,
    pub dry_run: bool,
    /// Builds that started before this (epoch ms) were expired.
    pub cutoff_ms: i64,
    /// Expired builds found (and, unless dry run, tombstoned).
    pub builds: usize,
    /// More expired builds are left for the next pass (the per-pass bound was reached).
    pub more: bool,
}

/// The search body finding a repo's builds that started before `cutoff_ms`, oldest first.
pub fn expired_query(org: &str, repo: &str, cutoff_ms: i64, size: usize, after: Option<&Value>) -> Value {
    let mut body = json!({
        "query": {"bool": {"filter": [
            {"term": {"org": org}},
            {"term": {"repo": repo}},
            {"range": {"started_at": {"lt": cutoff_ms}}},
        ]}},
        "sort": [{"started_at": "asc"}, {"build_key": "asc"}],
        "size": size,
        "_source": ["build_key", "started_at"],
    });
    if let Some(after) = after {
        body["search_after"] = after.clone();
    }
    body
}

/// The headers of a retention tombstone.
pub fn tombstone_headers(policy: &Policy, now_ms: i64, started_at_ms: i64) -> OwnedHeaders {
    let days = policy.retention_days.to_string();
    let at = now_ms.to_string();
    let started = started_at_ms.to_string();
    OwnedHeaders::new()
        .insert(Header { key: headers::EVENT_TYPE, value: Some("tombstone") })
        .insert(Header { key: headers::TOMBSTONE_REASON, value: Some("retention") })
        .insert(Header { key: headers::TOMBSTONE_RETENTION_DAYS, value: Some(days.as_str()) })
        .insert(Header { key: headers::TOMBSTONE_AT, value: Some(at.as_str()) })
        .insert(Header { key: headers::TOMBSTONE_BUILD_STARTED_AT, value: Some(started.as_str()) })
}

/// One pass of one policy at `now_ms`.
pub async fn pass(config: &Config, pool: &PgPool, search: &SearchClient, producer: &FutureProducer, policy: &Policy, now_ms: i64) -> anyhow::Result<Pass> {
    let cutoff_ms = now_ms - i64::from(policy.retention_days) * 86_400_000;
    let limit = config.retention.max_builds_per_pass.max(1);
    let path = format!("/{}/_search", config.opensearch.alias);
    let mut after: Option<Value> = None;
    let mut builds = 0usize;
    let mut more = false;
    let started = Instant::now();
    loop {
        let size = 1_000.min(limit - builds);
        let body = expired_query(&policy.org, &policy.repo, cutoff_ms, size, after.as_ref());
        let (status, answer) = search.call_json(Method::Post, &path, &body).await?;
        if !status.is_success() {
            anyhow::bail!("searching {}/{} for expired builds: {status}: {}", policy.org, policy.repo, error_reason(&answer));
        }
        let hits = answer["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            break;
        }
        let found: Vec<(String, i64)> =
            hits.iter().filter_map(|h| Some((h["_source"]["build_key"].as_str()?.to_string(), h["_source"]["started_at"].as_i64().unwrap_or(0)))).collect();
        if !policy.dry_run {
            // Registered first: from here on every sink drops late records of these builds.
            let keys: Vec<String> = found.iter().map(|(k, _)| k.clone()).collect();
            retention::record_deleted(pool, &keys, "retention").await?;
            let sent: Vec<anyhow::Result<()>> = stream::iter(found.clone())
                .map(|(key, started_at)| async move {
                    let record: FutureRecord<'_, str, [u8]> =
                        FutureRecord::to(&config.kafka.topic).key(key.as_str()).headers(tombstone_headers(policy, now_ms, started_at));
                    producer.send(record, Duration::from_millis(config.kafka.produce_timeout_ms)).await.map(|_| ()).map_err(|(e, _)| anyhow::anyhow!("tombstone for {key}: {e}"))
                })
                .buffer_unordered(256)
                .collect()
                .await;
            for s in sent {
                s?;
            }
        }
        builds += found.len();
        metrics::counter!("retention_builds_expired_total", "dry_run" => policy.dry_run.to_string()).increment(found.len() as u64);
        if builds >= limit {
            more = hits.len() == size;
            break;
        }
        if hits.len() < size {
            break;
        }
        after = hits.last().map(|h| h["sort"].clone());
        if started.elapsed() > Duration::from_secs(5) {
            tracing::info!(org = %policy.org, repo = %policy.repo, builds, "retention pass in progress");
        }
    }
    metrics::counter!("retention_passes_total", "dry_run" => policy.dry_run.to_string()).increment(1);
    metrics::histogram!("retention_pass_seconds").record(started.elapsed().as_secs_f64());
    Ok(Pass { org: policy.org.clone(), repo: policy.repo.clone(), dry_run: policy.dry_run, cutoff_ms, builds, more })
}

/// This replica's lease name: `retention.instance_id`, else host name and process id.
fn owner(config: &Config) -> String {
    if !config.retention.instance_id.is_empty() {
        return config.retention.instance_id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}

/// One tick: claim the due policies and run a pass of each. Returns the passes done.
pub async fn tick(config: &Config, pool: &PgPool, search: &SearchClient, producer: &FutureProducer, me: &str) -> anyhow::Result<Vec<Pass>> {
    let forgotten = retention::forget_deleted(pool, config.retention.forget_deleted_days.max(1)).await?;
    if forgotten > 0 {
        tracing::info!(forgotten, days = config.retention.forget_deleted_days, "forgot old entries of the deleted-builds register");
    }
    let due = retention::claim_due(pool, me, config.retention.lease_seconds.max(60)).await?;
    let mut done = Vec::new();
    for policy in due {
        let now_ms = chrono::Utc::now().timestamp_millis();
        match pass(config, pool, search, producer, &policy, now_ms).await {
            Ok(p) => {
                retention::finish(pool, policy.repo_id, me, p.builds as i64, p.dry_run).await?;
                let verb = if p.dry_run { "would delete (dry run)" } else { "tombstoned" };
                tracing::info!(org = %p.org, repo = %p.repo, builds = p.builds, more = p.more, dry_run = p.dry_run, cutoff_ms = p.cutoff_ms, "retention pass: {verb}");
                done.push(p);
            }
            Err(e) => {
                retention::release(pool, policy.repo_id, me).await?;
                tracing::error!(org = %policy.org, repo = %policy.repo, error = %format!("{e:#}"), "retention pass failed; retried at the next tick");
            }
        }
    }
    Ok(done)
}

/// The worker: ticks until `shutdown` (or once, with `once`), with probes and metrics on
/// `retention.listen`. A pass in flight at shutdown finishes first (its tombstones are
/// acknowledged or it gives its lease back).
pub async fn run(config: &Config, once: bool, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Vec<Pass>> {
    buildstats_core::telemetry::metrics_handle();
    let pool = db::connect(&config.postgres).await?;
    db::check_migrated(&pool).await?;
    kafka::ensure_topics(&config.kafka).await?;
    let search = crate::sinks::opensearch::client(config)?;
    let producer: FutureProducer = kafka::producer_config(&config.kafka)?.create().context("creating the tombstone producer")?;
    let me = owner(config);
    if once {
        let passes = tick(config, &pool, &search, &producer, &me).await?;
        producer_flush(&producer);
        return Ok(passes);
    }
    let ready_pool = pool.clone();
    let ready: ReadyCheck = std::sync::Arc::new(move || {
        let pool = ready_pool.clone();
        Box::pin(async move { db::ping(&pool).await.map_err(|e| format!("postgres: {e}")) })
    });
    let listener = tokio::net::TcpListener::bind(&config.retention.listen)
        .await
        .with_context(|| format!("cannot listen on {} (retention.listen)", config.retention.listen))?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut ops_stop = stop_rx.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, ops_router(ready)).with_graceful_shutdown(async move {
            let _ = ops_stop.wait_for(|s| *s).await;
        })
        .await;
    });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tracing::info!(owner = %me, tick_seconds = config.retention.tick_seconds, "retention worker running");
    let mut all = Vec::new();
    loop {
        match tick(config, &pool, &search, &producer, &me).await {
            Ok(passes) => all.extend(passes),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "retention tick failed; next tick in {} s", config.retention.tick_seconds),
        }
        let wait = tokio::time::sleep(Duration::from_secs(config.retention.tick_seconds.max(1)));
        tokio::select! {
            _ = wait => {}
            _ = stop_rx.wait_for(|s| *s) => break,
        }
    }
    producer_flush(&producer);
    tracing::info!("retention worker stopped");
    Ok(all)
}

fn producer_flush(producer: &FutureProducer) {
    use rdkafka::producer::Producer;
    let _ = producer.flush(Duration::from_secs(10));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_builds_are_looked_up_in_the_repo_only_oldest_first() {
        let body = expired_query("acme", "rocket", 1_000, 50, Some(&json!([5, "acme/rocket/r"])));
        let filters = body["query"]["bool"]["filter"].as_array().unwrap();
        assert_eq!(filters[0], json!({"term": {"org": "acme"}}));
        assert_eq!(filters[1], json!({"term": {"repo": "rocket"}}));
        assert_eq!(filters[2], json!({"range": {"started_at": {"lt": 1_000}}}));
        assert_eq!(body["sort"][0], json!({"started_at": "asc"}));
        assert_eq!(body["search_after"], json!([5, "acme/rocket/r"]));
    }
}
