//! The InfluxDB v1 HTTP API, as InfluxDB 1.x, 2.x (v1 compatibility) and 3 serve it:
//! `/write` (line protocol) and `/query` (InfluxQL), with v1 credentials or a token.

use std::time::Duration;

use buildstats_core::config::InfluxDbConfig;
use serde_json::Value;

#[derive(Clone)]
pub struct InfluxClient {
    http: reqwest::Client,
    config: InfluxDbConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// No answer, a 5xx, a throttle, a missing database or bad credentials: retry later (and
    /// fix the config, the message says how).
    #[error("influxdb at {url}: {message}")]
    Unavailable { url: String, message: String },
    /// The server refused the points or the statement itself (400).
    #[error("influxdb refused it: {0}")]
    Refused(String),
}

/// InfluxQL string literal: single quotes, with `\` and `'` escaped.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// InfluxQL identifier: double quotes, with `\` and `"` escaped.
pub fn quote_ident(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

impl InfluxClient {
    pub fn new(config: &InfluxDbConfig, timeout: Duration) -> anyhow::Result<InfluxClient> {
        reqwest::Url::parse(&config.url).map_err(|e| anyhow::anyhow!("influxdb.url {:?} is not a URL: {e}", config.url))?;
        let http = reqwest::Client::builder().timeout(timeout).no_proxy().build()?;
        Ok(InfluxClient { http, config: config.clone() })
    }

    pub fn url(&self) -> &str {
        &self.config.url
    }

    pub fn database(&self) -> &str {
        &self.config.database
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.config.url.trim_end_matches('/'))
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut request = request;
        if !self.config.username.is_empty() || !self.config.password.is_empty() {
            request = request.query(&[("u", self.config.username.as_str()), ("p", self.config.password.as_str())]);
        }
        if !self.config.token.is_empty() {
            request = request.header("Authorization", format!("Token {}", self.config.token));
        }
        request
    }

    fn unavailable(&self, message: String) -> InfluxError {
        InfluxError::Unavailable { url: self.config.url.clone(), message }
    }

    async fn judge(&self, what: &str, response: Result<reqwest::Response, reqwest::Error>) -> Result<Value, InfluxError> {
        let response = response.map_err(|e| self.unavailable(format!("{what}: {e}")))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.unavailable(format!("{what}: reading the answer: {e}")))?;
        let json: Value = if body.trim().is_empty() { Value::Null } else { serde_json::from_str(&body).unwrap_or(Value::String(body.clone())) };
        let message = || json["error"].as_str().map(String::from).unwrap_or_else(|| body.chars().take(300).collect());
        match status.as_u16() {
            200..=299 => match json["results"].as_array().and_then(|r| r.iter().find_map(|r| r["error"].as_str())) {
                // A statement error comes back as 200 with an error per result.
                Some(error) => Err(InfluxError::Refused(format!("{what}: {error}"))),
                None => Ok(json),
            },
            400 => Err(InfluxError::Refused(format!("{what}: {}", message()))),
            401 | 403 => Err(self.unavailable(format!(
                "{what}: {status}: {} (check influxdb.username/password or influxdb.token)",
                message()
            ))),
            404 => Err(self.unavailable(format!("{what}: {status}: {} (run `buildstats admin init-stores`)", message()))),
            _ => Err(self.unavailable(format!("{what}: {status}: {}", message()))),
        }
    }

    /// Write line-protocol points (nanosecond times) to the configured database and
    /// retention policy. Rewriting a point overwrites it.
    pub async fn write(&self, lines: Vec<u8>) -> Result<(), InfluxError> {
        let mut params = vec![("db", self.config.database.as_str()), ("precision", "ns")];
        if !self.config.retention_policy.is_empty() {
            params.push(("rp", self.config.retention_policy.as_str()));
        }
        let request = self.authed(self.http.post(self.endpoint("write")).query(&params)).body(lines);
        self.judge("write", request.send().await).await.map(|_| ())
    }

    /// Run InfluxQL against the configured database; times come back in `epoch` units
    /// (`ns`, `ms`, ...) or RFC 3339 when `None`. Statements that change data go by POST (parameters in the query string, which
    /// InfluxDB takes for both).
    pub async fn query(&self, q: &str, epoch: Option<&str>, post: bool) -> Result<Value, InfluxError> {
        let mut params = vec![("db", self.config.database.as_str()), ("q", q)];
        if let Some(epoch) = epoch {
            params.push(("epoch", epoch));
        }
        if !self.config.retention_policy.is_empty() {
            params.push(("rp", self.config.retention_policy.as_str()));
        }
        let request = if post { self.http.post(self.endpoint("query")).query(&params) } else { self.http.get(self.endpoint("query")).query(&params) };
        self.judge("query", self.authed(request).send().await).await
    }

    /// `GET /ping`: the server answers.
    pub async fn ping(&self) -> Result<(), InfluxError> {
        let response = self.authed(self.http.get(self.endpoint("ping"))).send().await;
        self.judge("ping", response).await.map(|_| ())
    }
}

/// The rows of the first series of the first result: `(columns, values)`.
pub fn rows(answer: &Value) -> Vec<&Value> {
    answer["results"][0]["series"].as_array().map(|s| s.iter().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_identifiers_are_escaped() {
        assert_eq!(quote_literal("it's"), r"'it\'s'");
        assert_eq!(quote_literal(r"a\b"), r"'a\\b'");
        assert_eq!(quote_ident(r#"we"ird"#), r#""we\"ird""#);
    }
}
