//! The DynamoDB sink: one item per build in the runs table (layout in [`item`]).
//!
//! Rules, enforced by conditional writes so that any record repeated any number of times,
//! by any number of consumers, leaves the item as one delivery would:
//! - run start creates the item only if the build has none (never over a final record);
//! - the first final report wins: it writes over a missing or `running` item only;
//! - live workunit updates touch `running` items only, and never move progress backwards;
//! - artifact uploads add their ids to an existing item;
//! - a tombstone deletes the item ([`delete`]).

pub mod delete;
pub mod item;
pub mod table;

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::Client;
use buildstats_core::config::Config;

use crate::aws::{classify, error_code};
use crate::sink::{per_build, BatchOutcome, Change, ChangeKind, Rejected, Sink, Transient};
use item::{PK, RUNNING, STATE};

pub const NAME: &str = "dynamodb";

pub struct DynamoDbSink {
    client: Client,
    table: String,
    concurrency: usize,
}

type WriteResult = Result<Result<(), Rejected>, Transient>;

impl DynamoDbSink {
    pub fn new(client: Client, config: &Config) -> DynamoDbSink {
        DynamoDbSink { client, table: config.dynamodb.table.clone(), concurrency: config.sinks.write_concurrency.max(1) }
    }

    pub async fn from_config(config: &Config) -> DynamoDbSink {
        DynamoDbSink::new(client(config).await, config)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The DynamoDB client for a config (`dynamodb.endpoint_url`, else `aws.endpoint_url`).
pub async fn client(config: &Config) -> Client {
    let sdk = crate::aws::sdk_config(&config.aws, &config.dynamodb.endpoint_url).await;
    Client::new(&sdk)
}

impl DynamoDbSink {
    /// Put a whole item under the condition `condition` adds (a failed condition is success:
    /// see [`conditional`]).
    async fn put_if(
        &self,
        what: &str,
        item: Result<item::Item, Rejected>,
        condition: impl FnOnce(PutItemFluentBuilder) -> PutItemFluentBuilder,
    ) -> WriteResult {
        let item = match item {
            Ok(i) => i,
            Err(r) => return Ok(Err(r)),
        };
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        conditional(what, condition(put).send().await.map(|_| ()))
    }

    async fn write_one(&self, change: &Change) -> WriteResult {
        let key = &change.key;
        match &change.kind {
            ChangeKind::Started(event) => {
                self.put_if("put run start", item::run_started(key, event), |put| {
                    put.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", PK)
                })
                .await
            }
            ChangeKind::Ended(event) => {
                self.put_if("put final report", item::run_ended(key, event), |put| {
                    put.condition_expression("attribute_not_exists(#pk) OR #state = :running")
                        .expression_attribute_names("#pk", PK)
                        .expression_attribute_names("#state", STATE)
                        .expression_attribute_values(":running", AttributeValue::S(RUNNING.into()))
                })
                .await
            }
            ChangeKind::WorkunitsUpdated(event) => {
                let mut update = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key(PK, AttributeValue::S(key.joined()))
                    .expression_attribute_names("#state", STATE)
                    .expression_attribute_names("#wc", "workunit_count")
                    .expression_attribute_values(":running", AttributeValue::S(RUNNING.into()))
                    .expression_attribute_values(":wc", AttributeValue::N(event.workunit_count.to_string()));
                update = match event.last_update {
                    Some(last) => update
                        .update_expression("SET #wc = :wc, #lu = :lu")
                        .condition_expression("#state = :running AND (attribute_not_exists(#lu) OR #lu <= :lu)")
                        .expression_attribute_names("#lu", "last_update")
                        .expression_attribute_values(":lu", AttributeValue::N(last.to_string())),
                    None => update
                        .update_expression("SET #wc = :wc")
                        .condition_expression("#state = :running AND (attribute_not_exists(#wc) OR #wc <= :wc)"),
                };
                conditional("update live progress", update.send().await.map(|_| ()))
            }
            ChangeKind::ArtifactsUploaded(event) => {
                let ids: Vec<String> = event.artifacts.iter().map(|a| a.artifact_id.clone()).collect();
                if ids.is_empty() {
                    return Ok(Ok(()));
                }
                let sent = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key(PK, AttributeValue::S(key.joined()))
                    .update_expression("ADD #ids :ids")
                    .condition_expression("attribute_exists(#pk)")
                    .expression_attribute_names("#ids", "artifact_ids")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_values(":ids", AttributeValue::Ss(ids))
                    .send()
                    .await;
                conditional("add artifact ids", sent.map(|_| ()))
            }
            ChangeKind::Tombstone => delete::delete_build(&self.client, &self.table, key).await,
        }
    }
}

/// A failed condition means "already applied, or not applicable": the rules above, not an
/// error.
fn conditional<E>(what: &str, sent: Result<(), aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>) -> WriteResult
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match sent {
        Ok(()) => Ok(Ok(())),
        Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => Ok(Ok(())),
        Err(e) => classify(what, &e).into_result(),
    }
}

impl Sink for DynamoDbSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn needs_payloads(&self) -> bool {
        false
    }

    async fn write(&self, batch: Arc<Vec<Change>>) -> BatchOutcome {
        per_build(&batch, self.concurrency, |i| self.write_one(&batch[i])).await
    }

    async fn check_ready(&self) -> Result<(), String> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("dynamodb table {}: {}", self.table, aws_sdk_dynamodb::error::DisplayErrorContext(&e)))
    }
}
