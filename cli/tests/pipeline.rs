//! The incremental pipeline through the command line, on a temporary data directory:
//! ingest → consolidate → query → replay (nothing changes) → erase (the viewer is gone).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use assert_cmd::Command;

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn sc(data: &Path) -> Command {
    let mut c = Command::cargo_bin("streamcube").expect("binary");
    c.arg("--data-dir")
        .arg(data)
        .env("STREAMCUBE_PSEUDONYM_KEY", KEY);
    c
}

fn stdout(c: &mut Command) -> String {
    let out = c.output().expect("run");
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// `day -> (plays, watch_seconds, unique_viewers)` per country from a query CSV.
fn by_day_country(csv_text: &str) -> BTreeMap<(String, String), (u64, u64, u64)> {
    let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
    rdr.records()
        .map(|r| {
            let r = r.expect("row");
            let n = |i: usize| r[i].parse::<u64>().expect("number");
            ((r[0].to_owned(), r[1].to_owned()), (n(2), n(3), n(4)))
        })
        .collect()
}

fn query_countries(data: &Path) -> String {
    stdout(sc(data).args([
        "query",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
        "--group-by",
        "country",
        "--measures",
        "plays,watch_seconds,unique_viewers",
        "--format",
        "csv",
    ]))
}

fn data_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn ingest_consolidate_query_replay_and_erase() {
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("input");
    let data = tmp.path().join("data");
    Command::cargo_bin("streamcube")
        .expect("binary")
        .args([
            "generate",
            "--events",
            "4000",
            "--days",
            "2",
            "--viewers",
            "300",
            "--titles",
            "100",
            "--bad-rows",
            "12",
        ])
        .arg("--out-dir")
        .arg(&input)
        .assert()
        .success();
    let (events, catalog) = (input.join("events.csv"), input.join("catalog.csv"));

    // Ingest: every row accounted for, refused rows in the quarantine with their reasons.
    let out = stdout(
        sc(&data)
            .arg("ingest")
            .arg("--catalog")
            .arg(&catalog)
            .arg(&events),
    );
    assert!(out.contains("processed"), "{out}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("lake/reports/events/events.csv.json")).expect("report"),
    )
    .expect("json");
    let n = |k: &str| report[k].as_u64().expect(k);
    assert_eq!(n("rows"), n("accepted") + n("duplicates") + n("rejected"));
    assert_eq!(n("rejected"), 12);
    let quarantine =
        std::fs::read_to_string(data.join("lake/quarantine/events/events.csv.jsonl")).expect("q");
    assert_eq!(quarantine.lines().count(), 12);
    for line in quarantine.lines() {
        let q: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(q["line"].as_u64().expect("line") > 1);
        assert!(!q["errors"].as_array().expect("errors").is_empty());
    }

    stdout(sc(&data).arg("consolidate"));
    let first = query_countries(&data);
    let cells = by_day_country(&first);
    let total: u64 = cells.values().map(|c| c.0).sum();
    assert_eq!(
        total,
        n("accepted"),
        "the cube counts every accepted event once"
    );

    // The same numbers as the batch cube of the same file (same key, so the same estimates).
    let batch = stdout(
        Command::cargo_bin("streamcube")
            .expect("binary")
            .env("STREAMCUBE_PSEUDONYM_KEY", KEY)
            .args(["cube", "--out", "-", "--events"])
            .arg(&events)
            .arg("--catalog")
            .arg(&catalog),
    );
    let mut rdr = csv::Reader::from_reader(batch.as_bytes());
    let mut from_batch = BTreeMap::new();
    for r in rdr.records() {
        let r = r.expect("row");
        if !r[1].is_empty() && r[2].is_empty() && r[3].is_empty() && r[4].is_empty() {
            let n = |i: usize| r[i].parse::<u64>().expect("number");
            from_batch.insert((r[0].to_owned(), r[1].to_owned()), (n(5), n(6), n(11)));
        }
    }
    assert_eq!(cells, from_batch);

    // Each published day is exported in the cube CSV form, row for row what the batch path says.
    for day in ["2026-11-01", "2026-11-02"] {
        let export =
            std::fs::read_to_string(data.join(format!("lake/exports/cube/day={day}/cube.csv")))
                .expect("export");
        let mut exported: Vec<&str> = export.lines().skip(1).collect();
        let mut expected: Vec<&str> = batch.lines().filter(|l| l.starts_with(day)).collect();
        exported.sort_unstable();
        expected.sort_unstable();
        assert!(!expected.is_empty());
        assert_eq!(exported, expected, "export of {day}");
    }

    // Replay: the same file again changes nothing.
    let out = stdout(
        sc(&data)
            .arg("ingest")
            .arg("--catalog")
            .arg(&catalog)
            .arg(&events),
    );
    assert!(out.contains("already done"), "{out}");
    let out = stdout(sc(&data).arg("consolidate"));
    assert!(out.contains("nothing to consolidate"), "{out}");
    assert_eq!(query_countries(&data), first);

    // No raw viewer id anywhere in what the pipeline wrote (bronze is the raw landing zone, and
    // the quarantine keeps raw rows by design).
    let raw_ids: HashSet<String> = {
        let mut rdr = csv::Reader::from_path(&events).expect("events");
        rdr.records()
            .filter_map(Result::ok)
            .filter_map(|r| r.get(2).map(str::to_owned))
            .filter(|v| v.len() >= 4)
            .collect()
    };
    for f in data_files(&data) {
        let rel = f
            .strip_prefix(&data)
            .expect("prefix")
            .to_string_lossy()
            .into_owned();
        if rel.starts_with("bronze") || rel.starts_with("lake/quarantine") {
            continue;
        }
        let bytes = std::fs::read(&f).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        for id in &raw_ids {
            assert!(
                !text.contains(id.as_str()),
                "raw viewer id {id} found in {rel}"
            );
        }
    }

    // Erase the busiest viewer: their events leave silver and every count.
    let mut per_viewer: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let mut rdr = csv::Reader::from_path(&events).expect("events");
    for r in rdr.records().filter_map(Result::ok) {
        if r.len() == 10 && r[1].starts_with("2026-11-0") && r[5].len() == 2 {
            per_viewer
                .entry(r[2].to_owned())
                .or_default()
                .insert(r[0].to_owned());
        }
    }
    let (viewer, their_events) = per_viewer
        .iter()
        .max_by_key(|(_, e)| e.len())
        .expect("a viewer");
    let out = stdout(sc(&data).args(["erase", viewer]));
    assert!(
        out.contains(&format!("deleted {} silver events", their_events.len())),
        "{out}"
    );
    let after = by_day_country(&query_countries(&data));
    let total_after: u64 = after.values().map(|c| c.0).sum();
    assert_eq!(total_after, total - their_events.len() as u64);
    let uniques =
        |m: &BTreeMap<(String, String), (u64, u64, u64)>| -> u64 { m.values().map(|c| c.2).sum() };
    assert!(
        uniques(&after) < uniques(&cells),
        "the sketches no longer count the viewer"
    );
    // Erasing again finds nothing.
    let out = stdout(sc(&data).args(["erase", viewer]));
    assert!(out.contains("deleted 0 silver events"), "{out}");
}

#[test]
fn query_errors_are_precise() {
    let tmp = tempfile::tempdir().expect("tmp");
    sc(tmp.path())
        .args(["query", "--from", "2026-11-01", "--group-by", "city"])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "unknown dimension `city` in group_by (known: country, device, genre, content_id)",
        ));
    sc(tmp.path())
        .args(["query", "--from", "2026-02-30"])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "`from` must be a date like 2026-11-01, got `2026-02-30`",
        ));
}

#[test]
fn every_command_has_help() {
    for cmd in [
        "demo",
        "cube",
        "ingest",
        "consolidate",
        "query",
        "erase",
        "serve",
        "generate",
    ] {
        Command::cargo_bin("streamcube")
            .expect("binary")
            .args([cmd, "--help"])
            .assert()
            .success()
            .stdout(predicates::str::contains("Usage: streamcube"));
    }
}
