//! Publishing a request's records and waiting for the broker's acknowledgement.
//!
//! A request is answered 2xx only after every one of its records is acknowledged by all
//! in-sync replicas (`acks=all`, idempotent producer). Chunks go first and are all
//! acknowledged before any completing event is sent: a completing event on the topic always
//! has its chunks before it. On a broker error or past `kafka.produce_timeout_ms` the
//! request fails (503); whatever of it reached the topic is an incomplete chunk set or a
//! completing event the client will repeat, both harmless (see records.rs).
//!
//! A producer that saw a failure is never used again. An idempotent producer whose records
//! timed out must bump its epoch when the broker returns, which some Kafka-compatible
//! brokers mishandle (tansu 0.6.0 panics), and one whose broker restarted without its
//! producer state gets refused forever. So after a failed publish the producer is purged
//! (nothing of it is retried or reconnects) and replaced, and for `BREAKER_WINDOW` requests
//! fail fast with 503 instead of queueing behind a broker that is away.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use buildstats_core::config::KafkaConfig;
use buildstats_core::kafka::{headers, producer_config, KafkaSetupError};
use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};

use crate::records::{BuildRecords, EncodedRecord};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused or lost a record: {0}")]
    Broker(String),
    #[error("the broker failed a moment ago; not retrying for {0:?}")]
    CircuitOpen(Duration),
}

pub struct Publisher {
    producer: RwLock<Arc<FutureProducer>>,
    config: KafkaConfig,
    /// Until when requests fail fast after a broker failure.
    open_until: std::sync::Mutex<Option<Instant>>,
}

/// How long requests fail fast (503) after a failed publish, before a fresh producer tries.
pub const BREAKER_WINDOW: Duration = Duration::from_secs(1);

impl Publisher {
    pub fn new(config: &KafkaConfig) -> Result<Publisher, KafkaSetupError> {
        Ok(Publisher {
            producer: RwLock::new(Arc::new(Self::create(config)?)),
            config: config.clone(),
            open_until: std::sync::Mutex::new(None),
        })
    }

    fn create(config: &KafkaConfig) -> Result<FutureProducer, KafkaSetupError> {
        producer_config(config)?
            .create()
            .map_err(|source| KafkaSetupError::Client { brokers: config.brokers.clone(), source })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.producer.read().expect("producer lock").clone()
    }

    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// Publish every record of the request; Ok only once all are acknowledged.
    pub async fn publish(&self, builds: &[BuildRecords], request_id: &str) -> Result<(), PublishError> {
        if let Some(until) = *self.open_until.lock().expect("breaker lock") {
            let now = Instant::now();
            if now < until {
                metrics::counter!("gateway_produce_failures_total").increment(1);
                return Err(PublishError::CircuitOpen(until - now));
            }
        }
        let deadline = Duration::from_millis(self.config.produce_timeout_ms) + Duration::from_millis(500);
        let started = Instant::now();
        let producer = self.producer();
        let result = tokio::time::timeout(deadline, self.publish_in_two_phases(&producer, builds, request_id)).await;
        metrics::histogram!("gateway_produce_seconds").record(started.elapsed().as_secs_f64());
        let result = match result {
            Ok(inner) => inner,
            Err(_) => Err(PublishError::Timeout(deadline)),
        };
        if let Err(e) = &result {
            metrics::counter!("gateway_produce_failures_total").increment(1);
            tracing::warn!(request_id, error = %e, "publish failed");
            self.discard_producer(&producer, e);
        }
        result
    }

    async fn publish_in_two_phases(
        &self,
        producer: &FutureProducer,
        builds: &[BuildRecords],
        request_id: &str,
    ) -> Result<(), PublishError> {
        let chunks: Vec<(&str, &EncodedRecord)> =
            builds.iter().flat_map(|b| b.chunks().iter().map(move |r| (b.key.as_str(), r))).collect();
        if !chunks.is_empty() {
            self.send_all(producer, &chunks, request_id).await?;
        }
        let completing: Vec<(&str, &EncodedRecord)> = builds.iter().map(|b| (b.key.as_str(), b.completing())).collect();
        self.send_all(producer, &completing, request_id).await
    }

    async fn send_all(
        &self,
        producer: &FutureProducer,
        records: &[(&str, &EncodedRecord)],
        request_id: &str,
    ) -> Result<(), PublishError> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
        for (key, record) in records {
            pending.push(self.enqueue(producer, key, record, request_id).await?);
        }
        for (delivery, (_, record)) in join_all(pending).await.into_iter().zip(records) {
            match delivery {
                Ok(Ok(_)) => {
                    metrics::counter!("gateway_records_produced_total", "event_type" => record.event_type.name())
                        .increment(1);
                }
                Ok(Err((e, _))) => return Err(PublishError::Broker(e.to_string())),
                Err(_) => return Err(PublishError::Broker("the producer dropped the delivery".into())),
            }
        }
        Ok(())
    }

    /// Queue one record, waiting briefly when librdkafka's local queue is full.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        key: &str,
        record: &EncodedRecord,
        request_id: &str,
    ) -> Result<DeliveryFuture, PublishError> {
        let schema = buildstats_schemas::registry().current(record.event_type).label();
        loop {
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header { key: headers::EVENT_TYPE, value: Some(record.event_type.name()) })
                .insert(Header { key: headers::SCHEMA, value: Some(schema.as_str()) })
                .insert(Header { key: headers::REQUEST_ID, value: Some(request_id) });
            let future_record = FutureRecord::to(&self.config.topic).key(key).payload(&record.value).headers(headers);
            match producer.send_result(future_record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(PublishError::Broker(e.to_string())),
            }
        }
    }

    /// Purge and replace the producer that failed, and open the breaker. Only the producer
    /// that is still current is replaced: a late failure of one already discarded (a request
    /// that took it just before the swap) must not throw away its healthy successor.
    fn discard_producer(&self, failed: &Arc<FutureProducer>, error: &PublishError) {
        let mut open_until = self.open_until.lock().expect("breaker lock");
        if !Arc::ptr_eq(failed, &self.producer()) {
            return; // already replaced
        }
        *open_until = Some(Instant::now() + BREAKER_WINDOW);
        let failed = failed.clone();
        tracing::warn!(%error, fatal = ?failed.client().fatal_error(), "discarding the Kafka producer after a failed publish");
        failed.purge(PurgeConfig::default().queue().inflight());
        match Self::create(&self.config) {
            Ok(fresh) => {
                *self.producer.write().expect("producer lock") = Arc::new(fresh);
                metrics::counter!("gateway_producer_replacements_total").increment(1);
            }
            Err(e) => tracing::error!(error = %e, "cannot create a new producer"),
        }
        // Dropping a producer waits for its threads: not on an async worker.
        tokio::task::spawn_blocking(move || drop(failed));
    }

    /// Is the broker reachable and does the topic exist?
    pub async fn ready(&self) -> Result<(), String> {
        let producer = self.producer();
        let topic = self.config.topic.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .map_err(|e| format!("kafka: {e}"))?;
            match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                _ => Err(format!("kafka: topic {topic} does not exist (run `buildstats admin init`)")),
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Wait for queued records to be delivered (graceful shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer().flush(timeout) {
            tracing::error!(error = %e, "records still unacknowledged at shutdown");
        }
    }
}
