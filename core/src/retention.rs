//! Retention policies in Postgres: one per repo at most (no policy = keep forever), and the
//! lease a retention worker replica takes on a policy before a pass, so that replicas share
//! the policies without repeating each other's work.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::db::{self, DbError};
use crate::tenancy::Slug;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub org: String,
    pub repo: String,
    pub repo_id: Uuid,
    pub retention_days: i32,
    pub period_minutes: i32,
    pub dry_run: bool,
    pub updated_at: DateTime<Utc>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_run_builds: Option<i64>,
    pub last_run_dry: Option<bool>,
}

/// The policy query with a fixed tail (static SQL: nothing from a caller is spliced in).
macro_rules! select_policies {
    ($rest:literal) => {
        concat!(
            "SELECT o.slug AS org, r.slug AS repo, p.repo_id, p.retention_days, p.period_minutes, p.dry_run, ",
            "p.updated_at, p.last_run_at, p.last_run_builds, p.last_run_dry ",
            "FROM retention_policies p JOIN repos r ON r.id = p.repo_id JOIN orgs o ON o.id = r.org_id ",
            $rest
        )
    };
}

fn policy(row: &sqlx::postgres::PgRow) -> Result<Policy, sqlx::Error> {
    Ok(Policy {
        org: row.try_get("org")?,
        repo: row.try_get("repo")?,
        repo_id: row.try_get("repo_id")?,
        retention_days: row.try_get("retention_days")?,
        period_minutes: row.try_get("period_minutes")?,
        dry_run: row.try_get("dry_run")?,
        updated_at: row.try_get("updated_at")?,
        last_run_at: row.try_get("last_run_at")?,
        last_run_builds: row.try_get("last_run_builds")?,
        last_run_dry: row.try_get("last_run_dry")?,
    })
}

/// Create or replace the repo's policy (the org and repo are created when missing). A changed
/// policy is due at once.
pub async fn set(pool: &PgPool, org: &Slug, repo: &Slug, days: i32, period_minutes: i32, dry_run: bool) -> Result<Policy, DbError> {
    let ids = db::ensure_repo(pool, org, repo).await?;
    sqlx::query(
        "INSERT INTO retention_policies (repo_id, retention_days, period_minutes, dry_run) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (repo_id) DO UPDATE SET retention_days = $2, period_minutes = $3, dry_run = $4, updated_at = now(), last_run_at = NULL",
    )
    .bind(ids.repo_id)
    .bind(days)
    .bind(period_minutes)
    .bind(dry_run)
    .execute(pool)
    .await?;
    Ok(show(pool, Some((org, repo))).await?.remove(0))
}

/// Remove the repo's policy; false when it had none.
pub async fn unset(pool: &PgPool, org: &Slug, repo: &Slug) -> Result<bool, DbError> {
    let done = sqlx::query(
        "DELETE FROM retention_policies p USING repos r, orgs o WHERE p.repo_id = r.id AND r.org_id = o.id AND o.slug = $1 AND r.slug = $2",
    )
    .bind(org.as_str())
    .bind(repo.as_str())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Every policy, or the one of a repo.
pub async fn show(pool: &PgPool, only: Option<(&Slug, &Slug)>) -> Result<Vec<Policy>, DbError> {
    let rows = match only {
        Some((org, repo)) => {
            sqlx::query(select_policies!("WHERE o.slug = $1 AND r.slug = $2")).bind(org.as_str()).bind(repo.as_str()).fetch_all(pool).await?
        }
        None => sqlx::query(select_policies!("ORDER BY o.slug, r.slug")).fetch_all(pool).await?,
    };
    Ok(rows.iter().map(policy).collect::<Result<_, _>>()?)
}

/// Take the lease of every policy that is due (never run since it was set, or its period
/// passed since the last pass) and not leased by a live replica. Each policy goes to exactly
/// one caller.
pub async fn claim_due(pool: &PgPool, owner: &str, lease_seconds: i64) -> Result<Vec<Policy>, DbError> {
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE retention_policies SET lease_owner = $1, lease_until = now() + make_interval(secs => $2) \
         WHERE (lease_until IS NULL OR lease_until < now()) \
           AND (last_run_at IS NULL OR last_run_at + make_interval(mins => period_minutes) <= now()) \
         RETURNING repo_id",
    )
    .bind(owner)
    .bind(lease_seconds as f64)
    .fetch_all(pool)
    .await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(select_policies!("WHERE p.repo_id = ANY($1) ORDER BY o.slug, r.slug")).bind(&claimed).fetch_all(pool).await?;
    Ok(rows.iter().map(policy).collect::<Result<_, _>>()?)
}

/// Record a finished pass and give the lease back (only if this owner still holds it).
pub async fn finish(pool: &PgPool, repo_id: Uuid, owner: &str, builds: i64, dry_run: bool) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE retention_policies SET lease_owner = NULL, lease_until = NULL, last_run_at = now(), last_run_builds = $3, last_run_dry = $4 \
         WHERE repo_id = $1 AND lease_owner = $2",
    )
    .bind(repo_id)
    .bind(owner)
    .bind(builds)
    .bind(dry_run)
    .execute(pool)
    .await?;
    Ok(())
}

/// Give a lease back without recording a pass (a failed pass is retried at the next tick).
pub async fn release(pool: &PgPool, repo_id: Uuid, owner: &str) -> Result<(), DbError> {
    sqlx::query("UPDATE retention_policies SET lease_owner = NULL, lease_until = NULL WHERE repo_id = $1 AND lease_owner = $2")
        .bind(repo_id)
        .bind(owner)
        .execute(pool)
        .await?;
    Ok(())
}

/// Remember builds as deleted (idempotent): sinks drop any later record of them.
pub async fn record_deleted(pool: &PgPool, build_keys: &[String], reason: &str) -> Result<(), DbError> {
    if build_keys.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO deleted_builds (build_key, reason) SELECT k, $2 FROM unnest($1::text[]) AS k ON CONFLICT (build_key) DO NOTHING")
        .bind(build_keys)
        .bind(reason)
        .execute(pool)
        .await?;
    Ok(())
}

/// Which of these builds were deleted.
pub async fn deleted_among(pool: &PgPool, build_keys: &[String]) -> Result<Vec<String>, DbError> {
    if build_keys.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar("SELECT build_key FROM deleted_builds WHERE build_key = ANY($1)").bind(build_keys).fetch_all(pool).await?)
}

/// Forget deletions older than `days` (the register stays bounded). Returns how many.
pub async fn forget_deleted(pool: &PgPool, days: i32) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM deleted_builds WHERE deleted_at < now() - make_interval(days => $1)").bind(days).execute(pool).await?;
    Ok(done.rows_affected())
}

/// The retention days of every repo whose policy deletes (dry runs excluded), by `{org}/{repo}`.
pub async fn deleting_policies(pool: &PgPool) -> Result<std::collections::HashMap<String, i32>, DbError> {
    let rows = sqlx::query(select_policies!("WHERE NOT p.dry_run")).fetch_all(pool).await?;
    let mut out = std::collections::HashMap::new();
    for row in &rows {
        let p = policy(row)?;
        out.insert(format!("{}/{}", p.org, p.repo), p.retention_days);
    }
    Ok(out)
}
