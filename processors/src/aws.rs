//! AWS SDK set-up shared by the DynamoDB and S3 sinks, and how their errors are sorted into
//! "retry later" and "this record can never be written".

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use buildstats_core::config::AwsConfig;

use crate::sink::{Rejected, Transient};

/// The SDK config: region, optional custom endpoint, static credentials when configured
/// (else the default chain), few SDK-level retries (the sink's own backoff takes over) and
/// timeouts so a hung store (a frozen process, a black-holed network) fails fast instead of
/// blocking a partition forever.
///
/// `endpoint_override` (a store's own `endpoint_url`) wins over `aws.endpoint_url` when set.
pub async fn sdk_config(aws: &AwsConfig, endpoint_override: &str) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(aws.region.clone()))
        .retry_config(RetryConfig::standard().with_max_attempts(aws.sdk_max_attempts.max(1)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_millis(aws.attempt_timeout_ms.max(100)))
                .build(),
        );
    let endpoint = if endpoint_override.is_empty() { aws.endpoint_url.as_str() } else { endpoint_override };
    if !endpoint.is_empty() {
        loader = loader.endpoint_url(endpoint);
    }
    if !aws.access_key_id.is_empty() {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            &aws.access_key_id,
            &aws.secret_access_key,
            None,
            None,
            "buildstats-config",
        ));
    }
    loader.load().await
}

/// Error codes that mean the request itself can never succeed (the data is at fault, not
/// the store). Everything else (throttling, 5xx, timeouts, refused connections, missing
/// tables or buckets, bad credentials) is retried: an operator can fix those, and skipping
/// would lose data.
const PERMANENT_CODES: &[&str] = &[
    "ValidationException",
    "ItemCollectionSizeLimitExceededException",
    "EntityTooLarge",
    "InvalidArgument",
    "KeyTooLongError",
    "InvalidDigest",
    "BadDigest",
];

pub enum StoreError {
    Transient(Transient),
    Rejected(Rejected),
}

impl StoreError {
    /// As a sink's per-change answer: rejected for good, or retry.
    pub fn into_result<T>(self) -> Result<Result<T, Rejected>, Transient> {
        match self {
            StoreError::Transient(t) => Err(t),
            StoreError::Rejected(r) => Ok(Err(r)),
        }
    }
}

/// Sort an SDK error; `what` names the call for the message.
pub fn classify<E>(what: &str, err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = format!("{what}: {}", DisplayErrorContext(err));
    match err {
        SdkError::ServiceError(service) if service.err().code().is_some_and(|c| PERMANENT_CODES.contains(&c)) => {
            StoreError::Rejected(Rejected(text))
        }
        _ => StoreError::Transient(Transient(text)),
    }
}

/// The service error code, when the store answered one.
pub fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// The HTTP status the store answered, when it answered.
pub fn http_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}
