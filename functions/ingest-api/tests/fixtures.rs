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

fn pipeline(dir: &std::path::Path) -> Pipeline {
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    let backend = EmbeddedBackend::open(dir).expect("open");
    Pipeline::new(
        backend.stores(),
        PipelineConfig::new(Pseudonymizer::new(&key)),
    )
}

async fn call(p: &Pipeline, name: &str) -> (u16, serde_json::Value) {
    let resp = ingest_api::handler(p, fixture(name))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let body = match resp.body() {
        Body::Text(t) => serde_json::from_str(t).expect("json"),
        other => panic!("unexpected body {other:?}"),
    };
    (status, body)
}

#[tokio::test]
async fn ingest_resend_and_routes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = pipeline(tmp.path());
    let (s, body) = call(&p, "http-post-events.json").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(body["rejected"][0]["index"], 2);
    assert_eq!(body["rejected"][0]["event_id"], "bad id");
    // The same two events again, as NDJSON: duplicates, never stored twice.
    let (s, body) = call(&p, "http-post-events-ndjson.json").await;
    assert_eq!((s, body["duplicates"].as_u64()), (200, Some(2)));
    // Erasure belongs to the erasure function (least privilege).
    let (s, body) = call(&p, "http-delete-viewer.json").await;
    assert_eq!(s, 404, "{body}");
    let (s, body) = call(&p, "http-get-health.json").await;
    assert_eq!((s, body["status"].as_str()), (200, Some("ok")));
    // Queries belong to cube-query.
    let (s, body) = call(&p, "http-get-cube.json").await;
    assert_eq!(s, 404, "{body}");
}
