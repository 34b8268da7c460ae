//! The pipeline's ports on AWS.
//!
//! - [`silver::DynamoSilver`]: silver events in DynamoDB, one item per event keyed by `event_id`,
//!   with the `by_hour` and `by_viewer` indexes; the table's stream feeds the consolidator.
//! - [`gold::DynamoGold`]: the cube's cell blocks, each day's manifest and the generation registry
//!   in the cube table; [`meta::DynamoLedger`] keeps the processed-object ledger there too.
//! - [`meta::DynamoCatalog`]: reference data.
//! - [`glue::GlueCatalog`]: the gold table's day partitions in the Glue Data Catalog.
//! - S3 (bronze and lake) through `object_store`'s S3 client.
//!
//! Clients are built once per process ([`AwsBackend::connect`]) from the default credential chain;
//! `AWS_ENDPOINT_URL` points every client at a local emulator.

pub mod changes;
pub mod dynamo;
pub mod glue;
pub mod gold;
pub mod meta;
pub mod provision;
pub mod secret;
pub mod silver;

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use streamcube_pipeline::Stores;

/// Why the AWS backend cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{0} must be set ({1})")]
    Missing(&'static str, &'static str),
    #[error("{0} is not valid: {1}")]
    Invalid(&'static str, String),
    #[error("the S3 client for bucket {bucket} cannot be built")]
    S3 {
        bucket: String,
        #[source]
        source: object_store::Error,
    },
    #[error("the pseudonymization key cannot be read from Secrets Manager")]
    Secret(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The names of a deployment's resources, from the function's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsNames {
    pub silver_table: String,
    pub cube_table: String,
    pub catalog_table: String,
    pub bronze_bucket: String,
    pub lake_bucket: String,
    pub glue_database: String,
    pub glue_table: String,
    /// Days a silver event is kept after it happened (the table's TTL); `None`: forever.
    pub retention_days: Option<u32>,
}

impl AwsNames {
    /// Reads the `STREAMCUBE_*` names through `get`.
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<Self, AwsError> {
        let need = |name: &'static str, what: &'static str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(AwsError::Missing(name, what))
        };
        let retention_days =
            match get("STREAMCUBE_RETENTION_DAYS").filter(|v| !v.is_empty()) {
                None => None,
                Some(v) => Some(v.trim().parse::<u32>().ok().filter(|d| *d > 0).ok_or_else(
                    || AwsError::Invalid("STREAMCUBE_RETENTION_DAYS", format!("`{v}`: days, > 0")),
                )?),
            };
        Ok(AwsNames {
            silver_table: need("STREAMCUBE_SILVER_TABLE", "the silver events table")?,
            cube_table: need("STREAMCUBE_CUBE_TABLE", "the gold cube table")?,
            catalog_table: need("STREAMCUBE_CATALOG_TABLE", "the catalog table")?,
            bronze_bucket: need("STREAMCUBE_BRONZE_BUCKET", "the bronze bucket")?,
            lake_bucket: need("STREAMCUBE_LAKE_BUCKET", "the lake bucket")?,
            glue_database: need("STREAMCUBE_GLUE_DATABASE", "the Glue database")?,
            glue_table: need("STREAMCUBE_GLUE_TABLE", "the Glue table of the cube")?,
            retention_days,
        })
    }
}

/// How long an S3 request may take: `connect` to get a connection, `request` for the whole
/// request, body included; a failed request is retried (a broken body resumed from its offset)
/// until `retry_window` after it started. These are the S3 client's defaults (5 s, 30 s, 3 min).
/// Bronze objects are read in ranges fetched whole
/// ([`streamcube_pipeline::bronze::object_bytes`]), so a reader slower than `request` is fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S3Timeouts {
    pub connect: Duration,
    pub request: Duration,
    pub retry_window: Duration,
}

impl Default for S3Timeouts {
    fn default() -> Self {
        S3Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            retry_window: Duration::from_secs(3 * 60),
        }
    }
}

/// The SDK clients of one process, and the resource names.
#[derive(Clone, Debug)]
pub struct AwsBackend {
    pub names: AwsNames,
    pub s3_timeouts: S3Timeouts,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub glue: aws_sdk_glue::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sdk_config: aws_config::SdkConfig,
}

impl AwsBackend {
    /// Loads the default credential chain and region once and builds every client.
    pub async fn connect(names: AwsNames) -> Self {
        let sdk_config = aws_config::load_from_env().await;
        AwsBackend {
            names,
            s3_timeouts: S3Timeouts::default(),
            dynamo: aws_sdk_dynamodb::Client::new(&sdk_config),
            glue: aws_sdk_glue::Client::new(&sdk_config),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk_config),
            sdk_config,
        }
    }

    /// An S3 bucket as an object store. Region, credentials and `AWS_ENDPOINT_URL` come from the
    /// environment, as for the SDK clients.
    pub fn bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, AwsError> {
        let t = self.s3_timeouts;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(t.connect)
                    .with_timeout(t.request),
            )
            .with_retry(RetryConfig {
                retry_timeout: t.retry_window,
                ..RetryConfig::default()
            });
        if let Some(region) = self.sdk_config.region() {
            builder = builder.with_region(region.as_ref());
        }
        let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .ok();
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|source| AwsError::S3 {
            bucket: bucket.to_owned(),
            source,
        })?;
        Ok(Arc::new(store))
    }

    /// Every port on this account's resources.
    pub fn stores(&self) -> Result<Stores, AwsError> {
        let n = &self.names;
        Ok(Stores {
            silver: Arc::new(silver::DynamoSilver::new(
                self.dynamo.clone(),
                &n.silver_table,
                n.retention_days,
            )),
            gold: Arc::new(gold::DynamoGold::new(self.dynamo.clone(), &n.cube_table)),
            catalog: Arc::new(meta::DynamoCatalog::new(
                self.dynamo.clone(),
                &n.catalog_table,
            )),
            ledger: Arc::new(meta::DynamoLedger::new(self.dynamo.clone(), &n.cube_table)),
            bronze: self.bucket(&n.bronze_bucket)?,
            lake: self.bucket(&n.lake_bucket)?,
            partitions: Some(Arc::new(glue::GlueCatalog::new(
                self.glue.clone(),
                &n.glue_database,
                &n.glue_table,
                &format!(
                    "s3://{}/{}",
                    n.lake_bucket,
                    streamcube_pipeline::export::GOLD_PREFIX
                ),
            ))),
            changes: Arc::new(changes::DynamoChanges::new(
                self.dynamo.clone(),
                &n.cube_table,
            )),
        })
    }
}
