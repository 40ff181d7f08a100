//! Creating the bucket (`buildstats admin init-stores`): idempotent, with the lifecycle rule
//! that expires staged chunks whose completing event never came.

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};
use aws_sdk_s3::Client;

use crate::aws::error_code;

/// S3's bucket naming rules, checked before any call so a typo gets a clear message.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!("s3.bucket {name:?} is not a valid bucket name: 3-63 characters of a-z 0-9 . -, starting and ending with a letter or digit"))
    }
}

/// Create the bucket when missing and set the staging expiry. Returns whether it was created.
pub async fn ensure_bucket(client: &Client, bucket: &str, region: &str, staging_prefix: &str, expiry_days: i32) -> anyhow::Result<bool> {
    check_bucket_name(bucket).map_err(anyhow::Error::msg)?;
    let mut create = client.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region)).build(),
        );
    }
    // us-east-1 answers CreateBucket with 200 for a bucket its caller already owns: ask first.
    let exists = client.head_bucket().bucket(bucket).send().await.is_ok();
    let created = if exists { false } else { match create.send().await {
        Ok(_) => true,
        Err(e) if matches!(error_code(&e), Some("BucketAlreadyOwnedByYou")) => false,
        Err(e) if matches!(error_code(&e), Some("BucketAlreadyExists")) => {
            anyhow::bail!("S3 bucket {bucket} belongs to someone else: choose another s3.bucket")
        }
        Err(e) => anyhow::bail!(
            "cannot create S3 bucket {bucket}: {}. Check aws.endpoint_url, aws.region and the credentials",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        ),
    } };
    let rule = LifecycleRule::builder()
        .id("buildstats-expire-staged-chunks")
        .filter(LifecycleRuleFilter::builder().prefix(format!("{}/", staging_prefix.trim_matches('/'))).build())
        .status(ExpirationStatus::Enabled)
        .expiration(LifecycleExpiration::builder().days(expiry_days.max(1)).build())
        .build()?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(BucketLifecycleConfiguration::builder().rules(rule).build()?)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot set the staging expiry on bucket {bucket}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(check_bucket_name("buildstats").is_ok());
        assert!(check_bucket_name("my.build-stats1").is_ok());
        for bad in ["b", "Buildstats", "-x-", "a..b", "under_score"] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
