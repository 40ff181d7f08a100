//! Creating the runs table (`buildstats admin init-stores`): idempotent, and it checks that an
//! existing table has the keys the sink and the query API rely on.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;

use super::item::{BY_REPO, BY_USER, PK, REPO_KEY, STARTED_AT, USER_KEY};
use crate::aws::error_code;

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder().attribute_name(name).key_type(kind).build().expect("complete key element")
}

fn attr(name: &str, kind: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder().attribute_name(name).attribute_type(kind).build().expect("complete attribute")
}

fn index(name: &str, hash: &str) -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash))
        .key_schema(key(STARTED_AT, KeyType::Range))
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .expect("complete index")
}

/// Create the table when missing and wait until it is active. Returns whether it was created.
pub async fn ensure_table(client: &Client, table: &str) -> anyhow::Result<bool> {
    let created = match client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash))
        .attribute_definitions(attr(PK, ScalarAttributeType::S))
        .attribute_definitions(attr(REPO_KEY, ScalarAttributeType::S))
        .attribute_definitions(attr(USER_KEY, ScalarAttributeType::S))
        .attribute_definitions(attr(STARTED_AT, ScalarAttributeType::N))
        .global_secondary_indexes(index(BY_REPO, REPO_KEY))
        .global_secondary_indexes(index(BY_USER, USER_KEY))
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) if error_code(&e) == Some("ResourceInUseException") => false,
        Err(e) => {
            return Err(anyhow::anyhow!(
                "cannot create DynamoDB table {table}: {}. Check aws.endpoint_url, aws.region and the credentials",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            ))
        }
    };
    for _ in 0..120 {
        let described = client.describe_table().table_name(table).send().await?;
        let Some(t) = described.table() else { anyhow::bail!("DynamoDB described no table {table}") };
        let indexes: Vec<&str> = t.global_secondary_indexes().iter().filter_map(|i| i.index_name()).collect();
        for needed in [BY_REPO, BY_USER] {
            if !indexes.contains(&needed) {
                anyhow::bail!("DynamoDB table {table} exists without the index {needed}: it was not created by buildstats. Point dynamodb.table at another name or delete it");
            }
        }
        if t.table_status() == Some(&TableStatus::Active) {
            return Ok(created);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("DynamoDB table {table} did not become active within a minute")
}
