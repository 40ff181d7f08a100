//! Validated names of tenants and runs, and the build key built from them.
//!
//! Everything that becomes part of a Kafka key or, later, a storage key goes through these
//! types first, so an untrusted string can never smuggle a `/` or `..` into a key.

use std::fmt;

/// An org or repo slug: `[A-Za-z0-9_-]{1,100}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NameError {
    #[error("{what} {value:?} is not valid: use 1 to {max} characters from A-Z a-z 0-9 _ -")]
    Slug { what: &'static str, value: String, max: usize },
    #[error("run id {0:?} is not valid: 1 to 256 characters, no '/', '.', whitespace or control characters")]
    RunId(String),
}

const MAX_SLUG: usize = 100;
const MAX_RUN_ID: usize = 256;

impl Slug {
    pub fn parse(what: &'static str, value: &str) -> Result<Slug, NameError> {
        let ok = !value.is_empty()
            && value.len() <= MAX_SLUG
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Slug(value.to_string()))
        } else {
            Err(NameError::Slug { what, value: truncate(value), max: MAX_SLUG })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Pants run id (`pants_run_2023_04_12_15_29_01_123_<hex>`). The protocol only promises
/// `[^/.]+`; we also refuse whitespace, control characters and overlong ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunId(String);

impl RunId {
    pub fn parse(value: &str) -> Result<RunId, NameError> {
        let ok = !value.is_empty()
            && value.len() <= MAX_RUN_ID
            && !value.chars().any(|c| c == '/' || c == '.' || c.is_whitespace() || c.is_control());
        if ok {
            Ok(RunId(value.to_string()))
        } else {
            Err(NameError::RunId(truncate(value)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn truncate(value: &str) -> String {
    value.chars().take(120).collect()
}

/// The Kafka key of every record of one build: `{org}/{repo}/{run_id}`. None of the three
/// parts can contain `/`, so the key splits back unambiguously.
/// Escape an untrusted name into one storage key segment: every byte outside
/// `[A-Za-z0-9_-]` becomes `%XX`. Injective (two names never share a segment), and `.`, `/`
/// and `%`-sequences of the input cannot survive, so the result can never climb out of the
/// prefix it is joined to. Empty names become `%00`.
pub fn escape_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// Whether a segment is already in the [`escape_segment`] alphabet (what a reader may
/// accept from the topic as a storage segment).
pub fn is_escaped_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 1024
        && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'%')
}

pub fn build_key(org: &Slug, repo: &Slug, run_id: &RunId) -> String {
    format!("{org}/{repo}/{run_id}")
}

/// Split a build key back into its validated parts.
pub fn parse_build_key(key: &str) -> Result<(Slug, Slug, RunId), NameError> {
    let mut parts = key.splitn(3, '/');
    let org = Slug::parse("org", parts.next().unwrap_or(""))?;
    let repo = Slug::parse("repo", parts.next().unwrap_or(""))?;
    let run_id = RunId::parse(parts.next().unwrap_or(""))?;
    Ok((org, repo, run_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_segments_cannot_climb_out_of_their_prefix() {
        assert_eq!(escape_segment("pants_run_2021-09"), "pants_run_2021-09");
        assert_eq!(escape_segment("pants_run_log"), "pants_run_log");
        assert_eq!(escape_segment("../../x"), "%2E%2E%2F%2E%2E%2Fx");
        assert_eq!(escape_segment("a%2Fb"), "a%252Fb");
        assert_eq!(escape_segment(""), "%00");
        assert_ne!(escape_segment("a.b"), escape_segment("a%2Eb"), "escaping is injective");
        assert!(escape_segment("dist/coverage.xml").bytes().all(|b| b.is_ascii_alphanumeric() || b"%_-".contains(&b)));
        assert!(is_escaped_segment(&escape_segment("ünï/..")));
        assert!(!is_escaped_segment("a/b") && !is_escaped_segment("..") && !is_escaped_segment(""));
    }

    #[test]
    fn slugs_allow_only_the_documented_alphabet() {
        assert!(Slug::parse("org", "acme_Co-1").is_ok());
        for bad in ["", "a/b", "a.b", "..", "a b", "ünï", &"x".repeat(101)] {
            assert!(Slug::parse("org", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_ids_refuse_separators_and_dots() {
        assert!(RunId::parse("pants_run_2023_04_12_15_29_01_123_0123abcd").is_ok());
        for bad in ["", "a/b", "..", "a.b", "a\nb", "a b", &"r".repeat(257)] {
            assert!(RunId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn build_keys_round_trip() {
        let (o, r, id) = (Slug::parse("org", "o").unwrap(), Slug::parse("repo", "r").unwrap(), RunId::parse("x").unwrap());
        let key = build_key(&o, &r, &id);
        assert_eq!(key, "o/r/x");
        assert_eq!(parse_build_key(&key).unwrap(), (o, r, id));
        assert!(parse_build_key("o/r").is_err());
        assert!(parse_build_key("o/r/x/y").is_err());
    }
}
