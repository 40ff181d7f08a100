//! Kafka consumer groups that fan build events out to the stores, one group per store.
//!
//! - [`runtime`]: the consumer-group runtime every sink shares (ordering, batching, offsets,
//!   retries, dead letters, chunk staging, metrics).
//! - [`sink`]: the small trait a store implements.
//! - [`sinks`]: the stores (DynamoDB, S3, OpenSearch, InfluxDB).
//! - [`init`]: `admin init-stores`; [`redrive`]: `dlq redrive`; [`retention`]: `retention run`;
//!   [`replay`]: `replay`; [`reindex`]: `reindex` (from the S3 archive);
//!   [`topic_migrate`]: `admin topic migrate`.

pub mod aws;
pub mod init;
pub mod redrive;
pub mod reindex;
pub mod replay;
pub mod retention;
pub mod runtime;
pub mod sink;
pub mod sinks;
pub mod topic_migrate;
#[cfg(test)]
mod test_records;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use buildstats_core::config::Config;
use buildstats_core::telemetry::{ops_router, ReadyCheck};
use futures::future::BoxFuture;
use sink::Sink;
use sinks::dynamodb::DynamoDbSink;
use sinks::influxdb::InfluxDbSink;
use sinks::opensearch::OpenSearchSink;
use sinks::s3::S3Sink;
use sinks::SinkName;
use tokio::sync::watch;

/// One sink to run, and its consumer group.
#[derive(Debug, Clone)]
pub struct SinkRun {
    pub name: SinkName,
    pub group: String,
}

/// Run the given sinks in this process until `shutdown` resolves, with `/healthz`,
/// `/readyz` (every sink's store answers) and `/metrics` on `sinks.listen`.
pub async fn run_sinks(
    config: &Config,
    runs: Vec<SinkRun>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    buildstats_core::telemetry::metrics_handle();
    // One Postgres pool and one copy of the policies for every sink of this process.
    let deleted = Arc::new(
        runtime::deleted::DeletedBuilds::connect(config).await.context("the sinks read the register of deleted builds in Postgres")?,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut checks: Vec<ReadyCheck> = Vec::new();
    let mut tasks: Vec<BoxFuture<'static, anyhow::Result<()>>> = Vec::new();
    for run in runs {
        let stop = wait_for(stop_rx.clone());
        let deleted = deleted.clone();
        match run.name {
            SinkName::DynamoDb => {
                let sink = Arc::new(DynamoDbSink::from_config(config).await);
                checks.push(ready_check(sink.clone()));
                let config = config.clone();
                tasks.push(Box::pin(async move { runtime::run(&config, sink, &run.group, None, deleted, stop).await }));
            }
            SinkName::S3 => {
                let sink = Arc::new(S3Sink::from_config(config).await);
                checks.push(ready_check(sink.clone()));
                let stage = Some(sink.stage());
                let config = config.clone();
                tasks.push(Box::pin(async move { runtime::run(&config, sink, &run.group, stage, deleted, stop).await }));
            }
            SinkName::OpenSearch => {
                let sink = Arc::new(OpenSearchSink::from_config(config)?);
                checks.push(ready_check(sink.clone()));
                let config = config.clone();
                tasks.push(Box::pin(async move { runtime::run(&config, sink, &run.group, None, deleted, stop).await }));
            }
            SinkName::InfluxDb => {
                let sink = Arc::new(InfluxDbSink::from_config(config)?);
                checks.push(ready_check(sink.clone()));
                let config = config.clone();
                tasks.push(Box::pin(async move { runtime::run(&config, sink, &run.group, None, deleted, stop).await }));
            }
        }
    }
    let ready: ReadyCheck = Arc::new(move || {
        let checks = checks.clone();
        Box::pin(async move {
            for check in checks {
                check().await?;
            }
            Ok(())
        })
    });
    let listener = tokio::net::TcpListener::bind(&config.sinks.listen)
        .await
        .with_context(|| format!("cannot listen on {} (sinks.listen; give each sink process its own)", config.sinks.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "sink probes and metrics listening");
    let ops_stop = wait_for(stop_rx.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, ops_router(ready)).with_graceful_shutdown(ops_stop).await;
    });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let results = futures::future::join_all(tasks).await;
    for r in results {
        r?;
    }
    Ok(())
}

fn wait_for(mut rx: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    async move {
        while !*rx.borrow() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

fn ready_check<S: Sink>(sink: Arc<S>) -> ReadyCheck {
    Arc::new(move || {
        let sink = sink.clone();
        Box::pin(async move {
            tokio::time::timeout(Duration::from_secs(5), sink.check_ready())
                .await
                .map_err(|_| format!("{} store did not answer within 5 s", sink.name()))?
        })
    })
}
