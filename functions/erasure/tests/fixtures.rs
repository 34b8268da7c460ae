//! The handler on the `events/` fixtures, on the embedded backend.

use lambda_http::Body;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_pipeline::{Pipeline, PipelineConfig};

fn fixture(name: &str) -> lambda_http::Request {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    lambda_http::request::from_str(&text).expect("an API Gateway v2 request")
}

async fn call(p: &Pipeline, name: &str) -> (u16, serde_json::Value) {
    let resp = erasure::handler(p, fixture(name)).await.expect("response");
    let status = resp.status().as_u16();
    let body = match resp.body() {
        Body::Text(t) => serde_json::from_str(t).expect("json"),
        other => panic!("unexpected body {other:?}"),
    };
    (status, body)
}

#[tokio::test]
async fn erases_a_viewer_and_answers_what_was_removed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    let backend = EmbeddedBackend::open(tmp.path()).expect("open");
    let p = Pipeline::new(
        backend.stores(),
        PipelineConfig::new(Pseudonymizer::new(&key)),
    );
    // The events of the ingest fixture (viewer v000042 has one of them), consolidated.
    let post = fixture("http-post-events.json");
    let events: Vec<serde_json::Value> = match post.body() {
        Body::Text(t) => serde_json::from_str(t).expect("events"),
        other => panic!("unexpected body {other:?}"),
    };
    p.ingest_json(&events).await.expect("ingest");
    let hours: Vec<i64> = backend
        .change_feed()
        .pending()
        .await
        .expect("pending")
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    p.consolidate_hours(&hours).await.expect("consolidate");
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).expect("day");
    let events_of = |m: Option<streamcube_pipeline::ports::DayManifest>| m.map(|m| m.events);
    assert_eq!(
        events_of(p.stores.gold.manifest(day).await.expect("manifest")),
        Some(1)
    );

    let (s, body) = call(&p, "http-delete-viewer.json").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["events_deleted"], 1, "{body}");
    assert_eq!(body["days"][0]["day"], "2026-11-22", "{body}");
    // The day was republished without the viewer.
    assert_eq!(
        events_of(p.stores.gold.manifest(day).await.expect("manifest")),
        Some(0)
    );
    // Again: nothing left to remove.
    let (s, body) = call(&p, "http-delete-viewer.json").await;
    assert_eq!((s, body["events_deleted"].as_u64()), (200, Some(0)));

    // Everything else belongs to other functions.
    for other in [
        "http-post-events.json",
        "http-get-health.json",
        "http-get-cube.json",
    ] {
        let (s, body) = call(&p, other).await;
        assert_eq!(s, 404, "{other}: {body}");
    }
}
