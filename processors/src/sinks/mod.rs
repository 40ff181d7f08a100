//! The sinks, one module each with the same parts: config (from `Config`), encoding of a
//! change into the store's shape, the service call, the delete of a build (tombstones), and
//! readiness. Retries, batching, dead-lettering and metrics are the runtime's.
//!
//! Adding a store: a module here implementing [`crate::sink::Sink`], a [`SinkName`] variant,
//! its creation in `init_stores`, and a line in ARCHITECTURE.md.

pub mod dynamodb;
pub mod influxdb;
pub mod opensearch;
pub mod s3;

use std::fmt;

/// Every sink, by the name used in subcommands, consumer groups and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkName {
    DynamoDb,
    S3,
    OpenSearch,
    InfluxDb,
}

impl SinkName {
    pub const ALL: [SinkName; 4] = [SinkName::DynamoDb, SinkName::S3, SinkName::OpenSearch, SinkName::InfluxDb];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkName::DynamoDb => dynamodb::NAME,
            SinkName::S3 => s3::NAME,
            SinkName::OpenSearch => opensearch::NAME,
            SinkName::InfluxDb => influxdb::NAME,
        }
    }

    pub fn parse(name: &str) -> Result<SinkName, String> {
        SinkName::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| {
            format!("no sink called {name:?}: the sinks are {}", SinkName::ALL.map(|s| s.as_str()).join(", "))
        })
    }

    /// `{sinks.group_prefix}-{name}`.
    pub fn default_group(self, prefix: &str) -> String {
        format!("{prefix}-{}", self.as_str())
    }
}

impl fmt::Display for SinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
