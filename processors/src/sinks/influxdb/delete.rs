//! The InfluxDB sink deletes a build: its points are found by the `run_id` field of its
//! `builds` point (within its org and repo), then every measurement's points at that time
//! with those tags are deleted. No build point (never finished, or already deleted): done.

use buildstats_core::tenancy::escape_segment;

use super::client::{quote_ident, quote_literal, InfluxClient, InfluxError};
use super::points::{BUILDS, MEASUREMENTS};
use crate::sink::BuildKey;

/// The statement finding the time of `key`'s points.
pub fn find_statement(key: &BuildKey) -> String {
    format!(
        "SELECT \"run_id\" FROM {} WHERE \"org\" = {} AND \"repo\" = {} AND \"run_id\" = {}",
        quote_ident(BUILDS),
        quote_literal(&key.org),
        quote_literal(&key.repo),
        quote_literal(&key.run_id)
    )
}

/// The statements deleting every point of `key` at `time_ns`.
pub fn delete_statements(key: &BuildKey, time_ns: i64) -> String {
    MEASUREMENTS
        .iter()
        .map(|m| {
            format!(
                "DELETE FROM {} WHERE \"org\" = {} AND \"repo\" = {} AND time = {time_ns}",
                quote_ident(m),
                quote_literal(&key.org),
                quote_literal(&key.repo)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn delete_build(client: &InfluxClient, key: &BuildKey) -> Result<usize, InfluxError> {
    let found = client.query(&find_statement(key), Some("ns"), false).await?;
    let mut times: Vec<i64> = Vec::new();
    for series in super::client::rows(&found) {
        for row in series["values"].as_array().into_iter().flatten() {
            if let Some(t) = row[0].as_i64() {
                times.push(t);
            }
        }
    }
    times.sort_unstable();
    times.dedup();
    for t in &times {
        client.query(&delete_statements(key, *t), None, true).await?;
    }
    tracing::debug!(build = %escape_segment(&key.joined()), points_at = times.len(), "influxdb points deleted");
    Ok(times.len())
}
