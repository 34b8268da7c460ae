//! `streamcube cube` against an independent answer: a naive recount of the same generated file
//! with plain maps and exact distinct sets, cell by cell.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use assert_cmd::Command;

type Key = (String, String, String, String, String);

#[derive(Default, Debug, PartialEq, Eq)]
struct Expected {
    plays: u64,
    watch: u64,
    completed: u64,
    buffering: u64,
    bitrate_sum: u64,
    bitrate_count: u64,
    viewers: HashSet<String>,
}

fn streamcube() -> Command {
    Command::cargo_bin("streamcube").expect("binary")
}

/// The cube computed the slow, obvious way. Generated data without bad rows needs no validation;
/// duplicates (same event id) count once, the first time.
fn naive_cube(events: &Path, catalog: &Path) -> BTreeMap<Key, Expected> {
    let mut genres = HashMap::new();
    let mut rdr = csv::Reader::from_path(catalog).expect("catalog");
    for r in rdr.records() {
        let r = r.expect("catalog row");
        genres.insert(r[0].to_owned(), r[2].to_lowercase());
    }
    let mut seen = HashSet::new();
    let mut cube: BTreeMap<Key, Expected> = BTreeMap::new();
    let mut rdr = csv::Reader::from_path(events).expect("events");
    for r in rdr.records() {
        let r = r.expect("event row");
        if !seen.insert(r[0].to_owned()) {
            continue;
        }
        let at = chrono::DateTime::parse_from_rfc3339(&r[1]).expect("timestamp");
        let day = at.with_timezone(&chrono::Utc).date_naive().to_string();
        let genre = genres
            .get(&r[3])
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let dims = [r[5].to_owned(), r[4].to_owned(), genre, r[3].to_owned()];
        for mask in 0..16u8 {
            let pick = |i: usize| {
                if mask & (1 << i) != 0 {
                    dims[i].clone()
                } else {
                    String::new()
                }
            };
            let e = cube
                .entry((day.clone(), pick(0), pick(1), pick(2), pick(3)))
                .or_default();
            e.plays += 1;
            e.watch += r[6].parse::<u64>().expect("watch");
            e.completed += u64::from(&r[9] == "true");
            e.buffering += r[8].parse::<u64>().unwrap_or(0);
            if let Ok(b) = r[7].parse::<u64>() {
                e.bitrate_sum += b;
                e.bitrate_count += 1;
            }
            e.viewers.insert(r[2].to_owned());
        }
    }
    cube
}

#[test]
fn the_batch_cube_equals_a_naive_recount() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    streamcube()
        .args([
            "generate",
            "--events",
            "20000",
            "--days",
            "3",
            "--viewers",
            "800",
            "--titles",
            "300",
        ])
        .arg("--out-dir")
        .arg(d)
        .assert()
        .success();
    let (events, catalog) = (d.join("events.csv"), d.join("catalog.csv"));
    let (out, report) = (d.join("cube.csv"), d.join("report.json"));
    streamcube()
        .args(["cube", "--threads", "2", "--events"])
        .arg(&events)
        .arg("--catalog")
        .arg(&catalog)
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .assert()
        .success();

    let expected = naive_cube(&events, &catalog);
    let mut got = BTreeMap::new();
    let mut rdr = csv::Reader::from_path(&out).expect("cube");
    assert_eq!(
        rdr.headers()
            .expect("header")
            .iter()
            .collect::<Vec<_>>()
            .join(","),
        "day,country,device,genre,content_id,plays,watch_seconds,completed,buffering_ms,bitrate_sum,bitrate_count,unique_viewers"
    );
    for r in rdr.records() {
        let r = r.expect("row");
        let n = |i: usize| r[i].parse::<u64>().expect("number");
        let key = (
            r[0].to_owned(),
            r[1].to_owned(),
            r[2].to_owned(),
            r[3].to_owned(),
            r[4].to_owned(),
        );
        let prev = got.insert(key, [n(5), n(6), n(7), n(8), n(9), n(10), n(11)]);
        assert!(prev.is_none(), "a cell appears twice");
    }
    assert_eq!(got.len(), expected.len(), "same cell set");
    for (key, e) in &expected {
        let g = got
            .get(key)
            .unwrap_or_else(|| panic!("missing cell {key:?}"));
        let exact = [
            e.plays,
            e.watch,
            e.completed,
            e.buffering,
            e.bitrate_sum,
            e.bitrate_count,
        ];
        assert_eq!(&g[..6], &exact, "measures of {key:?}");
        // Below 1,536 viewers the sketch is exact.
        assert_eq!(g[6], e.viewers.len() as u64, "unique viewers of {key:?}");
    }

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    let n = |k: &str| report[k].as_u64().expect(k);
    assert_eq!(n("rows"), 20000);
    assert_eq!(n("rows"), n("accepted") + n("duplicates") + n("rejected"));
    assert!(n("duplicates") > 0, "the generator adds duplicates");
    assert_eq!(n("rejected"), 0);
}

#[test]
fn bad_rows_are_counted_by_reason_and_the_cube_goes_to_stdout() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    streamcube()
        .args([
            "generate",
            "--events",
            "3000",
            "--days",
            "2",
            "--bad-rows",
            "21",
        ])
        .arg("--out-dir")
        .arg(d)
        .assert()
        .success();
    let report = d.join("report.json");
    let out = streamcube()
        .args(["cube", "--out", "-", "--events"])
        .arg(d.join("events.csv"))
        .arg("--catalog")
        .arg(d.join("catalog.csv"))
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.starts_with("day,country,device,genre,content_id,plays"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(report["rejected"].as_u64(), Some(21));
    let reasons = report["rejected_by_reason"].as_object().expect("reasons");
    for key in [
        "country:unknown_country",
        "row:invalid_utf8",
        "row:field_count",
        "device:unknown_device",
    ] {
        assert!(reasons.contains_key(key), "{key} in {reasons:?}");
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    streamcube()
        .args([
            "cube",
            "--events",
            "/nonexistent/events.csv",
            "--catalog",
            "/nonexistent/c.csv",
            "--out",
            "-",
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "/nonexistent/events.csv does not exist",
        ));
}
