//! Bad input for the event contract: property-based fuzzing of event validation (JSON objects as
//! the HTTP API, Kafka and JSON-lines files give them, and CSV text cells) with `proptest`.
//!
//! The seed corpus `fuzz/corpus/event-json/` (one JSON document per file) is replayed first; then
//! `PROPTEST_CASES` generated cases (default: a quick run), within `FUZZ_SECONDS` if set.
//! Failures are saved in `fuzz/corpus/event-json/<property>.proptest-regressions.txt` and
//! replayed by every later run.
//!
//! The property: validation never panics and returns either a valid event whose values are the
//! input's, or exactly the field errors an independent reading of the contract predicts, one per
//! failed field, in contract order, with the precise reason (`missing`, `empty`, `wrong_type`,
//! `too_long`, `invalid_characters`, `invalid_timestamp`, `in_future`, `not_an_integer`,
//! `out_of_range`, `unknown_device`, `unknown_country`, `not_upper_case`, `not_a_boolean`).

use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::{Map, Value, json};
use streamcube_model::event::{Field, FieldValue, RawFields, Reason, ValidEvent, Validator};

mod driver;

use driver::{corpus, fuzz};

// ---------------------------------------------------------------------------------------------
// The contract, read independently of `event.rs`.

/// "Now" for every case: 2026-11-18T00:00:00Z.
const NOW_MS: i64 = 1_795_000_000_000;
const FUTURE_MS: i64 = 5 * 60 * 1000;

/// A required text field: present, a string, not empty, at most `max` bytes.
fn text<'a>(v: &FieldValue<'a>, max: usize) -> Result<&'a str, Reason> {
    match *v {
        FieldValue::Absent | FieldValue::Null => Err(Reason::Missing),
        FieldValue::Text(s) | FieldValue::Str(s) if s.is_empty() => Err(Reason::Empty),
        FieldValue::Text(s) | FieldValue::Str(s) if s.len() > max => Err(Reason::TooLong),
        FieldValue::Text(s) | FieldValue::Str(s) => Ok(s),
        FieldValue::Number(_) | FieldValue::Bool(_) | FieldValue::Composite => {
            Err(Reason::WrongType)
        }
    }
}

/// An integer in `min..=max`: CSV digits with an optional minus (at most 20 digits), or a JSON
/// integer; a JSON string is the wrong type, a JSON fraction or exponent is not an integer.
fn integer(v: &FieldValue<'_>, min: i128, max: i128) -> Result<u32, Reason> {
    let n: i128 = match *v {
        FieldValue::Absent | FieldValue::Null => return Err(Reason::Missing),
        FieldValue::Text("") => return Err(Reason::Empty),
        FieldValue::Text(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(Reason::NotAnInteger);
            }
            s.parse().map_err(|_| Reason::NotAnInteger)?
        }
        FieldValue::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => i128::from(u),
            (None, Some(i)) => i128::from(i),
            _ => return Err(Reason::NotAnInteger),
        },
        FieldValue::Str(_) | FieldValue::Bool(_) | FieldValue::Composite => {
            return Err(Reason::WrongType);
        }
    };
    if n < min || n > max {
        return Err(Reason::OutOfRange);
    }
    Ok(n as u32)
}

fn blank(v: &FieldValue<'_>) -> bool {
    matches!(
        v,
        FieldValue::Absent | FieldValue::Null | FieldValue::Text("") | FieldValue::Str("")
    )
}

/// Assigned ISO 3166-1 alpha-2 codes (user-assigned `XK` excluded).
fn assigned(code: &str) -> bool {
    code != "XK"
        && celes::Country::get_countries()
            .iter()
            .any(|c| c.alpha2 == code)
}

/// A valid event's values, in contract order.
type Values = (
    String,
    i64,
    String,
    String,
    String,
    String,
    u32,
    Option<u32>,
    Option<u32>,
    bool,
);

/// What the contract says of each field: the values of a valid event, or the errors.
#[derive(Debug, PartialEq)]
struct Expected {
    errors: Vec<(Field, Reason)>,
    event: Option<Values>,
}

fn oracle(raw: &RawFields<'_>, now_ms: i64) -> Expected {
    let g = |f| raw.get(f);
    let event_id = text(&g(Field::EventId), 128).and_then(|s| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
        {
            Ok(s)
        } else {
            Err(Reason::InvalidCharacters)
        }
    });
    let occurred = text(&g(Field::OccurredAt), 64).and_then(|s| {
        let ms = chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| Reason::InvalidTimestamp)?
            .timestamp_millis();
        if ms - now_ms > FUTURE_MS {
            Err(Reason::InFuture)
        } else {
            Ok(ms)
        }
    });
    let viewer = text(&g(Field::ViewerId), 256);
    let content = text(&g(Field::ContentId), 256);
    let device = text(&g(Field::Device), 16).and_then(|s| {
        if ["tv", "mobile", "web", "tablet", "console"].contains(&s) {
            Ok(s)
        } else {
            Err(Reason::UnknownDevice)
        }
    });
    let country = text(&g(Field::Country), 16).and_then(|s| {
        if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(Reason::UnknownCountry);
        }
        let upper = s.to_ascii_uppercase();
        if !assigned(&upper) {
            Err(Reason::UnknownCountry)
        } else if upper != s {
            Err(Reason::NotUpperCase)
        } else {
            Ok(s)
        }
    });
    let watch = integer(&g(Field::WatchSeconds), 0, 86_400);
    let bitrate = match g(Field::BitrateKbps) {
        v if blank(&v) => Ok(None),
        v => integer(&v, 1, 200_000).map(Some),
    };
    let buffering = match g(Field::BufferingMs) {
        v if blank(&v) => Ok(None),
        v => integer(&v, 0, 86_400_000).map(Some),
    };
    let completed = match g(Field::Completed) {
        FieldValue::Absent | FieldValue::Null => Err(Reason::Missing),
        FieldValue::Bool(b) => Ok(b),
        FieldValue::Text("true") => Ok(true),
        FieldValue::Text("false") => Ok(false),
        FieldValue::Text("") => Err(Reason::Empty),
        FieldValue::Text(_) => Err(Reason::NotABoolean),
        _ => Err(Reason::WrongType),
    };
    let mut errors = Vec::new();
    let results: [(Field, Option<Reason>); 10] = [
        (Field::EventId, event_id.err()),
        (Field::OccurredAt, occurred.err()),
        (Field::ViewerId, viewer.err()),
        (Field::ContentId, content.err()),
        (Field::Device, device.err()),
        (Field::Country, country.err()),
        (Field::WatchSeconds, watch.err()),
        (Field::BitrateKbps, bitrate.err()),
        (Field::BufferingMs, buffering.err()),
        (Field::Completed, completed.err()),
    ];
    for (f, r) in results {
        if let Some(r) = r {
            errors.push((f, r));
        }
    }
    let event = match (
        event_id, occurred, viewer, content, device, country, watch, bitrate, buffering, completed,
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e), Ok(f), Ok(g), Ok(h), Ok(i), Ok(j)) => Some((
            a.to_owned(),
            b,
            c.to_owned(),
            d.to_owned(),
            e.to_owned(),
            f.to_owned(),
            g,
            h,
            i,
            j,
        )),
        _ => None,
    };
    Expected { errors, event }
}

fn actual(r: Result<ValidEvent<'_>, Vec<streamcube_model::event::FieldError>>) -> Expected {
    match r {
        Ok(ev) => Expected {
            errors: Vec::new(),
            event: Some((
                ev.event_id.to_owned(),
                ev.occurred_at_ms,
                ev.viewer_id.to_owned(),
                ev.content_id.to_owned(),
                ev.device.to_string(),
                ev.country.to_string(),
                ev.watch_seconds,
                ev.bitrate_kbps,
                ev.buffering_ms,
                ev.completed,
            )),
        },
        Err(errors) => Expected {
            errors: errors.iter().map(|e| (e.field, e.reason)).collect(),
            event: None,
        },
    }
}

fn check_fields(raw: &RawFields<'_>) -> TestCaseResult {
    let got = actual(Validator::at(NOW_MS).validate(raw));
    let want = oracle(raw, NOW_MS);
    prop_assert_eq!(&got, &want);
    prop_assert!(
        got.event.is_some() == got.errors.is_empty(),
        "a rejection must name at least one field"
    );
    Ok(())
}

/// A JSON document as the API or a JSON line carries it: if it is an object, its validation must
/// match the contract.
fn check_json_text(text: &[u8]) -> TestCaseResult {
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(text) {
        check_fields(&RawFields::from_json_object(&obj))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn hostile_string() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        // valid values of various fields
        "tv",
        "mobile",
        "web",
        "tablet",
        "console",
        "BR",
        "PT",
        "US",
        "GB",
        "60",
        "0",
        "1",
        "86400",
        "true",
        "false",
        "e-1",
        "a.b:c_d-9",
        // near misses
        "TV",
        "Tv",
        " tv",
        "tv ",
        "tv\0",
        "br",
        "bR",
        "uk",
        "UK",
        "EU",
        "XK",
        "ZZ",
        "AA",
        "B",
        "BRA",
        "ＢＲ",
        "ВR",
        "ТV",
        "ｔｖ",
        "B\u{200b}R",
        "\u{feff}BR",
        "-0",
        "+5",
        "05",
        " 5",
        "5 ",
        "1e3",
        "0x10",
        "60.0",
        "٦٠",
        "86401",
        "-1",
        "99999999999999999999",
        "999999999999999999999",
        "TRUE",
        "True",
        "yes",
        "1",
        // timestamps
        "2026-11-01T10:00:00Z",
        "2026-11-01t10:00:00z",
        "2026-11-01 10:00:00Z",
        "2026-11-01T10:00:00",
        "2026-11-01T10:00:00+02:00",
        "2026-11-01T10:00:00+24:00",
        "2026-02-30T00:00:00Z",
        "2026-11-01T23:59:60Z",
        "2026-11-01T10:00:00.123456789123Z",
        "2026-11-01T10:00:00,5Z",
        "2026-11-18T00:05:00Z",
        "2026-11-18T00:05:00.001Z",
        "2026-11-18T00:04:59.999Z",
        "9999-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999Z",
        "+2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00-00:00",
        "2026-W44-1",
        "1795000000000",
        "2026-11-01T10:00:00Z\0",
        // hostile text
        "",
        " ",
        "\0",
        "\u{0}\u{0}",
        "a,b",
        "\"",
        "'; DROP TABLE silver;--",
        "../../etc/passwd",
        "%00",
        "%FF",
        "\u{202e}vt",
        "🙂",
        "\u{10ffff}",
        "\r\n",
        "\u{2028}",
        "é",
        "e\u{301}",
    ]);
    prop_oneof![
        8 => words.prop_map(str::to_owned),
        2 => prop::collection::vec(any::<char>(), 0..20).prop_map(|c| c.into_iter().collect()),
        1 => (1usize..400, prop::sample::select(vec!["a", "é", "-", "🙂", "\0"]))
            .prop_map(|(n, c)| c.repeat(n)),
        1 => (120usize..140).prop_map(|n| "i".repeat(n)),
        1 => (250usize..262).prop_map(|n| "v".repeat(n)),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    let edges = prop::sample::select(vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(60),
        json!(86_400),
        json!(86_401),
        json!(200_000),
        json!(200_001),
        json!(86_400_000),
        json!(86_400_001),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(60.0),
        json!(-0.0),
        json!(1.5),
        json!(1e3),
        json!(f64::MAX),
        json!(f64::MIN_POSITIVE),
    ]);
    prop_oneof![
        3 => edges,
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<u64>().prop_map(|n| json!(n)),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        1 => (0i64..300_000).prop_map(|n| json!(n)),
    ]
}

fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => number(),
        5 => hostile_string().prop_map(Value::String),
    ];
    let nested = leaf.clone().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let deep = (1usize..200).prop_map(|n| {
        let mut v = json!("x");
        for i in 0..n {
            v = if i % 2 == 0 {
                json!([v])
            } else {
                json!({ "a": v })
            };
        }
        v
    });
    prop_oneof![8 => leaf, 2 => nested, 1 => deep]
}

/// A valid value for a field, so that most objects have only a few bad fields.
fn valid_value(f: Field) -> BoxedStrategy<Value> {
    match f {
        Field::EventId => "[A-Za-z0-9._:-]{1,128}".prop_map(Value::String).boxed(),
        Field::OccurredAt => (0i64..1_795_000_000)
            .prop_map(|s| {
                Value::String(
                    chrono::DateTime::from_timestamp(s, 0)
                        .expect("ts")
                        .to_rfc3339(),
                )
            })
            .boxed(),
        Field::ViewerId | Field::ContentId => "\\PC{1,60}".prop_map(Value::String).boxed(),
        Field::Device => prop::sample::select(vec!["tv", "mobile", "web", "tablet", "console"])
            .prop_map(|s| json!(s))
            .boxed(),
        Field::Country => prop::sample::select(vec!["BR", "PT", "US", "DE", "JP", "AQ", "SS"])
            .prop_map(|s| json!(s))
            .boxed(),
        Field::WatchSeconds => (0u32..=86_400).prop_map(|n| json!(n)).boxed(),
        Field::BitrateKbps => prop::option::of(1u32..=200_000)
            .prop_map(|n| json!(n))
            .boxed(),
        Field::BufferingMs => prop::option::of(0u32..=86_400_000)
            .prop_map(|n| json!(n))
            .boxed(),
        Field::Completed | Field::Row => any::<bool>().prop_map(|b| json!(b)).boxed(),
    }
}

/// A JSON object: each contract field absent, valid or hostile, plus stray keys.
fn event_object() -> impl Strategy<Value = Map<String, Value>> {
    let fields: Vec<BoxedStrategy<Option<Value>>> = Field::CONTRACT
        .iter()
        .map(|&f| {
            prop_oneof![
                1 => Just(None),
                5 => valid_value(f).prop_map(Some),
                3 => hostile_value().prop_map(Some),
            ]
            .boxed()
        })
        .collect();
    let stray = prop::collection::btree_map(
        prop::sample::select(vec![
            "Event_ID",
            "EVENT_ID",
            " event_id",
            "event_id ",
            "event_id\0",
            "eventId",
            "country ",
            "__proto__",
            "",
            "extra",
        ]),
        hostile_value(),
        0..3,
    );
    (fields, stray).prop_map(|(fields, stray)| {
        let mut m = Map::new();
        for (k, v) in stray {
            m.insert(k.to_owned(), v);
        }
        for (f, v) in Field::CONTRACT.iter().zip(fields) {
            if let Some(v) = v {
                m.insert(f.name().to_owned(), v);
            }
        }
        m
    })
}

/// JSON text with lexical tricks a parser may trip on: duplicate keys (the last wins), escapes,
/// exponents, huge numbers, deep nesting, trailing garbage.
fn json_text() -> impl Strategy<Value = String> {
    let trick = prop::sample::select(vec![
        r#""watch_seconds":1e400"#,
        r#""watch_seconds":-0"#,
        r#""watch_seconds":6E1"#,
        r#""watch_seconds":18446744073709551616"#,
        r#""watch_seconds":0.0000000000000000000001e22"#,
        r#""country":"\u0042\u0052""#,
        r#""country":"\ud800""#,
        r#""device":"t\u0000v""#,
        r#""event_id":"a","event_id":"b""#,
        r#""event_id":"a","event_id":null"#,
        r#""completed":"true""#,
        r#""completed":1"#,
        r#""occurred_at":"2026-11-01T10:00:00Z","occurred_at":1"#,
    ]);
    (
        event_object(),
        prop::collection::vec(trick, 0..3),
        0usize..3,
        0usize..200,
    )
        .prop_map(|(obj, tricks, wrap, depth)| {
            let mut s = serde_json::to_string(&Value::Object(obj)).expect("json");
            s.pop();
            for t in tricks {
                if s.len() > 1 {
                    s.push(',');
                }
                s.push_str(t);
            }
            s.push('}');
            match wrap {
                1 => format!("{}{s}{}", "[".repeat(depth), "]".repeat(depth)),
                2 => format!("{s} garbage"),
                _ => s,
            }
        })
}

// ---------------------------------------------------------------------------------------------
// The properties.

#[test]
fn json_events_get_a_valid_event_or_precise_field_errors() {
    for (name, data) in corpus("event-json") {
        if std::env::var_os("FUZZ_REPORT").is_some() {
            // What each corpus document gets (the README's table of bad inputs).
            let got = match serde_json::from_slice::<Value>(&data) {
                Ok(Value::Object(obj)) => {
                    match Validator::at(NOW_MS).validate(&RawFields::from_json_object(&obj)) {
                        Ok(_) => "valid".to_owned(),
                        Err(errors) => errors
                            .iter()
                            .map(|e| e.key())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                }
                Ok(_) => "not an object: row:malformed_json".to_owned(),
                Err(e) => format!("not JSON ({e}): row:malformed_json"),
            };
            println!("corpus event-json/{name}: {got}");
        }
        check_json_text(&data).unwrap_or_else(|e| panic!("corpus {name}: {e}"));
    }
    fuzz(
        "event-json",
        "precise_field_errors",
        512,
        event_object(),
        |obj| check_fields(&RawFields::from_json_object(&obj)),
    );
}

#[test]
fn json_text_with_lexical_tricks_never_panics() {
    fuzz("event-json", "lexical_tricks", 256, json_text(), |text| {
        check_json_text(text.as_bytes())
    });
}

#[test]
fn csv_cells_get_a_valid_event_or_precise_field_errors() {
    let cell = prop_oneof![
        1 => Just(None),
        6 => hostile_string().prop_map(Some),
        3 => (0u64..300_000).prop_map(|n| Some(n.to_string())),
    ];
    fuzz(
        "event-json",
        "csv_cells",
        512,
        prop::collection::vec(cell, 10),
        |cells| {
            let mut raw = RawFields::default();
            for (f, c) in Field::CONTRACT.iter().zip(&cells) {
                if let Some(c) = c {
                    raw.set(*f, FieldValue::Text(c));
                }
            }
            check_fields(&raw)
        },
    );
}

/// The validator's notion of "the future" at the edges of the clock.
#[test]
fn the_future_is_judged_without_overflow_at_any_now() {
    fuzz(
        "event-json",
        "any_now",
        256,
        (
            any::<i64>(),
            prop::sample::select(vec![
                "9999-12-31T23:59:59Z",
                "0000-01-01T00:00:00Z",
                "2026-11-01T10:00:00Z",
            ]),
        ),
        |(now, ts)| {
            let mut raw = RawFields::default();
            for f in Field::CONTRACT {
                raw.set(f, FieldValue::Text(""));
            }
            raw.set(Field::OccurredAt, FieldValue::Text(ts));
            let got = Validator::at(now).validate(&raw);
            let errs = got.expect_err("the other fields are empty");
            let ts_ms = chrono::DateTime::parse_from_rfc3339(ts)
                .expect("ts")
                .timestamp_millis();
            let future = errs
                .iter()
                .any(|e| e.field == Field::OccurredAt && e.reason == Reason::InFuture);
            prop_assert_eq!(
                future,
                i128::from(ts_ms) > i128::from(now) + i128::from(FUTURE_MS)
            );
            Ok(())
        },
    );
}
