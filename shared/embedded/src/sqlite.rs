//! Every table port on SQLite.
//!
//! One connection behind a mutex per process; calls run on tokio's blocking pool. WAL mode lets
//! other processes read while one writes, and a busy timeout makes writers queue; a write that
//! still finds the database locked surfaces as [`StoreError::Throttled`].

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::StreamExt;
use futures::stream::BoxStream;
use rusqlite::{Connection, OptionalExtension, params};
use streamcube_model::catalog::{Catalog, CatalogEntry};

use crate::idfilter::IdFilter;
use crate::idmap::{IdMap, id_hash, key};
use streamcube_model::codec::{by_part, decode_cells, decode_cells_where, encode_cells, part_of};
use streamcube_model::cube::{Cell, Cuboid, Dim, Dims};
use streamcube_model::event::{Country, CubeEvent, Device, SilverEvent};
use streamcube_model::pseudonym::Pseudonym;
use streamcube_model::report::FileReport;
use streamcube_pipeline::ports::{
    CatalogStore, CellSelect, ChangeFeed, DayManifest, GoldStore, LedgerStore, Level, PutOutcome,
    SilverStore, StoreError, StoreResult,
};

/// The layout of silver is set by the write path, which takes events in batches of a few hundred
/// with random ids:
/// - rows append in arrival order (`seq`, an alias of the rowid that `VACUUM` keeps), and so does
///   the hour index, since events arrive roughly in time order. A table keyed by the random id
///   itself dirtied one page per event per commit;
/// - the id index (`silver_ids`: a 64-bit hash of `event_id`, `seq`) is not written per event
///   either: it holds the ids of the rows up to `silver_meta.indexed_through`, and the ids of the
///   rows after it ([`ID_FLUSH_ROWS`] to [`ID_FLUSH_MAX_ROWS`] or so) are kept in memory by the
///   writing connection ([`RecentIds`]), which adds them to the index in one sorted pass when
///   there are enough of them. A unique index written per event cost one random page per event
///   per commit (4 KiB of log for an event of 150 bytes); a pass of sorted ids writes each page
///   of the index once. The index holds a hash of the id (XXH3 with the store's seed,
///   `silver_meta.id_seed`), not its text: 16 bytes a key instead of 45 or so, so it is a third
///   of the pages to write at each pass and to read through; a lookup compares the id of the row
///   its hash names, so ids whose hashes collide are told apart. Writing 10,000,000 rows'
///   storage alone (`examples/silver_layouts.rs`) took 39.8 s with hashed keys against 65.2 to
///   66.9 s with the ids' text. Deduplication looks in memory, then in the index; every write
///   runs under SQLite's write lock and first catches up with what other processes committed
///   (see [`RecentIds`]);
/// - the viewer index (`silver_viewers`: hour, `viewer_prefix`, `seq`) is not written per event
///   but per hour, when the hour's changes are acknowledged ([`ChangeFeed::ack`]), in one sorted
///   pass that appends the hour's part of the index (a global viewer key would dirty most of the
///   index's pages each time). It keys a row by the first 8 bytes of the pseudonym, not all 32:
///   a lookup compares the whole pseudonym of the rows it finds (two viewers share a prefix
///   with a chance of 2^-64), and the index is half the size, and quicker to append to.
///   Finding a viewer takes one index seek per hour in `silver_changes`; rows of hours still
///   pending are found through the hour index, so that `viewer_events` is complete at any time
///   (see there).
///
/// `user_version` is [`SCHEMA_VERSION`]; an older file is migrated when it is opened.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS silver_events (
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
    origin         TEXT NOT NULL,
    origin_file    INTEGER,
    origin_line    INTEGER
);
CREATE INDEX IF NOT EXISTS silver_by_hour ON silver_events(hour);
-- A row's origin is `origin`, or when origin_file is set (and `origin` empty), the file's origin,
-- ':' and origin_line: `<key>#<version>:<line>` of every row of a file would otherwise repeat
-- some 90 bytes of the file's name and version, half of the row.
CREATE TABLE IF NOT EXISTS silver_origins (
    id     INTEGER PRIMARY KEY,
    origin TEXT NOT NULL UNIQUE
);
-- id_hash: XXH3 (64 bits, as a signed integer) of event_id's UTF-8 bytes, seeded with
-- silver_meta.id_seed; ids whose hashes collide have a row each.
CREATE TABLE IF NOT EXISTS silver_ids (
    id_hash INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (id_hash, seq)
) WITHOUT ROWID;
-- One row: every row of silver with seq <= indexed_through is in silver_ids, no later one is;
-- last_seq is the highest seq ever given (never given again, even once its row is deleted);
-- deletions counts the transactions that deleted rows, so that a writer knows when the ids it
-- keeps in memory may name rows that are gone; id_seed, random per store, seeds the hash of
-- silver_ids.
CREATE TABLE IF NOT EXISTS silver_meta (
    id               INTEGER PRIMARY KEY CHECK (id = 0),
    indexed_through  INTEGER NOT NULL,
    last_seq         INTEGER NOT NULL,
    deletions        INTEGER NOT NULL,
    id_seed          INTEGER NOT NULL DEFAULT 0
);
-- viewer_prefix: substr(silver_events.viewer, 1, 8).
CREATE TABLE IF NOT EXISTS silver_viewers (
    hour          INTEGER NOT NULL,
    viewer_prefix BLOB NOT NULL,
    seq           INTEGER NOT NULL,
    PRIMARY KEY (hour, viewer_prefix, seq)
) WITHOUT ROWID;
-- One row per hour ever changed; counters only grow, so a late acknowledgement of an old
-- counter can never clear a newer change. Pending: counter > acked.
CREATE TABLE IF NOT EXISTS silver_changes (
    hour    INTEGER PRIMARY KEY,
    counter INTEGER NOT NULL,
    acked   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS gold_manifests (
    day     TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body    TEXT NOT NULL
) WITHOUT ROWID;
-- One row per cuboid of a (day, level, generation) and, in cuboids that keep the country, per
-- country (`part`: country code + 1; 0 where the cuboid rolls the country up): cells are read a
-- cuboid at a time, or one country's part of it for a query filtered by country, and one
-- encoded block costs one B-tree insert instead of one per cell.
CREATE TABLE IF NOT EXISTS gold_blocks (
    day        TEXT NOT NULL,
    level      INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    cuboid     INTEGER NOT NULL,
    part       INTEGER NOT NULL,
    cells      BLOB NOT NULL,
    PRIMARY KEY (day, level, generation, cuboid, part)
);
CREATE TABLE IF NOT EXISTS catalog (
    content_id       TEXT PRIMARY KEY,
    title            TEXT NOT NULL,
    genre            TEXT NOT NULL,
    release_year     INTEGER,
    duration_seconds INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS processed_objects (
    key          TEXT NOT NULL,
    version      TEXT NOT NULL,
    report       TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (key, version)
) WITHOUT ROWID;
";

/// 7: the id index keyed by a hash of the id (`id_hash`, seeded by `silver_meta.id_seed`).
/// 6: each file's origin stored once (`silver_origins`; `origin_file`, `origin_line` in
/// `silver_events`). 5: the viewer index keyed by a prefix of the pseudonym (`viewer_prefix`).
/// 4: the id index written in sorted passes (`silver_ids`) instead of a unique index on
/// `silver_events`. 3: gold blocks split by country (`part`). 2: silver as an append-ordered
/// rowid table with its viewer index built per hour. The first layout (no `user_version`) kept
/// silver in a table keyed by `event_id` with a per-row viewer index.
const SCHEMA_VERSION: i64 = 7;

/// Creates the schema in a new file, or brings an older file to the current layout, in one
/// transaction. Silver of the first layout is copied in hour order, every copied row in the
/// viewer index; the viewer index of versions 2 to 4 (keyed by the whole pseudonym) is copied
/// with its keys cut to their prefix. Gold blocks written before version 3 keep one block per
/// cuboid, as part 0: a read by country reads part 0 too and filters its cells, so they stay
/// readable until their day is consolidated again. An id index keyed by the ids' text (versions
/// 4 to 6) is built again keyed by their hash, with a new seed. The check is repeated under the
/// write lock, so that two processes opening the same old file migrate it once.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    if version(conn)? >= SCHEMA_VERSION {
        return conn.execute_batch(SCHEMA);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let table_sql = |name: &str| -> rusqlite::Result<Option<String>> {
        tx.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
    };
    let first_silver = table_sql("silver_events")?.is_some_and(|sql| sql.contains("WITHOUT ROWID"));
    let unsplit_gold = table_sql("gold_blocks")?.is_some_and(|sql| !sql.contains("part"));
    let whole_viewer_keys =
        table_sql("silver_viewers")?.is_some_and(|sql| !sql.contains("viewer_prefix"));
    let text_id_keys = table_sql("silver_ids")?.is_some_and(|sql| sql.contains("event_id"));
    let old_version = version(&tx)?;
    if old_version >= SCHEMA_VERSION {
        tx.execute_batch(SCHEMA)?;
        return tx.commit();
    }
    if first_silver {
        tx.execute_batch(
            "DROP INDEX IF EXISTS silver_by_hour;
             DROP INDEX IF EXISTS silver_by_viewer;
             ALTER TABLE silver_events RENAME TO silver_events_v1;",
        )?;
    }
    if unsplit_gold {
        tx.execute_batch("ALTER TABLE gold_blocks RENAME TO gold_blocks_v2;")?;
    }
    if whole_viewer_keys {
        tx.execute_batch("ALTER TABLE silver_viewers RENAME TO silver_viewers_v4;")?;
    }
    if text_id_keys {
        // Built again below from the rows it covers.
        tx.execute_batch(
            "DROP TABLE silver_ids;
             ALTER TABLE silver_meta ADD COLUMN id_seed INTEGER NOT NULL DEFAULT 0;
             UPDATE silver_meta SET id_seed = random();",
        )?;
    }
    tx.execute_batch("DROP INDEX IF EXISTS silver_by_id;")?;
    tx.execute_batch(SCHEMA)?;
    if first_silver {
        tx.execute_batch(&format!(
            "INSERT INTO silver_events ({EVENT_COLUMNS})
                 SELECT {EVENT_COLUMNS} FROM silver_events_v1 ORDER BY hour, event_id;
             INSERT INTO silver_viewers (hour, viewer_prefix, seq)
                 SELECT hour, substr(viewer, 1, 8), seq FROM silver_events ORDER BY 1, 2, 3;
             INSERT OR IGNORE INTO silver_changes (hour, counter, acked)
                 SELECT DISTINCT hour, 0, 0 FROM silver_events;
             DROP TABLE silver_events_v1;"
        ))?;
    }
    if unsplit_gold {
        tx.execute_batch(
            "INSERT INTO gold_blocks (day, level, generation, cuboid, part, cells)
                 SELECT day, level, generation, cuboid, 0, cells FROM gold_blocks_v2;
             DROP TABLE gold_blocks_v2;",
        )?;
    }
    if whole_viewer_keys {
        tx.execute_batch(
            "INSERT INTO silver_viewers (hour, viewer_prefix, seq)
                 SELECT hour, substr(viewer, 1, 8), seq FROM silver_viewers_v4 ORDER BY 1, 2, 3;
             DROP TABLE silver_viewers_v4;",
        )?;
    }
    if old_version < 4 {
        // Every id of silver so far in the index (ids were unique under the unique index of
        // versions 2 and 3, and the primary key of the first layout). SQLite's `random()`
        // draws from the system's source of randomness.
        tx.execute_batch(
            "INSERT INTO silver_meta (id, indexed_through, last_seq, deletions, id_seed)
                 SELECT 0, coalesce(max(seq), 0), coalesce(max(seq), 0), 0, random()
                 FROM silver_events;",
        )?;
    }
    if old_version < 4 || text_id_keys {
        let seed: i64 = tx.query_row("SELECT id_seed FROM silver_meta WHERE id = 0", [], |r| {
            r.get(0)
        })?;
        register_id_hash(&tx, seed_of(seed))?;
        tx.execute_batch(
            "INSERT INTO silver_ids (id_hash, seq)
                 SELECT id_hash(e.event_id), e.seq FROM silver_events e, silver_meta m
                 WHERE e.seq <= m.indexed_through ORDER BY 1, 2;",
        )?;
    }
    let origin_files: i64 = tx.query_row(
        "SELECT count(*) FROM pragma_table_info('silver_events') WHERE name = 'origin_file'",
        [],
        |r| r.get(0),
    )?;
    if origin_files == 0 {
        // Rows written so far keep their origin as text.
        tx.execute_batch(
            "ALTER TABLE silver_events ADD COLUMN origin_file INTEGER;
             ALTER TABLE silver_events ADD COLUMN origin_line INTEGER;",
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// The seed of the ids' hash, as `silver_meta.id_seed` holds it.
fn seed_of(stored: i64) -> u64 {
    u64::from_ne_bytes(stored.to_ne_bytes())
}

/// Registers `id_hash(text)` on `conn`: the key of an id in `silver_ids` for a store with this
/// `seed` (`NULL` for a `NULL`), for the migration and for checks written in SQL.
pub(crate) fn register_id_hash(conn: &Connection, seed: u64) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    conn.create_scalar_function(
        "id_hash",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx| match ctx.get_raw(0) {
            ValueRef::Null => Ok(None),
            v => Ok(Some(key(id_hash(seed, v.as_str()?)))),
        },
    )
}

/// The level column: hours 0..24, the day 24.
fn level_code(l: Level) -> i64 {
    match l {
        Level::Hour(h) => i64::from(h),
        Level::Day => 24,
    }
}

fn level_of(code: i64) -> StoreResult<Level> {
    match code {
        24 => Ok(Level::Day),
        0..=23 => Ok(Level::Hour(code as u8)),
        other => Err(StoreError::Corrupt(format!("level {other}"))),
    }
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Throttled
        }
        _ => StoreError::backend(e),
    }
}

fn int(v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} does not fit a SQLite integer")))
}

fn uint(v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative count {v}")))
}

/// The writer keeps the ids of at least this many rows in memory (some 80 bytes each, 20 MB in
/// all) before it adds them to `silver_ids`; one pass then writes each page of the index once
/// (at 1,000,000 ids, the index has about 11,000 pages of 4 KiB). Each pass holds the writer for
/// a moment, so fewer, larger passes write less: in the HTTP load test (1,000,000 events) a pass
/// every 100,000 rows gave 45,000-49,000 events/s, every 250,000 rows 50,800-53,300 (and a p99
/// per batch of 560-640 ms instead of 370-480). In a larger index, see [`ID_FLUSH_SHARE`].
pub const ID_FLUSH_ROWS: usize = 250_000;

/// A pass of sorted ids into an index of millions touches nearly every leaf page of it, so the
/// index is written again at every pass, and passes of a fixed size cost a time that grows with
/// the square of silver's rows. A pass waits for ids of as many rows as a fourth of those
/// indexed so far, between [`ID_FLUSH_ROWS`] and [`ID_FLUSH_MAX_ROWS`]: from 1M rows on, passes
/// grow to twice the size, for 15 to 45 MB more memory. Ingesting 10,000,000 rows into a new
/// store took 65-70 s instead of 80-88 s, with about 24 passes instead of 40 (own memory 400 MiB
/// against 366-387); a limit of 1,000,000 ids did not do better (65-70 s, peak RSS 80-110 MiB
/// higher).
const ID_FLUSH_SHARE: i64 = 4;
const ID_FLUSH_MAX_ROWS: usize = 500_000;

/// The writer builds its filter of indexed ids ([`IdFilter`]) once the ids it has looked up
/// reach a fourth of the rows indexed: building reads the whole index once, a few times faster
/// per id than looking ids up in it one by one, so a process that writes a few events into a
/// large store does not read all of it, and one that writes many reads it once.
const FILTER_AFTER_SHARE: i64 = 4;
/// A filter is sized for twice the rows indexed, and at least this many ids (3 MB); when
/// full, it is built again at twice the size. At 10,000,000 rows written into a new store, the
/// index was read whole at 2.4, 4.8 and 9.5 million rows, in 0.3, 0.8 and 1.5 s, and the filter
/// ended at 29 MB.
const FILTER_MIN_IDS: usize = 2_000_000;
const FILTER_GROWTH: usize = 2;
/// The largest filter, 48 MB: past this many ids it is not built again, and its false
/// positives grow with the index (6% at twice as many ids, 25% at four times), each costing
/// the lookup that every id took without a filter. Sizing goes by the highest `seq` indexed,
/// which counts rows since deleted too, so the cap also bounds a long-lived store's filter.
const FILTER_MAX_IDS: usize = 32_000_000;

/// The ids of silver's rows after `silver_meta.indexed_through`, as the writing connection last
/// saw them, with their `seq`.
///
/// Other processes may write the same file, so every write transaction starts with
/// [`RecentIds::catch_up`] under SQLite's write lock: when `PRAGMA data_version` says another
/// connection committed since, the rows appended since are read (a range of `seq`, usually a
/// few hundred), ids another writer moved into the index are dropped, and if another writer
/// deleted rows the set is read again from the table. Changes of this connection's own
/// transactions are applied only once they have committed; a failed transaction leaves the set
/// to be read again.
#[derive(Debug, Default)]
struct RecentIds {
    by_id: IdMap,
    /// `silver_meta` as last seen.
    indexed_through: i64,
    deletions: i64,
    /// `silver_meta.last_seq` as last seen or written.
    last_seq: i64,
    /// `PRAGMA data_version` when last caught up.
    version: i64,
    /// False until caught up, and after a write transaction that failed: read it all again.
    trusted: bool,
    /// Rows at which [`RecentIds::flush`] moves the ids to the index: at least `flush_at`, at
    /// most `flush_max`, a share of the index between (see [`ID_FLUSH_SHARE`]).
    flush_at: usize,
    flush_max: usize,
    /// The ids in `silver_ids`, once built (see [`RecentIds::prepare_filter`]): an id it does
    /// not hold is not looked up.
    filter: Option<IdFilter>,
    /// Ids about to be looked up, counted since the filter was last missing.
    looked_up: i64,
    /// [`FILTER_AFTER_SHARE`], or `None` for no filter; [`FILTER_MIN_IDS`].
    filter_share: Option<i64>,
    filter_min: usize,
    /// Lookups that reached the index.
    probes: u64,
}

impl RecentIds {
    fn new() -> Self {
        RecentIds {
            flush_at: ID_FLUSH_ROWS,
            flush_max: ID_FLUSH_MAX_ROWS,
            filter_share: Some(FILTER_AFTER_SHARE),
            filter_min: FILTER_MIN_IDS,
            ..RecentIds::default()
        }
    }

    fn catch_up(&mut self, tx: &Connection) -> StoreResult<()> {
        let version: i64 = tx
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(sql_err)?;
        if self.trusted && self.version == version {
            return Ok(());
        }
        let (through, last_seq, deletions, seed): (i64, i64, i64, i64) = tx
            .query_row(
                "SELECT indexed_through, last_seq, deletions, id_seed FROM silver_meta WHERE id = 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(sql_err)?;
        if seed_of(seed) != self.by_id.seed() {
            // The store's hash, first seen (or a different store): ids and filter are read
            // again with it.
            self.by_id = IdMap::with_seed(seed_of(seed));
            self.filter = None;
            self.looked_up = 0;
            self.trusted = false;
        }
        self.follow_filter(tx, through)?;
        // The rows after `from` are read.
        let from = if !self.trusted || self.deletions != deletions {
            self.by_id.clear();
            through
        } else {
            if through > self.indexed_through {
                self.by_id.retain(|seq| seq > through);
            }
            self.last_seq.max(through)
        };
        self.trusted = false;
        if last_seq > from {
            let mut stmt = tx
                .prepare_cached("SELECT event_id, seq FROM silver_events WHERE seq > ?1")
                .map_err(sql_err)?;
            let mut rows = stmt.query([from]).map_err(sql_err)?;
            while let Some(r) = rows.next().map_err(sql_err)? {
                let id = r
                    .get_ref(0)
                    .and_then(|v| v.as_str().map_err(Into::into))
                    .map_err(sql_err)?;
                self.by_id.insert(id, r.get(1).map_err(sql_err)?);
            }
        }
        self.last_seq = last_seq;
        self.indexed_through = through;
        self.deletions = deletions;
        self.version = version;
        self.trusted = true;
        Ok(())
    }

    /// The `seq` of the row with this id, if there is one; `indexed` is
    /// [`RecentIds::INDEXED`], prepared by the caller.
    fn find(
        &mut self,
        indexed: &mut rusqlite::Statement<'_>,
        id: &str,
    ) -> StoreResult<Option<i64>> {
        self.find_hashed(indexed, self.by_id.hash(id), id)
    }

    /// [`RecentIds::find`] with `hash`, [`IdMap::hash`] of `id`.
    fn find_hashed(
        &mut self,
        indexed: &mut rusqlite::Statement<'_>,
        hash: u64,
        id: &str,
    ) -> StoreResult<Option<i64>> {
        if let Some(seq) = self.by_id.get_hashed(hash, id) {
            return Ok(Some(seq));
        }
        if let Some(filter) = &self.filter
            && filter.covers >= self.indexed_through
            && !filter.may_contain(hash)
        {
            return Ok(None);
        }
        self.probes += 1;
        indexed
            .query_row(params![key(hash), id], |r| r.get(0))
            .optional()
            .map_err(sql_err)
    }

    /// Brings the filter up to `through`, the `indexed_through` just read: the rows another
    /// writer moved into the index are added from the table.
    fn follow_filter(&mut self, tx: &Connection, through: i64) -> StoreResult<()> {
        let Some(filter) = &mut self.filter else {
            return Ok(());
        };
        if through < filter.covers {
            // Not a database this filter was built on: build it again when needed.
            self.filter = None;
            self.looked_up = 0;
            return Ok(());
        }
        if through > filter.covers {
            add_selected(
                filter,
                &self.by_id,
                tx,
                "SELECT event_id FROM silver_events WHERE seq > ?1 AND seq <= ?2",
                [filter.covers, through],
            )?;
            filter.covers = through;
        }
        Ok(())
    }

    /// The ids a filter built now is sized for: twice the highest seq indexed (which is at
    /// least the number of ids indexed), within [`FILTER_MIN_IDS`] and [`FILTER_MAX_IDS`].
    fn filter_capacity(&self) -> usize {
        usize::try_from(self.indexed_through)
            .unwrap_or(0)
            .saturating_mul(FILTER_GROWTH)
            .clamp(self.filter_min.min(FILTER_MAX_IDS), FILTER_MAX_IDS)
    }

    /// Before `lookups` ids are looked up: builds the filter from the whole index if the ids
    /// looked up since it was last missing reach the share of the index that pays for reading
    /// it (see [`FILTER_AFTER_SHARE`]), or if it holds more ids than it was sized for. Called
    /// after [`RecentIds::catch_up`].
    fn prepare_filter(&mut self, tx: &Connection, lookups: usize) -> StoreResult<()> {
        let Some(share) = self.filter_share else {
            return Ok(());
        };
        self.looked_up = self
            .looked_up
            .saturating_add(i64::try_from(lookups).unwrap_or(i64::MAX));
        let build = match &self.filter {
            Some(filter) => filter.is_full() && filter.capacity() < FILTER_MAX_IDS,
            None => self.looked_up.saturating_mul(share) >= self.indexed_through,
        };
        if !build {
            return Ok(());
        }
        let mut filter = IdFilter::new(self.filter_capacity(), self.indexed_through);
        let started = std::time::Instant::now();
        {
            // The index holds the hashes themselves: nothing to hash again.
            let mut stmt = tx
                .prepare_cached("SELECT id_hash FROM silver_ids")
                .map_err(sql_err)?;
            let mut rows = stmt.query([]).map_err(sql_err)?;
            while let Some(r) = rows.next().map_err(sql_err)? {
                filter.insert(seed_of(r.get(0).map_err(sql_err)?));
            }
        }
        tracing::debug!(
            ids = self.indexed_through,
            capacity = filter.capacity(),
            ms = started.elapsed().as_millis(),
            "id filter built"
        );
        self.filter = Some(filter);
        Ok(())
    }

    /// The rows whose id has this hash (`?1`, as a key), then the one with this id (`?2`).
    const INDEXED: &str = "SELECT i.seq FROM silver_ids i CROSS JOIN silver_events e
                               WHERE i.id_hash = ?1 AND e.seq = i.seq AND e.event_id = ?2";

    /// The ids kept in memory that start a pass, for the index as it is.
    fn flush_threshold(&self) -> usize {
        let share = usize::try_from(self.indexed_through / ID_FLUSH_SHARE).unwrap_or(0);
        share.clamp(self.flush_at, self.flush_max.max(self.flush_at))
    }

    /// Adds the ids kept in memory to `silver_ids` in key order, if there are enough of them.
    /// Returns the new `indexed_through`, to be applied with [`RecentIds::flushed`] after the
    /// commit.
    fn flush(&self, tx: &Connection) -> StoreResult<Option<i64>> {
        if self.by_id.len() < self.flush_threshold() {
            return Ok(None);
        }
        // Many keys per statement, as the viewer index is written. A duplicate here would be a
        // broken invariant: it fails the transaction.
        static FULL_INSERT: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| id_insert_sql(ID_KEYS_PER_INSERT));
        let keys = self.by_id.sorted_keys();
        for chunk in keys.chunks(ID_KEYS_PER_INSERT) {
            let values: Vec<i64> = chunk.iter().flat_map(|&(hash, seq)| [hash, seq]).collect();
            let params = rusqlite::params_from_iter(values);
            insert_rows(
                tx,
                chunk.len(),
                ID_KEYS_PER_INSERT,
                &FULL_INSERT,
                id_insert_sql,
                params,
            )?;
        }
        tx.execute(
            "UPDATE silver_meta SET indexed_through = ?1 WHERE id = 0",
            [self.last_seq],
        )
        .map_err(sql_err)?;
        Ok(Some(self.last_seq))
    }

    fn flushed(&mut self, through: i64) {
        if let Some(filter) = &mut self.filter {
            // The ids moved into the index are those of the rows after the filter's.
            for (id, _) in self.by_id.iter() {
                filter.insert(self.by_id.hash(id));
            }
            filter.covers = through;
        }
        self.by_id.clear();
        self.indexed_through = through;
    }
}

/// Keys of the id index written by one statement.
const ID_KEYS_PER_INSERT: usize = 256;

/// `INSERT` of `n` keys of the id index, each a hash and a `seq`.
fn id_insert_sql(n: usize) -> String {
    let mut sql = String::from("INSERT INTO silver_ids (id_hash, seq) VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(?{}, ?{})", 2 * i + 1, 2 * i + 2));
    }
    sql
}

/// Adds the ids `sql` selects (its one column) to `filter`, hashed as `by_id` hashes them.
fn add_selected(
    filter: &mut IdFilter,
    by_id: &IdMap,
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<()> {
    let mut stmt = tx.prepare_cached(sql).map_err(sql_err)?;
    let mut rows = stmt.query(params).map_err(sql_err)?;
    while let Some(r) = rows.next().map_err(sql_err)? {
        let id = r
            .get_ref(0)
            .and_then(|v| v.as_str().map_err(Into::into))
            .map_err(sql_err)?;
        filter.insert(by_id.hash(id));
    }
    Ok(())
}

/// SQLite adapter for silver, gold, catalog, ledger and the change feed.
///
/// Two connections to the file: one for everything that writes, and one that only reads (an
/// hour's events, gold blocks), so that a consolidation reads the next hour while the current
/// one is written, and queries are not queued behind writes. In WAL mode a reader sees every
/// transaction committed before its statement starts, and every write here commits before its
/// call returns.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// Locked after `conn`, by [`SqliteStore::with_ids`] only.
    ids: Arc<Mutex<RecentIds>>,
    /// Dropped after the connections (fields drop in order), so it joins its thread last.
    checkpointer: Arc<Checkpointer>,
}

/// The log grows by this many pages (4 KiB each) before the checkpointer copies it into the
/// database file.
const CHECKPOINT_PAGES: i32 = 16_384;

/// Copies the write-ahead log into the database file on its own thread and connection.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold: the writer
/// stalls while the log (hundreds of MB after a day's gold) is copied and the file fsynced, and
/// every write queued behind it waits too. A passive checkpoint from another connection runs
/// beside the writer instead (it copies the frames committed when it starts, and never blocks
/// readers or the writer), so the writing connection's commit hook only wakes this thread.
/// The checkpoint is the same as SQLite's own; where a process ends before this thread catches
/// up, the log is replayed at the next open, as after any crash.
///
/// The log starts over (at its first page) only when a write transaction begins with every
/// frame copied. A writer that commits without pause (the writes of a large file, back to back)
/// never gives the checkpoint that moment: the log passed a gigabyte 35 s into a 10M-row file,
/// which took 51.6 to 72.9 s against 42.4 to 54.5 s while the writes still paused between
/// batches (alternating runs). So a silver write ([`SqliteStore::with_ids`]) that finds the log past
/// [`LOG_LIMIT_CHECKPOINTS`] checkpoints' worth of pages first waits for a checkpoint that
/// starts after it, which copies every frame so far, and then begins on an empty log (see
/// [`Checkpointer::hold_back`]).
struct Checkpointer {
    shared: Arc<CheckpointShared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Pages of log past which a write waits for the checkpoint.
    limit: i32,
}

/// A write waits for the checkpoint once the log holds this many checkpoints' worth of pages.
const LOG_LIMIT_CHECKPOINTS: i32 = 4;

/// How long a write waits for the checkpoint at most. A checkpoint that cannot copy every frame
/// (a reader still on an old snapshot) still ends its round, and the write goes on after it.
const HOLD_BACK_MAX: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Default)]
struct CheckpointShared {
    state: Mutex<CheckpointState>,
    /// Wakes the checkpoint thread.
    wake: Condvar,
    /// Tells waiting writers a checkpoint finished.
    done: Condvar,
}

#[derive(Default)]
struct CheckpointState {
    wanted: bool,
    closing: bool,
    running: bool,
    /// Checkpoints finished.
    rounds: u64,
    /// Pages in the log after the writer's last commit.
    logged: i32,
}

impl Checkpointer {
    /// Starts the thread with its own connection and hands the writing connection's commits
    /// to it (replacing the automatic checkpoint).
    fn start(path: &Path, writer: &mut Connection, pages: i32) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        let shared: Arc<CheckpointShared> = Arc::default();
        let state = Arc::clone(&shared);
        let limit = pages.saturating_mul(LOG_LIMIT_CHECKPOINTS);
        let spawned = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &state));
        let thread = match spawned {
            Ok(thread) => thread,
            Err(error) => {
                tracing::warn!(%error, "no checkpoint thread; commits checkpoint the log");
                writer.pragma_update(None, "wal_autocheckpoint", pages)?;
                return Ok(Checkpointer {
                    shared,
                    thread: None,
                    limit,
                });
            }
        };
        let hook = Arc::clone(&shared);
        // The hook must not fail: its error would fail a statement whose commit has happened.
        writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, logged: i32| {
            if let Ok(mut s) = hook.state.lock() {
                s.logged = logged;
                if logged >= pages {
                    s.wanted = true;
                    hook.wake.notify_one();
                }
            }
            Ok(())
        }))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
            limit,
        })
    }

    /// Called by the writer before a write transaction: when the log has grown past the limit,
    /// waits until a checkpoint that starts after this call has finished (the one running now
    /// copies only the frames committed before it started), so that the transaction finds every
    /// frame copied and starts the log over.
    fn hold_back(&self) {
        if self.thread.is_none() {
            return;
        }
        let Ok(mut s) = self.shared.state.lock() else {
            return;
        };
        if s.logged < self.limit || s.closing {
            return;
        }
        let target = s.rounds + 1 + u64::from(s.running);
        s.wanted = true;
        self.shared.wake.notify_one();
        let deadline = std::time::Instant::now() + HOLD_BACK_MAX;
        while s.rounds < target && !s.closing {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::warn!(logged = s.logged, "the checkpoint did not finish in time");
                break;
            }
            s = match self.shared.done.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(_) => return,
            };
        }
        // Waited for whatever the outcome: the next hold-back needs the log to grow again.
        s.logged = 0;
    }
}

fn checkpoint_loop(conn: &Connection, shared: &CheckpointShared) {
    loop {
        {
            let Ok(mut s) = shared.state.lock() else {
                return;
            };
            while !s.wanted && !s.closing {
                s = match shared.wake.wait(s) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
            if s.closing {
                return;
            }
            s.wanted = false;
            s.running = true;
        }
        // (busy, log pages, pages copied); busy only means a checkpoint is running elsewhere.
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match result {
            Ok((log, copied)) => tracing::debug!(log, copied, "checkpoint"),
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint failed; the log is copied at the next one")
            }
        }
        if let Ok(mut s) = shared.state.lock() {
            s.running = false;
            s.rounds += 1;
            shared.done.notify_all();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.closing = true;
            self.shared.wake.notify_one();
            self.shared.done.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl SqliteStore {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        Self::open_checkpointing_at(path, CHECKPOINT_PAGES)
    }

    /// [`SqliteStore::open`], checkpointing once the log holds `pages` pages.
    fn open_checkpointing_at(path: &Path, pages: i32) -> rusqlite::Result<Self> {
        let mut conn = Connection::open(path)?;
        Self::tune(&conn)?;
        migrate(&mut conn)?;
        let reader = Connection::open(path)?;
        Self::tune(&reader)?;
        reader.pragma_update(None, "query_only", "ON")?;
        let checkpointer = Checkpointer::start(path, &mut conn, pages)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            ids: Arc::new(Mutex::new(RecentIds::new())),
            checkpointer: Arc::new(checkpointer),
        })
    }

    fn tune(conn: &Connection) -> rusqlite::Result<()> {
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Deleted rows are overwritten, not left in free pages: an erased viewer's pseudonym and
        // sketch hash must leave the file, not only the tables.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Silver's keys arrive in random order: a page cache of 64 MiB (the default is 2 MiB)
        // and memory-mapped reads keep batch inserts from re-reading and re-writing pages.
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.pragma_update(None, "mmap_size", 1_i64 << 30)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // The writing connection's checkpoints run on their own thread (see [`Checkpointer`]).
        conn.pragma_update(None, "wal_autocheckpoint", 0)
    }

    /// Runs `f` with the writing connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        Self::on(&self.conn, f).await
    }

    /// Runs `f` with the writing connection and the ids of recent rows, in an immediate
    /// transaction that `f` commits, after catching up with other writers (see [`RecentIds`]).
    /// If `f` fails, the ids are read again at the next call. The silver writes of a file come
    /// back to back, so each first lets the log start over when it has grown past its limit
    /// (see [`Checkpointer::hold_back`]); gold's writes, a day's blocks, leave it to grow.
    async fn with_ids<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(rusqlite::Transaction<'_>, &mut RecentIds) -> StoreResult<T> + Send + 'static,
    {
        let ids = Arc::clone(&self.ids);
        let checkpointer = Arc::clone(&self.checkpointer);
        self.with(move |c| {
            checkpointer.hold_back();
            let mut ids = ids
                .lock()
                .map_err(|_| StoreError::Corrupt("the id set lock was poisoned".into()))?;
            let run = |ids: &mut RecentIds| {
                let tx = c
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sql_err)?;
                ids.catch_up(&tx)?;
                f(tx, ids)
            };
            let out = run(&mut ids);
            if out.is_err() {
                ids.trusted = false;
            }
            out
        })
        .await
    }

    /// Runs `f` with the reading connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        Self::on(&self.reader, f).await
    }

    /// An hour's rows in parts of [`HOUR_PART`] rows in `seq` order, each a read of its own
    /// through the hour index that starts after the last row of the part before, so the
    /// reading connection is free between parts (a reader that keeps a part waiting holds
    /// nothing of SQLite's): the `columns` of each row, decoded by `decode`.
    fn parts<T: Send + 'static>(
        &self,
        hour: i64,
        columns: &'static str,
        decode: fn(&rusqlite::Row<'_>) -> StoreResult<T>,
    ) -> BoxStream<'_, StoreResult<Vec<T>>> {
        futures::stream::try_unfold(Some(i64::MIN), move |after| async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let (part, last) = self
                .read(move |c| hour_part(c, hour, after, columns, decode))
                .await?;
            // A short part is the last one.
            let next = last.filter(|_| part.len() == HOUR_PART);
            Ok((!part.is_empty()).then_some((part, next)))
        })
        .boxed()
    }

    async fn on<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Corrupt("the connection lock was poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(StoreError::backend)?
    }

    /// Counts rows of silver (for tests and status).
    pub async fn silver_count(&self) -> StoreResult<u64> {
        self.with(|c| {
            let n: i64 = c
                .query_row("SELECT count(*) FROM silver_events", [], |r| r.get(0))
                .map_err(sql_err)?;
            uint(n)
        })
        .await
    }
}

const EVENT_COLUMNS: &str = "event_id, hour, occurred_at_ms, viewer, content_id, device, country, watch_seconds, bitrate_kbps, buffering_ms, completed, origin";

/// A row's origin, put together (see `silver_origins`).
macro_rules! origin_read {
    () => {
        "CASE WHEN origin_file IS NULL THEN origin
              ELSE (SELECT o.origin FROM silver_origins o WHERE o.id = origin_file) || ':' || origin_line END"
    };
}

/// [`EVENT_COLUMNS`] as read, with the origin put together.
const EVENT_COLUMNS_READ: &str = concat!(
    "event_id, hour, occurred_at_ms, viewer, content_id, device, country, watch_seconds, bitrate_kbps, buffering_ms, completed, ",
    origin_read!()
);

/// An origin of the form `<file>:<line>` (a line number in its plain decimal form, so that the
/// two parts put back together give the same text), split.
fn split_origin(origin: &str) -> Option<(&str, i64)> {
    let (file, line) = origin.rsplit_once(':')?;
    let plain = !line.is_empty()
        && line.len() <= 19
        && line.bytes().all(|b| b.is_ascii_digit())
        && (line == "0" || !line.starts_with('0'));
    if !plain {
        return None;
    }
    line.parse().ok().map(|n| (file, n))
}

/// The id of a file's origin in `silver_origins`, added if new; remembers the last one, since a
/// write's rows usually come from one file.
#[derive(Default)]
struct OriginFiles {
    last: Option<(String, i64)>,
}

impl OriginFiles {
    fn id(&mut self, tx: &Connection, file: &str) -> StoreResult<i64> {
        if let Some((name, id)) = &self.last
            && name == file
        {
            return Ok(*id);
        }
        let found: Option<i64> = tx
            .prepare_cached("SELECT id FROM silver_origins WHERE origin = ?1")
            .and_then(|mut s| s.query_row([file], |r| r.get(0)).optional())
            .map_err(sql_err)?;
        let id = match found {
            Some(id) => id,
            None => tx
                .prepare_cached("INSERT INTO silver_origins (origin) VALUES (?1) RETURNING id")
                .and_then(|mut s| s.query_row([file], |r| r.get(0)))
                .map_err(sql_err)?,
        };
        self.last = Some((file.to_owned(), id));
        Ok(id)
    }
}

fn query_events<P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    p: P,
) -> StoreResult<Vec<SilverEvent>> {
    let sql = sql.replacen('*', EVENT_COLUMNS_READ, 1);
    let mut stmt = c.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(p).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        out.push(event_of(r)?);
    }
    Ok(out)
}

/// Rows an hour is read in by [`SilverStore::hour_parts`]: about 15 MB of events.
const HOUR_PART: usize = 10_000;

/// Up to [`HOUR_PART`] events of `hour` whose `seq` is after `after`, in `seq` order, and the
/// last one's `seq`: the `columns` of each row (then `seq`), decoded by `decode`.
fn hour_part<T>(
    c: &Connection,
    hour: i64,
    after: i64,
    columns: &str,
    decode: fn(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<(Vec<T>, Option<i64>)> {
    let sql = format!(
        "SELECT {columns}, seq FROM silver_events
         WHERE hour = ?1 AND seq > ?2 ORDER BY seq LIMIT {HOUR_PART}"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(sql_err)?;
    let seq_at = stmt.column_count() - 1;
    let mut rows = stmt.query((hour, after)).map_err(sql_err)?;
    let (mut out, mut last) = (Vec::with_capacity(HOUR_PART), None);
    while let Some(r) = rows.next().map_err(sql_err)? {
        out.push(decode(r)?);
        last = Some(r.get(seq_at).map_err(get_err)?);
    }
    Ok((out, last))
}

/// What the cube reads of a row ([`CubeEvent`]), as [`cube_event_of`] decodes it: no
/// `event_id`, `occurred_at_ms` or origin, whose reading (the origin put together from its
/// file's row and its line) took most of the time of reading an hour.
const CUBE_COLUMNS_READ: &str =
    "viewer, content_id, device, country, watch_seconds, bitrate_kbps, buffering_ms, completed";

fn get_err(e: rusqlite::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn ref_err(e: rusqlite::types::FromSqlError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The fields the cube reads, from `viewer` at column `at` on, in [`CUBE_COLUMNS_READ`]'s
/// order (which [`EVENT_COLUMNS_READ`] has too, from its column 3).
fn cube_fields(r: &rusqlite::Row<'_>, at: usize) -> StoreResult<(Pseudonym, CubeEvent)> {
    let viewer: [u8; 32] = r
        .get_ref(at)
        .map_err(get_err)?
        .as_blob()
        .map_err(ref_err)?
        .try_into()
        .map_err(|_| StoreError::Corrupt("viewer pseudonym is not 32 bytes".into()))?;
    let viewer = Pseudonym::from_bytes(viewer);
    let device = r
        .get_ref(at + 2)
        .map_err(get_err)?
        .as_str()
        .map_err(ref_err)?;
    let country = r
        .get_ref(at + 3)
        .map_err(get_err)?
        .as_str()
        .map_err(ref_err)?;
    let opt = |i: usize| -> StoreResult<Option<u32>> {
        r.get::<_, Option<i64>>(at + i)
            .map_err(get_err)?
            .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} out of range"))))
            .transpose()
    };
    let event = CubeEvent {
        viewer_hash: viewer.sketch_hash(),
        content_id: r.get(at + 1).map_err(get_err)?,
        device: device
            .parse::<Device>()
            .map_err(|_| StoreError::Corrupt(format!("device {device}")))?,
        country: Country::parse(country)
            .map_err(|_| StoreError::Corrupt(format!("country {country}")))?,
        watch_seconds: opt(4)?.unwrap_or(0),
        bitrate_kbps: opt(5)?,
        buffering_ms: opt(6)?,
        completed: r.get::<_, i64>(at + 7).map_err(get_err)? != 0,
    };
    Ok((viewer, event))
}

fn cube_event_of(r: &rusqlite::Row<'_>) -> StoreResult<CubeEvent> {
    cube_fields(r, 0).map(|(_, e)| e)
}

fn event_of(r: &rusqlite::Row<'_>) -> StoreResult<SilverEvent> {
    let (viewer, e) = cube_fields(r, 3)?;
    Ok(e.into_silver(
        r.get(0).map_err(get_err)?,
        r.get(2).map_err(get_err)?,
        viewer,
        r.get(11).map_err(get_err)?,
    ))
}

fn mark_changed(tx: &rusqlite::Transaction<'_>, hours: &[i64]) -> StoreResult<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO silver_changes(hour, counter, acked) VALUES (?1, 1, 0)
             ON CONFLICT(hour) DO UPDATE SET counter = counter + 1",
        )
        .map_err(sql_err)?;
    for h in hours {
        stmt.execute([h]).map_err(sql_err)?;
    }
    Ok(())
}

impl SqliteStore {
    /// The encoded cell blocks of a (day, level, generation), one cuboid or all, in cuboid
    /// order; of a cuboid, only the given parts (and part 0) if `parts` is set.
    async fn blocks(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Option<Cuboid>,
        parts: Option<Vec<i64>>,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let generation = int(generation)?;
        self.read(move |c| {
            let (d, l, cb) = (
                day_key(day),
                level_code(level),
                cuboid.map_or(-1, |c| i64::from(c.bits())),
            );
            let Some(parts) = parts else {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT cells FROM gold_blocks
                             WHERE day = ?1 AND level = ?2 AND generation = ?3
                               AND (?4 < 0 OR cuboid = ?4)
                             ORDER BY cuboid, part",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![d, l, generation, cb], |r| r.get(0))
                    .map_err(sql_err)?;
                return rows.collect::<Result<Vec<_>, _>>().map_err(sql_err);
            };
            let mut stmt = c
                .prepare_cached(
                    "SELECT cells FROM gold_blocks
                         WHERE day = ?1 AND level = ?2 AND generation = ?3 AND cuboid = ?4
                           AND part = ?5",
                )
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for part in std::iter::once(0).chain(parts) {
                let rows = stmt
                    .query_map(params![d, l, generation, cb, part], |r| r.get(0))
                    .map_err(sql_err)?;
                for r in rows {
                    out.push(r.map_err(sql_err)?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Silver writes of a batch the caller may keep a handle on: the writing thread gets a
    /// handle too, no copy.
    async fn put_shared(&self, events: Arc<Vec<SilverEvent>>) -> StoreResult<Vec<PutOutcome>> {
        self.with_ids(move |tx, ids| {
            ids.prepare_filter(&tx, events.len())?;
            let flushed = ids.flush(&tx)?;
            let mut out = vec![PutOutcome::Duplicate; events.len()];
            let mut hours = Vec::new();
            // Rows this call inserted, with their ids' hashes.
            let mut added: Vec<(&str, u64, i64)> = Vec::with_capacity(events.len());
            let mut seq = ids.last_seq;
            {
                let mut insert = tx
                    .prepare_cached(&format!(
                        "INSERT INTO silver_events (seq, {EVENT_COLUMNS}, origin_file, origin_line) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
                    ))
                    .map_err(sql_err)?;
                let mut origin_of = tx
                    .prepare_cached(concat!(
                        "SELECT ",
                        origin_read!(),
                        " FROM silver_events WHERE seq = ?1"
                    ))
                    .map_err(sql_err)?;
                let mut files = OriginFiles::default();
                let mut indexed = tx.prepare_cached(RecentIds::INDEXED).map_err(sql_err)?;
                // Which events are new, decided in the index's order (the ids' keys), so that
                // the lookups walk it from left to right instead of at random; repeated ids
                // stay in input order, so the first of them wins, and follow each other: a
                // repeat of an id this call inserts is a duplicate. Their ids' text is compared
                // only when their keys are equal.
                let mut order: Vec<(i64, &str, usize)> = events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (key(ids.by_id.hash(&e.event_id)), e.event_id.as_str(), i))
                    .collect();
                order.sort_unstable();
                // The hash of each event to insert.
                let mut new: Vec<Option<u64>> = vec![None; events.len()];
                let mut last_new: Option<(i64, &str)> = None;
                for (k, id, i) in order {
                    if let Some((last_key, last_id)) = last_new
                        && last_key == k
                        && last_id == id
                    {
                        continue;
                    }
                    let hash = seed_of(k);
                    if let Some(stored) = ids.find_hashed(&mut indexed, hash, id)? {
                        let origin: String = origin_of
                            .query_row([stored], |r| r.get(0))
                            .map_err(sql_err)?;
                        let e = &events[i];
                        if !e.origin.is_empty() && origin == e.origin {
                            out[i] = PutOutcome::AlreadyStored;
                        }
                        continue;
                    }
                    new[i] = Some(hash);
                    last_new = Some((k, id));
                }
                // Written in input order: the events are read one after the other in memory,
                // and rows of the same hour follow each other in the hour index.
                for ((e, hash), outcome) in events.iter().zip(new).zip(out.iter_mut()) {
                    let Some(hash) = hash else {
                        continue;
                    };
                    seq += 1;
                    let (origin, file, line) = match split_origin(&e.origin) {
                        Some((file, line)) => ("", Some(files.id(&tx, file)?), Some(line)),
                        None => (e.origin.as_str(), None, None),
                    };
                    insert
                        .execute(params![
                            seq,
                            e.event_id,
                            e.hour(),
                            e.occurred_at_ms,
                            &e.viewer.as_bytes()[..],
                            e.content_id,
                            e.device.as_str(),
                            e.country.as_str(),
                            e.watch_seconds,
                            e.bitrate_kbps,
                            e.buffering_ms,
                            e.completed,
                            origin,
                            file,
                            line,
                        ])
                        .map_err(sql_err)?;
                    *outcome = PutOutcome::Inserted;
                    hours.push(e.hour());
                    added.push((e.event_id.as_str(), hash, seq));
                }
            }
            if seq > ids.last_seq {
                tx.execute("UPDATE silver_meta SET last_seq = ?1 WHERE id = 0", [seq])
                    .map_err(sql_err)?;
            }
            hours.sort_unstable();
            hours.dedup();
            mark_changed(&tx, &hours)?;
            tx.commit().map_err(sql_err)?;
            if let Some(through) = flushed {
                ids.flushed(through);
            }
            for (id, hash, seq) in added {
                ids.by_id.insert_hashed(hash, id, seq);
            }
            ids.last_seq = seq;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl SilverStore for SqliteStore {
    async fn put_new(&self, events: &[SilverEvent]) -> StoreResult<Vec<PutOutcome>> {
        self.put_shared(Arc::new(events.to_vec())).await
    }

    async fn put_new_bulk(&self, events: Arc<Vec<SilverEvent>>) -> StoreResult<Vec<PutOutcome>> {
        // The same single-statement-per-row writes as `put_new`: SQLite has no cheaper bulk
        // path to offer, only the copy of the batch to spare.
        self.put_shared(events).await
    }

    async fn hour_events(&self, hour: i64) -> StoreResult<Vec<SilverEvent>> {
        self.read(move |c| {
            // In event id order, as the other stores give it; sorted here rather than by
            // SQLite, whose sorter copies every row once more.
            let mut events =
                query_events(c, "SELECT * FROM silver_events WHERE hour = ?1", [hour])?;
            events.sort_unstable_by(|a, b| a.event_id.cmp(&b.event_id));
            Ok(events)
        })
        .await
    }

    /// Parts of [`HOUR_PART`] rows (see [`SqliteStore::parts`]).
    fn hour_parts(&self, hour: i64) -> BoxStream<'_, StoreResult<Vec<SilverEvent>>> {
        self.parts(hour, EVENT_COLUMNS_READ, event_of)
    }

    /// [`Self::hour_parts`] reading only [`CUBE_COLUMNS_READ`].
    fn hour_cube_parts(&self, hour: i64) -> BoxStream<'_, StoreResult<Vec<CubeEvent>>> {
        self.parts(hour, CUBE_COLUMNS_READ, cube_event_of)
    }

    /// The viewer's rows through the viewer index, plus those of hours with unacknowledged
    /// changes through the hour index (the viewer index covers an hour's rows as of its last
    /// acknowledgement, and every later insert leaves the hour pending). With the consolidation
    /// running, that is the current hour or so, not the table.
    async fn viewer_events(&self, viewer: &Pseudonym) -> StoreResult<Vec<(String, i64)>> {
        let prefix = viewer_prefix(viewer.as_bytes()).to_vec();
        let viewer = viewer.as_bytes().to_vec();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    // CROSS JOIN fixes the loop order: hours outside, index seeks inside.
                    "SELECT e.event_id, e.hour
                         FROM silver_changes h CROSS JOIN silver_viewers v CROSS JOIN silver_events e
                         WHERE v.hour = h.hour AND v.viewer_prefix = ?2 AND e.seq = v.seq
                             AND e.viewer = ?1
                     UNION
                     SELECT e.event_id, e.hour
                         FROM silver_changes p CROSS JOIN silver_events e
                         WHERE p.counter > p.acked AND e.hour = p.hour AND e.viewer = ?1",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([viewer, prefix], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
        })
        .await
    }

    async fn delete(&self, event_ids: &[String]) -> StoreResult<u64> {
        let mut wanted = event_ids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        self.with_ids(move |tx, ids| {
            let mut hours = Vec::new();
            let mut gone = Vec::new();
            {
                let mut del = tx
                    .prepare_cached(
                        "DELETE FROM silver_events WHERE seq = ?1 RETURNING hour, viewer",
                    )
                    .map_err(sql_err)?;
                let mut unindex = tx
                    .prepare_cached(
                        "DELETE FROM silver_viewers
                             WHERE hour = ?1 AND viewer_prefix = ?2 AND seq = ?3",
                    )
                    .map_err(sql_err)?;
                let mut unid = tx
                    .prepare_cached("DELETE FROM silver_ids WHERE id_hash = ?1 AND seq = ?2")
                    .map_err(sql_err)?;
                let mut indexed = tx.prepare_cached(RecentIds::INDEXED).map_err(sql_err)?;
                for id in wanted {
                    let Some(seq) = ids.find(&mut indexed, &id)? else {
                        continue;
                    };
                    let (hour, viewer) = del
                        .query_row([seq], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                        })
                        .optional()
                        .map_err(sql_err)?
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "the id index names row {seq}, which is gone"
                            ))
                        })?;
                    unindex
                        .execute(params![hour, viewer_prefix(&viewer), seq])
                        .map_err(sql_err)?;
                    unid.execute([key(ids.by_id.hash(&id)), seq])
                        .map_err(sql_err)?;
                    hours.push(hour);
                    gone.push(id);
                }
            }
            if !gone.is_empty() {
                // Tells other writers that ids they keep in memory may be gone.
                tx.execute(
                    "UPDATE silver_meta SET deletions = deletions + 1 WHERE id = 0",
                    [],
                )
                .map_err(sql_err)?;
            }
            hours.sort_unstable();
            hours.dedup();
            mark_changed(&tx, &hours)?;
            tx.commit().map_err(sql_err)?;
            if !gone.is_empty() {
                ids.deletions += 1;
            }
            for id in &gone {
                ids.by_id.remove(id);
            }
            Ok(gone.len() as u64)
        })
        .await
    }

    /// `secure_delete` zeroes a deleted row where it lies, but not the copies B-tree rebalancing
    /// left behind: when a page splits or merges, the rebuilt page keeps the bytes of the cells
    /// that moved to a sibling in its unallocated gap. So the file is rewritten from its live rows
    /// (`VACUUM`, through a temporary file rather than memory, whatever the size), then the
    /// write-ahead log, which still holds the old page images, is checkpointed and truncated.
    /// The cost is a copy of the database (3.8 s for a 270 MB file on the build machine).
    async fn purge_deleted(&self) -> StoreResult<()> {
        self.with(|c| {
            c.execute_batch("PRAGMA temp_store = FILE; VACUUM; PRAGMA temp_store = MEMORY;")
                .map_err(sql_err)?;
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(sql_err)
        })
        .await
    }
}

#[async_trait]
impl ChangeFeed for SqliteStore {
    async fn pending(&self) -> StoreResult<Vec<(i64, u64)>> {
        self.with(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT hour, counter FROM silver_changes WHERE counter > acked ORDER BY hour",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for r in rows {
                let (h, n) = r.map_err(sql_err)?;
                out.push((h, uint(n)?));
            }
            Ok(out)
        })
        .await
    }

    /// Also indexes the hour's rows by viewer that are not indexed yet, in the same transaction
    /// (see [`SCHEMA`]): one sorted pass per consolidated hour instead of a random index write
    /// per inserted event.
    async fn ack(&self, hour: i64, seen: u64) -> StoreResult<()> {
        let seen = int(seen)?;
        self.with(move |c| {
            // Immediate: the write lock is taken (waiting for another process's writer) before
            // the read below; a read transaction that turns into a write fails at once, without
            // waiting, when another connection wrote since it began.
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            index_hour_viewers(&tx, hour)?;
            tx.execute(
                "UPDATE silver_changes SET acked = max(acked, ?2) WHERE hour = ?1",
                params![hour, seen],
            )
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn mark(&self, hours: &[i64]) -> StoreResult<()> {
        let hours = hours.to_vec();
        self.with(move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            mark_changed(&tx, &hours)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }
}

/// Appends the rows of `hour` that the viewer index lacks to it. Every pass indexes all of the
/// hour's rows after the highest `seq` the hour has in the index, and `seq` only grows, so the
/// rows up to that `seq` are indexed already: a pass reads only what arrived since the last one.
/// The rows are sorted here and appended in key order (SQLite's own sorter would copy every row
/// through a temporary b-tree first).
fn index_hour_viewers(tx: &rusqlite::Transaction<'_>, hour: i64) -> StoreResult<()> {
    let indexed: i64 = tx
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM silver_viewers WHERE hour = ?1")
        .and_then(|mut s| s.query_row([hour], |r| r.get(0)))
        .map_err(sql_err)?;
    let mut rows: Vec<([u8; 8], i64)> = Vec::new();
    {
        let mut read = tx
            .prepare_cached("SELECT viewer, seq FROM silver_events WHERE hour = ?1 AND seq > ?2")
            .map_err(sql_err)?;
        let mut found = read.query([hour, indexed]).map_err(sql_err)?;
        while let Some(r) = found.next().map_err(sql_err)? {
            let viewer = r
                .get_ref(0)
                .map_err(sql_err)?
                .as_blob()
                .map_err(|e| StoreError::Corrupt(format!("viewer pseudonym: {e}")))?;
            if viewer.len() != 32 {
                return Err(StoreError::Corrupt(
                    "viewer pseudonym is not 32 bytes".into(),
                ));
            }
            let mut prefix = [0; 8];
            prefix.copy_from_slice(viewer_prefix(viewer));
            rows.push((prefix, r.get(1).map_err(sql_err)?));
        }
    }
    rows.sort_unstable();
    // Many rows per statement: one step inserts them all, where a statement per row paid
    // SQLite's per-statement work (bind, step, reset) for each of an hour's 100,000 rows.
    static FULL_INSERT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| viewer_insert_sql(VIEWER_ROWS_PER_INSERT));
    for chunk in rows.chunks(VIEWER_ROWS_PER_INSERT) {
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + 2 * chunk.len());
        values.push(&hour);
        for (prefix, seq) in chunk {
            values.push(prefix);
            values.push(seq);
        }
        let params = values.as_slice();
        insert_rows(
            tx,
            chunk.len(),
            VIEWER_ROWS_PER_INSERT,
            &FULL_INSERT,
            viewer_insert_sql,
            params,
        )?;
    }
    Ok(())
}

/// Runs an `INSERT` of `n` rows of a statement written for `full` rows at most: `full_sql`
/// from the statement cache, or for a last, shorter chunk `sql(n)`, prepared for its one use
/// (not worth a place in the cache).
fn insert_rows<P: rusqlite::Params>(
    tx: &Connection,
    n: usize,
    full: usize,
    full_sql: &str,
    sql: fn(usize) -> String,
    params: P,
) -> StoreResult<()> {
    if n == full {
        tx.prepare_cached(full_sql)
            .and_then(|mut s| s.execute(params))
    } else {
        tx.prepare(&sql(n)).and_then(|mut s| s.execute(params))
    }
    .map(|_| ())
    .map_err(sql_err)
}

/// Rows of the viewer index written by one statement.
const VIEWER_ROWS_PER_INSERT: usize = 256;

/// `INSERT OR IGNORE` of `n` viewer index rows of one hour (`?1`), each a prefix and a `seq`.
fn viewer_insert_sql(n: usize) -> String {
    let mut sql =
        String::from("INSERT OR IGNORE INTO silver_viewers (hour, viewer_prefix, seq) VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        let p = 2 + 2 * i;
        sql.push_str(&format!("(?1, ?{p}, ?{})", p + 1));
    }
    sql
}

/// The viewer index's key for a pseudonym: its first 8 bytes (all of it, if shorter).
fn viewer_prefix(viewer: &[u8]) -> &[u8] {
    &viewer[..viewer.len().min(8)]
}

fn day_key(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// A (cuboid, part)'s cells, encoded, on their way to `gold_blocks`.
type Block = ((u8, u16), Vec<u8>);

/// Replaces the blocks of a (day, level, generation) with those `next` gives, in one
/// transaction that commits when `next` gives the end mark (`Some(None)`); when it runs out
/// without it (`None`: the caller went away), nothing is committed.
fn write_blocks(
    c: &mut Connection,
    day: String,
    level: Level,
    generation: i64,
    mut next: impl FnMut() -> Option<Option<Block>>,
) -> StoreResult<()> {
    let tx = c.transaction().map_err(sql_err)?;
    tx.execute(
        "DELETE FROM gold_blocks WHERE day = ?1 AND level = ?2 AND generation = ?3",
        params![day, level_code(level), generation],
    )
    .map_err(sql_err)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO gold_blocks (day, level, generation, cuboid, part, cells)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql_err)?;
        loop {
            match next() {
                Some(Some(((cuboid, part), block))) => {
                    stmt.execute(params![
                        day,
                        level_code(level),
                        generation,
                        cuboid,
                        part,
                        block
                    ])
                    .map_err(sql_err)?;
                }
                Some(None) => break,
                None => return Err(StoreError::Backend("the cells stopped coming".into())),
            }
        }
    }
    tx.commit().map_err(sql_err)
}

#[async_trait]
impl GoldStore for SqliteStore {
    async fn manifest(&self, day: NaiveDate) -> StoreResult<Option<DayManifest>> {
        self.with(move |c| {
            let body: Option<String> = c
                .query_row(
                    "SELECT body FROM gold_manifests WHERE day = ?1",
                    [day_key(day)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?;
            body.map(|b| serde_json::from_str(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
        .await
    }

    async fn put_cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cells: &[(Dims, Cell)],
    ) -> StoreResult<()> {
        // The blocks are encoded here and written by the writing connection as they come, a
        // few at a time: holding a day level's encoded blocks at once was a fifth of closing a
        // day's memory. The transaction commits only on the last block's `None`; a write whose
        // caller went away before it rolls back.
        let (blocks_tx, mut blocks_rx) = tokio::sync::mpsc::channel::<Option<Block>>(4);
        let generation = int(generation)?;
        let write = self.with(move |c| {
            write_blocks(c, day_key(day), level, generation, || {
                blocks_rx.blocking_recv()
            })
        });
        let send = async move {
            for (key, cells) in by_part(cells) {
                // A send fails only when the write stopped on an error, which it returns.
                if blocks_tx
                    .send(Some((key, encode_cells(&cells))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = blocks_tx.send(None).await;
        };
        let (written, ()) = tokio::join!(write, send);
        written
    }

    async fn publish(&self, manifest: &DayManifest, expected_version: u64) -> StoreResult<()> {
        let day = manifest
            .day
            .ok_or_else(|| StoreError::Corrupt("a manifest without a day".into()))?;
        let body =
            serde_json::to_string(manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let version = int(manifest.version)?;
        let expected = int(expected_version)?;
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            let current: i64 = tx
                .query_row(
                    "SELECT version FROM gold_manifests WHERE day = ?1",
                    [day_key(day)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?
                .unwrap_or(0);
            if current != expected {
                return Err(StoreError::Conflict);
            }
            tx.execute(
                "INSERT OR REPLACE INTO gold_manifests (day, version, body) VALUES (?1, ?2, ?3)",
                params![day_key(day), version, body],
            )
            .map_err(sql_err)?;
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Option<Cuboid>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        let mut out = Vec::new();
        for b in self.blocks(day, level, generation, cuboid, None).await? {
            out.extend(decode_cells(&b).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    async fn cells_where(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Cuboid,
        select: &CellSelect<'_>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        let parts = match &select.countries {
            Some(countries) if cuboid.has(Dim::Country) => {
                let mut parts: Vec<i64> = countries
                    .iter()
                    .map(|c| i64::from(part_of(Some(*c))))
                    .collect();
                parts.sort_unstable();
                parts.dedup();
                Some(parts)
            }
            _ => None,
        };
        let mut out = Vec::new();
        for b in self
            .blocks(day, level, generation, Some(cuboid), parts)
            .await?
        {
            out.extend(
                decode_cells_where(&b, select.keep)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        Ok(out)
    }

    async fn stale_generations(
        &self,
        day: NaiveDate,
        keep: &[(Level, u64)],
    ) -> StoreResult<Vec<(Level, u64)>> {
        let keep = keep.to_vec();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT DISTINCT level, generation FROM gold_blocks WHERE day = ?1")
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([day_key(day)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for r in rows {
                let (l, g) = r.map_err(sql_err)?;
                let found = (level_of(l)?, uint(g)?);
                if !keep.contains(&found) {
                    out.push(found);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_cells(&self, day: NaiveDate, level: Level, generation: u64) -> StoreResult<()> {
        let generation = int(generation)?;
        self.with(move |c| {
            c.execute(
                "DELETE FROM gold_blocks WHERE day = ?1 AND level = ?2 AND generation = ?3",
                params![day_key(day), level_code(level), generation],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn put_entries(&self, entries: &[CatalogEntry]) -> StoreResult<()> {
        let entries = entries.to_vec();
        self.with(move |c| {
            let tx = c.transaction().map_err(sql_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO catalog (content_id, title, genre, release_year, duration_seconds)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(sql_err)?;
                for e in &entries {
                    stmt.execute(params![e.content_id, e.title, e.genre, e.release_year, e.duration_seconds])
                        .map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn load(&self) -> StoreResult<Catalog> {
        self.with(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT content_id, title, genre, release_year, duration_seconds FROM catalog",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(CatalogEntry {
                        content_id: r.get(0)?,
                        title: r.get(1)?,
                        genre: r.get(2)?,
                        release_year: r.get(3)?,
                        duration_seconds: r.get(4)?,
                    })
                })
                .map_err(sql_err)?;
            rows.collect::<Result<Catalog, _>>().map_err(sql_err)
        })
        .await
    }
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn processed(&self, key: &str, version: &str) -> StoreResult<Option<FileReport>> {
        let (key, version) = (key.to_owned(), version.to_owned());
        self.with(move |c| {
            let report: Option<String> = c
                .query_row(
                    "SELECT report FROM processed_objects WHERE key = ?1 AND version = ?2",
                    [key, version],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?;
            report
                .map(|r| serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
        .await
    }

    async fn mark_processed(
        &self,
        key: &str,
        version: &str,
        report: &FileReport,
    ) -> StoreResult<()> {
        let (key, version) = (key.to_owned(), version.to_owned());
        let report =
            serde_json::to_string(report).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO processed_objects (key, version, report, processed_at) VALUES (?1, ?2, ?3, ?4)",
                params![key, version, report, chrono::Utc::now().to_rfc3339()],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! The ids kept in memory against a model, with two writers on one file (as two processes
    //! would be), a flush every few rows, deletions and reopenings in between.

    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Put(usize, Vec<(u8, u8)>),
        Delete(usize, Vec<u8>),
        Reopen(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..2_usize, prop::collection::vec((0..16_u8, 0..3_u8), 0..6))
                .prop_map(|(w, es)| Op::Put(w, es)),
            2 => (0..2_usize, prop::collection::vec(0..16_u8, 0..4)).prop_map(|(w, ids)| Op::Delete(w, ids)),
            1 => (0..2_usize).prop_map(Op::Reopen),
        ]
    }

    fn origin(o: u8) -> String {
        ["", "file-a#1", "file-b#1"][usize::from(o)].to_owned()
    }

    fn event(id: u8, o: u8) -> SilverEvent {
        SilverEvent {
            event_id: format!("e{id:02}"),
            occurred_at_ms: 1_700_000_000_000 + i64::from(id) * 600_000,
            viewer: Pseudonym::from_bytes([id; 32]),
            content_id: "c1".into(),
            device: Device::Tv,
            country: Country::parse("BR").expect("country"),
            watch_seconds: u32::from(id),
            bitrate_kbps: None,
            buffering_ms: None,
            completed: false,
            origin: origin(o),
        }
    }

    fn open(path: &Path, flush_at: usize) -> SqliteStore {
        open_flushing(path, flush_at, flush_at)
    }

    /// A store whose passes wait for `flush_at` to `flush_max` ids (a fourth of the index).
    fn open_flushing(path: &Path, flush_at: usize, flush_max: usize) -> SqliteStore {
        open_filtering(
            path,
            flush_at,
            flush_max,
            Some((FILTER_AFTER_SHARE, FILTER_MIN_IDS)),
        )
    }

    /// [`open_flushing`] with the id filter's share and least size, or no filter.
    fn open_filtering(
        path: &Path,
        flush_at: usize,
        flush_max: usize,
        filter: Option<(i64, usize)>,
    ) -> SqliteStore {
        let store = SqliteStore::open(path).expect("open");
        let mut ids = store.ids.lock().expect("lock");
        ids.flush_at = flush_at;
        ids.flush_max = flush_max;
        ids.filter_share = filter.map(|(share, _)| share);
        ids.filter_min = filter.map_or(FILTER_MIN_IDS, |(_, min)| min);
        drop(ids);
        store
    }

    fn probes(store: &SqliteStore) -> u64 {
        store.ids.lock().expect("lock").probes
    }

    fn numbered(from: usize, n: usize) -> Vec<SilverEvent> {
        (from..from + n)
            .map(|i| SilverEvent {
                event_id: format!("n{i:06}"),
                ..event(1, 0)
            })
            .collect()
    }

    #[tokio::test]
    async fn new_ids_skip_the_index_once_the_filter_is_built() {
        let dir = tempfile::tempdir().expect("tmp");
        for filter in [Some((FILTER_AFTER_SHARE, 1_000)), None] {
            let path = dir.path().join(format!("{filter:?}.db"));
            let store = open_filtering(&path, 1_000, 1_000, filter);
            for from in (0..6_000).step_by(1_000) {
                let out = store.put_new(&numbered(from, 1_000)).await.expect("put");
                assert!(out.iter().all(|o| *o == PutOutcome::Inserted));
            }
            // A store opened on it reads the index into its filter, or looks every id up.
            let store = open_filtering(&path, 1_000, 1_000, filter);
            let before = probes(&store);
            let out = store.put_new(&numbered(6_000, 2_000)).await.expect("put");
            assert!(out.iter().all(|o| *o == PutOutcome::Inserted));
            let looked_up = probes(&store) - before;
            if filter.is_some() {
                // About 1% false positives at the filter's size; 5% leaves room for luck.
                assert!(looked_up <= 100, "{looked_up} of 2,000 new ids looked up");
            } else {
                assert_eq!(looked_up, 2_000);
            }
            // Every id indexed is still found: resent, they are duplicates.
            let again = store.put_new(&numbered(0, 8_000)).await.expect("put");
            assert!(again.iter().all(|o| *o == PutOutcome::Duplicate));
            assert_eq!(store.silver_count().await.expect("count"), 8_000);
        }
    }

    /// A writer's ids as they are once the index holds the rows through `indexed_through`.
    fn indexed(indexed_through: i64) -> RecentIds {
        RecentIds {
            indexed_through,
            ..RecentIds::new()
        }
    }

    /// Two ids whose hashes collide: the index is made to say that an id with the second one's
    /// hash is at the first one's row, as a collision would. Each is still found as itself.
    #[test]
    fn ids_whose_hashes_collide_are_told_apart() {
        let (rt, _dir, path) = scratch();
        // Every id goes to the index at the next write, and every lookup reaches it.
        let store = open_filtering(&path, 1, 1, None);
        let (a, b, c) = (event(1, 1), event(2, 2), event(3, 1));
        for e in [&a, &c] {
            assert_eq!(
                rt.block_on(store.put_new(std::slice::from_ref(e)))
                    .expect("put"),
                [PutOutcome::Inserted]
            );
        }
        {
            let conn = store.conn.lock().expect("lock");
            let (seed, seq_a): (i64, i64) = conn
                .query_row(
                    "SELECT id_seed, (SELECT seq FROM silver_events WHERE event_id = 'e01')
                         FROM silver_meta",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("meta");
            conn.execute(
                "INSERT INTO silver_ids (id_hash, seq) VALUES (?1, ?2)",
                [key(id_hash(seed_of(seed), &b.event_id)), seq_a],
            )
            .expect("collision");
        }
        let before = probes(&store);
        assert_eq!(
            rt.block_on(store.put_new(&[b.clone(), a.clone()]))
                .expect("put"),
            [PutOutcome::Inserted, PutOutcome::AlreadyStored]
        );
        assert_eq!(probes(&store) - before, 2, "both looked up in the index");
        // Once b is indexed too, its hash names two rows; each id finds its own.
        assert_eq!(
            rt.block_on(store.put_new(std::slice::from_ref(&c)))
                .expect("put"),
            [PutOutcome::AlreadyStored]
        );
        assert_eq!(
            rt.block_on(store.put_new(&[b.clone(), a.clone()]))
                .expect("put"),
            [PutOutcome::AlreadyStored, PutOutcome::AlreadyStored]
        );
        assert_eq!(
            rt.block_on(store.delete(std::slice::from_ref(&b.event_id)))
                .expect("delete"),
            1
        );
        assert_eq!(
            rt.block_on(store.put_new(&[a, b])).expect("put"),
            [PutOutcome::AlreadyStored, PutOutcome::Inserted]
        );
    }

    #[test]
    fn passes_grow_with_the_index_within_bounds() {
        let at = |n| indexed(n).flush_threshold();
        assert_eq!(at(0), ID_FLUSH_ROWS);
        assert_eq!(at(1_000_000), ID_FLUSH_ROWS);
        assert_eq!(at(1_600_000), 400_000);
        assert_eq!(at(4_000_000), ID_FLUSH_MAX_ROWS);
        assert_eq!(at(100_000_000), ID_FLUSH_MAX_ROWS);
    }

    #[test]
    fn filters_are_sized_on_the_index_within_bounds() {
        let at = |n| indexed(n).filter_capacity();
        assert_eq!(at(0), FILTER_MIN_IDS);
        assert_eq!(at(5_000_000), 10_000_000);
        assert_eq!(at(100_000_000), FILTER_MAX_IDS);
        // A full filter at the largest size is kept, not read again from the index.
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut conn = store.conn.lock().expect("lock");
        let tx = conn.transaction().expect("tx");
        let mut ids = RecentIds::new();
        let mut full = IdFilter::new(FILTER_MAX_IDS, 0);
        (0..=FILTER_MAX_IDS as u64).for_each(|h| full.insert(h));
        assert!(full.is_full());
        ids.filter = Some(full);
        ids.prepare_filter(&tx, 1).expect("prepare");
        assert_eq!(
            ids.filter.as_ref().map(IdFilter::capacity),
            Some(FILTER_MAX_IDS)
        );
        assert!(ids.filter.as_ref().is_some_and(IdFilter::is_full));
    }

    /// The table's ids, and whether the index holds exactly the rows up to `indexed_through`.
    fn check_layout(path: &Path) -> (Vec<String>, bool) {
        let c = Connection::open(path).expect("db");
        let seed: i64 = c
            .query_row("SELECT id_seed FROM silver_meta", [], |r| r.get(0))
            .expect("seed");
        register_id_hash(&c, seed_of(seed)).expect("function");
        let ids = c
            .prepare("SELECT event_id FROM silver_events ORDER BY event_id")
            .expect("sql")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<Vec<String>, _>>()
            .expect("ids");
        let mismatched: i64 = c
            .query_row(
                "SELECT (SELECT count(*) FROM silver_events e, silver_meta m
                             WHERE e.seq <= m.indexed_through
                               AND NOT EXISTS (SELECT 1 FROM silver_ids i WHERE i.id_hash = id_hash(e.event_id) AND i.seq = e.seq))
                      + (SELECT count(*) FROM silver_ids i, silver_meta m
                             WHERE i.seq > m.indexed_through
                                OR NOT EXISTS (SELECT 1 FROM silver_events e WHERE e.seq = i.seq AND id_hash(e.event_id) = i.id_hash))",
                [],
                |r| r.get(0),
            )
            .expect("layout");
        (ids, mismatched == 0)
    }

    /// A pass of more ids than one statement writes (two full statements and a shorter one)
    /// indexes exactly the rows it covers, and the ids are found through the index afterwards.
    #[test]
    fn a_pass_larger_than_one_statement_indexes_every_row() {
        let (rt, _dir, path) = scratch();
        let n = ID_KEYS_PER_INSERT * 2 + 17;
        let store = open(&path, n);
        let events: Vec<SilverEvent> = (0..n)
            .map(|i| {
                let mut e = event(0, 1);
                e.event_id = format!("pass-{i:05}");
                e
            })
            .collect();
        rt.block_on(store.put_new(&events)).expect("put");
        // The next write finds `n` recent ids and moves them into the index first.
        let mut last = event(1, 1);
        last.event_id = "pass-last".into();
        rt.block_on(store.put_new(&[last])).expect("put");
        let (ids, consistent) = check_layout(&path);
        assert_eq!(ids.len(), n + 1);
        assert!(
            consistent,
            "silver_ids does not hold exactly the indexed rows"
        );
        let c = Connection::open(&path).expect("db");
        let (keys, through): (i64, i64) = c
            .query_row(
                "SELECT (SELECT count(*) FROM silver_ids), indexed_through FROM silver_meta",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("index");
        assert_eq!((keys, through), (n as i64, n as i64));
        // A reopened store (no ids in memory) finds them all through the index, stored by
        // these very rows (the same origins).
        drop(store);
        let store = open(&path, n);
        let again = rt.block_on(store.put_new(&events)).expect("put");
        assert!(
            again.iter().all(|o| *o == PutOutcome::AlreadyStored),
            "{again:?}"
        );
    }

    /// A runtime, a temporary directory and the database path inside it.
    fn scratch() -> (
        tokio::runtime::Runtime,
        tempfile::TempDir,
        std::path::PathBuf,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("streamcube.db");
        (rt, dir, path)
    }

    /// The log is copied into the database file by the checkpoint thread while the store stays
    /// open (the writing connection's automatic checkpoint is off, so nothing else copies it),
    /// and the store leaves no log behind when it is dropped.
    #[test]
    fn the_log_is_checkpointed_beside_the_writer() {
        let (rt, dir, path) = scratch();
        let wal = dir.path().join("streamcube.db-wal");
        let store = SqliteStore::open_checkpointing_at(&path, 16).expect("open");
        let file_len = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let before = file_len();
        let mut id = 0_u32;
        // Each batch commits on its own; 40 of them log far more than 16 pages.
        for _ in 0..40 {
            let events: Vec<SilverEvent> = (0..50)
                .map(|_| {
                    id += 1;
                    let mut e = event(0, 1);
                    e.event_id = format!("checkpoint-{id:06}");
                    e.viewer = Pseudonym::from_bytes([(id % 251) as u8; 32]);
                    e
                })
                .collect();
            rt.block_on(store.put_new(&events)).expect("put");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while file_len() <= before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            file_len() > before,
            "the database file did not grow: the log was not checkpointed ({before} bytes)"
        );
        drop(store);
        assert!(
            std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
            "a log was left behind"
        );
        let c = Connection::open(&path).expect("db");
        let rows: i64 = c
            .query_row("SELECT count(*) FROM silver_events", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 2_000);
    }

    /// A writer that commits without pause still lets the log start over: once the log is past
    /// its limit, a write waits for a checkpoint that starts after it, and then begins on an
    /// empty log. A reader on an old snapshot keeps the log from being copied meanwhile (as a
    /// writer without pause did): the log grows past the limit, each write waits for one
    /// checkpoint and goes on; once the reader is done, the next write starts the log over.
    #[test]
    fn the_log_starts_over_under_writes_without_pause() {
        let (rt, _dir, path) = scratch();
        let store = SqliteStore::open_checkpointing_at(&path, 16).expect("open");
        let limit = store.checkpointer.limit;
        let logged = || {
            store
                .checkpointer
                .shared
                .state
                .lock()
                .map_or(0, |s| s.logged)
        };
        let mut id = 0_u32;
        let mut batch = || -> Vec<SilverEvent> {
            (0..200)
                .map(|_| {
                    id += 1;
                    let mut e = event(0, 1);
                    e.event_id = format!("pause-{id:06}");
                    e.viewer = Pseudonym::from_bytes([(id % 251) as u8; 32]);
                    e
                })
                .collect()
        };
        rt.block_on(store.put_new(&batch())).expect("put");
        let reader = Connection::open(&path).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let _: i64 = reader
            .query_row("SELECT count(*) FROM silver_events", [], |r| r.get(0))
            .expect("snapshot");
        let mut most = 0;
        for _ in 0..30 {
            rt.block_on(store.put_new(&batch())).expect("put");
            most = most.max(logged());
        }
        assert!(
            most > limit,
            "the log never passed its limit ({most} pages)"
        );
        reader.execute_batch("COMMIT").expect("end of the snapshot");
        rt.block_on(store.put_new(&batch())).expect("put");
        assert!(
            logged() < limit,
            "the log did not start over: {} pages after the write",
            logged()
        );
        let rows: i64 = reader
            .query_row("SELECT count(*) FROM silver_events", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 32 * 200);
    }

    /// An hour of more rows than one insert statement writes is indexed whole, in two passes
    /// (the second appends only the rows that arrived after the first), and every viewer's
    /// events are found through the index once the hour is acknowledged.
    #[test]
    fn an_hour_larger_than_one_insert_is_indexed_whole() {
        let (rt, _dir, path) = scratch();
        let store = SqliteStore::open(&path).expect("open");
        let batch = |from: u32, to: u32| -> Vec<SilverEvent> {
            (from..to)
                .map(|i| {
                    let mut e = event(1, 1);
                    e.event_id = format!("big-{i:05}");
                    // 97 viewers, unsorted against the ids; several events each.
                    let v = i.wrapping_mul(37) % 97;
                    e.viewer = Pseudonym::from_bytes([u8::try_from(v).expect("small"); 32]);
                    e
                })
                .collect()
        };
        let n1 = u32::try_from(VIEWER_ROWS_PER_INSERT * 2 + 17).expect("small");
        let n2 = n1 + u32::try_from(VIEWER_ROWS_PER_INSERT).expect("small") + 3;
        let ack_all = || {
            for (hour, seen) in rt.block_on(store.pending()).expect("pending") {
                rt.block_on(store.ack(hour, seen)).expect("ack");
            }
        };
        rt.block_on(store.put_new(&batch(0, n1))).expect("put");
        ack_all();
        rt.block_on(store.put_new(&batch(n1, n2))).expect("put");
        ack_all();
        let c = Connection::open(&path).expect("db");
        let rows = |sql: &str| -> Vec<(i64, Vec<u8>, i64)> {
            c.prepare(sql)
                .expect("sql")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("read")
        };
        let index = rows("SELECT hour, viewer_prefix, seq FROM silver_viewers ORDER BY 1, 2, 3");
        let table =
            rows("SELECT hour, substr(viewer, 1, 8), seq FROM silver_events ORDER BY 1, 2, 3");
        assert_eq!(index.len(), usize::try_from(n2).expect("small"));
        assert_eq!(index, table);
        for v in [0_u8, 41, 96] {
            let mut found: Vec<String> = rt
                .block_on(store.viewer_events(&Pseudonym::from_bytes([v; 32])))
                .expect("lookup")
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            found.sort();
            let want: Vec<String> = (0..n2)
                .filter(|i| i.wrapping_mul(37) % 97 == u32::from(v))
                .map(|i| format!("big-{i:05}"))
                .collect();
            assert!(!want.is_empty());
            assert_eq!(found, want, "viewer {v}");
        }
    }

    /// An hour read in parts gives every event of the hour once, in parts of [`HOUR_PART`]
    /// events and a last shorter one, through the hour index; the reading connection is free
    /// between parts, so other reads go on while a part waits to be used.
    #[test]
    fn an_hour_is_read_in_parts_that_add_up_to_it() {
        use futures::TryStreamExt;
        let (rt, _dir, path) = scratch();
        let store = SqliteStore::open(&path).expect("open");
        let hour_ms = 3_600_000;
        let at = |i: usize, hours: i64| -> SilverEvent {
            let mut e = event(1, 1);
            e.event_id = format!("h{hours}-{i:06}");
            e.occurred_at_ms += hours * hour_ms;
            e
        };
        let h = event(1, 1).hour();
        // The hour's rows interleaved with the next hour's, so its seqs have gaps.
        let n = 2 * HOUR_PART + 7;
        for chunk in (0..n).collect::<Vec<_>>().chunks(3_000) {
            let mut batch: Vec<_> = chunk.iter().map(|&i| at(i, 0)).collect();
            batch.extend(chunk.iter().take(5).map(|&i| at(i, 1)));
            rt.block_on(store.put_new(&batch)).expect("put");
        }
        let exact: Vec<_> = (0..HOUR_PART).map(|i| at(i, 2)).collect();
        rt.block_on(store.put_new(&exact)).expect("put");
        let sizes = |hour: i64| -> Vec<usize> {
            let parts: Vec<Vec<SilverEvent>> = rt
                .block_on(store.hour_parts(hour).try_collect())
                .expect("parts");
            parts.iter().map(Vec::len).collect()
        };
        assert_eq!(sizes(h), [HOUR_PART, HOUR_PART, 7]);
        assert_eq!(sizes(h + 2), [HOUR_PART]);
        assert_eq!(sizes(h + 3), Vec::<usize>::new());
        let mut read: Vec<SilverEvent> = rt
            .block_on(store.hour_parts(h).try_concat())
            .expect("parts");
        read.sort_unstable_by(|a, b| a.event_id.cmp(&b.event_id));
        assert_eq!(read, rt.block_on(store.hour_events(h)).expect("hour"));
        // A part kept waiting holds no connection: another read goes on meanwhile.
        let mut parts = store.hour_parts(h);
        let first = rt.block_on(parts.try_next()).expect("part").expect("first");
        assert_eq!(first.len(), HOUR_PART);
        let next_hour = rt
            .block_on(async {
                let wait = std::time::Duration::from_secs(30);
                tokio::time::timeout(wait, store.hour_events(h + 1)).await
            })
            .expect("a read between two parts is not kept waiting")
            .expect("next hour");
        assert_eq!(next_hour.len(), 5 * n.div_ceil(3_000));
        assert_eq!(
            rt.block_on(parts.try_concat()).expect("rest").len(),
            HOUR_PART + 7
        );
        // Each part seeks the hour index from where the last one ended.
        let c = Connection::open(&path).expect("db");
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT {EVENT_COLUMNS_READ}, seq FROM silver_events
             WHERE hour = ?1 AND seq > ?2 ORDER BY seq LIMIT {HOUR_PART}"
        );
        let plan: Vec<String> = c
            .prepare(&sql)
            .expect("plan")
            .query_map([h, 0], |r| r.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("plan");
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX silver_by_hour (hour=? AND rowid>?)")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }

    /// A level's blocks are committed only with the end mark: a write whose blocks stop
    /// coming half way (its caller went away) leaves the blocks written before it as they were.
    #[test]
    fn a_level_whose_blocks_stop_coming_is_not_committed() {
        let (_rt, _dir, path) = scratch();
        drop(SqliteStore::open(&path).expect("open"));
        let mut c = Connection::open(&path).expect("db");
        let day = "2026-11-04".to_owned();
        let blocks = |n: u16, tag: u8| -> Vec<Option<Option<Block>>> {
            (0..n)
                .map(|p| Some(Some(((3, p), vec![tag; 10]))))
                .collect()
        };
        let write = |c: &mut Connection, mut given: Vec<Option<Option<Block>>>| {
            given.reverse();
            write_blocks(c, day.clone(), Level::Day, 7, || given.pop().flatten())
        };
        let stored = |c: &Connection| -> Vec<(i64, Vec<u8>)> {
            c.prepare("SELECT part, cells FROM gold_blocks WHERE generation = 7 ORDER BY part")
                .expect("sql")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("read")
        };
        let mut complete = blocks(3, 1);
        complete.push(Some(None));
        write(&mut c, complete).expect("complete write");
        assert_eq!(
            stored(&c),
            (0..3).map(|p| (p, vec![1; 10])).collect::<Vec<_>>()
        );
        // Two blocks of a rewrite, then nothing more.
        let cut = write(&mut c, blocks(2, 2));
        assert!(matches!(cut, Err(StoreError::Backend(_))), "{cut:?}");
        assert_eq!(
            stored(&c),
            (0..3).map(|p| (p, vec![1; 10])).collect::<Vec<_>>()
        );
        let mut rewrite = blocks(2, 2);
        rewrite.push(Some(None));
        write(&mut c, rewrite).expect("rewrite");
        assert_eq!(
            stored(&c),
            (0..2).map(|p| (p, vec![2; 10])).collect::<Vec<_>>()
        );
    }

    proptest! {
        /// An origin split and put back together is the same text, and a file's rows split.
        #[test]
        fn origins_split_and_join_back(origin in "[a-z#:/0-9\u{e9}]{0,12}(:[0-9]{1,20})?", line in 0..i64::MAX) {
            if let Some((file, n)) = split_origin(&origin) {
                prop_assert_eq!(format!("{file}:{n}"), origin.clone());
            }
            let row = format!("{origin}:{line}");
            prop_assert_eq!(split_origin(&row), Some((origin.as_str(), line)));
        }
    }

    /// A file's rows store its origin once; every origin reads back as written, including ones
    /// that do not end in a plain line number, and a replay from the same file and line is
    /// recognised.
    #[test]
    fn origins_are_stored_once_per_file_and_read_back_whole() {
        let (rt, _dir, path) = scratch();
        let store = SqliteStore::open(&path).expect("open");
        let origins = [
            "bronze/a.csv#sha256:ab12:2",
            "bronze/a.csv#sha256:ab12:3",
            "bronze/b.csv#v1:0",
            "",
            "no-line",
            "bronze/a.csv#sha256:ab12:007",
            "bronze/a.csv#sha256:ab12:",
            "x:99999999999999999999",
            "bronze/a.csv#sha256:ab12:9223372036854775807",
        ];
        let events: Vec<SilverEvent> = origins
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut e = event(u8::try_from(i).expect("small"), 0);
                e.origin = (*o).to_owned();
                e
            })
            .collect();
        let put = rt.block_on(store.put_new(&events)).expect("put");
        assert_eq!(put, vec![PutOutcome::Inserted; origins.len()]);
        let mut read: Vec<(String, String)> = Vec::new();
        for e in &events {
            for got in rt.block_on(store.hour_events(e.hour())).expect("hour") {
                read.push((got.event_id, got.origin));
            }
        }
        read.sort();
        read.dedup();
        let mut want: Vec<(String, String)> = events
            .iter()
            .map(|e| (e.event_id.clone(), e.origin.clone()))
            .collect();
        want.sort();
        assert_eq!(read, want);
        let c = Connection::open(&path).expect("db");
        let files: Vec<String> = c
            .prepare("SELECT origin FROM silver_origins ORDER BY origin")
            .expect("sql")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("files");
        assert_eq!(files, ["bronze/a.csv#sha256:ab12", "bronze/b.csv#v1"]);
        let texts: i64 = c
            .query_row(
                "SELECT count(*) FROM silver_events WHERE origin <> '' OR origin_file IS NULL",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(
            texts, 5,
            "only origins other than <file>:<line> are kept as text"
        );
        // Replays of a split origin and of a text origin; another line of a known file.
        let mut other = events[2].clone();
        other.origin = "bronze/b.csv#v1:1".into();
        let again = [events[1].clone(), events[4].clone(), other];
        assert_eq!(
            rt.block_on(store.put_new(&again)).expect("put"),
            [
                PutOutcome::AlreadyStored,
                PutOutcome::AlreadyStored,
                PutOutcome::Duplicate
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn two_writers_deduplicate_like_one_map(
            ops in prop::collection::vec(op(), 1..40),
            flush_at in 1..5_usize,
            more in 0..4_usize,
            // No id filter; one built at the first lookup; one built once lookups reach the
            // index's size, and so small that it is built again every few ids.
            filter in prop_oneof![Just(None), Just(Some((i64::MAX, 64))), Just(Some((1, 1)))],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let dir = tempfile::tempdir().expect("tmp");
            let path = dir.path().join("streamcube.db");
            // Passes of a fixed size, or growing with the index.
            let open = |path: &Path| open_filtering(path, flush_at, flush_at + more, filter);
            let mut stores = [open(&path), open(&path)];
            // id -> origin of the stored row
            let mut model: HashMap<u8, u8> = HashMap::new();
            for op in ops {
                match op {
                    Op::Put(w, es) => {
                        let events: Vec<SilverEvent> = es.iter().map(|&(id, o)| event(id, o)).collect();
                        let got = rt.block_on(stores[w].put_new(&events)).expect("put");
                        let mut want = Vec::new();
                        // Ids this call inserted: a repeat of one is a duplicate, whatever its origin.
                        let mut inserted = std::collections::HashSet::new();
                        for &(id, o) in &es {
                            want.push(if inserted.contains(&id) {
                                PutOutcome::Duplicate
                            } else if let Some(&stored) = model.get(&id) {
                                if o != 0 && stored == o { PutOutcome::AlreadyStored } else { PutOutcome::Duplicate }
                            } else {
                                model.insert(id, o);
                                inserted.insert(id);
                                PutOutcome::Inserted
                            });
                        }
                        prop_assert_eq!(got, want);
                    }
                    Op::Delete(w, ids) => {
                        let names: Vec<String> = ids.iter().map(|id| format!("e{id:02}")).collect();
                        let got = rt.block_on(stores[w].delete(&names)).expect("delete");
                        let mut distinct = ids.clone();
                        distinct.sort_unstable();
                        distinct.dedup();
                        let want = distinct.iter().filter(|id| model.remove(id).is_some()).count() as u64;
                        prop_assert_eq!(got, want);
                    }
                    Op::Reopen(w) => {
                        stores[w] = open(&path);
                    }
                }
                let (ids, consistent) = check_layout(&path);
                let mut want: Vec<String> = model.keys().map(|id| format!("e{id:02}")).collect();
                want.sort();
                prop_assert_eq!(ids, want);
                prop_assert!(consistent, "silver_ids does not hold exactly the rows up to indexed_through");
            }
        }

        /// The viewer index, written in passes that read only the rows after the hour's highest
        /// indexed `seq`, stays exact through inserts, deletions and acknowledgements in any
        /// order: an acknowledged hour's index rows are its table rows, and a viewer's events are
        /// found whether their hour is pending or not, and only hers when another viewer's
        /// pseudonym has the same prefix.
        #[test]
        fn viewer_index_follows_inserts_deletions_and_acks(ops in prop::collection::vec(viewer_op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let dir = tempfile::tempdir().expect("tmp");
            let path = dir.path().join("streamcube.db");
            let store = open(&path, 3);
            // id -> viewer of the stored row
            let mut model: HashMap<u8, u8> = HashMap::new();
            for op in ops {
                match op {
                    ViewerOp::Put(es) => {
                        let events: Vec<SilverEvent> = es.iter().map(|&(id, v)| viewer_event(id, v)).collect();
                        let got = rt.block_on(store.put_new(&events)).expect("put");
                        for (&(id, v), outcome) in es.iter().zip(got) {
                            if outcome == PutOutcome::Inserted {
                                model.insert(id, v);
                            }
                        }
                    }
                    ViewerOp::Delete(ids) => {
                        let names: Vec<String> = ids.iter().map(|id| format!("e{id:02}")).collect();
                        rt.block_on(store.delete(&names)).expect("delete");
                        for id in &ids {
                            model.remove(id);
                        }
                    }
                    ViewerOp::Ack(pick) => {
                        let pending = rt.block_on(store.pending()).expect("pending");
                        if let Some(&(hour, seen)) = pending.get(pick % pending.len().max(1)) {
                            rt.block_on(store.ack(hour, seen)).expect("ack");
                        }
                    }
                }
                let c = Connection::open(&path).expect("db");
                let unindexed: i64 = c
                    .query_row(
                        "SELECT count(*) FROM silver_events e JOIN silver_changes h ON h.hour = e.hour
                             WHERE h.counter = h.acked AND NOT EXISTS (SELECT 1 FROM silver_viewers v
                                 WHERE v.hour = e.hour AND v.viewer_prefix = substr(e.viewer, 1, 8)
                                     AND v.seq = e.seq)",
                        [],
                        |r| r.get(0),
                    )
                    .expect("unindexed");
                let stale: i64 = c
                    .query_row(
                        "SELECT count(*) FROM silver_viewers v WHERE NOT EXISTS (SELECT 1 FROM silver_events e
                             WHERE e.seq = v.seq AND e.hour = v.hour
                                 AND substr(e.viewer, 1, 8) = v.viewer_prefix)",
                        [],
                        |r| r.get(0),
                    )
                    .expect("stale");
                prop_assert_eq!(unindexed, 0, "an acknowledged hour has rows missing from the viewer index");
                prop_assert_eq!(stale, 0, "the viewer index names rows that are gone");
                for v in 0..4_u8 {
                    let mut got: Vec<String> = rt
                        .block_on(store.viewer_events(&test_viewer(v)))
                        .expect("viewer events")
                        .into_iter()
                        .map(|(id, _)| id)
                        .collect();
                    got.sort();
                    let mut want: Vec<String> = model
                        .iter()
                        .filter(|&(_, &mv)| mv == v)
                        .map(|(id, _)| format!("e{id:02}"))
                        .collect();
                    want.sort();
                    prop_assert_eq!(got, want, "viewer {}", v);
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum ViewerOp {
        /// (id, viewer) pairs.
        Put(Vec<(u8, u8)>),
        Delete(Vec<u8>),
        /// Acknowledges one of the pending hours.
        Ack(usize),
    }

    fn viewer_op() -> impl Strategy<Value = ViewerOp> {
        prop_oneof![
            5 => prop::collection::vec((0..24_u8, 0..4_u8), 0..5).prop_map(ViewerOp::Put),
            2 => prop::collection::vec(0..24_u8, 0..3).prop_map(ViewerOp::Delete),
            3 => (0..4_usize).prop_map(ViewerOp::Ack),
        ]
    }

    /// Event `id` of viewer `v`, in one of three hours (ids 0..8, 8..16 and 16..24).
    fn viewer_event(id: u8, v: u8) -> SilverEvent {
        SilverEvent {
            occurred_at_ms: 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
                + i64::from(id / 8) * 3_600_000
                + i64::from(id % 8) * 60_000,
            viewer: test_viewer(v),
            ..event(id, 1)
        }
    }

    /// Viewers 0 to 3; viewer 3 shares its first 8 bytes, the viewer index's key, with
    /// viewer 0.
    fn test_viewer(v: u8) -> Pseudonym {
        let mut bytes = [v; 32];
        if v == 3 {
            bytes[..8].fill(0);
        }
        Pseudonym::from_bytes(bytes)
    }
}
