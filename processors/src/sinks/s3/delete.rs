//! The S3 sink deletes a build: every object under its prefix (and its staged chunks),
//! paging through prefixes of any size.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;

use crate::aws::classify;
use crate::sink::{Rejected, Transient};

/// Delete every object under `prefix`. Idempotent: an empty prefix succeeds. Returns how
/// many objects went.
pub async fn delete_prefix(client: &Client, bucket: &str, prefix: &str) -> Result<Result<usize, Rejected>, Transient> {
    let mut deleted = 0;
    loop {
        // Always list from the start: what was listed before is gone now.
        let listed = match client.list_objects_v2().bucket(bucket).prefix(prefix).max_keys(1000).send().await {
            Ok(out) => out,
            Err(e) => return classify("list build objects", &e).into_result(),
        };
        let ids: Vec<ObjectIdentifier> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
            .collect();
        if ids.is_empty() {
            return Ok(Ok(deleted));
        }
        let count = ids.len();
        let delete = Delete::builder().set_objects(Some(ids)).quiet(true).build().map_err(|e| Transient(e.to_string()))?;
        match client.delete_objects().bucket(bucket).delete(delete).send().await {
            Ok(out) => {
                if let Some(err) = out.errors().first() {
                    return Err(Transient(format!(
                        "delete build objects: {} ({})",
                        err.key().unwrap_or("?"),
                        err.message().unwrap_or("no message")
                    )));
                }
                deleted += count;
            }
            Err(e) => return classify("delete build objects", &e).into_result(),
        }
    }
}
