//! `streamcube serve` over a real socket on 127.0.0.1: the router, body limits and the shared
//! handler answer as the Lambda functions will.

use std::process::Command;

mod common;

use common::{request, start_serve};

#[test]
fn serve_answers_over_http() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamcube"));
    command
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["serve", "--addr", "127.0.0.1:0"]);
    let (_server, addr) = start_serve(command);

    let (status, body) = request(&addr, "GET", "/v1/health", None, "");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    let event = r#"{"event_id":"e1","occurred_at":"2026-11-01T10:00:00Z","viewer_id":"v1","content_id":"c1","device":"tv","country":"BR","watch_seconds":60,"completed":true}"#;
    let (status, body) = request(&addr, "POST", "/v1/events", Some("application/json"), event);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""accepted":1"#), "{body}");
    let (status, _) = request(&addr, "POST", "/v1/events", Some("application/json"), event);
    assert_eq!(status, 200);

    let (status, body) = request(&addr, "POST", "/v1/events", Some("text/plain"), event);
    assert_eq!(status, 415, "{body}");
    let big = format!("[{}]", "1,".repeat(600_000));
    let (status, _) = request(&addr, "POST", "/v1/events", Some("application/json"), &big);
    assert_eq!(status, 413);
    let (status, body) = request(
        &addr,
        "GET",
        "/v1/cube?from=2026-11-01&to=2026-11-01&group_by=city",
        None,
        "",
    );
    assert_eq!(status, 400);
    assert!(body.contains("unknown dimension `city`"), "{body}");
}
