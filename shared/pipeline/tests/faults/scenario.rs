//! The scenario every fault case runs, and the driver that retries a failed step the way AWS
//! would.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::NaiveDate;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde_json::{Value, json};
use streamcube_datagen::GenConfig;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::cube::CuboidSet;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_model::query::first_hour;
use streamcube_pipeline::http::ErrorChain;
use streamcube_pipeline::kafka::KafkaRecord;
use streamcube_pipeline::ports::ChangeFeed;
use streamcube_pipeline::{Pipeline, PipelineConfig, PipelineError, Stores};

use crate::state::{State, snapshot};
use crate::wrap::{Faults, Hook, MemPartitions, Process, wrap};

pub const CATALOG_KEY: &str = "reference/catalog/titles.csv";
pub const CSV_KEY: &str = "events/2026-11-10/part-1.csv";
pub const JSONL_KEY: &str = "events/2026-11-10/part-2.jsonl";
/// The object version the S3 notifications carry (the same on every redelivery).
pub const VERSION: &str = "v1";
pub const TOPIC: &str = "plays";
/// The cube's aggregation groups in these runs.
pub const CUBOIDS: &str = "country,device;genre,content_id";

/// Attempts at one step before the case counts as failed (the fault fires once, so the second
/// attempt normally succeeds).
const MAX_ATTEMPTS: usize = 4;
/// How long a step goes on after one of its calls hung, before its deadline kills it.
const DEADLINE_AFTER_HANG: Duration = Duration::from_millis(50);
/// A step that takes longer than this without a fault has hung by itself: a finding.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// The inputs: generated files with bad rows and duplicates, API batches, a Kafka batch, and the
/// viewer to erase.
pub struct Data {
    pub cfg: GenConfig,
    pub catalog: Vec<u8>,
    pub csv: Vec<u8>,
    pub jsonl: Vec<u8>,
    pub api: Vec<Vec<Value>>,
    /// (offset, base64 value) of each Kafka record; `None` is a tombstone.
    pub kafka: Vec<(i64, Option<String>)>,
    pub viewer: String,
    /// Ids that more than one row of the same file carries.
    pub repeated_in_file: HashSet<String>,
}

/// The event ids that occur on more than one line of a file (CSV or JSON lines).
fn repeated_ids(bytes: &[u8]) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut repeated = HashSet::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        let id = match serde_json::from_str::<Value>(line) {
            Ok(v) => v["event_id"].as_str().unwrap_or_default().to_owned(),
            Err(_) => line.split(',').next().unwrap_or_default().to_owned(),
        };
        if !seen.insert(id.clone()) {
            repeated.insert(id);
        }
    }
    repeated
}

impl Data {
    pub fn generate() -> Self {
        let cfg = GenConfig {
            events: 2_000,
            days: 2,
            start: NaiveDate::from_ymd_opt(2026, 11, 10).expect("date"),
            viewers: 300,
            titles: 40,
            genres: 4,
            duplicate_rate: 0.02,
            uncatalogued_rate: 0.05,
            bad_rows: 30,
            seed: 7,
        };
        let mut catalog = Vec::new();
        streamcube_datagen::write_catalog(&cfg, &mut catalog).expect("catalog");
        let mut csv = Vec::new();
        streamcube_datagen::write_events(&cfg, &mut csv, |_| {}).expect("events");
        // A second file from another generator run: some of its ids repeat the first file's.
        let small = GenConfig {
            events: 150,
            bad_rows: 4,
            ..cfg.clone()
        };
        let mut jsonl = Vec::new();
        streamcube_datagen::write_events_jsonl(&small, &mut jsonl, |_| {}).expect("events");

        // The first data row gives an event id to resend and the viewer to erase.
        let text = String::from_utf8_lossy(&csv);
        let first: Vec<&str> = text
            .lines()
            .nth(1)
            .expect("a data row")
            .split(',')
            .collect();
        let (csv_id, viewer) = (first[0].to_owned(), first[2].to_owned());

        let at = |day: u64, time: &str| format!("{}T{time}Z", cfg.start + chrono::Days::new(day));
        let event = |id: &str, when: String, viewer: &str, content: &str, device: &str| {
            json!({
                "event_id": id,
                "occurred_at": when,
                "viewer_id": viewer,
                "content_id": content,
                "device": device,
                "country": "BR",
                "watch_seconds": 600,
                "bitrate_kbps": 4500,
                "buffering_ms": 120,
                "completed": true,
            })
        };
        let api = vec![
            vec![
                event("api-0001", at(0, "10:15:00"), &viewer, "c000001", "tv"),
                event("api-0002", at(1, "20:30:00"), &viewer, "c000002", "mobile"),
                event(
                    "api-0003",
                    at(0, "03:00:00"),
                    "api-viewer",
                    "c999999",
                    "web",
                ),
                event(
                    "api-bad",
                    at(0, "04:00:00"),
                    "api-viewer",
                    "c000003",
                    "toaster",
                ),
                // A resend of an event the CSV file carried, and one within the batch.
                event(&csv_id, at(1, "01:00:00"), "api-viewer", "c000004", "tv"),
                event("api-0001", at(0, "10:15:00"), &viewer, "c000001", "tv"),
                json!("not an event"),
            ],
            vec![
                event("api-0002", at(1, "20:30:00"), &viewer, "c000002", "mobile"),
                event(
                    "api-0004",
                    at(1, "23:59:59"),
                    "api-viewer",
                    "c000005",
                    "console",
                ),
            ],
        ];
        let encode = |v: &Value| Some(BASE64.encode(v.to_string()));
        let mut bad_country = event("kafka-bad", at(0, "07:00:00"), "k-viewer", "c000001", "tv");
        bad_country["country"] = json!("XX");
        let kafka = vec![
            (
                100,
                encode(&event(
                    "kafka-1",
                    at(0, "06:00:00"),
                    &viewer,
                    "c000006",
                    "tablet",
                )),
            ),
            (
                101,
                encode(&event(
                    "kafka-2",
                    at(1, "12:00:00"),
                    "k-viewer",
                    "c000007",
                    "web",
                )),
            ),
            (102, None),
            (103, Some("%%% not base64".to_owned())),
            (104, Some(BASE64.encode("{not json"))),
            (105, encode(&bad_country)),
            (
                106,
                encode(&event(
                    "api-0003",
                    at(0, "03:00:00"),
                    "api-viewer",
                    "c999999",
                    "web",
                )),
            ),
        ];
        let mut repeated_in_file = repeated_ids(&csv);
        repeated_in_file.extend(repeated_ids(&jsonl));
        Data {
            cfg,
            catalog,
            csv,
            jsonl,
            api,
            kafka,
            viewer,
            repeated_in_file,
        }
    }

    /// The hours the scenario's events can fall in (with a day of margin either side).
    pub fn hours(&self) -> std::ops::Range<i64> {
        let first = first_hour(self.cfg.start) - 24;
        first..first + 24 * (i64::from(self.cfg.days) + 2)
    }

    pub fn days(&self) -> Vec<NaiveDate> {
        (0..self.cfg.days)
            .map(|d| self.cfg.start + chrono::Days::new(u64::from(d)))
            .collect()
    }
}

/// Variations of the scenario.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Consolidate from the change feed after the erasure, as the silver table's stream does on
    /// AWS. Without it, only the erasure's own recomputation and its retries repair gold.
    pub stream_after_erase: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stream_after_erase: true,
        }
    }
}

/// What a run ends with.
pub struct Outcome {
    pub state: State,
    /// Why steps were retried.
    pub retries: Vec<String>,
    /// How long each step took.
    pub timings: Vec<(&'static str, Duration)>,
    /// The fault-free state before each step, when asked for.
    pub checkpoints: Vec<Checkpoint>,
}

fn key() -> PseudonymKey {
    PseudonymKey::from_bytes("t", vec![7; 32]).expect("key")
}

/// The deployment's settings in these runs.
fn config() -> PipelineConfig {
    let mut c = PipelineConfig::new(Pseudonymizer::new(&key()));
    // Two aggregation groups instead of the full cube: the same machinery, a third of the
    // cells, so that many runs fit in the time.
    c.cuboids = CuboidSet::parse(CUBOIDS).expect("a valid cuboid spec");
    c
}

/// A pipeline on `base` whose adapters go through `faults`, as one process.
pub fn faulty_pipeline(base: &Stores, faults: &Arc<Faults>) -> Pipeline {
    let hook = Hook {
        faults: faults.clone(),
        process: Arc::new(Process::default()),
    };
    let partitions = Arc::new(MemPartitions::default());
    Pipeline::new(wrap(base, partitions, &hook), config())
}

fn chain(e: &PipelineError) -> String {
    ErrorChain(e).to_string()
}

struct Runner {
    base: Stores,
    feed: Arc<dyn ChangeFeed>,
    partitions: Arc<MemPartitions>,
    faults: Arc<Faults>,
    config: PipelineConfig,
    retries: Vec<String>,
    timings: Vec<(&'static str, Duration)>,
    started: std::time::Instant,
}

impl Runner {
    /// Starts a step (and ends the timing of the previous one).
    fn begin(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.timings.push((self.faults.step(), now - self.started));
        self.started = now;
        self.faults.set_step(name);
    }

    /// A new process: a pipeline whose adapters all go through the fault plan.
    fn process(&self) -> (Pipeline, Arc<Process>) {
        let hook = Hook {
            faults: self.faults.clone(),
            process: Arc::new(Process::default()),
        };
        let stores = wrap(&self.base, self.partitions.clone(), &hook);
        (Pipeline::new(stores, self.config.clone()), hook.process)
    }

    /// Runs one attempt; `None` when a fault ended its process (a crash, or the deadline after
    /// a hung call), which drops whatever it was doing.
    async fn attempt<T>(
        &self,
        process: &Arc<Process>,
        fut: impl Future<Output = T>,
    ) -> Result<Option<T>, String> {
        tokio::pin!(fut);
        tokio::select! {
            // A crash's error may reach the step before the driver ends it: the same.
            out = &mut fut => Ok((!process.is_dead()).then_some(out)),
            () = process.signaled() => {
                // After a hung call the rest of the step goes on until the deadline of the
                // invocation expires.
                if process.is_hung()
                    && let Ok(out) = tokio::time::timeout(DEADLINE_AFTER_HANG, &mut fut).await
                {
                    return Ok(Some(out));
                }
                process.kill();
                Ok(None)
            }
            () = tokio::time::sleep(STEP_LIMIT) => {
                Err(format!("step {} hung for {STEP_LIMIT:?}", self.faults.step()))
            }
        }
    }

    /// Runs a step until it succeeds, each attempt in a new process, as a redelivery would.
    async fn step<T, F, Fut>(&mut self, name: &'static str, mut f: F) -> Result<T, String>
    where
        F: FnMut(Pipeline) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        self.begin(name);
        let mut errors = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let (p, process) = self.process();
            match self.attempt(&process, f(p)).await? {
                Some(Ok(v)) => {
                    self.retries.extend(errors);
                    return Ok(v);
                }
                Some(Err(e)) => errors.push(format!("{name}: {e}")),
                None => errors.push(format!("{name}: the process died")),
            }
        }
        Err(format!(
            "step {name} failed {MAX_ATTEMPTS} times: {errors:?}"
        ))
    }

    /// The silver table's stream: consolidates the hours the change feed holds; a batch with
    /// failed days is delivered again for those days until every day published.
    async fn stream(&mut self, name: &'static str) -> Result<(), String> {
        self.begin(name);
        let pending = self
            .feed
            .pending()
            .await
            .map_err(|e| format!("the change feed: {e}"))?;
        let mut hours: Vec<i64> = pending.iter().map(|(h, _)| *h).collect();
        let mut errors = Vec::new();
        while !hours.is_empty() {
            if errors.len() >= MAX_ATTEMPTS {
                return Err(format!(
                    "step {name} failed {MAX_ATTEMPTS} times: {errors:?}"
                ));
            }
            let (p, process) = self.process();
            let batch = hours.clone();
            let out = self
                .attempt(&process, async move { p.consolidate_hours(&batch).await })
                .await?;
            match out {
                Some(Ok(days)) => {
                    let failed: Vec<_> = days.iter().filter(|d| d.result.is_err()).collect();
                    for d in &failed {
                        errors.push(format!("{name}: {}: {:?}", d.day, d.result));
                    }
                    hours = failed
                        .iter()
                        .flat_map(|d| d.hours.iter().map(|h| first_hour(d.day) + i64::from(*h)))
                        .collect();
                }
                Some(Err(e)) => errors.push(format!("{name}: {}", chain(&e))),
                None => errors.push(format!("{name}: the process died")),
            }
        }
        self.retries.extend(errors);
        for (hour, seen) in pending {
            self.feed
                .ack(hour, seen)
                .await
                .map_err(|e| format!("the change feed: {e}"))?;
        }
        Ok(())
    }
}

/// The scenario's steps, in order.
pub const STEPS: [&str; 10] = [
    "land",
    "catalog",
    "bronze-csv",
    "bronze-jsonl",
    "api-1",
    "api-2",
    "kafka",
    "stream-1",
    "erase",
    "stream-2",
];

/// The fault-free state before a step: a run that faults a call of that step (or a later one)
/// starts from a copy of it instead of redoing the steps before.
pub struct Checkpoint {
    pub step: usize,
    /// Calls made before the step.
    pub calls: u64,
    dir: tempfile::TempDir,
    partitions: BTreeMap<NaiveDate, u32>,
}

/// Copies a data directory (the SQLite database with its WAL, and the object directories).
/// SQLite rebuilds the WAL index it leaves out.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with("-shm") {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(&name))?;
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

impl Runner {
    async fn run_step(&mut self, step: usize, data: &Data, options: Options) -> Result<(), String> {
        let name = STEPS[step];
        match name {
            // Files land in bronze (the uploader retries a failed upload).
            "land" => {
                self.step(name, |p| async move {
                    for (key, bytes) in [
                        (CATALOG_KEY, &data.catalog),
                        (CSV_KEY, &data.csv),
                        (JSONL_KEY, &data.jsonl),
                    ] {
                        p.stores
                            .bronze
                            .put(&Path::from(key), bytes.clone().into())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
                .await
            }
            // Each object's S3 event, redelivered until the processor succeeds.
            "catalog" | "bronze-csv" | "bronze-jsonl" => {
                let key = match name {
                    "catalog" => CATALOG_KEY,
                    "bronze-csv" => CSV_KEY,
                    _ => JSONL_KEY,
                };
                self.step(name, |p| async move {
                    p.process_object(key, Some(VERSION))
                        .await
                        .map(|_| ())
                        .map_err(|e| chain(&e))
                })
                .await
            }
            // API requests, resent by the client until it gets an answer.
            "api-1" | "api-2" => {
                let batch = &data.api[usize::from(name == "api-2")];
                self.step(name, |p| async move {
                    p.ingest_json(batch)
                        .await
                        .map(|_| ())
                        .map_err(|e| chain(&e))
                })
                .await
            }
            // A Kafka batch, replayed by the event source mapping until it succeeds.
            "kafka" => {
                self.step(name, |p| async move {
                    let records: Vec<KafkaRecord<'_>> = data
                        .kafka
                        .iter()
                        .map(|(offset, value)| KafkaRecord {
                            topic: TOPIC,
                            partition: 0,
                            offset: *offset,
                            value: value.as_deref(),
                        })
                        .collect();
                    p.ingest_kafka(&records)
                        .await
                        .map(|_| ())
                        .map_err(|e| chain(&e))
                })
                .await
            }
            // The erasure request, resent until it is answered (an answer that lists a failed day
            // is an answer: the stream's consolidation of the deletes repairs that day).
            "erase" => {
                self.step(name, |p| async move {
                    p.erase_viewer(&data.viewer)
                        .await
                        .map(|_| ())
                        .map_err(|e| chain(&e))
                })
                .await
            }
            "stream-2" if !options.stream_after_erase => Ok(()),
            _ => self.stream(name).await,
        }
    }
}

/// Runs the scenario on a fresh embedded backend with the fault plan of `faults`: the whole of
/// it, or from a checkpoint of the fault-free run. With `checkpoints`, records one before every
/// step (for a fault-free run).
pub async fn run(
    data: &Data,
    faults: &Arc<Faults>,
    options: Options,
    from: Option<&Checkpoint>,
    checkpoints: bool,
) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut partitions = MemPartitions::default();
    let first = match from {
        Some(c) => {
            copy_dir(c.dir.path(), dir.path()).map_err(|e| format!("copying a checkpoint: {e}"))?;
            partitions = MemPartitions::from_days(c.partitions.clone());
            faults.set_calls(c.calls);
            c.step
        }
        None => 0,
    };
    let backend = EmbeddedBackend::open(dir.path()).map_err(|e| e.to_string())?;
    let mut r = Runner {
        base: backend.stores(),
        feed: backend.change_feed(),
        partitions: Arc::new(partitions),
        faults: faults.clone(),
        config: config(),
        retries: Vec::new(),
        timings: Vec::new(),
        started: std::time::Instant::now(),
    };
    let mut saved = Vec::new();
    for step in first..STEPS.len() {
        if checkpoints {
            let copy = tempfile::tempdir().map_err(|e| e.to_string())?;
            copy_dir(dir.path(), copy.path()).map_err(|e| format!("saving a checkpoint: {e}"))?;
            saved.push(Checkpoint {
                step,
                calls: faults.calls(),
                dir: copy,
                partitions: r.partitions.day_counts(),
            });
        }
        r.run_step(step, data, options).await?;
    }

    r.begin("snapshot");
    let state = snapshot(
        &r.base,
        &*r.feed,
        &r.partitions,
        data,
        &[CATALOG_KEY, CSV_KEY, JSONL_KEY],
    )
    .await?;
    r.begin("end");
    Ok(Outcome {
        state,
        retries: r.retries,
        timings: r.timings,
        checkpoints: saved,
    })
}
