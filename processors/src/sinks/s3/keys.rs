//! Where a build's objects live in the bucket (pure: no I/O).
//!
//! ```text
//! {s3.prefix}/{org}/{repo}/{run_id escaped}/start.json                       raw start document
//!                                          /final.json                       raw final document
//!                                          /workunits/{event_id}.json        one live update
//!                                          /artifacts/{artifact_id}          content (Pants log, ...)
//!                                          /artifacts/{artifact_id}.descriptor.json
//!                                          /events/{event_id}.avro           archived event (`archive`)
//! ```
//!
//! Org and repo are validated slugs; the run id is escaped with
//! `core::tenancy::escape_segment`; artifact ids and event ids must already be in the escaped
//! alphabet (no `/`, no `.`), so no name from a client can leave its build's prefix.

use buildstats_core::tenancy::{escape_segment, is_escaped_segment};

use crate::sink::{BuildKey, Rejected};

#[derive(Debug, Clone)]
pub struct BuildPrefix(String);

impl BuildPrefix {
    pub fn new(prefix: &str, key: &BuildKey) -> BuildPrefix {
        BuildPrefix(format!("{}{}/{}/{}/", lead(prefix), key.org, key.repo, escape_segment(&key.run_id)))
    }

    /// The prefix itself, ending in `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn start_document(&self) -> String {
        format!("{}start.json", self.0)
    }

    pub fn final_document(&self) -> String {
        format!("{}final.json", self.0)
    }

    pub fn workunits(&self, event_id: &str) -> Result<String, Rejected> {
        Ok(format!("{}workunits/{}.json", self.0, segment("event id", event_id)?))
    }

    pub fn event(&self, event_id: &str) -> Result<String, Rejected> {
        Ok(format!("{}events/{}.avro", self.0, segment("event id", event_id)?))
    }

    pub fn artifact(&self, artifact_id: &str) -> Result<String, Rejected> {
        Ok(format!("{}artifacts/{}", self.0, segment("artifact id", artifact_id)?))
    }

    pub fn artifact_descriptor(&self, artifact_id: &str) -> Result<String, Rejected> {
        Ok(format!("{}artifacts/{}.descriptor.json", self.0, segment("artifact id", artifact_id)?))
    }
}

/// What every build key starts with: `{s3.prefix}/`, or nothing for an empty prefix.
pub fn lead(prefix: &str) -> String {
    match prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    }
}

fn segment<'a>(what: &str, value: &'a str) -> Result<&'a str, Rejected> {
    if is_escaped_segment(value) {
        Ok(value)
    } else {
        Err(Rejected(format!("{what} {:?} is not an escaped name (A-Z a-z 0-9 _ - %)", value.chars().take(100).collect::<String>())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(run_id: &str) -> BuildKey {
        BuildKey { org: "acme".into(), repo: "rocket".into(), run_id: run_id.into() }
    }

    #[test]
    fn every_key_stays_inside_its_build() {
        let p = BuildPrefix::new("builds", &key("pants_run_1"));
        assert_eq!(p.as_str(), "builds/acme/rocket/pants_run_1/");
        assert_eq!(p.start_document(), "builds/acme/rocket/pants_run_1/start.json");
        assert_eq!(p.artifact("pants_run_log").unwrap(), "builds/acme/rocket/pants_run_1/artifacts/pants_run_log");
        for bad in ["../../x", "a/b", "..", "", "x.json"] {
            assert!(p.artifact(bad).is_err(), "{bad:?} must be refused");
            assert!(p.workunits(bad).is_err(), "{bad:?} must be refused");
        }
        // What the gateway makes of `../../x` is a single harmless segment.
        let escaped = buildstats_core::tenancy::escape_segment("../../x");
        assert!(p.artifact(&escaped).unwrap().starts_with(p.as_str()));
        assert!(!p.artifact(&escaped).unwrap()[p.as_str().len()..].contains(".."));
    }

    #[test]
    fn run_ids_are_escaped_and_an_empty_prefix_is_allowed() {
        let p = BuildPrefix::new("", &key("run:1+2"));
        assert_eq!(p.as_str(), "acme/rocket/run%3A1%2B2/");
    }
}
