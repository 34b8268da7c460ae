//! Creates the DynamoDB tables with the keys, indexes, stream and TTL the adapters use: the
//! same definitions as `template.yaml`, for a local emulator and the tests (a deployed stack
//! gets its tables from the template).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use streamcube_pipeline::ports::{StoreError, StoreResult};

use crate::AwsNames;
use crate::dynamo::store_err;
use crate::silver::{BY_HOUR, BY_VIEWER};

fn attr(name: &str) -> StoreResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(StoreError::backend)
}

fn key(name: &str, kind: KeyType) -> StoreResult<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(StoreError::backend)
}

fn index(
    name: &str,
    hash: &str,
    range: &str,
    projection: Projection,
) -> StoreResult<GlobalSecondaryIndex> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash)?)
        .key_schema(key(range, KeyType::Range)?)
        .projection(projection)
        .build()
        .map_err(StoreError::backend)
}

/// Creates the silver, cube and catalog tables if they do not exist.
pub async fn create_tables(client: &Client, names: &AwsNames) -> StoreResult<()> {
    let silver = client
        .create_table()
        .table_name(&names.silver_table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("event_id")?)
        .attribute_definitions(attr("hour_shard")?)
        .attribute_definitions(attr("viewer")?)
        .key_schema(key("event_id", KeyType::Hash)?)
        .global_secondary_indexes(index(
            BY_HOUR,
            "hour_shard",
            "event_id",
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )?)
        .global_secondary_indexes(index(
            BY_VIEWER,
            "viewer",
            "event_id",
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .non_key_attributes("hour")
                .build(),
        )?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(StoreError::backend)?,
        );
    ignore_exists(silver.send().await)?;
    if names.retention_days.is_some() {
        client
            .update_time_to_live()
            .table_name(&names.silver_table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires_at")
                    .build()
                    .map_err(StoreError::backend)?,
            )
            .send()
            .await
            .map_err(store_err)?;
    }
    let cube = client
        .create_table()
        .table_name(&names.cube_table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?);
    ignore_exists(cube.send().await)?;
    let catalog = client
        .create_table()
        .table_name(&names.catalog_table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("content_id")?)
        .key_schema(key("content_id", KeyType::Hash)?);
    ignore_exists(catalog.send().await)?;
    Ok(())
}

fn ignore_exists<T, E, R>(r: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>) -> StoreResult<()>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
        Err(e) => Err(store_err(e)),
    }
}
