//! Ingesting a batch of Kafka records (Amazon MSK or self-managed Kafka, through Lambda's event
//! source mapping), whatever the backend.
//!
//! Each record's value is one event as JSON, base64-encoded as the event source delivers it.
//! Valid events go to silver like the HTTP API's, with the record as their origin
//! (`kafka:<topic>:<partition>:<offset>`), so a redelivered batch finds them already stored and
//! counts them as accepted again, never as new duplicates. Everything else (a tombstone, a value
//! that is not base64, not UTF-8 or not JSON, an event that breaks the contract or comes from a
//! country this deployment does not serve) goes to the quarantine with its topic, partition,
//! offset, raw value and reasons: one object per topic-partition and batch,
//! `quarantine/kafka/<topic>/<partition>/<first offset>-<last offset>.jsonl`, rewritten whole when
//! the batch is redelivered. A poison record never blocks its partition; only a failing store
//! fails the batch, so that Lambda delivers it again (harmless, thanks to the origins).
//!
//! Unlike the HTTP API, residency is judged per record: there is no client to send the batch
//! back to, so events of countries not served are quarantined and the rest is kept.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use streamcube_model::event::{Field, FieldError, Reason, SilverEvent, Validator};
use streamcube_model::report::{FileReport, Rejection};

use crate::ports::PutOutcome;
use crate::{Pipeline, PipelineError};

/// One Kafka record as the event source delivers it.
#[derive(Clone, Copy, Debug)]
pub struct KafkaRecord<'a> {
    pub topic: &'a str,
    pub partition: i64,
    pub offset: i64,
    /// The value, base64-encoded; `None` for a record without one (a tombstone).
    pub value: Option<&'a str>,
}

/// What became of a batch: `rows = accepted + duplicates + rejected`, and where the refused
/// records are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaReport {
    #[serde(flatten)]
    pub counts: FileReport,
    /// The quarantine objects written, one per topic-partition with refused records.
    pub quarantine: Vec<String>,
}

/// The quarantine object of the records `first..=last` of a topic-partition.
pub fn kafka_quarantine_path(topic: &str, partition: i64, first: i64, last: i64) -> String {
    format!("quarantine/kafka/{topic}/{partition}/{first}-{last}.jsonl")
}

/// The origin stored with an event that came from a Kafka record.
pub fn kafka_origin(topic: &str, partition: i64, offset: i64) -> String {
    format!("kafka:{topic}:{partition}:{offset}")
}

/// The refused records of one topic-partition, and the offsets the batch covered.
struct PartitionQuarantine {
    first: i64,
    last: i64,
    lines: Vec<u8>,
}

impl Pipeline {
    /// Ingests a batch of Kafka records (see the module documentation).
    #[tracing::instrument(skip_all, fields(records = records.len()), err)]
    pub async fn ingest_kafka(
        &self,
        records: &[KafkaRecord<'_>],
    ) -> Result<KafkaReport, PipelineError> {
        let validator = Validator::now();
        let mut counts = FileReport::default();
        let mut events = Vec::with_capacity(records.len());
        let mut partitions: BTreeMap<(&str, i64), PartitionQuarantine> = BTreeMap::new();
        for r in records {
            counts.rows += 1;
            let q = partitions
                .entry((r.topic, r.partition))
                .or_insert(PartitionQuarantine {
                    first: r.offset,
                    last: r.offset,
                    lines: Vec::new(),
                });
            q.first = q.first.min(r.offset);
            q.last = q.last.max(r.offset);
            match self.check_kafka_record(r, &validator) {
                Ok(event) => events.push(event),
                Err(rejection) => {
                    counts.reject(&rejection.errors);
                    serde_json::to_writer(&mut q.lines, &rejection).map_err(|e| {
                        PipelineError::Objects(object_store::Error::Generic {
                            store: "lake",
                            source: Box::new(e),
                        })
                    })?;
                    q.lines.push(b'\n');
                }
            }
        }

        let mut quarantine = Vec::new();
        for ((topic, partition), q) in partitions {
            if q.lines.is_empty() {
                continue;
            }
            let path = kafka_quarantine_path(topic, partition, q.first, q.last);
            self.stores
                .lake
                .put(&Path::from(path.as_str()), q.lines.into())
                .await?;
            quarantine.push(path);
        }

        let silver = &self.stores.silver;
        let outcomes: Vec<Vec<PutOutcome>> =
            futures::stream::iter(events.chunks(self.config.write_batch.max(1)))
                .map(|chunk| silver.put_new(chunk))
                .buffered(self.config.write_concurrency.max(1))
                .try_collect()
                .await?;
        for o in outcomes.into_iter().flatten() {
            match o {
                PutOutcome::Inserted | PutOutcome::AlreadyStored => counts.accepted += 1,
                PutOutcome::Duplicate => counts.duplicates += 1,
            }
        }
        debug_assert!(counts.is_balanced());
        tracing::info!(
            accepted = counts.accepted,
            duplicates = counts.duplicates,
            rejected = counts.rejected,
            "kafka batch ingested"
        );
        Ok(KafkaReport { counts, quarantine })
    }

    /// The silver event of a record, or its quarantine entry.
    fn check_kafka_record(
        &self,
        r: &KafkaRecord<'_>,
        validator: &Validator,
    ) -> Result<SilverEvent, Rejection> {
        let reject = |raw: String, base64: bool, errors: Vec<FieldError>| {
            let mut origin = BTreeMap::from([
                ("topic".to_owned(), serde_json::json!(r.topic)),
                ("partition".to_owned(), serde_json::json!(r.partition)),
                ("offset".to_owned(), serde_json::json!(r.offset)),
            ]);
            if base64 {
                origin.insert("raw_encoding".to_owned(), serde_json::json!("base64"));
            }
            Rejection {
                line: 0,
                raw,
                errors,
                origin,
            }
        };
        let row = |reason| vec![FieldError::new(Field::Row, reason)];
        let Some(encoded) = r.value else {
            return Err(reject(String::new(), false, row(Reason::Missing)));
        };
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|_| reject(encoded.to_owned(), false, row(Reason::InvalidCharacters)))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| reject(encoded.trim().to_owned(), true, row(Reason::InvalidUtf8)))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| reject(text.clone(), false, row(Reason::MalformedJson)))?;
        let checked = self.check_json(std::slice::from_ref(&value), validator);
        if let Some(rejected) = checked.rejected.into_iter().next() {
            return Err(reject(text, false, rejected.errors));
        }
        if !checked.not_served.is_empty() {
            return Err(reject(
                text,
                false,
                vec![FieldError::new(Field::Country, Reason::CountryNotServed)],
            ));
        }
        match checked.events.into_iter().next() {
            Some((_, mut event)) => {
                event.origin = kafka_origin(r.topic, r.partition, r.offset);
                Ok(event)
            }
            // check_json accounts for every value it is given; this is only a safe default.
            None => Err(reject(text, false, row(Reason::MalformedJson))),
        }
    }
}
