//! `--backend aws` against the local AWS emulator (`scripts/test.sh` starts it; the tests run
//! with `--all-features`): a backfill with the command, then the same answers as the embedded
//! backend gives for the same files.
#![cfg(feature = "aws")]

use std::path::Path;

use assert_cmd::Command;
use streamcube_aws::AwsNames;

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn require(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: this test needs the AWS emulator; run `scripts/test.sh`")
    })
}

fn run(c: &mut Command) -> String {
    let out = c.output().expect("run");
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn sc(envs: &[(&str, String)], data: &Path) -> Command {
    let mut c = Command::cargo_bin("streamcube").expect("binary");
    c.arg("--data-dir")
        .arg(data)
        .env("STREAMCUBE_PSEUDONYM_KEY", KEY);
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_on_aws_answers_like_the_embedded_backend() {
    require("AWS_ENDPOINT_URL");
    let run_id = format!("{:08x}", rand_id());
    let names = AwsNames {
        silver_table: format!("silver-cli-{run_id}"),
        cube_table: format!("cube-cli-{run_id}"),
        catalog_table: format!("catalog-cli-{run_id}"),
        bronze_bucket: require("STREAMCUBE_TEST_BRONZE_BUCKET"),
        lake_bucket: require("STREAMCUBE_TEST_LAKE_BUCKET"),
        glue_database: format!("cli_{run_id}"),
        glue_table: "cube".into(),
        retention_days: None,
    };
    let env = vec![
        ("STREAMCUBE_SILVER_TABLE", names.silver_table.clone()),
        ("STREAMCUBE_CUBE_TABLE", names.cube_table.clone()),
        ("STREAMCUBE_CATALOG_TABLE", names.catalog_table.clone()),
        ("STREAMCUBE_BRONZE_BUCKET", names.bronze_bucket.clone()),
        ("STREAMCUBE_LAKE_BUCKET", names.lake_bucket.clone()),
        ("STREAMCUBE_GLUE_DATABASE", names.glue_database.clone()),
        ("STREAMCUBE_GLUE_TABLE", names.glue_table.clone()),
    ];
    let tmp = tempfile::tempdir().expect("tmp");
    // The tables come from the command itself, twice: the second run finds them and succeeds.
    for _ in 0..2 {
        let out = run(sc(&env, tmp.path()).args(["--backend", "aws", "provision"]));
        assert!(out.contains(&names.silver_table), "{out}");
    }
    let files = tmp.path().join("in");
    run(sc(&[], tmp.path()).args([
        "generate",
        "--out-dir",
        files.to_str().expect("path"),
        "--events",
        "600",
        "--days",
        "1",
        "--start",
        "2026-10-20",
        "--bad-rows",
        "5",
    ]));
    let answers = |backend: &str, data: &Path| {
        let mut envs = env.clone();
        envs.push(("STREAMCUBE_BACKEND", backend.to_owned()));
        let ingest = run(sc(&envs, data)
            .arg("ingest")
            .arg("--catalog")
            .arg(files.join("catalog.csv"))
            .arg(files.join("events.csv")));
        assert!(ingest.contains("rejected"), "{ingest}");
        run(sc(&envs, data).args(["consolidate", "--from", "2026-10-20", "--to", "2026-10-20"]));
        run(sc(&envs, data).args([
            "query",
            "--from",
            "2026-10-20",
            "--group-by",
            "country,device",
            "--measures",
            "plays,watch_seconds,unique_viewers",
            "--format",
            "csv",
        ]))
    };
    let on_aws = answers("aws", &tmp.path().join("unused"));
    let local = answers("embedded", &tmp.path().join("local"));
    assert!(on_aws.lines().count() > 5, "{on_aws}");
    assert_eq!(on_aws, local);

    // Without a range, the hours the silver stream marked: none here, since no stream is
    // wired to the emulator (on AWS, cube-consolidator marks them from the stream).
    let mut envs = env.clone();
    envs.push(("STREAMCUBE_BACKEND", "aws".to_owned()));
    let out = sc(&envs, tmp.path())
        .arg("consolidate")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to consolidate"));
}

fn rand_id() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}
