//! The port conformance suite: the contracts of [`ports`](crate::ports), checked against any
//! adapter.
//!
//! Every backend runs the same checks (the embedded SQLite backend in
//! `shared/embedded/tests/conformance.rs`, the DynamoDB adapters later). A check panics with a
//! message naming the violated contract. Each check makes its own keys (random event ids, hours,
//! days, content ids, object keys), so the checks can run concurrently against one shared store
//! (shared DynamoDB tables) and be run again on a store that already holds data; they delete the
//! silver events and gold cells they write, but manifests, catalog entries and ledger records stay
//! (the ports have no way to delete them).
//!
//! Consistency assumed: every read sees the writes that returned before it, except
//! [`SilverStore::viewer_events`], which reads through an index and is polled for up to
//! [`INDEX_LAG`] before it is judged (DynamoDB global secondary indexes are eventually
//! consistent).
//!
//! Compiled only with the `conformance` feature of this crate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures::TryStreamExt;
use streamcube_model::catalog::CatalogEntry;
use streamcube_model::cube::{Cell, Cuboid, Dim, Dims, DimsRef, Measures};
use streamcube_model::event::{Country, CubeEvent, Device, MS_PER_HOUR, SilverEvent};
use streamcube_model::pseudonym::{Pseudonym, PseudonymKey, Pseudonymizer};
use streamcube_model::report::FileReport;
use streamcube_model::sketch::ViewerSketch;

use crate::Stores;
use crate::ports::{
    CatalogStore, CellSelect, ChangeFeed, DayManifest, GoldStore, LedgerStore, Level, PutOutcome,
    SilverStore, StoreError, StoreResult,
};

/// How long an index read ([`SilverStore::viewer_events`]) may lag behind the writes.
pub const INDEX_LAG: Duration = Duration::from_secs(10);

/// Runs the checks of the four table ports (not the change feed, which only the embedded backend
/// has; see [`change_feed`]).
pub async fn all(stores: &Stores) {
    silver_store(&*stores.silver).await;
    gold_store(&*stores.gold).await;
    catalog_store(&*stores.catalog).await;
    ledger_store(&*stores.ledger).await;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Unwraps a store result, naming the call that failed.
fn ok<T>(r: StoreResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("conformance: {what} failed: {e} ({e:?})"),
    }
}

/// A name no other check (or earlier run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// A random hour partition far in the future (years 2198..2654), so that no real data and, with
/// overwhelming probability, no other check shares it. Leaves room for `+ 100` hours.
fn random_hour() -> i64 {
    2_000_000 + rand::random_range(0..4_000_000i64)
}

/// A random day far in the future (years 2200..2610).
fn random_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2200, 1, 1).expect("a valid date")
        + chrono::Days::new(rand::random_range(0..150_000u64))
}

/// A generation id shaped like the consolidator's: seconds in the high bits, 20 random bits,
/// below 2^53.
fn generation() -> u64 {
    let secs = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    (secs << 20) | (rand::random::<u64>() & 0xf_ffff) | 1
}

fn pseudonymizer() -> Pseudonymizer {
    let key = PseudonymKey::from_bytes("conformance", vec![0x5c; 32]).expect("a valid key");
    Pseudonymizer::new(&key)
}

/// A viewer pseudonym no other check uses.
fn viewer() -> Pseudonym {
    pseudonymizer().pseudonymize(&unique("viewer"), 0)
}

fn country(code: &str) -> Country {
    Country::parse(code).expect("a valid country")
}

/// An event of `viewer` at `at_ms`, with plain field values.
fn event(id: &str, at_ms: i64, viewer: Pseudonym, origin: &str) -> SilverEvent {
    SilverEvent {
        event_id: id.to_owned(),
        occurred_at_ms: at_ms,
        viewer,
        content_id: "c-001".to_owned(),
        device: Device::Tv,
        country: country("FR"),
        watch_seconds: 600,
        bitrate_kbps: Some(4_500),
        buffering_ms: Some(120),
        completed: true,
        origin: origin.to_owned(),
    }
}

/// The start of an hour, in milliseconds.
fn at(hour: i64) -> i64 {
    hour * MS_PER_HOUR
}

fn by_id(mut events: Vec<SilverEvent>) -> Vec<SilverEvent> {
    events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    events
}

fn ids(events: &[SilverEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

async fn put(store: &dyn SilverStore, events: &[SilverEvent], what: &str) -> Vec<PutOutcome> {
    let outcomes = ok(store.put_new(events).await, what);
    assert_eq!(
        outcomes.len(),
        events.len(),
        "SilverStore::put_new must return one outcome per event ({what})"
    );
    outcomes
}

/// The events of an hour, sorted by id.
async fn hour(store: &dyn SilverStore, hour: i64) -> Vec<SilverEvent> {
    by_id(ok(
        store.hour_events(hour).await,
        "SilverStore::hour_events",
    ))
}

/// The events of an hour read in parts, put together and sorted by id.
async fn hour_in_parts(store: &dyn SilverStore, hour: i64) -> Vec<SilverEvent> {
    by_id(ok(
        store.hour_parts(hour).try_concat().await,
        "SilverStore::hour_parts",
    ))
}

/// Asserts that `hour_events(h)` returns exactly `expected` (any order, no repeats), that
/// `hour_parts(h)` together do too, and that `hour_cube_parts(h)` together give exactly their
/// cube fields.
async fn assert_hour(store: &dyn SilverStore, h: i64, expected: &[SilverEvent], what: &str) {
    let mut want_cube: Vec<CubeEvent> = expected.iter().map(CubeEvent::from).collect();
    want_cube.sort();
    let mut got_cube = ok(
        store.hour_cube_parts(h).try_concat().await,
        "SilverStore::hour_cube_parts",
    );
    got_cube.sort();
    assert!(
        got_cube == want_cube,
        "SilverStore::hour_cube_parts({h}) must return the cube fields of exactly the events of \
         that hour ({what})\n  got:  {got_cube:?}\n  want: {want_cube:?}"
    );
    let want = by_id(expected.to_vec());
    for (how, got) in [
        ("hour_events", hour(store, h).await),
        ("hour_parts", hour_in_parts(store, h).await),
    ] {
        if got != want {
            panic!(
                "SilverStore::{how}({h}) must return exactly the events of that hour ({what})\n  \
                 got ids:  {:?}\n  want ids: {:?}\n  got:  {got:?}\n  want: {want:?}",
                ids(&got),
                ids(&want),
            );
        }
    }
}

/// `viewer_events(viewer)`, sorted, polled until it equals `expected` or [`INDEX_LAG`] passes.
async fn viewer_events(
    store: &dyn SilverStore,
    viewer: &Pseudonym,
    expected: &[(String, i64)],
) -> Vec<(String, i64)> {
    let mut want = expected.to_vec();
    want.sort();
    let deadline = Instant::now() + INDEX_LAG;
    loop {
        let mut got = ok(
            store.viewer_events(viewer).await,
            "SilverStore::viewer_events",
        );
        got.sort();
        if got == want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_viewer(
    store: &dyn SilverStore,
    viewer: &Pseudonym,
    expected: &[(String, i64)],
    what: &str,
) {
    let got = viewer_events(store, viewer, expected).await;
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(
        got, want,
        "SilverStore::viewer_events must return the (id, hour) of every event of the viewer, once \
         each, and nothing of other viewers ({what})"
    );
}

async fn delete(store: &dyn SilverStore, ids: &[String], what: &str) -> u64 {
    ok(store.delete(ids).await, what)
}

/// Deletes what a check wrote, so shared stores do not fill up.
async fn cleanup(store: &dyn SilverStore, events: &[SilverEvent]) {
    let ids: BTreeSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let ids: Vec<String> = ids.into_iter().collect();
    ok(store.delete(&ids).await, "SilverStore::delete (cleanup)");
}

// ---------------------------------------------------------------------------------------------
// SilverStore
// ---------------------------------------------------------------------------------------------

/// Every [`SilverStore`] check.
pub async fn silver_store(store: &dyn SilverStore) {
    silver_outcomes(store).await;
    silver_repeat_within_call(store).await;
    silver_first_writer_wins(store).await;
    silver_round_trip(store).await;
    silver_hour_boundaries(store).await;
    silver_viewer_events(store).await;
    silver_delete(store).await;
    silver_large_batch(store).await;
    silver_repeat_same_origin_within_call(store).await;
}

/// `put_new`: one outcome per event in order; new ids are `Inserted`; an id stored by another
/// origin is `Duplicate`; by the same non-empty origin `AlreadyStored`; an empty origin is never
/// `AlreadyStored`; an empty call returns no outcomes.
pub async fn silver_outcomes(store: &dyn SilverStore) {
    use PutOutcome::*;
    let s = unique("silver-outcomes");
    let h = random_hour();
    let v = viewer();
    let file = format!("bronze/{s}.csv#v1");
    let a = event(&format!("{s}-a"), at(h) + 1, v, &format!("{file}:2"));
    let b = event(&format!("{s}-b"), at(h) + 2, v, "");
    let c = event(&format!("{s}-c"), at(h) + 3, v, &format!("{file}:4"));
    let d = event(&format!("{s}-d"), at(h) + 4, v, "");
    let e = event(&format!("{s}-e"), at(h) + 5, v, &format!("{file}:6"));

    assert_eq!(
        put(store, &[], "put_new(&[])").await,
        Vec::<PutOutcome>::new(),
        "SilverStore::put_new of no events must succeed with no outcomes"
    );
    assert_eq!(
        put(store, &[a.clone(), b.clone()], "put_new of new events").await,
        [Inserted, Inserted],
        "SilverStore::put_new: events with new ids are Inserted"
    );
    // The same rows again, as a retried file (a) and a resent API event (b), plus a new one.
    assert_eq!(
        put(store, &[a.clone(), b.clone(), c.clone()], "put_new retried").await,
        [AlreadyStored, Duplicate, Inserted],
        "SilverStore::put_new: an id stored by the same non-empty origin is AlreadyStored, an id \
         stored with an empty origin is Duplicate even from an empty origin (an empty origin is \
         never AlreadyStored), a new id is Inserted"
    );
    // The same ids from other inputs.
    let a_other = SilverEvent {
        origin: format!("bronze/{s}.csv#v2:2"),
        ..a.clone()
    };
    let a_api = SilverEvent {
        origin: String::new(),
        ..a.clone()
    };
    let b_file = SilverEvent {
        origin: format!("{file}:3"),
        ..b.clone()
    };
    assert_eq!(
        put(
            store,
            &[a_other, a_api, b_file],
            "put_new from other origins"
        )
        .await,
        [Duplicate, Duplicate, Duplicate],
        "SilverStore::put_new: an id already stored by another origin (another file version, the \
         API, or a file when the API stored it) is Duplicate"
    );
    // Order: outcomes follow the input order, mixed.
    assert_eq!(
        put(
            store,
            &[d.clone(), c.clone(), e.clone(), b.clone(), a.clone()],
            "put_new mixed"
        )
        .await,
        [Inserted, AlreadyStored, Inserted, Duplicate, AlreadyStored],
        "SilverStore::put_new must return the outcomes in the order of the events"
    );
    assert_hour(
        store,
        h,
        &[a.clone(), b.clone(), c.clone(), d.clone(), e.clone()],
        "after inserts and duplicates, each id stored once",
    )
    .await;
    cleanup(store, &[a, b, c, d, e]).await;
}

/// Within one call, a later event with the id of an earlier one is a duplicate (origins empty or
/// different).
pub async fn silver_repeat_within_call(store: &dyn SilverStore) {
    use PutOutcome::*;
    let s = unique("silver-repeat");
    let h = random_hour();
    let v = viewer();
    let x1 = event(&format!("{s}-x"), at(h) + 10, v, "");
    let x2 = SilverEvent {
        watch_seconds: 1,
        ..x1.clone()
    };
    let y1 = event(
        &format!("{s}-y"),
        at(h) + 20,
        v,
        &format!("bronze/{s}.csv#v1:2"),
    );
    let y2 = SilverEvent {
        origin: format!("bronze/{s}.csv#v1:9"),
        watch_seconds: 2,
        ..y1.clone()
    };
    let z = event(&format!("{s}-z"), at(h) + 30, v, "");
    assert_eq!(
        put(
            store,
            &[x1.clone(), y1.clone(), x2, z.clone(), y2],
            "put_new with repeated ids"
        )
        .await,
        [Inserted, Inserted, Duplicate, Inserted, Duplicate],
        "SilverStore::put_new: within one call, a later event with the id of an earlier one is \
         Duplicate (empty origins; different origins)"
    );
    assert_hour(
        store,
        h,
        &[x1.clone(), y1.clone(), z.clone()],
        "a repeated id within one call is stored once, with the first event's data",
    )
    .await;
    cleanup(store, &[x1, y1, z]).await;
}

/// Within one call, a later event with the id AND the origin of an earlier one is still a
/// duplicate: `AlreadyStored` is for an earlier, interrupted attempt, not for the same call.
pub async fn silver_repeat_same_origin_within_call(store: &dyn SilverStore) {
    use PutOutcome::*;
    let s = unique("silver-repeat-origin");
    let h = random_hour();
    let w = event(
        &format!("{s}-w"),
        at(h) + 40,
        viewer(),
        &format!("bronze/{s}.csv#v1:7"),
    );
    let outcomes = put(
        store,
        &[w.clone(), w.clone()],
        "put_new with a repeated row",
    )
    .await;
    cleanup(store, std::slice::from_ref(&w)).await;
    assert_eq!(
        outcomes,
        [Inserted, Duplicate],
        "SilverStore::put_new: within one call, a later event with the id of an earlier one is \
         Duplicate, even with the same origin (\"Within one call, a later event with the id of an \
         earlier one is a duplicate\"; AlreadyStored means an earlier, interrupted attempt)"
    );
}

/// The first writer's data wins: a duplicate with other fields (another hour, viewer, every
/// field) changes nothing, whatever its origin.
pub async fn silver_first_writer_wins(store: &dyn SilverStore) {
    use PutOutcome::*;
    let s = unique("silver-first-writer");
    let h = random_hour();
    let (v1, v2) = (viewer(), viewer());
    let origin = format!("bronze/{s}.csv#v1:2");
    let first = SilverEvent {
        event_id: format!("{s}-1"),
        occurred_at_ms: at(h) + 1_234,
        viewer: v1,
        content_id: "c-first".into(),
        device: Device::Tv,
        country: country("FR"),
        watch_seconds: 100,
        bitrate_kbps: Some(3_000),
        buffering_ms: None,
        completed: true,
        origin: origin.clone(),
    };
    let later = SilverEvent {
        event_id: first.event_id.clone(),
        occurred_at_ms: at(h + 5) + 99,
        viewer: v2,
        content_id: "c-later".into(),
        device: Device::Mobile,
        country: country("DE"),
        watch_seconds: 7,
        bitrate_kbps: None,
        buffering_ms: Some(9),
        completed: false,
        origin: format!("bronze/{s}.csv#v2:2"),
    };
    assert_eq!(
        put(store, std::slice::from_ref(&first), "put_new first").await,
        [Inserted]
    );
    assert_eq!(
        put(store, std::slice::from_ref(&later), "put_new later").await,
        [Duplicate],
        "SilverStore::put_new: an id already stored is Duplicate even when the event lands in \
         another hour partition (dedup is by id across hours)"
    );
    let later_same_origin = SilverEvent {
        origin: origin.clone(),
        ..later.clone()
    };
    assert_eq!(
        put(store, &[later_same_origin], "put_new later, same origin").await,
        [AlreadyStored],
        "SilverStore::put_new: the same id and origin is AlreadyStored even with other fields"
    );
    assert_hour(
        store,
        h,
        std::slice::from_ref(&first),
        "the first writer's data wins",
    )
    .await;
    assert_hour(
        store,
        h + 5,
        &[],
        "a duplicate must not be stored in its own hour",
    )
    .await;
    assert_viewer(
        store,
        &v1,
        &[(first.event_id.clone(), h)],
        "the first writer's viewer",
    )
    .await;
    assert_viewer(store, &v2, &[], "a duplicate's viewer must not be indexed").await;
    cleanup(store, &[first]).await;
}

/// Every field survives the round trip: options `None` and `Some`, extreme values, every device,
/// text with separators and unicode.
pub async fn silver_round_trip(store: &dyn SilverStore) {
    let s = unique("silver-round-trip");
    let h = random_hour();
    let v = viewer();
    let texts = [
        "c-plain",
        "drama, \"noir\" & 'co'",
        "ep#1#part:2|x",
        "émission 日本 🎬",
        " spaced ",
        "back\\slash/slash",
    ];
    let countries = ["FR", "DE", "US", "JP", "BR", "GB"];
    let mut events = Vec::new();
    for (i, device) in Device::ALL.into_iter().enumerate() {
        events.push(SilverEvent {
            event_id: format!("{s}-{i}"),
            occurred_at_ms: at(h) + i as i64 * 600_000 + 7,
            viewer: v,
            content_id: texts[i % texts.len()].to_owned(),
            device,
            country: country(countries[i % countries.len()]),
            watch_seconds: [0, 1, 86_400, u32::MAX, 42][i],
            bitrate_kbps: [None, Some(0), Some(200_000), Some(u32::MAX), None][i],
            buffering_ms: [Some(0), None, Some(86_400_000), Some(u32::MAX), None][i],
            completed: i % 2 == 0,
            origin: [
                String::new(),
                format!("bronze/{s}/a b,#c.csv#v1:2"),
                format!("bronze/{s}/ünï.json.gz#v3:10"),
                String::new(),
                format!("bronze/{s}.csv#null:99"),
            ][i]
                .clone(),
        });
    }
    // Event ids with separators and unicode.
    for (i, suffix) in ["#1", ":2|x", "é日🎬", "a,b \"c\""].into_iter().enumerate() {
        events.push(SilverEvent {
            event_id: format!("{s}{suffix}"),
            ..event(&s, at(h) + 3_000_000 + i as i64, v, "")
        });
    }
    let outcomes = put(store, &events, "put_new round trip").await;
    assert!(
        outcomes.iter().all(|o| *o == PutOutcome::Inserted),
        "SilverStore::put_new: distinct new ids must all be Inserted, got {outcomes:?}"
    );
    assert_hour(store, h, &events, "every field must round-trip exactly").await;
    let expected: Vec<(String, i64)> = events.iter().map(|e| (e.event_id.clone(), h)).collect();
    assert_viewer(store, &v, &expected, "round trip").await;
    cleanup(store, &events).await;
}

/// `hour_events` returns exactly the events of that hour: xx:59:59.999 belongs to the hour,
/// (xx+1):00:00.000 to the next.
pub async fn silver_hour_boundaries(store: &dyn SilverStore) {
    let s = unique("silver-hours");
    let h = random_hour();
    let v = viewer();
    let before = event(&format!("{s}-before"), at(h) - 1, v, "");
    let first = event(&format!("{s}-first"), at(h), v, "");
    let last = event(&format!("{s}-last"), at(h + 1) - 1, v, "");
    let next = event(&format!("{s}-next"), at(h + 1), v, "");
    let far = event(&format!("{s}-far"), at(h + 24), v, "");
    let all = [
        before.clone(),
        first.clone(),
        last.clone(),
        next.clone(),
        far.clone(),
    ];
    assert_eq!(before.hour(), h - 1);
    assert_eq!(last.hour(), h);
    assert_eq!(next.hour(), h + 1);
    put(store, &all, "put_new boundaries").await;
    assert_hour(
        store,
        h,
        &[first, last],
        "hh:00:00.000 and hh:59:59.999 belong to hour hh, nothing else",
    )
    .await;
    assert_hour(store, h - 1, &[before], "the millisecond before the hour").await;
    assert_hour(
        store,
        h + 1,
        &[next],
        "the first millisecond of the next hour",
    )
    .await;
    assert_hour(store, h + 24, &[far], "a day later").await;
    assert_hour(store, h + 2, &[], "an empty hour").await;
    cleanup(store, &all).await;
}

/// `viewer_events` finds every event of a pseudonym across hours, with its hour, and none of
/// another viewer.
pub async fn silver_viewer_events(store: &dyn SilverStore) {
    let s = unique("silver-viewer");
    let h = random_hour();
    let (v1, v2, v3) = (viewer(), viewer(), viewer());
    let e1 = event(&format!("{s}-1"), at(h) + 5, v1, "");
    let e2 = event(&format!("{s}-2"), at(h + 1) + 5, v1, "o#1:1");
    let e3 = event(&format!("{s}-3"), at(h + 30) + 5, v1, "");
    let e4 = event(&format!("{s}-4"), at(h) + 6, v2, "");
    let all = [e1.clone(), e2.clone(), e3.clone(), e4.clone()];
    put(store, &all, "put_new viewers").await;
    assert_viewer(
        store,
        &v1,
        &[
            (e1.event_id.clone(), h),
            (e2.event_id.clone(), h + 1),
            (e3.event_id.clone(), h + 30),
        ],
        "a viewer with events in three hours",
    )
    .await;
    assert_viewer(
        store,
        &v2,
        &[(e4.event_id.clone(), h)],
        "a viewer sharing an hour with another",
    )
    .await;
    assert_viewer(store, &v3, &[], "a viewer without events").await;
    cleanup(store, &all).await;
    assert_viewer(store, &v1, &[], "after deleting the viewer's events").await;
}

/// `delete` returns how many of the ids existed (each once), deletes only those, and a second
/// delete returns 0.
pub async fn silver_delete(store: &dyn SilverStore) {
    let s = unique("silver-delete");
    let h = random_hour();
    let v = viewer();
    let a = event(&format!("{s}-a"), at(h) + 1, v, "");
    let b = event(&format!("{s}-b"), at(h + 1) + 1, v, "");
    let c = event(&format!("{s}-c"), at(h) + 2, v, "");
    put(store, &[a.clone(), b.clone(), c.clone()], "put_new delete").await;

    assert_eq!(
        delete(store, &[], "SilverStore::delete(&[])").await,
        0,
        "SilverStore::delete of no ids must return 0"
    );
    let missing = format!("{s}-missing");
    assert_eq!(
        delete(
            store,
            &[
                a.event_id.clone(),
                b.event_id.clone(),
                missing.clone(),
                a.event_id.clone()
            ],
            "SilverStore::delete"
        )
        .await,
        2,
        "SilverStore::delete returns how many of the ids existed (a missing id counts 0, an id \
         given twice counts once)"
    );
    assert_eq!(
        delete(
            store,
            &[a.event_id.clone(), b.event_id.clone()],
            "SilverStore::delete again"
        )
        .await,
        0,
        "SilverStore::delete of ids already deleted returns 0"
    );
    assert_hour(
        store,
        h,
        std::slice::from_ref(&c),
        "after delete, only the event not deleted",
    )
    .await;
    assert_hour(store, h + 1, &[], "after delete, the hour is empty").await;
    assert_viewer(
        store,
        &v,
        &[(c.event_id.clone(), h)],
        "deleted events leave the index",
    )
    .await;
    assert_eq!(
        delete(
            store,
            std::slice::from_ref(&c.event_id),
            "SilverStore::delete c"
        )
        .await,
        1
    );
}

/// 500 events in one call (DynamoDB splits writes into 25s): outcomes in order, including ids
/// repeated within the same chunk of 25, across chunks, and from first to last; then retried,
/// then from another input, then deleted in one call.
pub async fn silver_large_batch(store: &dyn SilverStore) {
    use PutOutcome::*;
    const N: usize = 500;
    let s = unique("silver-batch");
    let h = random_hour();
    let viewers = [viewer(), viewer(), viewer()];
    // Position -> earlier position whose id it repeats.
    let repeats: BTreeMap<usize, usize> = [(10, 3), (60, 5), (200, 199), (N - 1, 0)].into();
    let mut events = Vec::with_capacity(N);
    for i in 0..N {
        let id = format!("{s}-{:03}", repeats.get(&i).copied().unwrap_or(i));
        let at_ms = at(h + (i % 3) as i64) + i as i64;
        let mut e = event(
            &id,
            at_ms,
            viewers[i % 3],
            &format!("bronze/{s}.csv#v1:{}", i + 2),
        );
        e.watch_seconds = i as u32;
        events.push(e);
    }
    let expected: Vec<PutOutcome> = (0..N)
        .map(|i| {
            if repeats.contains_key(&i) {
                Duplicate
            } else {
                Inserted
            }
        })
        .collect();
    let outcomes = put(store, &events, "put_new of 500 events").await;
    assert_eq!(
        outcomes,
        expected,
        "SilverStore::put_new of 500 events: Inserted for each new id, Duplicate at positions {:?} \
         (ids repeated within one call)",
        repeats.keys().collect::<Vec<_>>()
    );
    let stored: Vec<SilverEvent> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| !repeats.contains_key(i))
        .map(|(_, e)| e.clone())
        .collect();
    for k in 0..3 {
        let want: Vec<SilverEvent> = stored
            .iter()
            .filter(|e| e.hour() == h + k)
            .cloned()
            .collect();
        assert_hour(store, h + k, &want, "500 events in one call").await;
    }
    for (k, v) in viewers.iter().enumerate() {
        let want: Vec<(String, i64)> = stored
            .iter()
            .filter(|e| e.viewer == *v)
            .map(|e| (e.event_id.clone(), e.hour()))
            .collect();
        assert_viewer(store, v, &want, &format!("500 events, viewer {k}")).await;
    }

    // The same call retried: the stored rows are AlreadyStored, the repeats still Duplicate
    // (their origin is not the stored one).
    let retried: Vec<PutOutcome> = (0..N)
        .map(|i| {
            if repeats.contains_key(&i) {
                Duplicate
            } else {
                AlreadyStored
            }
        })
        .collect();
    assert_eq!(
        put(store, &events, "put_new of 500 events retried").await,
        retried,
        "SilverStore::put_new of the same 500 rows again: AlreadyStored, except the rows whose id \
         an earlier row of another origin stored (Duplicate)"
    );
    let other: Vec<SilverEvent> = events
        .iter()
        .map(|e| SilverEvent {
            origin: format!("bronze/{s}.csv#v2:0"),
            ..e.clone()
        })
        .collect();
    assert_eq!(
        put(store, &other, "put_new of 500 events from another input").await,
        vec![Duplicate; N],
        "SilverStore::put_new of 500 stored ids from another origin: all Duplicate"
    );

    let all_ids: Vec<String> = ids(&events);
    assert_eq!(
        delete(store, &all_ids, "SilverStore::delete of 500 ids").await,
        stored.len() as u64,
        "SilverStore::delete of 500 ids (some repeated) returns how many existed"
    );
    for k in 0..3 {
        assert_hour(store, h + k, &[], "after deleting the 500 events").await;
    }
}

// ---------------------------------------------------------------------------------------------
// GoldStore
// ---------------------------------------------------------------------------------------------

/// Every [`GoldStore`] check.
pub async fn gold_store(store: &dyn GoldStore) {
    gold_manifest_publish(store).await;
    gold_concurrent_publish(store).await;
    gold_cells_round_trip(store).await;
    gold_cells_by_cuboid(store).await;
    gold_cells_where(store).await;
    gold_levels_and_generations(store).await;
    gold_put_cells_idempotent(store).await;
    gold_stale_and_delete(store).await;
}

fn manifest(day: NaiveDate, version: u64, tag: u64) -> DayManifest {
    DayManifest {
        day: Some(day),
        version,
        day_generation: generation(),
        hours: [(0u8, generation()), (13, generation() + tag), (23, tag)].into(),
        events: 1_000 * version + tag,
        cuboids: "country,device;genre;content_id".into(),
        published_at: format!("2200-01-01T00:00:{:02}Z", tag % 60),
        close_started_at: (tag % 2 == 1).then(|| format!("2200-01-02T00:00:{:02}Z", tag % 60)),
        close_attempts: u32::try_from(tag % 3).unwrap_or(0),
    }
}

async fn current(store: &dyn GoldStore, day: NaiveDate) -> Option<DayManifest> {
    ok(store.manifest(day).await, "GoldStore::manifest")
}

fn is_conflict(r: &StoreResult<()>) -> bool {
    matches!(r, Err(StoreError::Conflict))
}

/// `manifest` of an unknown day is `None`; `publish` with 0 creates, with the current version
/// replaces, with any other version fails with `Conflict` and changes nothing.
pub async fn gold_manifest_publish(store: &dyn GoldStore) {
    let day = random_day();
    let other_day = day.succ_opt().expect("a next day");
    assert_eq!(
        current(store, day).await,
        None,
        "GoldStore::manifest of a day never published must be None"
    );
    let m1 = manifest(day, 1, 1);
    ok(
        store.publish(&m1, 0).await,
        "GoldStore::publish (create, expected 0)",
    );
    assert_eq!(
        current(store, day).await.as_ref(),
        Some(&m1),
        "GoldStore::manifest must return the published manifest, every field"
    );
    assert_eq!(
        current(store, other_day).await,
        None,
        "GoldStore::publish must not touch another day"
    );

    let m2 = manifest(day, 2, 2);
    let r = store.publish(&m2, 0).await;
    assert!(
        is_conflict(&r),
        "GoldStore::publish expecting 0 (absent) when a manifest exists must be Conflict, got {r:?}"
    );
    assert_eq!(current(store, day).await.as_ref(), Some(&m1));

    ok(
        store.publish(&m2, 1).await,
        "GoldStore::publish (replace, expected 1)",
    );
    assert_eq!(
        current(store, day).await.as_ref(),
        Some(&m2),
        "GoldStore::publish with the current version must replace the manifest"
    );

    let m3 = manifest(day, 3, 3);
    for stale in [1, 0, 3, 7] {
        let r = store.publish(&m3, stale).await;
        assert!(
            is_conflict(&r),
            "GoldStore::publish expecting version {stale} when the current one is 2 must be \
             Conflict, got {r:?}"
        );
        assert_eq!(
            current(store, day).await.as_ref(),
            Some(&m2),
            "GoldStore::publish that lost (expected {stale}) must leave the manifest unchanged"
        );
    }
    ok(
        store.publish(&m3, 2).await,
        "GoldStore::publish (replace, expected 2)",
    );
    assert_eq!(current(store, day).await.as_ref(), Some(&m3));
}

/// Two publishes expecting the same version at the same time: exactly one wins, the other gets
/// `Conflict`, and the manifest is the winner's. Both for creating (expected 0) and replacing.
pub async fn gold_concurrent_publish(store: &dyn GoldStore) {
    for round in 0..5u64 {
        let day = random_day();
        // Create (expected 0), then replace twice.
        for expected in 0..3u64 {
            let a = manifest(day, expected + 1, 100 + round * 10 + expected);
            let b = manifest(day, expected + 1, 200 + round * 10 + expected);
            let (ra, rb) = tokio::join!(store.publish(&a, expected), store.publish(&b, expected));
            let winner = match (&ra, &rb) {
                (Ok(()), Err(StoreError::Conflict)) => &a,
                (Err(StoreError::Conflict), Ok(())) => &b,
                _ => panic!(
                    "GoldStore::publish: of two concurrent publishes expecting version {expected}, \
                     exactly one must succeed and the other fail with Conflict; got {ra:?} and \
                     {rb:?}"
                ),
            };
            assert_eq!(
                current(store, day).await.as_ref(),
                Some(winner),
                "GoldStore::publish: after a race the manifest must be the winner's"
            );
        }
    }
}

/// A sketch of `n` random viewer hashes.
fn sketch(n: usize) -> ViewerSketch {
    (0..n).map(|_| rand::random::<u64>()).collect()
}

/// A cell with distinct values in every measure.
fn cell(seed: u64, viewers: ViewerSketch) -> Cell {
    Cell {
        measures: Measures {
            plays: seed + 1,
            watch_seconds: (1 << 40) + seed * 7 + 2,
            completed: seed * 3 + 3,
            buffering_ms: (1 << 45) + seed + 4,
            bitrate_sum: (1 << 50) + seed * 11 + 5,
            bitrate_count: seed * 5 + 6,
        },
        viewers,
    }
}

fn dims(
    country_: Option<&str>,
    device: Option<Device>,
    genre: Option<&str>,
    content: Option<&str>,
) -> Dims {
    Dims {
        country: country_.map(country),
        device,
        genre: genre.map(Into::into),
        content_id: content.map(Into::into),
    }
}

/// Cells of several cuboids, with awkward text, several sketch sizes (empty, sparse, dense) and
/// dims that a key built by joining text would confuse.
fn sample_cells() -> Vec<(Dims, Cell)> {
    let d = [
        // the apex: every dimension rolled up
        dims(None, None, None, None),
        // the base cuboid
        dims(Some("FR"), Some(Device::Tv), Some("drama"), Some("c-001")),
        dims(
            Some("FR"),
            Some(Device::Mobile),
            Some("drama"),
            Some("c-001"),
        ),
        // one dimension each
        dims(Some("DE"), None, None, None),
        dims(None, Some(Device::Console), None, None),
        dims(None, None, Some("x"), None),
        dims(None, None, None, Some("x")),
        // text with separators, quotes, unicode
        dims(
            None,
            None,
            Some("drama, \"noir\" & 'co'"),
            Some("ep#1#part:2|x"),
        ),
        dims(None, None, Some("émission 日本 🎬"), Some(" spaced ")),
        dims(None, None, Some("back\\slash/slash"), Some("#")),
        // a joined key "a#b#c" would not tell these apart
        dims(None, None, Some("a#b"), Some("c")),
        dims(None, None, Some("a"), Some("b#c")),
        dims(Some("JP"), Some(Device::Web), Some("a,b"), None),
        dims(Some("JP"), Some(Device::Web), None, Some("a,b")),
    ];
    d.into_iter()
        .enumerate()
        .map(|(i, dims)| {
            let viewers = match i {
                0 => sketch(5_000),
                1 => sketch(3),
                2 => ViewerSketch::new(),
                3 => sketch(1_000),
                4 => sketch(2_500),
                _ => sketch(i),
            };
            (dims, cell(i as u64 * 1_000, viewers))
        })
        .collect()
}

fn cuboid_of(d: &Dims) -> Cuboid {
    d.as_ref().cuboid()
}

fn sorted_cells(mut cells: Vec<(Dims, Cell)>) -> Vec<(Dims, Cell)> {
    cells.sort_by(|a, b| a.0.cmp(&b.0));
    cells
}

async fn read_cells(
    store: &dyn GoldStore,
    day: NaiveDate,
    level: Level,
    generation: u64,
    cuboid: Option<Cuboid>,
) -> Vec<(Dims, Cell)> {
    sorted_cells(ok(
        store.cells(day, level, generation, cuboid).await,
        "GoldStore::cells",
    ))
}

/// Asserts `cells(...)` returns exactly `expected` (any order, each once, sketches equal and with
/// equal estimates).
async fn assert_cells(
    store: &dyn GoldStore,
    (day, level, generation, cuboid): (NaiveDate, Level, u64, Option<Cuboid>),
    expected: &[(Dims, Cell)],
    what: &str,
) {
    let got = read_cells(store, day, level, generation, cuboid).await;
    let want = sorted_cells(expected.to_vec());
    let got_dims: Vec<&Dims> = got.iter().map(|(d, _)| d).collect();
    let want_dims: Vec<&Dims> = want.iter().map(|(d, _)| d).collect();
    assert_eq!(
        got_dims, want_dims,
        "GoldStore::cells({day}, {level:?}, {generation}, {cuboid:?}) must return exactly the cells \
         written there, each once, with their dims (rolled-up = None) ({what})"
    );
    for ((d, g), (_, w)) in got.iter().zip(&want) {
        assert_eq!(
            g.measures, w.measures,
            "GoldStore::cells must round-trip all six measures of {d:?} ({what})"
        );
        assert_eq!(
            g.viewers.estimate(),
            w.viewers.estimate(),
            "GoldStore::cells must round-trip the viewer sketch of {d:?} (estimate) ({what})"
        );
        assert!(
            g.viewers == w.viewers && g.viewers.is_dense() == w.viewers.is_dense(),
            "GoldStore::cells must round-trip the viewer sketch of {d:?} exactly: got {:?}, want \
             {:?} ({what})",
            g.viewers,
            w.viewers
        );
    }
}

async fn put_cells(
    store: &dyn GoldStore,
    day: NaiveDate,
    level: Level,
    generation: u64,
    cells: &[(Dims, Cell)],
) {
    ok(
        store.put_cells(day, level, generation, cells).await,
        "GoldStore::put_cells",
    );
}

async fn delete_cells(store: &dyn GoldStore, day: NaiveDate, level: Level, generation: u64) {
    ok(
        store.delete_cells(day, level, generation).await,
        "GoldStore::delete_cells",
    );
}

/// `put_cells` then `cells` round-trips dims, measures and sketches (sparse and dense), also for
/// 300 cells in one call.
pub async fn gold_cells_round_trip(store: &dyn GoldStore) {
    let day = random_day();
    let g = generation();
    let cells = sample_cells();
    assert!(
        cells[0].1.viewers.is_dense() && !cells[1].1.viewers.is_dense(),
        "the sample must hold dense and sparse sketches"
    );
    assert_cells(
        store,
        (day, Level::Day, g, None),
        &[],
        "nothing written yet",
    )
    .await;
    put_cells(store, day, Level::Day, g, &cells).await;
    assert_cells(store, (day, Level::Day, g, None), &cells, "round trip").await;

    // Many cells in one call (DynamoDB writes 25 at a time).
    let g2 = generation();
    let contents: Vec<String> = (0..30).map(|i| format!("c-{i:03}")).collect();
    let mut many = Vec::new();
    for (ci, c) in ["FR", "DE"].into_iter().enumerate() {
        for (di, device) in Device::ALL.into_iter().enumerate() {
            for (ki, content) in contents.iter().enumerate() {
                let seed = (ci * 1_000 + di * 100 + ki) as u64;
                many.push((
                    dims(Some(c), Some(device), Some("genre"), Some(content)),
                    cell(seed, sketch(ki % 4 + 1)),
                ));
            }
        }
    }
    assert_eq!(many.len(), 300);
    put_cells(store, day, Level::Hour(7), g2, &many).await;
    assert_cells(
        store,
        (day, Level::Hour(7), g2, None),
        &many,
        "300 cells in one call",
    )
    .await;
    assert_cells(
        store,
        (day, Level::Day, g, None),
        &cells,
        "another level and generation untouched",
    )
    .await;

    delete_cells(store, day, Level::Day, g).await;
    delete_cells(store, day, Level::Hour(7), g2).await;
    assert_cells(
        store,
        (day, Level::Hour(7), g2, None),
        &[],
        "300 cells deleted",
    )
    .await;
}

/// `cells` with `Some(cuboid)` returns only that cuboid's cells; `None` all of them.
pub async fn gold_cells_by_cuboid(store: &dyn GoldStore) {
    let day = random_day();
    let g = generation();
    let cells = sample_cells();
    put_cells(store, day, Level::Hour(12), g, &cells).await;
    let mut cuboids: BTreeSet<Cuboid> = cells.iter().map(|(d, _)| cuboid_of(d)).collect();
    cuboids.insert(Cuboid::of(&[Dim::Country, Dim::ContentId]));
    for c in cuboids {
        let want: Vec<_> = cells
            .iter()
            .filter(|(d, _)| cuboid_of(d) == c)
            .cloned()
            .collect();
        assert_cells(
            store,
            (day, Level::Hour(12), g, Some(c)),
            &want,
            &format!("only the cells of cuboid {c} (bits {:#06b})", c.bits()),
        )
        .await;
    }
    assert_cells(
        store,
        (day, Level::Hour(12), g, None),
        &cells,
        "no cuboid: all cells",
    )
    .await;
    delete_cells(store, day, Level::Hour(12), g).await;
}

/// `cells_where` returns exactly the cells of the cuboid its filter keeps, with or without the
/// country hint, for one country, several, a country without cells, a filter on another
/// dimension, and a hint wider than the filter (the filter decides).
pub async fn gold_cells_where(store: &dyn GoldStore) {
    let day = random_day();
    let g = generation();
    let mut cells = Vec::new();
    for (i, country) in ["FR", "DE", "BR"].into_iter().enumerate() {
        for (k, content) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let seed = (i * 10 + k) as u64;
            cells.push((
                dims(Some(country), None, None, Some(content)),
                cell(seed, sketch(k + 1)),
            ));
        }
        cells.push((
            dims(Some(country), None, None, None),
            cell(100 + i as u64, sketch(3)),
        ));
    }
    for (k, content) in ["a", "b", "c", "d"].into_iter().enumerate() {
        cells.push((
            dims(None, None, None, Some(content)),
            cell(200 + k as u64, sketch(2)),
        ));
    }
    put_cells(store, day, Level::Day, g, &cells).await;
    let country = |c: &str| Country::parse(c).expect("a country");
    let by_country_content = Cuboid::of(&[Dim::Country, Dim::ContentId]);
    let by_content = Cuboid::of(&[Dim::ContentId]);
    type Keep = fn(&DimsRef<'_>) -> bool;
    let cases: [(&str, Cuboid, Keep, Option<Vec<Country>>); 7] = [
        (
            "BR, hinted",
            by_country_content,
            |d| d.country.is_some_and(|c| c.as_str() == "BR"),
            Some(vec![country("BR")]),
        ),
        (
            "BR, no hint",
            by_country_content,
            |d| d.country.is_some_and(|c| c.as_str() == "BR"),
            None,
        ),
        (
            "FR or DE",
            by_country_content,
            |d| d.country.is_some_and(|c| c.as_str() != "BR"),
            Some(vec![country("DE"), country("FR")]),
        ),
        (
            "a country without cells",
            by_country_content,
            |d| d.country.is_some_and(|c| c.as_str() == "PT"),
            Some(vec![country("PT")]),
        ),
        (
            "hint wider than the filter",
            by_country_content,
            |d| d.country.is_some_and(|c| c.as_str() == "DE") && d.content_id == Some("b"),
            Some(vec![country("DE"), country("BR")]),
        ),
        (
            "content only",
            by_content,
            |d| d.content_id == Some("c"),
            None,
        ),
        (
            "a hint on a cuboid without country",
            by_content,
            |d| d.content_id == Some("c"),
            Some(vec![country("BR")]),
        ),
    ];
    for (what, cuboid, keep, countries) in cases {
        let want = sorted_cells(
            cells
                .iter()
                .filter(|(d, _)| cuboid_of(d) == cuboid && keep(&d.as_ref()))
                .cloned()
                .collect(),
        );
        let select = CellSelect {
            keep: &keep,
            countries,
        };
        let got = sorted_cells(ok(
            store.cells_where(day, Level::Day, g, cuboid, &select).await,
            "GoldStore::cells_where",
        ));
        let got_dims: Vec<&Dims> = got.iter().map(|(d, _)| d).collect();
        let want_dims: Vec<&Dims> = want.iter().map(|(d, _)| d).collect();
        assert_eq!(
            got_dims, want_dims,
            "GoldStore::cells_where must return exactly the kept cells of cuboid {cuboid} ({what})"
        );
        for ((d, g), (_, w)) in got.iter().zip(&want) {
            assert!(
                g.measures == w.measures && g.viewers == w.viewers,
                "GoldStore::cells_where must return {d:?} whole ({what})"
            );
        }
    }
    delete_cells(store, day, Level::Day, g).await;
}

/// Cells of the country × title cuboid in two countries (BR holds two of the three), for the
/// tests that write a block in a store's layout from before blocks were split by country.
pub fn unsplit_sample() -> (Cuboid, Vec<(Dims, Cell)>) {
    let cell = |country: &str, content: &str, plays: u64| {
        let mut c = Cell::default();
        c.measures.plays = plays;
        c.viewers.insert(plays);
        (dims(Some(country), None, None, Some(content)), c)
    };
    (
        Cuboid::of(&[Dim::Country, Dim::ContentId]),
        vec![cell("BR", "a", 5), cell("FR", "a", 3), cell("BR", "b", 2)],
    )
}

/// Given [`unsplit_sample`]'s cells written by the caller as one block in the store's layout
/// from before the split, at (`day`, the day level, `generation`): the store reads them whole,
/// and a read filtered on BR (with the country hint) finds BR's two cells in that block. The
/// same cells written now at `generation + 1` read the same way.
pub async fn gold_reads_unsplit_block(store: &dyn GoldStore, day: NaiveDate, generation: u64) {
    let (cuboid, cells) = unsplit_sample();
    assert_cells(
        store,
        (day, Level::Day, generation, Some(cuboid)),
        &cells,
        "a block written before the split by country",
    )
    .await;
    let br = Country::parse("BR").expect("BR");
    let keep = |d: &DimsRef<'_>| d.country == Some(br);
    let select = CellSelect {
        keep: &keep,
        countries: Some(vec![br]),
    };
    for (g, what) in [(generation, "before"), (generation + 1, "after")] {
        if g != generation {
            put_cells(store, day, Level::Day, g, &cells).await;
        }
        let got = ok(
            store.cells_where(day, Level::Day, g, cuboid, &select).await,
            "GoldStore::cells_where",
        );
        assert!(
            got.len() == 2 && got.iter().all(|(d, _)| d.country == Some(br)),
            "GoldStore::cells_where must find BR's two cells in a block written {what} the \
             split by country, got {got:?}"
        );
    }
}

/// Where cells are written: day, level, generation, and the cells.
type Slot = (NaiveDate, Level, u64, Vec<(Dims, Cell)>);

/// Cells are isolated by day, level (every hour and the day) and generation.
pub async fn gold_levels_and_generations(store: &dyn GoldStore) {
    let day = random_day();
    let next = day.succ_opt().expect("a next day");
    let (g1, g2) = (generation(), generation());
    let sample = sample_cells();
    // A distinct set of cells per slot: the same dims with a different seed.
    let slot = |k: u64| -> Vec<(Dims, Cell)> {
        sample
            .iter()
            .take(4)
            .map(|(d, c)| {
                (
                    d.clone(),
                    cell(k * 10 + c.measures.plays, sketch(k as usize + 1)),
                )
            })
            .collect()
    };
    let slots: Vec<Slot> = vec![
        (day, Level::Hour(3), g1, slot(1)),
        (day, Level::Hour(3), g2, slot(2)),
        (day, Level::Day, g1, slot(3)),
        (day, Level::Hour(0), g1, slot(4)),
        (day, Level::Hour(23), g1, slot(5)),
        (day, Level::Hour(4), g1, slot(6)),
        (next, Level::Hour(3), g1, slot(7)),
    ];
    for (d, l, g, cells) in &slots {
        put_cells(store, *d, *l, *g, cells).await;
    }
    for (d, l, g, cells) in &slots {
        assert_cells(
            store,
            (*d, *l, *g, None),
            cells,
            "cells of another day, level or generation must not show",
        )
        .await;
    }
    for (l, g) in [
        (Level::Hour(5), g1),
        (Level::Day, g2),
        (Level::Hour(0), g2),
        (Level::Hour(13), g1),
    ] {
        assert_cells(
            store,
            (day, l, g, None),
            &[],
            "a level and generation never written",
        )
        .await;
    }
    for (d, l, g, _) in &slots {
        delete_cells(store, *d, *l, *g).await;
    }
}

/// Writing the same cells again (whole or overlapping) leaves each cell once.
pub async fn gold_put_cells_idempotent(store: &dyn GoldStore) {
    let day = random_day();
    let g = generation();
    let cells = sample_cells();
    put_cells(store, day, Level::Day, g, &cells).await;
    put_cells(store, day, Level::Day, g, &cells).await;
    assert_cells(
        store,
        (day, Level::Day, g, None),
        &cells,
        "writing the same cells again is harmless: no duplicates",
    )
    .await;
    let c = cuboid_of(&cells[1].0);
    let want: Vec<_> = cells
        .iter()
        .filter(|(d, _)| cuboid_of(d) == c)
        .cloned()
        .collect();
    assert_cells(
        store,
        (day, Level::Day, g, Some(c)),
        &want,
        "rewritten, by cuboid",
    )
    .await;
    // A call writes the whole level: a second call with other cells replaces the first.
    let half = cells.len() / 2;
    put_cells(store, day, Level::Day, g, &cells[half..]).await;
    assert_cells(
        store,
        (day, Level::Day, g, None),
        &cells[half..],
        "a second put_cells for the same level and generation replaces the first",
    )
    .await;
    delete_cells(store, day, Level::Day, g).await;
}

async fn stale(store: &dyn GoldStore, day: NaiveDate, keep: &[(Level, u64)]) -> Vec<(Level, u64)> {
    let mut v = ok(
        store.stale_generations(day, keep).await,
        "GoldStore::stale_generations",
    );
    v.sort();
    v
}

fn sorted_pairs(v: &[(Level, u64)]) -> Vec<(Level, u64)> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// `stale_generations` lists exactly the (level, generation) pairs of the day not in `keep`,
/// once each; `delete_cells` removes only its level and generation of its day.
pub async fn gold_stale_and_delete(store: &dyn GoldStore) {
    let day = random_day();
    let next = day.succ_opt().expect("a next day");
    let (g1, g2, g3) = (generation(), generation(), generation());
    let cells = sample_cells();
    let present = [
        (Level::Hour(1), g1),
        (Level::Hour(2), g1),
        (Level::Day, g1),
        (Level::Hour(1), g2),
        (Level::Day, g2),
    ];
    assert_eq!(
        stale(store, day, &[]).await,
        vec![],
        "GoldStore::stale_generations of a day without cells must be empty"
    );
    for (l, g) in present {
        put_cells(store, day, l, g, &cells).await;
    }
    put_cells(store, next, Level::Hour(1), g3, &cells).await;
    put_cells(store, next, Level::Day, g1, &cells).await;

    assert_eq!(
        stale(store, day, &[(Level::Hour(1), g2), (Level::Day, g2)]).await,
        sorted_pairs(&[(Level::Hour(1), g1), (Level::Hour(2), g1), (Level::Day, g1)]),
        "GoldStore::stale_generations must list exactly the (level, generation) pairs stored for \
         the day and not kept, each once, none of another day"
    );
    assert_eq!(
        stale(store, day, &[]).await,
        sorted_pairs(&present),
        "GoldStore::stale_generations with nothing kept lists every pair of the day"
    );
    assert_eq!(
        stale(store, day, &present).await,
        vec![],
        "GoldStore::stale_generations with everything kept is empty"
    );
    assert_eq!(
        stale(
            store,
            day,
            &[(Level::Hour(2), g2), (Level::Hour(9), g1), (Level::Day, g3)]
        )
        .await,
        sorted_pairs(&present),
        "GoldStore::stale_generations: a kept pair matches on level AND generation"
    );

    delete_cells(store, day, Level::Hour(1), g1).await;
    assert_cells(store, (day, Level::Hour(1), g1, None), &[], "deleted").await;
    for (l, g) in &present[1..] {
        assert_cells(
            store,
            (day, *l, *g, None),
            &cells,
            "GoldStore::delete_cells must remove only its level and generation",
        )
        .await;
    }
    assert_cells(
        store,
        (next, Level::Hour(1), g3, None),
        &cells,
        "GoldStore::delete_cells must not touch another day",
    )
    .await;
    assert_cells(
        store,
        (next, Level::Day, g1, None),
        &cells,
        "GoldStore::delete_cells must not touch another day, same generation",
    )
    .await;
    assert_eq!(
        stale(store, day, &[]).await,
        sorted_pairs(&present[1..]),
        "GoldStore::stale_generations must not list a deleted generation"
    );
    // Deleting what does not exist is harmless.
    delete_cells(store, day, Level::Hour(1), g1).await;
    delete_cells(store, day, Level::Hour(17), g3).await;

    for (l, g) in &present[1..] {
        delete_cells(store, day, *l, *g).await;
    }
    delete_cells(store, next, Level::Hour(1), g3).await;
    delete_cells(store, next, Level::Day, g1).await;
    assert_eq!(stale(store, day, &[]).await, vec![], "all deleted");
    assert_eq!(stale(store, next, &[]).await, vec![], "all deleted");
}

// ---------------------------------------------------------------------------------------------
// CatalogStore
// ---------------------------------------------------------------------------------------------

async fn load_entry(store: &dyn CatalogStore, content_id: &str) -> Option<CatalogEntry> {
    ok(store.load().await, "CatalogStore::load")
        .get(content_id)
        .cloned()
}

/// Put then load; a later put of the same content id replaces it, `None` fields included; within
/// one call the later entry wins; many entries in one call.
pub async fn catalog_store(store: &dyn CatalogStore) {
    let s = unique("catalog");
    let full = CatalogEntry {
        content_id: format!("{s}-full"),
        title: "The Title".into(),
        genre: "drama".into(),
        release_year: Some(1999),
        duration_seconds: Some(5_400),
    };
    let bare = CatalogEntry {
        content_id: format!("{s}-bare"),
        title: String::new(),
        genre: "unknown".into(),
        release_year: None,
        duration_seconds: None,
    };
    let odd = CatalogEntry {
        content_id: format!("{s}-#odd, \"id\" é"),
        title: "L'émission, \"spéciale\" #1 日本 🎬".into(),
        genre: "drama, noir#2".into(),
        release_year: Some(u16::MAX),
        duration_seconds: Some(u32::MAX),
    };
    ok(
        store.put_entries(&[]).await,
        "CatalogStore::put_entries(&[])",
    );
    ok(
        store
            .put_entries(&[full.clone(), bare.clone(), odd.clone()])
            .await,
        "CatalogStore::put_entries",
    );
    for e in [&full, &bare, &odd] {
        assert_eq!(
            load_entry(store, &e.content_id).await.as_ref(),
            Some(e),
            "CatalogStore::load must return every field of an entry put (None fields as None)"
        );
    }

    let replaced = CatalogEntry {
        content_id: full.content_id.clone(),
        title: "Another Title".into(),
        genre: "comedy".into(),
        release_year: None,
        duration_seconds: None,
    };
    ok(
        store.put_entries(std::slice::from_ref(&replaced)).await,
        "CatalogStore::put_entries (replace)",
    );
    assert_eq!(
        load_entry(store, &full.content_id).await.as_ref(),
        Some(&replaced),
        "CatalogStore::put_entries of a known content id must replace the entry, including optional \
         fields now None"
    );
    assert_eq!(
        load_entry(store, &bare.content_id).await.as_ref(),
        Some(&bare),
        "CatalogStore::put_entries must not touch other entries"
    );

    // A catalog file may list a content id twice; entries are applied in order.
    let twice = CatalogEntry {
        content_id: format!("{s}-twice"),
        title: "first".into(),
        genre: "a".into(),
        release_year: Some(2000),
        duration_seconds: None,
    };
    let twice_later = CatalogEntry {
        title: "second".into(),
        release_year: None,
        duration_seconds: Some(60),
        ..twice.clone()
    };
    ok(
        store.put_entries(&[twice, twice_later.clone()]).await,
        "CatalogStore::put_entries with a content id twice",
    );
    assert_eq!(
        load_entry(store, &twice_later.content_id).await.as_ref(),
        Some(&twice_later),
        "CatalogStore::put_entries: within one call, the later entry of a content id wins"
    );

    // Many entries in one call (DynamoDB writes 25 at a time).
    let many: Vec<CatalogEntry> = (0..120)
        .map(|i| CatalogEntry {
            content_id: format!("{s}-many-{i:03}"),
            title: format!("Title {i}"),
            genre: ["drama", "comedy", "kids"][i % 3].into(),
            release_year: (i % 2 == 0).then_some(1950 + i as u16),
            duration_seconds: (i % 3 == 0).then_some(60 * i as u32),
        })
        .collect();
    ok(
        store.put_entries(&many).await,
        "CatalogStore::put_entries of 120 entries",
    );
    let catalog = ok(store.load().await, "CatalogStore::load");
    for e in &many {
        assert_eq!(
            catalog.get(&e.content_id),
            Some(e),
            "CatalogStore::load must return every one of 120 entries put in one call"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// LedgerStore
// ---------------------------------------------------------------------------------------------

async fn processed(store: &dyn LedgerStore, key: &str, version: &str) -> Option<FileReport> {
    ok(
        store.processed(key, version).await,
        "LedgerStore::processed",
    )
}

async fn mark(store: &dyn LedgerStore, key: &str, version: &str, report: &FileReport) {
    ok(
        store.mark_processed(key, version, report).await,
        "LedgerStore::mark_processed",
    );
}

/// `processed` is `None` until `mark_processed`, then the same report; versions and keys are
/// separate (also when a joined key would not tell them apart); marking again is harmless.
pub async fn ledger_store(store: &dyn LedgerStore) {
    let s = unique("ledger");
    let key = format!("bronze/{s}/events 2024-01-01 #1.csv.gz");
    let (v1, v2) = ("3HL4kqtJvjVBH40Nrjfkd", "null");
    let r1 = FileReport {
        rows: 1_000,
        accepted: 990,
        duplicates: 4,
        rejected: 6,
        rejected_by_reason: [
            ("country.unknown_country".to_owned(), 5),
            ("watch_seconds.out_of_range".to_owned(), 1),
        ]
        .into(),
    };
    let r2 = FileReport {
        rows: 3,
        accepted: 3,
        ..FileReport::default()
    };

    assert_eq!(
        processed(store, &key, v1).await,
        None,
        "LedgerStore::processed of an object version never marked must be None"
    );
    mark(store, &key, v1, &r1).await;
    assert_eq!(
        processed(store, &key, v1).await.as_ref(),
        Some(&r1),
        "LedgerStore::processed must return the report given to mark_processed, every field"
    );
    assert_eq!(
        processed(store, &key, v2).await,
        None,
        "LedgerStore::processed: another version of the same key is not processed"
    );
    assert_eq!(
        processed(store, &format!("{key}.bak"), v1).await,
        None,
        "LedgerStore::processed: another key with the same version is not processed"
    );
    mark(store, &key, v2, &r2).await;
    assert_eq!(processed(store, &key, v2).await.as_ref(), Some(&r2));
    assert_eq!(
        processed(store, &key, v1).await.as_ref(),
        Some(&r1),
        "LedgerStore::mark_processed of one version must not touch another"
    );
    // Redelivered work marks again.
    mark(store, &key, v1, &r1).await;
    assert_eq!(
        processed(store, &key, v1).await.as_ref(),
        Some(&r1),
        "LedgerStore::mark_processed again with the same report is harmless"
    );

    // Keys and versions are separate values, not a joined string.
    let k = format!("bronze/{s}/k");
    mark(store, &format!("{k}#x"), "v", &r2).await;
    mark(store, &format!("{k}:x"), "v", &r2).await;
    for (key, version) in [
        (k.clone(), "x#v".to_owned()),
        (k.clone(), "x:v".to_owned()),
        (format!("{k}#x#v"), String::new()),
        (format!("{k}#x"), "V".to_owned()),
    ] {
        assert_eq!(
            processed(store, &key, &version).await,
            None,
            "LedgerStore::processed({key:?}, {version:?}) must be None: only ({k}#x, v) and \
             ({k}:x, v) were marked"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ChangeFeed
// ---------------------------------------------------------------------------------------------

/// The pending counters of `hours` (others' hours are ignored).
async fn pending_of(feed: &dyn ChangeFeed, hours: &[i64]) -> BTreeMap<i64, u64> {
    let all = ok(feed.pending().await, "ChangeFeed::pending");
    let mut seen = BTreeSet::new();
    for (h, _) in &all {
        assert!(
            seen.insert(*h),
            "ChangeFeed::pending must list each hour once, {h} is listed twice"
        );
    }
    all.into_iter().filter(|(h, _)| hours.contains(h)).collect()
}

async fn ack(feed: &dyn ChangeFeed, hour: i64, seen: u64) {
    ok(feed.ack(hour, seen).await, "ChangeFeed::ack");
}

/// Every [`ChangeFeed`] check.
pub async fn change_feed(feed: &dyn ChangeFeed, silver: &dyn SilverStore) {
    change_feed_marks_and_acks(feed, silver).await;
    change_feed_stale_ack_after_clear(feed, silver).await;
    change_feed_viewer_events_across_acks(feed, silver).await;
    change_feed_reported_changes(feed).await;
}

/// Changes reported from outside the silver write ([`ChangeFeed::mark`], as a table stream's
/// records are on AWS), on a feed that trusts its hour reads at once: marked hours are pending,
/// marking again is harmless, an acknowledgement with a token from before the latest change
/// clears nothing, and one with the current token clears that hour only. The one check a feed
/// fed by a stream can pass (the others write silver and expect the feed to follow).
pub async fn change_feed_reported_changes(feed: &dyn ChangeFeed) {
    let h1 = random_hour();
    let h2 = h1 + 1;
    let hours = [h1, h2];
    assert_eq!(
        pending_of(feed, &hours).await,
        BTreeMap::new(),
        "hours never marked must not be pending"
    );
    ok(feed.mark(&hours).await, "ChangeFeed::mark");
    ok(feed.mark(&[h2]).await, "ChangeFeed::mark again");
    let p = pending_of(feed, &hours).await;
    assert_eq!(
        p.keys().copied().collect::<Vec<_>>(),
        hours,
        "ChangeFeed::pending must list the marked hours"
    );
    ack(feed, h1, p[&h1]).await;
    assert_eq!(
        pending_of(feed, &hours).await,
        BTreeMap::from([(h2, p[&h2])]),
        "ChangeFeed::ack with the current token clears that hour only"
    );
    ok(
        feed.mark(&[h2]).await,
        "ChangeFeed::mark between pending and ack",
    );
    ack(feed, h2, p[&h2]).await;
    let again = pending_of(feed, &hours).await;
    assert_eq!(
        again.keys().copied().collect::<Vec<_>>(),
        [h2],
        "an hour marked after it was listed must stay pending after the stale ack"
    );
    ack(feed, h2, again[&h2]).await;
    ack(feed, h2, again[&h2]).await;
    assert_eq!(
        pending_of(feed, &hours).await,
        BTreeMap::new(),
        "acknowledged hours must not be pending (a repeated ack is harmless)"
    );
    ok(feed.mark(&[h1]).await, "ChangeFeed::mark after the ack");
    assert_eq!(
        pending_of(feed, &hours)
            .await
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [h1],
        "an hour marked after its acknowledgement must be pending again"
    );
}

/// A store may index viewers when an hour is acknowledged rather than per insert (the embedded
/// one does): `viewer_events` must still find every event of the viewer, whether its hour is
/// pending, acknowledged, acknowledged with a stale counter, or pending again after more inserts
/// and deletes; and nothing of a deleted event.
pub async fn change_feed_viewer_events_across_acks(
    feed: &dyn ChangeFeed,
    silver: &dyn SilverStore,
) {
    let s = unique("feed-viewer");
    let h = random_hour();
    let (v, other) = (viewer(), viewer());
    let a = event(&format!("{s}-a"), at(h) + 1, v, "");
    let b = event(&format!("{s}-b"), at(h + 1) + 1, v, "");
    let c = event(&format!("{s}-c"), at(h) + 2, v, "");
    let d = event(&format!("{s}-d"), at(h) + 3, v, "");
    let x = event(&format!("{s}-x"), at(h) + 4, other, "");
    let id = |e: &SilverEvent, hour: i64| (e.event_id.clone(), hour);

    put(silver, &[a.clone(), b.clone(), x.clone()], "put_new a b x").await;
    assert_viewer(
        silver,
        &v,
        &[id(&a, h), id(&b, h + 1)],
        "both hours pending",
    )
    .await;
    let seen = pending_of(feed, &[h, h + 1]).await;
    ack(feed, h, seen[&h]).await;
    assert_viewer(
        silver,
        &v,
        &[id(&a, h), id(&b, h + 1)],
        "one hour acknowledged",
    )
    .await;
    ack(feed, h + 1, seen[&(h + 1)]).await;
    assert_viewer(
        silver,
        &v,
        &[id(&a, h), id(&b, h + 1)],
        "both hours acknowledged",
    )
    .await;

    // More events in an acknowledged hour, then a stale ack (the counter read before them).
    put(silver, std::slice::from_ref(&c), "put_new c").await;
    let all = [id(&a, h), id(&b, h + 1), id(&c, h)];
    assert_viewer(silver, &v, &all, "an event added to an acknowledged hour").await;
    ack(feed, h, seen[&h]).await;
    assert_viewer(silver, &v, &all, "after a stale ack of that hour").await;
    let now = pending_of(feed, &[h]).await[&h];
    ack(feed, h, now).await;
    assert_viewer(silver, &v, &all, "that hour acknowledged again").await;

    // Deleting events of an acknowledged hour, and one more insert there.
    assert_eq!(
        delete(silver, std::slice::from_ref(&a.event_id), "delete a").await,
        1
    );
    put(silver, std::slice::from_ref(&d), "put_new d").await;
    let left = [id(&b, h + 1), id(&c, h), id(&d, h)];
    assert_viewer(silver, &v, &left, "a deleted event and a new one, pending").await;
    let now = pending_of(feed, &[h]).await[&h];
    ack(feed, h, now).await;
    assert_viewer(
        silver,
        &v,
        &left,
        "a deleted event and a new one, acknowledged",
    )
    .await;
    assert_viewer(silver, &other, &[id(&x, h)], "the other viewer of the hour").await;

    // The latest event deleted after its hour was acknowledged, then another viewer's event:
    // a store that numbers rows may give it the deleted one's number, and must not hand it to
    // the first viewer.
    let y = event(&format!("{s}-y"), at(h) + 5, v, "");
    let z = event(&format!("{s}-z"), at(h) + 6, other, "");
    put(silver, std::slice::from_ref(&y), "put_new y").await;
    let now = pending_of(feed, &[h]).await[&h];
    ack(feed, h, now).await;
    assert_eq!(
        delete(silver, std::slice::from_ref(&y.event_id), "delete y").await,
        1
    );
    put(silver, std::slice::from_ref(&z), "put_new z").await;
    assert_viewer(silver, &v, &left, "after a deleted event's place was taken").await;
    let now = pending_of(feed, &[h]).await[&h];
    ack(feed, h, now).await;
    assert_viewer(silver, &v, &left, "after that hour was acknowledged again").await;
    assert_viewer(silver, &other, &[id(&x, h), id(&z, h)], "the other viewer").await;

    cleanup(silver, &[a, b, c, d, x, y, z]).await;
    assert_viewer(silver, &v, &[], "after deleting the viewer's events").await;
    assert_viewer(
        silver,
        &other,
        &[],
        "after deleting the other viewer's event",
    )
    .await;
}

/// Inserting events marks their hours pending; a duplicate does not; `ack` with the current
/// counter clears the hour, with an older counter (a change arrived after `pending`) does not;
/// deleting events marks their hours pending.
pub async fn change_feed_marks_and_acks(feed: &dyn ChangeFeed, silver: &dyn SilverStore) {
    use PutOutcome::*;
    let s = unique("feed");
    let h1 = random_hour();
    let h2 = h1 + 1;
    let hours = [h1, h2];
    let v = viewer();
    let origin = format!("bronze/{s}.csv#v1:2");
    let a = event(&format!("{s}-a"), at(h1) + 1, v, &origin);
    let b = event(&format!("{s}-b"), at(h2) + 1, v, "");
    let c = event(&format!("{s}-c"), at(h2) + 2, v, "");

    assert_eq!(
        pending_of(feed, &hours).await,
        BTreeMap::new(),
        "hours never written must not be pending"
    );
    put(silver, &[a.clone(), b.clone()], "put_new").await;
    let p = pending_of(feed, &hours).await;
    assert_eq!(
        p.keys().copied().collect::<Vec<_>>(),
        hours,
        "ChangeFeed::pending must list the hours of inserted events"
    );
    let (c1, c2) = (p[&h1], p[&h2]);

    // Duplicates change nothing in silver, so nothing in the feed.
    let dup = SilverEvent {
        origin: "other".into(),
        ..a.clone()
    };
    assert_eq!(
        put(silver, std::slice::from_ref(&dup), "put_new duplicate").await,
        [Duplicate]
    );
    assert_eq!(
        pending_of(feed, &hours).await,
        p,
        "a duplicate changes no partition: the counters must not move (and no hour may be lost)"
    );

    ack(feed, h1, c1).await;
    assert_eq!(
        pending_of(feed, &hours).await,
        BTreeMap::from([(h2, c2)]),
        "ChangeFeed::ack with the current counter clears that hour only"
    );
    assert_eq!(
        put(silver, &[a.clone(), dup], "put_new again").await,
        [AlreadyStored, Duplicate]
    );
    assert_eq!(
        pending_of(feed, &hours).await,
        BTreeMap::from([(h2, c2)]),
        "AlreadyStored and Duplicate outcomes must not mark a consolidated hour pending again"
    );

    // A change between pending() and ack(): the ack with the old counter is a no-op.
    assert_eq!(
        put(silver, std::slice::from_ref(&c), "put_new c").await,
        [Inserted]
    );
    let p = pending_of(feed, &hours).await;
    let c2_new = *p
        .get(&h2)
        .expect("ChangeFeed::pending: an hour with a new insert must stay pending");
    assert_ne!(
        c2_new, c2,
        "ChangeFeed::pending: an insert into a pending hour must change its counter"
    );
    ack(feed, h2, c2).await;
    assert_eq!(
        pending_of(feed, &hours).await,
        BTreeMap::from([(h2, c2_new)]),
        "ChangeFeed::ack with a counter seen before a later insert must not clear the hour"
    );
    ack(feed, h2, c2_new).await;
    assert_eq!(
        pending_of(feed, &hours).await,
        BTreeMap::new(),
        "ChangeFeed::ack with the current counter clears the hour"
    );
    // Acking an hour that is not pending is harmless.
    ack(feed, h2, c2_new).await;
    ack(feed, h1 - 1, 1).await;

    // Deletes change partitions.
    assert_eq!(
        delete(
            silver,
            std::slice::from_ref(&a.event_id),
            "SilverStore::delete a"
        )
        .await,
        1
    );
    let p = pending_of(feed, &hours).await;
    assert_eq!(
        p.keys().copied().collect::<Vec<_>>(),
        [h1],
        "deleting an event must mark its hour pending"
    );
    ack(feed, h1, p[&h1]).await;
    assert_eq!(
        delete(
            silver,
            &[b.event_id.clone(), c.event_id.clone()],
            "SilverStore::delete b, c"
        )
        .await,
        2
    );
    let p = pending_of(feed, &hours).await;
    assert_eq!(
        p.keys().copied().collect::<Vec<_>>(),
        [h2],
        "deleting events must mark their hour pending"
    );
    ack(feed, h2, p[&h2]).await;
    assert_eq!(
        delete(
            silver,
            std::slice::from_ref(&a.event_id),
            "SilverStore::delete a again"
        )
        .await,
        0
    );
    assert_eq!(
        pending_of(feed, &hours).await,
        BTreeMap::new(),
        "deleting events that do not exist changes no partition"
    );
}

/// Two consolidators read the same counter; the first acks (clearing the hour), an insert
/// arrives, then the second acks with the counter it read. That ack must not clear the hour: a
/// change arrived after the counter was read ("Clears an hour if its counter is still `seen` (no
/// change arrived meanwhile)"). A counter that restarts after a clear would let it.
pub async fn change_feed_stale_ack_after_clear(feed: &dyn ChangeFeed, silver: &dyn SilverStore) {
    let s = unique("feed-aba");
    let h = random_hour();
    let v = viewer();
    let a = event(&format!("{s}-a"), at(h) + 1, v, "");
    let b = event(&format!("{s}-b"), at(h) + 2, v, "");
    put(silver, std::slice::from_ref(&a), "put_new a").await;
    let seen = pending_of(feed, &[h]).await[&h];
    // consolidator 1 and 2 both read `seen`; consolidator 1 acks.
    ack(feed, h, seen).await;
    assert_eq!(pending_of(feed, &[h]).await, BTreeMap::new());
    // A new event arrives, then consolidator 2 (which read silver before it) acks.
    put(silver, std::slice::from_ref(&b), "put_new b").await;
    let now = pending_of(feed, &[h]).await;
    ack(feed, h, seen).await;
    let after = pending_of(feed, &[h]).await;
    cleanup(silver, &[a, b]).await;
    let left = pending_of(feed, &[h]).await;
    if let Some(c) = left.get(&h) {
        ack(feed, h, *c).await;
    }
    assert!(
        after.contains_key(&h),
        "ChangeFeed::ack(hour, {seen}) with a counter read before the hour was cleared and changed \
         again must not clear it: pending was {now:?} before that ack and {after:?} after (the \
         counter restarted after the clear, so a stale ack matched the new change)"
    );
}
