//! cube-consolidator: the DynamoDB stream of the silver table, into gold.
//!
//! Every stream record names the hour partition it changed (the item's `hour` attribute, in the
//! new image or, for a removal, the old one). The batch's hours go to
//! [`Pipeline::consolidate_hours`], which recomputes each from silver and publishes its day; days
//! are independent, so one failing day does not hold back the others. Recomputing is a pure
//! function of silver, so a replayed batch changes nothing.
//!
//! Removals by the table's TTL (silver's retention) are ignored: gold outlives silver.
//!
//! The answer is a partial batch response (`ReportBatchItemFailures`): when a day failed, the
//! response names the record with the lowest sequence number among the records of the failed
//! days (and the records without a usable `hour`). For a stream, Lambda checkpoints before that
//! record and retries the batch from it; records after it that succeeded are recomputed again,
//! which is harmless.

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use streamcube_model::query::try_day_of_hour;
use streamcube_pipeline::Pipeline;
use streamcube_pipeline::consolidate::{Expected, hours_by_day};
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

impl From<BatchError> for lambda_runtime::Diagnostic {
    fn from(e: BatchError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "BatchFailed".to_owned(),
            error_message: e.to_string(),
        }
    }
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

/// A string or number attribute of an item image, as text.
fn image_attr(image: &impl serde::Serialize, name: &str) -> Option<String> {
    let serde_json::Value::Object(item) = serde_json::to_value(image).ok()? else {
        return None;
    };
    let attr = item.get(name)?;
    attr.get("S")
        .or_else(|| attr.get("N"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

/// What the batch says silver holds now: each event where its newest record put it, and gone
/// from the hour it left. Silver's hour index may lag; the consolidation reads until it agrees.
pub fn expected_changes(records: &[EventRecord]) -> Expected {
    let mut last: BTreeMap<(i64, String), bool> = BTreeMap::new();
    for r in records.iter().filter(|r| !is_ttl_expiry(r)) {
        let Some(id) = image_attr(&r.change.keys, "event_id") else {
            continue;
        };
        let hour = |image| {
            image_attr(image, "hour")
                .and_then(|h| h.parse::<i64>().ok())
                .filter(|h| try_day_of_hour(*h).is_some())
        };
        let new = hour(&r.change.new_image);
        if let Some(h) = new {
            last.insert((h, id.clone()), true);
        }
        if let Some(h) = hour(&r.change.old_image).filter(|h| Some(*h) != new) {
            last.insert((h, id), false);
        }
    }
    let mut out = Expected::new();
    for ((hour, id), present) in last {
        out.entry(hour).or_default().push((id, present));
    }
    out
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

/// Handles one batch of the silver table's stream.
pub async fn handler(
    pipeline: &Pipeline,
    event: LambdaEvent<Event>,
) -> Result<DynamoDbEventResponse, BatchError> {
    consolidate(pipeline, &event.payload).await
}

/// Consolidates the hours a batch touched and answers which records to retry.
#[tracing::instrument(skip_all, fields(records = event.records.len()), err)]
pub async fn consolidate(
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
        let expected = expected_changes(&event.records);
        match pipeline.consolidate_changes(&touched, &expected).await {
            Ok(days) => {
                for day in days {
                    match &day.result {
                        Ok(summary) => tracing::info!(
                            day = %day.day,
                            hours = ?day.hours,
                            generation = summary.generation,
                            events = summary.events,
                            "day consolidated"
                        ),
                        Err(error) => {
                            tracing::error!(day = %day.day, %error, transient = day.transient, "day failed");
                            failed_days.insert(day.day);
                        }
                    }
                }
            }
            // Nothing could start (the catalog did not load): every day of the batch failed.
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), "consolidation failed");
                failed_days.extend(hours_by_day(touched.iter().copied()).into_keys());
            }
        }
    }
    let mut response = DynamoDbEventResponse::default();
    if let Some(seq) = first_failure(&event.records, &hours, &failed_days)? {
        tracing::warn!(
            sequence_number = seq,
            failed_days = failed_days.len(),
            "retrying the batch from the first failed record"
        );
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(seq.to_owned());
        response.batch_item_failures.push(failure);
    }
    Ok(response)
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
