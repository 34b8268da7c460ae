//! The handler on the `events/dynamodb-stream-silver.json` and `events/schedule-consolidate.json`
//! fixtures, on the embedded backend: a stream batch only marks its hours, the scheduled run
//! publishes them, replays change nothing, a failing day stays pending alone.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::NaiveDate;
use cube_consolidator::{InvocationError, RunSummary};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::cube::{Cell, Dims};
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_pipeline::ports::{ChangeFeed, Level, StoreError, StoreResult};
use streamcube_pipeline::refusing::{GoldWrite, RefusingGold};
use streamcube_pipeline::{Pipeline, PipelineConfig};

fn fixture() -> serde_json::Value {
    let path = format!(
        "{}/../../events/dynamodb-stream-silver.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn schedule() -> serde_json::Value {
    let path = format!(
        "{}/../../events/schedule-consolidate.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

const SEQ: [&str; 4] = [
    "4421584500000000017450439091",
    "4421584500000000017450439092",
    "4421584500000000017450439093",
    "4421584500000000017450439094",
];

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).expect("day")
}

/// Silver holding what the fixture's stream describes: the two events of the ingest fixture
/// (2026-11-22 21h and 2026-11-23 00h UTC), and one on 2026-11-21 that was stored and removed.
async fn backend(dir: &std::path::Path, failing: &[NaiveDate]) -> Pipeline {
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    let backend = EmbeddedBackend::open(dir).expect("open");
    let mut stores = backend.stores();
    // Publishing the failing days fails, as on a throttled table.
    let failing: BTreeSet<NaiveDate> = failing.iter().copied().collect();
    stores.gold = Arc::new(RefusingGold::new(
        stores.gold.clone(),
        move |w| matches!(w, GoldWrite::Publish(m) if m.day.is_some_and(|d| failing.contains(&d))),
    ));
    let p = Pipeline::new(stores, PipelineConfig::new(Pseudonymizer::new(&key)));
    let event = |id: &str, at: &str, viewer: &str, device: &str| {
        serde_json::json!({
            "event_id": id, "occurred_at": at, "viewer_id": viewer, "content_id": "c000017",
            "device": device, "country": "BR", "watch_seconds": 600, "completed": true
        })
    };
    let result = p
        .ingest_json(&[
            event(
                "0b6f9d5e-3c1a-4f57-9a61-2f0d8c4b7e11",
                "2026-11-22T21:14:03Z",
                "v000042",
                "tv",
            ),
            event(
                "0b6f9d5e-3c1a-4f57-9a61-2f0d8c4b7e12",
                "2026-11-22T21:20:41-03:00",
                "v000043",
                "mobile",
            ),
            event(
                "0b6f9d5e-3c1a-4f57-9a61-2f0d8c4b7e10",
                "2026-11-21T08:05:12Z",
                "v000042",
                "web",
            ),
        ])
        .await
        .expect("ingest");
    assert_eq!(result.accepted, 3);
    let removed = p
        .stores
        .silver
        .delete(&["0b6f9d5e-3c1a-4f57-9a61-2f0d8c4b7e10".to_owned()])
        .await
        .expect("delete");
    assert_eq!(removed, 1);
    // The embedded store notes its own changes; on AWS only the stream reports them. Cleared
    // here, so that what is pending below is what the stream batch marked.
    for (hour, seen) in p.stores.changes.pending().await.expect("pending") {
        p.stores.changes.ack(hour, seen).await.expect("ack");
    }
    p
}

/// A change feed whose marks fail, as a throttled table would.
struct FailingMarks(Arc<dyn ChangeFeed>);

#[async_trait::async_trait]
impl ChangeFeed for FailingMarks {
    async fn pending(&self) -> StoreResult<Vec<(i64, u64)>> {
        self.0.pending().await
    }
    async fn ack(&self, hour: i64, seen: u64) -> StoreResult<()> {
        self.0.ack(hour, seen).await
    }
    async fn mark(&self, _hours: &[i64]) -> StoreResult<()> {
        Err(StoreError::Throttled)
    }
}

async fn invoke(p: &Pipeline, v: serde_json::Value) -> Result<serde_json::Value, InvocationError> {
    cube_consolidator::handler(
        p,
        lambda_runtime::LambdaEvent::new(v, lambda_runtime::Context::default()),
    )
    .await
}

/// The stream batch through the handler: the sequence numbers it asks to retry.
async fn failures(p: &Pipeline, v: serde_json::Value) -> Vec<String> {
    let answer = invoke(p, v).await.expect("a batch response");
    let response: aws_lambda_events::event::streams::DynamoDbEventResponse =
        serde_json::from_value(answer).expect("a partial batch response");
    response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier.expect("identifier"))
        .collect()
}

/// The scheduled run through the handler.
async fn run(p: &Pipeline) -> Result<RunSummary, InvocationError> {
    cube_consolidator::consolidate_pending(p).await
}

async fn pending_days(p: &Pipeline) -> BTreeSet<NaiveDate> {
    let pending = p.stores.changes.pending().await.expect("pending");
    streamcube_pipeline::consolidate::hours_by_day(pending.into_iter().map(|(h, _)| h))
        .into_keys()
        .collect()
}

async fn published(p: &Pipeline, d: NaiveDate) -> Option<(u64, Vec<(Dims, Cell)>)> {
    let m = p.stores.gold.manifest(d).await.expect("manifest")?;
    let mut cells = p
        .stores
        .gold
        .cells(d, Level::Day, m.day_generation, None)
        .await
        .expect("cells");
    cells.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    Some((m.events, cells))
}

async fn all_published(p: &Pipeline) -> [Option<(u64, Vec<(Dims, Cell)>)>; 3] {
    [
        published(p, day(21)).await,
        published(p, day(22)).await,
        published(p, day(23)).await,
    ]
}

async fn version(p: &Pipeline, d: NaiveDate) -> Option<u64> {
    p.stores
        .gold
        .manifest(d)
        .await
        .expect("manifest")
        .map(|m| m.version)
}

#[tokio::test]
async fn a_batch_marks_its_hours_and_the_scheduled_run_publishes_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = backend(tmp.path(), &[]).await;
    assert_eq!(
        invoke(&p, fixture()).await.expect("response"),
        serde_json::json!({"batchItemFailures": []})
    );
    assert_eq!(
        all_published(&p).await,
        [None, None, None],
        "a batch publishes nothing"
    );
    assert_eq!(
        pending_days(&p).await,
        BTreeSet::from([day(21), day(22), day(23)])
    );

    let summary = invoke(&p, schedule()).await.expect("the scheduled run");
    assert_eq!(
        summary["days"].as_array().map(Vec::len),
        Some(3),
        "{summary}"
    );
    let first = all_published(&p).await;
    let events: Vec<Option<u64>> = first.iter().map(|d| d.as_ref().map(|d| d.0)).collect();
    // 11-21 lost its only event (the REMOVE), 11-22 and 11-23 have one each.
    assert_eq!(events, [Some(0), Some(1), Some(1)]);
    assert!(first[1].as_ref().is_some_and(|d| !d.1.is_empty()));
    assert_eq!(
        pending_days(&p).await,
        BTreeSet::new(),
        "published hours are cleared"
    );

    // Nothing pending: the next run publishes nothing.
    let v22 = version(&p, day(22)).await;
    assert_eq!(run(&p).await.expect("run"), RunSummary { days: Vec::new() });
    assert_eq!(version(&p, day(22)).await, v22);

    // The same batch again (Lambda retries, or a replayed shard), then the run.
    assert!(failures(&p, fixture()).await.is_empty());
    run(&p).await.expect("run");
    assert_eq!(all_published(&p).await, first);
    // It was recomputed (a new generation), to the same cells.
    assert_ne!(version(&p, day(22)).await, v22);
}

#[tokio::test]
async fn a_failing_day_stays_pending_and_the_others_publish() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = backend(tmp.path(), &[day(23)]).await;
    assert!(failures(&p, fixture()).await.is_empty());
    let err = run(&p).await.expect_err("a day failed");
    assert!(
        matches!(err, InvocationError::DaysFailed { failed: 1, days: 3 }),
        "{err:?}"
    );
    assert!(published(&p, day(23)).await.is_none());
    assert_eq!(published(&p, day(22)).await.map(|d| d.0), Some(1));
    assert_eq!(published(&p, day(21)).await.map(|d| d.0), Some(0));
    assert_eq!(pending_days(&p).await, BTreeSet::from([day(23)]));
    // The error names no storage detail.
    assert_eq!(
        err.to_string(),
        "1 of 3 days failed; their hours stay pending for the next run"
    );
}

#[tokio::test]
async fn marks_that_cannot_be_written_retry_the_batch_from_its_first_record() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut p = backend(tmp.path(), &[]).await;
    p.stores.changes = Arc::new(FailingMarks(p.stores.changes.clone()));
    assert_eq!(failures(&p, fixture()).await, [SEQ[0]]);
    assert_eq!(pending_days(&p).await, BTreeSet::new());
}

#[tokio::test]
async fn a_record_without_an_hour_is_reported_and_does_not_stop_the_others() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = backend(tmp.path(), &[]).await;
    let mut batch = fixture();
    batch["Records"][2]["dynamodb"]["NewImage"]
        .as_object_mut()
        .expect("image")
        .remove("hour");
    batch["Records"][2]["dynamodb"]["OldImage"]
        .as_object_mut()
        .expect("image")
        .remove("hour");
    assert_eq!(failures(&p, batch).await, [SEQ[2]]);
    run(&p).await.expect("run");
    assert_eq!(published(&p, day(22)).await.map(|d| d.0), Some(1));
    assert_eq!(published(&p, day(23)).await.map(|d| d.0), Some(1));
}

#[tokio::test]
async fn an_invocation_of_another_shape_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = backend(tmp.path(), &[]).await;
    for v in [
        serde_json::json!({}),
        serde_json::json!({"detail-type": "Object Created", "source": "aws.s3"}),
        serde_json::json!([1, 2]),
    ] {
        let err = invoke(&p, v.clone()).await.expect_err("refused");
        assert!(matches!(err, InvocationError::Unknown), "{v}: {err:?}");
    }
    let err = invoke(&p, serde_json::json!({"Records": 3}))
        .await
        .expect_err("malformed");
    assert!(matches!(err, InvocationError::Malformed(_)), "{err:?}");
    assert_eq!(pending_days(&p).await, BTreeSet::new());
}
