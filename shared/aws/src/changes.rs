//! Silver's change feed on AWS, in the cube table: one item per changed hour
//! (`pk = changes`, `sk = hour#<hour, 10 digits>`) with a counter and the time of its last change.
//!
//! cube-consolidator marks the hours each batch of the silver table's stream touched (an
//! `UpdateItem` per hour, 1 write unit); its scheduled run consolidates what is pending and
//! deletes an hour's item only if its counter is the one it read. The silver writes themselves
//! stay one item each: the stream already says which hours changed.
//!
//! Hours are read through silver's `by_hour` index, which DynamoDB updates a moment after the
//! table (and the stream). An hour changed less than [`DEFAULT_SETTLE`] before it was listed is
//! consolidated but not cleared: the next run reads it again, by which time the index has what
//! the stream reported.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use futures::{StreamExt, TryStreamExt};
use streamcube_pipeline::ports::{ChangeFeed, StoreError, StoreResult};

use crate::dynamo::{
    CONCURRENCY, Consistency, get_n, is_condition_failed, n, query_partition, s, store_err,
};

const PK: &str = "changes";

/// How long after its last change an hour's index reads are trusted to show it whole.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(60);

/// The token [`ChangeFeed::pending`] hands out for an hour changed within the settle time: no
/// counter reaches it, so its acknowledgement clears nothing.
const UNSETTLED: u64 = u64::MAX;

fn sk(hour: i64) -> String {
    format!("hour#{hour:010}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Clone, Debug)]
pub struct DynamoChanges {
    client: Client,
    table: String,
    settle: Duration,
}

impl DynamoChanges {
    pub fn new(client: Client, table: &str) -> Self {
        Self::settling(client, table, DEFAULT_SETTLE)
    }

    /// A feed that trusts an hour's reads `settle` after its last change.
    pub fn settling(client: Client, table: &str, settle: Duration) -> Self {
        DynamoChanges {
            client,
            table: table.to_owned(),
            settle,
        }
    }
}

#[async_trait]
impl ChangeFeed for DynamoChanges {
    async fn pending(&self) -> StoreResult<Vec<(i64, u64)>> {
        let items = query_partition(
            &self.client,
            &self.table,
            PK,
            "",
            false,
            Consistency::Strong,
        )
        .await?;
        let settle_ms = i64::try_from(self.settle.as_millis()).unwrap_or(i64::MAX);
        let settled_before = now_ms().saturating_sub(settle_ms);
        items
            .iter()
            .map(|item| {
                let hour: i64 = get_n(item, "hour")?;
                let seen: u64 = get_n(item, "seen")?;
                let changed_at: i64 = get_n(item, "changed_at")?;
                if seen == UNSETTLED {
                    return Err(StoreError::Corrupt(format!(
                        "hour {hour}: counter overflow"
                    )));
                }
                Ok((
                    hour,
                    if changed_at < settled_before {
                        seen
                    } else {
                        UNSETTLED
                    },
                ))
            })
            .collect()
    }

    async fn ack(&self, hour: i64, seen: u64) -> StoreResult<()> {
        if seen == UNSETTLED {
            return Ok(());
        }
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(PK))
            .key("sk", s(sk(hour)))
            .condition_expression("seen = :seen")
            .expression_attribute_values(":seen", n(seen))
            .send()
            .await;
        match deleted {
            // Changed since it was listed (or cleared already): it stays for the next run.
            Err(e) if is_condition_failed(&e) => Ok(()),
            other => other.map(|_| ()).map_err(store_err),
        }
    }

    async fn mark(&self, hours: &[i64]) -> StoreResult<()> {
        let at = now_ms();
        futures::stream::iter(hours.iter().copied())
            .map(|hour| async move {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(PK))
                    .key("sk", s(sk(hour)))
                    .update_expression("ADD seen :one SET #h = :h, changed_at = :at")
                    .expression_attribute_names("#h", "hour")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":h", n(hour))
                    .expression_attribute_values(":at", n(at))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(store_err)
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await
    }
}
