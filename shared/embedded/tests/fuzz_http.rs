//! Bad input for the HTTP API (`streamcube_pipeline::http::handle`, the handler of the Lambda
//! functions and of `streamcube serve`), on the embedded backend in a temporary directory.
//!
//! This crate has no `proptest` among its dev-dependencies, so the fuzzing is done by the small
//! driver below (property-based in the same sense: generated cases, a checked property, a saved
//! corpus): the seed corpus `fuzz/corpus/http/*.json` (one request per file) is replayed first,
//! then `PROPTEST_CASES` generated requests (default: a quick run), within `FUZZ_SECONDS` if set,
//! from a random seed (`FUZZ_SEED` to repeat one). A failing request is shrunk and saved as
//! `fuzz/corpus/http/crash-*.json`, so every later run replays it first.
//!
//! The property: whatever the method, path, query string, content type and body, the answer is
//! one of the documented statuses (200, 400, 403, 404, 405, 413, 415), never a 500 nor a panic;
//! an error is a JSON body `{"error": {"code", "message"}, "request_id"}` whose code matches the
//! status, with no internal detail; a 405 says what is allowed; an accepted batch accounts for
//! every event sent (`accepted + duplicates + rejected = events`).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_pipeline::http::{MAX_BODY_BYTES, MAX_EVENTS, handle};
use streamcube_pipeline::{Pipeline, PipelineConfig};

#[path = "../../../fuzz/harness.rs"]
mod harness;

use harness::Rng;

// ---------------------------------------------------------------------------------------------
// Requests as JSON (so that the corpus is readable and the shrinker works on them):
// `{"method", "uri", "content_type"?, "accept"?, "body"? | "body_hex"? | "body_repeat"?}`.

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn body_of(r: &Value) -> Vec<u8> {
    if let Some(s) = r["body"].as_str() {
        return s.as_bytes().to_vec();
    }
    if let Some(h) = r["body_hex"].as_str() {
        return hex_decode(h);
    }
    if let Some(rep) = r.get("body_repeat") {
        let unit = rep["text"].as_str().unwrap_or("");
        let times = rep["times"].as_u64().unwrap_or(0).min(1 << 22) as usize;
        let mut s = rep["prefix"].as_str().unwrap_or("").to_owned();
        s.push_str(&unit.repeat(times));
        s.push_str(rep["suffix"].as_str().unwrap_or(""));
        return s.into_bytes();
    }
    Vec::new()
}

/// The request, or `None` when `http` itself refuses to build it (no server would pass it on).
fn request(r: &Value) -> Option<Request<Bytes>> {
    let method = Method::from_bytes(r["method"].as_str().unwrap_or("GET").as_bytes()).ok()?;
    let mut b = Request::builder()
        .method(method)
        .uri(r["uri"].as_str().unwrap_or("/"));
    if let Some(ct) = r["content_type"].as_str() {
        b = b.header("content-type", ct);
    }
    if let Some(h) = r["content_type_hex"].as_str() {
        b = b.header("content-type", hex_decode(h));
    }
    if let Some(a) = r["accept"].as_str() {
        b = b.header("accept", a);
    }
    b.body(Bytes::from(body_of(r))).ok()
}

/// How many events a POST body carries, read independently of the handler: `None` when the
/// body is not a batch (not JSON, wrong type, wrong content type).
fn events_sent(r: &Value) -> Option<usize> {
    let ct = r["content_type"].as_str()?;
    let media = ct.split(';').next()?.trim().to_ascii_lowercase();
    let body = body_of(r);
    match media.as_str() {
        "application/json" => match serde_json::from_slice::<Value>(&body).ok()? {
            Value::Array(a) => Some(a.len()),
            Value::Object(_) => Some(1),
            _ => None,
        },
        "application/x-ndjson" => {
            let mut n = 0;
            for line in body.split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                serde_json::from_slice::<Value>(line).ok()?;
                n += 1;
            }
            Some(n)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Generating requests.

fn event(rng: &mut Rng, n: u64) -> Value {
    let day = 1 + rng.below(3);
    json!({
        "event_id": format!("h-{}-{n}", rng.next_u64() % 1000),
        "occurred_at": format!("2026-11-0{day}T{:02}:{:02}:00Z", rng.below(24), rng.below(60)),
        "viewer_id": format!("viewer-{}", rng.below(20)),
        "content_id": format!("c{}", rng.below(5)),
        "device": *rng.pick(&["tv", "mobile", "web", "tablet", "console"]),
        "country": *rng.pick(&["BR", "PT", "US", "BR", "PT"]),
        "watch_seconds": rng.below(4000),
        "bitrate_kbps": if rng.one_in(3) { Value::Null } else { json!(1 + rng.below(9000)) },
        "buffering_ms": if rng.one_in(3) { Value::Null } else { json!(rng.below(9000)) },
        "completed": rng.one_in(2),
    })
}

const HOSTILE: &[&str] = &[
    "",
    " ",
    "\0",
    "XX",
    "br",
    "ＢＲ",
    "ВR",
    "TV",
    "tv\0",
    "-1",
    "1e3",
    "86401",
    "99999999999999999999",
    "2026-11-01T10:00:00",
    "9999-12-31T23:59:59Z",
    "bad id!",
    "\u{202e}",
    "🙂",
    "true",
    "\"",
];

fn hostile_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => json!(rng.one_in(2)),
        2 => json!(rng.next_u64()),
        3 => json!(-(rng.below(1000) as i64)),
        4 => json!(rng.below(100) as f64 + 0.5),
        5 if depth < 3 => Value::Array(
            (0..rng.below(3))
                .map(|_| hostile_value(rng, depth + 1))
                .collect(),
        ),
        6 if depth < 3 => json!({ "a": hostile_value(rng, depth + 1) }),
        _ => json!(*rng.pick(HOSTILE)),
    }
}

/// A valid event with a few fields broken, removed or added.
fn mutated_event(rng: &mut Rng, n: u64) -> Value {
    let mut e = event(rng, n);
    let keys = [
        "event_id",
        "occurred_at",
        "viewer_id",
        "content_id",
        "device",
        "country",
        "watch_seconds",
        "bitrate_kbps",
        "buffering_ms",
        "completed",
    ];
    for _ in 0..rng.below(3) {
        let k = *rng.pick(&keys);
        match rng.below(4) {
            0 => {
                e.as_object_mut().map(|m| m.remove(k));
            }
            1 => e[k] = Value::String("x".repeat(rng.pick(&[129usize, 257, 300]).to_owned())),
            _ => e[k] = hostile_value(rng, 0),
        }
    }
    if rng.one_in(8) {
        e["Event_ID"] = json!("dup");
    }
    e
}

fn body_for_events(rng: &mut Rng) -> (Option<String>, Value) {
    let n = rng.below(6);
    let events: Vec<Value> = (0..n)
        .map(|i| {
            if rng.one_in(2) {
                event(rng, i as u64)
            } else {
                mutated_event(rng, i as u64)
            }
        })
        .collect();
    let ct = |rng: &mut Rng, base: &str| -> Option<String> {
        Some(match rng.below(6) {
            0 => format!("{base}; charset=utf-8"),
            1 => base.to_uppercase(),
            2 => format!(" {base} ;"),
            _ => base.to_owned(),
        })
    };
    match rng.below(14) {
        0..=4 => (
            ct(rng, "application/json"),
            json!(serde_json::to_string(&Value::Array(events)).expect("json")),
        ),
        5 => (
            ct(rng, "application/json"),
            json!(
                serde_json::to_string(&events.first().cloned().unwrap_or(json!({}))).expect("json")
            ),
        ),
        6 | 7 => {
            let mut lines: Vec<String> = events
                .iter()
                .map(|e| serde_json::to_string(e).expect("json"))
                .collect();
            if rng.one_in(3) {
                lines.push(String::new());
                lines.push("  ".into());
            }
            let sep = *rng.pick(&["\n", "\r\n", "\n\n"]);
            (ct(rng, "application/x-ndjson"), json!(lines.join(sep)))
        }
        8 => {
            // Broken JSON: cut, doubled quote, BOM, trailing garbage, not an object.
            let text = serde_json::to_string(&Value::Array(events)).expect("json");
            let broken = match rng.below(6) {
                0 => text[..rng.below(text.len().max(1))].to_owned(),
                1 => text.replacen('"', "\"\"", 1),
                2 => format!("\u{feff}{text}"),
                3 => format!("{text} x"),
                4 => (*rng.pick(&["1", "\"s\"", "null", "true", "[1,2]", "[[]]", "{}", "[{}]"]))
                    .to_owned(),
                _ => format!("{}{}", "[".repeat(200), "]".repeat(200)),
            };
            (
                (*rng.pick(&[Some("application/json"), Some("application/x-ndjson")]))
                    .map(str::to_owned),
                json!(broken),
            )
        }
        9 => (
            (*rng.pick(&[
                None,
                Some("text/plain"),
                Some(""),
                Some("application/jsonx"),
                Some("application/json-patch+json"),
                Some("multipart/form-data; boundary=x"),
                Some("application/x-www-form-urlencoded"),
            ]))
            .map(str::to_owned),
            json!(serde_json::to_string(&Value::Array(events)).expect("json")),
        ),
        10 => (
            ct(rng, "application/json"),
            json!(hostile_value(rng, 0).to_string()),
        ),
        _ => (
            ct(rng, "application/json"),
            json!(serde_json::to_string(&Value::Array(events)).expect("json")),
        ),
    }
}

fn generate(rng: &mut Rng) -> Value {
    let prefix = if rng.one_in(8) {
        *rng.pick(&["/v1", "/x/v1/y", "/V1"])
    } else {
        *rng.pick(&["", "", "", "/prod", "/lambda-url/ingest-api"])
    };
    // Mostly the route's own method, sometimes any.
    let other = rng.one_in(8);
    let method = |rng: &mut Rng, own: &'static str| {
        if other {
            *rng.pick(&[
                "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "BREW",
            ])
        } else {
            own
        }
    };
    let mut r = json!({});
    match rng.below(10) {
        // Events.
        0..=3 => {
            r["method"] = json!(method(rng, "POST"));
            let (ct, body) = body_for_events(rng);
            let route = *rng.pick(&[
                "events",
                "events",
                "events/",
                "Events",
                "events/x",
                "events?y=1",
            ]);
            r["uri"] = json!(format!("{prefix}/v1/{route}"));
            if let Some(ct) = ct {
                r["content_type"] = json!(ct);
            }
            r["body"] = body;
            if rng.one_in(12) {
                // Non-UTF-8 bytes in the body, or in the content type.
                if rng.one_in(2) {
                    r.as_object_mut().map(|m| m.remove("body"));
                    r["body_hex"] = json!("5b7b226576656e745f6964223a2261ff227d5d");
                } else {
                    r.as_object_mut().map(|m| m.remove("content_type"));
                    r["content_type_hex"] = json!("6170706c69636174696f6e2f6a736f6eff");
                }
            }
        }
        // Too large: just over the byte limit, or over the event limit.
        4 if rng.one_in(4) => {
            r["method"] = json!("POST");
            r["uri"] = json!("/v1/events");
            r["content_type"] = json!("application/json");
            if rng.one_in(2) {
                r["body_repeat"] =
                    json!({"prefix": "[", "text": " ", "times": MAX_BODY_BYTES, "suffix": "]"});
            } else {
                r["body_repeat"] =
                    json!({"prefix": "[{}", "text": ",{}", "times": MAX_EVENTS, "suffix": "]"});
            }
        }
        // Cube queries.
        4..=7 => {
            r["method"] = json!(method(rng, "GET"));
            let mut q: Vec<String> = Vec::new();
            if !rng.one_in(10) {
                q.push(format!("from=2026-11-0{}", 1 + rng.below(3)));
            }
            if !rng.one_in(10) {
                q.push(format!("to=2026-11-0{}", 1 + rng.below(3)));
            }
            let extra = [
                "granularity=hour",
                "granularity=day",
                "granularity=total",
                "granularity=week",
                "group_by=country",
                "group_by=country,device",
                "group_by=genre,content_id",
                "group_by=city",
                "measures=plays,unique_viewers",
                "measures=",
                "measures=revenue",
                "order_by=plays",
                "order_by=plays:asc",
                "order_by=plays:sideways",
                "limit=3",
                "limit=0",
                "limit=%FF",
                "country=BR",
                "country=BR,PT",
                "country=",
                "country=xx",
                "device=tv",
                "device=TV",
                "genre=drama",
                "content_id=c1",
                "from=2026-11-01",
                "to=2027-12-31",
                "to=%2B262143-12-31",
                "from=-262144-01-01",
                "x=1",
                "%FF=1",
                "&&",
                "=",
                "a=b=c",
                "country=%42%52",
                "country=B%00R",
                "genre=%F0%9F%99%82",
                "group_by=country%2Cdevice",
                "limit=+5",
                "limit=10001",
            ];
            for _ in 0..rng.below(5) {
                let x = *rng.pick(&extra);
                // Mostly one value per parameter (a repeated one is a 400 on its own).
                let key = x.split('=').next().unwrap_or("");
                if rng.one_in(6) || !q.iter().any(|p| p.split('=').next() == Some(key)) {
                    q.push(x.to_owned());
                }
            }
            r["uri"] = json!(format!("{prefix}/v1/cube?{}", q.join("&")));
            if rng.one_in(3) {
                r["accept"] = json!(*rng.pick(&[
                    "text/csv",
                    "application/json",
                    "text/csv;q=0.1, */*",
                    "*/*"
                ]));
            }
        }
        // Viewers, health and unknown routes.
        _ => {
            let route = match rng.below(8) {
                0 => {
                    r["method"] = json!(method(rng, "DELETE"));
                    format!("viewers/viewer-{}", rng.below(25))
                }
                1 => (*rng.pick(&[
                    "viewers/",
                    "viewers/a/b",
                    "viewers/%FF",
                    "viewers/%2F",
                    "viewers/%00",
                    "viewers/%E2%80%AE",
                    "viewers/..",
                    "viewers/%",
                    "viewers/a%2Fb",
                ]))
                .to_owned(),
                2 => {
                    r["method"] = json!(method(rng, "GET"));
                    "health".to_owned()
                }
                3 => "health/".to_owned(),
                4 => "".to_owned(),
                5 => "cube/".to_owned(),
                6 => "v1/events".to_owned(),
                _ => (*rng.pick(&["users", "events/../cube", "%65vents", "metrics", "viewers"]))
                    .to_owned(),
            };
            if r.get("method").is_none() {
                r["method"] = json!(*rng.pick(&["GET", "POST", "DELETE", "PUT"]));
            }
            r["uri"] = json!(format!("{prefix}/v1/{route}"));
            if rng.one_in(4) {
                r["uri"] =
                    json!(*rng.pick(&["/", "/v2/events", "v1/events", "/health", "*", "/v1"]));
            }
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------
// The property.

const DOCUMENTED: [u16; 7] = [200, 400, 403, 404, 405, 413, 415];

fn check_response(
    r: &Value,
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let ctx = || {
        format!(
            "status {status}, body {:?}",
            String::from_utf8_lossy(&body[..body.len().min(400)])
        )
    };
    if !DOCUMENTED.contains(&status.as_u16()) {
        return Err(format!("undocumented status: {}", ctx()));
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("text/csv") {
        if status != StatusCode::OK {
            return Err(format!("a CSV error body: {}", ctx()));
        }
        return std::str::from_utf8(body)
            .map(drop)
            .map_err(|_| format!("CSV not UTF-8: {}", ctx()));
    }
    if ct != "application/json" {
        return Err(format!("content type {ct:?}: {}", ctx()));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("body not JSON ({e}): {}", ctx()))?;
    let lower = String::from_utf8_lossy(body).to_lowercase();
    for leak in [
        "sqlite",
        "rusqlite",
        "object_store",
        "panicked",
        "backtrace",
        "database is",
    ] {
        if lower.contains(leak) {
            return Err(format!("internal detail `{leak}` in the body: {}", ctx()));
        }
    }
    if status != StatusCode::OK {
        let code = v["error"]["code"].as_str().unwrap_or("");
        let message = v["error"]["message"].as_str().unwrap_or("");
        let want = match status.as_u16() {
            400 => &["bad_request", "bad_query"][..],
            403 => &["country_not_served"],
            404 => &["not_found"],
            405 => &["method_not_allowed"],
            413 => &["payload_too_large"],
            415 => &["unsupported_media_type"],
            _ => &[],
        };
        if !want.contains(&code) || message.is_empty() || v["request_id"] != "req-fuzz" {
            return Err(format!("malformed error body: {}", ctx()));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED && headers.get("allow").is_none() {
            return Err(format!("405 without Allow: {}", ctx()));
        }
        return Ok(());
    }
    let route = r["uri"].as_str().unwrap_or("");
    if route.contains("/v1/events") && r["method"] == "POST" {
        let (Some(a), Some(d), Some(rej)) = (
            v["accepted"].as_u64(),
            v["duplicates"].as_u64(),
            v["rejected"].as_array(),
        ) else {
            return Err(format!("not an ingest result: {}", ctx()));
        };
        if let Some(sent) = events_sent(r) {
            let total = a + d + rej.len() as u64;
            if total != sent as u64 {
                return Err(format!(
                    "{sent} events sent, {total} accounted for: {}",
                    ctx()
                ));
            }
        }
        for x in rej {
            let idx = x["index"].as_u64().unwrap_or(u64::MAX);
            let errors = x["errors"].as_array().map_or(0, Vec::len);
            if errors == 0 || events_sent(r).is_some_and(|n| idx >= n as u64) {
                return Err(format!(
                    "a rejection without a valid index or errors: {}",
                    ctx()
                ));
            }
            for e in x["errors"].as_array().into_iter().flatten() {
                if !e["field"].is_string() || !e["reason"].is_string() {
                    return Err(format!("an error without field and reason: {}", ctx()));
                }
            }
        }
    }
    if route.contains("/v1/cube") {
        let cols = v["columns"]
            .as_array()
            .ok_or_else(|| format!("no columns: {}", ctx()))?;
        let rows = v["rows"]
            .as_array()
            .ok_or_else(|| format!("no rows: {}", ctx()))?;
        for row in rows {
            let obj = row
                .as_object()
                .ok_or_else(|| format!("a row is not an object: {}", ctx()))?;
            if obj.keys().any(|k| !cols.iter().any(|c| c == k)) {
                return Err(format!("a row key is not a column: {}", ctx()));
            }
        }
        if !v["generations"].is_object() {
            return Err(format!("no generations: {}", ctx()));
        }
    }
    Ok(())
}

struct Setup {
    rt: tokio::runtime::Runtime,
    /// Answers seen, by status (0: a request `http` cannot represent), for the report.
    seen: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Serves every country, and serves only BR and PT (for the 403).
    all: Pipeline,
    some: Pipeline,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn config() -> PipelineConfig {
    let key = PseudonymKey::from_bytes("t", vec![7; 32]).expect("key");
    PipelineConfig::new(Pseudonymizer::new(&key))
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (a, b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let all = Pipeline::new(
        EmbeddedBackend::open(a.path()).expect("open").stores(),
        config(),
    );
    let mut some_config = config();
    some_config.served_countries = PipelineConfig::parse_countries("BR,PT").expect("countries");
    let some = Pipeline::new(
        EmbeddedBackend::open(b.path()).expect("open").stores(),
        some_config,
    );
    // Some data in gold, so that queries have cells to aggregate.
    rt.block_on(async {
        for p in [&all, &some] {
            let mut rng = Rng::new(42);
            let events: Vec<Value> = (0..60)
                .map(|i| {
                    let mut e = event(&mut rng, i);
                    e["event_id"] = json!(format!("seed-{i}"));
                    e
                })
                .filter(|e| e["country"] != "US" || p.config.served_countries.is_none())
                .collect();
            p.ingest_json(&events).await.expect("ingest");
            let first = streamcube_model::query::first_hour(
                chrono::NaiveDate::from_ymd_opt(2026, 11, 1).expect("day"),
            );
            let hours: Vec<i64> = (0..72).map(|h| first + h).collect(); // 2026-11-01..03
            p.consolidate_hours(&hours).await.expect("consolidate");
        }
    });
    Setup {
        rt,
        seen: Default::default(),
        all,
        some,
        _dirs: (a, b),
    }
}

fn call(s: &Setup, r: &Value) -> Result<(), String> {
    let count = |status: u16| {
        if let Ok(mut seen) = s.seen.lock() {
            *seen.entry(status).or_default() += 1;
        }
    };
    let Some(req) = request(r) else {
        count(0);
        return Ok(()); // not a request `http` can even represent
    };
    let p = if r["served"] == "BR,PT" {
        s.some.clone()
    } else {
        s.all.clone()
    };
    let task = s.rt.spawn(async move {
        let resp = tokio::time::timeout(Duration::from_secs(60), handle(&p, req, "req-fuzz")).await;
        resp.map(|resp| (resp.status(), resp.headers().clone(), resp.into_body()))
    });
    match s.rt.block_on(task) {
        Err(e) => Err(format!(
            "the handler panicked: {}",
            harness::panic_message(e)
        )),
        Ok(Err(_)) => Err("the handler hung for 60 s".to_owned()),
        Ok(Ok((status, headers, body))) => {
            count(status.as_u16());
            if std::env::var_os("FUZZ_VERBOSE").is_some() {
                let b = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                println!("{} {} -> {status} {b}", r["method"], r["uri"]);
            }
            check_response(r, status, &headers, &body)
        }
    }
}

/// With `FUZZ_REPORT=1`, prints what every corpus request gets (the README's table of bad
/// inputs comes from this).
fn report_corpus(s: &Setup) {
    if std::env::var_os("FUZZ_REPORT").is_none() {
        return;
    }
    for (name, r) in harness::corpus("http") {
        let Some(req) = request(&r) else {
            println!("corpus http/{name}: not a request http can build");
            continue;
        };
        let p = if r["served"] == "BR,PT" {
            s.some.clone()
        } else {
            s.all.clone()
        };
        let resp =
            s.rt.block_on(async move { handle(&p, req, "req-fuzz").await });
        let body: Value = serde_json::from_slice(resp.body()).unwrap_or_else(|_| {
            json!(
                String::from_utf8_lossy(resp.body())
                    .chars()
                    .take(120)
                    .collect::<String>()
            )
        });
        let what = if resp.status() == StatusCode::OK {
            let mut t = body.to_string();
            t.truncate(160);
            match body["rows"].as_array() {
                Some(rows) => format!("{} rows, columns {}", rows.len(), body["columns"]),
                None => t,
            }
        } else {
            format!("{} ({})", body["error"]["code"], body["error"]["message"])
        };
        println!("corpus http/{name}: {} {what}", resp.status().as_u16());
    }
}

#[test]
fn any_request_gets_a_documented_status_and_a_json_error() {
    let s = setup();
    report_corpus(&s);
    harness::run(
        "http",
        "documented_statuses",
        300,
        |rng| {
            let mut r = generate(rng);
            if rng.one_in(4) {
                r["served"] = json!("BR,PT");
            }
            r
        },
        |r| call(&s, r),
    );
    println!(
        "fuzz-statuses target=http {:?}",
        s.seen.lock().map(|m| m.clone()).unwrap_or_default()
    );
}
