//! Fault injection: a [`Faults`] controller that counts every storage call of a run and fails
//! one of them, and a wrapper for every port and for the object stores that consults it.
//!
//! A run of the pipeline is made of steps, each done by one "process" ([`Process`]): a fresh
//! [`Pipeline`] whose adapters all carry that process's [`Hook`]. When a process dies (a crash,
//! or the step's deadline after a hung call), the driver drops the step and every later call of
//! that process fails without reaching the store: a dead Lambda sends nothing more, even from
//! tasks it spawned. Calls already inside the real store finish, as a request already sent to
//! DynamoDB or S3 would.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use streamcube_model::catalog::{Catalog, CatalogEntry};
use streamcube_model::cube::{Cell, Cuboid, Dims};
use streamcube_model::event::{CubeEvent, SilverEvent};
use streamcube_model::pseudonym::Pseudonym;
use streamcube_model::report::FileReport;
use streamcube_pipeline::Stores;
use streamcube_pipeline::ports::{
    CatalogStore, DayManifest, GoldStore, LedgerStore, Level, PartitionCatalog, PutOutcome,
    SilverStore, StoreError, StoreResult,
};

/// How the faulted call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The call fails and has no effect (`Throttled` or `Backend`; a generic object store
    /// error); the process goes on and handles the error.
    Error,
    /// The call takes effect but its answer is lost: the caller gets an error and goes on. For
    /// the conditional manifest flip the error is `Conflict`, which is what an SDK retry of a
    /// flip that already landed reports on DynamoDB.
    Lost,
    /// The call hangs and the step's deadline expires: the process is gone, the call never
    /// took effect.
    Timeout,
    /// The call takes effect, then the process dies before it can use the answer.
    Crash,
    /// Not a failure: the call is answered [`SLOW_CALL`] late (a hot partition, SDK retries).
    Slow,
}

/// How late a [`Kind::Slow`] call is answered.
pub const SLOW_CALL: std::time::Duration = std::time::Duration::from_millis(300);

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Error, Kind::Lost, Kind::Timeout, Kind::Crash];
}

/// The call that was faulted in a run.
#[derive(Clone, Debug)]
pub struct Fired {
    pub kind: Kind,
    pub label: String,
}

/// A cell delete that hit a generation the day's manifest referenced at that moment.
#[derive(Clone, Debug)]
pub struct Violation {
    pub step: &'static str,
    pub day: NaiveDate,
    pub level: Level,
    pub generation: u64,
    pub manifest_version: u64,
    /// The cells a reader following the manifest finds after the delete.
    pub cells_left: usize,
}

/// The controller shared by every wrapper of a run: the call counter and the fault plan.
pub struct Faults {
    calls: AtomicU64,
    plan: Vec<(u64, Kind)>,
    record: bool,
    step: Mutex<&'static str>,
    log: Mutex<Vec<String>>,
    fired: Mutex<Vec<Fired>>,
    violations: Mutex<Vec<Violation>>,
}

impl Faults {
    /// No fault; every call's label is recorded.
    pub fn recording() -> Arc<Self> {
        Self::new(Vec::new(), true)
    }

    /// Faults at the given calls (1-based), each once.
    pub fn at(plan: Vec<(u64, Kind)>) -> Arc<Self> {
        Self::new(plan, false)
    }

    fn new(plan: Vec<(u64, Kind)>, record: bool) -> Arc<Self> {
        Arc::new(Faults {
            calls: AtomicU64::new(0),
            plan,
            record,
            step: Mutex::new("setup"),
            log: Mutex::new(Vec::new()),
            fired: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
        })
    }

    pub fn set_step(&self, step: &'static str) {
        *self.step.lock().expect("step lock") = step;
    }

    pub fn step(&self) -> &'static str {
        *self.step.lock().expect("step lock")
    }

    /// Starts counting after `calls` calls (a run that starts from a checkpoint).
    pub fn set_calls(&self, calls: u64) {
        self.calls.store(calls, Ordering::SeqCst);
    }

    /// The calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The label of every call, in order (recording runs only).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn fired(&self) -> Vec<Fired> {
        self.fired.lock().expect("fired lock").clone()
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.violations.lock().expect("violations lock").clone()
    }

    /// Counts a call; the fault to inject, if this is a planned one.
    fn tick(&self, label: Label<'_>) -> Option<(u64, Kind)> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.record {
            let step = self.step();
            self.log
                .lock()
                .expect("log lock")
                .push(format!("{step} {}", label()));
        }
        let kind = self.plan.iter().find(|(at, _)| *at == n).map(|(_, k)| *k)?;
        self.fired.lock().expect("fired lock").push(Fired {
            kind,
            label: format!("{} {}", self.step(), label()),
        });
        Some((n, kind))
    }
}

/// One process (one attempt at a step). Once dead, its calls no longer reach the stores.
#[derive(Default)]
pub struct Process {
    dead: AtomicBool,
    hung: AtomicBool,
    /// A call hung or the process crashed: the driver ends the step.
    signal: tokio::sync::Notify,
}

impl Process {
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Whether one of its calls hangs (waiting for the step's deadline).
    pub fn is_hung(&self) -> bool {
        self.hung.load(Ordering::SeqCst)
    }

    /// Resolves when one of its calls hung or it crashed.
    pub async fn signaled(&self) {
        self.signal.notified().await;
    }
}

/// Builds a call's label (only when it is recorded or faulted).
type Label<'a> = &'a (dyn Fn() -> String + Send + Sync);

/// What a wrapper needs: the run's controller and its process.
#[derive(Clone)]
pub struct Hook {
    pub faults: Arc<Faults>,
    pub process: Arc<Process>,
}

impl Hook {
    /// Runs one storage call through the fault plan. `fail` builds the error the faulted call
    /// returns (given the call number and the kind).
    ///
    /// A dead process's calls fail at once without reaching the store: from the store's side
    /// that is the same as a process that is gone, and its leftover tasks end instead of
    /// holding their resources until the end of the test.
    async fn call<T, E, F>(
        &self,
        label: Label<'_>,
        fail: impl Fn(u64, Kind) -> E + Send,
        inner: F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        if self.process.is_dead() {
            return Err(fail(0, Kind::Crash));
        }
        match self.faults.tick(label) {
            None => inner.await,
            Some((n, Kind::Error)) => Err(fail(n, Kind::Error)),
            Some((n, Kind::Lost)) => {
                let _ = inner.await;
                Err(fail(n, Kind::Lost))
            }
            Some((n, Kind::Timeout)) => {
                // No answer until the step's deadline has ended the process.
                self.process.hung.store(true, Ordering::SeqCst);
                self.process.signal.notify_one();
                while !self.process.is_dead() {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(fail(n, Kind::Timeout))
            }
            Some((n, Kind::Crash)) => {
                let _ = inner.await;
                self.process.kill();
                self.process.signal.notify_one();
                Err(fail(n, Kind::Crash))
            }
            Some((_, Kind::Slow)) => {
                tokio::time::sleep(SLOW_CALL).await;
                inner.await
            }
        }
    }

    async fn store<T, F>(&self, label: Label<'_>, inner: F) -> StoreResult<T>
    where
        F: Future<Output = StoreResult<T>>,
    {
        self.call(label, store_error, inner).await
    }
}

fn injected(n: u64) -> std::io::Error {
    std::io::Error::other(format!("injected fault at call {n}"))
}

/// `Throttled` and `Backend` in turn for refused calls; `Backend` for lost answers.
fn store_error(n: u64, kind: Kind) -> StoreError {
    if kind == Kind::Error && n.is_multiple_of(2) {
        StoreError::Throttled
    } else {
        StoreError::backend(injected(n))
    }
}

fn object_error(n: u64, _kind: Kind) -> object_store::Error {
    object_store::Error::Generic {
        store: "faults",
        source: Box::new(injected(n)),
    }
}

/// Every adapter of `stores` wrapped with `hook`; `partitions` stands for Glue.
pub fn wrap(stores: &Stores, partitions: Arc<dyn PartitionCatalog>, hook: &Hook) -> Stores {
    Stores {
        silver: Arc::new(FaultySilver(stores.silver.clone(), hook.clone())),
        gold: Arc::new(FaultyGold(stores.gold.clone(), hook.clone())),
        catalog: Arc::new(FaultyCatalog(stores.catalog.clone(), hook.clone())),
        ledger: Arc::new(FaultyLedger(stores.ledger.clone(), hook.clone())),
        bronze: Arc::new(FaultyObjects {
            name: "bronze",
            inner: stores.bronze.clone(),
            hook: hook.clone(),
        }),
        lake: Arc::new(FaultyObjects {
            name: "lake",
            inner: stores.lake.clone(),
            hook: hook.clone(),
        }),
        partitions: Some(Arc::new(FaultyPartitions(partitions, hook.clone()))),
        // The scenarios read and acknowledge the feed themselves, outside the faults.
        changes: stores.changes.clone(),
    }
}

struct FaultySilver(Arc<dyn SilverStore>, Hook);

impl FaultySilver {
    /// An hour read in parts, each part a call of its own, the one that finds no more parts
    /// too: a run can fail or die half way through an hour.
    fn parts<'a, T: Send + 'a>(
        &'a self,
        label: &'static str,
        inner: BoxStream<'a, StoreResult<Vec<T>>>,
    ) -> BoxStream<'a, StoreResult<Vec<T>>> {
        futures::stream::try_unfold(inner, move |mut parts| async move {
            let part = self
                .1
                .store(&|| label.into(), async { parts.next().await.transpose() })
                .await?;
            Ok(part.map(|p| (p, parts)))
        })
        .boxed()
    }
}

#[async_trait]
impl SilverStore for FaultySilver {
    async fn put_new(&self, events: &[SilverEvent]) -> StoreResult<Vec<PutOutcome>> {
        let n = events.len();
        self.1
            .store(&|| format!("silver.put_new({n})"), self.0.put_new(events))
            .await
    }

    async fn put_new_bulk(&self, events: Arc<Vec<SilverEvent>>) -> StoreResult<Vec<PutOutcome>> {
        let n = events.len();
        self.1
            .store(
                &|| format!("silver.put_new_bulk({n})"),
                self.0.put_new_bulk(events),
            )
            .await
    }

    async fn hour_events(&self, hour: i64) -> StoreResult<Vec<SilverEvent>> {
        self.1
            .store(&|| "silver.hour_events".into(), self.0.hour_events(hour))
            .await
    }

    fn hour_parts(&self, hour: i64) -> BoxStream<'_, StoreResult<Vec<SilverEvent>>> {
        self.parts("silver.hour_parts", self.0.hour_parts(hour))
    }

    fn hour_cube_parts(&self, hour: i64) -> BoxStream<'_, StoreResult<Vec<CubeEvent>>> {
        self.parts("silver.hour_cube_parts", self.0.hour_cube_parts(hour))
    }

    async fn viewer_events(&self, viewer: &Pseudonym) -> StoreResult<Vec<(String, i64)>> {
        self.1
            .store(
                &|| "silver.viewer_events".into(),
                self.0.viewer_events(viewer),
            )
            .await
    }

    async fn delete(&self, event_ids: &[String]) -> StoreResult<u64> {
        self.1
            .store(&|| "silver.delete".into(), self.0.delete(event_ids))
            .await
    }
}

struct FaultyGold(Arc<dyn GoldStore>, Hook);

#[async_trait]
impl GoldStore for FaultyGold {
    async fn manifest(&self, day: NaiveDate) -> StoreResult<Option<DayManifest>> {
        self.1
            .store(&|| "gold.manifest".into(), self.0.manifest(day))
            .await
    }

    async fn put_cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cells: &[(Dims, Cell)],
    ) -> StoreResult<()> {
        self.1
            .store(
                &|| format!("gold.put_cells({})", level_name(level)),
                self.0.put_cells(day, level, generation, cells),
            )
            .await
    }

    async fn publish(&self, manifest: &DayManifest, expected_version: u64) -> StoreResult<()> {
        // A flip whose answer is lost reads, on the SDK's retry, as a lost condition.
        let fail = |n, kind| match kind {
            Kind::Lost => StoreError::Conflict,
            _ => store_error(n, kind),
        };
        self.1
            .call(
                &|| "gold.publish".into(),
                fail,
                self.0.publish(manifest, expected_version),
            )
            .await
    }

    async fn cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Option<Cuboid>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        self.1
            .store(
                &|| format!("gold.cells({})", level_name(level)),
                self.0.cells(day, level, generation, cuboid),
            )
            .await
    }

    async fn stale_generations(
        &self,
        day: NaiveDate,
        keep: &[(Level, u64)],
    ) -> StoreResult<Vec<(Level, u64)>> {
        self.1
            .store(
                &|| "gold.stale_generations".into(),
                self.0.stale_generations(day, keep),
            )
            .await
    }

    async fn delete_cells(&self, day: NaiveDate, level: Level, generation: u64) -> StoreResult<()> {
        let checked = async {
            // The invariant behind consistent reads: never delete what the published manifest
            // references. Checked against the real store around the delete.
            let published = match self.0.manifest(day).await {
                Ok(Some(m)) if m.referenced().contains(&(level, generation)) => Some(m.version),
                _ => None,
            };
            let deleted = self.0.delete_cells(day, level, generation).await;
            if let Some(manifest_version) = published {
                // What a reader following that manifest finds now.
                let cells_left = self
                    .0
                    .cells(day, level, generation, None)
                    .await
                    .map_or(0, |c| c.len());
                let faults = &self.1.faults;
                faults
                    .violations
                    .lock()
                    .expect("violations lock")
                    .push(Violation {
                        step: faults.step(),
                        day,
                        level,
                        generation,
                        manifest_version,
                        cells_left,
                    });
            }
            deleted
        };
        self.1
            .store(
                &|| format!("gold.delete_cells({})", level_name(level)),
                checked,
            )
            .await
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Hour(_) => "hour",
        Level::Day => "day",
    }
}

struct FaultyCatalog(Arc<dyn CatalogStore>, Hook);

#[async_trait]
impl CatalogStore for FaultyCatalog {
    async fn put_entries(&self, entries: &[CatalogEntry]) -> StoreResult<()> {
        self.1
            .store(
                &|| "catalog.put_entries".into(),
                self.0.put_entries(entries),
            )
            .await
    }

    async fn load(&self) -> StoreResult<Catalog> {
        self.1.store(&|| "catalog.load".into(), self.0.load()).await
    }
}

struct FaultyLedger(Arc<dyn LedgerStore>, Hook);

#[async_trait]
impl LedgerStore for FaultyLedger {
    async fn processed(&self, key: &str, version: &str) -> StoreResult<Option<FileReport>> {
        self.1
            .store(
                &|| "ledger.processed".into(),
                self.0.processed(key, version),
            )
            .await
    }

    async fn mark_processed(
        &self,
        key: &str,
        version: &str,
        report: &FileReport,
    ) -> StoreResult<()> {
        self.1
            .store(
                &|| "ledger.mark_processed".into(),
                self.0.mark_processed(key, version, report),
            )
            .await
    }
}

/// The table catalog for tests (there is no Glue locally): the days registered, with how many
/// times each was.
#[derive(Default)]
pub struct MemPartitions {
    days: Mutex<std::collections::BTreeMap<NaiveDate, u32>>,
}

impl MemPartitions {
    pub fn from_days(days: std::collections::BTreeMap<NaiveDate, u32>) -> Self {
        MemPartitions {
            days: Mutex::new(days),
        }
    }

    /// Each registered day with how many times it was registered.
    pub fn day_counts(&self) -> std::collections::BTreeMap<NaiveDate, u32> {
        self.days.lock().expect("partitions lock").clone()
    }

    pub fn days(&self) -> Vec<NaiveDate> {
        self.days
            .lock()
            .expect("partitions lock")
            .keys()
            .copied()
            .collect()
    }
}

#[async_trait]
impl PartitionCatalog for MemPartitions {
    async fn register_day(&self, day: NaiveDate) -> StoreResult<()> {
        *self
            .days
            .lock()
            .expect("partitions lock")
            .entry(day)
            .or_default() += 1;
        Ok(())
    }
}

struct FaultyPartitions(Arc<dyn PartitionCatalog>, Hook);

#[async_trait]
impl PartitionCatalog for FaultyPartitions {
    async fn register_day(&self, day: NaiveDate) -> StoreResult<()> {
        self.1
            .store(&|| "glue.register_day".into(), self.0.register_day(day))
            .await
    }
}

/// The first segment of a lake or bronze path (`quarantine`, `reports`, `exports`, `gold`...).
fn area(path: &Path) -> String {
    path.parts()
        .next()
        .map_or_else(String::new, |p| p.as_ref().to_owned())
}

struct FaultyObjects {
    name: &'static str,
    inner: Arc<dyn ObjectStore>,
    hook: Hook,
}

impl fmt::Debug for FaultyObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjects({})", self.name)
    }
}

impl fmt::Display for FaultyObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "faulty {} over {}", self.name, self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyObjects {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let name = self.name;
        self.hook
            .call(
                &|| format!("{name}.put {}", area(location)),
                object_error,
                self.inner.put_opts(location, payload, opts),
            )
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let name = self.name;
        let label = format!("{name}.multipart {}", area(location));
        let upload = self
            .hook
            .call(
                &|| format!("{label} start"),
                object_error,
                self.inner.put_multipart_opts(location, opts),
            )
            .await?;
        Ok(Box::new(FaultyUpload {
            label,
            inner: upload,
            hook: self.hook.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let name = self.name;
        let what = if options.head { "head" } else { "get" };
        self.hook
            .call(
                &|| format!("{name}.{what} {}", area(location)),
                object_error,
                self.inner.get_opts(location, options),
            )
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (name, inner, hook) = (self.name, self.inner.clone(), self.hook.clone());
        // One call per stream (the pipeline deletes one object at a time), decided when the
        // stream is first polled.
        futures::stream::once(async move {
            let locations: Vec<_> = locations.collect().await;
            let label = format!(
                "{name}.delete {}",
                locations
                    .first()
                    .and_then(|l| l.as_ref().ok())
                    .map(area)
                    .unwrap_or_default()
            );
            let n = locations.len();
            let deleted = hook
                .call(&|| label.clone(), object_error, async {
                    let out: Vec<_> = inner
                        .delete_stream(futures::stream::iter(locations).boxed())
                        .collect()
                        .await;
                    Ok(out)
                })
                .await;
            match deleted {
                Ok(out) => futures::stream::iter(out).boxed(),
                Err(e) => {
                    let mut errors = vec![Err(e)];
                    errors.extend((1..n).map(|_| Err(object_error(0, Kind::Error))));
                    futures::stream::iter(errors).boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (name, inner, hook) = (self.name, self.inner.clone(), self.hook.clone());
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let listed = hook
                .call(&|| format!("{name}.list"), object_error, async {
                    let out: Vec<_> = inner.list(prefix.as_ref()).collect().await;
                    Ok(out)
                })
                .await;
            match listed {
                Ok(out) => futures::stream::iter(out).boxed(),
                Err(e) => futures::stream::once(async { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let name = self.name;
        self.hook
            .call(
                &|| format!("{name}.list_with_delimiter"),
                object_error,
                self.inner.list_with_delimiter(prefix),
            )
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let name = self.name;
        self.hook
            .call(
                &|| format!("{name}.copy"),
                object_error,
                self.inner.copy_opts(from, to, options),
            )
            .await
    }
}

/// A multipart upload whose parts and completion are calls like any other.
struct FaultyUpload {
    label: String,
    inner: Box<dyn MultipartUpload>,
    hook: Hook,
}

impl fmt::Debug for FaultyUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyUpload({})", self.label)
    }
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let (hook, label) = (self.hook.clone(), format!("{} part", self.label));
        async move { hook.call(&|| label.clone(), object_error, part).await }.boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let label = format!("{} complete", self.label);
        self.hook
            .call(&|| label.clone(), object_error, self.inner.complete())
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let label = format!("{} abort", self.label);
        self.hook
            .call(&|| label.clone(), object_error, self.inner.abort())
            .await
    }
}
