//! The AWS SDK configuration every client shares.
//!
//! Loaded once per process and handed to the SQS and Bedrock clients, so they share one
//! credentials provider (and its cache and refreshes), one region lookup and one HTTP/TLS client
//! with its connection pool and root certificates, instead of each loading its own.

use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::AwsConfig;

/// The SDK's standard chain (environment, profile files, web identity, container and instance
/// metadata), with `aws.region` winning when set.
pub async fn sdk_config(aws: &AwsConfig) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if !aws.region.is_empty() {
        loader = loader.region(Region::new(aws.region.clone()));
    }
    loader.load().await
}
