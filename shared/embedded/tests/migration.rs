//! A data directory written by the first silver layout (a table keyed by `event_id` with a
//! per-row viewer index) opens with its events intact, found by id, hour and viewer, and
//! deduplicating as before; one written before gold blocks were split by country keeps its cube
//! readable, whole and by country; one with a unique index on `event_id` (versions 2 and 3)
//! gets its ids into the index written in sorted passes, and deduplicates as before; one whose
//! viewer index is keyed by whole pseudonyms (versions 2 to 4) has it re-keyed by their prefix,
//! and finds each viewer's events, even two viewers whose pseudonyms share the prefix.

use chrono::NaiveDate;
use rusqlite::{Connection, params};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::codec::encode_cells;
use streamcube_model::event::Country;
use streamcube_model::pseudonym::Pseudonym;
use streamcube_pipeline::conformance;
use streamcube_pipeline::ports::PutOutcome;

/// The first layout's silver tables, as it created them.
const FIRST_LAYOUT: &str = "
CREATE TABLE silver_events (
    event_id       TEXT PRIMARY KEY,
    hour           INTEGER NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    viewer         BLOB NOT NULL,
    content_id     TEXT NOT NULL,
    device         TEXT NOT NULL,
    country        TEXT NOT NULL,
    watch_seconds  INTEGER NOT NULL,
    bitrate_kbps   INTEGER,
    buffering_ms   INTEGER,
    completed      INTEGER NOT NULL,
    origin         TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX silver_by_hour ON silver_events(hour);
CREATE INDEX silver_by_viewer ON silver_events(viewer);
CREATE TABLE silver_changes (
    hour    INTEGER PRIMARY KEY,
    counter INTEGER NOT NULL,
    acked   INTEGER NOT NULL DEFAULT 0
);
";

const HOUR: i64 = 491_000;

fn viewer(n: u8) -> [u8; 32] {
    [n; 32]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_layout_store_is_migrated_on_open() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let c = Connection::open(dir.path().join("streamcube.db")).expect("db");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.execute_batch(FIRST_LAYOUT).expect("first layout");
        // 300 events over 3 hours and 3 viewers, inserted out of id order; hour 0 consolidated.
        for i in (0..300_u32).rev() {
            let hour = HOUR + i64::from(i % 3);
            c.execute(
                "INSERT INTO silver_events VALUES (?1, ?2, ?3, ?4, 'c1', 'tv', 'BR', 60, 3000, NULL, 1, ?5)",
                params![
                    format!("e{i:04}"),
                    hour,
                    hour * 3_600_000 + i64::from(i),
                    &viewer(u8::try_from(i % 7 % 3).expect("small"))[..],
                    if i < 10 { "bronze/a.csv#v1:2" } else { "" },
                ],
            )
            .expect("row");
        }
        c.execute_batch(&format!(
            "INSERT INTO silver_changes VALUES ({HOUR}, 4, 4), ({}, 2, 0), ({}, 1, 0);",
            HOUR + 1,
            HOUR + 2
        ))
        .expect("changes");
    }

    let backend = EmbeddedBackend::open(dir.path()).expect("the old store opens");
    let silver = backend.stores().silver;
    assert_eq!(backend.sqlite().silver_count().await.expect("count"), 300);
    for h in 0..3 {
        let events = silver.hour_events(HOUR + h).await.expect("hour");
        assert_eq!(events.len(), 100);
        assert!(events.windows(2).all(|w| w[0].event_id < w[1].event_id));
        assert!(events.iter().all(|e| e.hour() == HOUR + h));
    }
    // Every viewer's events, in the consolidated hour as in the pending ones.
    for n in 0..3_u8 {
        let mut got = silver
            .viewer_events(&Pseudonym::from_bytes(viewer(n)))
            .await
            .expect("viewer");
        got.sort();
        let want: Vec<(String, i64)> = (0..300_u32)
            .filter(|i| i % 7 % 3 == u32::from(n))
            .map(|i| (format!("e{i:04}"), HOUR + i64::from(i % 3)))
            .collect();
        assert_eq!(got, want, "viewer {n}");
    }
    // Ids stay unique: a resend from the same origin is recognised, another is a duplicate.
    let mut first = silver.hour_events(HOUR).await.expect("hour")[0].clone();
    assert_eq!(first.event_id, "e0000");
    let again = silver.put_new(&[first.clone()]).await.expect("put");
    assert_eq!(again, [PutOutcome::AlreadyStored]);
    first.origin = "other".into();
    assert_eq!(
        silver.put_new(&[first]).await.expect("put"),
        [PutOutcome::Duplicate]
    );

    // The new layout, recorded; reopening migrates nothing again.
    drop(silver);
    drop(backend);
    let c = Connection::open(dir.path().join("streamcube.db")).expect("db");
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 7);
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("names");
    assert!(!tables.iter().any(|t| t.contains("v1")), "{tables:?}");
    drop(c);
    let backend = EmbeddedBackend::open(dir.path()).expect("reopens");
    assert_eq!(backend.sqlite().silver_count().await.expect("count"), 300);
}

/// Version 2's gold table: one block per cuboid.
const UNSPLIT_GOLD: &str = "
CREATE TABLE gold_blocks (
    day        TEXT NOT NULL,
    level      INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    cuboid     INTEGER NOT NULL,
    cells      BLOB NOT NULL,
    PRIMARY KEY (day, level, generation, cuboid)
);
PRAGMA user_version = 2;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsplit_gold_blocks_stay_readable_after_the_split() {
    let dir = tempfile::tempdir().expect("tmp");
    let day = NaiveDate::from_ymd_opt(2026, 10, 5).expect("day");
    let (cuboid, cells) = conformance::unsplit_sample();
    {
        let c = Connection::open(dir.path().join("streamcube.db")).expect("db");
        c.execute_batch(UNSPLIT_GOLD).expect("version 2 gold");
        c.execute(
            "INSERT INTO gold_blocks VALUES ('2026-10-05', 24, 7, ?1, ?2)",
            params![cuboid.bits(), encode_cells(&cells)],
        )
        .expect("block");
    }
    let backend = EmbeddedBackend::open(dir.path()).expect("the old store opens");
    conformance::gold_reads_unsplit_block(&*backend.stores().gold, day, 7).await;

    // Generation 8, written after the migration: one block per country.
    drop(backend);
    let c = Connection::open(dir.path().join("streamcube.db")).expect("db");
    let parts: Vec<(i64, i64)> = c
        .prepare("SELECT generation, part FROM gold_blocks ORDER BY generation, part")
        .expect("sql")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("parts");
    let code = |c: &str| i64::from(Country::parse(c).expect("country").code()) + 1;
    let mut split = vec![(8, code("BR")), (8, code("FR"))];
    split.sort();
    assert_eq!(parts, [vec![(7, 0)], split].concat());
}

/// The silver tables of versions 2 to 4: an append-ordered table, its viewer index keyed by the
/// whole pseudonym.
const SEQ_SILVER: &str = "
CREATE TABLE silver_events (
    seq            INTEGER PRIMARY KEY,
    event_id       TEXT NOT NULL,
    hour           INTEGER NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    viewer         BLOB NOT NULL,
    content_id     TEXT NOT NULL,
    device         TEXT NOT NULL,
    country        TEXT NOT NULL,
    watch_seconds  INTEGER NOT NULL,
    bitrate_kbps   INTEGER,
    buffering_ms   INTEGER,
    completed      INTEGER NOT NULL,
    origin         TEXT NOT NULL
);
CREATE INDEX silver_by_hour ON silver_events(hour);
CREATE TABLE silver_viewers (
    hour   INTEGER NOT NULL,
    viewer BLOB NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (hour, viewer, seq)
) WITHOUT ROWID;
CREATE TABLE silver_changes (
    hour    INTEGER PRIMARY KEY,
    counter INTEGER NOT NULL,
    acked   INTEGER NOT NULL DEFAULT 0
);
";

/// Version 3: a unique index on `event_id`.
const VERSION_3_SILVER: &str = "
CREATE UNIQUE INDEX silver_by_id ON silver_events(event_id);
PRAGMA user_version = 3;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_store_moves_its_ids_to_the_sorted_index() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("streamcube.db");
    {
        let c = Connection::open(&db).expect("db");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.execute_batch(SEQ_SILVER).expect("silver");
        c.execute_batch(VERSION_3_SILVER).expect("version 3");
        for i in 0..50_i64 {
            c.execute(
                "INSERT INTO silver_events VALUES (?1, ?2, ?3, ?4, ?5, 'c1', 'tv', 'BR', 60, 3000, NULL, 1, 'bronze/a.csv#v1:2')",
                params![i + 1, format!("e{i:04}"), HOUR, HOUR * 3_600_000 + i, &viewer(1)[..]],
            )
            .expect("row");
        }
    }
    let backend = EmbeddedBackend::open(dir.path()).expect("the old store opens");
    let silver = backend.stores().silver;
    let mut old = silver.hour_events(HOUR).await.expect("hour")[7].clone();
    assert_eq!(
        silver.put_new(&[old.clone()]).await.expect("put"),
        [PutOutcome::AlreadyStored]
    );
    old.origin = "other".into();
    let mut new = old.clone();
    new.event_id = "e9999".into();
    assert_eq!(
        silver.put_new(&[old, new]).await.expect("put"),
        [PutOutcome::Duplicate, PutOutcome::Inserted]
    );
    assert_eq!(silver.delete(&["e0003".into()]).await.expect("delete"), 1);
    assert_eq!(backend.sqlite().silver_count().await.expect("count"), 50);
    drop(silver);
    drop(backend);

    let c = Connection::open(&db).expect("db");
    let indexes: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'silver_events'",
        )
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("indexes")
        .collect::<Result<_, _>>()
        .expect("names");
    assert_eq!(indexes, ["silver_by_hour"]);
    // The 49 rows left of the old ones are indexed; the new one is after `indexed_through`.
    let (indexed, through): (i64, i64) = c
        .query_row(
            "SELECT (SELECT count(*) FROM silver_ids), indexed_through FROM silver_meta",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("index");
    assert_eq!((indexed, through), (49, 50));
}

/// Version 4: the id index written in sorted passes, and its bookkeeping.
const VERSION_4_SILVER: &str = "
CREATE TABLE silver_ids (
    event_id TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE silver_meta (
    id               INTEGER PRIMARY KEY CHECK (id = 0),
    indexed_through  INTEGER NOT NULL,
    last_seq         INTEGER NOT NULL,
    deletions        INTEGER NOT NULL
);
PRAGMA user_version = 4;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_4_viewer_index_is_keyed_by_prefix() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("streamcube.db");
    // Two viewers whose pseudonyms share their first 8 bytes.
    let (one, two) = (viewer(1), {
        let mut v = viewer(2);
        v[..8].copy_from_slice(&viewer(1)[..8]);
        v
    });
    {
        let c = Connection::open(&db).expect("db");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.execute_batch(SEQ_SILVER).expect("silver");
        c.execute_batch(VERSION_4_SILVER).expect("version 4");
        // 40 events of one consolidated (acknowledged, indexed) hour, every other one of
        // each viewer.
        for i in 0..40_i64 {
            let who = if i % 2 == 0 { one } else { two };
            c.execute(
                "INSERT INTO silver_events VALUES (?1, ?2, ?3, ?4, ?5, 'c1', 'tv', 'BR', 60, 3000, NULL, 1, 'bronze/a.csv#v1:2')",
                params![i + 1, format!("e{i:04}"), HOUR, HOUR * 3_600_000 + i, &who[..]],
            )
            .expect("row");
            c.execute(
                "INSERT INTO silver_ids VALUES (?1, ?2)",
                params![format!("e{i:04}"), i + 1],
            )
            .expect("id");
            c.execute(
                "INSERT INTO silver_viewers VALUES (?1, ?2, ?3)",
                params![HOUR, &who[..], i + 1],
            )
            .expect("viewer index");
        }
        c.execute_batch(&format!(
            "INSERT INTO silver_meta VALUES (0, 40, 40, 0);
             INSERT INTO silver_changes VALUES ({HOUR}, 1, 1);"
        ))
        .expect("bookkeeping");
    }
    let backend = EmbeddedBackend::open(dir.path()).expect("the old store opens");
    let silver = backend.stores().silver;
    let ids_of = |parity: i64| -> Vec<String> {
        (0..40_i64)
            .filter(|i| i % 2 == parity)
            .map(|i| format!("e{i:04}"))
            .collect()
    };
    let found = |events: Vec<(String, i64)>| -> Vec<String> {
        let mut ids: Vec<String> = events.into_iter().map(|(id, _)| id).collect();
        ids.sort();
        ids
    };
    let one = Pseudonym::from_bytes(one);
    let two = Pseudonym::from_bytes(two);
    assert_eq!(
        found(silver.viewer_events(&one).await.expect("one")),
        ids_of(0)
    );
    assert_eq!(
        found(silver.viewer_events(&two).await.expect("two")),
        ids_of(1)
    );
    // The ids came through, keyed by their hash now: a replay of each is recognised, a
    // deletion unindexes.
    let all = silver.hour_events(HOUR).await.expect("hour");
    assert_eq!(
        silver.put_new(&all).await.expect("put"),
        vec![PutOutcome::AlreadyStored; 40]
    );
    let stored = all[0].clone();
    assert_eq!(stored.origin, "bronze/a.csv#v1:2");
    // A row written now keeps its file's origin once; the hour reads both kinds whole, and a
    // replay of the new row from its file and line is recognised too.
    let mut new = stored;
    new.event_id = "e0100".into();
    new.viewer = two;
    new.origin = "bronze/a.csv#v1:141".into();
    assert_eq!(
        silver.put_new(&[new.clone()]).await.expect("put"),
        [PutOutcome::Inserted]
    );
    let origins: Vec<String> = silver
        .hour_events(HOUR)
        .await
        .expect("hour")
        .into_iter()
        .filter(|e| e.event_id == "e0000" || e.event_id == "e0100")
        .map(|e| e.origin)
        .collect();
    assert_eq!(origins, ["bronze/a.csv#v1:2", "bronze/a.csv#v1:141"]);
    assert_eq!(
        silver.put_new(&[new]).await.expect("put"),
        [PutOutcome::AlreadyStored]
    );
    assert_eq!(silver.delete(&["e0000".into()]).await.expect("delete"), 1);
    assert_eq!(
        found(silver.viewer_events(&one).await.expect("one")),
        ids_of(0)[1..]
    );
    drop(silver);
    drop(backend);

    let c = Connection::open(&db).expect("db");
    let (version, rows, keys): (i64, i64, i64) = c
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM silver_viewers),
                    (SELECT count(DISTINCT viewer_prefix) FROM silver_viewers)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("index");
    assert_eq!((version, rows, keys), (7, 39, 1));
    // The index of ids: the 39 old rows left, by hash (the new row is kept in memory until a
    // pass), with a seed drawn for the store.
    let (ids, hashed, seed): (i64, i64, i64) = c
        .query_row(
            "SELECT (SELECT count(*) FROM silver_ids),
                    (SELECT count(*) FROM pragma_table_info('silver_ids') WHERE name = 'id_hash'),
                    id_seed FROM silver_meta",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("id index");
    assert_eq!((ids, hashed), (39, 1));
    assert_ne!(seed, 0);
    // The old rows' origins stay text; the new row's is its file's id and its line.
    let kept: (i64, i64) = c
        .query_row(
            "SELECT count(*) FILTER (WHERE origin_file IS NULL AND origin <> ''),
                    count(*) FILTER (WHERE origin = '' AND origin_line = 141)
                 FROM silver_events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("origins");
    assert_eq!(kept, (39, 1));
    let tables: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'silver_viewers_v4'",
            [],
            |r| r.get(0),
        )
        .expect("tables");
    assert_eq!(tables, 0);
}
