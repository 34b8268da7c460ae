//! Silver events in DynamoDB.
//!
//! One item per event, keyed by `event_id`, so "store once" is the key's uniqueness:
//! - [`SilverStore::put_new`] writes each event with a conditional `PutItem`
//!   (`attribute_not_exists(event_id)`); a lost condition returns the stored item's origin, which
//!   tells a duplicate from this same row's earlier, interrupted attempt. First writer wins, exactly.
//! - [`SilverStore::put_new_bulk`] (bronze files) reads which ids exist with `BatchGetItem` and
//!   writes the new ones with `BatchWriteItem`, 25 per call and several calls in flight, retrying
//!   unprocessed items. Two inputs racing with the same new id between the read and the write both
//!   count it, the last one's fields stay; the event is still stored once.
//! - Hours are read through the `by_hour` index, whose key `hour_shard` (`<hour>#<0..15>`) spreads
//!   a busy hour over 16 index partitions; a viewer's events through `by_viewer` (never a scan).
//! - `expires_at` (epoch seconds, the table's TTL attribute) is the event time plus the retention.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, PutRequest, ReturnValue, ReturnValuesOnConditionCheckFailure, WriteRequest,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use streamcube_model::event::{Country, CubeEvent, Device, SilverEvent};
use streamcube_model::pseudonym::Pseudonym;
use streamcube_pipeline::ports::{PutOutcome, SilverStore, StoreError, StoreResult};

use crate::dynamo::{
    CONCURRENCY, Item, batch_get, batch_write, get_n, get_opt_n, get_s, is_condition_failed, n,
    query_items, s, store_err,
};

/// Index partitions per hour.
pub const HOUR_SHARDS: u32 = 16;
pub const BY_HOUR: &str = "by_hour";
pub const BY_VIEWER: &str = "by_viewer";
/// Conditional writes in flight per `put_new` call.
const PUT_CONCURRENCY: usize = 32;

#[derive(Clone, Debug)]
pub struct DynamoSilver {
    client: Client,
    table: String,
    retention_secs: Option<i64>,
}

/// The index shard of an event: a stable hash of its id (FNV-1a).
pub fn shard_of(event_id: &str) -> u32 {
    let h = event_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    u32::try_from(h % u64::from(HOUR_SHARDS)).unwrap_or(0)
}

impl DynamoSilver {
    pub fn new(client: Client, table: &str, retention_days: Option<u32>) -> Self {
        DynamoSilver {
            client,
            table: table.to_owned(),
            retention_secs: retention_days.map(|d| i64::from(d) * 86_400),
        }
    }

    fn item(&self, e: &SilverEvent) -> Item {
        let hour = e.hour();
        let mut item: Item = HashMap::with_capacity(16);
        item.insert("event_id".into(), s(&e.event_id));
        item.insert("hour".into(), n(hour));
        item.insert(
            "hour_shard".into(),
            s(format!("{hour}#{}", shard_of(&e.event_id))),
        );
        item.insert("occurred_at".into(), n(e.occurred_at_ms));
        item.insert("viewer".into(), s(e.viewer.to_hex()));
        item.insert("content_id".into(), s(&e.content_id));
        item.insert("device".into(), s(e.device.as_str()));
        item.insert("country".into(), s(e.country.as_str()));
        item.insert("watch_seconds".into(), n(e.watch_seconds));
        if let Some(b) = e.bitrate_kbps {
            item.insert("bitrate_kbps".into(), n(b));
        }
        if let Some(b) = e.buffering_ms {
            item.insert("buffering_ms".into(), n(b));
        }
        item.insert("completed".into(), AttributeValue::Bool(e.completed));
        if !e.origin.is_empty() {
            item.insert("origin".into(), s(&e.origin));
        }
        if let Some(r) = self.retention_secs {
            item.insert(
                "expires_at".into(),
                n(e.occurred_at_ms.div_euclid(1000) + r),
            );
        }
        item
    }

    async fn put_one(&self, e: &SilverEvent) -> StoreResult<PutOutcome> {
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.item(e)))
            .condition_expression("attribute_not_exists(event_id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match r {
            Ok(_) => Ok(PutOutcome::Inserted),
            Err(err) if is_condition_failed(&err) => {
                let stored_origin = err
                    .as_service_error()
                    .and_then(|se| match se {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => c.item(),
                        _ => None,
                    })
                    .and_then(|item| item.get("origin"))
                    .and_then(|v| v.as_s().ok())
                    .cloned();
                Ok(outcome_of_existing(e, stored_origin.as_deref()))
            }
            Err(err) => Err(store_err(err)),
        }
    }

    async fn query_index(
        &self,
        index: &str,
        key_name: &str,
        key: String,
        projection: Option<&str>,
    ) -> StoreResult<Vec<Item>> {
        query_items(self.index_query(index, key_name, key, projection)).await
    }

    /// One shard of an hour, a part per page of its query: the items' `projection`
    /// (`(placeholder, attribute)` pairs; every attribute when empty), decoded by `decode`.
    /// A page's items, a map of attribute names and values each, take several times the
    /// memory of the events.
    fn shard_parts<T: Send + 'static>(
        &self,
        hour: i64,
        shard: u32,
        projection: &'static [(&'static str, &'static str)],
        decode: fn(&Item) -> StoreResult<T>,
    ) -> BoxStream<'_, StoreResult<Vec<T>>> {
        let mut query = self.index_query(BY_HOUR, "hour_shard", format!("{hour}#{shard}"), None);
        if !projection.is_empty() {
            let names: Vec<&str> = projection.iter().map(|(p, _)| *p).collect();
            query = query.projection_expression(names.join(", "));
            for (placeholder, name) in projection {
                query = query.expression_attribute_names(*placeholder, *name);
            }
        }
        let pages = query.into_paginator().send();
        futures::stream::try_unfold(pages, move |mut pages| async move {
            let Some(page) = pages.next().await else {
                return Ok(None);
            };
            let events = page
                .map_err(store_err)?
                .items()
                .iter()
                .map(decode)
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(Some((events, pages)))
        })
        .boxed()
    }

    /// An hour's shards read [`CONCURRENCY`] at a time, a part per page of a shard's query.
    fn hour_shards<T: Send + 'static>(
        &self,
        hour: i64,
        projection: &'static [(&'static str, &'static str)],
        decode: fn(&Item) -> StoreResult<T>,
    ) -> BoxStream<'_, StoreResult<Vec<T>>> {
        futures::stream::iter(0..HOUR_SHARDS)
            .map(move |shard| self.shard_parts(hour, shard, projection, decode))
            .flatten_unordered(CONCURRENCY)
            .boxed()
    }

    fn index_query(
        &self,
        index: &str,
        key_name: &str,
        key: String,
        projection: Option<&str>,
    ) -> QueryFluentBuilder {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#k = :k")
            .expression_attribute_names("#k", key_name)
            .expression_attribute_values(":k", s(key))
            .set_projection_expression(projection.map(str::to_owned));
        if projection.is_some_and(|p| p.contains("#h")) {
            // `hour` is a reserved word in expressions.
            q = q.expression_attribute_names("#h", "hour");
        }
        q
    }
}

/// A stored event met again: this same row's earlier attempt, or a duplicate.
fn outcome_of_existing(e: &SilverEvent, stored_origin: Option<&str>) -> PutOutcome {
    if !e.origin.is_empty() && stored_origin == Some(e.origin.as_str()) {
        PutOutcome::AlreadyStored
    } else {
        PutOutcome::Duplicate
    }
}

/// The index of each id's first event in a call; later repeats are already decided
/// (duplicates), the rest `None`.
fn first_occurrences(events: &[SilverEvent]) -> (Vec<usize>, Vec<Option<PutOutcome>>) {
    let mut seen = HashSet::with_capacity(events.len());
    let mut firsts = Vec::with_capacity(events.len());
    let mut out = vec![None; events.len()];
    for (i, e) in events.iter().enumerate() {
        if seen.insert(e.event_id.as_str()) {
            firsts.push(i);
        } else {
            out[i] = Some(PutOutcome::Duplicate);
        }
    }
    (firsts, out)
}

/// The attributes [`CubeEvent`] takes, as `(placeholder, attribute)` pairs: a projection
/// names them through placeholders, so that none can clash with a reserved word.
const CUBE_ATTRIBUTES: [(&str, &str); 8] = [
    ("#v", "viewer"),
    ("#c", "content_id"),
    ("#d", "device"),
    ("#n", "country"),
    ("#w", "watch_seconds"),
    ("#b", "bitrate_kbps"),
    ("#f", "buffering_ms"),
    ("#x", "completed"),
];

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("silver item: {what}"))
}

/// The viewer and the fields the cube reads of an item.
fn cube_fields(item: &Item) -> StoreResult<(Pseudonym, CubeEvent)> {
    let viewer = Pseudonym::from_hex(get_s(item, "viewer")?).ok_or_else(|| corrupt("viewer"))?;
    let event = CubeEvent {
        viewer_hash: viewer.sketch_hash(),
        content_id: get_s(item, "content_id")?.to_owned(),
        device: get_s(item, "device")?
            .parse::<Device>()
            .map_err(|_| corrupt("device"))?,
        country: get_s(item, "country")?
            .parse::<Country>()
            .map_err(|_| corrupt("country"))?,
        watch_seconds: get_n(item, "watch_seconds")?,
        bitrate_kbps: get_opt_n(item, "bitrate_kbps")?,
        buffering_ms: get_opt_n(item, "buffering_ms")?,
        completed: item
            .get("completed")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .ok_or_else(|| corrupt("completed"))?,
    };
    Ok((viewer, event))
}

fn cube_event_of(item: &Item) -> StoreResult<CubeEvent> {
    cube_fields(item).map(|(_, e)| e)
}

fn event_of(item: &Item) -> StoreResult<SilverEvent> {
    let (viewer, e) = cube_fields(item)?;
    let origin = item
        .get("origin")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    Ok(e.into_silver(
        get_s(item, "event_id")?.to_owned(),
        get_n(item, "occurred_at")?,
        viewer,
        origin,
    ))
}

#[async_trait]
impl SilverStore for DynamoSilver {
    async fn put_new(&self, events: &[SilverEvent]) -> StoreResult<Vec<PutOutcome>> {
        let (firsts, mut out) = first_occurrences(events);
        let results: Vec<(usize, PutOutcome)> = futures::stream::iter(firsts)
            .map(|i| async move { self.put_one(&events[i]).await.map(|o| (i, o)) })
            .buffer_unordered(PUT_CONCURRENCY)
            .try_collect()
            .await?;
        for (i, o) in results {
            out[i] = Some(o);
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(PutOutcome::Duplicate))
            .collect())
    }

    /// `BatchGetItem` for the ids that exist, then `BatchWriteItem` for the new ones (see the
    /// module notes on racing inputs).
    async fn put_new_bulk(&self, events: Arc<Vec<SilverEvent>>) -> StoreResult<Vec<PutOutcome>> {
        let events: &[SilverEvent] = &events;
        let (firsts, mut out) = first_occurrences(events);
        let keys = firsts
            .iter()
            .map(|&i| HashMap::from([("event_id".to_owned(), s(&events[i].event_id))]))
            .collect();
        let existing: HashMap<String, Option<String>> =
            batch_get(&self.client, &self.table, keys, "event_id, origin")
                .await?
                .iter()
                .map(|item| {
                    let id = get_s(item, "event_id")?.to_owned();
                    let origin = item.get("origin").and_then(|v| v.as_s().ok()).cloned();
                    Ok((id, origin))
                })
                .collect::<StoreResult<_>>()?;
        let mut writes = Vec::new();
        for &i in &firsts {
            let e = &events[i];
            out[i] = Some(match existing.get(&e.event_id) {
                Some(origin) => outcome_of_existing(e, origin.as_deref()),
                None => {
                    writes.push(
                        WriteRequest::builder()
                            .put_request(
                                PutRequest::builder()
                                    .set_item(Some(self.item(e)))
                                    .build()
                                    .map_err(StoreError::backend)?,
                            )
                            .build(),
                    );
                    PutOutcome::Inserted
                }
            });
        }
        batch_write(&self.client, &self.table, writes).await?;
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(PutOutcome::Duplicate))
            .collect())
    }

    async fn hour_events(&self, hour: i64) -> StoreResult<Vec<SilverEvent>> {
        let parts: Vec<Vec<SilverEvent>> = self.hour_parts(hour).try_collect().await?;
        let mut events = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for part in parts {
            events.extend(part);
        }
        events.sort_unstable_by(|a, b| a.event_id.cmp(&b.event_id));
        Ok(events)
    }

    /// The hour's shards read [`CONCURRENCY`] at a time, a part per page of a shard's query.
    fn hour_parts(&self, hour: i64) -> BoxStream<'_, StoreResult<Vec<SilverEvent>>> {
        self.hour_shards(hour, &[], event_of)
    }

    /// [`Self::hour_parts`] projected on [`CUBE_ATTRIBUTES`]: the read costs the same capacity
    /// units (they count the items' whole size), but the id, time, origin, keys and expiry of
    /// each item are neither sent nor decoded.
    fn hour_cube_parts(&self, hour: i64) -> BoxStream<'_, StoreResult<Vec<CubeEvent>>> {
        self.hour_shards(hour, &CUBE_ATTRIBUTES, cube_event_of)
    }

    async fn viewer_events(&self, viewer: &Pseudonym) -> StoreResult<Vec<(String, i64)>> {
        self.query_index(BY_VIEWER, "viewer", viewer.to_hex(), Some("event_id, #h"))
            .await?
            .iter()
            .map(|item| Ok((get_s(item, "event_id")?.to_owned(), get_n(item, "hour")?)))
            .collect()
    }

    async fn delete(&self, event_ids: &[String]) -> StoreResult<u64> {
        let existed: Vec<bool> = futures::stream::iter(event_ids.iter().cloned())
            .map(|id| async move {
                let out = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key("event_id", s(id))
                    .return_values(ReturnValue::AllOld)
                    .send()
                    .await
                    .map_err(store_err)?;
                Ok::<_, StoreError>(out.attributes.is_some_and(|a| !a.is_empty()))
            })
            .buffer_unordered(PUT_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(existed.into_iter().filter(|e| *e).count() as u64)
    }
}
