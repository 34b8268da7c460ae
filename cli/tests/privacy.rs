//! Privacy and residency through every entry point of the command, on a temporary data directory
//! with `RUST_LOG=trace` (every level, debug included) and `STREAMCUBE_SERVED_COUNTRIES=BR,AR`:
//!
//! - files (a catalog, a CSV and a JSON-lines file, both with refused rows and resends) through
//!   `streamcube ingest`, and batches through `streamcube serve` (`POST /v1/events` as a JSON
//!   array and as NDJSON, with a refused event and a resend);
//! - a batch with a `DE` event is refused whole with 403 and nothing of it is stored; a `DE` row of
//!   a file is quarantined as `country:country_not_served`;
//! - `consolidate`, `query` (command and `GET /v1/cube`), then an erasure through the command and
//!   one through `DELETE /v1/viewers/{id}`, and `consolidate` again;
//! - the answers equal a recount of the events sent, in plain Rust, before and after the erasure
//!   (plays exactly, unique viewers exactly: every cell is far below the sketch's exact range);
//! - the erased viewers are in no silver event and in no sketch of any stored generation;
//! - no raw viewer id of an accepted event is in any file of the data directory (the database and
//!   its WAL, the lake: quarantine, reports, CSV and Parquet exports) nor in any output or log of
//!   any command; bronze holds exactly the landed files; the quarantine holds refused rows only;
//!   viewer ids that only came in refused API requests are nowhere at all.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use streamcube_embedded::EmbeddedBackend;
use streamcube_model::cube::Dims;
use streamcube_model::pseudonym::Pseudonym;

#[path = "../../tests/support/probe.rs"]
mod probe;

use probe::{Ev, Gen, contains_bytes, found_in, hmac_sha256, token};

mod common;

use common::request;

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const DAYS: [&str; 2] = ["2026-03-10", "2026-03-11"];
const SERVED: &str = "BR,AR";

fn pseudonym(viewer: &str) -> [u8; 32] {
    hmac_sha256(&hex::decode(KEY).expect("hex key"), viewer.as_bytes())
}

/// Every command run, with everything it printed.
struct Runner {
    data: PathBuf,
    outputs: Vec<(String, String)>,
}

impl Runner {
    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_streamcube"));
        c.arg("--data-dir")
            .arg(&self.data)
            .env("STREAMCUBE_PSEUDONYM_KEY", KEY)
            .env("STREAMCUBE_SERVED_COUNTRIES", SERVED)
            .env("RUST_LOG", "trace")
            .env_remove("STREAMCUBE_BACKEND")
            .env_remove("STREAMCUBE_PSEUDONYM_KEYRING");
        c
    }

    /// Runs a command that must succeed; returns its stdout.
    fn run(&mut self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run streamcube");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let label = args.join(" ");
        assert!(
            out.status.success(),
            "`streamcube {label}` failed:\n{stderr}\n{stdout}"
        );
        self.outputs
            .push((format!("{label} (stdout)"), stdout.clone()));
        self.outputs.push((format!("{label} (stderr)"), stderr));
        stdout
    }
}

/// `streamcube serve` on a free port, its stdout and stderr collected until it is killed.
struct Server {
    child: Child,
    addr: String,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn drain(
    mut r: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    })
}

impl Server {
    fn start(runner: &Runner, dashboard: &Path) -> Server {
        let mut child = runner
            .command()
            .args(["serve", "--addr", "127.0.0.1:0", "--dashboard"])
            .arg(dashboard)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let err = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("banner");
        out.lock()
            .expect("lock")
            .extend_from_slice(first.as_bytes());
        let addr = first
            .trim()
            .strip_prefix("serving on http://")
            .unwrap_or_else(|| panic!("no address in the banner: {first}"))
            .to_owned();
        let readers = vec![
            drain(stdout, Arc::clone(&out)),
            drain(child.stderr.take().expect("stderr"), Arc::clone(&err)),
        ];
        Server {
            child,
            addr,
            out,
            err,
            readers,
        }
    }

    /// Stops the server and returns (stdout, stderr).
    fn stop(mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let text = |b: &Arc<Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(&b.lock().expect("lock")).into_owned()
        };
        (text(&self.out), text(&self.err))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (plays, watch seconds, unique viewers) per group.
type Tally = BTreeMap<Vec<String>, (u64, u64, u64)>;

/// The independent recount: each event id once, erased viewers left out.
fn recount(events: &[Ev], erased: &HashSet<String>, key: impl Fn(&Ev) -> Vec<String>) -> Tally {
    let mut seen = HashSet::new();
    let mut groups: BTreeMap<Vec<String>, (u64, u64, HashSet<String>)> = BTreeMap::new();
    for e in events {
        if !seen.insert(e.id.clone()) || erased.contains(&e.viewer) {
            continue;
        }
        let g = groups.entry(key(e)).or_default();
        g.0 += 1;
        g.1 += u64::from(e.watch);
        g.2.insert(e.viewer.clone());
    }
    groups
        .into_iter()
        .map(|(k, (p, w, v))| (k, (p, w, v.len() as u64)))
        .collect()
}

/// A query's CSV (group columns, then plays, watch_seconds, unique_viewers) as a tally.
fn tally_csv(text: &str) -> Tally {
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header = rdr.headers().expect("header").clone();
    let n = header.len();
    assert_eq!(
        header.iter().skip(n - 3).collect::<Vec<_>>(),
        ["plays", "watch_seconds", "unique_viewers"]
    );
    rdr.records()
        .map(|r| {
            let r = r.expect("row");
            let num = |i: usize| r[i].parse::<u64>().expect("number");
            (
                r.iter().take(n - 3).map(str::to_owned).collect(),
                (num(n - 3), num(n - 2), num(n - 1)),
            )
        })
        .collect()
}

/// What the cube answers, through the command, for every grouping the recount checks.
fn answers(runner: &mut Runner) -> Vec<(&'static str, Tally)> {
    let groupings: [(&'static str, &[&str]); 5] = [
        ("day", &["--granularity", "day"]),
        ("hour", &["--granularity", "hour"]),
        (
            "day,country",
            &["--granularity", "day", "--group-by", "country"],
        ),
        (
            "day,content_id",
            &["--granularity", "day", "--group-by", "content_id"],
        ),
        (
            "total,device",
            &["--granularity", "total", "--group-by", "device"],
        ),
    ];
    groupings
        .into_iter()
        .map(|(name, extra)| {
            let mut args = vec![
                "query",
                "--from",
                DAYS[0],
                "--to",
                DAYS[1],
                "--measures",
                "plays,watch_seconds,unique_viewers",
                "--format",
                "csv",
            ];
            args.extend_from_slice(extra);
            (name, tally_csv(&runner.run(&args)))
        })
        .collect()
}

fn recounts(events: &[Ev], erased: &HashSet<String>) -> Vec<(&'static str, Tally)> {
    vec![
        ("day", recount(events, erased, |e| vec![e.day()])),
        ("hour", recount(events, erased, |e| vec![e.hour()])),
        (
            "day,country",
            recount(events, erased, |e| vec![e.day(), e.country.to_owned()]),
        ),
        (
            "day,content_id",
            recount(events, erased, |e| vec![e.day(), e.content.clone()]),
        ),
        (
            "total,device",
            recount(events, erased, |e| vec![e.device.to_owned()]),
        ),
    ]
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
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
    out.sort();
    out
}

/// Scans every file of the data directory: bronze holds exactly the landed inputs; the quarantine
/// holds refused rows' ids and no accepted one; nothing else holds any raw id. Returns the
/// relative paths scanned.
fn scan_data_dir(
    data: &Path,
    landed: &BTreeMap<String, Vec<u8>>,
    accepted_ids: &BTreeSet<String>,
    file_refused_ids: &BTreeSet<String>,
    nowhere_ids: &BTreeSet<String>,
) -> Vec<String> {
    let mut scanned = Vec::new();
    for f in files_under(data) {
        let rel = f
            .strip_prefix(data)
            .expect("prefix")
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&f).expect("read");
        if let Some(key) = rel.strip_prefix("bronze/") {
            // The raw landing zone: the files as given, and nothing else.
            assert_eq!(
                landed.get(key),
                Some(&bytes),
                "bronze/{key} is not one of the landed files"
            );
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let leaked = found_in(&text, accepted_ids.iter().chain(nowhere_ids));
        assert!(
            leaked.is_empty(),
            "raw viewer ids {leaked:?} found in {rel}"
        );
        let refused = found_in(&text, file_refused_ids);
        if !rel.starts_with("lake/quarantine/") {
            assert!(
                refused.is_empty(),
                "raw viewer ids {refused:?} found in {rel}"
            );
        }
        scanned.push(rel);
    }
    scanned
}

#[test]
fn no_raw_viewer_id_leaves_the_edge_and_erasure_reaches_every_sketch() {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut g = Gen::new(seed, DAYS);
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("input");
    std::fs::create_dir_all(&input).expect("input dir");
    let data = tmp.path().join("data");
    let mut runner = Runner {
        data: data.clone(),
        outputs: Vec::new(),
    };

    // Viewer ids that cannot occur by chance. Accepted viewers send valid events; refused ones
    // appear only in rows a file sends and the pipeline refuses; the API-only ones appear only in
    // requests the API refuses (never stored, not even in the quarantine).
    let viewers: Vec<String> = (0..20)
        .map(|_| format!("viewer-Zq7{}", token(&mut g.rng, 14)))
        .collect();
    let refused: Vec<String> = (0..8)
        .map(|_| format!("viewer-Qx9{}", token(&mut g.rng, 14)))
        .collect();
    let api_only: Vec<String> = (0..3)
        .map(|_| format!("viewer-Wk4{}", token(&mut g.rng, 14)))
        .collect();
    // Erased later: one through the command, one through the API; both send through every entry
    // point on both days.
    let (erased_cli, erased_api) = (viewers[0].clone(), viewers[1].clone());
    let always = [&erased_cli, &erased_api];

    // Files: the catalog (c6 is uncatalogued), a CSV and a JSON-lines file.
    let catalog = "content_id,title,genre,release_year,duration_seconds\n\
                   c1,One,drama,2019,5400\nc2,Two,comedy,2021,1800\nc3,Three,drama,2020,3600\n\
                   c4,Four,documentary,2018,2700\nc5,Five,kids,2022,1500\n";
    let csv_events = g.batch(&viewers, &always, 110);
    let mut csv_text = String::from(
        "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed\n",
    );
    for e in &csv_events {
        csv_text.push_str(&e.csv());
        csv_text.push('\n');
    }
    csv_text.push_str(&csv_events[3].csv()); // a resend: a duplicate
    csv_text.push('\n');
    let bad_csv = [
        format!(
            "bad-1,2026-03-10T04:00:00Z,{},c1,toaster,BR,60,,,true",
            refused[0]
        ),
        format!(
            "bad-2,2026-03-10T05:00:00Z,{},c2,tv,DE,60,,,true",
            refused[1]
        ),
        format!("bad-3,yesterday,{},c1,tv,BR,60,,,false", refused[2]),
        format!("bad-4,2026-03-10T06:00:00Z,{},c1,tv", refused[3]),
        format!(
            "bad-5,2026-03-11T06:00:00Z,{},c1,tv,XX,60,,,true",
            refused[4]
        ),
    ];
    for b in &bad_csv {
        csv_text.push_str(b);
        csv_text.push('\n');
    }
    let jsonl_events = g.batch(&viewers, &always, 70);
    let mut jsonl_text = String::new();
    for e in &jsonl_events {
        jsonl_text.push_str(&e.json().to_string());
        jsonl_text.push('\n');
    }
    jsonl_text.push_str(&csv_events[5].json().to_string()); // sent in the CSV too: a duplicate
    jsonl_text.push('\n');
    let mut bad_jsonl = vec![format!(
        r#"{{"event_id":"bad-6","viewer_id":"{}","country":"BR" broken"#,
        refused[5]
    )];
    let mut too_long = g.event(&refused[6], DAYS[0]);
    too_long.id = "bad-7".into();
    too_long.watch = 999_999;
    bad_jsonl.push(too_long.json().to_string());
    let mut de_row = g.event(&refused[7], DAYS[1]);
    de_row.id = "bad-8".into();
    de_row.country = "DE";
    bad_jsonl.push(de_row.json().to_string());
    for b in &bad_jsonl {
        jsonl_text.push_str(b);
        jsonl_text.push('\n');
    }
    let (catalog_file, csv_file, jsonl_file) = (
        input.join("catalog.csv"),
        input.join("events.csv"),
        input.join("events.jsonl"),
    );
    std::fs::write(&catalog_file, catalog).expect("write");
    std::fs::write(&csv_file, &csv_text).expect("write");
    std::fs::write(&jsonl_file, &jsonl_text).expect("write");

    let dashboard = tmp.path().join("no-dashboard");
    let server = Server::start(&runner, &dashboard);
    let addr = server.addr.clone();
    let mut responses = Vec::new();

    // 1. Files.
    let out = runner.run(&[
        "ingest",
        "--catalog",
        catalog_file.to_str().expect("utf8"),
        csv_file.to_str().expect("utf8"),
        jsonl_file.to_str().expect("utf8"),
    ]);
    assert!(out.contains("processed"), "{out}");
    let report = |name: &str| -> serde_json::Value {
        let path = data.join(format!("lake/reports/events/{name}.json"));
        serde_json::from_slice(&std::fs::read(&path).expect("report")).expect("json")
    };
    let (csv_report, jsonl_report) = (report("events.csv"), report("events.jsonl"));
    let count = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k}"));
    assert_eq!(
        (
            count(&csv_report, "accepted"),
            count(&csv_report, "duplicates"),
            count(&csv_report, "rejected")
        ),
        (csv_events.len() as u64, 1, 5),
        "{csv_report}"
    );
    assert_eq!(
        (
            count(&jsonl_report, "accepted"),
            count(&jsonl_report, "duplicates"),
            count(&jsonl_report, "rejected")
        ),
        (jsonl_events.len() as u64, 1, 3),
        "{jsonl_report}"
    );
    // Residency on files: the DE rows are quarantined with their reason, and never reach silver.
    for r in [&csv_report, &jsonl_report] {
        assert_eq!(
            r["rejected_by_reason"]["country:country_not_served"].as_u64(),
            Some(1),
            "{r}"
        );
    }
    let quarantined: Vec<serde_json::Value> = ["events.csv", "events.jsonl"]
        .iter()
        .flat_map(|name| {
            let path = data.join(format!("lake/quarantine/events/{name}.jsonl"));
            std::fs::read_to_string(&path)
                .expect("quarantine")
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(quarantined.len(), bad_csv.len() + bad_jsonl.len());
    let not_served: Vec<&str> = quarantined
        .iter()
        .filter(|q| {
            q["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .any(|e| e["field"] == "country" && e["reason"] == "country_not_served")
        })
        .map(|q| q["raw"].as_str().expect("raw"))
        .collect();
    assert_eq!(not_served.len(), 2, "{quarantined:?}");
    assert!(not_served.iter().any(|r| r.contains(&refused[1])));
    assert!(not_served.iter().any(|r| r.contains(&refused[7])));

    // 2. The API: a JSON array with one invalid event, NDJSON with a resend.
    let api_array = g.batch(&viewers, &always, 50);
    let mut array: Vec<serde_json::Value> = api_array.iter().map(Ev::json).collect();
    let mut invalid = g.event(&api_only[0], DAYS[0]);
    invalid.device = "fridge";
    array.insert(7, invalid.json());
    let (status, body) = request(
        &addr,
        "POST",
        "/v1/events",
        Some("application/json"),
        &serde_json::Value::Array(array).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        r["accepted"].as_u64(),
        Some(api_array.len() as u64),
        "{body}"
    );
    assert_eq!(r["rejected"][0]["index"].as_u64(), Some(7), "{body}");
    responses.push(body);
    let api_ndjson = g.batch(&viewers, &always, 40);
    let mut nd: String = api_ndjson
        .iter()
        .map(|e| format!("{}\n", e.json()))
        .collect();
    nd.push_str(&format!("{}\n", api_array[0].json()));
    let (status, body) = request(
        &addr,
        "POST",
        "/v1/events",
        Some("application/x-ndjson"),
        &nd,
    );
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(api_ndjson.len() as u64), Some(1)),
        "{body}"
    );
    responses.push(body);

    let sent: Vec<Ev> = [&csv_events, &jsonl_events, &api_array, &api_ndjson]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let unique_sent = sent.iter().map(|e| &e.id).collect::<HashSet<_>>().len() as u64;

    // 3. Residency on the API: a batch with a DE event is refused whole and stores nothing.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = EmbeddedBackend::open(&data).expect("open the data dir");
    let stores = backend.stores();
    let silver_count = || rt.block_on(backend.sqlite().silver_count()).expect("count");
    assert_eq!(silver_count(), unique_sent);
    let served_one = g.event(&api_only[1], DAYS[0]);
    let mut foreign = g.event(&api_only[2], DAYS[0]);
    foreign.country = "DE";
    let (status, body) = request(
        &addr,
        "POST",
        "/v1/events",
        Some("application/json"),
        &serde_json::json!([served_one.json(), foreign.json()]).to_string(),
    );
    assert_eq!(status, 403, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(r["error"]["code"], "country_not_served", "{body}");
    responses.push(body);
    assert_eq!(
        silver_count(),
        unique_sent,
        "a refused batch stores nothing"
    );

    // 4. Consolidate and compare with the recount.
    runner.run(&["consolidate"]);
    let nobody = HashSet::new();
    assert_eq!(answers(&mut runner), recounts(&sent, &nobody));
    let (status, body) = request(
        &addr,
        "GET",
        &format!(
            "/v1/cube?from={}&to={}&group_by=country&measures=plays,unique_viewers",
            DAYS[0], DAYS[1]
        ),
        None,
        "",
    );
    assert_eq!(status, 200, "{body}");
    let cube: serde_json::Value = serde_json::from_str(&body).expect("json");
    let expected = recount(&sent, &nobody, |e| vec![e.day(), e.country.to_owned()]);
    let got: Tally = cube["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let key = vec![
                r["day"].as_str().expect("day").to_owned(),
                r["country"].as_str().expect("country").to_owned(),
            ];
            let n = |k: &str| r[k].as_u64().expect("number");
            (key, (n("plays"), 0, n("unique_viewers")))
        })
        .collect();
    let expected: Tally = expected
        .into_iter()
        .map(|(k, (p, _, u))| (k, (p, 0, u)))
        .collect();
    assert_eq!(got, expected, "GET /v1/cube equals the recount");
    responses.push(body);

    // 5. Erase: one viewer through the command, one through the API; consolidate again.
    let theirs = |v: &str| {
        sent.iter()
            .filter(|e| e.viewer == v)
            .map(|e| &e.id)
            .collect::<HashSet<_>>()
            .len()
    };
    let out = runner.run(&["erase", &erased_cli]);
    assert!(
        out.contains(&format!("deleted {} silver events", theirs(&erased_cli))),
        "{out}"
    );
    let (status, body) = request(
        &addr,
        "DELETE",
        &format!("/v1/viewers/{erased_api}"),
        None,
        "",
    );
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        r["events_deleted"].as_u64(),
        Some(theirs(&erased_api) as u64),
        "{body}"
    );
    responses.push(body);
    runner.run(&["consolidate"]);
    let erased: HashSet<String> = [erased_cli.clone(), erased_api.clone()].into();
    assert_eq!(
        answers(&mut runner),
        recounts(&sent, &erased),
        "after the erasure the cube equals the recount without the erased viewers"
    );
    let kept = unique_sent - (theirs(&erased_cli) + theirs(&erased_api)) as u64;
    assert_eq!(silver_count(), kept);

    // The erased viewers are in no silver event, and in no sketch of any stored generation.
    let erased_p: Vec<[u8; 32]> = erased.iter().map(|v| pseudonym(v)).collect();
    let kept_p: BTreeSet<[u8; 32]> = viewers
        .iter()
        .filter(|v| !erased.contains(*v))
        .map(|v| pseudonym(v))
        .collect();
    rt.block_on(async {
        let mut in_silver = BTreeSet::new();
        let mut events = 0u64;
        for day in DAYS {
            let day: chrono::NaiveDate = day.parse().expect("day");
            let first = streamcube_model::query::first_hour(day);
            for h in first..first + 24 {
                for e in stores.silver.hour_events(h).await.expect("hour") {
                    events += 1;
                    in_silver.insert(*e.viewer.as_bytes());
                }
            }
        }
        assert_eq!(events, kept);
        for p in &erased_p {
            assert!(!in_silver.contains(p), "an erased viewer is still in silver");
            let found = stores
                .silver
                .viewer_events(&Pseudonym::from_bytes(*p))
                .await
                .expect("viewer index");
            assert!(found.is_empty(), "{found:?}");
        }
        assert_eq!(in_silver, kept_p, "silver holds exactly the other viewers");

        for day in DAYS {
            let day: chrono::NaiveDate = day.parse().expect("day");
            let manifest = stores
                .gold
                .manifest(day)
                .await
                .expect("manifest")
                .expect("published");
            let keep = manifest.referenced();
            let stale = stores
                .gold
                .stale_generations(day, &keep)
                .await
                .expect("generations");
            assert!(
                stale.is_empty(),
                "generations left besides the published ones (they may hold erased viewers): {stale:?}"
            );
            let mut apex_hashes = 0;
            for (level, generation) in keep {
                for (dims, cell) in stores
                    .gold
                    .cells(day, level, generation, None)
                    .await
                    .expect("cells")
                {
                    assert!(!cell.viewers.is_dense(), "every cell is in the exact range");
                    let bytes = cell.viewers.to_bytes();
                    for p in &erased_p {
                        assert!(
                            !contains_bytes(&bytes, &p[..8]),
                            "an erased viewer is in the sketch of {dims:?} ({level:?}) of {day}"
                        );
                    }
                    if level == streamcube_pipeline::ports::Level::Day
                        && dims == Dims::default()
                    {
                        // The check can see a viewer: the day's apex holds everyone else who
                        // played that day.
                        let players: BTreeSet<[u8; 32]> = sent
                            .iter()
                            .filter(|e| e.day() == day.to_string() && !erased.contains(&e.viewer))
                            .map(|e| pseudonym(&e.viewer))
                            .collect();
                        for p in &players {
                            assert!(contains_bytes(&bytes, &p[..8]));
                        }
                        apex_hashes = players.len();
                    }
                }
            }
            assert!(apex_hashes > 0, "no apex cell for {day}");
        }
    });
    drop(stores);
    drop(backend);

    // 6. Every file and every output: no raw viewer id of an accepted event anywhere.
    let accepted_ids: BTreeSet<String> = viewers.iter().cloned().collect();
    let file_refused_ids: BTreeSet<String> = refused.iter().cloned().collect();
    let nowhere_ids: BTreeSet<String> = api_only.iter().cloned().collect();
    let landed: BTreeMap<String, Vec<u8>> = [
        ("reference/catalog/catalog.csv", catalog.as_bytes().to_vec()),
        ("events/events.csv", csv_text.clone().into_bytes()),
        ("events/events.jsonl", jsonl_text.clone().into_bytes()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Once while the server still holds the database open (its WAL may hold recent pages)...
    let live = scan_data_dir(
        &data,
        &landed,
        &accepted_ids,
        &file_refused_ids,
        &nowhere_ids,
    );
    let (serve_out, serve_err) = server.stop();
    // ...and once after.
    let mut scanned = scan_data_dir(
        &data,
        &landed,
        &accepted_ids,
        &file_refused_ids,
        &nowhere_ids,
    );
    scanned.extend(live);
    for must in [
        "streamcube.db",
        "lake/quarantine/events/events.csv.jsonl",
        "lake/quarantine/events/events.jsonl.jsonl",
        "lake/reports/events/events.csv.json",
        "lake/reports/events/events.jsonl.json",
        "lake/exports/cube/day=2026-03-10/cube.csv",
        "lake/exports/cube/day=2026-03-11/cube.csv",
        "lake/gold/cube/day=2026-03-10/cube.parquet",
        "lake/gold/cube/day=2026-03-11/cube.parquet",
    ] {
        assert!(
            scanned.iter().any(|s| s == must),
            "{must} was not scanned: {scanned:?}"
        );
    }
    assert!(
        scanned.iter().any(|s| s.ends_with("-wal")),
        "the WAL was not scanned: {scanned:?}"
    );
    // The quarantine holds every refused row's id (so the scan can see ids) and no accepted one.
    let quarantine_text: String = ["events.csv", "events.jsonl"]
        .iter()
        .map(|n| {
            std::fs::read_to_string(data.join(format!("lake/quarantine/events/{n}.jsonl")))
                .expect("quarantine")
        })
        .collect();
    assert_eq!(
        found_in(&quarantine_text, &file_refused_ids).len(),
        refused.len()
    );

    runner.outputs.push(("serve (stdout)".into(), serve_out));
    runner.outputs.push(("serve (stderr)".into(), serve_err));
    for (i, body) in responses.iter().enumerate() {
        runner.outputs.push((format!("response {i}"), body.clone()));
    }
    let logged: usize = runner.outputs.iter().map(|(_, t)| t.len()).sum();
    assert!(
        runner
            .outputs
            .iter()
            .any(|(l, t)| l.contains("stderr") && t.contains("INFO")),
        "the logs were captured"
    );
    let every_id: Vec<String> = accepted_ids
        .iter()
        .chain(&file_refused_ids)
        .chain(&nowhere_ids)
        .cloned()
        .collect();
    for (label, text) in &runner.outputs {
        let leaked = found_in(text, &every_id);
        assert!(
            leaked.is_empty(),
            "raw viewer ids {leaked:?} in the output of {label}"
        );
    }
    eprintln!(
        "scanned {} files and {} bytes of output from {} captures",
        scanned.len(),
        logged,
        runner.outputs.len()
    );
}

/// After an erasure, the database file itself no longer holds the erased viewer's pseudonym nor
/// its sketch hash: deleted silver rows and replaced cell blocks are not left readable in the
/// file's free pages, nor in the copies page splits and merges leave in the live ones.
#[test]
fn erased_pseudonym_bytes_leave_the_database_file() {
    let mut g = Gen::new(rand::random(), DAYS);
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let mut runner = Runner {
        data: data.clone(),
        outputs: Vec::new(),
    };
    let viewers: Vec<String> = (0..6)
        .map(|_| format!("viewer-Zq7{}", token(&mut g.rng, 14)))
        .collect();
    // Enough rows, half of them the erased viewer's, for the silver pages and indexes to split
    // many times: rebalancing leaves copies of moved rows behind, which the scan must not find
    // (without the purge's rewrite of the file it finds them in most runs).
    let events = g.batch(&viewers[..2], &[&viewers[0]], 8000);
    let mut text = String::from(
        "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed\n",
    );
    for e in &events {
        text.push_str(&e.csv());
        text.push('\n');
    }
    let file = tmp.path().join("events.csv");
    std::fs::write(&file, text).expect("write");
    runner.run(&["ingest", file.to_str().expect("utf8")]);
    runner.run(&["consolidate"]);
    let out = runner.run(&["erase", &viewers[0]]);
    assert!(!out.contains("deleted 0 "), "{out}");
    // Every process has exited: the last connection checkpointed the WAL into the database.
    let gone = pseudonym(&viewers[0]);
    let kept = pseudonym(&viewers[1]);
    let db = std::fs::read(data.join("streamcube.db")).expect("db");
    assert!(contains_bytes(&db, &kept), "the scan can see a pseudonym");
    for f in files_under(&data) {
        if f.starts_with(data.join("bronze")) {
            continue;
        }
        let bytes = std::fs::read(&f).expect("read");
        assert!(
            !contains_bytes(&bytes, &gone) && !contains_bytes(&bytes, &gone[..8]),
            "the erased viewer's pseudonym or sketch hash is still in {}",
            f.display()
        );
    }
}
