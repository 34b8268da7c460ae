//! Reference data (the catalog table) and the processed-object ledger (in the cube table,
//! `pk = ledger#<key>`, `sk = v#<version>`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use streamcube_model::catalog::{Catalog, CatalogEntry};
use streamcube_model::report::FileReport;
use streamcube_pipeline::ports::{CatalogStore, LedgerStore, StoreError, StoreResult};

use crate::dynamo::{Item, batch_write, get_opt_n, get_s, n, s, store_err};

#[derive(Clone, Debug)]
pub struct DynamoCatalog {
    client: Client,
    table: String,
}

impl DynamoCatalog {
    pub fn new(client: Client, table: &str) -> Self {
        DynamoCatalog {
            client,
            table: table.to_owned(),
        }
    }
}

fn entry_item(e: &CatalogEntry) -> Item {
    let mut item = Item::from([
        ("content_id".to_owned(), s(&e.content_id)),
        ("title".to_owned(), s(&e.title)),
        ("genre".to_owned(), s(&e.genre)),
    ]);
    if let Some(y) = e.release_year {
        item.insert("release_year".into(), n(y));
    }
    if let Some(d) = e.duration_seconds {
        item.insert("duration_seconds".into(), n(d));
    }
    item
}

fn entry_of(item: &Item) -> StoreResult<CatalogEntry> {
    Ok(CatalogEntry {
        content_id: get_s(item, "content_id")?.to_owned(),
        title: get_s(item, "title")?.to_owned(),
        genre: get_s(item, "genre")?.to_owned(),
        release_year: get_opt_n(item, "release_year")?,
        duration_seconds: get_opt_n(item, "duration_seconds")?,
    })
}

#[async_trait]
impl CatalogStore for DynamoCatalog {
    async fn put_entries(&self, entries: &[CatalogEntry]) -> StoreResult<()> {
        // One request may not name a key twice: the last entry of an id wins, as in a file.
        let mut last: HashMap<&str, &CatalogEntry> = HashMap::with_capacity(entries.len());
        for e in entries {
            last.insert(e.content_id.as_str(), e);
        }
        let requests = last
            .values()
            .map(|e| {
                Ok(WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(entry_item(e)))
                            .build()
                            .map_err(StoreError::backend)?,
                    )
                    .build())
            })
            .collect::<StoreResult<Vec<_>>>()?;
        batch_write(&self.client, &self.table, requests).await
    }

    async fn load(&self) -> StoreResult<Catalog> {
        let items: Vec<Item> = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(store_err)?;
        items.iter().map(entry_of).collect()
    }
}

#[derive(Clone, Debug)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: Client, table: &str) -> Self {
        DynamoLedger {
            client,
            table: table.to_owned(),
        }
    }
}

fn ledger_key(key: &str, version: &str) -> Item {
    Item::from([
        ("pk".to_owned(), s(format!("ledger#{key}"))),
        // The version may be empty (an unversioned object): key attributes may not be.
        ("sk".to_owned(), s(format!("v#{version}"))),
    ])
}

#[async_trait]
impl LedgerStore for DynamoLedger {
    async fn processed(&self, key: &str, version: &str) -> StoreResult<Option<FileReport>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(ledger_key(key, version)))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_err)?;
        out.item
            .map(|item| {
                serde_json::from_str(get_s(&item, "report")?)
                    .map_err(|e| StoreError::Corrupt(format!("ledger entry: {e}")))
            })
            .transpose()
    }

    async fn mark_processed(
        &self,
        key: &str,
        version: &str,
        report: &FileReport,
    ) -> StoreResult<()> {
        let mut item = ledger_key(key, version);
        item.insert(
            "report".into(),
            s(serde_json::to_string(report).map_err(|e| StoreError::Corrupt(e.to_string()))?),
        );
        item.insert("processed_at".into(), s(chrono::Utc::now().to_rfc3339()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(store_err)?;
        Ok(())
    }
}
