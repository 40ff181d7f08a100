//! The OpenSearch client for a config, and the one call shape every user of it needs: send
//! JSON (or NDJSON), get the status and the JSON answer back.

use std::time::Duration;

use buildstats_core::config::OpenSearchConfig;
use opensearch::auth::Credentials;
use opensearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::http::{Method, StatusCode, Url};
use opensearch::OpenSearch;
use serde_json::Value;

/// A configured client (`opensearch.url`, basic auth when set).
#[derive(Clone)]
pub struct SearchClient {
    client: OpenSearch,
    url: String,
}

/// A call that got no answer, or an answer that is not JSON: worth retrying.
#[derive(Debug, thiserror::Error)]
#[error("opensearch at {url}: {message}")]
pub struct Unreachable {
    pub url: String,
    pub message: String,
}

impl SearchClient {
    pub fn new(config: &OpenSearchConfig, timeout: Duration) -> anyhow::Result<SearchClient> {
        let url = Url::parse(&config.url).map_err(|e| anyhow::anyhow!("opensearch.url {:?} is not a URL: {e}", config.url))?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(timeout).disable_proxy();
        if !config.username.is_empty() || !config.password.is_empty() {
            builder = builder.auth(Credentials::Basic(config.username.clone(), config.password.clone()));
        }
        let transport = builder.build().map_err(|e| anyhow::anyhow!("opensearch client: {e}"))?;
        Ok(SearchClient { client: OpenSearch::new(transport), url: config.url.clone() })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Send `body` (JSON, or NDJSON when `ndjson`) and read the JSON answer, whatever the
    /// status: callers decide what a 404 or a 409 means.
    pub async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>, ndjson: bool) -> Result<(StatusCode, Value), Unreachable> {
        let mut headers = HeaderMap::new();
        let content_type = if ndjson { "application/x-ndjson" } else { "application/json" };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let unreachable = |message: String| Unreachable { url: self.url.clone(), message };
        let response = self
            .client
            .send(method, path, headers, None::<&()>, body, None)
            .await
            .map_err(|e| unreachable(format!("{method:?} {path}: {e}")))?;
        let status = response.status_code();
        let bytes = response.bytes().await.map_err(|e| unreachable(format!("{method:?} {path}: reading the answer: {e}")))?;
        if bytes.is_empty() {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            unreachable(format!("{method:?} {path}: answered {status} with a body that is not JSON ({e}): {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)])))
        })?;
        Ok((status, value))
    }

    /// [`SearchClient::call`] with a JSON body.
    pub async fn call_json(&self, method: Method, path: &str, body: &Value) -> Result<(StatusCode, Value), Unreachable> {
        self.call(method, path, Some(serde_json::to_vec(body).expect("json")), false).await
    }
}

/// The `reason` of an OpenSearch error answer, for messages.
pub fn error_reason(answer: &Value) -> String {
    let error = &answer["error"];
    match (error["type"].as_str(), error["reason"].as_str()) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        (None, Some(r)) => r.to_string(),
        _ if error.is_string() => error.as_str().unwrap_or_default().to_string(),
        _ => answer.to_string().chars().take(300).collect(),
    }
}
