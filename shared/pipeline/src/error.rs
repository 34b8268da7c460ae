//! The pipeline's errors. Front ends map them to their protocol in one place ([`crate::http`]).

use streamcube_model::query::QueryError;

use crate::ports::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("object storage failed")]
    Objects(#[from] object_store::Error),
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Events for countries this deployment does not serve (data residency).
    #[error("this deployment does not serve events from {}", .0.join(", "))]
    CountryNotServed(Vec<String>),
    /// The bytes of a bronze object cannot be read (a broken gzip stream, say). Retrying will not
    /// help; the report says so.
    #[error("the object `{key}` cannot be read: {source}")]
    Unreadable {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// A paused object was overwritten before it was finished: the checkpoint no longer
    /// matches its bytes. Retrying will not help; the new version is processed on its own.
    #[error("the object `{key}` changed while it was being processed in parts")]
    ObjectChanged { key: String },
    #[error(
        "the object `{0}` has no format we read (.csv, .jsonl, .ndjson, .json, optionally .gz)"
    )]
    UnknownFormat(String),
    #[error("the catalog file is not usable: {0}")]
    Catalog(#[from] streamcube_model::catalog::CatalogError),
    /// The day's Parquet export cannot be encoded.
    #[error("the Parquet export failed")]
    Export(#[from] parquet::errors::ParquetError),
    #[error("a background task failed: {0}")]
    Task(String),
    /// A key object storage cannot address as it is (an empty segment, `.` or `..`, a control
    /// character): refused rather than read under another name.
    #[error("the object key `{key}` is not usable: {reason}")]
    BadKey { key: String, reason: String },
    /// A continuation of a paused object that this pipeline cannot have written.
    #[error("the checkpoint of `{key}` is not valid: {reason}")]
    BadCheckpoint { key: String, reason: &'static str },
}

impl PipelineError {
    /// Whether a retry of the same work may succeed (throttling, contention, transient I/O).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PipelineError::Store(
                StoreError::Throttled | StoreError::Conflict | StoreError::Backend(_)
            ) | PipelineError::Objects(_)
                | PipelineError::Task(_)
        )
    }
}

impl From<tokio::task::JoinError> for PipelineError {
    fn from(e: tokio::task::JoinError) -> Self {
        PipelineError::Task(e.to_string())
    }
}
