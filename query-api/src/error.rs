//! Every refusal of the query API: a status and `{"error": {"message": ...}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: the message says which parameter and what is accepted.
    #[error("{0}")]
    BadRequest(String),
    #[error("no credentials: send `Authorization: Bearer <token>` (a read token: `buildstats admin token create --org ORG --repo REPO --scope read`)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// Also what another tenant's repository and builds answer: never a hint they exist.
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed here")]
    MethodNotAllowed,
    /// A store did not answer (in time): try again.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    pub fn unavailable(store: &str, error: impl std::fmt::Display) -> ApiError {
        tracing::warn!(store, error = %error, "store call failed");
        ApiError::Unavailable(format!("the {store} store did not answer; try again shortly"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(json!({"error": {"message": self.to_string()}}))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("5"));
        }
        response
    }
}
