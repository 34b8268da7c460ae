//! The storage the pipeline needs, as narrow traits named after what the domain does with it.
//!
//! Each backend implements every port: the embedded backend with SQLite, DynamoDB on AWS. Files
//! (bronze objects, quarantine, reports, exports) go through [`object_store::ObjectStore`]
//! directly: a local directory here, S3 on AWS.
//!
//! Adapters map their own failures into [`StoreError`]'s semantic variants; nothing above this
//! layer sees an SDK or SQLite error type.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use streamcube_model::catalog::{Catalog, CatalogEntry};
use streamcube_model::cube::{Cell, Cuboid, Dims, DimsRef};
use streamcube_model::event::{Country, CubeEvent, SilverEvent};
use streamcube_model::pseudonym::Pseudonym;
use streamcube_model::report::FileReport;

/// What storage can go wrong with, in the pipeline's terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store asks us to slow down; the caller may retry later.
    #[error("the store is throttling requests")]
    Throttled,
    /// A conditional write lost: someone else changed the item first.
    #[error("a concurrent write changed the item first")]
    Conflict,
    /// Stored data does not decode: a bug or tampering, never retried.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Anything else from the backend (connection, permissions, disk).
    #[error("the store failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The outcome of writing one event to silver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PutOutcome {
    /// The event was new and is now stored.
    Inserted,
    /// An event with this id was already stored by another input.
    Duplicate,
    /// An event with this id was already stored by this same input row (`origin`): an earlier,
    /// interrupted attempt at the same work. Counts as accepted.
    AlreadyStored,
}

/// Silver: validated, pseudonymized, deduplicated events, partitioned by event hour.
#[async_trait]
pub trait SilverStore: Send + Sync {
    /// Stores the events whose id is new, first writer wins; one outcome per event, in order.
    /// Within one call, a later event with the id of an earlier one is a duplicate.
    async fn put_new(&self, events: &[SilverEvent]) -> StoreResult<Vec<PutOutcome>>;

    /// [`Self::put_new`] for bulk loads (bronze files): the same outcomes, but an adapter may
    /// use fewer, larger calls at the price of exact first-writer-wins between two inputs that
    /// race on the same new id (the event is still stored once, and counted once in gold).
    /// The batch is shared rather than borrowed, so an adapter that writes it on a thread of
    /// its own keeps a handle instead of copying it (the embedded backend's batches hold
    /// 100,000 events).
    async fn put_new_bulk(&self, events: Arc<Vec<SilverEvent>>) -> StoreResult<Vec<PutOutcome>> {
        self.put_new(&events).await
    }

    /// Every event of an hour partition (hours since the Unix epoch).
    async fn hour_events(&self, hour: i64) -> StoreResult<Vec<SilverEvent>>;

    /// The events of an hour partition in parts, each given as soon as the store has read it,
    /// so that a reader of a large hour holds one part at a time instead of the hour (the
    /// consolidation keeps 32 bytes of each event, where an event as read takes about 250).
    /// Together the parts are exactly [`Self::hour_events`]' events, in no
    /// particular order; a part may be empty. An event written while the parts are read may
    /// or may not be among them (the change feed keeps its hour pending). The default reads
    /// the hour whole.
    fn hour_parts(&self, hour: i64) -> BoxStream<'_, StoreResult<Vec<SilverEvent>>> {
        futures::stream::once(self.hour_events(hour)).boxed()
    }

    /// [`Self::hour_parts`] with only what the cube reads of each event ([`CubeEvent`]), as
    /// the consolidation reads an hour: the same events, in parts. A store that can leave the
    /// other fields out reads less: the embedded backend skips each row's id, time and origin
    /// (the last put together per row), DynamoDB's queries project the items on these fields.
    /// The default projects [`Self::hour_parts`].
    fn hour_cube_parts(&self, hour: i64) -> BoxStream<'_, StoreResult<Vec<CubeEvent>>> {
        self.hour_parts(hour)
            .map(|part| part.map(|events| events.iter().map(CubeEvent::from).collect()))
            .boxed()
    }

    /// The ids and hours of a viewer's events, found through an index on the pseudonym.
    async fn viewer_events(&self, viewer: &Pseudonym) -> StoreResult<Vec<(String, i64)>>;

    /// Deletes events by id; returns how many existed.
    async fn delete(&self, event_ids: &[String]) -> StoreResult<u64>;

    /// Makes what was deleted unrecoverable from the store's own files, after an erasure (a
    /// store that keeps no old page images, such as DynamoDB, has nothing to do).
    async fn purge_deleted(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Which cells a read keeps (a query's filters), for [`GoldStore::cells_where`].
pub type CellFilter<'a> = dyn Fn(&DimsRef<'_>) -> bool + Sync + 'a;

/// What a read of one cuboid keeps: `keep` decides per cell; `countries`, when set, are the
/// only countries `keep` can accept, so that a store that splits a cuboid's block by country
/// reads those parts only. `keep` alone must give the right answer: the hint may be ignored.
pub struct CellSelect<'a> {
    pub keep: &'a CellFilter<'a>,
    pub countries: Option<Vec<Country>>,
}

/// The level of a set of gold cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// One hour of the day, 0..24.
    Hour(u8),
    /// The whole day.
    Day,
}

/// Which generation of cells a day's readers see. Flipping it is the atomic publish.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayManifest {
    pub day: Option<NaiveDate>,
    /// Incremented by every publish; the conditional write compares it.
    pub version: u64,
    /// The generation of the day-level cells; 0 when the day was published without its day
    /// level (while it was open), and readers merge its hours instead.
    pub day_generation: u64,
    /// The generation of each hour that has data.
    pub hours: BTreeMap<u8, u64>,
    /// Events counted in the day (0 without a day level).
    pub events: u64,
    /// The cuboid spec the cells were built with.
    pub cuboids: String,
    /// When it was published (RFC 3339).
    pub published_at: String,
    /// When a run last set out to build the day level of this day, published without one (RFC
    /// 3339). A run that dies while closing a large day leaves it behind, and the next attempt
    /// waits (see `consolidate::CLOSE_RETRY_SECS`) instead of every run trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_started_at: Option<String>,
    /// How many runs set out to build the day level of this day; they stop at
    /// `consolidate::MAX_CLOSE_ATTEMPTS`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub close_attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DayManifest {
    /// Every (level, generation) the manifest references.
    pub fn referenced(&self) -> Vec<(Level, u64)> {
        let mut v: Vec<_> = self
            .hours
            .iter()
            .map(|(h, g)| (Level::Hour(*h), *g))
            .collect();
        if self.day_generation != 0 {
            v.push((Level::Day, self.day_generation));
        }
        v
    }

    /// The generation that answers for the day: its day level's, or without one the newest
    /// hour's (0 when it has none).
    pub fn generation(&self) -> u64 {
        match self.day_generation {
            0 => self.hours.values().copied().max().unwrap_or(0),
            g => g,
        }
    }
}

/// Gold: the cube's cells by day, level and generation, and each day's manifest.
#[async_trait]
pub trait GoldStore: Send + Sync {
    /// The day's current manifest, `None` if it was never published.
    async fn manifest(&self, day: NaiveDate) -> StoreResult<Option<DayManifest>>;

    /// Writes the cells of one level of a day under a generation: all of them, in one call; a
    /// second call for the same level and generation replaces the first, so a retry is harmless.
    /// Generations are never shared between writers.
    async fn put_cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cells: &[(Dims, Cell)],
    ) -> StoreResult<()>;

    /// Replaces the manifest if its current version is `expected_version` (0: absent).
    /// [`StoreError::Conflict`] otherwise.
    async fn publish(&self, manifest: &DayManifest, expected_version: u64) -> StoreResult<()>;

    /// Cells of one level and generation of a day, only those of `cuboid` if given.
    async fn cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Option<Cuboid>,
    ) -> StoreResult<Vec<(Dims, Cell)>>;

    /// The cells of one cuboid that `select` keeps (a query's filters). Stores that keep
    /// encoded blocks step over the other cells without decoding them; this default filters
    /// [`Self::cells`].
    async fn cells_where(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Cuboid,
        select: &CellSelect<'_>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        let mut cells = self.cells(day, level, generation, Some(cuboid)).await?;
        cells.retain(|(d, _)| (select.keep)(&d.as_ref()));
        Ok(cells)
    }

    /// The generations stored for a day that `keep` does not list (unpublished or replaced).
    async fn stale_generations(
        &self,
        day: NaiveDate,
        keep: &[(Level, u64)],
    ) -> StoreResult<Vec<(Level, u64)>>;

    /// Deletes the cells of one level and generation of a day.
    async fn delete_cells(&self, day: NaiveDate, level: Level, generation: u64) -> StoreResult<()>;
}

/// Reference data.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// Inserts or replaces entries.
    async fn put_entries(&self, entries: &[CatalogEntry]) -> StoreResult<()>;

    /// The whole catalog.
    async fn load(&self) -> StoreResult<Catalog>;
}

/// Bookkeeping that makes redelivered work harmless.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// The final report of an object version already processed.
    async fn processed(&self, key: &str, version: &str) -> StoreResult<Option<FileReport>>;

    /// Records an object version as processed with its report (and drops its checkpoint).
    async fn mark_processed(
        &self,
        key: &str,
        version: &str,
        report: &FileReport,
    ) -> StoreResult<()>;
}

/// The lake's table catalog (the Glue Data Catalog on AWS): makes a published day's export
/// visible to query engines.
#[async_trait]
pub trait PartitionCatalog: Send + Sync {
    /// Creates or updates the gold table's partition of `day` (creating the database and the
    /// table first if they are missing). Repeating it is harmless.
    async fn register_day(&self, day: NaiveDate) -> StoreResult<()>;
}

/// Silver's change feed: which hour partitions changed since they were last consolidated.
///
/// The embedded store records a change in the same transaction as the silver write. On AWS the
/// silver table's stream reports them ([`ChangeFeed::mark`], from cube-consolidator) and a
/// scheduled run consolidates what is pending, so that a day is published once per run rather
/// than once per stream batch.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// The changed hours, each with a token for [`ChangeFeed::ack`].
    async fn pending(&self) -> StoreResult<Vec<(i64, u64)>>;

    /// Clears an hour if no change arrived since [`ChangeFeed::pending`] handed out `seen`. A
    /// feed whose hour reads may lag its changes hands out a token that clears nothing for an
    /// hour changed too recently to be read whole: the hour is consolidated, and again next run.
    async fn ack(&self, hour: i64, seen: u64) -> StoreResult<()>;

    /// Records that these hours changed (a change reported from outside the silver write, such
    /// as a table stream's records). Repeating it is harmless: it only makes them pending.
    async fn mark(&self, hours: &[i64]) -> StoreResult<()>;
}
