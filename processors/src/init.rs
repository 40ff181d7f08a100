//! `buildstats admin init-stores`: create every store the sinks write to, idempotently.

use buildstats_core::config::Config;

use crate::sinks::{dynamodb, influxdb, opensearch, s3};

fn endpoint(config: &Config, own: &str) -> String {
    match (own, config.aws.endpoint_url.as_str()) {
        ("", "") => format!("AWS {}", config.aws.region),
        ("", shared) => shared.to_string(),
        (own, _) => own.to_string(),
    }
}

/// Create the DynamoDB runs table, the S3 bucket (with its staging expiry), the OpenSearch
/// index and alias, and the InfluxDB database, when missing.
/// Progress goes to stderr; the summary line says what was created.
pub async fn init_stores(config: &Config) -> anyhow::Result<()> {
    eprintln!("[1/4] DynamoDB table {} at {}", config.dynamodb.table, endpoint(config, &config.dynamodb.endpoint_url));
    let dynamo = dynamodb::client(config).await;
    let table_created = dynamodb::table::ensure_table(&dynamo, &config.dynamodb.table).await?;
    eprintln!("      {}", if table_created { "created (indexes by_repo, by_user)" } else { "already exists" });
    eprintln!("[2/4] S3 bucket {} at {}", config.s3.bucket, endpoint(config, &config.s3.endpoint_url));
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
    eprintln!("[3/4] OpenSearch index {} (alias {}) at {}", config.opensearch.index(), config.opensearch.alias, config.opensearch.url);
    let search = opensearch::client(config)?;
    let index_created = opensearch::index::ensure_index(&search, &config.opensearch).await?;
    eprintln!("      {}", if index_created { "created (explicit mapping, alias pointed at it)" } else { "already exists with the expected mapping" });
    eprintln!("[4/4] InfluxDB database {} at {}", config.influxdb.database, config.influxdb.url);
    let influx = influxdb::client(config)?;
    influxdb::ensure_database(&influx, &config.influxdb.retention_policy).await?;
    eprintln!(
        "      ready (retention policy: {})",
        if config.influxdb.retention_policy.is_empty() { "the database default" } else { config.influxdb.retention_policy.as_str() }
    );
    eprintln!(
        "stores ready: table {}, bucket {} (builds under {}/), index {} behind {}, database {}",
        config.dynamodb.table,
        config.s3.bucket,
        config.s3.prefix,
        config.opensearch.index(),
        config.opensearch.alias,
        config.influxdb.database
    );
    Ok(())
}
