//! Durable staging of payload chunks, so a build's chunks can be committed past as they
//! arrive (never holding a partition's offsets back) and still be reassembled when the
//! completing event comes, by this process or by whichever one owns the partition after a
//! restart or rebalance.
//!
//! Layout: `{sinks.staging_prefix}/{sink}/{org}/{repo}/{escaped run_id}/{blob_id}/{index:06}`
//! in the S3 bucket. A lifecycle rule (set by `admin init-stores`) expires staged chunks
//! after `sinks.staging_expiry_days`, which bounds what incomplete sets cost. Chunks are never
//! deleted on assembly: a replay of the completing event must find them again.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use buildstats_core::tenancy::escape_segment;
use bytes::Bytes;

use crate::aws::{classify, error_code, StoreError};
use crate::runtime::decode::is_blob_id;
use crate::sink::{BuildKey, Rejected, Transient};

#[derive(Clone)]
pub struct ChunkStage {
    client: Client,
    bucket: String,
    /// `{staging_prefix}/{sink}`.
    root: String,
}

impl ChunkStage {
    pub fn new(client: Client, bucket: &str, staging_prefix: &str, sink: &str) -> ChunkStage {
        ChunkStage {
            client,
            bucket: bucket.to_string(),
            root: format!("{}/{sink}", staging_prefix.trim_matches('/')),
        }
    }

    /// Every staged chunk of a build lives under this prefix (tombstones delete it).
    pub fn build_prefix(&self, key: &BuildKey) -> String {
        format!("{}/{}/{}/{}/", self.root, key.org, key.repo, escape_segment(&key.run_id))
    }

    fn chunk_key(&self, key: &BuildKey, blob_id: &str, index: i32) -> Result<String, Rejected> {
        if !is_blob_id(blob_id) {
            return Err(Rejected(format!("blob id {blob_id:?} is not a UUID")));
        }
        Ok(format!("{}{blob_id}/{index:06}", self.build_prefix(key)))
    }

    /// Store one chunk. Idempotent: the same chunk always has the same bytes.
    pub async fn put(&self, key: &BuildKey, blob_id: &str, index: i32, data: Bytes) -> Result<Result<(), Rejected>, Transient> {
        let object_key = match self.chunk_key(key, blob_id, index) {
            Ok(k) => k,
            Err(r) => return Ok(Err(r)),
        };
        match self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(object_key)
            .content_type("application/octet-stream")
            .body(ByteStream::from(data))
            .send()
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(e) => classify("stage chunk", &e).into_result(),
        }
    }

    /// One staged chunk; `Ok(None)` when it was never staged (or expired).
    pub async fn get(&self, key: &BuildKey, blob_id: &str, index: i32) -> Result<Option<Bytes>, StoreError> {
        let object_key = self.chunk_key(key, blob_id, index).map_err(StoreError::Rejected)?;
        match self.client.get_object().bucket(&self.bucket).key(object_key).send().await {
            Ok(out) => {
                let body = out.body.collect().await.map_err(|e| StoreError::Transient(Transient(format!("read staged chunk: {e}"))))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if error_code(&e) == Some("NoSuchKey") => Ok(None),
            Err(e) => Err(classify("read staged chunk", &e)),
        }
    }
}
