//! Processing a bronze object: stream it through validation into silver, quarantine what is
//! refused, write a report, and remember the object version so a redelivery changes nothing.
//!
//! The object is read as a byte stream; a blocking task parses rows (one in memory at a time)
//! and hands batches to the async side over a bounded channel, which keeps a few silver writes in
//! flight. A retry after a crash reprocesses the object from the start: rows the earlier attempt
//! stored are recognised by their origin (`<key>#<version>:<line>`) and counted as accepted
//! again, so the report of a retried run equals that of a clean one.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use streamcube_model::catalog::read_catalog;
use streamcube_model::event::{Field, FieldError, Reason, SilverEvent, Validator};
use streamcube_model::reader::{EventReader, Format};
use streamcube_model::report::{FileReport, Rejection};
use tokio::io::AsyncWriteExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::ports::{PutOutcome, SilverStore, StoreError};
use crate::{Pipeline, PipelineError};

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
}

/// The result of [`Pipeline::process_object`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectOutcome {
    pub report: ObjectReport,
    /// The version had been processed before; nothing was done.
    pub already_processed: bool,
}

/// The quarantine object of a bronze key.
pub fn quarantine_path(key: &str) -> String {
    format!("quarantine/{key}.jsonl")
}

/// The report object of a bronze key.
pub fn report_path(key: &str) -> String {
    format!("reports/{key}.json")
}

enum Msg {
    Events(Vec<SilverEvent>),
    Rejected(Rejection),
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
        let path = Path::from(key);
        let version = match version {
            Some(v) => v.to_owned(),
            None => {
                let meta = self.stores.bronze.head(&path).await?;
                meta.e_tag
                    .or(meta.version)
                    .unwrap_or_else(|| meta.last_modified.to_rfc3339())
            }
        };
        let kind = if key.starts_with(&self.config.reference_prefix) {
            ObjectKind::Catalog
        } else {
            ObjectKind::Events
        };
        if let Some(counts) = self.stores.ledger.processed(key, &version).await? {
            tracing::info!("object version already processed");
            let quarantine = (counts.rejected > 0).then(|| quarantine_path(key));
            return Ok(ObjectOutcome {
                report: ObjectReport {
                    key: key.to_owned(),
                    version,
                    kind,
                    counts,
                    quarantine,
                },
                already_processed: true,
            });
        }

        let mut quarantine = Quarantine::new(Arc::clone(&self.stores.lake), key);
        let counts = match kind {
            ObjectKind::Catalog => {
                self.load_catalog_object(key, &path, &mut quarantine)
                    .await?
            }
            ObjectKind::Events => {
                self.load_events_object(key, &version, &path, &mut quarantine)
                    .await?
            }
        };
        debug_assert!(counts.is_balanced());
        let quarantine = quarantine.finish().await?;
        let report = ObjectReport {
            key: key.to_owned(),
            version: version.clone(),
            kind,
            counts,
            quarantine,
        };
        let body = serde_json::to_vec_pretty(&report).unwrap_or_default();
        self.stores
            .lake
            .put(&Path::from(report_path(key)), body.into())
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
            "object processed"
        );
        Ok(ObjectOutcome {
            report,
            already_processed: false,
        })
    }

    fn open_stream(
        &self,
        path: &Path,
    ) -> impl Future<Output = Result<impl tokio::io::AsyncRead + Send + Unpin + 'static, PipelineError>>
    {
        let store = Arc::clone(&self.stores.bronze);
        let path = path.clone();
        async move {
            let get = store.get(&path).await?;
            Ok(StreamReader::new(
                get.into_stream().map_err(std::io::Error::other),
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
                .await
                .map_err(|e| PipelineError::Task(e.to_string()))?
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

    async fn load_events_object(
        &self,
        key: &str,
        version: &str,
        path: &Path,
        quarantine: &mut Quarantine,
    ) -> Result<FileReport, PipelineError> {
        let format =
            Format::from_name(key).ok_or_else(|| PipelineError::UnknownFormat(key.to_owned()))?;
        let stream = self.open_stream(path).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(2 * self.config.write_concurrency);
        let config = Arc::clone(&self.config);
        let origin = format!("{key}#{version}");
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let validator = Validator::now();
            let mut rows = EventReader::new(SyncIoBridge::new(stream), format)?;
            let mut batch = Vec::with_capacity(config.write_batch);
            let closed = || std::io::Error::other("the writer stopped");
            while let Some(row) = rows.next_row()? {
                let checked = row
                    .fields
                    .map_err(|e| vec![e])
                    .and_then(|f| validator.validate(&f))
                    .and_then(|ev| {
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
                        batch.push(SilverEvent::new(&ev, &config.pseudonymizer, origin));
                        if batch.len() >= config.write_batch {
                            tx.blocking_send(Msg::Events(std::mem::take(&mut batch)))
                                .map_err(|_| closed())?;
                        }
                    }
                    Err(errors) => {
                        let rejection = Rejection {
                            line: row.line,
                            raw: row.raw_text().into_owned(),
                            errors,
                            origin: BTreeMap::new(),
                        };
                        tx.blocking_send(Msg::Rejected(rejection))
                            .map_err(|_| closed())?;
                    }
                }
            }
            if !batch.is_empty() {
                tx.blocking_send(Msg::Events(batch)).map_err(|_| closed())?;
            }
            Ok(rows.rows_read())
        });

        let mut report = FileReport::default();
        let mut inflight = FuturesUnordered::new();
        let write = |silver: Arc<dyn SilverStore>, events: Vec<SilverEvent>| async move {
            silver.put_new(&events).await
        };
        let mut failure: Option<StoreError> = None;
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Events(events) => {
                    report.rows += events.len() as u64;
                    inflight.push(write(Arc::clone(&self.stores.silver), events));
                    while inflight.len() >= self.config.write_concurrency {
                        if let Some(r) = inflight.next().await
                            && let Err(e) = tally(&mut report, r)
                        {
                            failure.get_or_insert(e);
                        }
                    }
                }
                Msg::Rejected(r) => {
                    report.rows += 1;
                    report.reject(&r.errors);
                    quarantine.write(&r).await?;
                }
            }
            if failure.is_some() {
                break;
            }
        }
        drop(rx);
        while let Some(r) = inflight.next().await {
            if let Err(e) = tally(&mut report, r) {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        let rows_read = reader
            .await
            .map_err(|e| PipelineError::Task(e.to_string()))?
            .map_err(|source| PipelineError::Unreadable {
                key: key.to_owned(),
                source,
            })?;
        debug_assert_eq!(rows_read, report.rows);
        Ok(report)
    }
}

/// The quarantine object of one bronze key, written as rows are refused (never held whole).
struct Quarantine {
    lake: Arc<dyn ObjectStore>,
    path: String,
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
    fn new(lake: Arc<dyn ObjectStore>, key: &str) -> Self {
        Quarantine {
            lake,
            path: quarantine_path(key),
            writer: None,
            line: Vec::with_capacity(256),
        }
    }

    async fn write(&mut self, r: &Rejection) -> Result<(), PipelineError> {
        let (lake, path) = (&self.lake, &self.path);
        let w = self.writer.get_or_insert_with(|| {
            object_store::buffered::BufWriter::new(Arc::clone(lake), Path::from(path.as_str()))
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
            None => match self.lake.delete(&Path::from(self.path.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }
}

fn tally(
    report: &mut FileReport,
    r: Result<Vec<PutOutcome>, StoreError>,
) -> Result<(), StoreError> {
    for o in r? {
        match o {
            PutOutcome::Inserted | PutOutcome::AlreadyStored => report.accepted += 1,
            PutOutcome::Duplicate => report.duplicates += 1,
        }
    }
    Ok(())
}
