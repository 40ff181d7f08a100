//! Configuration: one TOML file plus `BUILDSTATS_<SECTION>_<KEY>` environment variables.
//!
//! The environment names are derived from the TOML keys (`[kafka] brokers` is
//! `BUILDSTATS_KAFKA_BROKERS`), so the two can never drift apart; [`env_variables`] lists
//! them all, and `buildstats config env` prints them. Precedence, lowest first: built-in
//! defaults (which match `dev/services`), the config file, the dev env file
//! (`target/dev/services.env`, when present), the process environment.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub const ENV_PREFIX: &str = "BUILDSTATS_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub auth: AuthConfig,
    pub gateway: GatewayConfig,
    pub query: QueryConfig,
    pub sinks: SinksConfig,
    pub aws: AwsConfig,
    pub dynamodb: DynamoDbConfig,
    pub s3: S3Config,
    pub opensearch: OpenSearchConfig,
    pub influxdb: InfluxDbConfig,
    pub retention: RetentionConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// The builds topic: every event of a build and its tombstone.
    pub topic: String,
    /// Where sinks send records that can never be written.
    pub dead_letter_topic: String,
    /// Partitions of the builds topic, fixed at creation (a change is a topic migration).
    pub partitions: i32,
    pub replication_factor: i32,
    /// `retention.ms` of the builds topic, in days: the window a replay can rebuild from.
    pub retention_days: i64,
    /// Largest record value the gateway writes; bigger payloads are chunked.
    pub record_limit_bytes: usize,
    /// How long a request waits for the broker's acknowledgement before answering 503.
    pub produce_timeout_ms: u64,
    /// `compression.type` of the producer: zstd, lz4, gzip, snappy or none.
    pub compression: String,
    pub linger_ms: u64,
    /// Extra librdkafka properties, `key=value` pairs separated by commas
    /// (e.g. `security.protocol=SASL_SSL,sasl.mechanism=PLAIN`).
    pub client_properties: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Token signing keys, `kid:secret` separated by commas. The first signs new tokens;
    /// every listed key verifies (rotation: put the new key first, keep the old one listed
    /// until the tokens it signed have expired). Secrets are at least 32 bytes.
    pub keys: String,
    pub access_token_minutes: i64,
    pub refresh_token_days: i64,
    /// How long a token's revocation status is cached: a revoked token stops working
    /// within this many seconds.
    pub revocation_check_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: String,
    /// Base URL of the web UI; when set, run answers carry `link` = `{public_url}/{org}/{repo}/builds/{run_id}`.
    pub public_url: String,
    /// Largest request body accepted, as sent (compressed).
    pub max_body_bytes: usize,
    /// Largest total size of a request's payloads after decompression.
    pub max_decompressed_bytes: usize,
    /// Most parts in one multipart upload.
    pub max_parts: usize,
    pub retry_after_seconds: u64,
    /// What the token refresh answer gives the plugin as `remote_cache.address`.
    pub remote_cache_address: String,
    pub shutdown_grace_seconds: u64,
    /// Requests per second each long-lived token may make (refilled continuously); 0 = no
    /// limit. Per gateway replica.
    pub rate_limit_per_second: u32,
    /// Requests a token may make at once before the rate applies.
    pub rate_limit_burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    pub listen: String,
    /// A build without a final report is `RUNNING` while its last sign of life (run start or
    /// workunits call) is younger than this, `TIMEOUT` after (the plugin's heartbeat is ~1 s).
    pub running_timeout_seconds: i64,
    /// Page size of a list when the request gives none (at most 100).
    pub default_page_size: usize,
    /// Longest wait for one store call of a query before it answers 503.
    pub store_timeout_ms: u64,
}

/// What every sink's consumer shares (`buildstats sink NAME`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// Probes and metrics of a sink process (`/healthz`, `/readyz`, `/metrics`).
    pub listen: String,
    /// Consumer group of sink NAME: `{group_prefix}-NAME`, one group per store.
    pub group_prefix: String,
    /// Static group membership (`group.instance.id`) of this process, e.g. the pod name of a
    /// StatefulSet: a restarted process takes its partitions back at once, without a
    /// rebalance. Each replica needs its own. Empty: dynamic membership.
    pub instance_id: String,
    /// A batch is written when it holds this many records...
    pub batch_max_records: usize,
    /// ...or this many bytes of record values...
    pub batch_max_bytes: usize,
    /// ...or its first record waited this long.
    pub batch_linger_ms: u64,
    /// Store calls in flight per partition (different builds of one batch run in parallel;
    /// one build's records always apply in order).
    pub write_concurrency: usize,
    /// Records buffered per partition before the partition is paused...
    pub partition_buffer: usize,
    /// ...or bytes of record values (half of it for sinks that need payloads: S3).
    pub partition_buffer_bytes: usize,
    /// First retry delay of a failed store call; doubles (with jitter) up to the max.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// How often stored offsets are committed; a `kill -9` repeats at most this window.
    pub commit_interval_ms: u64,
    /// Chunks of payloads too large for one record are staged in S3 under this prefix
    /// until the event that completes them arrives.
    pub staging_prefix: String,
    /// Staged chunks whose completing event never came expire after this many days.
    pub staging_expiry_days: i32,
    /// At SIGTERM, how long batches in flight may take to finish before they are abandoned
    /// uncommitted.
    pub shutdown_grace_seconds: u64,
}

/// How sinks reach AWS or an S3/DynamoDB-compatible server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    /// Custom endpoint (MinIO, DynamoDB Local, moto); empty = AWS itself.
    pub endpoint_url: String,
    pub region: String,
    /// Static credentials; both empty = the default AWS chain (env, profile, IMDS, IRSA).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Largest number of attempts the SDK makes per call before the sink's own backoff.
    pub sdk_max_attempts: u32,
    /// Longest wait for one store call: a hung store (a frozen process, a black-holed
    /// network) fails the call after this long, and the sink's backoff takes over.
    pub attempt_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DynamoDbConfig {
    /// The runs table (created by `buildstats admin init-stores`).
    pub table: String,
    /// Endpoint for DynamoDB alone (DynamoDB Local); empty = `aws.endpoint_url`.
    pub endpoint_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Endpoint for S3 alone (MinIO); empty = `aws.endpoint_url`.
    pub endpoint_url: String,
    /// Builds live under `{prefix}/{org}/{repo}/{run_id}/`.
    pub prefix: String,
    /// Path-style URLs (`endpoint/bucket/key`), needed by MinIO and moto.
    pub force_path_style: bool,
}

/// The retention worker (`buildstats retention run`); policies themselves live in Postgres.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Probes and metrics of the worker.
    pub listen: String,
    /// How often the worker looks for due policies.
    pub tick_seconds: u64,
    /// Most builds one pass of one policy turns into tombstones (the rest wait for the next
    /// period): bounds a pass's time and the burst on the topic.
    pub max_builds_per_pass: usize,
    /// A replica's hold on a policy during its pass; a crashed replica's lease runs out.
    pub lease_seconds: i64,
    /// This replica's name in leases (pod name); empty = host name and process id.
    pub instance_id: String,
    /// How long the register of deleted builds remembers one (sinks drop late records of a
    /// deleted build). Keep it above `kafka.retention_days`, so a replay of the topic never
    /// brings a deleted build back.
    pub forget_deleted_days: i32,
}

/// The search index (OpenSearch 2.x/3.x, or anything serving its REST API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OpenSearchConfig {
    pub url: String,
    /// Basic auth; both empty = none.
    pub username: String,
    pub password: String,
    /// The alias the sink writes and the query API reads...
    pub alias: String,
    /// ...pointing at index `{alias}-v{index_version}`, created with the mapping of this
    /// version by `admin init-stores`. A mapping change is a new version, filled by a replay.
    pub index_version: u32,
    pub shards: u32,
    pub replicas: u32,
}

/// The time series store, over the InfluxDB v1 HTTP API (`/write`, `/query`): InfluxDB 1.x,
/// 2.x (v1 compatibility endpoints) and 3 all serve it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxDbConfig {
    pub url: String,
    pub database: String,
    /// Retention policy written to; empty = the database's default.
    pub retention_policy: String,
    /// v1 credentials (`u`/`p`); both empty = none.
    pub username: String,
    pub password: String,
    /// A token (InfluxDB 2.x/3), sent as `Authorization: Token ...`; empty = none.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `info,ingest_gateway=debug`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            postgres: PostgresConfig::default(),
            auth: AuthConfig::default(),
            gateway: GatewayConfig::default(),
            query: QueryConfig::default(),
            sinks: SinksConfig::default(),
            aws: AwsConfig::default(),
            dynamodb: DynamoDbConfig::default(),
            s3: S3Config::default(),
            opensearch: OpenSearchConfig::default(),
            influxdb: InfluxDbConfig::default(),
            retention: RetentionConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "buildstats.builds.v1".into(),
            dead_letter_topic: "buildstats.builds.v1.dlq".into(),
            partitions: 12,
            replication_factor: 1,
            retention_days: 14,
            record_limit_bytes: 1024 * 1024,
            produce_timeout_ms: 5_000,
            compression: "zstd".into(),
            linger_ms: 5,
            client_properties: String::new(),
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "postgres://postgres@127.0.0.1:5432/buildstats".into(),
            max_connections: 10,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            keys: String::new(),
            access_token_minutes: 45,
            refresh_token_days: 365,
            revocation_check_seconds: 5,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            max_body_bytes: 32 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_parts: 64,
            retry_after_seconds: 5,
            remote_cache_address: String::new(),
            shutdown_grace_seconds: 30,
            rate_limit_per_second: 500,
            rate_limit_burst: 1_000,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            listen: "127.0.0.1:8081".into(),
            running_timeout_seconds: 300,
            default_page_size: 20,
            store_timeout_ms: 10_000,
        }
    }
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            listen: "127.0.0.1:8090".into(),
            group_prefix: "buildstats-sink".into(),
            instance_id: String::new(),
            batch_max_records: 500,
            batch_max_bytes: 4 * 1024 * 1024,
            batch_linger_ms: 100,
            write_concurrency: 16,
            partition_buffer: 1_000,
            partition_buffer_bytes: 4 * 1024 * 1024,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
            commit_interval_ms: 1_000,
            staging_prefix: "_staging".into(),
            staging_expiry_days: 2,
            shutdown_grace_seconds: 30,
        }
    }
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            endpoint_url: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            sdk_max_attempts: 2,
            attempt_timeout_ms: 20_000,
        }
    }
}

impl Default for DynamoDbConfig {
    fn default() -> Self {
        DynamoDbConfig { table: "buildstats-runs".into(), endpoint_url: String::new() }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config { bucket: "buildstats".into(), endpoint_url: String::new(), prefix: "builds".into(), force_path_style: true }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            listen: "127.0.0.1:8092".into(),
            tick_seconds: 30,
            max_builds_per_pass: 50_000,
            lease_seconds: 900,
            instance_id: String::new(),
            forget_deleted_days: 30,
        }
    }
}

impl Default for OpenSearchConfig {
    fn default() -> Self {
        OpenSearchConfig {
            url: "http://127.0.0.1:9200".into(),
            username: String::new(),
            password: String::new(),
            alias: "buildstats-builds".into(),
            index_version: 1,
            shards: 1,
            replicas: 0,
        }
    }
}

impl OpenSearchConfig {
    /// The versioned index behind the alias.
    pub fn index(&self) -> String {
        format!("{}-v{}", self.alias, self.index_version)
    }
}

impl Default for InfluxDbConfig {
    fn default() -> Self {
        InfluxDbConfig {
            url: "http://127.0.0.1:8086".into(),
            database: "buildstats".into(),
            retention_policy: String::new(),
            username: String::new(),
            password: String::new(),
            token: String::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: "text".into(), level: "info".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {name}={value:?} is not valid: {message}")]
    Env { name: String, value: String, message: String },
}

/// One configurable key: its TOML path and its environment name.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvVariable {
    pub name: String,
    pub section: String,
    pub key: String,
    pub default: String,
}

/// Every `BUILDSTATS_*` variable the config understands, with its default.
pub fn env_variables() -> Vec<EnvVariable> {
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    let mut out = Vec::new();
    for (section, table) in defaults.as_table().expect("a table") {
        for (key, value) in table.as_table().expect("sections are tables") {
            out.push(EnvVariable {
                name: format!("{ENV_PREFIX}{}_{}", section.to_uppercase(), key.to_uppercase()),
                section: section.clone(),
                key: key.clone(),
                default: match value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            });
        }
    }
    out
}

impl Config {
    /// This config as `BUILDSTATS_*` variables: how a parent process hands its exact config
    /// to a child role (benchmarks, tests).
    pub fn to_env(&self) -> Vec<(String, String)> {
        let value = toml::Value::try_from(self).expect("config serializes");
        env_variables()
            .into_iter()
            .map(|v| {
                let text = match &value[v.section.as_str()][v.key.as_str()] {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (v.name, text)
            })
            .collect()
    }

    /// Load defaults, then the file (a missing file is fine only when `required` is false),
    /// then variables from `lookup` (the environment, in production).
    pub fn load(
        path: &Path,
        required: bool,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let mut merged = toml::Value::try_from(Config::default()).expect("defaults serialize");
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: toml::Value = toml::from_str(&text)
                    .map_err(|e| ConfigError::Parse { path: shown.clone(), message: e.to_string() })?;
                merge(&mut merged, file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
            Err(source) => return Err(ConfigError::Read { path: shown, source }),
        }
        for var in env_variables() {
            let Some(raw) = lookup(&var.name) else { continue };
            let table = merged
                .get_mut(&var.section)
                .and_then(|s| s.as_table_mut())
                .expect("section exists in defaults");
            let typed = typed_like(&table[&var.key], &raw).map_err(|message| ConfigError::Env {
                name: var.name.clone(),
                value: raw.clone(),
                message,
            })?;
            table.insert(var.key.clone(), typed);
        }
        merged
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { path: shown, message: e.to_string() })
    }

    /// `--config FILE` plus the process environment and, when present, the dev env file.
    pub fn from_env_and_file(path: &Path, required: bool, env_file: Option<&Path>) -> Result<Config, ConfigError> {
        let file_vars = env_file.map(read_env_file).unwrap_or_default();
        Config::load(path, required, |name| {
            std::env::var(name).ok().or_else(|| file_vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        })
    }
}

/// Parse `KEY=VALUE` lines (shell `export` prefix and quotes allowed), as written by
/// `dev/services`. A missing file yields nothing.
pub fn read_env_file(path: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            if line.starts_with('#') {
                return None;
            }
            let (k, v) = line.split_once('=')?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Parse an environment string as the TOML type of the default it overrides.
fn typed_like(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match default {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim().parse().map_err(|_| "expected a whole number".to_string())?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err("expected true or false".into()),
        }),
        toml::Value::Float(_) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| "expected a number".to_string())?)
        }
        other => return Err(format!("cannot be set from the environment (a {})", other.type_str())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_toml_keys() {
        let names: Vec<_> = env_variables().into_iter().map(|v| v.name).collect();
        assert!(names.contains(&"BUILDSTATS_KAFKA_BROKERS".to_string()));
        assert!(names.contains(&"BUILDSTATS_GATEWAY_MAX_DECOMPRESSED_BYTES".to_string()));
        assert!(names.contains(&"BUILDSTATS_AUTH_KEYS".to_string()));
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("bs-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("buildstats.toml");
        std::fs::write(&path, "[kafka]\nbrokers = \"file:9092\"\npartitions = 3\n[gateway]\nlisten = \"0.0.0.0:1\"\n").unwrap();
        let config = Config::load(&path, true, |name| match name {
            "BUILDSTATS_KAFKA_BROKERS" => Some("env:9092".into()),
            "BUILDSTATS_GATEWAY_MAX_PARTS" => Some("7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.kafka.brokers, "env:9092");
        assert_eq!(config.kafka.partitions, 3);
        assert_eq!(config.gateway.listen, "0.0.0.0:1");
        assert_eq!(config.gateway.max_parts, 7);
        assert_eq!(config.kafka.topic, "buildstats.builds.v1");
    }

    #[test]
    fn to_env_round_trips_through_load() {
        let mut config = Config::default();
        config.kafka.partitions = 5;
        config.s3.force_path_style = false;
        config.dynamodb.table = "t1".into();
        let vars = config.to_env();
        let back = Config::load(Path::new("/nonexistent"), false, |n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn bad_values_name_the_variable_and_unknown_keys_are_refused() {
        let missing = Path::new("/nonexistent/buildstats.toml");
        let err = Config::load(missing, false, |n| (n == "BUILDSTATS_KAFKA_PARTITIONS").then(|| "many".into()))
            .unwrap_err();
        assert!(err.to_string().contains("BUILDSTATS_KAFKA_PARTITIONS"), "{err}");
        assert!(Config::load(missing, true, |_| None).is_err(), "a required file must exist");

        let dir = std::env::temp_dir().join(format!("bs-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("buildstats.toml");
        std::fs::write(&path, "[kafka]\nbrokerz = \"typo\"\n").unwrap();
        let err = Config::load(&path, true, |_| None).unwrap_err();
        assert!(err.to_string().contains("brokerz"), "{err}");
    }

    /// ARCHITECTURE.md's contract table is what operators read: it must name every variable.
    #[test]
    fn architecture_md_lists_every_variable() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let missing: Vec<_> = env_variables()
            .into_iter()
            .filter(|v| !doc.contains(&format!("`{}`", v.name)))
            .map(|v| v.name)
            .collect();
        assert!(missing.is_empty(), "ARCHITECTURE.md does not list {missing:?}");
    }

    #[test]
    fn env_files_take_export_lines_and_quotes() {
        let dir = std::env::temp_dir().join(format!("bs-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("services.env");
        std::fs::write(&path, "# comment\nexport BUILDSTATS_KAFKA_BROKERS=\"127.0.0.1:19092\"\nBUILDSTATS_X=1\n").unwrap();
        let vars = read_env_file(&path);
        assert_eq!(vars[0], ("BUILDSTATS_KAFKA_BROKERS".into(), "127.0.0.1:19092".into()));
        assert_eq!(vars.len(), 2);
    }
}
