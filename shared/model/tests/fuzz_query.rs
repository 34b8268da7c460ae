//! Bad input for cube queries: property-based fuzzing of the query parameters
//! (`Query::from_params`, what `GET /v1/cube` parses) and of the cuboid spec, with `proptest`.
//!
//! The seed corpus `fuzz/corpus/query/` (one parameter list per file, `key=value` per line, the
//! value taken verbatim) is replayed first; then `PROPTEST_CASES` generated cases (default: a
//! quick run), within `FUZZ_SECONDS` if set. Failures are saved in
//! `fuzz/corpus/query/<property>.proptest-regressions.txt` and replayed by every later run.
//!
//! The properties:
//! - parsing never panics; an accepted query keeps every limit (range, limit, known dimensions
//!   and measures, valid filter values) and can be answered by the default cuboids;
//! - a refusal is a `QueryError` whose message names the parameter and the value at fault, and
//!   that value really is in the request;
//! - a valid request with exactly one fault gets exactly that fault's error;
//! - the answer to an accepted query (aggregation, ordering, top N, CSV and JSON forms) is
//!   well-formed for any cells;
//! - a cuboid spec parses to a set whose canonical spec parses back to it, or to an error.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use streamcube_model::cube::{Cell, CuboidSet, Dim, DimsRef, Measures};
use streamcube_model::event::{Country, Device};
use streamcube_model::query::{
    Aggregator, Bucket, Granularity, Measure, Query, QueryError, QueryLimits, Value,
};

mod driver;

use driver::{corpus, fuzz};

// ---------------------------------------------------------------------------------------------
// Checking one request.

const KNOWN: [&str; 11] = [
    "from",
    "to",
    "granularity",
    "group_by",
    "measures",
    "order_by",
    "limit",
    "country",
    "device",
    "genre",
    "content_id",
];

fn items(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses `params` with the default limits and checks the answer against the request.
fn check(params: &[(String, String)]) -> TestCaseResult {
    let limits = QueryLimits::default();
    let got = Query::from_params(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &limits,
    );
    let mut map: BTreeMap<&str, &str> = BTreeMap::new();
    let mut repeated = Vec::new();
    for (k, v) in params {
        if map.insert(k, v).is_some() {
            repeated.push(k.as_str());
        }
    }
    match got {
        Ok(q) => {
            prop_assert!(repeated.is_empty(), "a repeated parameter was accepted");
            prop_assert!(
                map.keys().all(|k| KNOWN.contains(k)),
                "an unknown parameter was accepted"
            );
            prop_assert!(q.from <= q.to);
            let days = (q.to - q.from).num_days() + 1;
            prop_assert!(days <= i64::from(limits.max_days));
            prop_assert_eq!(q.days().count() as i64, days);
            prop_assert!(q.limit.is_none_or(|n| (1..=limits.max_rows).contains(&n)));
            let mut dims = q.group_by.clone();
            dims.sort();
            dims.dedup();
            prop_assert_eq!(dims.len(), q.group_by.len(), "group_by repeats a dimension");
            for (d, values) in &q.filters {
                for v in values {
                    let ok = match d {
                        Dim::Country => Country::parse(v).is_ok(),
                        Dim::Device => v.parse::<Device>().is_ok(),
                        Dim::Genre | Dim::ContentId => !v.is_empty(),
                    };
                    prop_assert!(ok, "filter {d}={v:?} accepted");
                }
            }
            prop_assert!(q.cuboid(&CuboidSet::default()).is_ok());
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.is_empty());
            // The error names what is at fault, and it is in the request.
            match &e {
                QueryError::Missing(p) => {
                    prop_assert!(!map.contains_key(p));
                    prop_assert!(msg.contains(p));
                }
                QueryError::BadDate { param, value } => {
                    prop_assert_eq!(map.get(param).copied(), Some(value.as_str()));
                    prop_assert!(NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").is_err());
                    prop_assert!(msg.contains(param) && msg.contains(value.as_str()));
                }
                QueryError::FromAfterTo { from, to } => prop_assert!(from > to),
                QueryError::RangeTooLong { days, max } => {
                    prop_assert!(*days > i64::from(*max));
                }
                QueryError::BadGranularity(v) => {
                    prop_assert_eq!(map.get("granularity").map(|g| g.trim()), Some(v.as_str()));
                    prop_assert!(!["hour", "day", "total"].contains(&v.as_str()));
                }
                QueryError::UnknownDimension { param, value } => {
                    prop_assert_eq!(*param, "group_by");
                    prop_assert!(items(map.get("group_by").copied().unwrap_or("")).contains(value));
                    prop_assert!(Dim::from_name(value).is_none());
                }
                QueryError::UnknownMeasure { param, value, .. } => {
                    let given = map.get(param).copied().unwrap_or_default();
                    match *param {
                        "measures" => prop_assert!(items(given).contains(value)),
                        "order_by" => prop_assert!(given.contains(value.as_str())),
                        other => prop_assert!(false, "unknown measure in {other}"),
                    }
                    prop_assert!(msg.contains(param) && msg.contains(value.as_str()));
                }
                QueryError::BadFilterValue { dim, value } => {
                    let given = map.get(dim.name()).copied().unwrap_or_default();
                    prop_assert!(items(given).contains(value));
                    prop_assert!(msg.contains(dim.name()) && msg.contains(value.as_str()));
                }
                QueryError::BadLimit { value, max } => {
                    prop_assert_eq!(map.get("limit").copied(), Some(value.as_str()));
                    prop_assert!(
                        value
                            .trim()
                            .parse::<usize>()
                            .map_or(true, |n| n == 0 || n > *max)
                    );
                }
                QueryError::UnknownParameter(k) => {
                    prop_assert!(map.contains_key(k.as_str()) && !KNOWN.contains(&k.as_str()));
                    prop_assert!(msg.contains(k.as_str()));
                }
                QueryError::Repeated(k) => {
                    prop_assert!(repeated.contains(&k.as_str()));
                }
                QueryError::NotMaterialized(..) => {
                    prop_assert!(false, "parameters alone never need a cuboid: {msg}");
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn date() -> impl Strategy<Value = String> {
    let valid = (0i64..800).prop_map(|d| {
        (NaiveDate::from_ymd_opt(2026, 1, 1).expect("day") + chrono::Days::new(d as u64))
            .to_string()
    });
    let odd = prop::sample::select(vec![
        "2026-02-29",
        "2024-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-11-31",
        "2026-1-1",
        " 2026-11-01 ",
        "2026-11-01T00:00:00Z",
        "20261101",
        "2026/11/01",
        "2026-11-01\0",
        "+262143-12-31",
        "-262144-01-01",
        "+262144-01-01",
        "0000-01-01",
        "9999-12-31",
        "-0001-12-31",
        "2026-11-01 ",
        "",
        " ",
        "today",
        "２０２６-11-01",
        "2026-11-01,2026-11-02",
        "99999999999999999999-01-01",
    ]);
    prop_oneof![6 => valid, 3 => odd.prop_map(str::to_owned), 1 => "\\PC{0,12}"]
}

fn list_of(words: Vec<&'static str>) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(words).prop_map(str::to_owned),
            1 => "\\PC{0,8}",
            1 => Just(String::new()),
        ],
        0..5,
    )
    .prop_flat_map(|items| {
        let n = items.len();
        (
            Just(items),
            prop::collection::vec(prop::sample::select(vec![",", " , ", ",,", ", "]), n),
        )
    })
    .prop_map(|(items, seps)| {
        let mut s = String::new();
        for (i, (item, sep)) in items.iter().zip(seps).enumerate() {
            if i > 0 {
                s.push_str(sep);
            }
            s.push_str(item);
        }
        s
    })
}

const DIMS: [&str; 8] = [
    "country",
    "device",
    "genre",
    "content_id",
    "Country",
    "city",
    "country ",
    "title",
];

const MEASURES: [&str; 13] = [
    "plays",
    "watch_seconds",
    "completed",
    "buffering_ms",
    "bitrate_sum",
    "bitrate_count",
    "unique_viewers",
    "avg_watch_seconds",
    "avg_bitrate_kbps",
    "completion_rate",
    "Plays",
    "revenue",
    "plays;drop",
];

fn value_for(key: &str) -> BoxedStrategy<String> {
    match key {
        "from" | "to" => date().boxed(),
        "granularity" => prop_oneof![
            prop::sample::select(vec![
                "hour", "day", "total", " day ", "HOUR", "week", "", "hour,day"
            ])
            .prop_map(str::to_owned),
            "\\PC{0,8}",
        ]
        .boxed(),
        "group_by" => list_of(DIMS.to_vec()).boxed(),
        "measures" => list_of(MEASURES.to_vec()).boxed(),
        "order_by" => (
            prop::sample::select(MEASURES.to_vec()),
            prop::sample::select(vec![
                "",
                ":asc",
                ":desc",
                ":ASC",
                ": asc",
                ":",
                "::asc",
                ":desc:asc",
                ":up",
            ]),
        )
            .prop_map(|(m, d)| format!("{m}{d}"))
            .boxed(),
        "limit" => prop_oneof![
            prop::sample::select(vec![
                "0",
                "1",
                "10",
                "10000",
                "10001",
                "-1",
                "+5",
                " 5 ",
                "1e3",
                "5.0",
                "00010",
                "18446744073709551616",
                "",
                "ten",
                "٣",
            ])
            .prop_map(str::to_owned),
            any::<u64>().prop_map(|n| n.to_string()),
        ]
        .boxed(),
        "country" => list_of(vec![
            "BR", "PT", "US", "br", "XK", "ZZ", "BRA", "ＢＲ", "ВR",
        ])
        .boxed(),
        "device" => list_of(vec![
            "tv", "mobile", "web", "tablet", "console", "TV", "fridge",
        ])
        .boxed(),
        "genre" | "content_id" => {
            list_of(vec!["drama", "c000017", "unknown", "", "a b", "🙂"]).boxed()
        }
        _ => "\\PC{0,10}".boxed(),
    }
}

/// A request: known and unknown parameters, sometimes repeated, with hostile values.
fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        12 => prop::sample::select(KNOWN.to_vec()).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["From", "from ", "", "limit[]", "country\0", "q", "callback"])
            .prop_map(str::to_owned),
        1 => "\\PC{0,6}",
    ];
    let pair = key.prop_flat_map(|k| {
        let v = value_for(&k);
        (Just(k), v)
    });
    // Usually a from and a to first, so that the rest gets checked too.
    (
        prop::option::weighted(0.9, (date(), date())),
        prop::collection::vec(pair, 0..7),
    )
        .prop_map(|(range, rest)| {
            let mut out = Vec::new();
            if let Some((f, t)) = range {
                out.push(("from".to_owned(), f));
                out.push(("to".to_owned(), t));
            }
            out.extend(rest);
            out
        })
}

// ---------------------------------------------------------------------------------------------
// The properties.

fn corpus_params(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn query_params_give_a_query_or_a_precise_error() {
    for (name, data) in corpus("query") {
        let text = String::from_utf8_lossy(&data);
        if std::env::var_os("FUZZ_REPORT").is_some() {
            // What each corpus request gets (the README's table of bad inputs).
            let got = match Query::from_params(corpus_params(&text), &QueryLimits::default()) {
                Ok(q) => format!(
                    "Ok: {} days, filters {:?}, {} measures",
                    q.days().count(),
                    q.filters,
                    q.measures.len()
                ),
                Err(e) => format!("{e:?}: {e}"),
            };
            println!("corpus query/{name}: {got}");
        }
        check(&corpus_params(&text)).unwrap_or_else(|e| panic!("corpus {name}: {e}"));
    }
    fuzz("query", "precise_errors", 512, params(), |p| check(&p));
}

/// One fault in an otherwise valid request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    NoFrom,
    BadTo,
    Reversed,
    TooLong,
    Granularity,
    Dimension,
    Measure,
    OrderBy,
    Filter,
    Limit,
    Unknown,
    Repeated,
}

#[test]
fn a_single_fault_gets_exactly_its_error() {
    let fault = prop::sample::select(vec![
        Fault::NoFrom,
        Fault::BadTo,
        Fault::Reversed,
        Fault::TooLong,
        Fault::Granularity,
        Fault::Dimension,
        Fault::Measure,
        Fault::OrderBy,
        Fault::Filter,
        Fault::Limit,
        Fault::Unknown,
        Fault::Repeated,
    ]);
    let base = (
        0u64..700,
        0u64..366,
        prop::sample::select(vec!["hour", "day", "total"]),
        prop::sample::subsequence(vec!["country", "device", "genre", "content_id"], 0..=4),
        prop::sample::subsequence(MEASURES[..10].to_vec(), 1..=10),
        prop::sample::select(MEASURES[..10].to_vec()),
        1usize..=10_000,
    );
    fuzz(
        "query",
        "single_fault",
        512,
        (base, fault, "[a-z]{1,8}"),
        |((start, len, gran, group, measures, order, limit), fault, junk)| {
            let from = NaiveDate::from_ymd_opt(2025, 1, 1).expect("day") + chrono::Days::new(start);
            let to = from + chrono::Days::new(len);
            let mut p: Vec<(String, String)> = vec![
                ("from".into(), from.to_string()),
                ("to".into(), to.to_string()),
                ("granularity".into(), gran.into()),
                ("group_by".into(), group.join(",")),
                ("measures".into(), measures.join(",")),
                ("order_by".into(), format!("{order}:asc")),
                ("limit".into(), limit.to_string()),
                ("country".into(), "BR, PT".into()),
            ];
            prop_assert!(check(&p).is_ok());
            prop_assert!(
                Query::from_params(p.clone(), &QueryLimits::default()).is_ok(),
                "the valid base was refused: {p:?}"
            );
            let set = |p: &mut Vec<(String, String)>, k: &str, v: String| {
                p.iter_mut().find(|(key, _)| key == k).expect("key").1 = v;
            };
            let bad = format!("x{junk}");
            match fault {
                Fault::NoFrom => p.retain(|(k, _)| k != "from"),
                Fault::BadTo => set(&mut p, "to", format!("{to}x")),
                Fault::Reversed => {
                    set(&mut p, "from", (to + chrono::Days::new(1)).to_string());
                }
                Fault::TooLong => set(&mut p, "to", (from + chrono::Days::new(366)).to_string()),
                Fault::Granularity => set(&mut p, "granularity", bad.clone()),
                Fault::Dimension => set(&mut p, "group_by", format!("country,{bad}")),
                Fault::Measure => set(&mut p, "measures", format!("plays,{bad}")),
                Fault::OrderBy => set(&mut p, "order_by", bad.clone()),
                Fault::Filter => p.push(("device".into(), format!("tv,{bad}"))),
                Fault::Limit => set(&mut p, "limit", "0".into()),
                Fault::Unknown => p.push((bad.clone(), "1".into())),
                Fault::Repeated => p.push(("limit".into(), "5".into())),
            }
            let err = Query::from_params(p.clone(), &QueryLimits::default())
                .expect_err("a faulty request was accepted");
            let ok = match fault {
                Fault::NoFrom => err == QueryError::Missing("from"),
                Fault::BadTo => matches!(&err, QueryError::BadDate { param: "to", .. }),
                Fault::Reversed => matches!(err, QueryError::FromAfterTo { .. }),
                Fault::TooLong => {
                    err == QueryError::RangeTooLong {
                        days: 367,
                        max: 366,
                    }
                }
                Fault::Granularity => err == QueryError::BadGranularity(bad.clone()),
                Fault::Dimension => {
                    matches!(&err, QueryError::UnknownDimension { value, .. } if *value == bad)
                }
                Fault::Measure => {
                    matches!(&err, QueryError::UnknownMeasure { param: "measures", value, .. } if *value == bad)
                }
                Fault::OrderBy => {
                    matches!(&err, QueryError::UnknownMeasure { param: "order_by", value, .. } if *value == bad)
                }
                Fault::Filter => {
                    matches!(&err, QueryError::BadFilterValue { dim: Dim::Device, value } if *value == bad)
                }
                Fault::Limit => matches!(err, QueryError::BadLimit { .. }),
                Fault::Unknown => err == QueryError::UnknownParameter(bad.clone()),
                Fault::Repeated => err == QueryError::Repeated("limit".into()),
            };
            prop_assert!(ok, "{fault:?} gave {err:?} ({err})");
            check(&p)
        },
    );
}

#[test]
fn answers_are_well_formed_for_any_cells() {
    let cell = (
        prop::option::of(prop::sample::select(vec!["BR", "PT", "US"])),
        prop::option::of(prop::sample::select(vec!["tv", "web"])),
        prop::option::of(prop::sample::select(vec!["drama", "", "a,b", "\"q\""])),
        prop::option::of(prop::sample::select(vec!["c1", "c2", "\0", "é\n"])),
        prop::array::uniform6(0u64..1_000_000),
        0i64..48,
    );
    let query = (
        prop::sample::select(vec!["hour", "day", "total"]),
        prop::sample::subsequence(vec!["country", "device", "genre", "content_id"], 0..=4),
        prop::sample::subsequence(MEASURES[..10].to_vec(), 0..=10),
        prop::option::of((prop::sample::select(MEASURES[..10].to_vec()), any::<bool>())),
        prop::option::of(1usize..20),
        prop::option::of(prop::sample::select(vec!["BR", "BR,PT", "US", ""])),
    );
    fuzz(
        "query",
        "well_formed_answers",
        256,
        (query, prop::collection::vec(cell, 0..40)),
        |((gran, group, measures, order, limit, country), cells)| {
            let mut p: Vec<(String, String)> = vec![
                ("from".into(), "2026-11-01".into()),
                ("to".into(), "2026-11-02".into()),
                ("granularity".into(), gran.into()),
                ("group_by".into(), group.join(",")),
                ("measures".into(), measures.join(",")),
            ];
            if let Some((m, asc)) = order {
                p.push((
                    "order_by".into(),
                    format!("{m}:{}", if asc { "asc" } else { "desc" }),
                ));
            }
            if let Some(n) = limit {
                p.push(("limit".into(), n.to_string()));
            }
            if let Some(c) = country {
                p.push(("country".into(), c.into()));
            }
            let q = Query::from_params(p, &QueryLimits::default()).expect("valid query");
            let mut agg = Aggregator::new(&q);
            let first = streamcube_model::query::first_hour(q.from);
            for (country, device, genre, content, m, h) in &cells {
                let dims = DimsRef {
                    country: country.map(|c| Country::parse(c).expect("country")),
                    device: device.map(|d| d.parse().expect("device")),
                    genre: *genre,
                    content_id: *content,
                };
                let cell = Cell {
                    measures: Measures {
                        plays: m[0],
                        watch_seconds: m[1],
                        completed: m[2],
                        buffering_ms: m[3],
                        bitrate_sum: m[4],
                        bitrate_count: m[5],
                    },
                    ..Cell::default()
                };
                let bucket = match q.granularity {
                    Granularity::Hour => Bucket::Hour(first + h),
                    _ => Bucket::Day(streamcube_model::query::day_of_hour(first + h)),
                };
                agg.add(bucket, dims, &cell);
            }
            let result = agg.finish();
            let time_col = usize::from(q.granularity != Granularity::Total);
            prop_assert_eq!(
                result.columns.len(),
                time_col + q.group_by.len() + q.measures.len()
            );
            prop_assert!(result.rows.iter().all(|r| r.len() == result.columns.len()));
            if let Some(n) = q.limit {
                prop_assert!(result.rows.len() <= n);
            }
            if let Some(order) = q.order {
                let i = result
                    .columns
                    .iter()
                    .position(|c| c == order.measure.name());
                if let Some(i) = i {
                    let keys: Vec<f64> = result
                        .rows
                        .iter()
                        .map(|r| match &r[i] {
                            Value::Int(n) => *n as f64,
                            Value::Float(f) => *f,
                            _ => f64::NEG_INFINITY,
                        })
                        .collect();
                    let sorted = keys.windows(2).all(|w| {
                        if order.descending {
                            w[0] >= w[1]
                        } else {
                            w[0] <= w[1]
                        }
                    });
                    prop_assert!(sorted, "rows not ordered by {:?}: {keys:?}", order);
                }
            }
            // Derived measures are finite numbers or null, never NaN or infinite.
            for r in &result.rows {
                for v in r {
                    if let Value::Float(f) = v {
                        prop_assert!(f.is_finite());
                    }
                }
            }
            // The JSON and CSV forms carry every row and column.
            let json = result.to_json_rows();
            prop_assert_eq!(json.len(), result.rows.len());
            prop_assert!(serde_json::to_string(&json).is_ok());
            let csv_text = result.to_csv();
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(csv_text.as_bytes());
            let header = rdr.headers().expect("header").clone();
            // No column at all (`granularity=total&measures=`): the CSV writer writes `""`.
            prop_assert_eq!(header.len(), result.columns.len().max(1));
            let records: Vec<csv::StringRecord> =
                rdr.records().collect::<Result<_, _>>().expect("csv");
            prop_assert_eq!(records.len(), result.rows.len());
            Ok(())
        },
    );
}

#[test]
fn cuboid_specs_parse_or_refuse() {
    let spec = prop_oneof![
        3 => list_of(DIMS.to_vec()),
        3 => prop::collection::vec(list_of(DIMS[..4].to_vec()), 0..4).prop_map(|g| g.join(";")),
        1 => "\\PC{0,20}",
    ];
    fuzz("query", "cuboid_specs", 256, spec, |s| {
        let empty_group = s
            .split(';')
            .any(|g| !g.trim().is_empty() && g.split(',').all(|n| n.trim().is_empty()));
        if empty_group {
            prop_assert!(
                CuboidSet::parse(&s).is_err(),
                "a group of no dimension: {s:?}"
            );
            return Ok(());
        }
        match CuboidSet::parse(&s) {
            Ok(set) => {
                prop_assert!(!set.is_empty());
                let again = CuboidSet::parse(&set.spec());
                prop_assert_eq!(again.as_ref(), Ok(&set));
                prop_assert!(set.len() <= 16);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
    // Every measure name round-trips (the lists above rely on it).
    for m in Measure::ALL {
        assert_eq!(Measure::from_name(m.name()), Some(m));
    }
}

/// Found by `cuboid_specs_parse_or_refuse`: a group made only of commas (`","`, `" , "`,
/// `"country;,"`) was accepted as a group of no dimensions, the apex; `","` alone gave a
/// deployment whose only cuboid is the grand total, and whose canonical spec `""` did not parse
/// back. Now refused, naming the group.
#[test]
fn a_cuboid_group_of_only_commas_is_refused() {
    for spec in [",", " , ", "country;,", ",;device"] {
        let err = CuboidSet::parse(spec).expect_err(spec);
        assert!(
            err.to_string().contains("names no dimension"),
            "{spec}: {err}"
        );
    }
}
