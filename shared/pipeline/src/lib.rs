//! The pipeline, written once against the ports.
//!
//! [`Pipeline`] holds one adapter per [port](ports) and the deployment's configuration, and
//! offers the services every front end (Lambda functions, the `streamcube` command, the local
//! HTTP server) calls: ingest a batch of events, process a bronze object, consolidate the hour
//! partitions that changed, query the cube, erase a viewer. [`http`] maps HTTP requests onto them
//! and is the one place where errors become status codes.

pub mod bronze;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod consolidate;
pub mod erase;
pub mod error;
pub mod export;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod ports;
pub mod query;
#[cfg(feature = "conformance")]
pub mod refusing;

use std::sync::Arc;

use object_store::ObjectStore;

pub use config::PipelineConfig;
pub use error::PipelineError;
use ports::{CatalogStore, ChangeFeed, GoldStore, LedgerStore, PartitionCatalog, SilverStore};

/// The adapters of one backend.
#[derive(Clone)]
pub struct Stores {
    pub silver: Arc<dyn SilverStore>,
    pub gold: Arc<dyn GoldStore>,
    pub catalog: Arc<dyn CatalogStore>,
    pub ledger: Arc<dyn LedgerStore>,
    /// Landing zone of raw files.
    pub bronze: Arc<dyn ObjectStore>,
    /// Quarantine, reports and exports.
    pub lake: Arc<dyn ObjectStore>,
    /// The table catalog that query engines read the exports through, where there is one.
    pub partitions: Option<Arc<dyn PartitionCatalog>>,
    /// Which hours changed since they were consolidated.
    pub changes: Arc<dyn ChangeFeed>,
}

/// The services over one backend and configuration. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    pub stores: Stores,
    pub config: Arc<PipelineConfig>,
}

impl Pipeline {
    pub fn new(stores: Stores, config: PipelineConfig) -> Self {
        Pipeline {
            stores,
            config: Arc::new(config),
        }
    }
}
