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

#[tokio::test]
async fn queries_the_consolidated_cube() {
    let tmp = tempfile::tempdir().expect("tmp");
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    let backend = EmbeddedBackend::open(tmp.path()).expect("open");
    let p = Pipeline::new(
        backend.stores(),
        PipelineConfig::new(Pseudonymizer::new(&key)),
    );

    // Load the events of the ingest fixture through the service, then consolidate.
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

    let resp = cube_query::handler(&p, fixture("http-get-cube.json"))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = match resp.body() {
        Body::Text(t) => serde_json::from_str(t).expect("json"),
        other => panic!("unexpected body {other:?}"),
    };
    assert_eq!(
        body["rows"],
        serde_json::json!([{"country": "BR", "plays": 2, "unique_viewers": 2, "completion_rate": 0.5}])
    );
    // Writes belong to ingest-api.
    let resp = cube_query::handler(&p, post).await.expect("response");
    assert_eq!(resp.status(), 404);
}
