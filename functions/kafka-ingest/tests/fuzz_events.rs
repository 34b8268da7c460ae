//! Bad input for kafka-ingest: mutated MSK batches (from `events/msk-events.json`) through the
//! handler's `ingest` on the embedded backend.
//!
//! This crate has no `proptest` among its dev-dependencies, so the fuzzing is done by the small
//! driver below: the seed corpus `fuzz/corpus/msk/*.json` (one MSK event per file) is replayed
//! first, then `PROPTEST_CASES` generated batches (default: a quick run), within `FUZZ_SECONDS`
//! if set, from a random seed (`FUZZ_SEED` to repeat one). A failing batch is shrunk and saved as
//! `fuzz/corpus/msk/crash-*.json`, which every later run replays first.
//!
//! The property: no panic, and the batch succeeds (a poison record never fails it); every record
//! is accounted for (`rows = accepted + duplicates + rejected`, `rows` = the records); each
//! record gets exactly the reasons an independent reading predicts (`row:missing` for a
//! tombstone, `row:invalid_characters` for a value that is not base64, `row:invalid_utf8`,
//! `row:malformed_json`, the contract's field reasons, `country:country_not_served`); and each
//! refused record is in its topic-partition's quarantine object with its topic, partition,
//! offset and reasons.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::event::{Field, FieldError, RawFields, Reason, Validator};
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_model::report::Rejection;
use streamcube_pipeline::kafka::kafka_quarantine_path;
use streamcube_pipeline::{Pipeline, PipelineConfig};

#[path = "../../../fuzz/harness.rs"]
mod harness;

use harness::Rng;

/// Whether the generators may produce inputs that trigger the known bugs (`FUZZ_KNOWN_BUGS=1`);
/// by default they do not, so that the properties keep looking for new ones.
fn known_bugs() -> bool {
    std::env::var_os("FUZZ_KNOWN_BUGS").is_some_and(|v| v == "1")
}

fn fixture() -> Value {
    let path = format!(
        "{}/../../events/msk-events.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// The countries the fuzzed deployment serves.
const SERVED: &str = "BR,PT,US";

// ---------------------------------------------------------------------------------------------
// Generating batches.

fn event_json(rng: &mut Rng) -> Value {
    let mut e = json!({
        "event_id": format!("k-{}", rng.next_u64() % 5000),
        "occurred_at": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + rng.below(20), rng.below(24), rng.below(60)),
        "viewer_id": format!("v{}", rng.below(40)),
        "content_id": format!("c{}", rng.below(9)),
        "device": *rng.pick(&["tv", "mobile", "web", "tablet", "console"]),
        "country": *rng.pick(&["BR", "PT", "US", "DE", "JP"]),
        "watch_seconds": rng.below(90_000),
        "completed": rng.one_in(2),
    });
    if rng.one_in(3) {
        e["bitrate_kbps"] = json!(rng.below(250_000));
    }
    for _ in 0..rng.below(3) {
        harness::mutate(rng, &mut e);
    }
    e
}

/// A record value: base64 of an event, of broken JSON, of bytes that are not UTF-8; text that is
/// not base64; nothing (a tombstone).
fn value(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => json!(*rng.pick(&[
            "not base64!",
            "====",
            "YQ",
            "YQ=",
            "Y",
            " eyJ9 ",
            "",
            "\u{ff}"
        ])),
        2 => json!(BASE64.encode([0xff, 0xfe, b'{', b'}'])),
        3 => json!(BASE64.encode(*rng.pick(&[
            &b"{\"event_id\":"[..],
            b"[1,2]",
            b"null",
            b"\"s\"",
            b"",
            b"{}"
        ]))),
        4 => {
            let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
            json!(BASE64.encode(deep))
        }
        5 => {
            // Padding and whitespace around otherwise good base64.
            let b = BASE64.encode(event_json(rng).to_string());
            json!(format!("\n{}\t ", b))
        }
        6 => json!(BASE64.encode(format!("\u{feff}{}", event_json(rng)))),
        _ => json!(BASE64.encode(event_json(rng).to_string())),
    }
}

fn topic(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => "a".repeat(1 + rng.below(249)),
        1 => (*rng.pick(&["t.x", "t_x", "T-X", "__consumer_offsets", "..", ".", "0"])).to_owned(),
        2 => (*rng.pick(&["a b", "a/b", "é", "a%2Fb", "a#b", ""])).to_owned(),
        _ => "playback-events".to_owned(),
    }
}

fn generate(rng: &mut Rng, fixture: &Value) -> Value {
    let template = fixture["records"]["playback-events-0"][0].clone();
    let mut map = serde_json::Map::new();
    for _ in 0..1 + rng.below(3) {
        let t = topic(rng);
        let partition: i64 = *rng.pick(&[0, 0, 1, 7, -1, i64::MAX, i64::MIN]);
        let mut recs = Vec::new();
        let base: i64 = *rng.pick(&[0, 1041, -5, i64::MAX - 3, i64::MIN]);
        for i in 0..rng.below(6) {
            let mut r = template.clone();
            r["topic"] = json!(t);
            if rng.one_in(8) {
                r.as_object_mut().map(|m| m.remove("topic"));
            }
            r["partition"] = json!(partition);
            r["offset"] = json!(if rng.one_in(6) {
                base
            } else {
                base.saturating_add(i as i64)
            });
            r["value"] = value(rng);
            if r["value"].is_null() && rng.one_in(2) {
                r.as_object_mut().map(|m| m.remove("value"));
            }
            if rng.one_in(12) {
                harness::mutate(rng, &mut r);
            }
            recs.push(r);
        }
        map.insert(format!("{t}-{partition}"), Value::Array(recs));
    }
    let mut event = fixture.clone();
    event["records"] = Value::Object(map);
    if rng.one_in(10) {
        harness::mutate(rng, &mut event);
    }
    event
}

// ---------------------------------------------------------------------------------------------
// The oracle and the property.

/// What becomes of a record: `Ok(())` (to silver) or its reasons.
fn expected(value: Option<&str>) -> Result<(), Vec<String>> {
    let row = |r: Reason| Err(vec![FieldError::new(Field::Row, r).key()]);
    let Some(v) = value else {
        return row(Reason::Missing);
    };
    let Ok(bytes) = BASE64.decode(v.trim()) else {
        return row(Reason::InvalidCharacters);
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return row(Reason::InvalidUtf8);
    };
    let Ok(json) = serde_json::from_str::<Value>(&text) else {
        return row(Reason::MalformedJson);
    };
    let Some(obj) = json.as_object() else {
        return row(Reason::MalformedJson);
    };
    match Validator::now().validate(&RawFields::from_json_object(obj)) {
        Err(errors) => Err(errors.iter().map(FieldError::key).collect()),
        Ok(ev) if !SERVED.split(',').any(|c| c == ev.country.as_str()) => Err(vec![
            FieldError::new(Field::Country, Reason::CountryNotServed).key(),
        ]),
        Ok(_) => Ok(()),
    }
}

struct Setup {
    rt: tokio::runtime::Runtime,
    seen: std::sync::Mutex<BTreeMap<String, u64>>,
    p: Pipeline,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    let mut config = PipelineConfig::new(Pseudonymizer::new(&key));
    config.served_countries = PipelineConfig::parse_countries(SERVED).expect("countries");
    let p = Pipeline::new(
        EmbeddedBackend::open(dir.path()).expect("open").stores(),
        config,
    );
    Setup {
        rt,
        seen: Default::default(),
        p,
        _dir: dir,
    }
}

async fn lake_lines(p: &Pipeline, path: &str) -> Result<Vec<Rejection>, String> {
    let got = p
        .stores
        .lake
        .get(&object_store::path::Path::from(path))
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let bytes = got.bytes().await.map_err(|e| e.to_string())?;
    std::str::from_utf8(&bytes)
        .map_err(|e| e.to_string())?
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
        .collect()
}

fn check(s: &Setup, payload: &Value) -> Result<(), String> {
    let count_n = |what: String, n: u64| {
        if let Ok(mut seen) = s.seen.lock() {
            *seen.entry(what).or_default() += n;
        }
    };
    let count = |what: String| count_n(what, 1);
    if !known_bugs() && fractional_timestamp(payload) {
        // KNOWN BUG (third party): see `known_bug_a_fractional_timestamp_panics_while_decoding`.
        return Ok(());
    }
    let decoded =
        std::panic::catch_unwind(|| serde_json::from_value::<KafkaEvent>(payload.clone()))
            .map_err(|_| "decoding the MSK event panicked".to_owned())?;
    let Ok(event) = decoded else {
        count("refused by the runtime".into());
        return Ok(());
    };
    let records: Vec<(String, i64, i64, Option<String>)> = kafka_ingest::records(&event)
        .iter()
        .map(|r| {
            (
                r.topic.to_owned(),
                r.partition,
                r.offset,
                r.value.map(str::to_owned),
            )
        })
        .collect();
    // (The handler's future is not `Send` for the compiler's closure inference, so it runs
    // here rather than in a task; a panic is caught around `block_on`.)
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(120), kafka_ingest::ingest(&s.p, &event)).await
        })
    }));
    let report = match ran {
        Err(e) => {
            let msg = e
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            return Err(format!("the handler panicked: {msg}"));
        }
        Ok(Err(_)) => return Err("the handler hung for 120 s".into()),
        Ok(Ok(Err(_))) if records.iter().any(|r| !legal_topic(&r.0)) => {
            // Kafka never names a topic like this (the embedded backend cannot make a file name
            // of a topic over 255 bytes); failing the batch is acceptable.
            count("failed: a topic Kafka does not allow".into());
            return Ok(());
        }
        Ok(Ok(Err(e))) => {
            return Err(format!(
                "the batch failed (it would be delivered again, forever): {}",
                streamcube_pipeline::http::ErrorChain(&e)
            ));
        }
        Ok(Ok(Ok(r))) => r,
    };
    let c = &report.counts;
    if std::env::var_os("FUZZ_REPORT").is_some() {
        // What a corpus batch gets (the README's table of bad inputs comes from this).
        println!(
            "  rows {} = accepted {} + duplicates {} + rejected {} {:?}, quarantine {:?}",
            c.rows, c.accepted, c.duplicates, c.rejected, c.rejected_by_reason, report.quarantine
        );
    }
    if c.rows != records.len() as u64 || !c.is_balanced() {
        return Err(format!("{} records, counts {c:?}", records.len()));
    }
    // Every record's fate, as an independent reading predicts it.
    let mut valid = 0u64;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused: BTreeMap<(String, i64), Vec<Refused>> = BTreeMap::new();
    let mut offsets: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for (topic, partition, offset, value) in &records {
        let o = offsets
            .entry((topic.clone(), *partition))
            .or_insert((*offset, *offset));
        o.0 = o.0.min(*offset);
        o.1 = o.1.max(*offset);
        match expected(value.as_deref()) {
            Ok(()) => valid += 1,
            Err(keys) => {
                let mut distinct = keys.clone();
                distinct.sort();
                distinct.dedup();
                for k in distinct {
                    *reasons.entry(k).or_default() += 1;
                }
                refused
                    .entry((topic.clone(), *partition))
                    .or_default()
                    .push((*offset, keys));
            }
        }
    }
    count_n("to silver (accepted or duplicate)".into(), valid);
    for (k, n) in &reasons {
        count_n(k.clone(), *n);
    }
    if c.accepted + c.duplicates != valid {
        return Err(format!(
            "{valid} valid records, {} accepted and {} duplicates",
            c.accepted, c.duplicates
        ));
    }
    if c.rejected_by_reason != reasons {
        return Err(format!(
            "reasons {:?}, expected {reasons:?}",
            c.rejected_by_reason
        ));
    }
    // The quarantine: one object per topic-partition with refused records, each record in it.
    let mut want_paths: Vec<String> = refused
        .keys()
        .map(|(t, p)| {
            let (first, last) = offsets[&(t.clone(), *p)];
            kafka_quarantine_path(t, *p, first, last)
        })
        .collect();
    want_paths.sort();
    let mut got_paths = report.quarantine.clone();
    got_paths.sort();
    if got_paths != want_paths {
        return Err(format!(
            "quarantine objects {got_paths:?}, expected {want_paths:?}"
        ));
    }
    for ((t, part), mut want) in refused {
        let (first, last) = offsets[&(t.clone(), part)];
        let lines = s.rt.block_on(lake_lines(
            &s.p,
            &kafka_quarantine_path(&t, part, first, last),
        ))?;
        let mut got: Vec<(i64, Vec<String>)> = Vec::new();
        for l in &lines {
            if l.origin.get("topic") != Some(&json!(t))
                || l.origin.get("partition") != Some(&json!(part))
            {
                return Err(format!(
                    "a quarantine line of {t}/{part} names {:?}",
                    l.origin
                ));
            }
            let offset = l
                .origin
                .get("offset")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MIN);
            got.push((offset, l.errors.iter().map(FieldError::key).collect()));
        }
        got.sort();
        want.sort();
        if got != want {
            return Err(format!(
                "quarantine of {t}/{part}: {got:?}, expected {want:?}"
            ));
        }
    }
    Ok(())
}

/// A refused record: its offset and its reasons (`field:reason`).
type Refused = (i64, Vec<String>);

/// Whether Kafka allows this topic name: 1 to 249 of `[a-zA-Z0-9._-]`.
fn legal_topic(t: &str) -> bool {
    (1..=249).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether some record's `timestamp` is a number with a fraction.
fn fractional_timestamp(payload: &Value) -> bool {
    payload["records"].as_object().is_some_and(|m| {
        m.values()
            .flat_map(|v| v.as_array().into_iter().flatten())
            .any(|r| {
                r["timestamp"].as_f64().is_some_and(|f| f.fract() != 0.0)
                    || r["timestamp"].as_str().is_some_and(|s| s.contains('.'))
            })
    })
}

#[test]
fn msk_batches_account_for_every_record() {
    let s = setup();
    let fixture = fixture();
    harness::run(
        "msk",
        "every_record_accounted",
        200,
        |rng| generate(rng, &fixture),
        |payload| check(&s, payload),
    );
    println!(
        "fuzz-outcomes target=msk {:?}",
        s.seen.lock().map(|m| m.clone()).unwrap_or_default()
    );
}

/// KNOWN BUG, third party (found by `msk_batches_account_for_every_record` with
/// `FUZZ_KNOWN_BUGS=1`): `aws_lambda_events` decodes a Kafka record's `timestamp` with
/// `assert_eq!(frac, 0)` (`encodings/time.rs`, `deserialize_milliseconds`), so an MSK event whose
/// timestamp has a fraction (`1795456931000.5`) panics while being decoded, before the handler
/// runs. MSK itself sends whole milliseconds; only a hand-made invocation can do this.
#[test]
#[ignore = "known bug in aws_lambda_events (a fractional Kafka timestamp panics while decoding)"]
fn known_bug_a_fractional_timestamp_panics_while_decoding() {
    let mut payload = fixture();
    payload["records"]["playback-events-0"][0]["timestamp"] = json!(1_795_456_931_000.5);
    let decoded = std::panic::catch_unwind(|| serde_json::from_value::<KafkaEvent>(payload));
    assert!(decoded.is_ok(), "decoding panicked");
}
