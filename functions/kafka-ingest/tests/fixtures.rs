//! The handler on the `events/msk-events.json` fixture and on poison records, on the embedded
//! backend.

use std::sync::Arc;

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::Engine as _;
use object_store::ObjectStoreExt;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::event::SilverEvent;
use streamcube_model::pseudonym::{Pseudonym, PseudonymKey, Pseudonymizer};
use streamcube_pipeline::ports::{PutOutcome, SilverStore, StoreError, StoreResult};
use streamcube_pipeline::{Pipeline, PipelineConfig, PipelineError};

fn fixture() -> serde_json::Value {
    let path = format!(
        "{}/../../events/msk-events.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn event(v: serde_json::Value) -> KafkaEvent {
    serde_json::from_value(v).expect("a Kafka event")
}

fn config() -> PipelineConfig {
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    PipelineConfig::new(Pseudonymizer::new(&key))
}

async fn lake_lines(p: &Pipeline, path: &str) -> Vec<serde_json::Value> {
    let got = p
        .stores
        .lake
        .get(&object_store::path::Path::from(path))
        .await
        .expect("quarantine object");
    let bytes = got.bytes().await.expect("bytes");
    std::str::from_utf8(&bytes)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

const QUARANTINE: &str = "quarantine/kafka/playback-events/0/1041-1043.jsonl";

#[tokio::test]
async fn valid_events_to_silver_the_rest_to_quarantine_and_a_redelivery_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = Pipeline::new(
        EmbeddedBackend::open(tmp.path()).expect("open").stores(),
        config(),
    );
    // Through the Lambda entry point.
    let report = kafka_ingest::handler(
        &p,
        lambda_runtime::LambdaEvent::new(event(fixture()), lambda_runtime::Context::default()),
    )
    .await
    .expect("batch");
    let c = &report.counts;
    assert_eq!((c.rows, c.accepted, c.duplicates, c.rejected), (3, 1, 0, 2));
    let answer = serde_json::to_value(&report).expect("json");
    assert_eq!(
        (
            &answer["accepted"],
            &answer["duplicates"],
            &answer["rejected"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(0),
            &serde_json::json!(2)
        )
    );
    assert_eq!(report.quarantine, [QUARANTINE]);
    assert_eq!(c.rejected_by_reason.get("row:malformed_json"), Some(&1));
    assert_eq!(c.rejected_by_reason.get("device:unknown_device"), Some(&1));
    assert_eq!(
        c.rejected_by_reason.get("watch_seconds:out_of_range"),
        Some(&1)
    );

    let lines = lake_lines(&p, QUARANTINE).await;
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (
            &lines[0]["topic"],
            &lines[0]["partition"],
            &lines[0]["offset"]
        ),
        (
            &serde_json::json!("playback-events"),
            &serde_json::json!(0),
            &serde_json::json!(1042)
        )
    );
    // The raw value as text, so that a person can fix and resend it.
    assert!(
        lines[0]["raw"]
            .as_str()
            .expect("raw")
            .starts_with(r#"{"event_id":"k-7f3a9c02""#)
    );
    assert_eq!(
        lines[0]["errors"],
        serde_json::json!([{"field": "row", "reason": "malformed_json"}])
    );
    assert_eq!(lines[1]["offset"], 1043);

    // The valid event is in silver, pseudonymized, with the record as origin.
    let hour = 1_795_456_931_000_i64.div_euclid(3_600_000);
    let stored = p.stores.silver.hour_events(hour).await.expect("silver");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_id, "k-7f3a9c01");
    assert_eq!(stored[0].origin, "kafka:playback-events:0:1041");
    assert_ne!(stored[0].viewer.to_hex(), "v000050");

    // Lambda delivers the batch again: accepted again, not duplicates; nothing else changes.
    let again = kafka_ingest::ingest(&p, &event(fixture()))
        .await
        .expect("redelivery");
    assert_eq!(again, report);
    assert_eq!(lake_lines(&p, QUARANTINE).await, lines);
    assert_eq!(
        p.stores.silver.hour_events(hour).await.expect("silver"),
        stored
    );

    // The same event under another offset (a producer retry) is a duplicate.
    let mut resent = fixture();
    let record = resent["records"]["playback-events-0"][0].clone();
    let mut moved = record;
    moved["offset"] = 2000.into();
    resent["records"]["playback-events-0"] = serde_json::json!([moved]);
    let dup = kafka_ingest::ingest(&p, &event(resent))
        .await
        .expect("resent");
    assert_eq!((dup.counts.accepted, dup.counts.duplicates), (0, 1));
    assert!(dup.quarantine.is_empty());
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn poison_records_are_quarantined_with_their_reasons_and_never_block() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut config = config();
    config.served_countries = PipelineConfig::parse_countries("BR").expect("countries");
    let p = Pipeline::new(
        EmbeddedBackend::open(tmp.path()).expect("open").stores(),
        config,
    );
    let valid = |id: &str, country: &str| {
        serde_json::json!({
            "event_id": id, "occurred_at": "2026-11-23T18:02:11Z", "viewer_id": "v000050",
            "content_id": "c000017", "device": "tv", "country": country,
            "watch_seconds": 60, "completed": true
        })
        .to_string()
    };
    let rec = |partition: i64, offset: i64, value: serde_json::Value| {
        serde_json::json!({
            "topic": "playback-events", "partition": partition, "offset": offset,
            "timestamp": 1_795_456_931_000_i64, "timestampType": "CREATE_TIME",
            "key": null, "value": value, "headers": []
        })
    };
    let batch = serde_json::json!({
        "eventSource": "SelfManagedKafka",
        "records": {
            "playback-events-3": [
                rec(3, 10, b64(valid("p-1", "BR").as_bytes()).into()),
                rec(3, 11, "not base64!".into()),
                rec(3, 12, b64(&[0xff, 0xfe, b'{']).into()),
                rec(3, 13, serde_json::Value::Null),
                rec(3, 14, b64(valid("p-2", "AR").as_bytes()).into()),
                rec(3, 15, b64(b"[1, 2]").into()),
            ],
            "playback-events-7": [
                rec(7, 500, b64(valid("p-3", "BR").as_bytes()).into()),
            ]
        }
    });
    let report = kafka_ingest::ingest(&p, &event(batch))
        .await
        .expect("the batch succeeds");
    let c = &report.counts;
    assert_eq!((c.rows, c.accepted, c.duplicates, c.rejected), (7, 2, 0, 5));
    assert!(c.is_balanced());
    assert_eq!(
        report.quarantine,
        ["quarantine/kafka/playback-events/3/10-15.jsonl"]
    );
    let lines = lake_lines(&p, &report.quarantine[0]).await;
    let reasons: Vec<(i64, String)> = lines
        .iter()
        .map(|l| {
            (
                l["offset"].as_i64().expect("offset"),
                format!("{}:{}", l["errors"][0]["field"], l["errors"][0]["reason"])
                    .replace('"', ""),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (11, "row:invalid_characters".to_owned()),
            (12, "row:invalid_utf8".to_owned()),
            (13, "row:missing".to_owned()),
            (14, "country:country_not_served".to_owned()),
            (15, "row:malformed_json".to_owned()),
        ]
    );
    // Bytes that are not UTF-8 are kept as base64, and say so.
    assert_eq!(lines[1]["raw"], b64(&[0xff, 0xfe, b'{']));
    assert_eq!(lines[1]["raw_encoding"], "base64");
    assert_eq!(lines[0]["raw"], "not base64!");
    // No raw viewer id in silver.
    let hour = 1_795_456_931_000_i64.div_euclid(3_600_000);
    for e in p.stores.silver.hour_events(hour).await.expect("silver") {
        assert_ne!(e.viewer.to_hex(), "v000050");
    }
}

/// Silver that throttles every write.
struct Throttled;

#[async_trait::async_trait]
impl SilverStore for Throttled {
    async fn put_new(&self, _: &[SilverEvent]) -> StoreResult<Vec<PutOutcome>> {
        Err(StoreError::Throttled)
    }
    async fn hour_events(&self, _: i64) -> StoreResult<Vec<SilverEvent>> {
        Ok(Vec::new())
    }
    async fn viewer_events(&self, _: &Pseudonym) -> StoreResult<Vec<(String, i64)>> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &[String]) -> StoreResult<u64> {
        Ok(0)
    }
}

#[tokio::test]
async fn a_throttled_store_fails_the_batch_so_lambda_retries_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut stores = EmbeddedBackend::open(tmp.path()).expect("open").stores();
    stores.silver = Arc::new(Throttled);
    let p = Pipeline::new(stores, config());
    let err = kafka_ingest::ingest(&p, &event(fixture()))
        .await
        .expect_err("throttled");
    assert!(
        matches!(err, PipelineError::Store(StoreError::Throttled)),
        "{err}"
    );
    assert!(err.is_transient());
}
