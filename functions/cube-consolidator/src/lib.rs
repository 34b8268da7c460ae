//! cube-consolidator: silver's changes into gold, in two kinds of invocation.
//!
//! - A batch of the silver table's DynamoDB stream: every record names the hour partition it
//!   changed (the item's `hour` attribute, in the new image or, for a removal, the old one). The
//!   batch's hours are marked pending in the change feed (an `UpdateItem` per hour): nothing is
//!   recomputed here, so a busy stream costs a write per hour per batch, not a republished day.
//! - The schedule (an EventBridge `Scheduled Event`): [`Pipeline::consolidate_pending`]
//!   recomputes every pending hour from silver, publishes each of their days once, and clears
//!   the hours of the days that published. A failed day's hours stay pending for the next run.
//!   The current UTC day is published without its day level (queries merge its hours); the
//!   first run after it closes builds the day level and its exports.
//!
//! The template deploys this binary twice: as `stream-marker` for the stream (little memory, no
//! reserved concurrency, only the change feed's `UpdateItem`) and as `cube-consolidator` for the
//! schedule.
//!
//! Recomputing is a pure function of silver, so a replayed batch or a repeated run changes
//! nothing. Removals by the table's TTL (silver's retention) are ignored: gold outlives silver.
//!
//! A stream batch is answered with a partial batch response (`ReportBatchItemFailures`): the
//! records without a usable `hour`, or every record when the marks could not be written, are
//! retried from the one with the lowest sequence number (Lambda checkpoints before it; marking
//! again the records after it is harmless).

use std::collections::BTreeSet;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use streamcube_model::query::try_day_of_hour;
use streamcube_pipeline::Pipeline;
use streamcube_pipeline::consolidate::{DayLevel, hours_by_day};
use streamcube_pipeline::http::ErrorChain;

/// Why a stream record cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the record's images have no `hour` attribute")]
    NoHour,
    #[error("the record's `hour` attribute is not a number of hours: {0}")]
    BadHour(String),
}

/// Why a whole batch fails (Lambda then retries all of it).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("record {0} failed and has no sequence number to report")]
    NoSequenceNumber(String),
}

/// Why an invocation fails.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("not a DynamoDB stream batch nor a scheduled event")]
    Unknown,
    #[error("the stream batch is malformed: {0}")]
    Malformed(String),
    /// The pending hours could not be listed, consolidated or acknowledged (they stay pending).
    #[error("the consolidation could not run; the pending hours stay for the next run")]
    Feed,
    #[error("{failed} of {days} days failed; their hours stay pending for the next run")]
    DaysFailed { failed: usize, days: usize },
    #[error("the answer could not be encoded: {0}")]
    Answer(String),
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(e: InvocationError) -> Self {
        let error_type = match e {
            InvocationError::Batch(_) => "BatchFailed",
            InvocationError::Unknown | InvocationError::Malformed(_) => "UnknownInvocation",
            InvocationError::Feed | InvocationError::DaysFailed { .. } => "ConsolidationFailed",
            InvocationError::Answer(_) => "AnswerFailed",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// What a scheduled run did, per day.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub days: Vec<DayRun>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DayRun {
    pub day: chrono::NaiveDate,
    pub hours: Vec<u8>,
    /// The events of the published day, or `None` when the day failed (with the day level
    /// deferred, those of the recomputed hours).
    pub events: Option<u64>,
    /// Whether the day level was built or deferred (the open day); `None` when the day failed.
    pub day_level: Option<DayLevel>,
}

/// The hour partitions (hours since the Unix epoch) a record touched: the `hour` of its new
/// image and of its old one (a removal has only the old one).
pub fn record_hours(record: &EventRecord) -> Result<Vec<i64>, RecordError> {
    let mut hours = Vec::with_capacity(2);
    for image in [&record.change.new_image, &record.change.old_image] {
        let Ok(serde_json::Value::Object(item)) = serde_json::to_value(image) else {
            continue;
        };
        let Some(attr) = item.get("hour") else {
            continue;
        };
        let hour = attr
            .get("N")
            .and_then(serde_json::Value::as_str)
            .and_then(|n| n.trim().parse::<i64>().ok())
            .filter(|h| try_day_of_hour(*h).is_some())
            .ok_or_else(|| RecordError::BadHour(attr.to_string()))?;
        if !hours.contains(&hour) {
            hours.push(hour);
        }
    }
    if hours.is_empty() {
        return Err(RecordError::NoHour);
    }
    Ok(hours)
}

/// Whether a record is a TTL expiry (DynamoDB itself removed an item past its `expires_at`).
/// Gold keeps its aggregates after silver's retention: an expiry must not recompute the hour.
pub fn is_ttl_expiry(record: &EventRecord) -> bool {
    record
        .user_identity
        .as_ref()
        .is_some_and(|u| u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com")
}

/// Orders sequence numbers (decimal strings of up to 40 digits) by value.
fn sequence_key(s: &str) -> (usize, &str) {
    let digits = s.trim_start_matches('0');
    (digits.len(), digits)
}

/// The batch logic, apart from storage: given each record's hours (or error) and the days whose
/// consolidation failed, the sequence number to report, if any. `Err` when a failing record has
/// no sequence number (the whole batch must then be retried).
pub fn first_failure<'a>(
    records: &'a [EventRecord],
    hours: &[Result<Vec<i64>, RecordError>],
    failed_days: &BTreeSet<chrono::NaiveDate>,
) -> Result<Option<&'a str>, BatchError> {
    let mut lowest: Option<&str> = None;
    for (record, hours) in records.iter().zip(hours) {
        let failed = match hours {
            Err(_) => true,
            Ok(hours) => hours_by_day(hours.iter().copied())
                .keys()
                .any(|day| failed_days.contains(day)),
        };
        if !failed {
            continue;
        }
        let seq = record
            .change
            .sequence_number
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| BatchError::NoSequenceNumber(record.event_id.clone()))?;
        if lowest.is_none_or(|l| sequence_key(seq) < sequence_key(l)) {
            lowest = Some(seq);
        }
    }
    Ok(lowest)
}

/// One invocation: a stream batch or the schedule (told apart by their shape).
pub async fn handler(
    pipeline: &Pipeline,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, InvocationError> {
    let payload = event.payload;
    let answer = if payload.get("Records").is_some() {
        let batch: Event = serde_json::from_value(payload)
            .map_err(|e| InvocationError::Malformed(e.to_string()))?;
        serde_json::to_value(mark_batch(pipeline, &batch).await?)
    } else if payload
        .get("detail-type")
        .and_then(serde_json::Value::as_str)
        == Some("Scheduled Event")
    {
        serde_json::to_value(consolidate_pending(pipeline).await?)
    } else {
        return Err(InvocationError::Unknown);
    };
    answer.map_err(|e| InvocationError::Answer(e.to_string()))
}

/// Marks the hours a stream batch touched as pending and answers which records to retry.
#[tracing::instrument(skip_all, fields(records = event.records.len()), err)]
pub async fn mark_batch(
    pipeline: &Pipeline,
    event: &Event,
) -> Result<DynamoDbEventResponse, BatchError> {
    let hours: Vec<Result<Vec<i64>, RecordError>> = event
        .records
        .iter()
        .map(|r| {
            if is_ttl_expiry(r) {
                Ok(Vec::new())
            } else {
                record_hours(r)
            }
        })
        .collect();
    let expired = event.records.iter().filter(|r| is_ttl_expiry(r)).count();
    if expired > 0 {
        tracing::info!(
            expired,
            "TTL expiries of silver ignored: gold keeps its aggregates"
        );
    }
    for (record, h) in event.records.iter().zip(&hours) {
        if let Err(e) = h {
            tracing::error!(
                event_id = %record.event_id,
                event_name = %record.event_name,
                error = %e,
                "stream record without a usable hour"
            );
        }
    }
    let touched: BTreeSet<i64> = hours.iter().flatten().flatten().copied().collect();
    let touched: Vec<i64> = touched.into_iter().collect();
    let mut failed_days = BTreeSet::new();
    if !touched.is_empty() {
        match pipeline.stores.changes.mark(&touched).await {
            Ok(()) => tracing::info!(hours = touched.len(), "hours marked for consolidation"),
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), "marking the hours failed");
                failed_days.extend(hours_by_day(touched.iter().copied()).into_keys());
            }
        }
    }
    let mut response = DynamoDbEventResponse::default();
    if let Some(seq) = first_failure(&event.records, &hours, &failed_days)? {
        tracing::warn!(
            sequence_number = seq,
            "retrying the batch from the first failed record"
        );
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(seq.to_owned());
        response.batch_item_failures.push(failure);
    }
    Ok(response)
}

/// The scheduled run: every pending hour consolidated, each day published once.
#[tracing::instrument(skip_all, err)]
pub async fn consolidate_pending(pipeline: &Pipeline) -> Result<RunSummary, InvocationError> {
    let outcomes = pipeline.consolidate_pending().await.map_err(|e| {
        tracing::error!(error = %ErrorChain(&e), "consolidation failed");
        InvocationError::Feed
    })?;
    let mut days = Vec::with_capacity(outcomes.len());
    for o in &outcomes {
        match &o.result {
            Ok(summary) => tracing::info!(
                day = %o.day,
                hours = ?o.hours,
                generation = summary.generation,
                events = summary.events,
                day_level = ?summary.day_level,
                "day consolidated"
            ),
            Err(error) => {
                tracing::error!(day = %o.day, %error, transient = o.transient, "day failed");
            }
        }
        days.push(DayRun {
            day: o.day,
            hours: o.hours.clone(),
            events: o.result.as_ref().ok().map(|s| s.events),
            day_level: o.result.as_ref().ok().map(|s| s.day_level),
        });
    }
    let failed = days.iter().filter(|d| d.events.is_none()).count();
    if failed > 0 {
        return Err(InvocationError::DaysFailed {
            failed,
            days: days.len(),
        });
    }
    if days.is_empty() {
        tracing::info!("nothing pending");
    }
    Ok(RunSummary { days })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: &str, new: serde_json::Value, old: serde_json::Value) -> EventRecord {
        serde_json::from_value(serde_json::json!({
            "awsRegion": "sa-east-1",
            "eventID": format!("id-{seq}"),
            "eventName": "INSERT",
            "dynamodb": {
                "SequenceNumber": seq,
                "SizeBytes": 10,
                "NewImage": new,
                "OldImage": old,
            }
        }))
        .expect("record")
    }

    #[test]
    fn ttl_expiries_are_told_from_deletions() {
        let mut r = record(
            "9",
            serde_json::json!({}),
            serde_json::json!({"hour": {"N": "5"}}),
        );
        assert!(
            !is_ttl_expiry(&r),
            "an erasure's delete recomputes the hour"
        );
        r.user_identity = serde_json::from_value(serde_json::json!({
            "type": "Service", "principalId": "dynamodb.amazonaws.com"
        }))
        .expect("identity");
        assert!(is_ttl_expiry(&r));
    }

    #[test]
    fn hours_come_from_either_image() {
        let n = |h: &str| serde_json::json!({"hour": {"N": h}});
        let none = serde_json::json!({});
        assert_eq!(
            record_hours(&record("1", n("10"), none.clone())),
            Ok(vec![10])
        );
        assert_eq!(
            record_hours(&record("1", none.clone(), n("11"))),
            Ok(vec![11])
        );
        assert_eq!(record_hours(&record("1", n("12"), n("12"))), Ok(vec![12]));
        assert_eq!(
            record_hours(&record("1", n("12"), n("13"))),
            Ok(vec![12, 13])
        );
        assert_eq!(
            record_hours(&record("1", none.clone(), none.clone())),
            Err(RecordError::NoHour)
        );
        let s = serde_json::json!({"hour": {"S": "12"}});
        assert!(matches!(
            record_hours(&record("1", s, none)),
            Err(RecordError::BadHour(_))
        ));
    }

    #[test]
    fn the_lowest_failing_sequence_number_is_reported() {
        let n = |h: i64| serde_json::json!({"hour": {"N": h.to_string()}});
        let none = serde_json::json!({});
        // Hours 0 and 24 are on 1970-01-01 and 1970-01-02.
        let records = vec![
            record("900", n(0), none.clone()),
            record("1000", n(24), none.clone()),
            record("999", n(24), none.clone()),
            record("0800", n(1), none.clone()),
        ];
        let hours: Vec<_> = records.iter().map(record_hours).collect();
        let day = |d| chrono::NaiveDate::from_ymd_opt(1970, 1, d).expect("day");
        let none_failed = BTreeSet::new();
        assert_eq!(
            first_failure(&records, &hours, &none_failed).expect("ok"),
            None
        );
        let second = BTreeSet::from([day(2)]);
        // By value, not as text: 999 < 1000.
        assert_eq!(
            first_failure(&records, &hours, &second).expect("ok"),
            Some("999")
        );
        let both = BTreeSet::from([day(1), day(2)]);
        assert_eq!(
            first_failure(&records, &hours, &both).expect("ok"),
            Some("0800")
        );
    }
}
