//! DynamoDB pushing back, with the SDK's own mocking interceptor (the emulator never throttles):
//! unprocessed batch items are written on a later round, a throttled table becomes
//! `StoreError::Throttled` and, through the API, a `503` with `Retry-After` that leaks nothing.

use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use streamcube_aws::dynamo::batch_write;
use streamcube_aws::silver::DynamoSilver;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_pipeline::ports::StoreError;
use streamcube_pipeline::{Pipeline, PipelineConfig};

fn put(id: &str) -> WriteRequest {
    WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .item("event_id", AttributeValue::S(id.into()))
                .build()
                .expect("request"),
        )
        .build()
}

#[tokio::test]
async fn unprocessed_items_are_written_on_later_rounds() {
    // 3 items: the table takes one per call.
    let rule = mock!(Client::batch_write_item)
        .sequence()
        .output(|| {
            BatchWriteItemOutput::builder()
                .unprocessed_items("silver", vec![put("b"), put("c")])
                .build()
        })
        .output(|| {
            BatchWriteItemOutput::builder()
                .unprocessed_items("silver", vec![put("c")])
                .build()
        })
        .output(|| BatchWriteItemOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
    batch_write(&client, "silver", vec![put("a"), put("b"), put("c")])
        .await
        .expect("written after two retries");
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_table_that_never_takes_the_items_is_reported_as_throttled() {
    let rule = mock!(Client::batch_write_item).then_output(|| {
        BatchWriteItemOutput::builder()
            .unprocessed_items("silver", vec![put("a")])
            .build()
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let err = batch_write(&client, "silver", vec![put("a")])
        .await
        .expect_err("gives up");
    assert!(matches!(err, StoreError::Throttled), "{err:?}");
    assert_eq!(rule.num_calls(), 11, "the first call and ten retry rounds");
}

#[tokio::test(start_paused = true)]
async fn a_throttled_silver_table_answers_503_with_retry_after() {
    let rule = mock!(Client::put_item).then_error(|| {
        PutItemError::ProvisionedThroughputExceededException(
            // As the SDK parses it from the service's answer: the code in the metadata.
            ProvisionedThroughputExceededException::builder()
                .message("Rate of requests exceeds the allowed throughput (secret internals)")
                .meta(
                    aws_sdk_dynamodb::error::ErrorMetadata::builder()
                        .code("ProvisionedThroughputExceededException")
                        .message(
                            "Rate of requests exceeds the allowed throughput (secret internals)",
                        )
                        .build(),
                )
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let dir = tempfile::tempdir().expect("tmp");
    let mut stores = EmbeddedBackend::open(dir.path())
        .expect("embedded")
        .stores();
    stores.silver = Arc::new(DynamoSilver::new(client, "silver", None));
    let key = PseudonymKey::from_bytes("t", vec![3; 32]).expect("key");
    let p = Pipeline::new(stores, PipelineConfig::new(Pseudonymizer::new(&key)));
    let body = r#"{"event_id":"t1","occurred_at":"2026-11-01T10:00:00Z","viewer_id":"v1","content_id":"c1","device":"tv","country":"BR","watch_seconds":60,"completed":true}"#;
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/events")
        .header("content-type", "application/json")
        .body(bytes::Bytes::from(body))
        .expect("request");
    let resp = streamcube_pipeline::http::handle(&p, req, "req-1").await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let text = String::from_utf8(resp.body().to_vec()).expect("utf8");
    assert!(
        !text.contains("secret internals") && !text.contains("Provisioned"),
        "{text}"
    );
    assert!(rule.num_calls() >= 1);
}
