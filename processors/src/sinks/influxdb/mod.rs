//! The InfluxDB sink: time series of build indicators ([`points`]) over the v1 write API
//! ([`client`]), for the query API's indicators.
//!
//! Only final reports write points; a build's points all share one time, unique to the
//! build, so writing a report again overwrites the same points (idempotent) and a repeated
//! or late report changes nothing. A tombstone deletes the build's points ([`delete`]).
//!
//! A batch's final reports go in one `/write`, flushed before each tombstone so that the
//! partition order holds. When InfluxDB refuses a write (400), each report is written on its
//! own to find the one it refuses; that one is dead-lettered, the others are written.

pub mod client;
pub mod delete;
pub mod points;

use std::sync::Arc;
use std::time::Duration;

use buildstats_core::config::Config;

use crate::sink::{BatchOutcome, Change, ChangeKind, Rejected, Sink, Transient};
use client::{InfluxClient, InfluxError};

pub const NAME: &str = "influxdb";

pub struct InfluxDbSink {
    client: InfluxClient,
}

/// The client for a config, with the store call timeout of `aws.attempt_timeout_ms`.
pub fn client(config: &Config) -> anyhow::Result<InfluxClient> {
    InfluxClient::new(&config.influxdb, Duration::from_millis(config.aws.attempt_timeout_ms.max(1)))
}

fn transient(e: InfluxError) -> Transient {
    Transient(e.to_string())
}

impl InfluxDbSink {
    pub fn from_config(config: &Config) -> anyhow::Result<InfluxDbSink> {
        Ok(InfluxDbSink { client: client(config)? })
    }

    /// Write the pending reports `(index, lines)`: all at once, or one by one when refused.
    async fn flush(&self, pending: &mut Vec<(usize, Vec<u8>)>, outcomes: &mut [Result<(), Rejected>]) -> Result<(), Transient> {
        if pending.is_empty() {
            return Ok(());
        }
        let all: Vec<u8> = pending.iter().flat_map(|(_, lines)| lines.iter().copied()).collect();
        match self.client.write(all).await {
            Ok(()) => {}
            Err(InfluxError::Refused(_)) => {
                for (i, lines) in pending.iter() {
                    match self.client.write(lines.clone()).await {
                        Ok(()) => {}
                        Err(InfluxError::Refused(why)) => outcomes[*i] = Err(Rejected(why)),
                        Err(e) => return Err(transient(e)),
                    }
                }
            }
            Err(e) => return Err(transient(e)),
        }
        pending.clear();
        Ok(())
    }
}

impl Sink for InfluxDbSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn needs_payloads(&self) -> bool {
        false
    }

    async fn write(&self, batch: Arc<Vec<Change>>) -> BatchOutcome {
        let mut outcomes: Vec<Result<(), Rejected>> = vec![Ok(()); batch.len()];
        let mut pending: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, change) in batch.iter().enumerate() {
            match &change.kind {
                ChangeKind::Ended(event) => match points::final_report(&change.key, event) {
                    Ok(lines) => pending.push((i, lines)),
                    Err(rejected) => outcomes[i] = Err(rejected),
                },
                ChangeKind::Tombstone => {
                    self.flush(&mut pending, &mut outcomes).await?;
                    match delete::delete_build(&self.client, &change.key).await {
                        Ok(_) => {}
                        Err(InfluxError::Refused(why)) => outcomes[i] = Err(Rejected(why)),
                        Err(e) => return Err(transient(e)),
                    }
                }
                // Points come from final reports only.
                ChangeKind::Started(_) | ChangeKind::WorkunitsUpdated(_) | ChangeKind::ArtifactsUploaded(_) => {}
            }
        }
        self.flush(&mut pending, &mut outcomes).await?;
        Ok(outcomes)
    }

    async fn check_ready(&self) -> Result<(), String> {
        self.client.ping().await.map_err(|e| e.to_string())?;
        let answer = self.client.query("SHOW DATABASES", None, false).await.map_err(|e| e.to_string())?;
        let known = client::rows(&answer)
            .iter()
            .flat_map(|s| s["values"].as_array().into_iter().flatten())
            .any(|row| row[0].as_str() == Some(self.client.database()));
        if known {
            Ok(())
        } else {
            Err(format!("influxdb database {} does not exist at {} (run `buildstats admin init-stores`)", self.client.database(), self.client.url()))
        }
    }
}

/// `admin init-stores`: create the database (idempotent in InfluxQL) and check that the
/// configured retention policy exists.
pub async fn ensure_database(client: &InfluxClient, retention_policy: &str) -> anyhow::Result<()> {
    client.query(&format!("CREATE DATABASE {}", client::quote_ident(client.database())), None, true).await?;
    if !retention_policy.is_empty() {
        let answer = client.query(&format!("SHOW RETENTION POLICIES ON {}", client::quote_ident(client.database())), None, false).await?;
        let found = client::rows(&answer)
            .iter()
            .flat_map(|s| s["values"].as_array().into_iter().flatten())
            .any(|row| row[0].as_str() == Some(retention_policy));
        if !found {
            anyhow::bail!(
                "influxdb.retention_policy {retention_policy:?} does not exist on database {}: create it (CREATE RETENTION POLICY \"{retention_policy}\" ON \"{}\" DURATION 90d REPLICATION 1) or leave the setting empty",
                client.database(),
                client.database()
            );
        }
    }
    Ok(())
}
