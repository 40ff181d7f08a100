//! The dead-letter topic: records a sink can never write, kept byte-for-byte with headers
//! that say which sink gave up, why, and where the record came from, so `buildstats dlq
//! redrive` can send them back once the cause is fixed.

use std::time::Duration;

use buildstats_core::kafka::headers;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use crate::sink::Transient;

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    sink: &'static str,
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, topic: &str, sink: &'static str) -> DeadLetters {
        DeadLetters { producer, topic: topic.to_string(), sink }
    }

    /// Publish one record and wait for the broker's acknowledgement (only then may the
    /// source offset be committed past it).
    pub async fn send(&self, record: &OwnedMessage, error: &str) -> Result<(), Transient> {
        let partition = record.partition().to_string();
        let offset = record.offset().to_string();
        let at = chrono::Utc::now().timestamp_millis().to_string();
        // Keep the header readable and bounded whatever the error text is.
        let error: String = error.chars().take(2000).collect();
        let extra = [
            (headers::DLQ_SINK, self.sink),
            (headers::DLQ_ERROR, error.as_str()),
            (headers::DLQ_SOURCE_TOPIC, record.topic()),
            (headers::DLQ_SOURCE_PARTITION, partition.as_str()),
            (headers::DLQ_SOURCE_OFFSET, offset.as_str()),
            (headers::DLQ_AT, at.as_str()),
        ];
        forward(&self.producer, &self.topic, record, |key| key.starts_with("bs-dlq-"), &extra)
            .await
            .map_err(|e| Transient(format!("dead-letter topic {}: {e}", self.topic)))
    }
}

/// Send `record` to `topic` with its key, value and headers, minus the headers `drop` names,
/// plus `extra`, and wait for the acknowledgement. What dead-lettering and redriving share.
pub async fn forward<M: Message>(
    producer: &FutureProducer,
    topic: &str,
    record: &M,
    drop: impl Fn(&str) -> bool,
    extra: &[(&str, &str)],
) -> Result<(), KafkaError> {
    producer.send(copy_of(topic, record, drop, extra), Duration::from_secs(30)).await.map(|_| ()).map_err(|(e, _)| e)
}

/// A record for `topic` with `record`'s key, value (a null value stays null) and headers,
/// minus the headers `drop` names, plus `extra`. What dead-lettering, redriving and topic
/// migration copy.
pub fn copy_of<'a, M: Message>(topic: &'a str, record: &'a M, drop: impl Fn(&str) -> bool, extra: &[(&str, &str)]) -> FutureRecord<'a, [u8], [u8]> {
    let mut out = OwnedHeaders::new();
    if let Some(original) = record.headers() {
        for h in original.iter() {
            if !drop(h.key) {
                out = out.insert(Header { key: h.key, value: h.value });
            }
        }
    }
    for (key, value) in extra {
        out = out.insert(Header { key, value: Some(*value) });
    }
    let mut copy: FutureRecord<'a, [u8], [u8]> = FutureRecord::to(topic).headers(out);
    if let Some(key) = record.key() {
        copy = copy.key(key);
    }
    if let Some(value) = record.payload() {
        copy = copy.payload(value);
    }
    copy
}
