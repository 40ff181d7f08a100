//! The four stores as the query API reads them: the same clients and layouts the sinks
//! write with, every call bounded by `query.store_timeout_ms`.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use buildstats_core::config::Config;
use bytes::Bytes;
use opensearch::http::Method;
use processors::sink::BuildKey;
use processors::sinks::influxdb::client::InfluxClient;
use processors::sinks::opensearch::client::{error_reason, SearchClient};
use processors::sinks::s3::keys::BuildPrefix;
use processors::sinks::{dynamodb, s3};
use serde_json::{Map, Number, Value};

use crate::bounded;
use crate::error::ApiError;

pub struct Stores {
    search: SearchClient,
    alias: String,
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    influx: InfluxClient,
    timeout: Duration,
}

/// An object read from S3: its content type and a body to stream.
pub struct Object {
    pub content_type: Option<String>,
    pub length: Option<i64>,
    pub body: ByteStream,
}

/// DynamoDB attribute to JSON (numbers as integers when they are).
pub fn json_of(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => n
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| n.parse::<f64>().map(|f| Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)))
            .unwrap_or(Value::Null),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::L(items) => Value::Array(items.iter().map(json_of).collect()),
        AttributeValue::M(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), json_of(v))).collect()),
        AttributeValue::Ss(items) => Value::Array(items.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(items) => Value::Array(items.iter().filter_map(|n| n.parse::<f64>().ok()).filter_map(Number::from_f64).map(Value::Number).collect()),
        _ => Value::Null,
    }
}

impl Stores {
    pub async fn from_config(config: &Config) -> anyhow::Result<Stores> {
        let timeout = Duration::from_millis(config.query.store_timeout_ms.max(1));
        Ok(Stores {
            search: SearchClient::new(&config.opensearch, timeout)?,
            alias: config.opensearch.alias.clone(),
            dynamo: dynamodb::client(config).await,
            table: config.dynamodb.table.clone(),
            s3: s3::client(config).await,
            bucket: config.s3.bucket.clone(),
            prefix: config.s3.prefix.clone(),
            influx: InfluxClient::new(&config.influxdb, timeout)?,
            timeout,
        })
    }

    pub fn build_prefix(&self, key: &BuildKey) -> BuildPrefix {
        BuildPrefix::new(&self.prefix, key)
    }

    /// Search the builds index (through its alias).
    pub async fn search(&self, body: &Value) -> Result<Value, ApiError> {
        let path = format!("/{}/_search", self.alias);
        let (status, answer) = bounded("search", self.timeout, self.search.call_json(Method::Post, &path, body))
            .await?
            .map_err(|e| ApiError::unavailable("search", e))?;
        if !status.is_success() {
            return Err(ApiError::unavailable("search", format!("{status}: {}", error_reason(&answer))));
        }
        Ok(answer)
    }

    /// A build's run record, as JSON; `None` when the table has none.
    pub async fn run_record(&self, key: &BuildKey) -> Result<Option<Map<String, Value>>, ApiError> {
        let call = self.dynamo.get_item().table_name(&self.table).key(dynamodb::item::PK, AttributeValue::S(key.joined())).consistent_read(true).send();
        let answer = bounded("run record", self.timeout, call).await?.map_err(|e| ApiError::unavailable("run record", aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
        Ok(answer.item.map(|item| item.iter().map(|(k, v)| (k.clone(), json_of(v))).collect()))
    }

    /// An object of the archive; `None` when there is none.
    pub async fn object(&self, key: &str) -> Result<Option<Object>, ApiError> {
        let call = self.s3.get_object().bucket(&self.bucket).key(key).send();
        match bounded("archive", self.timeout, call).await? {
            Ok(o) => Ok(Some(Object { content_type: o.content_type, length: o.content_length, body: o.body })),
            Err(e) if e.as_service_error().map(|s| s.is_no_such_key()).unwrap_or(false) => Ok(None),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
            Err(e) => Err(ApiError::unavailable("archive", aws_sdk_s3::error::DisplayErrorContext(&e))),
        }
    }

    /// An object's bytes (for small JSON objects); `None` when there is none.
    pub async fn object_bytes(&self, key: &str) -> Result<Option<Bytes>, ApiError> {
        let Some(object) = self.object(key).await? else { return Ok(None) };
        let bytes = bounded("archive", self.timeout, object.body.collect()).await?.map_err(|e| ApiError::unavailable("archive", e))?;
        Ok(Some(bytes.into_bytes()))
    }

    /// Every key under `prefix` (paged through).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let call = self.s3.list_objects_v2().bucket(&self.bucket).prefix(prefix).set_continuation_token(token.take()).send();
            let page = bounded("archive", self.timeout, call).await?.map_err(|e| ApiError::unavailable("archive", aws_sdk_s3::error::DisplayErrorContext(&e)))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(String::from)));
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(keys),
            }
        }
    }

    /// InfluxQL against the indicators database, times in ms.
    pub async fn influx(&self, statement: &str) -> Result<Value, ApiError> {
        bounded("indicators", self.timeout, self.influx.query(statement, Some("ms"), false))
            .await?
            .map_err(|e| ApiError::unavailable("indicators", e))
    }

    /// `/readyz`: every store answers.
    pub async fn check_ready(&self) -> Result<(), String> {
        let (status, answer) = self.search.call(Method::Get, &format!("/_alias/{}", self.alias), None, false).await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("opensearch alias {}: {status}: {}", self.alias, error_reason(&answer)));
        }
        self.dynamo.describe_table().table_name(&self.table).send().await.map_err(|e| format!("dynamodb table {}: {}", self.table, aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
        self.s3.head_bucket().bucket(&self.bucket).send().await.map_err(|e| format!("s3 bucket {}: {}", self.bucket, aws_sdk_s3::error::DisplayErrorContext(&e)))?;
        self.influx.ping().await.map_err(|e| e.to_string())
    }
}
