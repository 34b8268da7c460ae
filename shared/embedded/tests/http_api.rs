//! The HTTP API (shared by the Lambda functions and `streamcube serve`) on the embedded backend:
//! every status it promises, and no internal detail in any body.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::event::SilverEvent;
use streamcube_model::pseudonym::{Pseudonym, PseudonymKey, Pseudonymizer};
use streamcube_pipeline::http::handle;
use streamcube_pipeline::ports::{PutOutcome, SilverStore, StoreError, StoreResult};
use streamcube_pipeline::{Pipeline, PipelineConfig};

fn config() -> PipelineConfig {
    let key = PseudonymKey::from_bytes("t", vec![3; 32]).expect("key");
    PipelineConfig::new(Pseudonymizer::new(&key))
}

fn pipeline(dir: &std::path::Path, config: PipelineConfig) -> (Pipeline, EmbeddedBackend) {
    let backend = EmbeddedBackend::open(dir).expect("open");
    (Pipeline::new(backend.stores(), config), backend)
}

async fn call(
    p: &Pipeline,
    method: Method,
    uri: &str,
    ctype: Option<&str>,
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(c) = ctype {
        b = b.header("content-type", c);
    }
    let req = b.body(Bytes::from(body.to_owned())).expect("request");
    let resp = handle(p, req, "req-123").await;
    let status = resp.status();
    let headers = resp.headers().clone();
    (
        status,
        headers,
        String::from_utf8_lossy(resp.body()).into_owned(),
    )
}

fn event(id: &str, viewer: &str, country: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","occurred_at":"2026-11-01T10:00:00Z","viewer_id":"{viewer}","content_id":"c1","device":"tv","country":"{country}","watch_seconds":60,"bitrate_kbps":3000,"buffering_ms":null,"completed":true}}"#
    )
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("json body")
}

#[tokio::test]
async fn ingest_query_and_erase_over_http() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (p, backend) = pipeline(tmp.path(), config());

    let (s, _, body) = call(&p, Method::GET, "/v1/health", None, "").await;
    assert_eq!(
        (s, json(&body)["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );

    // One object, then an array with a resend and a bad event, then NDJSON.
    let (s, _, body) = call(
        &p,
        Method::POST,
        "/v1/events",
        Some("application/json"),
        &event("e1", "alice", "BR"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({"accepted": 1, "duplicates": 0, "rejected": []})
    );
    let batch = format!(
        "[{}, {}, {}]",
        event("e1", "alice", "BR"),
        event("e2", "bob", "PT"),
        event("bad id", "carol", "XX")
    );
    let (s, _, body) = call(
        &p,
        Method::POST,
        "/v1/events",
        Some("application/json; charset=utf-8"),
        &batch,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        json(&body),
        serde_json::json!({"accepted": 1, "duplicates": 1, "rejected": [
            {"index": 2, "event_id": "bad id", "errors": [
                {"field": "event_id", "reason": "invalid_characters"},
                {"field": "country", "reason": "unknown_country"}]}]})
    );
    let ndjson = format!(
        "{}\n\n{}\n",
        event("e3", "alice", "BR"),
        event("e4", "dave", "US")
    );
    let (s, _, body) = call(
        &p,
        Method::POST,
        "/prod/v1/events",
        Some("application/x-ndjson"),
        &ndjson,
    )
    .await;
    assert_eq!(
        (s, json(&body)["accepted"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    assert_eq!(backend.sqlite().silver_count().await.expect("count"), 4);

    // Consolidate what changed, then query.
    let pending: Vec<i64> = backend
        .change_feed()
        .pending()
        .await
        .expect("pending")
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    p.consolidate_hours(&pending).await.expect("consolidate");
    let (s, _, body) = call(&p, Method::GET, "/v1/cube?from=2026-11-01&to=2026-11-01&group_by=country&measures=plays,unique_viewers,completion_rate&order_by=plays", None, "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v = json(&body);
    assert_eq!(
        v["columns"],
        serde_json::json!([
            "day",
            "country",
            "plays",
            "unique_viewers",
            "completion_rate"
        ])
    );
    assert_eq!(
        v["rows"][0],
        serde_json::json!({"day": "2026-11-01", "country": "BR", "plays": 2, "unique_viewers": 1, "completion_rate": 1.0})
    );
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(3));
    let req = Request::builder()
        .uri("/v1/cube?from=2026-11-01&to=2026-11-01&granularity=total&measures=plays")
        .header("accept", "text/csv")
        .body(Bytes::new())
        .expect("request");
    let resp = handle(&p, req, "r").await;
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(resp.body().as_ref(), b"plays\n4\n");

    // Erase alice: two events gone, and the cube follows.
    let (s, _, body) = call(&p, Method::DELETE, "/v1/viewers/alice", None, "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["events_deleted"].as_u64(), Some(2));
    let (_, _, body) = call(
        &p,
        Method::GET,
        "/v1/cube?from=2026-11-01&to=2026-11-01&granularity=total&measures=plays,unique_viewers",
        None,
        "",
    )
    .await;
    assert_eq!(
        json(&body)["rows"][0],
        serde_json::json!({"plays": 2, "unique_viewers": 2})
    );
    // Percent-encoded ids are decoded.
    let (s, _, body) = call(
        &p,
        Method::DELETE,
        "/v1/viewers/bob%40example.com",
        None,
        "",
    )
    .await;
    assert_eq!(
        (s, json(&body)["events_deleted"].as_u64()),
        (StatusCode::OK, Some(0))
    );
}

#[tokio::test]
async fn bad_requests_get_precise_4xx() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (p, _b) = pipeline(tmp.path(), config());
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        String,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            Method::POST,
            "/v1/events",
            Some("text/plain"),
            event("e", "v", "BR"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json or application/x-ndjson, not text/plain",
        ),
        (
            Method::POST,
            "/v1/events",
            None,
            event("e", "v", "BR"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a body without Content-Type",
        ),
        (
            Method::POST,
            "/v1/events",
            Some("application/json"),
            "{\"event_id\": ".into(),
            StatusCode::BAD_REQUEST,
            "not valid JSON (line 1, column",
        ),
        (
            Method::POST,
            "/v1/events",
            Some("application/json"),
            "42".into(),
            StatusCode::BAD_REQUEST,
            "a JSON object or an array",
        ),
        (
            Method::POST,
            "/v1/events",
            Some("application/x-ndjson"),
            format!("{}\n{{oops\n", event("e", "v", "BR")),
            StatusCode::BAD_REQUEST,
            "line 2 of the NDJSON body",
        ),
        (
            Method::POST,
            "/v1/events",
            Some("application/json"),
            format!("[{}]", vec![event("e", "v", "BR"); 501].join(",")),
            StatusCode::PAYLOAD_TOO_LARGE,
            "501 events; at most 500",
        ),
        (
            Method::POST,
            "/v1/events",
            Some("application/json"),
            format!("[\"{}\"]", "x".repeat(1 << 20)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "at most 1048576 are accepted",
        ),
        (
            Method::GET,
            "/v1/cube?from=2026-11-01&to=2026-11-01&group_by=city",
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "unknown dimension `city` in group_by",
        ),
        (
            Method::GET,
            "/v1/cube?from=2025-01-01&to=2026-11-01",
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "at most 366 are allowed",
        ),
        (
            Method::GET,
            "/v1/cube?to=2026-11-01",
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "missing parameter `from`",
        ),
        (
            Method::GET,
            "/v2/nothing",
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "no route",
        ),
        (
            Method::PUT,
            "/v1/events",
            None,
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST",
        ),
        (
            Method::DELETE,
            "/v1/viewers/",
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "no route",
        ),
    ];
    for (method, uri, ctype, body, status, message) in cases {
        let (s, headers, text) = call(&p, method.clone(), uri, ctype, &body).await;
        assert_eq!(s, status, "{method} {uri}: {text}");
        let v = json(&text);
        let got = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            got.contains(message),
            "{method} {uri}: `{got}` lacks `{message}`"
        );
        assert_eq!(v["request_id"], "req-123");
        if s == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(headers["allow"], "POST");
        }
    }
}

#[tokio::test]
async fn events_of_countries_not_served_are_refused_and_never_stored() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = config();
    cfg.served_countries = PipelineConfig::parse_countries("BR,PT").expect("countries");
    let (p, backend) = pipeline(tmp.path(), cfg);
    let batch = format!("[{}, {}]", event("e1", "a", "BR"), event("e2", "b", "DE"));
    let (s, _, body) = call(
        &p,
        Method::POST,
        "/v1/events",
        Some("application/json"),
        &batch,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        json(&body)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("DE")
    );
    assert_eq!(backend.sqlite().silver_count().await.expect("count"), 0);
}

/// A silver store that fails the way a real one can, for the error paths.
struct Failing(fn() -> StoreError);

#[async_trait]
impl SilverStore for Failing {
    async fn put_new(&self, _: &[SilverEvent]) -> StoreResult<Vec<PutOutcome>> {
        Err((self.0)())
    }
    async fn hour_events(&self, _: i64) -> StoreResult<Vec<SilverEvent>> {
        Err((self.0)())
    }
    async fn viewer_events(&self, _: &Pseudonym) -> StoreResult<Vec<(String, i64)>> {
        Err((self.0)())
    }
    async fn delete(&self, _: &[String]) -> StoreResult<u64> {
        Err((self.0)())
    }
}

#[tokio::test]
async fn throttling_is_a_503_with_retry_after_and_internal_errors_are_opaque() {
    let tmp = tempfile::tempdir().expect("tmp");
    let backend = EmbeddedBackend::open(tmp.path()).expect("open");
    let with = |f: fn() -> StoreError| {
        let mut stores = backend.stores();
        stores.silver = Arc::new(Failing(f));
        Pipeline::new(stores, config())
    };
    let throttled = with(|| StoreError::Throttled);
    let (s, headers, _) = call(
        &throttled,
        Method::POST,
        "/v1/events",
        Some("application/json"),
        &event("e", "v", "BR"),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");

    let broken = with(|| {
        StoreError::backend(std::io::Error::other(
            "secret table arn:aws:dynamodb:eu-west-1:123 exploded",
        ))
    });
    let (s, _, body) = call(&broken, Method::DELETE, "/v1/viewers/v", None, "").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !body.contains("arn:") && !body.contains("exploded"),
        "{body}"
    );
    assert_eq!(json(&body)["request_id"], "req-123");
}
