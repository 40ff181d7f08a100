//! The OpenSearch sink: one search document per build ([`document`]), in the versioned index
//! behind `opensearch.alias` ([`index`]), for lists, filters, facets and free text.
//!
//! A batch is one `_bulk` request, its actions in partition order. Each item's answer is
//! read on its own:
//! - 2xx, a version conflict (409: an older event, or a repeated final report) and a
//!   missing document for a live update or a delete (404) are success;
//! - 429 and 5xx fail the batch for a retry (every action is idempotent, so re-sending the
//!   ones that went through changes nothing);
//! - any other refusal (a mapping error, say) rejects that change: it is dead-lettered.
//!
//! Artifact uploads change nothing here. A tombstone deletes the document ([`delete`]).

pub mod client;
pub mod delete;
pub mod document;
pub mod index;

use std::sync::Arc;
use std::time::Duration;

use buildstats_core::config::Config;
use opensearch::http::Method;
use serde_json::{json, Value};

use crate::sink::{BatchOutcome, Change, ChangeKind, Rejected, Sink, Transient};
use client::{error_reason, SearchClient};

pub const NAME: &str = "opensearch";

pub struct OpenSearchSink {
    client: SearchClient,
    alias: String,
}

/// The client for a config, with the store call timeout of `aws.attempt_timeout_ms` (the
/// sinks' one "longest wait for a store" setting).
pub fn client(config: &Config) -> anyhow::Result<SearchClient> {
    SearchClient::new(&config.opensearch, Duration::from_millis(config.aws.attempt_timeout_ms.max(1)))
}

impl OpenSearchSink {
    pub fn from_config(config: &Config) -> anyhow::Result<OpenSearchSink> {
        Ok(OpenSearchSink { client: client(config)?, alias: config.opensearch.alias.clone() })
    }

    /// The bulk lines of one change: nothing (no-op), or an action line and maybe a source.
    fn actions(&self, change: &Change) -> Result<Vec<Value>, Rejected> {
        let id = change.key.joined();
        let external = |version: i64| json!({"index": {"_index": self.alias, "_id": id, "version": version, "version_type": "external"}});
        Ok(match &change.kind {
            ChangeKind::Started(e) => vec![external(document::STARTED_VERSION), document::run_started(&change.key, e)?],
            ChangeKind::Ended(e) => vec![external(document::FINAL_VERSION), document::run_ended(&change.key, e)?],
            ChangeKind::WorkunitsUpdated(e) => vec![
                json!({"update": {"_index": self.alias, "_id": id, "retry_on_conflict": 3}}),
                json!({"doc": document::live_update(e.last_update, e.header.emitted_at)}),
            ],
            ChangeKind::ArtifactsUploaded(_) => Vec::new(),
            ChangeKind::Tombstone => vec![delete::delete_action(&self.alias, &change.key)],
        })
    }
}

/// What one bulk item's answer means for its change.
fn item_outcome(action: &str, item: &Value) -> Result<Result<(), Rejected>, Transient> {
    let status = item["status"].as_u64().unwrap_or(0);
    match status {
        200..=299 | 409 => Ok(Ok(())),
        404 if action == "update" || action == "delete" => Ok(Ok(())),
        429 | 500..=599 | 0 => Err(Transient(format!("bulk {action}: {status}: {}", error_reason(item)))),
        _ => Ok(Err(Rejected(format!("opensearch refused the {action}: {status}: {}", error_reason(item))))),
    }
}

impl Sink for OpenSearchSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn needs_payloads(&self) -> bool {
        false
    }

    async fn write(&self, batch: Arc<Vec<Change>>) -> BatchOutcome {
        let mut outcomes: Vec<Result<(), Rejected>> = Vec::with_capacity(batch.len());
        let mut body = Vec::new();
        // (index in batch, action name) of each bulk item, in order.
        let mut items: Vec<(usize, &'static str)> = Vec::new();
        for (i, change) in batch.iter().enumerate() {
            match self.actions(change) {
                Ok(lines) => {
                    if let Some(first) = lines.first() {
                        let action = ["index", "update", "delete"].into_iter().find(|a| first.get(*a).is_some()).expect("known action");
                        items.push((i, action));
                    }
                    for line in lines {
                        serde_json::to_writer(&mut body, &line).expect("json");
                        body.push(b'\n');
                    }
                    outcomes.push(Ok(()));
                }
                Err(rejected) => outcomes.push(Err(rejected)),
            }
        }
        if items.is_empty() {
            return Ok(outcomes);
        }
        let (status, answer) = self.client.call(Method::Post, "/_bulk", Some(body), true).await.map_err(|e| Transient(e.to_string()))?;
        if !status.is_success() {
            let message = format!("_bulk answered {status}: {}", error_reason(&answer));
            // The whole request was refused: a 4xx here is not about one change (a missing
            // alias, auth), so it is retried like an outage, never dead-lettered.
            return Err(Transient(message));
        }
        let answered = answer["items"].as_array().map(Vec::as_slice).unwrap_or_default();
        if answered.len() != items.len() {
            return Err(Transient(format!("_bulk answered {} items for {} actions", answered.len(), items.len())));
        }
        for ((i, action), item) in items.iter().zip(answered) {
            outcomes[*i] = item_outcome(action, &item[*action])?;
        }
        Ok(outcomes)
    }

    async fn check_ready(&self) -> Result<(), String> {
        match self.client.call(Method::Get, &format!("/_alias/{}", self.alias), None, false).await {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((status, answer)) => Err(format!(
                "opensearch alias {} at {}: {status}: {} (run `buildstats admin init-stores`)",
                self.alias,
                self.client.url(),
                error_reason(&answer)
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_items_are_judged_one_by_one() {
        let ok = |v: Value| matches!(item_outcome("index", &v), Ok(Ok(())));
        assert!(ok(json!({"status": 201})));
        assert!(ok(json!({"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "older"}})));
        assert!(matches!(item_outcome("update", &json!({"status": 404})), Ok(Ok(()))));
        assert!(matches!(item_outcome("delete", &json!({"status": 404})), Ok(Ok(()))));
        assert!(matches!(item_outcome("index", &json!({"status": 404})), Ok(Err(_))), "an index into nothing is refused");
        assert!(matches!(item_outcome("index", &json!({"status": 429})), Err(_)));
        assert!(matches!(item_outcome("index", &json!({"status": 503})), Err(_)));
        let Ok(Err(Rejected(why))) = item_outcome("index", &json!({"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad date"}})) else {
            panic!("a mapping error is a rejection")
        };
        assert!(why.contains("mapper_parsing_exception: bad date"), "{why}");
    }
}
