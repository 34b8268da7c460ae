//! The gold table in the Glue Data Catalog: one partition per published day, pointing at the
//! day's Parquet export, so Athena, Redshift Spectrum, EMR and QuickSight read gold with no
//! crawler. The database and the table are created when missing (the stack normally has them).

use async_trait::async_trait;
use aws_sdk_glue::Client;
use aws_sdk_glue::error::ProvideErrorMetadata;
use aws_sdk_glue::types::{
    Column, DatabaseInput, PartitionInput, SerDeInfo, StorageDescriptor, TableInput,
};
use chrono::NaiveDate;
use streamcube_pipeline::ports::{PartitionCatalog, StoreError, StoreResult};
use tokio::sync::OnceCell;

use crate::dynamo::store_err;

/// The columns of the Parquet files, as Glue types (the day is the partition key).
pub const COLUMNS: &[(&str, &str)] = &[
    ("level", "string"),
    ("hour", "int"),
    ("country", "string"),
    ("device", "string"),
    ("genre", "string"),
    ("content_id", "string"),
    ("plays", "bigint"),
    ("watch_seconds", "bigint"),
    ("completed", "bigint"),
    ("buffering_ms", "bigint"),
    ("bitrate_sum", "bigint"),
    ("bitrate_count", "bigint"),
    ("unique_viewers", "bigint"),
];

#[derive(Debug)]
pub struct GlueCatalog {
    client: Client,
    database: String,
    table: String,
    /// `s3://<lake>/gold/cube/`
    location: String,
    ready: OnceCell<()>,
}

fn build_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend(e)
}

fn storage(location: String) -> StoreResult<StorageDescriptor> {
    let columns = COLUMNS
        .iter()
        .map(|(name, ty)| {
            Column::builder()
                .name(*name)
                .r#type(*ty)
                .build()
                .map_err(build_err)
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(location)
        .input_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                )
                .build(),
        )
        .build())
}

impl GlueCatalog {
    pub fn new(client: Client, database: &str, table: &str, location: &str) -> Self {
        GlueCatalog {
            client,
            database: database.to_owned(),
            table: table.to_owned(),
            location: format!("{}/", location.trim_end_matches('/')),
            ready: OnceCell::new(),
        }
    }

    fn day_location(&self, day: NaiveDate) -> String {
        format!("{}day={}/", self.location, day.format("%Y-%m-%d"))
    }

    /// Creates the database and the table if they are missing (once per process).
    async fn ensure_table(&self) -> StoreResult<()> {
        match self.client.get_database().name(&self.database).send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("EntityNotFoundException") => {
                let input = DatabaseInput::builder()
                    .name(&self.database)
                    .description("streamcube gold layer")
                    .build()
                    .map_err(build_err)?;
                match self
                    .client
                    .create_database()
                    .database_input(input)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code() == Some("AlreadyExistsException") => {}
                    Err(e) => return Err(store_err(e)),
                }
            }
            Err(e) => return Err(store_err(e)),
        }
        match self
            .client
            .get_table()
            .database_name(&self.database)
            .name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("EntityNotFoundException") => {
                let input = TableInput::builder()
                    .name(&self.table)
                    .description("The streamcube data cube: one row per cell, day and hour levels")
                    .table_type("EXTERNAL_TABLE")
                    .parameters("classification", "parquet")
                    .parameters("EXTERNAL", "TRUE")
                    .partition_keys(
                        Column::builder()
                            .name("day")
                            .r#type("string")
                            .build()
                            .map_err(build_err)?,
                    )
                    .storage_descriptor(storage(self.location.clone())?)
                    .build()
                    .map_err(build_err)?;
                match self
                    .client
                    .create_table()
                    .database_name(&self.database)
                    .table_input(input)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Some("AlreadyExistsException") => Ok(()),
                    Err(e) => Err(store_err(e)),
                }
            }
            Err(e) => Err(store_err(e)),
        }
    }

    /// The location a day's partition points at, if the partition exists.
    pub async fn partition_location(&self, day: NaiveDate) -> StoreResult<Option<String>> {
        match self
            .client
            .get_partition()
            .database_name(&self.database)
            .table_name(&self.table)
            .partition_values(day.format("%Y-%m-%d").to_string())
            .send()
            .await
        {
            Ok(out) => Ok(out
                .partition
                .and_then(|p| p.storage_descriptor)
                .and_then(|s| s.location)),
            Err(e) if e.code() == Some("EntityNotFoundException") => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }
}

#[async_trait]
impl PartitionCatalog for GlueCatalog {
    async fn register_day(&self, day: NaiveDate) -> StoreResult<()> {
        self.ready.get_or_try_init(|| self.ensure_table()).await?;
        let location = self.day_location(day);
        let value = day.format("%Y-%m-%d").to_string();
        let input = PartitionInput::builder()
            .values(value.clone())
            .storage_descriptor(storage(location.clone())?)
            .build();
        match self.partition_location(day).await? {
            Some(current) if current == location => Ok(()),
            Some(_) => self
                .client
                .update_partition()
                .database_name(&self.database)
                .table_name(&self.table)
                .partition_value_list(value)
                .partition_input(input)
                .send()
                .await
                .map(|_| ())
                .map_err(store_err),
            None => match self
                .client
                .create_partition()
                .database_name(&self.database)
                .table_name(&self.table)
                .partition_input(input)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                // A concurrent consolidation of the same day registered it first.
                Err(e) if e.code() == Some("AlreadyExistsException") => Ok(()),
                Err(e) => Err(store_err(e)),
            },
        }
    }
}
