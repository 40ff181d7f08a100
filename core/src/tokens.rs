//! Token format: JWTs signed with HS256 by a server key named in the `kid` header.
//!
//! Two kinds share one claim set. A long-lived **refresh** token is what `admin token create`
//! prints and what the Pants plugin keeps; it is recorded (hashed) in Postgres under its
//! `jid`. An **access** token is what the refresh endpoint hands out for 45 minutes; it is not
//! stored, it names its refresh token in `pjid`, so revoking the refresh token kills it too.
//! The plugin itself reads `exp`, `toolchain_user`, `toolchain_repo` and `jid` from the claims.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "buildstats";
const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// May write builds (and read them back).
    Ingest,
    /// May only read.
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Refresh,
    Access,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// Id of this token. For a refresh token, its row in `tokens`.
    pub jid: String,
    /// Parent refresh token of an access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pjid: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub typ: TokenKind,
    pub org: String,
    pub repo: String,
    pub scope: Scope,
    /// Only CI tokens may attribute builds to a CI user (`X-Toolchain-Impersonate`).
    pub ci: bool,
    /// Read by the plugin: who the token is for.
    pub toolchain_user: String,
    /// Read by the plugin: `org/repo`.
    pub toolchain_repo: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("auth.keys is empty: set BUILDSTATS_AUTH_KEYS (or [auth] keys) to `kid:secret` with a secret of at least {MIN_SECRET_BYTES} bytes, e.g. `k1:$(openssl rand -hex 32)`")]
    NoKeys,
    #[error("auth.keys entry {0:?} is not `kid:secret` with a secret of at least {MIN_SECRET_BYTES} bytes")]
    BadKey(String),
    #[error("the token is not a JWT signed by this server: {0}")]
    Invalid(String),
    #[error("the token expired")]
    Expired,
    #[error("the token was signed with key {0:?}, which this server no longer knows")]
    UnknownKey(String),
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Signs with the first configured key, verifies with any.
pub struct Signer {
    keys: Vec<Key>,
    validation: Validation,
}

impl Signer {
    /// From `auth.keys`: `kid:secret[,kid:secret...]`.
    pub fn from_config(keys: &str) -> Result<Signer, TokenError> {
        let mut parsed = Vec::new();
        for entry in keys.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || TokenError::BadKey(entry.split(':').next().unwrap_or("").to_string() + ":…");
            let (kid, secret) = entry.split_once(':').ok_or_else(bad)?;
            if kid.is_empty() || secret.len() < MIN_SECRET_BYTES {
                return Err(bad());
            }
            parsed.push(Key {
                kid: kid.to_string(),
                encoding: EncodingKey::from_secret(secret.as_bytes()).map_err(|_| bad())?,
                decoding: DecodingKey::from_secret(secret.as_bytes()).map_err(|_| bad())?,
            });
        }
        if parsed.is_empty() {
            return Err(TokenError::NoKeys);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.validate_aud = false;
        validation.leeway = 30;
        Ok(Signer { keys: parsed, validation })
    }

    pub fn signing_kid(&self) -> &str {
        &self.keys[0].kid
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("HS256 signing cannot fail")
    }

    /// Check signature, issuer and expiry; return the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let kid = header.kid.ok_or_else(|| TokenError::Invalid("no kid in the header".into()))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey(kid))?;
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:0123456789abcdef0123456789abcdef";
    const K2: &str = "k2:fedcba9876543210fedcba9876543210";

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            jid: "j".into(),
            pjid: None,
            iat: 0,
            exp,
            typ: TokenKind::Refresh,
            org: "acme".into(),
            repo: "rocket".into(),
            scope: Scope::Ingest,
            ci: false,
            toolchain_user: "u".into(),
            toolchain_repo: "acme/rocket".into(),
        }
    }

    fn far() -> i64 {
        chrono::Utc::now().timestamp() + 3600
    }

    #[test]
    fn sign_then_verify_and_rotate_keys() {
        let old = Signer::from_config(K1).unwrap();
        let exp = far();
        let token = old.sign(&claims(exp));
        assert_eq!(old.verify(&token).unwrap(), claims(exp));
        let rotated = Signer::from_config(&format!("{K2},{K1}")).unwrap();
        assert_eq!(rotated.signing_kid(), "k2");
        assert!(rotated.verify(&token).is_ok(), "old tokens verify while the old key is listed");
        let dropped = Signer::from_config(K2).unwrap();
        assert_eq!(dropped.verify(&token).unwrap_err(), TokenError::UnknownKey("k1".into()));
    }

    #[test]
    fn expired_forged_and_garbage_tokens_are_refused() {
        let signer = Signer::from_config(K1).unwrap();
        let expired = signer.sign(&claims(chrono::Utc::now().timestamp() - 3600));
        assert_eq!(signer.verify(&expired).unwrap_err(), TokenError::Expired);
        let forged = Signer::from_config("k1:ffffffffffffffffffffffffffffffff").unwrap().sign(&claims(far()));
        assert!(matches!(signer.verify(&forged), Err(TokenError::Invalid(_))));
        assert!(matches!(signer.verify("not.a.jwt"), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn weak_or_missing_keys_are_a_config_error() {
        assert_eq!(Signer::from_config("").err(), Some(TokenError::NoKeys));
        assert!(matches!(Signer::from_config("k1:short"), Err(TokenError::BadKey(_))));
        assert!(matches!(Signer::from_config("nocolon"), Err(TokenError::BadKey(_))));
    }
}
