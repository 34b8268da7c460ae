//! The port conformance suite (`streamcube_pipeline::conformance`) against the embedded SQLite
//! backend: each check on a fresh data directory, then everything at once on one shared store.

use streamcube_embedded::EmbeddedBackend;
use streamcube_pipeline::conformance;

fn open() -> (tempfile::TempDir, EmbeddedBackend) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let backend = EmbeddedBackend::open(dir.path()).expect("the embedded backend opens");
    (dir, backend)
}

/// One `#[tokio::test]` per check, each on its own fresh backend.
macro_rules! checks {
    ($port:ident: $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (_dir, backend) = open();
                conformance::$check(&*backend.stores().$port).await;
            }
        )+
    };
}

checks!(silver:
    silver_outcomes,
    silver_repeat_within_call,
    silver_repeat_same_origin_within_call,
    silver_first_writer_wins,
    silver_round_trip,
    silver_hour_boundaries,
    silver_viewer_events,
    silver_delete,
    silver_large_batch,
);

checks!(gold:
    gold_manifest_publish,
    gold_concurrent_publish,
    gold_cells_round_trip,
    gold_cells_by_cuboid,
    gold_cells_where,
    gold_levels_and_generations,
    gold_put_cells_idempotent,
    gold_stale_and_delete,
);

checks!(catalog: catalog_store);
checks!(ledger: ledger_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_marks_and_acks() {
    let (_dir, backend) = open();
    conformance::change_feed_marks_and_acks(&*backend.change_feed(), &*backend.stores().silver)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_reported_changes() {
    let (_dir, backend) = open();
    conformance::change_feed_reported_changes(&*backend.change_feed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_stale_ack_after_clear() {
    let (_dir, backend) = open();
    conformance::change_feed_stale_ack_after_clear(
        &*backend.change_feed(),
        &*backend.stores().silver,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_viewer_events_across_acks() {
    let (_dir, backend) = open();
    conformance::change_feed_viewer_events_across_acks(
        &*backend.change_feed(),
        &*backend.stores().silver,
    )
    .await;
}

/// Every check at the same time on one store, twice: the checks' keys must not collide, and a
/// store that already holds their earlier data must pass again (as shared DynamoDB tables will).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_concurrently_on_a_shared_store_twice() {
    let (_dir, backend) = open();
    let stores = backend.stores();
    let feed = backend.change_feed();
    for _ in 0..2 {
        tokio::join!(
            conformance::silver_store(&*stores.silver),
            conformance::gold_store(&*stores.gold),
            conformance::catalog_store(&*stores.catalog),
            conformance::ledger_store(&*stores.ledger),
            conformance::change_feed_marks_and_acks(&*feed, &*stores.silver),
            conformance::change_feed_viewer_events_across_acks(&*feed, &*stores.silver),
            conformance::change_feed_reported_changes(&*feed),
        );
    }
}

/// `conformance::all` and `conformance::change_feed` as an adapter crate would call them, on a
/// backend reopened from the same directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_then_reopened() {
    let (dir, backend) = open();
    conformance::all(&backend.stores()).await;
    drop(backend);
    let backend = EmbeddedBackend::open(dir.path()).expect("the embedded backend reopens");
    conformance::all(&backend.stores()).await;
    conformance::change_feed(&*backend.change_feed(), &*backend.stores().silver).await;
}
