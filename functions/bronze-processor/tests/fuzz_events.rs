//! Bad input for bronze-processor: mutated S3 notifications (from `events/s3-put-*.json`),
//! hostile continuation payloads, and hostile bronze objects (damaged CSV and JSON lines, broken
//! gzip, odd keys), through the handler's `process` on the embedded backend.
//!
//! This crate has no `proptest` among its dev-dependencies, so the fuzzing is done by the small
//! driver below: the seed corpus `fuzz/corpus/bronze-s3/*.json` (one case per file:
//! `{"objects": [{"key", "text" | "hex" | "gzip_of", "broken_gzip"?}], "event": <payload>}`) is
//! replayed first, then `PROPTEST_CASES` generated cases (default: a quick run), within
//! `FUZZ_SECONDS` if set, from a random seed (`FUZZ_SEED` to repeat one). A failing case is shrunk
//! and saved as `fuzz/corpus/bronze-s3/crash-*.json`, which every later run replays first.
//!
//! The property: no panic; one result per record, in order; the invocation fails exactly when a
//! record failed; a record that is not `ObjectCreated:*` is ignored; an existing, readable object
//! of a known format with a usable key is processed (never failed), and its report accounts for
//! every row the reader finds (`rows = accepted + duplicates + rejected`), with exactly
//! `rejected` quarantine lines, each with a line number and reasons; a failure says why.

use std::collections::BTreeMap;
use std::time::Duration;

use bronze_processor::{BronzeError, Budget, InProcess, Input, Status, Summary, process};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_model::reader::{EventReader, Format};
use streamcube_model::report::Rejection;
use streamcube_pipeline::bronze::{Checkpoint, ObjectKind, Progress};
use streamcube_pipeline::{Pipeline, PipelineConfig};

#[path = "../../../fuzz/harness.rs"]
mod harness;

use harness::Rng;

// ---------------------------------------------------------------------------------------------
// gzip without a compression library: "stored" deflate blocks and a CRC-32.

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let n = c.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of a corpus or generated object: `text`, `hex`, or `gzip_of` (text gzipped), cut
/// in half when `broken_gzip`.
fn object_bytes(o: &Value) -> Vec<u8> {
    let mut b = if let Some(t) = o["text"].as_str() {
        t.as_bytes().to_vec()
    } else if let Some(h) = o["hex"].as_str() {
        hex_decode(h)
    } else if let Some(t) = o["gzip_of"].as_str() {
        gzip_stored(t.as_bytes())
    } else {
        Vec::new()
    };
    if o["broken_gzip"].as_bool() == Some(true) && b.len() > 12 {
        b.truncate(b.len() / 2);
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Generating cases.

const HEADER: &str = "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed";

fn csv_row(rng: &mut Rng, n: usize) -> String {
    let mut cells = vec![
        format!("b{}-{n}", rng.below(500)),
        format!("2026-11-0{}T{:02}:00:00Z", 1 + rng.below(3), rng.below(24)),
        format!("v{}", rng.below(30)),
        format!("c{}", rng.below(5)),
        (*rng.pick(&["tv", "web", "mobile"])).to_owned(),
        (*rng.pick(&["BR", "PT", "US"])).to_owned(),
        rng.below(5000).to_string(),
        String::new(),
        String::new(),
        "true".to_owned(),
    ];
    if rng.one_in(3) {
        let i = rng.below(cells.len());
        cells[i] = (*rng.pick(&[
            "",
            "XX",
            "br",
            "TV",
            "-1",
            "86401",
            "yes",
            "\"a,b\"",
            "\"unclosed",
            "a\"b",
            "2026-13-01T00:00:00Z",
            "9999-01-01T00:00:00Z",
            "bad id",
            "\u{fffd}",
            "ＢＲ",
        ]))
        .to_owned();
    }
    if rng.one_in(8) {
        cells.pop();
    }
    if rng.one_in(10) {
        cells.push("extra".into());
    }
    cells.join(",")
}

fn json_row(rng: &mut Rng, n: usize) -> String {
    let mut e = json!({
        "event_id": format!("j{}-{n}", rng.below(500)),
        "occurred_at": format!("2026-11-0{}T{:02}:00:00Z", 1 + rng.below(3), rng.below(24)),
        "viewer_id": format!("v{}", rng.below(30)),
        "content_id": format!("c{}", rng.below(5)),
        "device": *rng.pick(&["tv", "web", "console"]),
        "country": *rng.pick(&["BR", "PT", "DE"]),
        "watch_seconds": rng.below(5000),
        "completed": rng.one_in(2),
    });
    if rng.one_in(3) {
        harness::mutate(rng, &mut e);
    }
    match rng.below(12) {
        0 => "{\"event_id\":".to_owned(),
        1 => "[1,2]".to_owned(),
        2 => "   ".to_owned(),
        _ => e.to_string(),
    }
}

/// A bronze object: a key (with the extension deciding the format) and damaged content.
fn object(rng: &mut Rng, i: usize) -> Value {
    let ext = *rng.pick(&[
        ".csv",
        ".csv",
        ".jsonl",
        ".ndjson",
        ".json",
        ".csv.gz",
        ".jsonl.gz",
        ".CSV",
        ".txt",
        "",
    ]);
    let dir = *rng.pick(&[
        "events/fuzz",
        "events/fuzz/a b",
        "events/fuzz/x=1",
        "events",
        "reference/catalog",
    ]);
    let names: &[&str] = &[
        "f",
        "file",
        "weird name",
        "a+b",
        "a=b",
        "a,b",
        "a;b",
        "a!b",
        "a'b",
        "a@b",
        "a$b&c",
        "café",
        "a~b",
        "a#b",
        "100%",
        "a[1]",
        "a{b}^c|d",
    ];
    let name = *rng.pick(names);
    let key = format!("{dir}/{name}-{}-{i}{ext}", rng.next_u64() % 100_000);
    let csv = ext.contains("csv") || ext.is_empty() || ext == ".txt";
    let mut rows: Vec<String> = Vec::new();
    if dir == "reference/catalog" {
        rows.push("content_id,title,genre,release_year,duration_seconds".into());
        for k in 0..rng.below(5) {
            rows.push(format!(
                "c{k},Title {k},{},2020,{}",
                rng.pick(&["drama", "", "\"x,y\""]),
                rng.below(9000)
            ));
        }
        if rng.one_in(3) {
            rows.push((*rng.pick(&["c9", "c9,t,g,notayear,1", "\"", ",,,,"])).to_owned());
        }
    } else if csv {
        if !rng.one_in(10) {
            rows.push((*rng.pick(&[HEADER, HEADER, HEADER, "event_id,occurred_at", "\u{feff}event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,completed"])).to_owned());
        }
        for n in 0..rng.below(8) {
            rows.push(csv_row(rng, n));
        }
    } else {
        for n in 0..rng.below(8) {
            rows.push(json_row(rng, n));
        }
    }
    let sep = *rng.pick(&["\n", "\r\n", "\n\n"]);
    let mut text = rows.join(sep);
    if rng.one_in(2) {
        text.push_str(sep);
    }
    let mut o = json!({ "key": key });
    if ext.ends_with(".gz") {
        o["gzip_of"] = json!(text);
        if rng.one_in(4) {
            o["broken_gzip"] = json!(true);
        }
    } else if rng.one_in(10) {
        let mut b = text.into_bytes();
        let at = rng.below(b.len() + 1);
        b.insert(at, 0xff);
        o["hex"] = json!(hex(&b));
    } else {
        o["text"] = json!(text);
    }
    o
}

/// How an S3 notification writes a key: `+` for a space, `%XX` for everything else but
/// unreserved characters and `/`.
fn s3_encode(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn generate(rng: &mut Rng, template: &Value) -> Value {
    let objects: Vec<Value> = (0..rng.below(4)).map(|i| object(rng, i)).collect();
    let mut records = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let mut rec = template.clone();
        let key = if !objects.is_empty() && !rng.one_in(5) {
            let k = rng.pick(&objects)["key"].as_str().unwrap_or("").to_owned();
            if rng.one_in(8) {
                k.replace(' ', "%20")
            } else {
                s3_encode(&k)
            }
        } else {
            (*rng.pick(&[
                "events/2026/11/01/batch%3D1+part.csv", // a sample object
                "events/2026/11/01/batch-2.csv",
                "events/missing.csv",
                "events/bad%FF.csv",
                "events/trunc%",
                "",
                "events/a.parquet",
                "%2E%2E/%2E%2E/etc/passwd.csv",
                "events//double.csv",
                "events/",
            ]))
            .to_owned()
        };
        rec["s3"]["object"]["key"] = json!(key);
        rec["eventName"] = json!(*rng.pick(&[
            "ObjectCreated:Put",
            "ObjectCreated:Put",
            "ObjectCreated:Put",
            "ObjectCreated:Copy",
            "ObjectCreated:CompleteMultipartUpload",
            "ObjectRemoved:Delete",
            "objectcreated:put",
            "ObjectCreated",
            "",
            "ObjectRestore:Completed",
        ]));
        match rng.below(6) {
            0 => {
                rec["s3"]["object"]
                    .as_object_mut()
                    .map(|o| o.remove("versionId"));
            }
            1 => rec["s3"]["object"]["versionId"] = json!(""),
            2 => rec["s3"]["object"]["versionId"] = json!("v-fixed"), // a redelivery
            _ => rec["s3"]["object"]["versionId"] = json!(format!("v{}", rng.next_u64())),
        }
        records.push(rec);
    }
    let mut event = json!({ "Records": records });
    // Sometimes damage the notification itself; often the runtime could not even decode it.
    for _ in 0..(if rng.one_in(3) { 1 + rng.below(3) } else { 0 }) {
        harness::mutate(rng, &mut event);
    }
    json!({ "objects": objects, "event": event, "rows_per_part": rng.below(4) })
}

// ---------------------------------------------------------------------------------------------
// The property.

struct Setup {
    rt: tokio::runtime::Runtime,
    /// Outcomes seen (runtime refusals, statuses), for the report.
    seen: std::sync::Mutex<BTreeMap<String, u64>>,
    dir: tempfile::TempDir,
    p: Pipeline,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    let p = Pipeline::new(
        EmbeddedBackend::open(dir.path()).expect("open").stores(),
        PipelineConfig::new(Pseudonymizer::new(&key)),
    );
    // The sample objects the fixtures name.
    let samples = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/objects");
    copy_dir(&samples, &dir.path().join("bronze"));
    Setup {
        rt,
        seen: Default::default(),
        dir,
        p,
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// Lands an object in bronze as a file, the way `cp` into the data directory (or an S3 upload)
/// does: under its raw key.
fn land(s: &Setup, o: &Value) -> Option<(String, Vec<u8>)> {
    let key = o["key"].as_str()?.to_owned();
    let bytes = object_bytes(o);
    let path = s.dir.path().join("bronze").join(&key);
    std::fs::create_dir_all(path.parent()?).ok()?;
    std::fs::write(&path, &bytes).ok()?;
    Some((key, bytes))
}

/// The rows the reader finds in an object, or `None` when it cannot be read to the end.
fn reader_rows(key: &str, bytes: &[u8]) -> Option<u64> {
    let format = Format::from_name(key)?;
    let mut r = EventReader::new(bytes, format).ok()?;
    let mut n = 0;
    while r.next_row().ok()?.is_some() {
        n += 1;
    }
    Some(n)
}

/// Whether `object_store` keeps a key as it is (see the known bug below).
fn path_usable(key: &str) -> bool {
    object_store::path::Path::parse(key).is_ok_and(|p| p.as_ref() == key)
}

fn decode_key(raw: &str) -> Option<String> {
    bronze_processor::decode_key(raw).ok()
}

async fn lake_text(p: &Pipeline, path: &str) -> Result<String, String> {
    let got = p
        .stores
        .lake
        .get(&object_store::path::Path::parse(path).map_err(|e| format!("{path}: {e}"))?)
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let bytes = got.bytes().await.map_err(|e| e.to_string())?;
    String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
}

fn check(s: &Setup, case: &Value) -> Result<(), String> {
    let mut landed: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut broken: Vec<String> = Vec::new();
    for o in case["objects"].as_array().into_iter().flatten() {
        if let Some((k, b)) = land(s, o) {
            if o["broken_gzip"].as_bool() == Some(true) {
                broken.push(k.clone());
            }
            landed.insert(k, b);
        }
    }
    let payload = case["event"].clone();
    // The Lambda runtime decodes the payload before the handler runs; what it refuses never
    // reaches us.
    let count = |what: String| {
        if let Ok(mut seen) = s.seen.lock() {
            *seen.entry(what).or_default() += 1;
        }
    };
    let Ok(input) = serde_json::from_value::<Input>(payload.clone()) else {
        count("refused by the runtime".into());
        return Ok(());
    };
    let records: Vec<Value> = match &input {
        Input::S3(e) => e
            .records
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect(),
        Input::Continue(_) => vec![Value::Null],
    };
    let budget = match case["rows_per_part"].as_u64() {
        Some(n @ 1..) => Budget::RowsPerPart(n),
        _ => Budget::Unlimited,
    };
    let p = s.p.clone();
    let task = s.rt.spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(120),
            process(&p, &InProcess, input, budget),
        )
        .await
    });
    let result = match s.rt.block_on(task) {
        Err(e) => {
            return Err(format!(
                "the handler panicked: {}",
                harness::panic_message(e)
            ));
        }
        Ok(Err(_)) => return Err("the handler hung for 120 s".into()),
        Ok(Ok(r)) => r,
    };
    let (summary, failed): (Summary, bool) = match result {
        Ok(s) => (s, false),
        Err(BronzeError::Failed(s)) => (s, true),
    };
    for o in &summary.objects {
        count(format!("{:?}", o.status));
        if std::env::var_os("FUZZ_REPORT").is_some() {
            // What a corpus case gets (the README's table of bad inputs comes from this).
            let counts = o.report.as_ref().map(|r| {
                let c = &r.counts;
                format!(
                    "rows {} = accepted {} + duplicates {} + rejected {} {:?}",
                    c.rows, c.accepted, c.duplicates, c.rejected, c.rejected_by_reason
                )
            });
            println!(
                "report {:?} {:?}: {:?} {} {}",
                o.key,
                o.version,
                o.status,
                counts.unwrap_or_default(),
                o.error.as_deref().unwrap_or("")
            );
        }
    }
    if summary.objects.len() != records.len() {
        return Err(format!(
            "{} records, {} results: {summary:?}",
            records.len(),
            summary.objects.len()
        ));
    }
    if failed != summary.objects.iter().any(|o| o.status == Status::Failed) {
        return Err(format!(
            "the invocation's outcome does not match its records: {summary:?}"
        ));
    }
    // Rows of an object may be counted only once per key and version (redeliveries are
    // "already processed"); the quarantine of a key is rewritten by its latest version.
    for (rec, o) in records.iter().zip(&summary.objects) {
        if matches!(input_kind(&payload), Kind::S3) {
            let created = rec["eventName"]
                .as_str()
                .is_some_and(|n| n.starts_with("ObjectCreated:"));
            if !created {
                if o.status != Status::Ignored {
                    return Err(format!(
                        "a {} record was not ignored: {o:?}",
                        rec["eventName"]
                    ));
                }
                continue;
            }
            let raw = rec["s3"]["object"]["key"].as_str().unwrap_or("");
            let key = decode_key(raw).filter(|k| !k.is_empty());
            // A catalog whose header is unusable fails as a whole, by design.
            let bad_catalog = o
                .error
                .as_deref()
                .is_some_and(|e| e.contains("catalog file is not usable"));
            let usable = !bad_catalog
                && key.as_ref().is_some_and(|k| {
                    // Keys object storage cannot address as they are (empty segments, `.`,
                    // control characters) are refused with a clear error.
                    path_usable(k)
                        && landed.contains_key(k)
                        && !broken.contains(k)
                        && (k.starts_with("reference/catalog/") || Format::from_name(k).is_some())
                });
            if usable && o.status == Status::Failed {
                return Err(format!(
                    "an existing, readable object was not processed: key {raw:?} -> {key:?}: {:?}",
                    o.error
                ));
            }
        }
        match o.status {
            Status::Failed => {
                if o.error.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("a failure without a reason: {o:?}"));
                }
            }
            Status::Processed | Status::AlreadyProcessed => {
                let report = o
                    .report
                    .as_ref()
                    .ok_or_else(|| format!("no report: {o:?}"))?;
                let c = &report.counts;
                if !c.is_balanced() {
                    return Err(format!(
                        "rows != accepted + duplicates + rejected: {report:?}"
                    ));
                }
                // The quarantine of a key is under `quarantine/<key>`: a report never points
                // elsewhere (a later version deletes what the previous report points to).
                let own = format!("quarantine/{}", report.key);
                if let Some(q) = report.quarantine_objects().find(|q| !q.starts_with(&own)) {
                    return Err(format!(
                        "the report points to {q:?}, outside {own:?}: {report:?}"
                    ));
                }
                if matches!(input_kind(&payload), Kind::Continue) {
                    // A continuation carries the counts and quarantine of the parts before it;
                    // only the invariants above can be checked.
                    continue;
                }
                if report.kind == ObjectKind::Events
                    && o.status == Status::Processed
                    && let Some(bytes) = landed.get(&report.key)
                    && let Some(rows) = reader_rows(&report.key, bytes)
                    && rows != c.rows
                {
                    return Err(format!(
                        "the reader finds {rows} rows, the report {}: {report:?}",
                        c.rows
                    ));
                }
                if o.status == Status::Processed {
                    let mut lines = 0;
                    for q in report.quarantine_objects() {
                        let text = s.rt.block_on(lake_text(&s.p, q))?;
                        for l in text.lines() {
                            let r: Rejection = serde_json::from_str(l).map_err(|e| {
                                format!("quarantine line not a rejection ({e}): {l}")
                            })?;
                            if r.errors.is_empty()
                                || (report.kind == ObjectKind::Events && r.line == 0)
                            {
                                return Err(format!("a rejection without line or reasons: {l}"));
                            }
                            lines += 1;
                        }
                    }
                    if lines != c.rejected {
                        return Err(format!(
                            "{} rejected, {lines} quarantine lines: {report:?}",
                            c.rejected
                        ));
                    }
                    let stored = s.rt.block_on(lake_text(
                        &s.p,
                        &streamcube_pipeline::bronze::report_path(&report.key),
                    ))?;
                    let stored: Value = serde_json::from_str(&stored).map_err(|e| e.to_string())?;
                    if stored["rows"] != json!(c.rows) {
                        return Err(format!("the stored report differs: {stored}"));
                    }
                }
            }
            Status::Ignored | Status::Continued => {}
        }
    }
    Ok(())
}

enum Kind {
    S3,
    Continue,
}

fn input_kind(v: &Value) -> Kind {
    if v.get("streamcube_continue").is_some() {
        Kind::Continue
    } else {
        Kind::S3
    }
}

#[test]
fn s3_notifications_and_bronze_objects_are_processed_or_reported() {
    let s = setup();
    let templates: Vec<Value> = ["s3-put-events-csv.json", "s3-put-catalog.json"]
        .iter()
        .flat_map(|f| {
            fixture(f)["Records"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    harness::run(
        "bronze-s3",
        "processed_or_reported",
        300,
        |rng| {
            let t = rng.pick(&templates).clone();
            generate(rng, &t)
        },
        |case| check(&s, case),
    );
    println!(
        "fuzz-outcomes target=bronze-s3 {:?}",
        s.seen.lock().map(|m| m.clone()).unwrap_or_default()
    );
}

/// A real checkpoint (an object paused after its first row), then damaged: the continuation
/// payload a self-invocation would get, as anyone allowed to invoke the function could send it.
fn continuation(s: &Setup, rng: &mut Rng) -> Value {
    let mut o = object(rng, 0);
    o["key"] = json!(format!(
        "events/cont/{}-{}.csv",
        rng.next_u64() % 1_000_000,
        rng.below(9)
    ));
    let mut text = format!("{HEADER}\n");
    for n in 0..3 + rng.below(4) {
        text.push_str(&csv_row(rng, n));
        text.push('\n');
    }
    o["text"] = json!(text);
    let Some((key, _)) = land(s, &o) else {
        return json!({});
    };
    let p = s.p.clone();
    let paused = s.rt.block_on(async move {
        let calls = std::sync::atomic::AtomicU32::new(0);
        p.process_object_until(&key, Some("v1"), move || {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 1
        })
        .await
    });
    let checkpoint: Checkpoint = match paused {
        Ok(Progress::Paused(c)) => c,
        _ => return json!({}),
    };
    let mut v = serde_json::to_value(&checkpoint).expect("checkpoint");
    let edits = rng.below(3);
    for _ in 0..edits {
        match rng.below(8) {
            0 => v["line"] = json!(*rng.pick(&[0u64, 1, 2, 999, u64::MAX])),
            1 => v["parts"] = json!(*rng.pick(&[0u32, 999, 1000, u32::MAX])),
            2 => {
                v["key"] =
                    json!(*rng.pick(&["events/missing.csv", "", "events/2026/11/01/batch-2.csv"]))
            }
            3 => v["version"] = json!(*rng.pick(&["", "v2", "v1"])),
            4 => v["e_tag"] = json!("\"not-the-etag\""),
            5 => {
                v["quarantine"] = rng
                    .pick(&[
                        json!([]),
                        json!(["exports/cube/day=2026-11-01/cube.csv"]),
                        json!(["quarantine/events/other.csv.jsonl"]),
                    ])
                    .clone()
            }
            7 => {
                // Counts that do not add up.
                v["counts"] = json!({"rows": 1, "accepted": 0, "duplicates": 0,
                                     "rejected": 0, "rejected_by_reason": {}});
            }
            6 => {
                // Counts that add up, for fewer or more rows than were done.
                let rows = rng.below(6) as u64;
                v["counts"] = json!({"rows": rows, "accepted": rows, "duplicates": 0,
                                     "rejected": 0, "rejected_by_reason": {}});
            }
            _ => harness::mutate(rng, &mut v),
        }
    }
    json!({ "objects": [], "event": { "streamcube_continue": v } })
}

#[test]
fn continuation_payloads_are_processed_or_reported() {
    let s = setup();
    harness::run(
        "bronze-continue",
        "processed_or_reported",
        100,
        |rng| continuation(&s, rng),
        |case| check(&s, case),
    );
    println!(
        "fuzz-outcomes target=bronze-continue {:?}",
        s.seen.lock().map(|m| m.clone()).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// Bugs the fuzzing found, as plain regression tests.

fn s3_event(key: &str, version: &str) -> Input {
    let mut rec = fixture("s3-put-events-csv.json")["Records"][0].clone();
    rec["s3"]["object"]["key"] = json!(key);
    rec["s3"]["object"]["versionId"] = json!(version);
    serde_json::from_value(json!({ "Records": [rec] })).expect("event")
}

/// Found by `s3_notifications_and_bronze_objects_are_processed_or_reported`: the decoded key
/// went through `object_store::path::Path::from`, which percent-encodes non-ASCII bytes and
/// `#%~[]{}^|*?<>"\`, so the object was looked up under another name (`events/café.csv` as
/// `events/caf%C3%A9.csv`) and never processed.
#[test]
fn keys_are_looked_up_as_they_are() {
    let s = setup();
    let key = "events/café.csv";
    let path = s.dir.path().join("bronze").join(key);
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::write(
        &path,
        format!("{HEADER}\ne1,2026-11-01T00:00:00Z,v,c,tv,BR,1,,,true\n"),
    )
    .expect("land");
    let summary =
        s.rt.block_on(process(
            &s.p,
            &InProcess,
            s3_event("events/caf%C3%A9.csv", "v1"),
            Budget::Unlimited,
        ))
        .unwrap_or_else(|BronzeError::Failed(summary)| summary);
    assert_eq!(
        summary.objects[0].status,
        Status::Processed,
        "{:?}",
        summary.objects[0].error
    );
}

/// Found by `continuation_payloads_are_processed_or_reported`: the quarantine paths of a
/// `{"streamcube_continue": ...}` payload were trusted and written into the object's report, and
/// a later version of the key deleted every object that report pointed to, so whoever could
/// invoke the function could delete any object of the lake. A continuation naming other objects
/// is now refused, and only the key's own quarantine objects are ever deleted.
#[test]
fn a_forged_continuation_deletes_nothing_else() {
    let s = setup();
    let victim = object_store::path::Path::from("exports/cube/day=2026-11-01/cube.csv");
    s.rt.block_on(s.p.stores.lake.put(&victim, "day,plays\n".into()))
        .expect("victim");
    let key = "events/forged.csv";
    let path = s.dir.path().join("bronze").join(key);
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::write(
        &path,
        format!("{HEADER}\ne1,2026-11-01T00:00:00Z,v,c,tv,BR,1,,,true\n"),
    )
    .expect("land");
    let forged: Input = serde_json::from_value(json!({"streamcube_continue": {
        "key": key, "version": "v1", "line": 0, "parts": 1,
        "counts": {"rows": 0, "accepted": 0, "duplicates": 0, "rejected": 0, "rejected_by_reason": {}},
        "quarantine": ["exports/cube/day=2026-11-01/cube.csv"]
    }}))
    .expect("payload");
    let BronzeError::Failed(refused) =
        s.rt.block_on(process(&s.p, &InProcess, forged, Budget::Unlimited))
            .expect_err("a forged continuation is refused");
    let error = refused.objects[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("checkpoint"), "{error}");
    // A new version of the same key, through an ordinary notification.
    std::fs::write(
        &path,
        format!("{HEADER}\ne2,2026-11-01T00:00:00Z,v,c,tv,BR,1,,,true\n"),
    )
    .expect("land");
    s.rt.block_on(process(
        &s.p,
        &InProcess,
        s3_event("events/forged.csv", "v2"),
        Budget::Unlimited,
    ))
    .expect("processed");
    assert!(
        s.rt.block_on(s.p.stores.lake.head(&victim)).is_ok(),
        "the export was deleted"
    );
}

/// Found by `continuation_payloads_are_processed_or_reported`: a continuation whose counts do
/// not add up (or overflow when added) tripped a debug assertion, or in release wrote a report
/// where `rows != accepted + duplicates + rejected`. It is now refused.
#[test]
fn a_continuation_with_unbalanced_counts_is_refused() {
    let s = setup();
    let key = "events/unbalanced.csv";
    let path = s.dir.path().join("bronze").join(key);
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::write(
        &path,
        format!("{HEADER}\ne1,2026-11-01T00:00:00Z,v,c,tv,BR,1,,,true\ne2,2026-11-01T00:00:00Z,v,c,tv,BR,1,,,true\n"),
    )
    .expect("land");
    let case = json!({"objects": [], "event": {"streamcube_continue": {
        "key": key, "version": "v1", "line": 2, "parts": 1,
        "counts": {"rows": 1, "accepted": 0, "duplicates": 0, "rejected": 0, "rejected_by_reason": {}},
        "quarantine": []
    }}});
    check(&s, &case).expect("no panic and a well-formed answer");
}
