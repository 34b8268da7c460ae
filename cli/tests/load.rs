//! `streamcube serve` under concurrent load, with resent events on purpose: nothing is lost and
//! nothing is counted twice. The server's answers add up (`accepted` is the unique events,
//! `accepted + duplicates` the events sent), silver holds each unique event once, and after a
//! consolidation the cube's totals equal the sums over the unique events. No timing is asserted:
//! `bench/load.sh` measures the rate on a release build.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use streamcube_load::{
    BodyFormat, IdStyle, RunConfig, Summary, Totals, Workload, WorkloadConfig, run,
    workload::Expected,
};
use streamcube_model::event::Country;

mod common;

use common::{Server, start_serve};

const KEY: &str = "6c6f61642d746573742d6b65792d6f662d33322d62797465732d6c6f6e672121";

fn streamcube(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamcube"));
    c.env("STREAMCUBE_DATA_DIR", data)
        .env("STREAMCUBE_PSEUDONYM_KEY", KEY)
        .env_remove("STREAMCUBE_BACKEND")
        .env_remove("STREAMCUBE_SERVED_COUNTRIES")
        .env_remove("STREAMCUBE_CUBOIDS");
    c
}

/// Starts `streamcube serve` on a free port and returns it with its address.
fn serve(data: &Path) -> (Server, SocketAddr) {
    let mut command = streamcube(data);
    command
        .args(["serve", "--addr", "127.0.0.1:0", "--dashboard"])
        .arg(data.join("no-dashboard"));
    let (server, addr) = start_serve(command);
    let addr = addr
        .parse()
        .unwrap_or_else(|_| panic!("not an address: {addr}"));
    (server, addr)
}

fn send(rt: &tokio::runtime::Runtime, addr: SocketAddr, w: &Arc<Workload>) -> Summary {
    let cfg = RunConfig {
        addr,
        connections: 4,
        duration: None,
        request_timeout: Duration::from_secs(120),
    };
    let t = Instant::now();
    let result = rt
        .block_on(run(cfg.clone(), Arc::clone(w)))
        .expect("load run");
    Summary::new(w, &cfg, 500, t.elapsed(), &result)
}

/// The cube's total row for `day`, by measure.
fn cube_totals(data: &Path, day: &str) -> Totals {
    let out = streamcube(data)
        .args(["query", "--from", day, "--to", day])
        .args(["--granularity", "total", "--format", "json"])
        .output()
        .expect("streamcube query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json answer");
    let columns = answer["columns"].as_array().expect("columns");
    let rows = answer["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{answer}");
    let row: serde_json::Map<String, serde_json::Value> = columns
        .iter()
        .map(|c| c.as_str().expect("column name").to_owned())
        .zip(rows[0].as_array().expect("row").iter().cloned())
        .collect();
    serde_json::from_value(serde_json::Value::Object(row)).expect("totals")
}

#[test]
fn no_event_lost_or_counted_twice_under_concurrent_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let (server, addr) = serve(&data);
    let day = NaiveDate::from_ymd_opt(2025, 6, 1).expect("date");
    let cfg = WorkloadConfig {
        events: 20_000,
        batch_size: 500,
        duplicate_rate: 0.05,
        in_batch_share: 0.25,
        day,
        countries: ["BR", "US", "MX", "DE", "JP"]
            .iter()
            .map(|c| Country::parse(c).expect("country"))
            .collect(),
        viewers: 5_000,
        titles: 200,
        seed: 11,
        id_prefix: "noloss".into(),
        ids: IdStyle::Uuid,
        format: BodyFormat::Ndjson,
    };
    let workload = Arc::new(Workload::generate(&cfg).expect("workload"));
    let expected: Expected = workload.expected(workload.batches.len());
    assert_eq!(expected.events_sent, 20_000);
    assert!(expected.duplicates_sent > 500, "{expected:?}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let first = send(&rt, addr, &workload);
    assert!(first.ok, "{}", first.text());
    assert_eq!(first.sent, expected);
    assert_eq!(first.accepted, expected.unique_events);
    assert_eq!(first.duplicates, expected.duplicates_sent);
    assert_eq!(first.statuses.get(&200), Some(&40));

    // Everything again, as JSON arrays this time: every event is now a duplicate.
    let again = Arc::new(
        Workload::generate(&WorkloadConfig {
            format: BodyFormat::Json,
            ..cfg.clone()
        })
        .expect("workload"),
    );
    let second = send(&rt, addr, &again);
    assert_eq!(
        (second.accepted, second.duplicates, second.non_200),
        (0, 20_000, 0),
        "{}",
        second.text()
    );
    drop(server);

    let backend = streamcube_embedded::EmbeddedBackend::open(&data).expect("open");
    let silver = rt
        .block_on(backend.sqlite().silver_count())
        .expect("silver count");
    assert_eq!(silver, expected.unique_events);
    drop(backend);

    let out = streamcube(&data)
        .arg("consolidate")
        .output()
        .expect("streamcube consolidate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let totals = cube_totals(&data, "2025-06-01");
    assert_eq!(totals, expected.totals);
    assert_eq!(totals.plays, expected.unique_events);
}
