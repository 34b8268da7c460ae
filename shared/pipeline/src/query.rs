//! Answering cube queries from gold, one consistent generation per day.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use futures::StreamExt;
use serde::Serialize;
use streamcube_model::cube::{Dim, DimsRef};
use streamcube_model::event::Country;
use streamcube_model::query::{Aggregator, Bucket, Granularity, Query, QueryResult, first_hour};

use crate::ports::{CellSelect, Level};
use crate::{Pipeline, PipelineError};

/// How often a day is read again when it was republished while being read.
const MAX_REREADS: u32 = 5;

/// Hour levels read at once for a day published without its day level.
const HOUR_READS: usize = 8;

/// A query's answer with the generation each day was read at.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    #[serde(flatten)]
    pub result: QueryResult,
    /// Day to generation read; days without data are absent.
    pub generations: BTreeMap<NaiveDate, u64>,
}

impl Pipeline {
    /// Runs a query. Each day is read at the generation its manifest names; if the manifest moves
    /// while the cells are read (a consolidation published meanwhile), the day is read again, so
    /// an answer never mixes two generations of a day.
    #[tracing::instrument(skip_all, err)]
    pub async fn query(&self, q: &Query) -> Result<Answer, PipelineError> {
        let cuboid = q.cuboid(&self.config.cuboids)?;
        let gold = &self.stores.gold;
        let mut agg = Aggregator::new(q);
        // Cells the filters refuse are not even decoded, and a country filter names the only
        // parts of a block split by country that need reading.
        let keep = &|d: &DimsRef<'_>| q.matches(d);
        let select = CellSelect {
            keep,
            countries: q.filters.get(&Dim::Country).map(|values| {
                values
                    .iter()
                    .filter_map(|v| Country::parse(v).ok())
                    .collect()
            }),
        };
        let mut generations = BTreeMap::new();
        for day in q.days() {
            let mut reads = 0;
            loop {
                reads += 1;
                let Some(manifest) = gold.manifest(day).await? else {
                    break;
                };
                let mut cells = Vec::new();
                match q.granularity {
                    Granularity::Hour => {
                        for (h, g) in &manifest.hours {
                            let hour = first_hour(day) + i64::from(*h);
                            for c in gold
                                .cells_where(day, Level::Hour(*h), *g, cuboid, &select)
                                .await?
                            {
                                cells.push((Bucket::Hour(hour), c));
                            }
                        }
                    }
                    Granularity::Day | Granularity::Total if manifest.day_generation != 0 => {
                        for c in gold
                            .cells_where(day, Level::Day, manifest.day_generation, cuboid, &select)
                            .await?
                        {
                            cells.push((Bucket::Day(day), c));
                        }
                    }
                    // Published without its day level (the open day): its hours, merged by
                    // the aggregator, read a few at a time.
                    Granularity::Day | Granularity::Total => {
                        let levels: Vec<_> = manifest
                            .hours
                            .iter()
                            .map(|(h, g)| {
                                gold.cells_where(day, Level::Hour(*h), *g, cuboid, &select)
                            })
                            .collect();
                        let mut hours = futures::stream::iter(levels).buffered(HOUR_READS);
                        while let Some(read) = hours.next().await {
                            cells.extend(read?.into_iter().map(|c| (Bucket::Day(day), c)));
                        }
                    }
                }
                let again = gold.manifest(day).await?;
                if again.as_ref().map(|m| m.version) != Some(manifest.version)
                    && reads < MAX_REREADS
                {
                    continue;
                }
                for (bucket, (dims, cell)) in &cells {
                    agg.add(*bucket, dims.as_ref(), cell);
                }
                generations.insert(day, manifest.generation());
                break;
            }
        }
        Ok(Answer {
            result: agg.finish(),
            generations,
        })
    }
}
