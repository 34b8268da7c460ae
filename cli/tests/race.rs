//! Two consolidations of the same day racing, as two `streamcube` processes on one data directory.
//!
//! Each round ingests new events of the day (several hours, with resends of earlier events),
//! then starts two `streamcube consolidate` processes at once: both over the day's range
//! (`--from D --to D`), or one or both from the change feed (pending hours only, the others read
//! back from gold while the other process may be replacing them). After every round:
//! both processes succeeded; the day has one manifest whose version moved by exactly the number
//! of publishes the processes reported, whose generations are all readable and are the only ones
//! stored; the day's plays equal the unique events ingested; the hours add up to the day and
//! equal a recount; the day's export equals, line for line, the batch cube (`streamcube cube`)
//! of every file ingested so far. At the end, a fresh single-process consolidation of a copy of
//! the data directory answers the same.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use streamcube_embedded::EmbeddedBackend;

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const DAY: &str = "2026-04-07";
const HEADER: &str = "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed";

fn sc(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamcube"));
    c.arg("--data-dir")
        .arg(data)
        .env("STREAMCUBE_PSEUDONYM_KEY", KEY)
        .env("RUST_LOG", "info")
        .env_remove("STREAMCUBE_BACKEND")
        .env_remove("STREAMCUBE_SERVED_COUNTRIES")
        .env_remove("STREAMCUBE_PSEUDONYM_KEYRING")
        .env_remove("STREAMCUBE_CUBOIDS");
    c
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(c: &mut Command, what: &str) -> String {
    ok(&c.output().expect("run streamcube"), what)
}

#[derive(Clone)]
struct Row {
    id: String,
    hour: u32,
    viewer: String,
    line: String,
}

/// `plays,watch_seconds,completed,unique_viewers` per bucket, from a query CSV without groups.
fn by_bucket(csv_text: &str) -> BTreeMap<String, [u64; 4]> {
    let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
    rdr.records()
        .map(|r| {
            let r = r.expect("row");
            let n = |i: usize| r[i].parse::<u64>().expect("number");
            (r[0].to_owned(), [n(1), n(2), n(3), n(4)])
        })
        .collect()
}

fn query(data: &Path, granularity: &str) -> String {
    run(
        sc(data).args([
            "query",
            "--from",
            DAY,
            "--granularity",
            granularity,
            "--measures",
            "plays,watch_seconds,completed,unique_viewers",
            "--format",
            "csv",
        ]),
        "query",
    )
}

/// The generation a `consolidate` printed for the day, or `None` when it had nothing to do.
fn published_generation(stdout: &str) -> Option<u64> {
    if stdout.contains("nothing to consolidate") {
        return None;
    }
    let line = stdout
        .lines()
        .find(|l| l.contains(DAY))
        .unwrap_or_else(|| panic!("no row for {DAY}: {stdout}"));
    let generation = line
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|t| t.len() >= 12)
        .unwrap_or_else(|| panic!("no generation in {line}"));
    Some(generation.parse().expect("generation"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

#[test]
fn two_racing_consolidations_end_in_one_generation_with_every_event() {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let catalog = tmp.path().join("catalog.csv");
    std::fs::write(
        &catalog,
        "content_id,title,genre,release_year,duration_seconds\n\
         c1,One,drama,2019,5400\nc2,Two,comedy,2021,1800\nc3,Three,drama,2020,3600\n\
         c4,Four,documentary,2018,2700\nc5,Five,kids,2022,1500\n",
    )
    .expect("catalog");
    run(
        sc(&data).arg("ingest").arg("--catalog").arg(&catalog),
        "catalog",
    );

    let day: chrono::NaiveDate = DAY.parse().expect("day");
    let viewers: Vec<String> = (0..150).map(|i| format!("v{i:03}")).collect();
    let mut sent: Vec<Row> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    // Which consolidations race in each round: `true` is `--from D --to D`, `false` the
    // change feed's pending hours.
    let rounds = [
        (true, true),
        (false, true),
        (false, false),
        (true, true),
        (true, false),
        (false, true),
    ];
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut last_version = 0;
    let mut conflicts = 0;
    for (round, (a_range, b_range)) in rounds.into_iter().enumerate() {
        // New events in a few hours of the day, and resends of earlier ones.
        let hours: Vec<u32> = (0..6).map(|_| rng.random_range(0..24)).collect();
        let mut lines = vec![HEADER.to_owned()];
        for i in 0..250 {
            let hour = hours[rng.random_range(0..hours.len())];
            let viewer = viewers[rng.random_range(0..viewers.len())].clone();
            let id = format!("r{round}-{i:03}");
            let line = format!(
                "{id},{DAY}T{hour:02}:{:02}:{:02}Z,{viewer},c{},{},{},{},{},,{}",
                rng.random_range(0..60),
                rng.random_range(0..60),
                rng.random_range(1..=6),
                ["tv", "mobile", "web"][rng.random_range(0..3)],
                ["BR", "AR", "PT"][rng.random_range(0..3)],
                rng.random_range(0..5000),
                rng.random_range(300..8000),
                rng.random_bool(0.4)
            );
            sent.push(Row {
                id,
                hour,
                viewer,
                line: line.clone(),
            });
            lines.push(line);
        }
        for _ in 0..15.min(sent.len() - 250) {
            let again = &sent[rng.random_range(0..sent.len() - 250)];
            lines.push(again.line.clone());
        }
        let file = tmp.path().join(format!("round-{round}.csv"));
        std::fs::write(&file, lines.join("\n") + "\n").expect("write");
        run(sc(&data).arg("ingest").arg(&file), "ingest");
        files.push(file);

        // The race: two processes started back to back on the same data directory.
        let consolidate = |range: bool| {
            let mut c = sc(&data);
            c.arg("consolidate");
            if range {
                c.args(["--from", DAY, "--to", DAY]);
            }
            c.spawn_output()
        };
        let (a, b) = (consolidate(a_range), consolidate(b_range));
        let (a, b) = (a.join().expect("thread"), b.join().expect("thread"));
        let outs = [ok(&a, "consolidate A"), ok(&b, "consolidate B")];
        conflicts += [&a, &b]
            .iter()
            .filter(|o| String::from_utf8_lossy(&o.stderr).contains("lost the publish race"))
            .count();
        let generations: Vec<u64> = outs
            .iter()
            .filter_map(|o| published_generation(o))
            .collect();
        assert!(
            !generations.is_empty(),
            "round {round}: nobody published: {outs:?}"
        );

        // One manifest, moved once per publish, naming only readable generations, and nothing
        // else stored for the day.
        let backend = EmbeddedBackend::open(&data).expect("open");
        let gold = backend.stores().gold;
        let manifest = rt
            .block_on(gold.manifest(day))
            .expect("manifest")
            .expect("published");
        assert_eq!(
            manifest.version,
            last_version + generations.len() as u64,
            "round {round}: every publish moved the manifest once"
        );
        last_version = manifest.version;
        assert!(
            generations.contains(&manifest.day_generation),
            "round {round}: the published generation is one a process reported"
        );
        let unique: HashSet<&str> = sent.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(manifest.events, unique.len() as u64, "round {round}");
        let event_hours: BTreeSet<u8> = sent.iter().map(|r| r.hour as u8).collect();
        assert_eq!(
            manifest.hours.keys().copied().collect::<BTreeSet<u8>>(),
            event_hours
        );
        let keep = manifest.referenced();
        for (level, generation) in &keep {
            let cells = rt
                .block_on(gold.cells(day, *level, *generation, None))
                .expect("cells");
            assert!(
                !cells.is_empty(),
                "round {round}: {level:?} generation {generation} is empty"
            );
        }
        let stale = rt
            .block_on(gold.stale_generations(day, &keep))
            .expect("generations");
        assert!(
            stale.is_empty(),
            "round {round}: generations left besides the published ones: {stale:?}"
        );
        drop(gold);
        drop(backend);

        // Every event once; the hours add up to the day and equal the recount.
        let day_cells = by_bucket(&query(&data, "day"));
        assert_eq!(day_cells.len(), 1);
        let day_measures = day_cells[DAY];
        assert_eq!(day_measures[0], unique.len() as u64, "round {round}");
        let hour_cells = by_bucket(&query(&data, "hour"));
        let summed = hour_cells.values().fold([0u64; 3], |mut s, c| {
            for i in 0..3 {
                s[i] += c[i];
            }
            s
        });
        assert_eq!(summed, [day_measures[0], day_measures[1], day_measures[2]]);
        let mut recount: BTreeMap<String, (u64, BTreeSet<&str>)> = BTreeMap::new();
        let mut seen = HashSet::new();
        for r in &sent {
            if seen.insert(r.id.as_str()) {
                let e = recount
                    .entry(format!("{DAY}T{:02}:00:00Z", r.hour))
                    .or_default();
                e.0 += 1;
                e.1.insert(r.viewer.as_str());
            }
        }
        let got: BTreeMap<String, (u64, u64)> = hour_cells
            .iter()
            .map(|(h, c)| (h.clone(), (c[0], c[3])))
            .collect();
        let want: BTreeMap<String, (u64, u64)> = recount
            .iter()
            .map(|(h, (p, v))| (h.clone(), (*p, v.len() as u64)))
            .collect();
        assert_eq!(got, want, "round {round}: hours equal the recount");
        let all_viewers: BTreeSet<&str> = sent.iter().map(|r| r.viewer.as_str()).collect();
        assert_eq!(day_measures[3], all_viewers.len() as u64);

        // The day's export is the batch cube of every file ingested so far.
        let mut batch = sc(&data);
        batch
            .args(["cube", "--out", "-", "--catalog"])
            .arg(&catalog);
        batch.arg("--events").args(&files);
        let batch = run(&mut batch, "cube");
        let export =
            std::fs::read_to_string(data.join(format!("lake/exports/cube/day={DAY}/cube.csv")))
                .expect("export");
        let mut exported: Vec<&str> = export.lines().skip(1).collect();
        let mut expected: Vec<&str> = batch.lines().filter(|l| l.starts_with(DAY)).collect();
        exported.sort_unstable();
        expected.sort_unstable();
        assert!(!expected.is_empty());
        assert_eq!(
            exported, expected,
            "round {round}: the export is the batch cube"
        );
    }
    eprintln!(
        "{} rounds, {conflicts} lost publish races retried",
        rounds.len()
    );

    // A fresh single-process consolidation of a copy answers the same.
    let copy = tmp.path().join("copy");
    copy_dir(&data, &copy);
    run(
        sc(&copy).args(["consolidate", "--from", DAY, "--to", DAY]),
        "consolidate the copy",
    );
    for granularity in ["day", "hour"] {
        let args = vec![
            "query",
            "--from",
            DAY,
            "--granularity",
            granularity,
            "--group-by",
            "country,device,genre",
            "--format",
            "csv",
        ];
        let raced = run(sc(&data).args(&args), "query");
        let fresh = run(sc(&copy).args(&args), "query the copy");
        assert_eq!(raced, fresh, "{granularity}");
        assert!(raced.lines().count() > 10);
    }
}

/// Runs a command in a thread, so two can run at once.
trait SpawnOutput {
    fn spawn_output(self) -> std::thread::JoinHandle<Output>;
}

impl SpawnOutput for Command {
    fn spawn_output(mut self) -> std::thread::JoinHandle<Output> {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn streamcube");
        std::thread::spawn(move || child.wait_with_output().expect("wait"))
    }
}
