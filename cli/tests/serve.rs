//! `streamcube serve` over a real socket on 127.0.0.1: the router, body limits and the shared
//! handler answer as the Lambda functions will.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends one HTTP/1.1 request and returns (status, body).
fn request(addr: &str, method: &str, path: &str, ctype: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let ctype = ctype
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_answers_over_http() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamcube"))
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let _server = Server(child);
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("banner");
    let addr = first
        .trim()
        .strip_prefix("serving on http://")
        .expect("address in the banner")
        .to_owned();

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
