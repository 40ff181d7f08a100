//! The service's own state in Postgres: orgs, repos, tokens (and, later, retention policies).
//! Builds are never stored here.

use chrono::{DateTime, Utc};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use uuid::Uuid;

use crate::config::PostgresConfig;
use crate::tenancy::Slug;
use crate::tokens::Scope;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot reach Postgres at {url}: {source}. Is it running? (`dev/services up` starts one for development)")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("Postgres query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("the database has no migrations applied yet: run `buildstats admin migrate`")]
    NotMigrated,
}

/// Connect to the configured database, which must exist (see [`migrate`]).
pub async fn connect(config: &PostgresConfig) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&config.url)
        .await
        .map_err(|source| DbError::Connect { url: redact(&config.url), source })
}

/// Create the database if missing and apply every pending migration. Idempotent.
/// Returns how many migrations were newly applied.
pub async fn migrate(config: &PostgresConfig) -> Result<usize, DbError> {
    let exists = sqlx::Postgres::database_exists(&config.url)
        .await
        .map_err(|source| DbError::Connect { url: redact(&config.url), source })?;
    if !exists {
        sqlx::Postgres::create_database(&config.url).await?;
    }
    let pool = connect(config).await?;
    let before = applied_count(&pool).await.unwrap_or(0);
    MIGRATOR.run(&pool).await?;
    let after = applied_count(&pool).await?;
    pool.close().await;
    Ok(after.saturating_sub(before))
}

async fn applied_count(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await?;
    Ok(n as usize)
}

/// Fail fast, with the command to run, when the schema is missing.
pub async fn check_migrated(pool: &PgPool) -> Result<(), DbError> {
    match applied_count(pool).await {
        Ok(n) if n >= MIGRATOR.iter().count() => Ok(()),
        Ok(_) => Err(DbError::NotMigrated),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Err(DbError::NotMigrated),
        Err(e) => Err(e.into()),
    }
}

/// Is the database answering? (readiness probes)
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Hide the password of a connection URL in messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoIds {
    pub org_id: Uuid,
    pub repo_id: Uuid,
}

/// Create the org and repo if missing; return their ids.
pub async fn ensure_repo(pool: &PgPool, org: &Slug, repo: &Slug) -> Result<RepoIds, DbError> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO orgs (id, slug) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING")
        .bind(Uuid::new_v4())
        .bind(org.as_str())
        .execute(&mut *tx)
        .await?;
    let org_id: Uuid = sqlx::query_scalar("SELECT id FROM orgs WHERE slug = $1")
        .bind(org.as_str())
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO repos (id, org_id, slug) VALUES ($1, $2, $3) ON CONFLICT (org_id, slug) DO NOTHING")
        .bind(Uuid::new_v4())
        .bind(org_id)
        .bind(repo.as_str())
        .execute(&mut *tx)
        .await?;
    let repo_id: Uuid = sqlx::query_scalar("SELECT id FROM repos WHERE org_id = $1 AND slug = $2")
        .bind(org_id)
        .bind(repo.as_str())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(RepoIds { org_id, repo_id })
}

pub struct NewToken<'a> {
    pub jid: Uuid,
    pub repo_id: Uuid,
    pub scope: Scope,
    pub ci: bool,
    pub kid: &'a str,
    pub token_sha256: [u8; 32],
    pub description: &'a str,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert_token(pool: &PgPool, token: &NewToken<'_>) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO tokens (jid, repo_id, scope, ci, kid, token_sha256, description, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(token.jid)
    .bind(token.repo_id)
    .bind(token.scope.as_str())
    .bind(token.ci)
    .bind(token.kid)
    .bind(&token.token_sha256[..])
    .bind(token.description)
    .bind(token.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Mark a token revoked. Returns false when no such token exists.
pub async fn revoke_token(pool: &PgPool, jid: Uuid) -> Result<bool, DbError> {
    let done = sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE jid = $1")
        .bind(jid)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What the authenticator needs to know about a long-lived token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub jid: Uuid,
    pub org: String,
    pub repo: String,
    pub ids: RepoIds,
    pub scope: String,
    pub ci: bool,
    pub token_sha256: Vec<u8>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

pub async fn find_token(pool: &PgPool, jid: Uuid) -> Result<Option<TokenRecord>, DbError> {
    let row = sqlx::query(
        "SELECT t.jid, o.slug AS org, r.slug AS repo, o.id AS org_id, r.id AS repo_id, t.scope, t.ci,
                t.token_sha256, t.expires_at, t.revoked_at IS NOT NULL AS revoked
           FROM tokens t JOIN repos r ON r.id = t.repo_id JOIN orgs o ON o.id = r.org_id
          WHERE t.jid = $1",
    )
    .bind(jid)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => None,
        Some(row) => Some(TokenRecord {
            jid: row.try_get("jid")?,
            org: row.try_get("org")?,
            repo: row.try_get("repo")?,
            ids: RepoIds { org_id: row.try_get("org_id")?, repo_id: row.try_get("repo_id")? },
            scope: row.try_get("scope")?,
            ci: row.try_get("ci")?,
            token_sha256: row.try_get("token_sha256")?,
            expires_at: row.try_get("expires_at")?,
            revoked: row.try_get("revoked")?,
        }),
    })
}

/// Remember that a trace of this repo had an ERROR span (idempotent).
pub async fn mark_trace_failed(pool: &PgPool, repo_id: Uuid, trace_id: &[u8]) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO otlp_trace_errors (trace_id, repo_id) VALUES ($1, $2)
         ON CONFLICT (trace_id) DO UPDATE SET updated_at = now() WHERE otlp_trace_errors.repo_id = $2",
    )
    .bind(trace_id)
    .bind(repo_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Has a run start already been reported for this repo's trace?
pub async fn trace_started(pool: &PgPool, repo_id: Uuid, trace_id: &[u8]) -> Result<bool, DbError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM otlp_trace_starts WHERE trace_id = $1 AND repo_id = $2")
        .bind(trace_id)
        .bind(repo_id)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Record that the run start of this trace was acknowledged (idempotent).
pub async fn mark_trace_started(pool: &PgPool, repo_id: Uuid, trace_id: &[u8]) -> Result<(), DbError> {
    sqlx::query("INSERT INTO otlp_trace_starts (trace_id, repo_id) VALUES ($1, $2) ON CONFLICT (trace_id) DO NOTHING")
        .bind(trace_id)
        .bind(repo_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A span that may be a goal of its run (known for sure once the root shows its parent is the root).
#[derive(Debug, Clone, PartialEq)]
pub struct GoalCandidate {
    pub parent_id: String,
    pub goal: String,
    pub workunit_id: String,
    pub start_usecs: i64,
    pub end_usecs: i64,
}

pub async fn record_goal_candidates(
    pool: &PgPool,
    repo_id: Uuid,
    trace_id: &[u8],
    candidates: &[GoalCandidate],
) -> Result<(), DbError> {
    for c in candidates {
        sqlx::query(
            "INSERT INTO otlp_trace_goals (trace_id, repo_id, parent_id, goal, workunit_id, start_usecs, end_usecs)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (trace_id, workunit_id) DO NOTHING",
        )
        .bind(trace_id)
        .bind(repo_id)
        .bind(&c.parent_id)
        .bind(&c.goal)
        .bind(&c.workunit_id)
        .bind(c.start_usecs)
        .bind(c.end_usecs)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Goal candidates recorded for this repo's trace whose parent is `parent_id` (the root).
pub async fn goal_candidates(pool: &PgPool, repo_id: Uuid, trace_id: &[u8], parent_id: &str) -> Result<Vec<GoalCandidate>, DbError> {
    let rows = sqlx::query(
        "SELECT parent_id, goal, workunit_id, start_usecs, end_usecs FROM otlp_trace_goals
          WHERE trace_id = $1 AND repo_id = $2 AND parent_id = $3 ORDER BY start_usecs, workunit_id",
    )
    .bind(trace_id)
    .bind(repo_id)
    .bind(parent_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(GoalCandidate {
                parent_id: r.try_get("parent_id")?,
                goal: r.try_get("goal")?,
                workunit_id: r.try_get("workunit_id")?,
                start_usecs: r.try_get("start_usecs")?,
                end_usecs: r.try_get("end_usecs")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::from)
}

/// Did an earlier batch of this repo's trace carry an ERROR span? Also drops stale state.
pub async fn trace_failed(pool: &PgPool, repo_id: Uuid, trace_id: &[u8]) -> Result<bool, DbError> {
    sqlx::query("DELETE FROM otlp_trace_errors WHERE updated_at < now() - interval '2 days'")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM otlp_trace_goals WHERE updated_at < now() - interval '2 days'")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM otlp_trace_starts WHERE updated_at < now() - interval '2 days'")
        .execute(pool)
        .await?;
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM otlp_trace_errors WHERE trace_id = $1 AND repo_id = $2")
        .bind(trace_id)
        .bind(repo_id)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_in_messages() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
