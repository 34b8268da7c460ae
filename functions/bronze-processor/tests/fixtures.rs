//! The handler on the `events/` fixtures and on generated files paused many times, on the
//! embedded backend.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bronze_processor::{
    BronzeError, Budget, Continuation, ContinuationError, ContinuePayload, Handoff, InProcess,
    Input, Status, Summary, process,
};
use object_store::ObjectStoreExt;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::event::SilverEvent;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_pipeline::bronze::{Checkpoint, ObjectKind, ObjectReport, Progress};
use streamcube_pipeline::{Pipeline, PipelineConfig};

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn input(v: serde_json::Value) -> Input {
    serde_json::from_value(v).expect("an S3 event or a continuation")
}

fn pipeline(dir: &Path) -> Pipeline {
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    let backend = EmbeddedBackend::open(dir).expect("open");
    Pipeline::new(
        backend.stores(),
        PipelineConfig::new(Pseudonymizer::new(&key)),
    )
}

/// Lands the sample objects the S3 fixtures name (`tests/objects/`) in the bronze directory.
fn land_samples(dir: &Path) {
    fn copy(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).expect("dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                std::fs::create_dir_all(&target).expect("mkdir");
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/objects");
    copy(&from, &dir.join("bronze"));
}

async fn lake_text(p: &Pipeline, path: &str) -> String {
    let got = p
        .stores
        .lake
        .get(&object_store::path::Path::from(path))
        .await
        .expect("object");
    String::from_utf8(got.bytes().await.expect("bytes").to_vec()).expect("utf-8")
}

fn counts(o: &bronze_processor::ObjectResult) -> (u64, u64, u64, u64) {
    let c = &o.report.as_ref().expect("report").counts;
    (c.rows, c.accepted, c.duplicates, c.rejected)
}

#[tokio::test]
async fn processes_every_record_and_a_redelivery_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    land_samples(tmp.path());
    let p = pipeline(tmp.path());

    // Through the Lambda entry point (a context without a deadline: no pauses).
    let catalog = bronze_processor::handler(
        &p,
        &InProcess,
        lambda_runtime::LambdaEvent::new(
            input(fixture("s3-put-catalog.json")),
            lambda_runtime::Context::default(),
        ),
    )
    .await
    .expect("catalog");
    let report = catalog.objects[0].report.as_ref().expect("report");
    assert_eq!(
        (report.kind, report.counts.accepted),
        (ObjectKind::Catalog, 2)
    );
    assert_eq!(
        p.stores
            .catalog
            .load()
            .await
            .expect("catalog")
            .genre_of("c000003"),
        "drama"
    );

    let first = process(
        &p,
        &InProcess,
        input(fixture("s3-put-events-csv.json")),
        Budget::Unlimited,
    )
    .await
    .expect("events");
    assert_eq!(first.objects.len(), 2);
    // The URL-encoded key (`batch%3D1+part.csv`) was decoded.
    assert_eq!(first.objects[0].key, "events/2026/11/01/batch=1 part.csv");
    assert_eq!(
        first.objects[0].version.as_deref(),
        Some("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")
    );
    assert_eq!(first.objects[0].status, Status::Processed);
    assert_eq!(counts(&first.objects[0]), (5, 3, 1, 1));
    assert_eq!(counts(&first.objects[1]), (3, 2, 0, 1));
    let quarantine = lake_text(&p, "quarantine/events/2026/11/01/batch=1 part.csv.jsonl").await;
    assert_eq!(quarantine.lines().count(), 1);
    assert!(
        quarantine.contains("\"reason\":\"unknown_device\""),
        "{quarantine}"
    );

    // The same notification again: the ledger knows both versions; nothing changes.
    let before = silver(
        &p,
        &[hour("2026-11-01T05:00:00Z"), hour("2026-11-01T08:00:00Z")],
    )
    .await;
    let again = process(
        &p,
        &InProcess,
        input(fixture("s3-put-events-csv.json")),
        Budget::Unlimited,
    )
    .await
    .expect("redelivery");
    assert!(
        again
            .objects
            .iter()
            .all(|o| o.status == Status::AlreadyProcessed)
    );
    assert_eq!(
        again.objects[0].report, first.objects[0].report,
        "the stored report is returned"
    );
    let after = silver(
        &p,
        &[hour("2026-11-01T05:00:00Z"), hour("2026-11-01T08:00:00Z")],
    )
    .await;
    assert_eq!(before, after);
    assert_eq!(before.len(), 5);
}

#[tokio::test]
async fn one_failing_record_does_not_lose_the_others() {
    let tmp = tempfile::tempdir().expect("tmp");
    land_samples(tmp.path());
    let p = pipeline(tmp.path());
    let mut event = fixture("s3-put-events-csv.json");
    // A third record for an object that is not there, and the second without a version id
    // (an unversioned bucket: the eTag is the version).
    let mut missing = event["Records"][0].clone();
    missing["s3"]["object"]["key"] = "events/2026/11/01/gone.csv".into();
    event["Records"]
        .as_array_mut()
        .expect("records")
        .insert(0, missing);
    event["Records"][2]["s3"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("versionId");
    let mut deleted = event["Records"][1].clone();
    deleted["eventName"] = "ObjectRemoved:Delete".into();
    event["Records"]
        .as_array_mut()
        .expect("records")
        .push(deleted);

    let err = process(&p, &InProcess, input(event), Budget::Unlimited)
        .await
        .expect_err("a record failed");
    let BronzeError::Failed(summary) = &err;
    let statuses: Vec<_> = summary.objects.iter().map(|o| o.status.clone()).collect();
    assert_eq!(
        statuses,
        [
            Status::Failed,
            Status::Processed,
            Status::Processed,
            Status::Ignored
        ]
    );
    assert_eq!(
        summary.objects[2].version.as_deref(),
        Some("88214851f4e105c6c60c65b5268a1076")
    );
    let message = err.to_string();
    assert!(
        message.starts_with("1 of 4 objects failed: events/2026/11/01/gone.csv: "),
        "{message}"
    );
    // The error Lambda records (and the on-failure destination keeps).
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "ObjectsFailed");
    assert!(
        diagnostic.error_message.contains("not found"),
        "{diagnostic:?}"
    );
}

/// A continuation that records the checkpoints and hands them to "another invocation", as the
/// self-invocation does on AWS.
#[derive(Default)]
struct Recorder(Mutex<Vec<Checkpoint>>);

impl Continuation for Recorder {
    async fn hand_off(&self, checkpoint: &Checkpoint) -> Result<Handoff, ContinuationError> {
        self.0.lock().expect("lock").push(checkpoint.clone());
        Ok(Handoff::Sent)
    }
}

fn hour(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("timestamp")
        .timestamp_millis()
        .div_euclid(3_600_000)
}

async fn silver(p: &Pipeline, hours: &[i64]) -> Vec<SilverEvent> {
    let mut all = Vec::new();
    for h in hours {
        all.extend(p.stores.silver.hour_events(*h).await.expect("hour"));
    }
    all.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    all
}

/// A generated file (duplicates and broken rows included), written to bronze.
fn generated_file(dir: &Path, key: &str, events: u64, bad_rows: u32) -> Vec<i64> {
    let cfg = streamcube_datagen::GenConfig {
        events,
        days: 1,
        viewers: 300,
        titles: 40,
        genres: 4,
        duplicate_rate: 0.03,
        bad_rows,
        seed: 7,
        ..streamcube_datagen::GenConfig::default()
    };
    let path = dir.join("bronze").join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let file = std::fs::File::create(&path).expect("create");
    streamcube_datagen::write_events(&cfg, file, |_| {}).expect("generate");
    let first = hour(&format!("{}T00:00:00Z", cfg.start));
    (first..first + 24).collect()
}

async fn quarantine_lines(p: &Pipeline, report: &ObjectReport) -> Vec<String> {
    let mut lines = Vec::new();
    for q in report.quarantine_objects() {
        lines.extend(lake_text(p, q).await.lines().map(str::to_owned));
    }
    lines
}

#[tokio::test]
async fn a_file_in_many_parts_equals_a_single_run() {
    let key = "events/2026/11/01/big.csv";
    let (single_dir, parts_dir, handed_dir) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let hours = generated_file(single_dir.path(), key, 3_000, 40);
    generated_file(parts_dir.path(), key, 3_000, 40);
    generated_file(handed_dir.path(), key, 3_000, 40);

    // One run, never paused.
    let single = pipeline(single_dir.path());
    let reference = single
        .process_object(key, Some("v1"))
        .await
        .expect("single run")
        .report;
    assert_eq!(reference.counts.rows, 3_040);
    assert!(reference.counts.rejected >= 40 && reference.counts.duplicates > 0);
    assert!(reference.counts.is_balanced());

    // The pipeline paused every 97 rows, resumed in the same process.
    let parted = pipeline(parts_dir.path());
    let every = |n: u64| Budget::RowsPerPart(n).stop();
    let mut progress = parted
        .process_object_until(key, Some("v1"), every(97))
        .await
        .expect("first part");
    let mut pauses = 0;
    let outcome = loop {
        match progress {
            Progress::Done(o) => break o,
            Progress::Paused(cp) => {
                pauses += 1;
                assert_eq!(cp.counts.rows, 97 * u64::from(cp.parts), "{cp:?}");
                assert!(cp.counts.is_balanced());
                // Nothing is final before the last part.
                assert!(
                    parted
                        .stores
                        .ledger
                        .processed(key, "v1")
                        .await
                        .expect("ledger")
                        .is_none()
                );
                // A checkpoint survives JSON (the self-invocation payload).
                let cp: Checkpoint =
                    serde_json::from_str(&serde_json::to_string(&cp).expect("json")).expect("back");
                progress = parted
                    .resume_object(cp, every(97))
                    .await
                    .expect("next part");
            }
        }
    };
    assert_eq!(pauses, 3_040 / 97);
    let report = outcome.report;
    assert_eq!(report.counts, reference.counts);
    assert!(
        report.quarantine_parts.len() > 1,
        "rejected rows spread over parts"
    );
    assert_eq!(
        quarantine_lines(&parted, &report).await,
        quarantine_lines(&single, &reference).await
    );
    assert_eq!(silver(&parted, &hours).await, silver(&single, &hours).await);
    assert_eq!(
        lake_text(&parted, "reports/events/2026/11/01/big.csv.json").await,
        serde_json::to_string_pretty(&report).expect("json")
    );

    // The handler, handing each part to "another invocation" with the continuation payload.
    let handed = pipeline(handed_dir.path());
    let recorder = Recorder::default();
    let mut event = fixture("s3-put-events-csv.json");
    event["Records"]
        .as_array_mut()
        .expect("records")
        .truncate(1);
    event["Records"][0]["s3"]["object"]["key"] = "events/2026/11/01/big.csv".into();
    event["Records"][0]["s3"]["object"]["versionId"] = "v1".into();
    let mut next = input(event);
    let mut invocations = 0;
    let last: Summary = loop {
        invocations += 1;
        let summary = process(&handed, &recorder, next, Budget::RowsPerPart(500))
            .await
            .expect("invocation");
        match summary.objects[0].status {
            Status::Continued => {
                let cp = recorder.0.lock().expect("lock").pop().expect("checkpoint");
                assert_eq!(summary.objects[0].checkpoint.as_ref(), Some(&cp));
                let payload = serde_json::to_value(ContinuePayload {
                    streamcube_continue: cp,
                })
                .expect("payload");
                assert!(payload.get("streamcube_continue").is_some());
                next = input(payload);
            }
            _ => break summary,
        }
    };
    assert_eq!(invocations, 3_040_usize.div_ceil(500));
    assert_eq!(last.objects[0].status, Status::Processed);
    let handed_report = last.objects[0].report.clone().expect("report");
    assert_eq!(handed_report.counts, reference.counts);
    assert_eq!(
        quarantine_lines(&handed, &handed_report).await,
        quarantine_lines(&single, &reference).await
    );
    assert_eq!(silver(&handed, &hours).await, silver(&single, &hours).await);

    // A duplicate continuation delivered after the end changes nothing.
    let stale = Input::Continue(ContinuePayload {
        streamcube_continue: Checkpoint {
            key: key.to_owned(),
            version: "v1".to_owned(),
            line: 2,
            counts: streamcube_model::report::FileReport {
                rows: 1,
                accepted: 1,
                ..Default::default()
            },
            parts: 1,
            quarantine: Vec::new(),
            e_tag: None,
        },
    });
    let replay = process(&handed, &recorder, stale, Budget::RowsPerPart(500))
        .await
        .expect("replay");
    assert_eq!(replay.objects[0].status, Status::AlreadyProcessed);
    assert_eq!(replay.objects[0].report.as_ref(), Some(&handed_report));
}

#[tokio::test]
async fn the_embedded_backend_continues_in_process() {
    let key = "events/2026/11/01/big.csv";
    let tmp = tempfile::tempdir().expect("tmp");
    generated_file(tmp.path(), key, 1_000, 5);
    let p = pipeline(tmp.path());
    let mut event = fixture("s3-put-events-csv.json");
    event["Records"]
        .as_array_mut()
        .expect("records")
        .truncate(1);
    event["Records"][0]["s3"]["object"]["key"] = key.into();
    let summary = process(&p, &InProcess, input(event), Budget::RowsPerPart(300))
        .await
        .expect("processed");
    assert_eq!(summary.objects[0].status, Status::Processed);
    assert_eq!(summary.objects[0].parts, 4);
    assert_eq!(counts(&summary.objects[0]).0, 1_005);
}

#[tokio::test]
async fn an_object_overwritten_while_paused_is_not_mixed() {
    let key = "events/2026/11/01/big.csv";
    let tmp = tempfile::tempdir().expect("tmp");
    generated_file(tmp.path(), key, 500, 0);
    let p = pipeline(tmp.path());
    let Progress::Paused(cp) = p
        .process_object_until(key, Some("v1"), Budget::RowsPerPart(100).stop())
        .await
        .expect("part")
    else {
        panic!("expected a pause");
    };
    assert!(cp.e_tag.is_some());
    // A new version lands at the same key (its ETag changes).
    generated_file(tmp.path(), key, 600, 0);
    let err = p
        .resume_object(cp, Budget::Unlimited.stop())
        .await
        .expect_err("changed");
    assert!(
        matches!(
            err,
            streamcube_pipeline::PipelineError::ObjectChanged { .. }
        ),
        "{err}"
    );
}

/// How many rows per second the embedded path processes (debug build; run with
/// `cargo test -p bronze-processor --test fixtures -- --ignored --nocapture throughput`).
#[tokio::test]
#[ignore = "a measurement, not a check; run it on purpose"]
async fn throughput() {
    let key = "events/2026/11/01/throughput.csv";
    let tmp = tempfile::tempdir().expect("tmp");
    let rows = 200_000;
    generated_file(tmp.path(), key, rows, 0);
    let p = pipeline(tmp.path());
    let started = std::time::Instant::now();
    let report = p
        .process_object(key, Some("v1"))
        .await
        .expect("processed")
        .report;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.counts.rows, rows);
    // Skipping: the last part of a file paused just before its end re-reads everything.
    let skip_started = std::time::Instant::now();
    let Progress::Paused(cp) = p
        .process_object_until(
            "events/2026/11/01/throughput.csv",
            Some("v2"),
            Budget::RowsPerPart(rows - 1).stop(),
        )
        .await
        .expect("part")
    else {
        panic!("expected a pause");
    };
    let first_part = skip_started.elapsed().as_secs_f64();
    let resume_started = std::time::Instant::now();
    p.resume_object(cp, Budget::Unlimited.stop())
        .await
        .expect("last part");
    let skip_secs = resume_started.elapsed().as_secs_f64();
    println!(
        "processed {rows} rows in {secs:.2} s: {:.0} rows/s; a rerun over stored rows {:.0} rows/s; skipping on resume {:.0} rows/s",
        rows as f64 / secs,
        rows as f64 / first_part,
        rows as f64 / skip_secs
    );
}

/// Processes a version of `key` in parts of `n` rows, resuming in this process.
async fn in_parts(p: &Pipeline, key: &str, version: &str, n: u64) -> ObjectReport {
    let mut progress = p
        .process_object_until(key, Some(version), Budget::RowsPerPart(n).stop())
        .await
        .expect("first part");
    loop {
        match progress {
            Progress::Done(o) => return o.report,
            Progress::Paused(cp) => {
                progress = p
                    .resume_object(cp, Budget::RowsPerPart(n).stop())
                    .await
                    .expect("next part");
            }
        }
    }
}

#[tokio::test]
async fn a_new_version_removes_every_quarantine_part_of_the_old_one() {
    let key = "events/2026/11/01/big.csv";
    let tmp = tempfile::tempdir().expect("tmp");
    generated_file(tmp.path(), key, 1_000, 30);
    let p = pipeline(tmp.path());
    let old = in_parts(&p, key, "v1", 100).await;
    let old_objects: Vec<String> = old.quarantine_objects().map(str::to_owned).collect();
    assert!(old_objects.len() > 2, "{old_objects:?}");
    assert!(
        old_objects[1..].iter().all(|q| q.contains(".part-")),
        "{old_objects:?}"
    );

    // A clean new version at the same key, in one run: the old refused rows (raw viewer ids
    // included) must not linger where no report points.
    generated_file(tmp.path(), key, 1_000, 0);
    let new = p.process_object(key, Some("v2")).await.expect("v2").report;
    assert_eq!(new.quarantine_objects().count(), 0);
    for q in &old_objects {
        let gone = p
            .stores
            .lake
            .head(&object_store::path::Path::from(q.as_str()))
            .await;
        assert!(
            matches!(gone, Err(object_store::Error::NotFound { .. })),
            "{q} is still there"
        );
    }
}
