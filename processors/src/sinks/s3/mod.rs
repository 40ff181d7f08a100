//! The S3 sink: the archive. One prefix per build ([`keys`]) holding what the client sent,
//! byte for byte: the raw start and final documents, every live workunit update, the Pants
//! log and other artifacts with their descriptors.
//!
//! Every object is written with `If-None-Match: *` (create only), so the first write of a key
//! wins: a duplicate final report, a batch re-upload or a replay never overwrites anything,
//! and repeating a record leaves the bucket as one delivery did. After a change's objects,
//! the event itself is archived ([`archive`]) for `buildstats reindex`. A tombstone deletes
//! the whole prefix ([`delete`]).

pub mod archive;
pub mod bucket;
pub mod delete;
pub mod keys;

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use buildstats_core::config::Config;
use buildstats_schemas::{decode, BlobRef, Event};
use bytes::Bytes;
use serde_json::json;

use crate::aws::{classify, error_code, http_status};
use crate::runtime::staging::ChunkStage;
use crate::sink::{per_build, BatchOutcome, Change, ChangeKind, Rejected, Sink, Transient};
use keys::BuildPrefix;

pub const NAME: &str = "s3";

pub struct S3Sink {
    client: Client,
    bucket: String,
    prefix: String,
    stage: ChunkStage,
    concurrency: usize,
}

type WriteResult = Result<Result<(), Rejected>, Transient>;

/// The S3 client for a config: `s3.endpoint_url` (else `aws.endpoint_url`) and path-style
/// addressing when configured.
pub async fn client(config: &Config) -> Client {
    let sdk = crate::aws::sdk_config(&config.aws, &config.s3.endpoint_url).await;
    let s3 = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(config.s3.force_path_style).build();
    Client::from_conf(s3)
}

impl S3Sink {
    pub fn new(client: Client, config: &Config) -> S3Sink {
        let stage = ChunkStage::new(client.clone(), &config.s3.bucket, &config.sinks.staging_prefix, NAME);
        S3Sink {
            client,
            bucket: config.s3.bucket.clone(),
            prefix: config.s3.prefix.clone(),
            stage,
            concurrency: config.sinks.write_concurrency.max(1),
        }
    }

    pub async fn from_config(config: &Config) -> S3Sink {
        S3Sink::new(client(config).await, config)
    }

    /// Where the runtime stages this sink's chunks.
    pub fn stage(&self) -> ChunkStage {
        self.stage.clone()
    }

    /// Create `key` unless it exists. An existing key is success: first write wins.
    async fn put_new(&self, key: String, content_type: &str, body: Bytes) -> WriteResult {
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Ok(())),
            Err(e) if error_code(&e) == Some("PreconditionFailed") || http_status(&e) == Some(412) => Ok(Ok(())),
            Err(e) => classify(&format!("put {key}"), &e).into_result(),
        }
    }

    async fn put_payload(&self, change: &Change, blob: &BlobRef, key: String) -> WriteResult {
        let Some(bytes) = change.payloads.get(blob) else {
            return Ok(Err(Rejected(format!("payload {} was not resolved", blob.blob_id))));
        };
        self.put_new(key, &blob.content_type, bytes.clone()).await
    }

    /// The change's objects, then its archived event: an archived event always names
    /// payloads that are stored.
    async fn write_one(&self, change: &Change) -> WriteResult {
        let prefix = BuildPrefix::new(&self.prefix, &change.key);
        if let Err(r) = self.write_objects(&prefix, change).await? {
            return Ok(Err(r));
        }
        match archive::archived(&prefix, &change.kind) {
            None => Ok(Ok(())),
            Some(Err(r)) => Ok(Err(r)),
            Some(Ok((key, bytes))) => self.put_new(key, "application/vnd.apache.avro.binary", Bytes::from(bytes)).await,
        }
    }

    async fn write_objects(&self, prefix: &BuildPrefix, change: &Change) -> WriteResult {
        match &change.kind {
            ChangeKind::Started(e) => self.put_payload(change, &e.start_document, prefix.start_document()).await,
            ChangeKind::Ended(e) => self.put_payload(change, &e.final_document, prefix.final_document()).await,
            ChangeKind::WorkunitsUpdated(e) => {
                let key = match prefix.workunits(&e.header.event_id) {
                    Ok(k) => k,
                    Err(r) => return Ok(Err(r)),
                };
                let Some(bytes) = change.payloads.get(&e.workunits) else {
                    return Ok(Err(Rejected("workunit list was not resolved".into())));
                };
                // Stored as JSON, readable by people and any tool; the list is the
                // gateway's normalized form of what the client sent.
                let list = match decode(bytes) {
                    Ok(Event::WorkunitList(list)) => list,
                    Ok(_) => return Ok(Err(Rejected("workunits payload is not a workunit list".into()))),
                    Err(err) => return Ok(Err(Rejected(format!("workunits payload: {err}")))),
                };
                let body = match serde_json::to_vec(&list) {
                    Ok(b) => b,
                    Err(err) => return Ok(Err(Rejected(format!("workunits payload: {err}")))),
                };
                self.put_new(key, "application/json", Bytes::from(body)).await
            }
            ChangeKind::ArtifactsUploaded(e) => {
                for artifact in &e.artifacts {
                    let (content_key, descriptor_key) =
                        match (prefix.artifact(&artifact.artifact_id), prefix.artifact_descriptor(&artifact.artifact_id)) {
                            (Ok(c), Ok(d)) => (c, d),
                            (Err(r), _) | (_, Err(r)) => return Ok(Err(r)),
                        };
                    // Content first: a descriptor always names content that exists.
                    if let Err(r) = self.put_payload(change, &artifact.blob, content_key).await? {
                        return Ok(Err(r));
                    }
                    let descriptor = json!({
                        "artifact_id": artifact.artifact_id,
                        "name": artifact.name,
                        "workunit_id": artifact.workunit_id,
                        "path": artifact.path,
                        "descriptor_name": artifact.descriptor_name,
                        "content_type": artifact.blob.content_type,
                        "size": artifact.blob.size,
                        "sha256": artifact.blob.sha256,
                        "event_id": e.header.event_id,
                    });
                    let body = Bytes::from(serde_json::to_vec_pretty(&descriptor).expect("json"));
                    if let Err(r) = self.put_new(descriptor_key, "application/json", body).await? {
                        return Ok(Err(r));
                    }
                }
                Ok(Ok(()))
            }
            ChangeKind::Tombstone => {
                for p in [prefix.as_str().to_string(), self.stage.build_prefix(&change.key)] {
                    if let Err(r) = delete::delete_prefix(&self.client, &self.bucket, &p).await? {
                        return Ok(Err(r));
                    }
                }
                Ok(Ok(()))
            }
        }
    }
}

impl Sink for S3Sink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn needs_payloads(&self) -> bool {
        true
    }

    async fn write(&self, batch: Arc<Vec<Change>>) -> BatchOutcome {
        per_build(&batch, self.concurrency, |i| self.write_one(&batch[i])).await
    }

    async fn check_ready(&self) -> Result<(), String> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("s3 bucket {}: {}", self.bucket, aws_sdk_s3::error::DisplayErrorContext(&e)))
    }
}
