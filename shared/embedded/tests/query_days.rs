//! A query reads its days several at a time (`streamcube_pipeline::query::days_at_once`) and
//! adds them to the answer in order: the answer is the one a day-by-day reading gives, a day
//! republished while it is read is read again at its new generation, and the first day is read
//! alone, before the size of a day is known.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::cube::{Cell, Cuboid, Dims};
use streamcube_model::pseudonym::{KeyRing, PseudonymKey, Pseudonymizer};
use streamcube_model::query::first_hour;
use streamcube_pipeline::http::handle;
use streamcube_pipeline::ports::{CellSelect, DayManifest, GoldStore, Level, StoreResult};
use streamcube_pipeline::query::{DAY_READS, READ_AHEAD_BYTES, days_at_once};
use streamcube_pipeline::{Pipeline, PipelineConfig, Stores};

const DAYS: i64 = 30;
const EVENTS_A_DAY: u32 = 12;

/// Gold that records which days' cells are being read at once, and can republish one day the
/// first time its cells are read (as a consolidation finishing meanwhile would).
struct Watching {
    inner: Arc<dyn GoldStore>,
    in_flight: AtomicUsize,
    most: AtomicUsize,
    /// `start <day>` and `end <day>` of every read of cells, in order.
    log: Mutex<Vec<String>>,
    republish: Option<NaiveDate>,
    republished: AtomicBool,
}

impl Watching {
    fn new(inner: Arc<dyn GoldStore>, republish: Option<NaiveDate>) -> Self {
        Watching {
            inner,
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            republish,
            republished: AtomicBool::new(false),
        }
    }

    fn note(&self, what: String) {
        self.log.lock().expect("log").push(what);
    }

    /// Writes the day's day level again under a new generation, every cell with 1,000 more
    /// plays, and flips the manifest to it.
    async fn republish(&self, day: NaiveDate) {
        let m = self
            .inner
            .manifest(day)
            .await
            .expect("m")
            .expect("published");
        let cells = self
            .inner
            .cells(day, Level::Day, m.day_generation, None)
            .await
            .expect("cells");
        let more: Vec<(Dims, Cell)> = cells
            .into_iter()
            .map(|(d, mut c)| {
                c.measures.plays += 1_000;
                (d, c)
            })
            .collect();
        let generation = m.day_generation + 1_000_000;
        self.inner
            .put_cells(day, Level::Day, generation, &more)
            .await
            .expect("put");
        let next = DayManifest {
            version: m.version + 1,
            day_generation: generation,
            ..m.clone()
        };
        self.inner.publish(&next, m.version).await.expect("flip");
    }
}

#[async_trait]
impl GoldStore for Watching {
    async fn manifest(&self, day: NaiveDate) -> StoreResult<Option<DayManifest>> {
        self.inner.manifest(day).await
    }

    async fn put_cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cells: &[(Dims, Cell)],
    ) -> StoreResult<()> {
        self.inner.put_cells(day, level, generation, cells).await
    }

    async fn publish(&self, manifest: &DayManifest, expected_version: u64) -> StoreResult<()> {
        self.inner.publish(manifest, expected_version).await
    }

    async fn cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Option<Cuboid>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        self.inner.cells(day, level, generation, cuboid).await
    }

    async fn cells_where(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Cuboid,
        select: &CellSelect<'_>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        self.note(format!("start {day}"));
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        // Long enough for the reads started with this one to start too.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let read = self
            .inner
            .cells_where(day, level, generation, cuboid, select)
            .await;
        if self.republish == Some(day) && !self.republished.swap(true, SeqCst) {
            self.republish(day).await;
        }
        self.in_flight.fetch_sub(1, SeqCst);
        self.note(format!("end {day}"));
        read
    }

    async fn stale_generations(
        &self,
        day: NaiveDate,
        keep: &[(Level, u64)],
    ) -> StoreResult<Vec<(Level, u64)>> {
        self.inner.stale_generations(day, keep).await
    }

    async fn delete_cells(&self, day: NaiveDate, level: Level, generation: u64) -> StoreResult<()> {
        self.inner.delete_cells(day, level, generation).await
    }
}

fn pipeline(stores: Stores) -> Pipeline {
    let key = PseudonymKey::from_bytes("k1", vec![7; 32]).expect("key");
    Pipeline::new(
        stores,
        PipelineConfig::new(Pseudonymizer::from_ring(&KeyRing::single(key))),
    )
}

/// `DAYS` closed days ending a week ago, `EVENTS_A_DAY` events each (a few more on odd days),
/// consolidated.
async fn month(backend: &EmbeddedBackend) -> (NaiveDate, NaiveDate) {
    let p = pipeline(backend.stores());
    let last = Utc::now().date_naive() - Duration::days(7);
    let first = last - Duration::days(DAYS - 1);
    let mut hours = Vec::new();
    for d in 0..DAYS {
        let day = first + Duration::days(d);
        let n = EVENTS_A_DAY + u32::try_from(d % 2).expect("small");
        let start = Utc.from_utc_datetime(&day.and_hms_opt(3, 0, 0).expect("time"));
        let events: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                let device = ["tv", "mobile"][(i % 2) as usize];
                let country = ["BR", "PT", "US"][(i % 3) as usize];
                let at = start + Duration::minutes(97 * i64::from(i));
                serde_json::json!({
                    "event_id": format!("e-{d}-{i}"),
                    "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "viewer_id": format!("viewer-{}", i % 5),
                    "content_id": format!("c{}", i % 3),
                    "device": device,
                    "country": country,
                    "watch_seconds": 30 + i,
                    "completed": i % 4 == 0,
                })
            })
            .collect();
        let r = p.ingest_json(&events).await.expect("ingest");
        assert_eq!((r.accepted, r.rejected.len()), (u64::from(n), 0), "{r:?}");
        hours.extend(first_hour(day)..first_hour(day) + 24);
    }
    let outcomes = p.consolidate_hours(&hours).await.expect("consolidate");
    assert_eq!(outcomes.len(), DAYS as usize);
    (first, last)
}

/// The answer's rows and generations.
async fn answer(p: &Pipeline, from: NaiveDate, to: NaiveDate, rest: &str) -> serde_json::Value {
    let req = http::Request::builder()
        .uri(format!("/v1/cube?from={from}&to={to}&{rest}"))
        .body(bytes::Bytes::new())
        .expect("request");
    let resp = handle(p, req, "query-days").await;
    assert_eq!(resp.status(), http::StatusCode::OK);
    serde_json::from_slice(resp.body()).expect("json")
}

const BY_DAY: &str = "granularity=day&group_by=country&measures=plays,unique_viewers,watch_seconds";

#[test]
fn days_at_once_follows_the_size_of_a_day() {
    assert_eq!(days_at_once(0), DAY_READS);
    assert_eq!(days_at_once(1_000), DAY_READS);
    assert_eq!(days_at_once(READ_AHEAD_BYTES / 3), 3);
    assert_eq!(days_at_once(READ_AHEAD_BYTES), 1);
    assert_eq!(days_at_once(READ_AHEAD_BYTES * 10), 1, "never none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_are_read_several_at_a_time_and_answer_as_one_by_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let backend = EmbeddedBackend::open(tmp.path()).expect("open");
    let (first, last) = month(&backend).await;
    let watching = Arc::new(Watching::new(backend.stores().gold, None));
    let p = pipeline(Stores {
        gold: watching.clone(),
        ..backend.stores()
    });

    let whole = answer(&p, first, last, BY_DAY).await;
    let most = watching.most.load(SeqCst);
    assert!(
        (2..=DAY_READS).contains(&most),
        "{most} days read at once, expected 2 to {DAY_READS}"
    );
    // The first day alone: its read ended before any other began.
    let log = watching.log.lock().expect("log").clone();
    assert_eq!(log[0], format!("start {first}"));
    assert_eq!(log[1], format!("end {first}"), "{log:?}");

    // Day by day, each its own query.
    let mut rows = Vec::new();
    let mut generations = serde_json::Map::new();
    for d in 0..DAYS {
        let day = first + Duration::days(d);
        let one = answer(&p, day, day, BY_DAY).await;
        rows.extend(one["rows"].as_array().expect("rows").iter().cloned());
        generations.extend(one["generations"].as_object().expect("gens").clone());
    }
    assert_eq!(whole["rows"], serde_json::Value::Array(rows));
    assert_eq!(whole["generations"], serde_json::Value::Object(generations));
    assert_eq!(
        whole["generations"].as_object().expect("gens").len(),
        DAYS as usize
    );

    // Totals over the month, against the events sent: plays add up, viewers merge.
    let total = answer(
        &p,
        first,
        last,
        "granularity=total&measures=plays,unique_viewers",
    )
    .await;
    let odd_days = u64::try_from(DAYS / 2).expect("small");
    let sent = u64::from(EVENTS_A_DAY) * DAYS as u64 + odd_days;
    assert_eq!(total["rows"][0]["plays"], sent, "{total}");
    assert_eq!(total["rows"][0]["unique_viewers"], 5, "{total}");

    // Hourly answers read the hours of several days at once as well, and each hour once.
    let hourly = answer(&p, first, last, "granularity=hour&measures=plays").await;
    let plays: u64 = hourly["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["plays"].as_u64().expect("plays"))
        .sum();
    assert_eq!(plays, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_republished_while_read_with_others_is_read_again() {
    let tmp = tempfile::tempdir().expect("tmp");
    let backend = EmbeddedBackend::open(tmp.path()).expect("open");
    let (first, last) = month(&backend).await;
    let plain = pipeline(backend.stores());
    let before = answer(&plain, first, last, BY_DAY).await;

    // The fourth day: read together with others, not alone.
    let moved = first + Duration::days(3);
    let watching = Arc::new(Watching::new(backend.stores().gold, Some(moved)));
    let p = pipeline(Stores {
        gold: watching.clone(),
        ..backend.stores()
    });
    let after = answer(&p, first, last, BY_DAY).await;
    assert!(watching.republished.load(SeqCst));
    assert!(watching.most.load(SeqCst) >= 2);

    // Only that day changed: its rows at the new generation, each with 1,000 more plays.
    let m = backend
        .stores()
        .gold
        .manifest(moved)
        .await
        .expect("m")
        .expect("published");
    let key = moved.to_string();
    assert_eq!(after["generations"][&key], m.day_generation);
    assert_ne!(before["generations"][&key], after["generations"][&key]);
    let rows_of = |a: &serde_json::Value| -> BTreeMap<String, Vec<serde_json::Value>> {
        let mut by_day: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for r in a["rows"].as_array().expect("rows") {
            let day = r["day"].as_str().expect("day").to_owned();
            by_day.entry(day).or_default().push(r.clone());
        }
        by_day
    };
    let (b, a) = (rows_of(&before), rows_of(&after));
    assert_eq!(b.len(), DAYS as usize);
    for (day, rows) in &b {
        if *day != key {
            assert_eq!(a[day], *rows, "{day}");
            continue;
        }
        assert_eq!(a[day].len(), rows.len());
        for (old, new) in rows.iter().zip(&a[day]) {
            let plus = old["plays"].as_u64().expect("plays") + 1_000;
            assert_eq!(new["plays"], plus, "{old} -> {new}");
            assert_eq!(new["unique_viewers"], old["unique_viewers"]);
        }
    }
}
