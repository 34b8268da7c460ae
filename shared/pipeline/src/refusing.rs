//! Stores that refuse chosen calls, for tests of how the pipeline copes with a store that
//! throttles or a run that dies half way. Compiled only with the `conformance` feature.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use streamcube_model::cube::{Cell, Cuboid, Dims};

use crate::ports::{DayManifest, GoldStore, Level, StoreError, StoreResult};

/// A gold write, as [`RefusingGold`] shows it to its rule.
#[derive(Clone, Copy, Debug)]
pub enum GoldWrite<'a> {
    PutCells { day: NaiveDate, level: Level },
    Publish(&'a DayManifest),
}

/// Gold that answers [`StoreError::Throttled`] to the writes its rule refuses, and passes
/// everything else to `inner`.
pub struct RefusingGold {
    inner: Arc<dyn GoldStore>,
    refuse: Box<dyn Fn(GoldWrite<'_>) -> bool + Send + Sync>,
}

impl RefusingGold {
    pub fn new(
        inner: Arc<dyn GoldStore>,
        refuse: impl Fn(GoldWrite<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        RefusingGold {
            inner,
            refuse: Box::new(refuse),
        }
    }
}

#[async_trait]
impl GoldStore for RefusingGold {
    async fn manifest(&self, day: NaiveDate) -> StoreResult<Option<DayManifest>> {
        self.inner.manifest(day).await
    }

    async fn put_cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cells: &[(Dims, Cell)],
    ) -> StoreResult<()> {
        if (self.refuse)(GoldWrite::PutCells { day, level }) {
            return Err(StoreError::Throttled);
        }
        self.inner.put_cells(day, level, generation, cells).await
    }

    async fn publish(&self, manifest: &DayManifest, expected_version: u64) -> StoreResult<()> {
        if (self.refuse)(GoldWrite::Publish(manifest)) {
            return Err(StoreError::Throttled);
        }
        self.inner.publish(manifest, expected_version).await
    }

    async fn cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Option<Cuboid>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        self.inner.cells(day, level, generation, cuboid).await
    }

    async fn stale_generations(
        &self,
        day: NaiveDate,
        keep: &[(Level, u64)],
    ) -> StoreResult<Vec<(Level, u64)>> {
        self.inner.stale_generations(day, keep).await
    }

    async fn delete_cells(&self, day: NaiveDate, level: Level, generation: u64) -> StoreResult<()> {
        self.inner.delete_cells(day, level, generation).await
    }
}
