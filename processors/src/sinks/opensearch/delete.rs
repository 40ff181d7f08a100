//! The OpenSearch sink deletes a build: a `delete` action on its document in the same
//! `_bulk` as the batch's other changes, so it applies in partition order. A document that is
//! not there (404) is already deleted.

use serde_json::{json, Value};

use crate::sink::BuildKey;

/// The bulk action line deleting `key`'s document.
pub fn delete_action(alias: &str, key: &BuildKey) -> Value {
    json!({"delete": {"_index": alias, "_id": key.joined()}})
}
