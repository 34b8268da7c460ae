//! The fuzz driver of this crate's fuzz tests: the checked-in corpus first, then generated
//! cases in batches, within the case count (`PROPTEST_CASES`) and time budget (`FUZZ_SECONDS`).

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseResult, TestRunner};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The checked-in seed inputs of a target, in name order.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo_root().join("fuzz/corpus").join(target);
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".txt") || !e.path().is_file() {
                continue; // proptest-regressions.txt and notes
            }
            out.push((name, std::fs::read(e.path()).expect("corpus file")));
        }
    }
    out.sort();
    out
}

/// Runs `test` on `strategy` for `PROPTEST_CASES` cases (default `default_cases`) or until
/// `FUZZ_SECONDS` have passed, persisting failures under `fuzz/corpus/<target>/`, and prints the
/// executions (`scripts/fuzz.sh` collects these lines).
pub fn fuzz<S: Strategy>(
    target: &str,
    property: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) {
    let total = env_num::<u32>("PROPTEST_CASES").unwrap_or(default_cases);
    let budget = env_num::<f64>("FUZZ_SECONDS");
    let regressions = repo_root()
        .join("fuzz/corpus")
        .join(target)
        .join(format!("{property}.proptest-regressions.txt"));
    let regressions: &'static str = Box::leak(regressions.display().to_string().into_boxed_str());
    let start = Instant::now();
    let execs = std::sync::atomic::AtomicU64::new(0);
    let test = |v: S::Value| {
        execs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        test(v)
    };
    let mut done = 0u32;
    while done < total {
        if budget.is_some_and(|b| start.elapsed().as_secs_f64() > b) {
            break;
        }
        let batch = (total - done).min(64);
        let config = Config {
            cases: batch,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
            max_shrink_iters: 4096,
            ..Config::default()
        };
        if let Err(e) = TestRunner::new(config).run(&strategy, test) {
            panic!("{target}/{property}: {e}");
        }
        done += batch;
    }
    println!(
        "fuzz-execs target={target} property={property} cases={done} execs={} seconds={:.2}",
        execs.into_inner(),
        start.elapsed().as_secs_f64()
    );
}
