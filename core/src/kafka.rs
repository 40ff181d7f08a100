//! Kafka plumbing every role shares: client settings, topic creation, broker reachability.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// Headers every record of the builds topic carries.
pub mod headers {
    /// `run_started`, `blob_chunk`, ...: the [`EventType`](buildstats_schemas) name.
    pub const EVENT_TYPE: &str = "bs-event-type";
    /// `run_ended/v2`: the writer schema (also in the record's own header).
    pub const SCHEMA: &str = "bs-schema";
    pub const REQUEST_ID: &str = "bs-request-id";
    /// On a record sent back from the dead-letter topic: the one sink it is for. Every other
    /// sink skips it (it already wrote the original).
    pub const REDRIVE_FOR: &str = "bs-redrive-for";
    /// Dead-letter headers: which sink gave up on the record, why, and where it came from.
    pub const DLQ_SINK: &str = "bs-dlq-sink";
    pub const DLQ_ERROR: &str = "bs-dlq-error";
    pub const DLQ_SOURCE_TOPIC: &str = "bs-dlq-source-topic";
    pub const DLQ_SOURCE_PARTITION: &str = "bs-dlq-source-partition";
    pub const DLQ_SOURCE_OFFSET: &str = "bs-dlq-source-offset";
    /// Epoch milliseconds when the record was dead-lettered.
    pub const DLQ_AT: &str = "bs-dlq-at";
    /// On a tombstone (a null value on a build's key): why it was written (`retention`),
    /// the policy's retention days, when (epoch ms), and the build's start (epoch ms).
    pub const TOMBSTONE_REASON: &str = "bs-tombstone-reason";
    pub const TOMBSTONE_RETENTION_DAYS: &str = "bs-tombstone-retention-days";
    pub const TOMBSTONE_AT: &str = "bs-tombstone-at";
    pub const TOMBSTONE_BUILD_STARTED_AT: &str = "bs-tombstone-build-started-at";
}

/// Room for the key, headers and framing on top of the value limit.
pub const RECORD_OVERHEAD_BYTES: usize = 64 * 1024;

/// The producer's `message.max.bytes` and the topics' `max.message.bytes`. Both bound a whole
/// record *batch*, not one record: the per-record limit is the gateway's own
/// (`kafka.record_limit_bytes`). Never below Kafka's usual 1 MiB, or a small record limit
/// would also shrink every produce request to a handful of records.
pub fn batch_max_bytes(config: &KafkaConfig) -> usize {
    (config.record_limit_bytes + RECORD_OVERHEAD_BYTES).max(1024 * 1024)
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("kafka.client_properties entry {0:?} is not key=value")]
    BadProperty(String),
    #[error("cannot create a Kafka client for {brokers}: {source}")]
    Client { brokers: String, source: KafkaError },
    #[error("cannot reach the Kafka brokers at {brokers} within {timeout:?}: {source}. Is the broker running? (`dev/services up` starts one for development)")]
    Unreachable { brokers: String, timeout: Duration, source: KafkaError },
    #[error("creating topic {topic} failed: {message}")]
    CreateTopic { topic: String, message: String },
    #[error("topic {topic} has {actual} partitions but kafka.partitions is {expected}. The count is fixed at creation: to change it, migrate to a new topic version (`buildstats admin topic migrate`) rather than raising it in place, which would break per-build order")]
    PartitionMismatch { topic: String, expected: i32, actual: i32 },
}

/// The base client settings: brokers plus the pass-through properties (TLS, SASL...).
pub fn client_config(config: &KafkaConfig) -> Result<ClientConfig, KafkaSetupError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for entry in config.client_properties.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (k, v) = entry.split_once('=').ok_or_else(|| KafkaSetupError::BadProperty(entry.to_string()))?;
        client.set(k.trim(), v.trim());
    }
    Ok(client)
}

/// Apply `kafka.client_properties` again over a role's defaults, so the operator's settings
/// win (they were checked by [`client_config`]).
fn pass_through_wins(client: &mut ClientConfig, config: &KafkaConfig) {
    for entry in config.client_properties.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Some((k, v)) = entry.split_once('=') {
            client.set(k.trim(), v.trim());
        }
    }
}

/// Producer settings: idempotent, acks from every in-sync replica, compressed, and the
/// Java client's partitioner so any Kafka tool agrees on a key's partition.
pub fn producer_config(config: &KafkaConfig) -> Result<ClientConfig, KafkaSetupError> {
    let mut client = client_config(config)?;
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &config.compression)
        .set("linger.ms", config.linger_ms.to_string())
        .set("partitioner", "murmur2_random")
        .set("message.max.bytes", batch_max_bytes(config).to_string())
        .set("message.timeout.ms", config.produce_timeout_ms.to_string())
        .set("socket.keepalive.enable", "true");
    pass_through_wins(&mut client, config);
    Ok(client)
}

/// Consumer settings of a sink's group: offsets are stored by the sink only after the store
/// wrote a record and every record before it, and committed from that store every
/// `commit_interval_ms` and on every rebalance and close (librdkafka's at-least-once pattern).
pub fn consumer_config(config: &KafkaConfig, group_id: &str, commit_interval_ms: u64) -> Result<ClientConfig, KafkaSetupError> {
    let mut client = client_config(config)?;
    client
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", commit_interval_ms.to_string())
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Long enough to ride out a slow coordinator (tansu stalls for seconds under load);
        // restarts do not wait for it when `sinks.instance_id` gives static membership.
        .set("session.timeout.ms", "30000")
        .set("heartbeat.interval.ms", "3000")
        // Bound what librdkafka prefetches (its default lets a consumer queue 64 MiB, fetched
        // in 50 MiB requests): the sink's own per-partition buffers do the rest.
        .set("fetch.max.bytes", (8 * 1024 * 1024).max(batch_max_bytes(config)).to_string())
        .set("queued.max.messages.kbytes", "16384")
        .set("socket.keepalive.enable", "true");
    pass_through_wins(&mut client, config);
    Ok(client)
}

/// Create the builds topic and the dead-letter topic when missing; check the partition count
/// of existing ones. Idempotent. Returns the topics it created.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<Vec<String>, KafkaSetupError> {
    let topics = [
        (config.topic.as_str(), config.partitions),
        (config.dead_letter_topic.as_str(), config.partitions),
    ];
    let created = create_topics(config, &topics).await?;
    for (name, expected) in topics {
        let actual = partition_count(config, name, Duration::from_secs(10)).await?;
        if actual != expected {
            return Err(KafkaSetupError::PartitionMismatch { topic: name.to_string(), expected, actual });
        }
    }
    Ok(created)
}

/// Create the topics that are missing, with the builds topic's settings (delete cleanup,
/// `kafka.retention_days`, the record batch limit, `kafka.replication_factor`). Existing
/// topics are left as they are. Returns the topics it created.
pub async fn create_topics(config: &KafkaConfig, topics: &[(&str, i32)]) -> Result<Vec<String>, KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)?
        .create()
        .map_err(|source| KafkaSetupError::Client { brokers: config.brokers.clone(), source })?;
    let retention_ms = (config.retention_days * 24 * 3600 * 1000).to_string();
    let max_bytes = batch_max_bytes(config).to_string();
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(config.replication_factor))
                .set("cleanup.policy", "delete")
                .set("retention.ms", &retention_ms)
                .set("max.message.bytes", &max_bytes)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .map_err(|source| KafkaSetupError::Unreachable {
            brokers: config.brokers.clone(),
            timeout: Duration::from_secs(30),
            source,
        })?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::CreateTopic { topic, message: code.to_string() })
            }
        }
    }
    Ok(created)
}

/// How many partitions a topic has (0 when it does not exist).
pub async fn partition_count(config: &KafkaConfig, topic: &str, timeout: Duration) -> Result<i32, KafkaSetupError> {
    let client: BaseConsumer = client_config(config)?
        .create()
        .map_err(|source| KafkaSetupError::Client { brokers: config.brokers.clone(), source })?;
    let topic = topic.to_string();
    let brokers = config.brokers.clone();
    tokio::task::spawn_blocking(move || {
        let metadata = client
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|source| KafkaSetupError::Unreachable { brokers, timeout, source })?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0))
    })
    .await
    .expect("metadata task panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_properties_reach_the_client_and_override_defaults() {
        let config = KafkaConfig {
            client_properties: "security.protocol=SASL_SSL, sasl.mechanism=PLAIN,linger.ms=50".into(),
            ..KafkaConfig::default()
        };
        let producer = producer_config(&config).unwrap();
        assert_eq!(producer.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(producer.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(producer.get("linger.ms"), Some("50"));
        assert_eq!(producer.get("partitioner"), Some("murmur2_random"));
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        let bad = KafkaConfig { client_properties: "nonsense".into(), ..KafkaConfig::default() };
        assert!(matches!(client_config(&bad), Err(KafkaSetupError::BadProperty(_))));
    }
}
