//! Bad input for cube-consolidator: mutated DynamoDB stream batches (from
//! `events/dynamodb-stream-silver.json`) through the handler's `mark_batch` on the embedded
//! backend, and the hour arithmetic every stream record goes through.
//!
//! This crate has no `proptest` among its dev-dependencies, so the fuzzing is done by the small
//! driver below: the seed corpus `fuzz/corpus/dynamodb-stream/*.json` (one stream event per file)
//! is replayed first, then `PROPTEST_CASES` generated batches (default: a quick run), within
//! `FUZZ_SECONDS` if set, from a random seed (`FUZZ_SEED` to repeat one). A failing batch is
//! shrunk and saved as `fuzz/corpus/dynamodb-stream/crash-*.json`, which every later run replays
//! first.
//!
//! The property: no panic; a record without a usable `hour` (absent, not a number, not an `N`)
//! is reported, never dropped: the partial batch response names the lowest sequence number among
//! the records that failed (and the whole batch fails only when such a record has no sequence
//! number); TTL expiries are ignored; every usable hour of the other records is pending
//! afterwards; a batch of usable records gets an empty response; the response is well-formed
//! (`{"batchItemFailures": [{"itemIdentifier": ...}]}`).

use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event;
use cube_consolidator::{BatchError, mark_batch};
use serde_json::{Value, json};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_pipeline::{Pipeline, PipelineConfig};

#[path = "../../../fuzz/harness.rs"]
mod harness;

use harness::Rng;

fn fixture() -> Value {
    let path = format!(
        "{}/../../events/dynamodb-stream-silver.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// The largest hour whose seconds fit in an `i64` (beyond it, `hour * 3600` overflows).
const MAX_SAFE_HOUR: i64 = i64::MAX / 3600;

fn hour_text(rng: &mut Rng) -> String {
    let near = 498_717 + rng.below(97) as i64 - 48;
    match rng.below(14) {
        0..=5 => near.to_string(),
        6 => format!(" {near} "),
        7 => format!("+{near}"),
        8 => format!("{near:010}"),
        9 => (*rng.pick(&[
            "",
            "abc",
            "12.5",
            "1e3",
            "0x10",
            "-",
            "99999999999999999999",
            "١٢",
        ]))
        .to_owned(),
        10 => (*rng.pick(&["0", "-1", "-498717", "1000000000000", "-1000000000000"])).to_owned(),
        11 => (*rng.pick(&[
            "9223372036854775807",
            "-9223372036854775808",
            "2562047788015216",
            "-2562047788015216",
        ]))
        .to_owned(),
        _ => (*rng.pick(&[
            MAX_SAFE_HOUR,
            -MAX_SAFE_HOUR,
            MAX_SAFE_HOUR - 23,
            2_562_047_788_015,
        ]))
        .to_string(),
    }
}

fn sequence(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => json!(""),
        2 => json!(format!("000{}", rng.below(1000))),
        3 => json!(*rng.pick(&["abc", "12a", " 7", "-5"])),
        4 => json!("9".repeat(40)),
        _ => json!(format!("44215845{:020}", rng.next_u64() % 100_000_000_000)),
    }
}

fn generate(rng: &mut Rng, fixture: &Value) -> Value {
    let pool = fixture["Records"].as_array().cloned().unwrap_or_default();
    let mut records = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let mut r = rng.pick(&pool).clone();
        let d = &mut r["dynamodb"];
        d["SequenceNumber"] = sequence(rng);
        if d["SequenceNumber"].is_null() {
            d.as_object_mut().map(|m| m.remove("SequenceNumber"));
        }
        // The hour of either image: changed, damaged, of the wrong type, or gone.
        for image in ["NewImage", "OldImage"] {
            if d.get(image).is_none() || rng.one_in(3) {
                continue;
            }
            let changed = match rng.below(6) {
                0 => {
                    d[image].as_object_mut().map(|m| m.remove("hour"));
                    true
                }
                1 => {
                    d[image]["hour"] = json!({ "S": hour_text(rng) });
                    true
                }
                2 => {
                    d.as_object_mut().map(|m| m.remove(image));
                    true
                }
                _ => {
                    d[image]["hour"] = json!({ "N": hour_text(rng) });
                    true
                }
            };
            if changed && rng.one_in(8) {
                d.as_object_mut().map(|m| m.remove("Keys"));
            }
        }
        r["eventName"] = json!(*rng.pick(&["INSERT", "MODIFY", "REMOVE", "INSERT", "", "UPSERT"]));
        if rng.one_in(6) {
            r["userIdentity"] = json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"});
        } else if rng.one_in(10) {
            r["userIdentity"] = json!({"type": "User", "principalId": "someone"});
        }
        if rng.one_in(10) {
            harness::mutate(rng, &mut r);
        }
        records.push(r);
    }
    json!({ "Records": records })
}

// ---------------------------------------------------------------------------------------------
// The oracle and the property.

/// A record's hours as the contract reads them: the `N` of `hour` in each image.
fn hours(rec: &Value) -> Result<Vec<i64>, String> {
    let d = &rec["dynamodb"];
    let mut out = Vec::new();
    for image in ["NewImage", "OldImage"] {
        let Some(attr) = d.get(image).and_then(|i| i.get("hour")) else {
            continue;
        };
        let h = attr["N"]
            .as_str()
            .and_then(|n| n.trim().parse::<i64>().ok())
            .filter(|h| streamcube_model::query::try_day_of_hour(*h).is_some())
            .ok_or_else(|| format!("bad hour {attr}"))?;
        if !out.contains(&h) {
            out.push(h);
        }
    }
    if out.is_empty() {
        return Err("no hour".into());
    }
    Ok(out)
}

fn is_ttl(rec: &Value) -> bool {
    rec["userIdentity"]["type"] == "Service"
        && rec["userIdentity"]["principalId"] == "dynamodb.amazonaws.com"
}

fn seq_key(s: &str) -> (usize, &str) {
    let digits = s.trim_start_matches('0');
    (digits.len(), digits)
}

struct Setup {
    rt: tokio::runtime::Runtime,
    seen: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
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
    let p = Pipeline::new(
        EmbeddedBackend::open(dir.path()).expect("open").stores(),
        PipelineConfig::new(Pseudonymizer::new(&key)),
    );
    // Silver as the fixture describes it (see `fixtures.rs`).
    let event = |id: &str, at: &str| {
        json!({"event_id": id, "occurred_at": at, "viewer_id": "v1", "content_id": "c000017",
               "device": "tv", "country": "BR", "watch_seconds": 600, "completed": true})
    };
    rt.block_on(p.ingest_json(&[
        event(
            "0b6f9d5e-3c1a-4f57-9a61-2f0d8c4b7e11",
            "2026-11-22T21:14:03Z",
        ),
        event(
            "0b6f9d5e-3c1a-4f57-9a61-2f0d8c4b7e12",
            "2026-11-23T00:20:41Z",
        ),
    ]))
    .expect("ingest");
    Setup {
        rt,
        seen: Default::default(),
        p,
        _dir: dir,
    }
}

fn check(s: &Setup, payload: &Value) -> Result<(), String> {
    let count = |what: &str| {
        if let Ok(mut seen) = s.seen.lock() {
            *seen.entry(what.to_owned()).or_default() += 1;
        }
    };
    // The runtime decodes the payload (a panic there would be a panic of the invocation too).
    let decoded = std::panic::catch_unwind(|| serde_json::from_value::<Event>(payload.clone()))
        .map_err(|_| "decoding the stream event panicked".to_owned())?;
    let Ok(event) = decoded else {
        count("refused by the runtime");
        return Ok(());
    };
    let records: Vec<Value> = event
        .records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    let p = s.p.clone();
    let task = s.rt.spawn(async move {
        tokio::time::timeout(Duration::from_secs(120), async {
            mark_batch(&p, &event).await
        })
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
    // What must be reported: non-TTL records without a usable hour.
    let failing: Vec<&Value> = records
        .iter()
        .filter(|r| !is_ttl(r) && hours(r).is_err())
        .collect();
    let seq = |r: &Value| {
        r["dynamodb"]["SequenceNumber"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if std::env::var_os("FUZZ_REPORT").is_some() {
        // What a corpus batch gets (the README's table of bad inputs comes from this).
        match &result {
            Ok(resp) => println!(
                "  response {}",
                serde_json::to_string(resp).unwrap_or_default()
            ),
            Err(e) => println!("  error {e}"),
        }
    }
    if result.is_ok() {
        // Every usable hour of the records that are not TTL expiries is pending now.
        let marked: Vec<i64> = records
            .iter()
            .filter(|r| !is_ttl(r))
            .filter_map(|r| hours(r).ok())
            .flatten()
            .collect();
        let pending =
            s.rt.block_on(s.p.stores.changes.pending())
                .map_err(|e| format!("pending: {e}"))?;
        if let Some(h) = marked
            .iter()
            .find(|h| !pending.iter().any(|(p, _)| p == *h))
        {
            return Err(format!("hour {h} of a usable record is not pending"));
        }
    }
    match result {
        Err(BatchError::NoSequenceNumber(_)) => {
            count("whole batch retried");
            if !failing.iter().any(|r| seq(r).is_none()) {
                return Err(
                    "the whole batch failed though every failing record has a sequence number"
                        .into(),
                );
            }
        }
        Ok(resp) => {
            let v = serde_json::to_value(&resp).map_err(|e| e.to_string())?;
            let items = v["batchItemFailures"]
                .as_array()
                .ok_or_else(|| format!("no batchItemFailures: {v}"))?;
            if items.len() > 1 {
                return Err(format!("more than one item failure: {v}"));
            }
            match (failing.is_empty(), items.first()) {
                (true, None) => count("all consolidated"),
                (true, Some(i)) => {
                    return Err(format!("a batch of usable records reported {i}"));
                }
                (false, None) => {
                    return Err(format!(
                        "records without a usable hour were dropped: {}",
                        failing
                            .iter()
                            .map(|r| hours(r).unwrap_err())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                }
                (false, Some(i)) => {
                    count("partial failure reported");
                    let id = i["itemIdentifier"].as_str().unwrap_or("");
                    let lowest = failing
                        .iter()
                        .filter_map(|r| seq(r))
                        .min_by(|a, b| seq_key(a).cmp(&seq_key(b)));
                    if failing.iter().any(|r| seq(r).is_none()) {
                        return Err("a failing record has no sequence number, yet no error".into());
                    }
                    if lowest.as_deref() != Some(id) {
                        return Err(format!("reported {id:?}, the lowest failing is {lowest:?}"));
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn stream_batches_are_consolidated_or_reported() {
    let s = setup();
    let fixture = fixture();
    harness::run(
        "dynamodb-stream",
        "consolidated_or_reported",
        120,
        |rng| generate(rng, &fixture),
        |payload| check(&s, payload),
    );
    println!(
        "fuzz-outcomes target=dynamodb-stream {:?}",
        s.seen.lock().map(|m| m.clone()).unwrap_or_default()
    );
}

/// The hour arithmetic every record's `hour` goes through: the day of an hour and back.
#[test]
fn any_hour_maps_to_a_day_without_panicking() {
    let edges = [
        0i64,
        -1,
        1,
        23,
        24,
        MAX_SAFE_HOUR,
        -MAX_SAFE_HOUR,
        MAX_SAFE_HOUR - 1,
    ];
    harness::run(
        "dynamodb-stream",
        "hour_arithmetic",
        2000,
        |rng| {
            let h = match rng.below(4) {
                0 => *rng.pick(&edges),
                1 => rng.next_u64() as i64 % 10_000_000,
                2 => (rng.next_u64() as i64) % MAX_SAFE_HOUR,
                _ => rng.next_u64() as i64,
            };
            json!({ "hour": h })
        },
        |v| {
            let h = v["hour"].as_i64().unwrap_or(0);
            let got = std::panic::catch_unwind(|| {
                streamcube_model::query::try_day_of_hour(h)
                    .map(|day| (day, streamcube_model::query::first_hour(day)))
            })
            .map_err(|_| format!("try_day_of_hour({h}) panicked"))?;
            // Within the calendar, the day's first hour is at most 23 hours before; beyond it
            // there is no day (the record is then reported as without a usable hour).
            match got {
                Some((day, first)) if !(0..24).contains(&(h - first)) => {
                    Err(format!("hour {h} maps to {day} starting at hour {first}"))
                }
                None if h.unsigned_abs() < 2_000_000_000 => {
                    Err(format!("hour {h} is within the calendar but has no day"))
                }
                _ => Ok(()),
            }
        },
    );
}

/// A record whose `hour` is beyond the calendar (found by this file's properties: `hour * 3600`
/// used to overflow, a panic that blocked the shard) is reported as failed, never consolidated.
#[test]
fn an_hour_beyond_the_calendar_is_reported() {
    let s = setup();
    let mut payload = fixture();
    payload["Records"] = json!([payload["Records"][0].clone()]);
    payload["Records"][0]["dynamodb"]["NewImage"]["hour"] = json!({"N": "9223372036854775807"});
    payload["Records"][0]["dynamodb"]
        .as_object_mut()
        .map(|m| m.remove("Keys"));
    check(&s, &payload).expect("no panic, and the record reported as failed");
    payload["Records"][0]["dynamodb"]["NewImage"]["hour"] = json!({"N": "-2562047788015216"});
    check(&s, &payload).expect("no panic, and the record reported as failed");
}
