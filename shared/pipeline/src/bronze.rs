//! Processing a bronze object: stream it through validation into silver, quarantine what is
//! refused, write a report, and remember the object version so a redelivery changes nothing.
//!
//! The object is read as a byte stream; a blocking task parses rows (one in memory at a time)
//! and hands batches to the async side over a bounded channel, which keeps a few silver writes in
//! flight. A retry after a crash reprocesses the object from the start: rows the earlier attempt
//! stored are recognised by their origin (`<key>#<version>:<line>`) and counted as accepted
//! again, so the report of a retried run equals that of a clean one.
//!
//! # Files larger than one run
//!
//! A Lambda invocation has a deadline, and a file may take longer than that to process.
//! [`Pipeline::process_object_until`] takes a `stop` test, asked before every row: when it says
//! so, the run finishes the writes in flight and returns [`Progress::Paused`] with a
//! [`Checkpoint`] (the line of the last row done, the counts so far, the quarantine objects
//! written), at a row boundary, so nothing is half done. [`Pipeline::resume_object`] goes on from
//! it, in the same process or in another invocation: it reads the same bytes again from the start
//! (pinned by the ETag the first part saw), skips the rows the checkpoint covers without
//! validating or writing them, and continues. Each part writes its refused rows to its own
//! quarantine object (`quarantine/<key>.jsonl`, then `quarantine/<key>.part-<n>.jsonl`); the
//! report and the ledger entry are written once, when the last part is done, with the counts of
//! all parts. A part that is retried redoes exactly that part: its rows are recognised by their
//! origin and its quarantine object is rewritten whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use foldhash::{HashSet, HashSetExt};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use streamcube_model::catalog::read_catalog;
use streamcube_model::event::{Field, FieldError, Reason, SilverEvent, Validator};
use streamcube_model::reader::{EventReader, Format};
use streamcube_model::report::{FileReport, Rejection};
use tokio::io::AsyncWriteExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::ports::{PutOutcome, SilverStore, StoreError};
use crate::{Pipeline, PipelineError};

/// Bytes of a bronze object fetched by one request.
pub const READ_RANGE_BYTES: u64 = 8 << 20;

/// The bytes of an object of `size` bytes, read as consecutive ranges of `range_bytes` (the
/// pipeline reads [`READ_RANGE_BYTES`]), each fetched whole by a task of its own (the next one
/// while the reader works through the current one), all with `if_match: e_tag`.
///
/// A bronze object is consumed as fast as its rows are validated and written, for minutes on a
/// large file. Read as one response, the body waits on the reader, and the S3 client's deadline
/// per request (or per read) cuts it: a file slower than that failed on every delivery. Ranges
/// finish at network speed whatever the reader does, and at most three are held at once.
pub fn object_bytes(
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    e_tag: Option<String>,
    range_bytes: u64,
) -> impl futures::Stream<Item = Result<Bytes, object_store::Error>> + Send + Unpin + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut start = 0;
        while start < size {
            let end = size.min(start + range_bytes.max(1));
            let options = GetOptions {
                if_match: e_tag.clone(),
                range: Some(GetRange::Bounded(start..end)),
                ..GetOptions::default()
            };
            let got = match store.get_opts(&path, options).await {
                Ok(get) => get.bytes().await,
                Err(e) => Err(e),
            };
            let failed = got.is_err();
            // A dropped reader stops the reads.
            if tx.send(got).await.is_err() || failed {
                return;
            }
            start = end;
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// What a bronze object holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Events,
    Catalog,
}

/// The report written to `reports/<key>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectReport {
    pub key: String,
    pub version: String,
    pub kind: ObjectKind,
    #[serde(flatten)]
    pub counts: FileReport,
    /// Where the refused rows are, if any.
    pub quarantine: Option<String>,
    /// When the object was processed in several parts and more than one refused rows: the
    /// quarantine objects after the first (`quarantine`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantine_parts: Vec<String>,
}

impl ObjectReport {
    /// Every quarantine object of the report, in order.
    pub fn quarantine_objects(&self) -> impl Iterator<Item = &str> {
        self.quarantine
            .iter()
            .chain(&self.quarantine_parts)
            .map(String::as_str)
    }
}

/// The result of [`Pipeline::process_object`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectOutcome {
    pub report: ObjectReport,
    /// The version had been processed before; nothing was done.
    pub already_processed: bool,
}

/// Where a paused object stands: what another run needs to go on from the next row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub key: String,
    pub version: String,
    /// The line (where the row starts, from 1) of the last row done: a resume skips every row
    /// up to it.
    pub line: u64,
    /// The counts of the rows done so far (`counts.rows` of them, balanced).
    pub counts: FileReport,
    /// How many parts are done; the next one is part `parts + 1`.
    pub parts: u32,
    /// The quarantine objects the parts done wrote, in order.
    #[serde(default)]
    pub quarantine: Vec<String>,
    /// The ETag of the bytes the first part read; a resume reads only these bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

/// The result of [`Pipeline::process_object_until`] and [`Pipeline::resume_object`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The object is processed: its report and ledger entry are written.
    Done(ObjectOutcome),
    /// `stop` asked to stop; go on with [`Pipeline::resume_object`].
    Paused(Checkpoint),
}

/// The quarantine object of a bronze key.
pub fn quarantine_path(key: &str) -> String {
    format!("quarantine/{key}.jsonl")
}

/// The quarantine object of part `part` (from 1) of a bronze key processed in several parts.
pub fn quarantine_part_path(key: &str, part: u32) -> String {
    if part <= 1 {
        quarantine_path(key)
    } else {
        format!("quarantine/{key}.part-{part}.jsonl")
    }
}

/// The object path of a key exactly as it is (`Path::from` would percent-encode characters such
/// as `#`, `~` or non-ASCII letters, and so name another object).
pub fn object_path(key: &str) -> Result<Path, PipelineError> {
    Path::parse(key).map_err(|e| PipelineError::BadKey {
        key: key.to_owned(),
        reason: match e {
            object_store::path::Error::EmptySegment { .. } => {
                "it has an empty segment (`//`, or a `/` at an end)".to_owned()
            }
            _ => "it has a `.` or `..` segment or a control character".to_owned(),
        },
    })
}

/// Whether `path` is one of the quarantine objects of `key` (of any part).
fn is_quarantine_of(key: &str, path: &str) -> bool {
    path == quarantine_path(key)
        || path
            .strip_prefix(&format!("quarantine/{key}.part-"))
            .and_then(|rest| rest.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 2)
}

/// The report object of a bronze key.
pub fn report_path(key: &str) -> String {
    format!("reports/{key}.json")
}

/// What the reading side hands over: valid events for one silver write and the rows refused
/// since the last batch, in file order. Refused rows travel with the events: sent one message
/// each, a few of them filled the channel while the writes in flight held the receiver, and the
/// reader then waited for the writer instead of preparing the next batch beside it.
struct Batch {
    events: Vec<SilverEvent>,
    rejected: Vec<Rejection>,
}

impl Batch {
    fn len(&self) -> usize {
        self.events.len() + self.rejected.len()
    }
}

/// How the reading side of one part ended.
enum ReadEnd {
    /// The end of the data; `rows` read in all (skipped ones included).
    Done { rows: u64 },
    /// `stop` said so after the row starting at `line`; `rows` done in all.
    Paused { line: u64, rows: u64 },
}

enum ReadFail {
    Io(std::io::Error),
    /// The rows before the checkpoint are not the ones it counted.
    Changed,
}

impl From<std::io::Error> for ReadFail {
    fn from(e: std::io::Error) -> Self {
        ReadFail::Io(e)
    }
}

/// What one part of an events object did.
struct EventsPass {
    counts: FileReport,
    /// The line of the last row done, when the part was paused.
    paused_at: Option<u64>,
    e_tag: Option<String>,
}

impl Pipeline {
    /// Processes one version of a bronze object. `version` is the S3 version id or ETag given by
    /// the notification; when absent, the store's ETag is used.
    #[tracing::instrument(skip(self), err)]
    pub async fn process_object(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectOutcome, PipelineError> {
        let mut progress = self.process_object_until(key, version, never).await?;
        // `never` does not pause; the loop only keeps this free of a panic path.
        loop {
            match progress {
                Progress::Done(outcome) => return Ok(outcome),
                Progress::Paused(checkpoint) => {
                    progress = self.resume_object(checkpoint, never).await?;
                }
            }
        }
    }

    /// [`Self::process_object`] that stops at a row boundary when `stop` says so (it is asked
    /// before every row but the first of a run, so every run makes progress). Catalog objects
    /// are small and never paused.
    #[tracing::instrument(skip(self, stop), err)]
    pub async fn process_object_until<S>(
        &self,
        key: &str,
        version: Option<&str>,
        stop: S,
    ) -> Result<Progress, PipelineError>
    where
        S: Fn() -> bool + Send + 'static,
    {
        let version = match version {
            Some(v) => v.to_owned(),
            None => {
                let meta = self.stores.bronze.head(&object_path(key)?).await?;
                meta.e_tag
                    .or(meta.version)
                    .unwrap_or_else(|| meta.last_modified.to_rfc3339())
            }
        };
        self.run_object(key, version, None, stop).await
    }

    /// Goes on with a paused object from its checkpoint (see [`Self::process_object_until`]).
    /// Harmless to call twice with the same checkpoint, or after the object is done.
    #[tracing::instrument(skip_all, fields(key = %checkpoint.key, line = checkpoint.line), err)]
    pub async fn resume_object<S>(
        &self,
        checkpoint: Checkpoint,
        stop: S,
    ) -> Result<Progress, PipelineError>
    where
        S: Fn() -> bool + Send + 'static,
    {
        let key = checkpoint.key.clone();
        let version = checkpoint.version.clone();
        // A checkpoint travels outside the process (in the payload of the next invocation):
        // accept only what a paused run writes, so a forged one can neither make the counts
        // lie nor name other objects for deletion.
        let bad = |reason| PipelineError::BadCheckpoint {
            key: key.clone(),
            reason,
        };
        if checkpoint.parts == 0 {
            return Err(bad("no part is done"));
        }
        if !checkpoint.counts.is_balanced() {
            return Err(bad("its counts do not add up"));
        }
        if checkpoint.quarantine.len() > checkpoint.parts as usize
            || checkpoint
                .quarantine
                .iter()
                .any(|q| !is_quarantine_of(&key, q))
        {
            return Err(bad("it lists objects that are not the key's quarantine"));
        }
        self.run_object(&key, version, Some(checkpoint), stop).await
    }

    async fn run_object<S>(
        &self,
        key: &str,
        version: String,
        resume: Option<Checkpoint>,
        stop: S,
    ) -> Result<Progress, PipelineError>
    where
        S: Fn() -> bool + Send + 'static,
    {
        let path = object_path(key)?;
        let kind = if key.starts_with(&self.config.reference_prefix) {
            ObjectKind::Catalog
        } else {
            ObjectKind::Events
        };
        if let Some(counts) = self.stores.ledger.processed(key, &version).await? {
            tracing::info!("object version already processed");
            let report = self.done_report(key, &version, kind, counts).await;
            return Ok(Progress::Done(ObjectOutcome {
                report,
                already_processed: true,
            }));
        }
        // Catalogs are read whole and never paused, so they have no checkpoint to resume from.
        let resume = resume.filter(|_| kind == ObjectKind::Events);
        let part = resume.as_ref().map_or(1, |c| c.parts.saturating_add(1));
        let mut quarantine = Quarantine::new(
            Arc::clone(&self.stores.lake),
            quarantine_part_path(key, part),
        )?;
        let pass = match kind {
            ObjectKind::Catalog => EventsPass {
                counts: self
                    .load_catalog_object(key, &path, &mut quarantine)
                    .await?,
                paused_at: None,
                e_tag: None,
            },
            ObjectKind::Events => {
                self.load_events_object(
                    key,
                    &version,
                    &path,
                    resume.as_ref(),
                    &mut quarantine,
                    stop,
                )
                .await?
            }
        };
        debug_assert!(pass.counts.is_balanced());
        let mut quarantines = resume.map(|c| c.quarantine).unwrap_or_default();
        quarantines.extend(quarantine.finish().await?);
        if let Some(line) = pass.paused_at {
            tracing::info!(
                part,
                line,
                rows = pass.counts.rows,
                "object paused; the next part goes on from the checkpoint"
            );
            return Ok(Progress::Paused(Checkpoint {
                key: key.to_owned(),
                version,
                line,
                counts: pass.counts,
                parts: part,
                quarantine: quarantines,
                e_tag: pass.e_tag,
            }));
        }

        self.remove_stale_quarantine(key, &quarantines).await?;
        let mut objects = quarantines.into_iter();
        let report = ObjectReport {
            key: key.to_owned(),
            version: version.clone(),
            kind,
            counts: pass.counts,
            quarantine: objects.next(),
            quarantine_parts: objects.collect(),
        };
        let body = serde_json::to_vec_pretty(&report).unwrap_or_default();
        self.stores
            .lake
            .put(&object_path(&report_path(key))?, body.into())
            .await?;
        self.stores
            .ledger
            .mark_processed(key, &version, &report.counts)
            .await?;
        tracing::info!(
            rows = report.counts.rows,
            accepted = report.counts.accepted,
            duplicates = report.counts.duplicates,
            rejected = report.counts.rejected,
            parts = part,
            "object processed"
        );
        Ok(Progress::Done(ObjectOutcome {
            report,
            already_processed: false,
        }))
    }

    /// The report of a version processed before: the stored one when it is that version's (it
    /// lists every quarantine object), else one rebuilt from the ledger's counts.
    async fn done_report(
        &self,
        key: &str,
        version: &str,
        kind: ObjectKind,
        counts: FileReport,
    ) -> ObjectReport {
        match self.stored_report(key).await {
            Some(r) if r.version == version && r.counts == counts => r,
            _ => ObjectReport {
                key: key.to_owned(),
                version: version.to_owned(),
                kind,
                quarantine: (counts.rejected > 0).then(|| quarantine_path(key)),
                counts,
                quarantine_parts: Vec::new(),
            },
        }
    }

    /// The report stored for a key (of whichever version was processed last), if readable.
    async fn stored_report(&self, key: &str) -> Option<ObjectReport> {
        let got = self
            .stores
            .lake
            .get(&object_path(&report_path(key)).ok()?)
            .await
            .ok()?;
        let bytes = got.bytes().await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Deletes the quarantine objects an earlier version of the key left that this run did not
    /// rewrite (they hold raw rows, personal data included, that no report points to any more).
    async fn remove_stale_quarantine(
        &self,
        key: &str,
        ours: &[String],
    ) -> Result<(), PipelineError> {
        let Some(previous) = self.stored_report(key).await else {
            return Ok(());
        };
        // Only this key's quarantine objects, whatever the stored report says.
        for stale in previous
            .quarantine_objects()
            .filter(|q| !ours.iter().any(|o| o == q) && is_quarantine_of(key, q))
        {
            match self.stores.lake.delete(&object_path(stale)?).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn open_stream(
        &self,
        path: &Path,
    ) -> impl Future<Output = Result<impl tokio::io::AsyncRead + Send + Unpin + 'static, PipelineError>>
    {
        let store = Arc::clone(&self.stores.bronze);
        let path = path.clone();
        async move {
            let meta = store.head(&path).await?;
            Ok(StreamReader::new(
                object_bytes(store, path, meta.size, meta.e_tag, READ_RANGE_BYTES)
                    .map_err(std::io::Error::other),
            ))
        }
    }

    async fn load_catalog_object(
        &self,
        key: &str,
        path: &Path,
        quarantine: &mut Quarantine,
    ) -> Result<FileReport, PipelineError> {
        let stream = self.open_stream(path).await?;
        let (entries, rejections, report) =
            tokio::task::spawn_blocking(move || read_catalog(SyncIoBridge::new(stream)))
                .await?
                .map_err(|e| match e {
                    streamcube_model::catalog::CatalogError::Io(source) => {
                        PipelineError::Unreadable {
                            key: key.to_owned(),
                            source,
                        }
                    }
                    other => PipelineError::Catalog(other),
                })?;
        for chunk in entries.chunks(500) {
            self.stores.catalog.put_entries(chunk).await?;
        }
        for r in &rejections {
            quarantine.write(r).await?;
        }
        Ok(report)
    }

    async fn load_events_object<S>(
        &self,
        key: &str,
        version: &str,
        path: &Path,
        resume: Option<&Checkpoint>,
        quarantine: &mut Quarantine,
        stop: S,
    ) -> Result<EventsPass, PipelineError>
    where
        S: Fn() -> bool + Send + 'static,
    {
        let format =
            Format::from_name(key).ok_or_else(|| PipelineError::UnknownFormat(key.to_owned()))?;
        let changed = || PipelineError::ObjectChanged {
            key: key.to_owned(),
        };
        let meta = self.stores.bronze.head(path).await?;
        // A resume reads the very bytes the first part read (every range is fetched `if_match`).
        let resumed_tag = resume.and_then(|c| c.e_tag.clone());
        if resumed_tag.is_some() && resumed_tag != meta.e_tag {
            return Err(changed());
        }
        let e_tag = meta.e_tag.clone();
        let stream = StreamReader::new(
            object_bytes(
                Arc::clone(&self.stores.bronze),
                path.clone(),
                meta.size,
                e_tag.clone(),
                READ_RANGE_BYTES,
            )
            .map_err(std::io::Error::other),
        );
        let (skip_to_line, skip_rows) = resume.map_or((0, 0), |c| (c.line, c.counts.rows));

        // Half as many batches ready as writes in flight, and at least one: the reader works
        // ahead of the writer by that much, and no further, whatever the file's size.
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<Batch>((self.config.write_concurrency / 2).max(1));
        let config = Arc::clone(&self.config);
        let origin = format!("{key}#{version}");
        let reader = tokio::task::spawn_blocking(move || -> Result<ReadEnd, ReadFail> {
            let validator = Validator::now();
            let mut rows = EventReader::new(SyncIoBridge::new(stream), format)?;
            let fresh = || Batch {
                events: Vec::with_capacity(config.write_batch),
                rejected: Vec::new(),
            };
            let mut batch = fresh();
            let closed = || ReadFail::Io(std::io::Error::other("the writer stopped"));
            let mut skipped = 0u64;
            let mut done_here = 0u64;
            let mut last_line = skip_to_line;
            while let Some(row) = rows.next_checked(&validator)? {
                if row.line <= skip_to_line {
                    // Done by an earlier part: read (and checked, as every row is read) but
                    // not written again.
                    skipped += 1;
                    continue;
                }
                if done_here == 0 && skipped != skip_rows {
                    return Err(ReadFail::Changed);
                }
                if done_here > 0 && stop() {
                    if batch.len() > 0 {
                        tx.blocking_send(batch).map_err(|_| closed())?;
                    }
                    return Ok(ReadEnd::Paused {
                        line: last_line,
                        rows: skipped + done_here,
                    });
                }
                done_here += 1;
                last_line = row.line;
                let checked = row.event.and_then(|ev| {
                    if config.serves(ev.country) {
                        Ok(ev)
                    } else {
                        Err(vec![FieldError::new(
                            Field::Country,
                            Reason::CountryNotServed,
                        )])
                    }
                });
                match checked {
                    Ok(ev) => {
                        let origin = format!("{origin}:{}", row.line);
                        batch
                            .events
                            .push(SilverEvent::new(&ev, &config.pseudonymizer, origin));
                    }
                    Err(errors) => batch.rejected.push(Rejection {
                        line: row.line,
                        raw: String::from_utf8_lossy(row.raw).into_owned(),
                        errors,
                        origin: BTreeMap::new(),
                    }),
                }
                // Refused rows count towards the size too, so a file of bad rows is not held
                // in memory whole.
                if batch.len() >= config.write_batch {
                    tx.blocking_send(std::mem::replace(&mut batch, fresh()))
                        .map_err(|_| closed())?;
                }
            }
            if done_here == 0 && skipped != skip_rows {
                return Err(ReadFail::Changed);
            }
            if batch.len() > 0 {
                tx.blocking_send(batch).map_err(|_| closed())?;
            }
            Ok(ReadEnd::Done {
                rows: rows.rows_read(),
            })
        });

        let mut report = resume.map(|c| c.counts.clone()).unwrap_or_default();
        let mut inflight = FuturesUnordered::new();
        let write = |silver: Arc<dyn SilverStore>, events: Vec<SilverEvent>| async move {
            let events = Arc::new(events);
            let r = silver.put_new_bulk(Arc::clone(&events)).await;
            (events, r)
        };
        // The ids of the batches in flight. Within a file the first occurrence of an id wins
        // (the contract's deduplication): a later row repeating an id in flight is a duplicate
        // whatever that write answers (the first occurrence is stored by it, or was stored
        // before, or the write fails and so does the file), so it is counted as one and not
        // written. The batches in flight then share no id, and their writes may land in any
        // order: none of them waits for another.
        let mut inflight_ids: HashSet<String> = HashSet::new();
        let mut failure: Option<StoreError> = None;
        let mut reading = true;
        loop {
            // The writes in flight are polled while the next batch is awaited, so a write
            // starts when its batch arrives and the store is never left idle between them.
            let batch = tokio::select! {
                biased;
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    if let Err(e) = settle(&mut report, &mut inflight_ids, done) {
                        failure.get_or_insert(e);
                    }
                    continue;
                }
                batch = rx.recv(), if reading
                    && failure.is_none()
                    && inflight.len() < self.config.write_concurrency => batch,
                else => break,
            };
            let Some(Batch {
                mut events,
                rejected,
            }) = batch
            else {
                // The reader is done: the writes in flight are settled above, then the loop ends.
                reading = false;
                continue;
            };
            for r in rejected {
                report.rows += 1;
                report.reject(&r.errors);
                quarantine.write(&r).await?;
            }
            report.rows += events.len() as u64;
            let before = events.len();
            events.retain(|e| !inflight_ids.contains(&e.event_id));
            report.duplicates += (before - events.len()) as u64;
            if !events.is_empty() {
                inflight_ids.extend(events.iter().map(|e| e.event_id.clone()));
                inflight.push(write(Arc::clone(&self.stores.silver), events));
            }
        }
        drop(rx);
        if let Some(e) = failure {
            return Err(e.into());
        }
        let end = reader.await?.map_err(|e| match e {
            ReadFail::Io(source) => PipelineError::Unreadable {
                key: key.to_owned(),
                source,
            },
            ReadFail::Changed => changed(),
        })?;
        let (rows_read, paused_at) = match end {
            ReadEnd::Done { rows } => (rows, None),
            ReadEnd::Paused { line, rows } => (rows, Some(line)),
        };
        debug_assert_eq!(rows_read, report.rows);
        Ok(EventsPass {
            counts: report,
            paused_at,
            e_tag,
        })
    }
}

/// A `stop` test that never stops.
fn never() -> bool {
    false
}

/// The quarantine object of one bronze key (or of one part of it), written as rows are refused
/// (never held whole).
struct Quarantine {
    lake: Arc<dyn ObjectStore>,
    path: String,
    location: Path,
    writer: Option<object_store::buffered::BufWriter>,
    line: Vec<u8>,
}

fn lake_io(e: std::io::Error) -> PipelineError {
    PipelineError::Objects(object_store::Error::Generic {
        store: "lake",
        source: Box::new(e),
    })
}

impl Quarantine {
    fn new(lake: Arc<dyn ObjectStore>, path: String) -> Result<Self, PipelineError> {
        Ok(Quarantine {
            lake,
            location: object_path(&path)?,
            path,
            writer: None,
            line: Vec::with_capacity(256),
        })
    }

    async fn write(&mut self, r: &Rejection) -> Result<(), PipelineError> {
        let (lake, location) = (&self.lake, &self.location);
        let w = self.writer.get_or_insert_with(|| {
            object_store::buffered::BufWriter::new(Arc::clone(lake), location.clone())
        });
        self.line.clear();
        serde_json::to_writer(&mut self.line, r).map_err(|e| lake_io(e.into()))?;
        self.line.push(b'\n');
        w.write_all(&self.line).await.map_err(lake_io)
    }

    /// Completes the upload, or removes a stale quarantine of an earlier version when nothing was
    /// refused. Returns the path when there is one.
    async fn finish(self) -> Result<Option<String>, PipelineError> {
        match self.writer {
            Some(mut w) => {
                w.shutdown().await.map_err(lake_io)?;
                Ok(Some(self.path))
            }
            None => match self.lake.delete(&self.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }
}

/// Counts a finished write batch and forgets its ids as in flight.
fn settle(
    report: &mut FileReport,
    inflight_ids: &mut HashSet<String>,
    (events, r): (Arc<Vec<SilverEvent>>, Result<Vec<PutOutcome>, StoreError>),
) -> Result<(), StoreError> {
    for e in events.iter() {
        inflight_ids.remove(&e.event_id);
    }
    for o in r? {
        match o {
            PutOutcome::Inserted | PutOutcome::AlreadyStored => report.accepted += 1,
            PutOutcome::Duplicate => report.duplicates += 1,
        }
    }
    Ok(())
}
