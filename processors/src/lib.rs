//! Kafka consumer groups that fan build events out to the stores, one group per store.
//!
//! Empty for now: the runtime and the DynamoDB and S3 sinks come with the processors issue,
//! OpenSearch and InfluxDB after it. What they will read is fixed already: the records of
//! `kafka.topic` as described in ARCHITECTURE.md ("The builds topic") and decoded with
//! [`buildstats_schemas::decode`].
