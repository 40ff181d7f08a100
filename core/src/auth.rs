//! Who is calling: bearer token → [`Principal`], with revocation honoured within
//! `auth.revocation_check_seconds`.
//!
//! Every request checks the signature (no I/O) and then the long-lived token's row in
//! Postgres through a short-lived cache: the row must exist, be unrevoked, unexpired, and
//! (for a refresh token presented directly) hash to the same SHA-256. The cache keeps the hot
//! path free of database round trips while bounding how long a revoked token still works.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::AuthConfig;
use crate::db::{self, DbError, NewToken, RepoIds, TokenRecord};
use crate::tenancy::Slug;
use crate::tokens::{Claims, Scope, Signer, TokenError, TokenKind, ISSUER};

/// An authenticated caller: one org/repo, one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub org: String,
    pub repo: String,
    pub ids: RepoIds,
    pub scope: Scope,
    pub ci: bool,
    /// The long-lived token this access derives from.
    pub refresh_jid: Uuid,
    pub kind: TokenKind,
    pub user: String,
}

impl Principal {
    /// Refuse unless the principal may act on `org/repo` with `needed`.
    pub fn require(&self, org: &str, repo: &str, needed: Scope) -> Result<(), AuthError> {
        if self.org != org || self.repo != repo {
            return Err(AuthError::WrongTenant);
        }
        self.require_scope(needed)
    }

    /// Refuse unless the principal's scope allows `needed` (on its own repo, e.g. where the
    /// token itself names the tenant, as for OTLP exports).
    pub fn require_scope(&self, needed: Scope) -> Result<(), AuthError> {
        if needed == Scope::Ingest && self.scope != Scope::Ingest {
            return Err(AuthError::WrongScope);
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("invalid token: {0}")]
    Token(#[from] TokenError),
    #[error("the token is not known to this server")]
    Unknown,
    #[error("the token was revoked")]
    Revoked,
    #[error("the token does not give access to this repository")]
    WrongTenant,
    #[error("the token is read-only: ask for an ingest token (`buildstats admin token create --scope ingest`)")]
    WrongScope,
    #[error("only CI tokens may impersonate a user (`buildstats admin token create --ci`)")]
    NotCi,
    #[error("this endpoint takes a long-lived token, not an access token")]
    NotRefresh,
    #[error("the token store is unavailable: {0}")]
    Unavailable(#[from] DbError),
}

impl AuthError {
    /// True when the caller should retry later (503) rather than give up (403).
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Unavailable(_))
    }
}

/// Pull the token out of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

struct Cached {
    fetched: Instant,
    record: Option<TokenRecord>,
}

pub struct Authenticator {
    signer: Signer,
    pool: PgPool,
    ttl: Duration,
    access_ttl: chrono::Duration,
    refresh_ttl: chrono::Duration,
    cache: Mutex<HashMap<Uuid, Cached>>,
}

/// A freshly minted long-lived token.
pub struct CreatedToken {
    pub token: String,
    pub jid: Uuid,
    pub expires_at: DateTime<Utc>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, pool: PgPool) -> Result<Authenticator, TokenError> {
        Ok(Authenticator {
            signer: Signer::from_config(&config.keys)?,
            pool,
            ttl: Duration::from_secs(config.revocation_check_seconds),
            access_ttl: chrono::Duration::minutes(config.access_token_minutes),
            refresh_ttl: chrono::Duration::days(config.refresh_token_days),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Create the org/repo if missing and mint a recorded long-lived token.
    pub async fn create_token(
        &self,
        org: &Slug,
        repo: &Slug,
        scope: Scope,
        ci: bool,
        description: &str,
        ttl_days: Option<i64>,
    ) -> Result<CreatedToken, DbError> {
        let ids = db::ensure_repo(&self.pool, org, repo).await?;
        let jid = Uuid::new_v4();
        let now = Utc::now();
        let expires_at = now + ttl_days.map(chrono::Duration::days).unwrap_or(self.refresh_ttl);
        let claims = Claims {
            iss: ISSUER.into(),
            jid: jid.to_string(),
            pjid: None,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            typ: TokenKind::Refresh,
            org: org.to_string(),
            repo: repo.to_string(),
            scope,
            ci,
            toolchain_user: if description.is_empty() { format!("{org}/{repo}") } else { description.to_string() },
            toolchain_repo: format!("{org}/{repo}"),
        };
        let token = self.signer.sign(&claims);
        db::insert_token(
            &self.pool,
            &NewToken {
                jid,
                repo_id: ids.repo_id,
                scope,
                ci,
                kid: self.signer.signing_kid(),
                token_sha256: sha256(&token),
                description,
                expires_at,
            },
        )
        .await?;
        Ok(CreatedToken { token, jid, expires_at })
    }

    /// Verify a bearer token of either kind.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.signer.verify(token)?;
        let refresh_jid = match claims.typ {
            TokenKind::Refresh => claims.jid.as_str(),
            TokenKind::Access => claims.pjid.as_deref().ok_or(AuthError::Unknown)?,
        };
        let refresh_jid = Uuid::parse_str(refresh_jid).map_err(|_| AuthError::Unknown)?;
        let record = self.record(refresh_jid).await?.ok_or(AuthError::Unknown)?;
        if record.revoked {
            return Err(AuthError::Revoked);
        }
        if record.expires_at < Utc::now() {
            return Err(TokenError::Expired.into());
        }
        if claims.typ == TokenKind::Refresh && record.token_sha256 != sha256(token) {
            return Err(AuthError::Unknown);
        }
        // The row is the authority on tenancy and scope; the claims must agree with it.
        let scope = Scope::parse(&record.scope).ok_or(AuthError::Unknown)?;
        if record.org != claims.org || record.repo != claims.repo || scope != claims.scope || record.ci != claims.ci {
            return Err(AuthError::Unknown);
        }
        Ok(Principal {
            org: record.org,
            repo: record.repo,
            ids: record.ids,
            scope,
            ci: record.ci,
            refresh_jid,
            kind: claims.typ,
            user: claims.toolchain_user,
        })
    }

    /// Trade a long-lived token for an access token. Returns the token and its expiry.
    pub fn issue_access(&self, principal: &Principal) -> Result<(String, DateTime<Utc>), AuthError> {
        if principal.kind != TokenKind::Refresh {
            return Err(AuthError::NotRefresh);
        }
        let now = Utc::now();
        let expires_at = now + self.access_ttl;
        let claims = Claims {
            iss: ISSUER.into(),
            jid: Uuid::new_v4().to_string(),
            pjid: Some(principal.refresh_jid.to_string()),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            typ: TokenKind::Access,
            org: principal.org.clone(),
            repo: principal.repo.clone(),
            scope: principal.scope,
            ci: principal.ci,
            toolchain_user: principal.user.clone(),
            toolchain_repo: format!("{}/{}", principal.org, principal.repo),
        };
        Ok((self.signer.sign(&claims), expires_at))
    }

    async fn record(&self, jid: Uuid) -> Result<Option<TokenRecord>, AuthError> {
        {
            let cache = self.cache.lock().expect("auth cache lock");
            if let Some(hit) = cache.get(&jid) {
                if hit.fetched.elapsed() < self.ttl {
                    return Ok(hit.record.clone());
                }
            }
        }
        let record = db::find_token(&self.pool, jid).await?;
        let mut cache = self.cache.lock().expect("auth cache lock");
        if cache.len() > 100_000 {
            let ttl = self.ttl;
            cache.retain(|_, c| c.fetched.elapsed() < ttl);
        }
        cache.insert(jid, Cached { fetched: Instant::now(), record: record.clone() });
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        assert!(bearer(None).is_err());
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer ")).is_err());
    }

    fn principal(scope: Scope) -> Principal {
        Principal {
            org: "acme".into(),
            repo: "rocket".into(),
            ids: RepoIds { org_id: Uuid::nil(), repo_id: Uuid::nil() },
            scope,
            ci: false,
            refresh_jid: Uuid::nil(),
            kind: TokenKind::Access,
            user: "u".into(),
        }
    }

    #[test]
    fn principals_are_confined_to_their_repo_and_scope() {
        let ingest = principal(Scope::Ingest);
        assert!(ingest.require("acme", "rocket", Scope::Ingest).is_ok());
        assert!(ingest.require("acme", "rocket", Scope::Read).is_ok());
        assert!(matches!(ingest.require("acme", "other", Scope::Read), Err(AuthError::WrongTenant)));
        assert!(matches!(ingest.require("evil", "rocket", Scope::Read), Err(AuthError::WrongTenant)));
        let read = principal(Scope::Read);
        assert!(matches!(read.require("acme", "rocket", Scope::Ingest), Err(AuthError::WrongScope)));
        assert!(read.require("acme", "rocket", Scope::Read).is_ok());
    }
}
