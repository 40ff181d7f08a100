//! Deleted builds stay deleted: the runtime drops every later record of a build a tombstone
//! deleted, and every record of a build already older than its repo's retention policy.
//!
//! Why in the sinks and not only in the gateway: the topic itself can hold a record of a
//! deleted build *after* its tombstone (a late workunit update, the plugin re-uploading an old
//! run in a batch, a record redriven from the dead-letter topic), and a replay re-reads all of
//! them. Only a reader that knows the build was deleted can keep it out of a store, on first
//! delivery and on every replay alike.
//!
//! Two checks per batch, one Postgres round trip:
//! - **deleted**: the build is in `deleted_builds`. A tombstone's build is recorded there
//!   before any record of the batch is written (the retention worker also records it before
//!   publishing), so a record after the tombstone is dropped in this batch and every later one.
//! - **expired**: a run start or final report whose build started more than the repo's
//!   retention days (plus [`ARRIVAL_GRACE_DAYS`]) ago, under a policy that deletes. The grace
//!   keeps the sinks agreeing near the cut-off: a build just past it is written by every sink
//!   and tombstoned by the worker's next pass, never half-written. An expired build is
//!   recorded as deleted, so its later records without a start time are dropped too.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use buildstats_core::config::Config;
use buildstats_core::{db, retention};
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::sink::Transient;

/// A build is dropped on arrival only when it is this many days past its repo's cut-off.
pub const ARRIVAL_GRACE_DAYS: i64 = 1;
/// How stale the sinks' copy of the policies may be.
pub const POLICY_REFRESH: Duration = Duration::from_secs(10);
const DAY_MS: i64 = 86_400_000;

/// Why a build's records are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Deleted,
    Expired,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Deleted => "deleted",
            Dropped::Expired => "expired",
        }
    }
}

/// One record of a batch, as the check sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `{org}/{repo}/{run_id}`.
    pub build_key: String,
    /// The build's start (epoch µs) when the record carries its run record.
    pub started_at_us: Option<i64>,
}

pub struct DeletedBuilds {
    pool: PgPool,
    /// Retention days of the repos whose policy deletes, by `{org}/{repo}`, and when read.
    policies: Mutex<(Option<Instant>, HashMap<String, i32>)>,
}

impl DeletedBuilds {
    pub async fn connect(config: &Config) -> anyhow::Result<DeletedBuilds> {
        let pool = db::connect(&config.postgres).await?;
        db::check_migrated(&pool).await?;
        Ok(DeletedBuilds { pool, policies: Mutex::new((None, HashMap::new())) })
    }

    /// Record the batch's tombstones, then say which builds of `seen` to drop and why.
    pub async fn to_drop(&self, tombstones: &[String], seen: &[Seen], now_ms: i64) -> Result<HashMap<String, Dropped>, Transient> {
        retention::record_deleted(&self.pool, tombstones, "tombstone").await.map_err(failed)?;
        let out = self.judge(seen, now_ms).await?;
        let expired: Vec<String> = out.iter().filter(|(_, why)| **why == Dropped::Expired).map(|(k, _)| k.clone()).collect();
        // An expired build is recorded as deleted too: its later records that carry no start
        // time (workunits, artifacts) are then dropped as well, and nothing of it is written.
        retention::record_deleted(&self.pool, &expired, "expired").await.map_err(failed)?;
        Ok(out)
    }

    /// Which builds of `seen` are deleted or past their policy, recording nothing (a reindex
    /// sees all of a build's records at once, so it has no later records to catch).
    pub async fn judge(&self, seen: &[Seen], now_ms: i64) -> Result<HashMap<String, Dropped>, Transient> {
        if seen.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = seen.iter().map(|s| s.build_key.clone()).collect::<HashSet<_>>().into_iter().collect();
        let mut out: HashMap<String, Dropped> =
            retention::deleted_among(&self.pool, &keys).await.map_err(failed)?.into_iter().map(|k| (k, Dropped::Deleted)).collect();
        let policies = self.policies().await.map_err(failed)?;
        for s in seen {
            if out.contains_key(&s.build_key) {
                continue;
            }
            if let (Some(started), Some(days)) = (s.started_at_us, repo_of(&s.build_key).and_then(|r| policies.get(r))) {
                if expired_on_arrival(started, *days, now_ms) {
                    out.insert(s.build_key.clone(), Dropped::Expired);
                }
            }
        }
        Ok(out)
    }

    async fn policies(&self) -> Result<HashMap<String, i32>, buildstats_core::db::DbError> {
        let mut cached = self.policies.lock().await;
        if cached.0.is_none_or(|at| at.elapsed() >= POLICY_REFRESH) {
            cached.1 = retention::deleting_policies(&self.pool).await?;
            cached.0 = Some(Instant::now());
        }
        Ok(cached.1.clone())
    }
}

fn failed(e: buildstats_core::db::DbError) -> Transient {
    Transient(format!("postgres (deleted builds): {e}"))
}

/// `{org}/{repo}` of a build key.
fn repo_of(build_key: &str) -> Option<&str> {
    build_key.rfind('/').map(|i| &build_key[..i])
}

/// A build that started before now − (days + grace) is past its policy on arrival.
pub fn expired_on_arrival(started_at_us: i64, retention_days: i32, now_ms: i64) -> bool {
    let cutoff_ms = now_ms - (i64::from(retention_days) + ARRIVAL_GRACE_DAYS) * DAY_MS;
    started_at_us.div_euclid(1000) < cutoff_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_expired_on_arrival_only_past_the_policy_and_the_grace() {
        let now_ms = 100 * DAY_MS;
        let us = |ms: i64| ms * 1000;
        // 30-day policy: cut-off at day 70, dropped on arrival before day 69.
        assert!(expired_on_arrival(us(68 * DAY_MS), 30, now_ms));
        assert!(expired_on_arrival(us(69 * DAY_MS - 1), 30, now_ms));
        assert!(!expired_on_arrival(us(69 * DAY_MS), 30, now_ms));
        assert!(!expired_on_arrival(us(99 * DAY_MS), 30, now_ms));
    }

    #[test]
    fn the_repo_of_a_build_key_is_its_first_two_parts() {
        assert_eq!(repo_of("acme/rocket/run_1"), Some("acme/rocket"));
        assert_eq!(repo_of("nokey"), None);
    }
}
