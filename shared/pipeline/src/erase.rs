//! Erasing a viewer (LGPD/GDPR right to erasure).
//!
//! The viewer's silver events are found through the pseudonym index (never by scanning), deleted,
//! and the hour partitions they were in are recomputed, so no sketch counts the viewer any more.

use serde::Serialize;
use streamcube_model::pseudonym::Pseudonym;

use crate::consolidate::DayOutcome;
use crate::{Pipeline, PipelineError};

/// What an erasure removed.
#[derive(Clone, Debug, Serialize)]
pub struct Erasure {
    /// Silver events deleted.
    pub events_deleted: u64,
    /// The days recomputed, with their outcome.
    pub days: Vec<DayOutcome>,
}

impl Pipeline {
    /// Deletes every event of `viewer_id` and recomputes what they touched. Running it again is
    /// harmless: the second run finds nothing.
    #[tracing::instrument(skip_all, err)]
    pub async fn erase_viewer(&self, viewer_id: &str) -> Result<Erasure, PipelineError> {
        // Under every key of the ring: a rotation gives the viewer another pseudonym from its
        // first day on.
        let pseudonyms = self.config.pseudonymizer.every_pseudonym(viewer_id);
        self.erase_pseudonyms(&pseudonyms).await
    }

    /// [`Self::erase_viewer`] for a viewer known by pseudonym only.
    pub async fn erase_pseudonym(&self, pseudonym: &Pseudonym) -> Result<Erasure, PipelineError> {
        self.erase_pseudonyms(std::slice::from_ref(pseudonym)).await
    }

    async fn erase_pseudonyms(&self, pseudonyms: &[Pseudonym]) -> Result<Erasure, PipelineError> {
        let mut found = Vec::new();
        for pseudonym in pseudonyms {
            found.extend(self.stores.silver.viewer_events(pseudonym).await?);
        }
        let ids: Vec<String> = found.iter().map(|(id, _)| id.clone()).collect();
        let mut hours: Vec<i64> = found.iter().map(|(_, h)| *h).collect();
        hours.sort_unstable();
        hours.dedup();
        let mut events_deleted = 0;
        for chunk in ids.chunks(500) {
            events_deleted += self.stores.silver.delete(chunk).await?;
        }
        let days = if hours.is_empty() {
            Vec::new()
        } else {
            self.consolidate_hours(&hours).await?
        };
        // After the recomputation, which replaced the cells that counted the viewer.
        self.stores.silver.purge_deleted().await?;
        tracing::info!(events_deleted, partitions = hours.len(), "viewer erased");
        Ok(Erasure {
            events_deleted,
            days,
        })
    }
}
