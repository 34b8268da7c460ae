//! Rotating the pseudonymization key on a live deployment: a key ring gives each key the days it
//! pseudonymizes (by the event's `occurred_at`). After the rotation, resends are still
//! duplicates, a late event of a day before the rotation still gets the old key (so that day's
//! unique viewers do not count its viewer twice), the days after it use the new key, and an
//! erasure finds the viewer under both keys.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::pseudonym::{KeyRing, PseudonymKey, Pseudonymizer};
use streamcube_pipeline::http::handle;
use streamcube_pipeline::{Pipeline, PipelineConfig};

fn key(id: &str, byte: u8) -> PseudonymKey {
    PseudonymKey::from_bytes(id, vec![byte; 32]).expect("key")
}

fn pipeline(backend: &EmbeddedBackend, ring: &KeyRing) -> Pipeline {
    Pipeline::new(
        backend.stores(),
        PipelineConfig::new(Pseudonymizer::from_ring(ring)),
    )
}

fn event(id: &str, day: u32, hour: u32, viewer: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id,
        "occurred_at": format!("2026-11-{day:02}T{hour:02}:10:00Z"),
        "viewer_id": viewer,
        "content_id": "c1",
        "device": "tv",
        "country": "BR",
        "watch_seconds": 60,
        "completed": true,
    })
}

/// Consolidates whatever changed.
async fn consolidate(p: &Pipeline, backend: &EmbeddedBackend) {
    let pending: Vec<i64> = backend
        .change_feed()
        .pending()
        .await
        .expect("pending")
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    for day in p.consolidate_hours(&pending).await.expect("consolidate") {
        assert!(day.result.is_ok(), "{day:?}");
    }
}

/// Plays and unique viewers per day, from the published cube through the query API.
async fn per_day(p: &Pipeline) -> BTreeMap<NaiveDate, (u64, u64)> {
    let req = http::Request::builder()
        .uri("/v1/cube?from=2026-11-01&to=2026-11-05&granularity=day&measures=plays,unique_viewers")
        .body(bytes::Bytes::new())
        .expect("request");
    let resp = handle(p, req, "rotation").await;
    assert_eq!(resp.status(), http::StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
    body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let day = r["day"].as_str().and_then(|d| d.parse().ok()).expect("day");
            let n = |m: &str| r[m].as_u64().expect("a count");
            (day, (n("plays"), n("unique_viewers")))
        })
        .collect()
}

/// The independent count: plays and distinct viewers per day of the events stored.
fn recount(events: &[(u32, &str)]) -> BTreeMap<NaiveDate, (u64, u64)> {
    let mut days: BTreeMap<NaiveDate, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for (day, viewer) in events {
        let d = NaiveDate::from_ymd_opt(2026, 11, *day).expect("day");
        let e = days.entry(d).or_default();
        e.0 += 1;
        e.1.insert(viewer);
    }
    days.into_iter()
        .map(|(d, (plays, viewers))| (d, (plays, viewers.len() as u64)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_keeps_dedup_unique_viewers_and_erasure() {
    let tmp = tempfile::tempdir().expect("tmp");
    let backend = EmbeddedBackend::open(tmp.path()).expect("open");

    // Before the rotation: one key.
    let before = pipeline(&backend, &KeyRing::single(key("k1", 1)));
    let first = [
        event("a1", 1, 10, "alice"),
        event("a2", 2, 10, "alice"),
        event("b1", 2, 11, "bob"),
    ];
    let r = before.ingest_json(&first).await.expect("ingest");
    assert_eq!((r.accepted, r.duplicates), (3, 0));
    consolidate(&before, &backend).await;

    // The rotation: k2 pseudonymizes the events of 2026-11-03 on.
    let ring = KeyRing::new(vec![
        (None, key("k1", 1)),
        (
            Some(NaiveDate::from_ymd_opt(2026, 11, 3).expect("day")),
            key("k2", 2),
        ),
    ])
    .expect("ring");
    let after = pipeline(&backend, &ring);
    let second = [
        // A resend of an event stored under the old key.
        event("a2", 2, 10, "alice"),
        // A late event of a day before the rotation, of a viewer that day already counts.
        event("b2", 2, 20, "bob"),
        // The days after the rotation, for the same viewers.
        event("a3", 3, 9, "alice"),
        event("b3", 3, 9, "bob"),
        event("a4", 4, 9, "alice"),
    ];
    let r = after.ingest_json(&second).await.expect("ingest");
    assert_eq!(
        (r.accepted, r.duplicates),
        (4, 1),
        "the resend is a duplicate"
    );
    consolidate(&after, &backend).await;

    let stored = [
        (1, "alice"),
        (2, "alice"),
        (2, "bob"),
        (2, "bob"),
        (3, "alice"),
        (3, "bob"),
        (4, "alice"),
    ];
    assert_eq!(per_day(&after).await, recount(&stored));
    assert_eq!(backend.sqlite().silver_count().await.expect("count"), 7);

    // The erasure finds alice under both keys and every count forgets her.
    let erased = after.erase_viewer("alice").await.expect("erase");
    assert_eq!(erased.events_deleted, 4);
    consolidate(&after, &backend).await;
    let left = [(2, "bob"), (2, "bob"), (3, "bob")];
    let mut want = recount(&left);
    // Days whose only viewer was erased are published empty: no row at all.
    want.retain(|_, (plays, _)| *plays > 0);
    assert_eq!(per_day(&after).await, want);
    assert_eq!(backend.sqlite().silver_count().await.expect("count"), 3);
}
