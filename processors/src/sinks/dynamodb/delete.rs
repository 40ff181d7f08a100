//! The DynamoDB sink deletes a build (a tombstone on the build's key).

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::item::PK;
use crate::aws::classify;
use crate::sink::{BuildKey, Rejected, Transient};

/// Delete the build's item. Idempotent: deleting a missing item succeeds.
pub async fn delete_build(client: &Client, table: &str, key: &BuildKey) -> Result<Result<(), Rejected>, Transient> {
    match client.delete_item().table_name(table).key(PK, AttributeValue::S(key.joined())).send().await {
        Ok(_) => Ok(Ok(())),
        Err(e) => classify("delete build item", &e).into_result(),
    }
}
