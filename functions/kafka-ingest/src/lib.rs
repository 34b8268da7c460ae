//! kafka-ingest: batches of playback events from Amazon MSK or self-managed Kafka.
//!
//! Each record's value is one event as JSON. [`Pipeline::ingest_kafka`] validates,
//! pseudonymizes and stores the valid ones in silver with the record as origin
//! (`kafka:<topic>:<partition>:<offset>`, so a redelivered batch counts them as accepted again,
//! not as duplicates) and quarantines every other record with its topic, partition, offset, raw
//! value and reasons. A poison record never blocks its partition: the batch succeeds. Only a
//! failing store (throttling, say) fails the invocation, so that Lambda delivers the batch again;
//! that is harmless thanks to the origins.
//!
//! The answer is the batch's counts (`rows = accepted + duplicates + rejected`, rejections by
//! reason) and the quarantine objects written.

use aws_lambda_events::event::kafka::KafkaEvent;
use lambda_runtime::LambdaEvent;
use streamcube_pipeline::http::ErrorChain;
use streamcube_pipeline::kafka::{KafkaRecord, KafkaReport};
use streamcube_pipeline::{Pipeline, PipelineError};

/// A batch that must be delivered again (the store failed); nothing of it is lost.
#[derive(Debug, thiserror::Error)]
#[error("the batch is to be delivered again: {}", ErrorChain(.0))]
pub struct RetryBatch(#[from] pub PipelineError);

impl From<RetryBatch> for lambda_runtime::Diagnostic {
    fn from(e: RetryBatch) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "RetryBatch".to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// Handles one batch.
pub async fn handler(
    pipeline: &Pipeline,
    event: LambdaEvent<KafkaEvent>,
) -> Result<KafkaReport, RetryBatch> {
    Ok(ingest(pipeline, &event.payload).await?)
}

/// The records of an event, by topic-partition (the event's map is unordered) and offset.
pub fn records(event: &KafkaEvent) -> Vec<KafkaRecord<'_>> {
    let mut out: Vec<KafkaRecord<'_>> = event
        .records
        .iter()
        .flat_map(|(name, records)| {
            // The map key is "<topic>-<partition>"; the records carry the topic too.
            let from_name = name.rsplit_once('-').map_or(name.as_str(), |(t, _)| t);
            records.iter().map(move |r| KafkaRecord {
                topic: r.topic.as_deref().unwrap_or(from_name),
                partition: r.partition,
                offset: r.offset,
                value: r.value.as_deref(),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.topic, a.partition, a.offset).cmp(&(b.topic, b.partition, b.offset)));
    out
}

/// Ingests an event's records; an error means the batch must be delivered again.
pub async fn ingest(pipeline: &Pipeline, event: &KafkaEvent) -> Result<KafkaReport, PipelineError> {
    pipeline.ingest_kafka(&records(event)).await
}
