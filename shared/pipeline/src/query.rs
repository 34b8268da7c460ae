//! Answering cube queries from gold, one consistent generation per day.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use serde::Serialize;
use streamcube_model::cube::{Cell, Cuboid, Dim, Dims, DimsRef};
use streamcube_model::event::Country;
use streamcube_model::query::{Aggregator, Bucket, Granularity, Query, QueryResult, first_hour};

use crate::ports::{CellSelect, Level};
use crate::{Pipeline, PipelineError};

/// How often a day is read again when it was republished while being read.
const MAX_REREADS: u32 = 5;

/// Hour levels of a day read at once (hourly answers, and a day published without its day
/// level).
const HOUR_READS: usize = 8;

/// Days read at once, at most. On AWS each day costs a few round trips (its manifest twice, the
/// record of its blocks, the queries of their keys), so a 30-day trend read one day after the
/// other waited for some 120 of them.
pub const DAY_READS: usize = 8;

/// The cells of days read ahead of the one being added to the answer may take this much memory,
/// at most, at the size of the largest day read so far: a wide cuboid of a busy day takes
/// hundreds of MB, and cube-query has 1,024 MB. Until a day with cells has been read, days are
/// read one at a time.
pub const READ_AHEAD_BYTES: usize = 128 << 20;

/// Days read at once when the largest day read so far held `day_bytes` of cells.
#[must_use]
pub fn days_at_once(day_bytes: usize) -> usize {
    (READ_AHEAD_BYTES / day_bytes.max(1)).clamp(1, DAY_READS)
}

/// The cells of one day at one generation.
struct DayRead {
    generation: u64,
    cells: Vec<(Bucket, (Dims, Cell))>,
}

impl DayRead {
    /// Memory the cells hold, roughly: the cells themselves and their sketches' heap blocks
    /// (the texts of the dimensions are shared with the store's dictionaries).
    fn bytes(&self) -> usize {
        self.cells.len() * std::mem::size_of::<(Bucket, (Dims, Cell))>()
            + self
                .cells
                .iter()
                .map(|(_, (_, c))| c.viewers.heap_bytes())
                .sum::<usize>()
    }
}

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
    /// an answer never mixes two generations of a day. Days are read several at a time (see
    /// [`days_at_once`]) and added to the answer in order.
    #[tracing::instrument(skip_all, err)]
    pub async fn query(&self, q: &Query) -> Result<Answer, PipelineError> {
        let cuboid = q.cuboid(&self.config.cuboids)?;
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
        let mut days = q.days();
        let mut reading = FuturesOrdered::new();
        // The largest day read so far, once one had cells.
        let mut largest: Option<usize> = None;
        loop {
            let at_once = largest.map_or(1, days_at_once);
            while reading.len() < at_once {
                let Some(day) = days.next() else { break };
                reading.push_back(self.read_day(q, day, cuboid, &select));
            }
            let Some(read) = reading.next().await else {
                break;
            };
            let Some((day, read)) = read? else { continue };
            largest = Some(largest.unwrap_or(0).max(read.bytes()));
            for (bucket, (dims, cell)) in &read.cells {
                agg.add(*bucket, dims.as_ref(), cell);
            }
            generations.insert(day, read.generation);
        }
        Ok(Answer {
            result: agg.finish(),
            generations,
        })
    }

    /// The cells of `day` the query needs, all of one generation; `None` if the day was never
    /// published.
    async fn read_day(
        &self,
        q: &Query,
        day: NaiveDate,
        cuboid: Cuboid,
        select: &CellSelect<'_>,
    ) -> Result<Option<(NaiveDate, DayRead)>, PipelineError> {
        let gold = &self.stores.gold;
        let mut reads = 0;
        loop {
            reads += 1;
            let Some(manifest) = gold.manifest(day).await? else {
                return Ok(None);
            };
            let mut cells = Vec::new();
            match q.granularity {
                Granularity::Day | Granularity::Total if manifest.day_generation != 0 => {
                    for c in gold
                        .cells_where(day, Level::Day, manifest.day_generation, cuboid, select)
                        .await?
                    {
                        cells.push((Bucket::Day(day), c));
                    }
                }
                // Hourly answers, and a day published without its day level (the open day),
                // whose hours the aggregator merges: the hours, a few at a time.
                granularity => {
                    let levels: Vec<_> = manifest
                        .hours
                        .iter()
                        .map(|(h, g)| async move {
                            let bucket = match granularity {
                                Granularity::Hour => Bucket::Hour(first_hour(day) + i64::from(*h)),
                                Granularity::Day | Granularity::Total => Bucket::Day(day),
                            };
                            gold.cells_where(day, Level::Hour(*h), *g, cuboid, select)
                                .await
                                .map(|cells| (bucket, cells))
                        })
                        .collect();
                    let mut hours = futures::stream::iter(levels).buffered(HOUR_READS);
                    while let Some(read) = hours.next().await {
                        let (bucket, read) = read?;
                        cells.extend(read.into_iter().map(|c| (bucket, c)));
                    }
                }
            }
            let again = gold.manifest(day).await?;
            if again.as_ref().map(|m| m.version) != Some(manifest.version) && reads < MAX_REREADS {
                continue;
            }
            return Ok(Some((
                day,
                DayRead {
                    generation: manifest.generation(),
                    cells,
                },
            )));
        }
    }
}
