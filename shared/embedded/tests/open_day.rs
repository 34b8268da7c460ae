//! The open day: the scheduled consolidation (`consolidate_pending`) publishes the current UTC
//! day's recomputed hours without its day level, readers merge the hours, and the first run
//! after the day has closed builds the day level and the exports. The answers must not depend on
//! which of the two a day was read from.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use object_store::ObjectStoreExt;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::pseudonym::{KeyRing, PseudonymKey, Pseudonymizer};
use streamcube_model::query::first_hour;
use streamcube_pipeline::consolidate::{
    CLOSE_LOOKBACK_DAYS, CLOSE_RETRY_SECS, DayLevel, DayOutcome, DaySummary, MAX_CLOSE_ATTEMPTS,
    hours_by_day,
};
use streamcube_pipeline::http::handle;
use streamcube_pipeline::ports::{DayManifest, Level};
use streamcube_pipeline::refusing::{GoldWrite, RefusingGold};
use streamcube_pipeline::{Pipeline, PipelineConfig, export};

fn pipeline(backend: &EmbeddedBackend) -> Pipeline {
    let key = PseudonymKey::from_bytes("k1", vec![7; 32]).expect("key");
    Pipeline::new(
        backend.stores(),
        PipelineConfig::new(Pseudonymizer::from_ring(&KeyRing::single(key))),
    )
}

/// `n` events from `start` on, one a minute, over a few viewers, countries and devices, with
/// some viewers coming back (unique viewers must merge across hours, not add up).
fn events(prefix: &str, start: DateTime<Utc>, n: u32) -> Vec<serde_json::Value> {
    events_every(prefix, start, Duration::minutes(1), n)
}

/// [`events`], `step` apart.
fn events_every(
    prefix: &str,
    start: DateTime<Utc>,
    step: Duration,
    n: u32,
) -> Vec<serde_json::Value> {
    let countries = ["BR", "PT", "US"];
    let devices = ["tv", "mobile"];
    (0..n)
        .map(|i| {
            let at = start + step * i32::try_from(i).expect("a few events");
            serde_json::json!({
                "event_id": format!("{prefix}-{i}"),
                "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "viewer_id": format!("viewer-{}", i % 7),
                "content_id": format!("c{}", i % 3),
                "device": devices[(i % 2) as usize],
                "country": countries[(i % 3) as usize],
                "watch_seconds": 30 + i,
                "completed": i % 4 == 0,
            })
        })
        .collect()
}

/// Away from midnight UTC, so that the day the test calls today is the one the runs see.
async fn clear_of_midnight() {
    let now = Utc::now();
    let next = Utc.from_utc_datetime(
        &(now.date_naive() + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight"),
    );
    let left = (next - now).to_std().unwrap_or_default();
    if left < std::time::Duration::from_secs(120) {
        tokio::time::sleep(left + std::time::Duration::from_secs(1)).await;
    }
}

/// Each day's rows of a query over `from..=to`, as the API answers them.
async fn answer(p: &Pipeline, from: NaiveDate, to: NaiveDate, rest: &str) -> serde_json::Value {
    let req = http::Request::builder()
        .uri(format!("/v1/cube?from={from}&to={to}&{rest}"))
        .body(bytes::Bytes::new())
        .expect("request");
    let resp = handle(p, req, "open-day").await;
    assert_eq!(resp.status(), http::StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
    body["rows"].clone()
}

const QUERIES: [&str; 3] = [
    "granularity=day&measures=plays,unique_viewers,watch_seconds,completed",
    "granularity=total&group_by=country,device&measures=plays,unique_viewers,watch_seconds",
    "granularity=day&group_by=content_id&measures=plays,unique_viewers&order_by=plays",
];

async fn answers(p: &Pipeline, from: NaiveDate, to: NaiveDate) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for q in QUERIES {
        out.push(answer(p, from, to, q).await);
    }
    out
}

async fn exported(p: &Pipeline, day: NaiveDate) -> bool {
    let csv = p
        .stores
        .lake
        .head(&export::csv_path(day).into())
        .await
        .is_ok();
    let parquet = p
        .stores
        .lake
        .head(&export::parquet_path(day).into())
        .await
        .is_ok();
    assert_eq!(csv, parquet, "{day}: one export without the other");
    csv
}

fn outcome(outcomes: &[DayOutcome], day: NaiveDate) -> &DayOutcome {
    outcomes
        .iter()
        .find(|o| o.day == day)
        .unwrap_or_else(|| panic!("no outcome for {day}: {outcomes:?}"))
}

async fn day_generation(p: &Pipeline, day: NaiveDate) -> u64 {
    let m = p.stores.gold.manifest(day).await.expect("manifest");
    m.expect("published").day_generation
}

/// Publishes each pending day without its day level and acknowledges the hours, as a run in
/// the day's last minutes, while it was open, did.
async fn published_while_open(p: &Pipeline, backend: &EmbeddedBackend) -> Vec<DaySummary> {
    let catalog = Arc::new(p.stores.catalog.load().await.expect("catalog"));
    let feed = backend.change_feed();
    let pending = feed.pending().await.expect("pending");
    let mut published = Vec::new();
    for (day, touched) in hours_by_day(pending.iter().map(|(h, _)| *h)) {
        let s = p
            .consolidate_day(&catalog, day, &touched, DayLevel::Defer)
            .await
            .expect("deferred");
        published.push(s);
    }
    for (hour, seen) in pending {
        feed.ack(hour, seen).await.expect("ack");
    }
    published
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_day_is_published_without_its_day_level_and_answers_alike() {
    clear_of_midnight().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let backend = EmbeddedBackend::open(tmp.path()).expect("open");
    let p = pipeline(&backend);
    let today = Utc::now().date_naive();
    let yesterday = today.pred_opt().expect("yesterday");
    let midnight = Utc.from_utc_datetime(&today.and_hms_opt(0, 0, 0).expect("midnight"));
    // Today's events end now (closer together in the day's first 40 minutes: events more than
    // 5 minutes ahead of the clock are refused); yesterday's cross an hour boundary.
    let today_start = (Utc::now() - Duration::minutes(40)).max(midnight);
    let step = ((Utc::now() - today_start) / 40).min(Duration::minutes(1));
    let today_events = events_every("t", today_start, step, 40);
    let yesterday_events = events(
        "y",
        midnight - Duration::hours(14) - Duration::minutes(20),
        90,
    );
    for batch in [&yesterday_events, &today_events] {
        let r = p.ingest_json(batch).await.expect("ingest");
        assert_eq!(
            (r.accepted, r.rejected.len()),
            (batch.len() as u64, 0),
            "{r:?}"
        );
    }

    let outcomes = p.consolidate_pending().await.expect("run");
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    let open = outcome(&outcomes, today).result.clone().expect("today");
    let closed = outcome(&outcomes, yesterday)
        .result
        .clone()
        .expect("yesterday");
    assert_eq!(open.day_level, DayLevel::Defer);
    assert_eq!((open.events, open.day_cells), (40, 0));
    assert_eq!(closed.day_level, DayLevel::Build);
    assert_eq!(closed.events, 90);
    assert!(closed.day_cells > 0);

    // Today: hours only, no export yet, nothing left over; yesterday: all of it.
    assert_eq!(day_generation(&p, today).await, 0);
    assert_ne!(day_generation(&p, yesterday).await, 0);
    assert!(!exported(&p, today).await);
    assert!(exported(&p, yesterday).await);
    let manifest = p.stores.gold.manifest(today).await.expect("m").expect("m");
    assert!(!manifest.hours.is_empty());
    let stale = p
        .stores
        .gold
        .stale_generations(today, &manifest.referenced())
        .await
        .expect("stale");
    assert!(stale.is_empty(), "{stale:?}");
    assert!(
        backend
            .change_feed()
            .pending()
            .await
            .expect("pending")
            .is_empty(),
        "every hour was acknowledged"
    );

    // The counts, against the events themselves.
    let days = answer(&p, yesterday, today, QUERIES[0]).await;
    let days = days.as_array().expect("rows");
    assert_eq!(days.len(), 2, "{days:?}");
    for (row, n) in days.iter().zip([90, 40]) {
        assert_eq!(row["plays"], n, "{row}");
        assert_eq!(row["unique_viewers"], 7, "{row}");
    }

    // The same answers once the open day gets its day level (an explicit recompute builds it).
    let merged = answers(&p, yesterday, today).await;
    let hours: Vec<i64> = manifest
        .hours
        .keys()
        .map(|h| first_hour(today) + i64::from(*h))
        .collect();
    for o in p.consolidate_hours(&hours).await.expect("recompute") {
        assert_eq!(o.result.expect("built").day_level, DayLevel::Build);
    }
    assert_ne!(day_generation(&p, today).await, 0);
    assert!(exported(&p, today).await);
    assert_eq!(answers(&p, yesterday, today).await, merged);
    // Nothing pending and no day without its level: the next run has nothing to do.
    assert!(p.consolidate_pending().await.expect("run").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_day_left_without_its_day_level_gets_it_from_the_next_run() {
    clear_of_midnight().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let backend = EmbeddedBackend::open(tmp.path()).expect("open");
    let p = pipeline(&backend);
    let today = Utc::now().date_naive();
    let recent = today - Duration::days(2);
    let lookback = i64::try_from(CLOSE_LOOKBACK_DAYS).expect("days");
    let old = today - Duration::days(lookback + 3);
    for (prefix, day) in [("r", recent), ("o", old)] {
        let at = Utc.from_utc_datetime(&day.and_hms_opt(9, 30, 0).expect("time"));
        let r = p
            .ingest_json(&events(prefix, at, 80))
            .await
            .expect("ingest");
        assert_eq!(r.accepted, 80);
    }
    for s in published_while_open(&p, &backend).await {
        assert_eq!((s.day_level, s.events), (DayLevel::Defer, 80));
    }
    let before = [
        answers(&p, recent, recent).await,
        answers(&p, old, old).await,
    ];
    assert_eq!(before[0][0][0]["plays"], 80, "{:?}", before[0]);
    assert!(!exported(&p, recent).await);

    // The next run builds the recent day, with no hour recomputed; the day beyond the
    // lookback is left to readers merging its hours.
    let outcomes = p.consolidate_pending().await.expect("run");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let built = outcome(&outcomes, recent);
    assert!(built.hours.is_empty());
    let summary = built.result.clone().expect("built");
    assert_eq!(
        (summary.day_level, summary.events, summary.hour_cells),
        (DayLevel::Build, 80, 0)
    );
    assert_ne!(day_generation(&p, recent).await, 0);
    assert!(exported(&p, recent).await);
    assert_eq!(day_generation(&p, old).await, 0);
    assert!(!exported(&p, old).await);
    let after = [
        answers(&p, recent, recent).await,
        answers(&p, old, old).await,
    ];
    assert_eq!(after, before);

    // Done: a replayed run finds nothing to do.
    assert!(p.consolidate_pending().await.expect("run").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_fails_is_tried_again_hours_later_not_by_every_run() {
    clear_of_midnight().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let backend = EmbeddedBackend::open(tmp.path()).expect("open");
    // Day-level writes fail while `refuse` is set: a closing run that cannot finish.
    let refuse = Arc::new(AtomicBool::new(true));
    let mut stores = backend.stores();
    let refusing = Arc::clone(&refuse);
    stores.gold = Arc::new(RefusingGold::new(stores.gold, move |w| {
        matches!(
            w,
            GoldWrite::PutCells {
                level: Level::Day,
                ..
            }
        ) && refusing.load(SeqCst)
    }));
    let key = PseudonymKey::from_bytes("k1", vec![7; 32]).expect("key");
    let p = Pipeline::new(
        stores,
        PipelineConfig::new(Pseudonymizer::from_ring(&KeyRing::single(key))),
    );
    let today = Utc::now().date_naive();
    let day = today - Duration::days(3);
    let at = Utc.from_utc_datetime(&day.and_hms_opt(22, 30, 0).expect("time"));
    p.ingest_json(&events("c", at, 50)).await.expect("ingest");
    assert_eq!(published_while_open(&p, &backend).await.len(), 1);
    let before = answers(&p, day, day).await;

    // The closing attempt fails: the day keeps its hours, the attempt is on record, and the
    // next runs leave the day alone.
    let run = p.consolidate_pending().await.expect("run");
    assert_eq!(run.len(), 1, "{run:?}");
    assert!(run[0].result.is_err(), "{run:?}");
    let m = p.stores.gold.manifest(day).await.expect("m").expect("m");
    assert_eq!(m.day_generation, 0);
    assert!(m.close_started_at.is_some(), "{m:?}");
    refuse.store(false, SeqCst);
    assert!(p.consolidate_pending().await.expect("run").is_empty());
    assert_eq!(answers(&p, day, day).await, before);

    assert_eq!(m.close_attempts, 1);

    // Past the retry time (the attempt's record moved back): not after the last attempt...
    let earlier = Utc::now() - Duration::seconds(CLOSE_RETRY_SECS + 60);
    let aged = |m: &DayManifest, attempts| DayManifest {
        version: m.version + 1,
        close_started_at: Some(earlier.to_rfc3339()),
        close_attempts: attempts,
        ..m.clone()
    };
    let spent = aged(&m, MAX_CLOSE_ATTEMPTS);
    p.stores
        .gold
        .publish(&spent, m.version)
        .await
        .expect("aged");
    assert!(p.consolidate_pending().await.expect("run").is_empty());
    // ...but before it, the next run closes the day.
    p.stores
        .gold
        .publish(&aged(&spent, 1), spent.version)
        .await
        .expect("aged");
    let run = p.consolidate_pending().await.expect("run");
    assert_eq!(run.len(), 1, "{run:?}");
    assert_eq!(
        run[0].result.as_ref().expect("closed").day_level,
        DayLevel::Build
    );
    let m = p.stores.gold.manifest(day).await.expect("m").expect("m");
    assert_ne!(m.day_generation, 0);
    assert_eq!((m.close_started_at, m.close_attempts), (None, 0));
    assert!(exported(&p, day).await);
    assert_eq!(answers(&p, day, day).await, before);
}
