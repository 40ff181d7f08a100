//! `buildstats admin init-stores`: create every store the sinks write to, idempotently.

use buildstats_core::config::Config;

use crate::sinks::{dynamodb, s3};

fn endpoint(config: &Config, own: &str) -> String {
    match (own, config.aws.endpoint_url.as_str()) {
        ("", "") => format!("AWS {}", config.aws.region),
        ("", shared) => shared.to_string(),
        (own, _) => own.to_string(),
    }
}

/// Create the DynamoDB runs table and the S3 bucket (with its staging expiry) when missing.
/// Progress goes to stderr; the summary line says what was created.
pub async fn init_stores(config: &Config) -> anyhow::Result<()> {
    eprintln!("[1/2] DynamoDB table {} at {}", config.dynamodb.table, endpoint(config, &config.dynamodb.endpoint_url));
    let dynamo = dynamodb::client(config).await;
    let table_created = dynamodb::table::ensure_table(&dynamo, &config.dynamodb.table).await?;
    eprintln!("      {}", if table_created { "created (indexes by_repo, by_user)" } else { "already exists" });
    eprintln!("[2/2] S3 bucket {} at {}", config.s3.bucket, endpoint(config, &config.s3.endpoint_url));
    let s3_client = s3::client(config).await;
    let bucket_created = s3::bucket::ensure_bucket(
        &s3_client,
        &config.s3.bucket,
        &config.aws.region,
        &config.sinks.staging_prefix,
        config.sinks.staging_expiry_days,
    )
    .await?;
    eprintln!(
        "      {}; staged chunks under {}/ expire after {} days",
        if bucket_created { "created" } else { "already exists" },
        config.sinks.staging_prefix,
        config.sinks.staging_expiry_days
    );
    eprintln!("stores ready: table {}, bucket {} (builds under {}/)", config.dynamodb.table, config.s3.bucket, config.s3.prefix);
    Ok(())
}
