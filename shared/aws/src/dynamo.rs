//! What every DynamoDB adapter shares: error mapping, batched writes and reads with retries of
//! unprocessed items (exponential backoff, full jitter), attribute helpers.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, WriteRequest};
use futures::{StreamExt, TryStreamExt};
use streamcube_pipeline::ports::{StoreError, StoreResult};

pub type Item = HashMap<String, AttributeValue>;

/// Items per `BatchWriteItem` call (the service's limit).
pub const WRITE_BATCH: usize = 25;
/// Keys per `BatchGetItem` call (the service's limit).
pub const GET_BATCH: usize = 100;
/// Batch calls in flight at once per adapter call.
pub const CONCURRENCY: usize = 8;
/// Rounds of retrying unprocessed items before giving up as throttled.
const MAX_ROUNDS: u32 = 10;

const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "LimitExceededException",
];

/// Maps an SDK failure into the pipeline's terms; the SDK's text stays in the source chain (for
/// logs), never in a response.
pub fn store_err<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.code() {
        Some(code) if THROTTLING.contains(&code) => StoreError::Throttled,
        Some("ConditionalCheckFailedException") => StoreError::Conflict,
        _ => StoreError::backend(e),
    }
}

/// Whether the failure is a lost condition.
pub fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// The wait before retry round `round` (1, 2, ...): exponential, capped, with full jitter.
pub fn backoff(round: u32) -> Duration {
    let cap_ms: u64 = 50u64.saturating_mul(1 << round.min(7)).min(5_000);
    Duration::from_millis(rand::random_range(0..=cap_ms))
}

/// Writes (puts or deletes) in calls of 25, several in flight, retrying unprocessed items.
pub async fn batch_write(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> StoreResult<()> {
    batch_write_from(client, table, requests.into_iter().map(Ok)).await
}

/// [`batch_write`] of requests made as the calls need them: only the calls in flight hold
/// theirs. The first request that cannot be made fails the write, as a failed call does.
pub async fn batch_write_from(
    client: &Client,
    table: &str,
    mut requests: impl Iterator<Item = StoreResult<WriteRequest>> + Send,
) -> StoreResult<()> {
    let chunks = std::iter::from_fn(move || {
        let chunk = requests
            .by_ref()
            .take(WRITE_BATCH)
            .collect::<StoreResult<Vec<_>>>();
        match chunk {
            Ok(c) if c.is_empty() => None,
            chunk => Some(chunk),
        }
    });
    futures::stream::iter(chunks)
        .map(|chunk| async move { write_chunk(client, table, chunk?).await })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn write_chunk(
    client: &Client,
    table: &str,
    mut chunk: Vec<WriteRequest>,
) -> StoreResult<()> {
    let mut round = 0;
    loop {
        let out = client
            .batch_write_item()
            .request_items(table, chunk)
            .send()
            .await
            .map_err(store_err)?;
        chunk = out
            .unprocessed_items
            .and_then(|mut m| m.remove(table))
            .unwrap_or_default();
        if chunk.is_empty() {
            return Ok(());
        }
        round += 1;
        if round > MAX_ROUNDS {
            return Err(StoreError::Throttled);
        }
        tracing::debug!(
            unprocessed = chunk.len(),
            round,
            "retrying unprocessed writes"
        );
        tokio::time::sleep(backoff(round)).await;
    }
}

/// Reads items by key in calls of 100, several in flight, retrying unprocessed keys. Missing
/// items are simply absent from the result.
pub async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    projection: &str,
) -> StoreResult<Vec<Item>> {
    let chunks: Vec<Vec<Item>> = keys.chunks(GET_BATCH).map(<[Item]>::to_vec).collect();
    let parts: Vec<Vec<Item>> = futures::stream::iter(chunks)
        .map(|chunk| get_chunk(client, table, chunk, projection))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(parts.into_iter().flatten().collect())
}

async fn get_chunk(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    projection: &str,
) -> StoreResult<Vec<Item>> {
    let mut found = Vec::with_capacity(keys.len());
    let mut request = KeysAndAttributes::builder()
        .set_keys(Some(keys))
        .projection_expression(projection)
        .consistent_read(true)
        .build()
        .map_err(StoreError::backend)?;
    let mut round = 0;
    loop {
        let out = client
            .batch_get_item()
            .request_items(table, request)
            .send()
            .await
            .map_err(store_err)?;
        if let Some(mut items) = out.responses
            && let Some(items) = items.remove(table)
        {
            found.extend(items);
        }
        match out.unprocessed_keys.and_then(|mut m| m.remove(table)) {
            Some(rest) if !rest.keys().is_empty() => request = rest,
            _ => return Ok(found),
        }
        round += 1;
        if round > MAX_ROUNDS {
            return Err(StoreError::Throttled);
        }
        tokio::time::sleep(backoff(round)).await;
    }
}

/// How a read sees recent writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Every write that succeeded before the read (billed a full read unit per 4 KB).
    Strong,
    /// Possibly not the latest writes (half the read units): for items that never change once
    /// written, when the reader can tell whether it saw all of them.
    Eventual,
}

/// Every item of a partition key whose sort key starts with `prefix` (all of them for an empty
/// one), page after page; with `keys_only`, only `pk` and `sk`.
pub async fn query_partition(
    client: &Client,
    table: &str,
    pk: &str,
    prefix: &str,
    keys_only: bool,
    consistency: Consistency,
) -> StoreResult<Vec<Item>> {
    let mut q = client
        .query()
        .table_name(table)
        .expression_attribute_values(":pk", s(pk));
    // An empty prefix is not a valid `begins_with` operand: the whole partition then.
    q = if prefix.is_empty() {
        q.key_condition_expression("pk = :pk")
    } else {
        q.key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":p", s(prefix))
    };
    query_items(
        q.set_projection_expression(keys_only.then(|| "pk, sk".to_owned()))
            .consistent_read(consistency == Consistency::Strong),
    )
    .await
}

/// Every item a query returns, page after page.
pub async fn query_items(q: QueryFluentBuilder) -> StoreResult<Vec<Item>> {
    q.into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(store_err)
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A string attribute, or a corrupt-data error naming it.
pub fn get_s<'a>(item: &'a Item, name: &str) -> StoreResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StoreError::Corrupt(format!(
            "attribute `{name}` is not a string"
        ))),
    }
}

/// A number attribute parsed as `T`, or a corrupt-data error naming it.
pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> StoreResult<T> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("attribute `{name}` is out of range: {v}"))),
        _ => Err(StoreError::Corrupt(format!(
            "attribute `{name}` is not a number"
        ))),
    }
}

/// An optional number attribute.
pub fn get_opt_n<T: std::str::FromStr>(item: &Item, name: &str) -> StoreResult<Option<T>> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => get_n(item, name).map(Some),
    }
}
