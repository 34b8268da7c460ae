//! The handler on the `events/dynamodb-stream-silver.json` fixture, on the embedded backend:
//! replays change nothing, a failing day is retried alone.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use chrono::NaiveDate;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::cube::{Cell, Cuboid, Dims};
use streamcube_model::event::SilverEvent;
use streamcube_model::pseudonym::Pseudonym;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_pipeline::ports::{
    DayManifest, GoldStore, Level, PutOutcome, SilverStore, StoreError, StoreResult,
};
use streamcube_pipeline::{Pipeline, PipelineConfig};

fn fixture() -> serde_json::Value {
    let path = format!(
        "{}/../../events/dynamodb-stream-silver.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn event(v: serde_json::Value) -> Event {
    serde_json::from_value(v).expect("a DynamoDB stream event")
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

/// Gold that fails to publish the given days, as a throttled table would.
struct FailingDays {
    inner: Arc<dyn GoldStore>,
    days: BTreeSet<NaiveDate>,
}

#[async_trait::async_trait]
impl GoldStore for FailingDays {
    async fn manifest(&self, day: NaiveDate) -> StoreResult<Option<DayManifest>> {
        self.inner.manifest(day).await
    }
    async fn put_cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cells: &[(Dims, Cell)],
    ) -> StoreResult<()> {
        self.inner.put_cells(day, level, generation, cells).await
    }
    async fn publish(&self, manifest: &DayManifest, expected_version: u64) -> StoreResult<()> {
        if manifest.day.is_some_and(|d| self.days.contains(&d)) {
            return Err(StoreError::Throttled);
        }
        self.inner.publish(manifest, expected_version).await
    }
    async fn cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Option<Cuboid>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        self.inner.cells(day, level, generation, cuboid).await
    }
    async fn stale_generations(
        &self,
        day: NaiveDate,
        keep: &[(Level, u64)],
    ) -> StoreResult<Vec<(Level, u64)>> {
        self.inner.stale_generations(day, keep).await
    }
    async fn delete_cells(&self, day: NaiveDate, level: Level, generation: u64) -> StoreResult<()> {
        self.inner.delete_cells(day, level, generation).await
    }
}

/// Silver holding what the fixture's stream describes: the two events of the ingest fixture
/// (2026-11-22 21h and 2026-11-23 00h UTC), and one on 2026-11-21 that was stored and removed.
async fn backend(dir: &std::path::Path, failing: &[NaiveDate]) -> Pipeline {
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    let backend = EmbeddedBackend::open(dir).expect("open");
    let mut stores = backend.stores();
    stores.gold = Arc::new(FailingDays {
        inner: stores.gold.clone(),
        days: failing.iter().copied().collect(),
    });
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
    p
}

async fn failures(p: &Pipeline, v: serde_json::Value) -> Vec<String> {
    cube_consolidator::consolidate(p, &event(v))
        .await
        .expect("response")
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier.expect("identifier"))
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

#[tokio::test]
async fn consolidates_the_touched_days_and_a_replay_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = backend(tmp.path(), &[]).await;
    // Through the Lambda entry point.
    let response = cube_consolidator::handler(
        &p,
        lambda_runtime::LambdaEvent::new(event(fixture()), lambda_runtime::Context::default()),
    )
    .await
    .expect("response");
    assert_eq!(
        serde_json::to_value(&response).expect("json"),
        serde_json::json!({"batchItemFailures": []})
    );
    let first = [
        published(&p, day(21)).await,
        published(&p, day(22)).await,
        published(&p, day(23)).await,
    ];
    let events: Vec<Option<u64>> = first.iter().map(|d| d.as_ref().map(|d| d.0)).collect();
    // 11-21 lost its only event (the REMOVE), 11-22 and 11-23 have one each.
    assert_eq!(events, [Some(0), Some(1), Some(1)]);
    assert!(first[1].as_ref().is_some_and(|d| !d.1.is_empty()));
    let version = p
        .stores
        .gold
        .manifest(day(22))
        .await
        .expect("manifest")
        .map(|m| m.version);

    // The same batch again (Lambda retries, or a replayed shard).
    assert!(failures(&p, fixture()).await.is_empty());
    let again = [
        published(&p, day(21)).await,
        published(&p, day(22)).await,
        published(&p, day(23)).await,
    ];
    assert_eq!(again, first);
    // It was recomputed (a new generation), to the same cells.
    assert_ne!(
        p.stores
            .gold
            .manifest(day(22))
            .await
            .expect("manifest")
            .map(|m| m.version),
        version
    );
}

#[tokio::test]
async fn a_failing_day_is_retried_from_its_first_record_and_the_others_publish() {
    // 11-23 (record 2) fails: Lambda retries from record 2; 11-21 and 11-22 are published.
    let tmp = tempfile::tempdir().expect("tmp");
    let p = backend(tmp.path(), &[day(23)]).await;
    assert_eq!(failures(&p, fixture()).await, [SEQ[1]]);
    assert!(published(&p, day(23)).await.is_none());
    assert_eq!(published(&p, day(22)).await.map(|d| d.0), Some(1));
    assert_eq!(published(&p, day(21)).await.map(|d| d.0), Some(0));

    // 11-22 (records 1 and 3) and 11-21 (record 4) fail: the lowest, record 1.
    let tmp = tempfile::tempdir().expect("tmp");
    let p = backend(tmp.path(), &[day(21), day(22)]).await;
    assert_eq!(failures(&p, fixture()).await, [SEQ[0]]);
    assert_eq!(published(&p, day(23)).await.map(|d| d.0), Some(1));

    // Only the REMOVE's day fails: its record.
    let tmp = tempfile::tempdir().expect("tmp");
    let p = backend(tmp.path(), &[day(21)]).await;
    assert_eq!(failures(&p, fixture()).await, [SEQ[3]]);
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
    assert_eq!(published(&p, day(22)).await.map(|d| d.0), Some(1));
    assert_eq!(published(&p, day(23)).await.map(|d| d.0), Some(1));
}

/// Silver whose hour index lags: the first `lag` reads of each hour miss the hidden events and
/// still show the removed one, as a DynamoDB global secondary index may right after the writes.
struct LaggingIndex {
    inner: Arc<dyn SilverStore>,
    hidden: Vec<String>,
    ghost: Option<SilverEvent>,
    lag: u32,
    reads: std::sync::Mutex<std::collections::HashMap<i64, u32>>,
}

#[async_trait::async_trait]
impl SilverStore for LaggingIndex {
    async fn put_new(&self, events: &[SilverEvent]) -> StoreResult<Vec<PutOutcome>> {
        self.inner.put_new(events).await
    }
    async fn hour_events(&self, hour: i64) -> StoreResult<Vec<SilverEvent>> {
        let mut events = self.inner.hour_events(hour).await?;
        let n = {
            let mut reads = self.reads.lock().expect("lock");
            let n = reads.entry(hour).or_default();
            *n += 1;
            *n
        };
        if n <= self.lag {
            events.retain(|e| !self.hidden.contains(&e.event_id));
            if let Some(g) = self.ghost.as_ref().filter(|g| g.hour() == hour) {
                events.push(g.clone());
            }
        }
        Ok(events)
    }
    async fn viewer_events(&self, viewer: &Pseudonym) -> StoreResult<Vec<(String, i64)>> {
        self.inner.viewer_events(viewer).await
    }
    async fn delete(&self, event_ids: &[String]) -> StoreResult<u64> {
        self.inner.delete(event_ids).await
    }
}

#[tokio::test]
async fn a_lagging_hour_index_is_read_until_it_shows_the_batch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let truth = backend(tmp.path(), &[]).await;
    assert!(failures(&truth, fixture()).await.is_empty());
    let expected = [
        published(&truth, day(21)).await,
        published(&truth, day(22)).await,
        published(&truth, day(23)).await,
    ];

    let tmp = tempfile::tempdir().expect("tmp");
    let mut p = backend(tmp.path(), &[]).await;
    // The removed event, as the index would still show it.
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    let ghost = SilverEvent {
        event_id: "0b6f9d5e-3c1a-4f57-9a61-2f0d8c4b7e10".into(),
        occurred_at_ms: 1_795_248_000_000 + 312_000, // 2026-11-21T08:05:12Z
        viewer: Pseudonymizer::new(&key).pseudonymize("v000042", 1_795_248_312_000),
        content_id: "c000017".into(),
        device: streamcube_model::event::Device::Web,
        country: "BR".parse().expect("country"),
        watch_seconds: 600,
        bitrate_kbps: None,
        buffering_ms: None,
        completed: true,
        origin: String::new(),
    };
    p.stores.silver = Arc::new(LaggingIndex {
        inner: p.stores.silver.clone(),
        hidden: vec!["0b6f9d5e-3c1a-4f57-9a61-2f0d8c4b7e11".into()],
        ghost: Some(ghost),
        lag: 2,
        reads: Default::default(),
    });
    assert!(failures(&p, fixture()).await.is_empty());
    let got = [
        published(&p, day(21)).await,
        published(&p, day(22)).await,
        published(&p, day(23)).await,
    ];
    assert_eq!(
        got, expected,
        "the cube waits for the index to show the batch"
    );
}
