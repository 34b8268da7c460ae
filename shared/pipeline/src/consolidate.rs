//! Consolidation: recompute the hour partitions that changed, merge the day, publish it.
//!
//! Every touched hour's cube is a pure function of that hour's silver events (plus the catalog),
//! so recomputing it any number of times gives the same cells: replays are harmless. The day is
//! the merge of its 24 hour cubes, the touched ones fresh and the others read back from gold. Both
//! are written under a new generation, then the day's manifest is flipped with a conditional
//! write; readers follow the manifest, so they see the old generation or the new one, never a mix.
//! A writer that loses the flip to a concurrent one starts over from the new manifest, which
//! makes two racing consolidations end in one generation that includes every event.
//!
//! The day level costs the whole day's cells at every publish, however little changed: the
//! untouched hours read back, the day's cells written, its exports encoded. The scheduled runs
//! ([`Pipeline::consolidate_pending`]) therefore leave it out while the day is still open (the
//! current UTC day): they publish the recomputed hours only, readers merge the day's hours, and
//! the first run after the day has closed builds its day level and exports once
//! ([`DayLevel`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::NaiveDate;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use streamcube_model::batch::day_csv;
use streamcube_model::catalog::Catalog;
use streamcube_model::cube::{Cell, Cube, Dims, DimsRef, Fact};
use streamcube_model::event::CubeEvent;
use streamcube_model::query::{day_of_hour, first_hour};

use crate::export;
use crate::ports::{DayManifest, Level, StoreError};
use crate::{Pipeline, PipelineError};

/// How often a day is retried after losing the manifest flip to a concurrent writer.
const MAX_CONFLICT_RETRIES: u32 = 8;

/// How many days back a scheduled run looks for closed days still without their day level
/// (published while open, and not touched since): a week of missed runs is caught up.
pub const CLOSE_LOOKBACK_DAYS: u64 = 7;

/// How long after an attempt to close a day another may start: an attempt that died (a day
/// too large for the function's memory or time limit) is not retried by every run.
pub const CLOSE_RETRY_SECS: i64 = 6 * 3600;

/// Attempts to close a day before the scheduled runs leave it to an explicit
/// `streamcube consolidate --from DAY --to DAY` (its queries still merge its hours).
pub const MAX_CLOSE_ATTEMPTS: u32 = 3;

/// Whether a consolidation publishes the day level: the merge of the day's hours, which the
/// day's queries read and the day's exports hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DayLevel {
    /// Merge every hour into the day level, publish it and write the day's exports.
    Build,
    /// Publish the recomputed hours only, without reading the others back: the manifest names
    /// no day level ([`DayManifest::day_generation`] 0), readers merge the hours, and the
    /// exports wait for a later [`DayLevel::Build`].
    Defer,
}

/// The outcome for one day.
#[derive(Clone, Debug, Serialize)]
pub struct DayOutcome {
    pub day: NaiveDate,
    /// The hours of the day that were recomputed.
    pub hours: Vec<u8>,
    /// The published generation, or why the day failed (its hours stay pending).
    pub result: Result<DaySummary, String>,
    /// Whether the failure is worth retrying.
    #[serde(skip)]
    pub transient: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DaySummary {
    pub generation: u64,
    pub version: u64,
    /// Events in what was published: the whole day with its day level, the recomputed hours
    /// when the day level was deferred.
    pub events: u64,
    /// Cells of the day level (0 when deferred).
    pub day_cells: u64,
    pub hour_cells: u64,
    pub day_level: DayLevel,
}

/// Groups hour partitions (hours since the epoch) by day.
pub fn hours_by_day(hours: impl IntoIterator<Item = i64>) -> BTreeMap<NaiveDate, BTreeSet<u8>> {
    let mut days: BTreeMap<NaiveDate, BTreeSet<u8>> = BTreeMap::new();
    for h in hours {
        let day = day_of_hour(h);
        // h - first_hour(day) is in 0..24 by construction.
        let of_day = u8::try_from(h - first_hour(day)).unwrap_or(0);
        days.entry(day).or_default().insert(of_day);
    }
    days
}

/// Appends the facts of `events` for `cube`, whose title and genre ids they take, to `out`.
fn push_facts(cube: &mut Cube, catalog: &Catalog, events: &[CubeEvent], out: &mut Vec<Fact>) {
    out.extend(events.iter().map(|e| Fact {
        country: e.country,
        device: e.device,
        genre: cube.genre_id(catalog.genre_of(&e.content_id)),
        content: cube.content_id(&e.content_id),
        viewer: e.viewer_hash,
        watch_seconds: e.watch_seconds,
        bitrate_kbps: e.bitrate_kbps.unwrap_or(0),
        buffering_ms: e.buffering_ms.unwrap_or(0),
        completed: e.completed,
    }));
}

/// A day's export files, encoded.
struct Exports {
    csv: Vec<u8>,
    parquet: Vec<u8>,
}

/// The cells of one level of a day for the Parquet export: an hour, or the day (`None`).
type LevelCells = (Option<u8>, Arc<Vec<(Dims, Cell)>>);

/// Encoded Parquet bytes, on their way.
type ParquetTask = tokio::task::JoinHandle<Result<Vec<u8>, parquet::errors::ParquetError>>;

/// Starts a day's Parquet export on the blocking pool, which encodes the levels sent to it in
/// the order they come and finishes when the sender is dropped. An hour's cells are dropped as
/// soon as they are encoded (and written to gold), instead of every hour being held for the
/// export until the day is complete: that held most of a day's peak memory.
fn parquet_encoder() -> (tokio::sync::mpsc::Sender<LevelCells>, ParquetTask) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<LevelCells>(2);
    let task = tokio::task::spawn_blocking(move || {
        let mut file = export::DayParquet::new()?;
        while let Some((hour, cells)) = rx.blocking_recv() {
            file.add(hour, &cells)?;
        }
        file.finish()
    });
    (tx, task)
}

/// Starts encoding a day's CSV export on the blocking pool and returns a future of both
/// exports. The work starts at the call, not at the first poll.
fn encode_exports(
    day: NaiveDate,
    day_cells: Arc<Vec<(Dims, Cell)>>,
    parquet: ParquetTask,
) -> impl std::future::Future<Output = Result<Exports, PipelineError>> {
    let csv = tokio::task::spawn_blocking(move || day_csv(day, &day_cells));
    async move {
        let csv = csv.await?;
        let parquet = parquet.await??;
        Ok(Exports { csv, parquet })
    }
}

/// Unreferenced generations older than this are leftovers of crashed writers.
const ORPHAN_AGE_SECS: u64 = 3600;

/// A new generation id: the creation time in seconds in the high bits and 20 random bits, so ids
/// never collide between writers, stay below 2^53 (exact in JSON and DynamoDB numbers) and tell
/// their age.
fn new_generation() -> u64 {
    let secs = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    (secs << 20) | (rand::random::<u64>() & 0xf_ffff) | 1
}

fn generation_age_secs(generation: u64) -> u64 {
    let secs = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    secs.saturating_sub(generation >> 20)
}

impl Pipeline {
    /// Consolidates every hour the change feed holds as pending, then acknowledges the hours of
    /// the days that published (a failed day's hours stay pending for the next run). An hour
    /// that changes while it is consolidated stays pending too: the acknowledgement names the
    /// change it saw.
    ///
    /// The open day (the current UTC day, or later) is published without its day level
    /// ([`DayLevel::Defer`]); a closed day gets it, and so does a closed day of the last
    /// [`CLOSE_LOOKBACK_DAYS`] whose manifest still has none, with no hour recomputed, after
    /// the pending hours are acknowledged.
    pub async fn consolidate_pending(&self) -> Result<Vec<DayOutcome>, PipelineError> {
        let feed = &self.stores.changes;
        let pending: BTreeMap<i64, u64> = feed.pending().await?.into_iter().collect();
        let today = chrono::Utc::now().date_naive();
        let plan: BTreeMap<NaiveDate, (BTreeSet<u8>, DayLevel)> =
            hours_by_day(pending.keys().copied())
                .into_iter()
                .map(|(day, touched)| {
                    let level = if day >= today {
                        DayLevel::Defer
                    } else {
                        DayLevel::Build
                    };
                    (day, (touched, level))
                })
                .collect();
        let mut outcomes = Vec::new();
        let planned: BTreeSet<NaiveDate> = plan.keys().copied().collect();
        if !plan.is_empty() {
            outcomes = self.consolidate_plan(plan).await?;
            for o in outcomes.iter().filter(|o| o.result.is_ok()) {
                for h in &o.hours {
                    let hour = first_hour(o.day) + i64::from(*h);
                    if let Some(seen) = pending.get(&hour) {
                        feed.ack(hour, *seen).await?;
                    }
                }
            }
        }
        // Closing a day reads all of it back: after the pending hours are published and
        // acknowledged, so that a close that fails or runs out of time holds nothing up.
        let mut closing = BTreeMap::new();
        for back in 1..=CLOSE_LOOKBACK_DAYS {
            let Some(day) = today.checked_sub_days(chrono::Days::new(back)) else {
                break;
            };
            if planned.contains(&day) {
                continue;
            }
            let manifest = self.stores.gold.manifest(day).await?;
            if let Some(m) = manifest.filter(|m| m.day_generation == 0)
                && self.start_closing(m).await?
            {
                closing.insert(day, (BTreeSet::new(), DayLevel::Build));
            }
        }
        if !closing.is_empty() {
            outcomes.extend(self.consolidate_plan(closing).await?);
        }
        Ok(outcomes)
    }

    /// Whether to close this day, published without its day level, now: not when an attempt
    /// started less than [`CLOSE_RETRY_SECS`] ago, which may still be running or may have died
    /// (a day too large for the run's time limit), nor after [`MAX_CLOSE_ATTEMPTS`]. Otherwise
    /// the attempt is recorded in the manifest first; a manifest that moved meanwhile means
    /// another writer is on the day.
    async fn start_closing(&self, manifest: DayManifest) -> Result<bool, PipelineError> {
        if manifest.close_attempts >= MAX_CLOSE_ATTEMPTS {
            tracing::warn!(
                day = ?manifest.day,
                attempts = manifest.close_attempts,
                "the day could not be closed by the scheduled runs (an attempt dies when the \
                 day needs more memory or time than a run has; on AWS, ConsolidatorMemorySize \
                 sets the memory); `streamcube consolidate --from DAY --to DAY` builds its \
                 day level"
            );
            return Ok(false);
        }
        let now = chrono::Utc::now();
        let started = manifest
            .close_started_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if let Some(t) = started {
            let age = now.signed_duration_since(t).num_seconds();
            if (0..CLOSE_RETRY_SECS).contains(&age) {
                tracing::info!(day = ?manifest.day, age, "closing started recently; not again yet");
                return Ok(false);
            }
        }
        let marked = DayManifest {
            version: manifest.version + 1,
            close_started_at: Some(now.to_rfc3339()),
            close_attempts: manifest.close_attempts + 1,
            ..manifest.clone()
        };
        match self.stores.gold.publish(&marked, manifest.version).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Consolidates the given hour partitions, each day with its day level. Days are
    /// independent: one failing day does not stop the others, and its outcome says why.
    /// Silver's hour index may lag its writes on AWS: the change feed keeps an hour changed
    /// moments ago pending for the next run (see [`crate::ports::ChangeFeed::ack`]).
    #[tracing::instrument(skip_all, fields(hours = hours.len()))]
    pub async fn consolidate_hours(&self, hours: &[i64]) -> Result<Vec<DayOutcome>, PipelineError> {
        let plan = hours_by_day(hours.iter().copied())
            .into_iter()
            .map(|(day, touched)| (day, (touched, DayLevel::Build)))
            .collect();
        self.consolidate_plan(plan).await
    }

    /// Recomputes the planned hours of each day, a few days at a time.
    async fn consolidate_plan(
        &self,
        plan: BTreeMap<NaiveDate, (BTreeSet<u8>, DayLevel)>,
    ) -> Result<Vec<DayOutcome>, PipelineError> {
        let catalog = Arc::new(self.stores.catalog.load().await?);
        // Days are independent: build them concurrently, a few at a time.
        let limit = std::thread::available_parallelism().map_or(2, usize::from);
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limit));
        let mut tasks = Vec::new();
        for (day, (touched, level)) in plan {
            let (this, catalog, permits) = (self.clone(), catalog.clone(), permits.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = this.consolidate_day(&catalog, day, &touched, level).await;
                (day, touched, result)
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (day, touched, result) = task.await?;
            if let Err(e) = &result {
                tracing::warn!(%day, error = %e, "day consolidation failed");
            }
            let transient = result
                .as_ref()
                .err()
                .is_some_and(PipelineError::is_transient);
            out.push(DayOutcome {
                day,
                hours: touched.into_iter().collect(),
                result: result.map_err(|e| e.to_string()),
                transient,
            });
        }
        Ok(out)
    }

    /// Recomputes `touched` hours of `day` and publishes a new generation of the day, with or
    /// without its day level.
    pub async fn consolidate_day(
        &self,
        catalog: &Arc<Catalog>,
        day: NaiveDate,
        touched: &BTreeSet<u8>,
        level: DayLevel,
    ) -> Result<DaySummary, PipelineError> {
        let gold = &self.stores.gold;
        let build = level == DayLevel::Build;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = gold.manifest(day).await?;
            let spec = self.config.cuboids.spec();
            // A manifest built with other cuboids cannot be merged with: recompute the whole day.
            let all_hours: BTreeSet<u8> = (0..24).collect();
            let touched = match &current {
                Some(m) if m.cuboids != spec => &all_hours,
                _ => touched,
            };
            let generation = new_generation();
            let expected_version = current.as_ref().map_or(0, |m| m.version);
            let mut hours = current
                .as_ref()
                .map(|m| m.hours.clone())
                .unwrap_or_default();
            let mut day_cube = Cube::new(&self.config.cuboids);
            let (mut hour_cells, mut hour_events) = (0, 0);
            // Every hour's cells go to the Parquet export once merged and written.
            let (parquet_tx, parquet) = parquet_encoder();
            // The touched hours' cubes, in hour order, each built on the blocking pool while
            // the one before it is written and merged below: two hours in flight at a time.
            let mut built = futures::stream::iter(touched.iter().copied())
                .map(|h| self.hour_cells(catalog, day, h))
                .buffered(2);
            for h in 0..24u8 {
                if touched.contains(&h) {
                    let Some(next) = built.next().await else {
                        return Err(PipelineError::Task(format!("hour {h} was not built")));
                    };
                    let Some(cells) = next? else {
                        hours.remove(&h);
                        continue;
                    };
                    hour_cells += cells.len() as u64;
                    hour_events += cells
                        .iter()
                        .find(|(d, _)| *d == Dims::default())
                        .map_or(0, |(_, c)| c.measures.plays);
                    // The hour is merged into the day while the store writes it.
                    let merge = async {
                        if build {
                            for (dims, cell) in &cells {
                                day_cube.merge_cell(dims.as_ref(), cell);
                            }
                        }
                        Ok(())
                    };
                    futures::try_join!(
                        gold.put_cells(day, Level::Hour(h), generation, &cells),
                        merge
                    )?;
                    hours.insert(h, generation);
                    tracing::debug!(%day, hour = h, cells = cells.len(), "hour written");
                    // A send fails only when the encoder stopped on an error, which its
                    // result reports below.
                    if build {
                        let _ = parquet_tx.send((Some(h), Arc::new(cells))).await;
                    }
                } else if let Some(g) = hours.get(&h).filter(|_| build) {
                    let cells = gold.cells(day, Level::Hour(h), *g, None).await?;
                    for (dims, cell) in &cells {
                        day_cube.merge_cell(dims.as_ref(), cell);
                    }
                    let _ = parquet_tx.send((Some(h), Arc::new(cells))).await;
                }
            }
            let (exports, day_cells, events, day_generation) = if build {
                let events = day_cube
                    .get(DimsRef::default())
                    .map_or(0, |c| c.measures.plays);
                let day_cells = Arc::new(day_cube.into_cells());
                tracing::debug!(%day, cells = day_cells.len(), "day cells built");
                // The export files are encoded on the blocking pool while gold is written;
                // they are written to the lake only once the flip has landed.
                let _ = parquet_tx.send((None, Arc::clone(&day_cells))).await;
                drop(parquet_tx);
                let exports = encode_exports(day, Arc::clone(&day_cells), parquet);
                gold.put_cells(day, Level::Day, generation, &day_cells)
                    .await?;
                tracing::debug!(%day, cells = day_cells.len(), "day cells written");
                (Some(exports), day_cells.len() as u64, events, generation)
            } else {
                drop(parquet_tx);
                parquet.abort();
                (None, 0, hour_events, 0)
            };
            let manifest = DayManifest {
                day: Some(day),
                version: expected_version + 1,
                day_generation,
                hours,
                events: if build { events } else { 0 },
                cuboids: spec,
                published_at: chrono::Utc::now().to_rfc3339(),
                close_started_at: None,
                close_attempts: 0,
            };
            let landed = match gold.publish(&manifest, expected_version).await {
                Ok(()) => true,
                // The condition fails both for a lost race and for a flip that landed but whose
                // answer was lost (the SDK's retry of it finds its own manifest): tell them apart
                // by reading what is published, so a landed flip is never undone.
                Err(StoreError::Conflict) => gold.manifest(day).await? == Some(manifest.clone()),
                Err(e) => return Err(e.into()),
            };
            if landed {
                tracing::debug!(%day, version = manifest.version, "manifest flipped");
                // The published day as files for tools that read the lake, and its
                // partition in the table catalog. Written after the flip, so a failure
                // leaves gold right and the retry rewrites them.
                if let Some(exports) = exports {
                    let exports = exports.await?;
                    tracing::debug!(%day, "exports encoded");
                    self.write_exports(day, exports).await?;
                    self.reexport_if_replaced(day, manifest.version).await?;
                }
                // What the flip replaced is garbage now; readers still on it notice the
                // manifest moved and read again.
                let keep = manifest.referenced();
                let replaced: Vec<_> = current
                    .iter()
                    .flat_map(DayManifest::referenced)
                    .filter(|r| !keep.contains(r))
                    .collect();
                self.delete_generations(day, &replaced).await;
                self.sweep_orphans(day, &keep).await;
                tracing::info!(%day, generation, events, ?level, "day published");
                return Ok(DaySummary {
                    generation,
                    version: manifest.version,
                    events,
                    day_cells,
                    hour_cells,
                    day_level: level,
                });
            }
            if attempt >= MAX_CONFLICT_RETRIES {
                return Err(StoreError::Conflict.into());
            }
            tracing::info!(%day, attempt, "lost the publish race; starting over");
            let ours: Vec<_> = manifest
                .referenced()
                .into_iter()
                .filter(|(_, g)| *g == generation)
                .collect();
            self.delete_generations(day, &ours).await;
        }
    }

    /// The cells of hour `h` of `day` recomputed from silver; `None` when it has no events.
    /// The hour is read in parts ([`crate::ports::SilverStore::hour_parts`]), each turned into
    /// facts and dropped as it comes: an hour of 10M events is then held as 320 MB of facts,
    /// not as the 2.5 GB or so its events take.
    async fn hour_cells(
        &self,
        catalog: &Arc<Catalog>,
        day: NaiveDate,
        h: u8,
    ) -> Result<Option<Vec<(Dims, Cell)>>, PipelineError> {
        let hour = first_hour(day) + i64::from(h);
        let mut cube = Cube::new(&self.config.cuboids);
        let mut facts = Vec::new();
        let mut parts = self.stores.silver.hour_cube_parts(hour);
        while let Some(part) = parts.next().await {
            push_facts(&mut cube, catalog, &part?, &mut facts);
        }
        if facts.is_empty() {
            return Ok(None);
        }
        tokio::task::spawn_blocking(move || {
            cube.add_all(&facts);
            cube.into_cells()
        })
        .await
        .map(Some)
        .map_err(PipelineError::from)
    }

    /// When another consolidation flipped the day after us and exported before we did, our
    /// exports hide its newer generation: export what the manifest publishes now. Whoever
    /// finishes exporting last thus leaves the lake on the published generation.
    async fn reexport_if_replaced(&self, day: NaiveDate, ours: u64) -> Result<(), PipelineError> {
        let gold = &self.stores.gold;
        let mut exported = ours;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(m) = gold.manifest(day).await? else {
                return Ok(());
            };
            // A day published without its day level has no exports until it is built.
            if m.version == exported || m.day_generation == 0 {
                return Ok(());
            }
            let day_cells = gold.cells(day, Level::Day, m.day_generation, None).await?;
            let (parquet_tx, parquet) = parquet_encoder();
            for (h, g) in &m.hours {
                let cells = gold.cells(day, Level::Hour(*h), *g, None).await?;
                let _ = parquet_tx.send((Some(*h), Arc::new(cells))).await;
            }
            tracing::info!(%day, version = m.version, "a later generation was published meanwhile; exporting it");
            let day_cells = Arc::new(day_cells);
            let _ = parquet_tx.send((None, Arc::clone(&day_cells))).await;
            drop(parquet_tx);
            let exports = encode_exports(day, day_cells, parquet).await?;
            self.write_exports(day, exports).await?;
            exported = m.version;
        }
        Ok(())
    }

    /// Writes the day's CSV and Parquet exports and registers its partition.
    async fn write_exports(&self, day: NaiveDate, files: Exports) -> Result<(), PipelineError> {
        let lake = &self.stores.lake;
        lake.put(
            &object_store::path::Path::from(export::csv_path(day)),
            files.csv.into(),
        )
        .await?;
        lake.put(
            &object_store::path::Path::from(export::parquet_path(day)),
            files.parquet.into(),
        )
        .await?;
        if let Some(catalog) = &self.stores.partitions {
            catalog.register_day(day).await?;
        }
        Ok(())
    }

    /// Deletes cells of the given generations. A failure only leaves garbage, which the orphan
    /// sweep of a later consolidation removes.
    async fn delete_generations(&self, day: NaiveDate, which: &[(Level, u64)]) {
        for (level, generation) in which {
            if let Err(e) = self
                .stores
                .gold
                .delete_cells(day, *level, *generation)
                .await
            {
                tracing::warn!(%day, error = %e, "deleting a replaced generation failed");
            }
        }
    }

    /// Deletes unreferenced generations old enough that no writer can still be working on them.
    async fn sweep_orphans(&self, day: NaiveDate, keep: &[(Level, u64)]) {
        match self.stores.gold.stale_generations(day, keep).await {
            Ok(stale) => {
                let old: Vec<_> = stale
                    .into_iter()
                    .filter(|(_, g)| generation_age_secs(*g) > ORPHAN_AGE_SECS)
                    .collect();
                self.delete_generations(day, &old).await;
            }
            Err(e) => tracing::warn!(%day, error = %e, "listing stale generations failed"),
        }
    }
}
