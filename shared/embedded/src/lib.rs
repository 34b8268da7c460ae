//! The embedded backend: every port on one SQLite database (WAL mode, so several local processes
//! share it) and two local directories for objects, all under one data directory:
//!
//! ```text
//! <data dir>/streamcube.db   silver events, change feed, gold cells and manifests, catalog, ledger
//! <data dir>/bronze/         landing zone of raw files
//! <data dir>/lake/           quarantine/, reports/, exports/
//! ```
//!
//! Nothing to install beyond the Rust toolchain: SQLite is compiled in.

mod idfilter;
mod idmap;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use streamcube_pipeline::Stores;
use streamcube_pipeline::ports::ChangeFeed;

pub use sqlite::SqliteStore;

/// Events per silver write when streaming files into this backend: SQLite writes the pages a
/// transaction dirtied once per commit, and silver's keys are random, so a commit dirties about
/// as many pages whatever its size: 300,000 rows took 12.1 s in batches of 20,000 and 7.2 s in
/// batches of 100,000 (`bench/bronze_vs_pandas.sh --rows 300000`), for 30 MiB more memory.
pub const WRITE_BATCH: usize = 100_000;

/// The database file inside the data directory.
pub const DB_FILE: &str = "streamcube.db";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot create the data directory `{path}`: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database `{path}`: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot open the object directory `{path}`: {source}")]
    Objects {
        path: PathBuf,
        source: object_store::Error,
    },
}

/// The embedded backend opened on a data directory.
#[derive(Clone)]
pub struct EmbeddedBackend {
    dir: PathBuf,
    store: Arc<SqliteStore>,
    bronze: Arc<LocalFileSystem>,
    lake: Arc<LocalFileSystem>,
}

impl EmbeddedBackend {
    /// Opens (creating if needed) the backend in `dir`.
    pub fn open(dir: &Path) -> Result<Self, EmbeddedError> {
        let mkdir = |p: PathBuf| {
            std::fs::create_dir_all(&p).map_err(|source| EmbeddedError::Dir {
                path: p.clone(),
                source,
            })?;
            Ok::<_, EmbeddedError>(p)
        };
        let dir = mkdir(dir.to_path_buf())?;
        let bronze_dir = mkdir(dir.join("bronze"))?;
        let lake_dir = mkdir(dir.join("lake"))?;
        let db = dir.join(DB_FILE);
        let store = SqliteStore::open(&db).map_err(|source| EmbeddedError::Db {
            path: db.clone(),
            source,
        })?;
        let local = |p: &PathBuf| {
            LocalFileSystem::new_with_prefix(p)
                .map(|fs| Arc::new(fs.with_automatic_cleanup(true)))
                .map_err(|source| EmbeddedError::Objects {
                    path: p.clone(),
                    source,
                })
        };
        Ok(EmbeddedBackend {
            bronze: local(&bronze_dir)?,
            lake: local(&lake_dir)?,
            dir,
            store: Arc::new(store),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The adapters, for [`streamcube_pipeline::Pipeline::new`].
    pub fn stores(&self) -> Stores {
        Stores {
            silver: self.store.clone(),
            gold: self.store.clone(),
            catalog: self.store.clone(),
            ledger: self.store.clone(),
            bronze: self.bronze.clone(),
            lake: self.lake.clone(),
            // No table catalog locally: the exports are plain files.
            partitions: None,
            changes: self.store.clone(),
        }
    }

    /// Silver's change feed (which hours need consolidating).
    pub fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        self.store.clone()
    }

    /// The SQLite store itself.
    pub fn sqlite(&self) -> &Arc<SqliteStore> {
        &self.store
    }
}
