//! The dead-letter topic: records a sink can never write, kept byte-for-byte with headers
//! that say which sink gave up, why, and where the record came from, so `buildstats dlq
//! redrive` can send them back once the cause is fixed.

use std::time::Duration;

use buildstats_core::kafka::headers;
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
        let mut out = OwnedHeaders::new();
        if let Some(original) = record.headers() {
            for h in original.iter() {
                if !h.key.starts_with("bs-dlq-") {
                    out = out.insert(Header { key: h.key, value: h.value });
                }
            }
        }
        let partition = record.partition().to_string();
        let offset = record.offset().to_string();
        let at = chrono::Utc::now().timestamp_millis().to_string();
        // Keep the header readable and bounded whatever the error text is.
        let error: String = error.chars().take(2000).collect();
        out = out
            .insert(Header { key: headers::DLQ_SINK, value: Some(self.sink) })
            .insert(Header { key: headers::DLQ_ERROR, value: Some(error.as_str()) })
            .insert(Header { key: headers::DLQ_SOURCE_TOPIC, value: Some(record.topic()) })
            .insert(Header { key: headers::DLQ_SOURCE_PARTITION, value: Some(partition.as_str()) })
            .insert(Header { key: headers::DLQ_SOURCE_OFFSET, value: Some(offset.as_str()) })
            .insert(Header { key: headers::DLQ_AT, value: Some(at.as_str()) });
        let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(out);
        if let Some(key) = record.key() {
            future_record = future_record.key(key);
        }
        if let Some(value) = record.payload() {
            future_record = future_record.payload(value);
        }
        self.producer
            .send(future_record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| Transient(format!("dead-letter topic {}: {e}", self.topic)))
    }
}
