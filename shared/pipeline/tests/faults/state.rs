//! The final state of a run, read through the real stores, and how two states differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::file::reader::{FileReader, SerializedFileReader};
use streamcube_model::catalog::CatalogEntry;
use streamcube_model::cube::{Cell, Dims};
use streamcube_model::event::SilverEvent;
use streamcube_model::report::FileReport;
use streamcube_pipeline::Stores;
use streamcube_pipeline::ports::{ChangeFeed, Level};

use crate::scenario::{Data, VERSION};
use crate::wrap::MemPartitions;

/// One published day: what its manifest says (generations aside) and its cells.
#[derive(Debug, PartialEq)]
pub struct GoldDay {
    pub hours: BTreeSet<u8>,
    pub events: u64,
    pub cuboids: String,
    pub day_cells: Vec<(Dims, Cell)>,
    pub hour_cells: BTreeMap<u8, Vec<(Dims, Cell)>>,
}

/// Everything a run leaves behind that a reader can see.
#[derive(Debug, PartialEq)]
pub struct State {
    /// Every silver event by hour, origins included.
    pub silver: BTreeMap<i64, Vec<SilverEvent>>,
    /// Every published day.
    pub gold: BTreeMap<NaiveDate, GoldDay>,
    /// Every lake object (quarantine, reports, exports).
    pub lake: BTreeMap<String, LakeObject>,
    /// The ledger's report of each bronze object.
    pub ledger: BTreeMap<String, Option<FileReport>>,
    pub catalog: Vec<CatalogEntry>,
    /// The days registered in the table catalog.
    pub partitions: Vec<NaiveDate>,
    /// Hours the change feed still holds.
    pub pending: Vec<i64>,
}

/// A lake object's content.
#[derive(Debug, PartialEq)]
pub enum LakeObject {
    Text(String),
    Parquet(ParquetFile),
}

impl LakeObject {
    fn lines(&self) -> usize {
        match self {
            LakeObject::Text(t) => t.lines().count(),
            LakeObject::Parquet(p) => p.rows().map_or(0, |r| r.len()),
        }
    }
}

/// A Parquet file, equal to another with the same rows in any order.
pub struct ParquetFile(bytes::Bytes);

impl ParquetFile {
    /// The rows, as text, sorted.
    pub fn rows(&self) -> Result<Vec<String>, parquet::errors::ParquetError> {
        let reader = SerializedFileReader::new(self.0.clone())?;
        let mut rows = reader
            .get_row_iter(None)?
            .map(|r| r.map(|r| r.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        rows.sort();
        Ok(rows)
    }
}

impl PartialEq for ParquetFile {
    fn eq(&self, other: &Self) -> bool {
        // Decoding is the slow part of a snapshot: only when the bytes differ.
        self.0 == other.0 || matches!((self.rows(), other.rows()), (Ok(a), Ok(b)) if a == b)
    }
}

impl Debug for ParquetFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParquetFile({} bytes)", self.0.len())
    }
}

fn sorted(mut cells: Vec<(Dims, Cell)>) -> Vec<(Dims, Cell)> {
    cells.sort_by(|a, b| a.0.cmp(&b.0));
    cells
}

fn err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
    move |e| format!("reading {what}: {e}")
}

/// Reads the final state through the unwrapped stores.
pub async fn snapshot(
    base: &Stores,
    feed: &dyn ChangeFeed,
    partitions: &MemPartitions,
    data: &Data,
    bronze_keys: &[&str],
) -> Result<State, String> {
    let mut silver = BTreeMap::new();
    for hour in data.hours() {
        let mut events = base
            .silver
            .hour_events(hour)
            .await
            .map_err(|e| err("silver")(&e))?;
        if !events.is_empty() {
            events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
            // Which of a file's identical rows is stored depends on which concurrent write
            // batch commits first, even without faults: compare the file, not the line.
            for e in &mut events {
                if data.repeated_in_file.contains(&e.event_id)
                    && let Some((file, _line)) = e.origin.rsplit_once(':')
                {
                    e.origin = format!("{file}:*");
                }
            }
            silver.insert(hour, events);
        }
    }

    let mut gold = BTreeMap::new();
    for day in data.days() {
        let Some(m) = base.gold.manifest(day).await.map_err(|e| err("gold")(&e))? else {
            continue;
        };
        let day_cells = base
            .gold
            .cells(day, Level::Day, m.day_generation, None)
            .await
            .map_err(|e| err("gold")(&e))?;
        let mut hour_cells = BTreeMap::new();
        for (h, g) in &m.hours {
            let cells = base
                .gold
                .cells(day, Level::Hour(*h), *g, None)
                .await
                .map_err(|e| err("gold")(&e))?;
            hour_cells.insert(*h, sorted(cells));
        }
        gold.insert(
            day,
            GoldDay {
                hours: m.hours.keys().copied().collect(),
                events: m.events,
                cuboids: m.cuboids.clone(),
                day_cells: sorted(day_cells),
                hour_cells,
            },
        );
    }

    let mut lake = BTreeMap::new();
    let objects: Vec<_> = base
        .lake
        .list(None)
        .try_collect()
        .await
        .map_err(|e| err("lake")(&e))?;
    for meta in objects {
        let bytes = base
            .lake
            .get(&meta.location)
            .await
            .map_err(|e| err("lake")(&e))?
            .bytes()
            .await
            .map_err(|e| err("lake")(&e))?;
        let path = meta.location.to_string();
        let content = if path.ends_with(".parquet") {
            LakeObject::Parquet(ParquetFile(bytes))
        } else {
            LakeObject::Text(String::from_utf8_lossy(&bytes).into_owned())
        };
        lake.insert(path, content);
    }

    let mut ledger = BTreeMap::new();
    for key in bronze_keys {
        let report = base
            .ledger
            .processed(key, VERSION)
            .await
            .map_err(|e| err("ledger")(&e))?;
        ledger.insert((*key).to_owned(), report);
    }

    let mut catalog: Vec<CatalogEntry> = base
        .catalog
        .load()
        .await
        .map_err(|e| err("catalog")(&e))?
        .entries()
        .cloned()
        .collect();
    catalog.sort_by(|a, b| a.content_id.cmp(&b.content_id));

    let pending = feed
        .pending()
        .await
        .map_err(|e| err("change feed")(&e))?
        .into_iter()
        .map(|(h, _)| h)
        .collect();

    Ok(State {
        silver,
        gold,
        lake,
        ledger,
        catalog,
        partitions: partitions.days(),
        pending,
    })
}

/// How two maps differ: keys only in one, and the keys whose values differ.
fn map_diff<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    want: &BTreeMap<K, V>,
    got: &BTreeMap<K, V>,
    out: &mut Vec<String>,
) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(k)).collect();
    let changed: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(k).is_some_and(|g| g != *v))
        .map(|(k, _)| k)
        .collect();
    if !missing.is_empty() {
        out.push(format!("{what}: missing {missing:?}"));
    }
    if !extra.is_empty() {
        out.push(format!("{what}: unexpected {extra:?}"));
    }
    if !changed.is_empty() {
        out.push(format!("{what}: differs at {changed:?}"));
    }
}

impl State {
    pub fn silver_events(&self) -> usize {
        self.silver.values().map(Vec::len).sum()
    }

    /// Cells published, day and hour levels.
    pub fn cells(&self) -> usize {
        self.gold
            .values()
            .map(|d| d.day_cells.len() + d.hour_cells.values().map(Vec::len).sum::<usize>())
            .sum()
    }

    /// Rows of the Parquet exports.
    pub fn parquet_rows(&self) -> usize {
        self.lake
            .values()
            .filter(|v| matches!(v, LakeObject::Parquet(_)))
            .map(LakeObject::lines)
            .sum()
    }

    pub fn summary(&self) -> String {
        let quarantine: usize = self
            .lake
            .iter()
            .filter(|(k, _)| k.starts_with("quarantine/"))
            .map(|(_, v)| v.lines())
            .sum();
        let (cells, parquet_rows) = (self.cells(), self.parquet_rows());
        format!(
            "{} silver events in {} hours, {} days published with {cells} cells, {} lake objects \
             ({quarantine} quarantined rows, {parquet_rows} Parquet rows), {} partitions",
            self.silver_events(),
            self.silver.len(),
            self.gold.len(),
            self.lake.len(),
            self.partitions.len()
        )
    }

    /// What differs from `other`, if anything.
    pub fn diff(&self, other: &State) -> Option<String> {
        if self == other {
            return None;
        }
        let mut out = Vec::new();
        map_diff("silver hours", &self.silver, &other.silver, &mut out);
        let first_changed = self.silver.iter().find_map(|(h, want)| {
            let got = other.silver.get(h)?;
            if want.len() != got.len() {
                return Some(format!(
                    "hour {h}: {} events, expected {}",
                    got.len(),
                    want.len()
                ));
            }
            want.iter()
                .zip(got)
                .find(|(w, g)| w != g)
                .map(|(w, g)| format!("hour {h}: {g:?}, expected {w:?}"))
        });
        out.extend(first_changed);
        for (day, want) in &self.gold {
            let Some(got) = other.gold.get(day) else {
                out.push(format!("gold {day}: not published"));
                continue;
            };
            if want.hours != got.hours || want.events != got.events || want.cuboids != got.cuboids {
                out.push(format!(
                    "gold {day}: manifest has hours {:?} and {} events, expected {:?} and {}",
                    got.hours, got.events, want.hours, want.events
                ));
            }
            if want.day_cells != got.day_cells {
                out.push(format!(
                    "gold {day}: day cells differ ({} cells, expected {})",
                    got.day_cells.len(),
                    want.day_cells.len()
                ));
            }
            map_diff(
                &format!("gold {day} hour cells"),
                &want.hour_cells,
                &got.hour_cells,
                &mut out,
            );
        }
        for day in other.gold.keys().filter(|d| !self.gold.contains_key(d)) {
            out.push(format!("gold {day}: published, expected not"));
        }
        map_diff("lake objects", &self.lake, &other.lake, &mut out);
        map_diff("ledger", &self.ledger, &other.ledger, &mut out);
        if self.catalog != other.catalog {
            out.push("catalog differs".into());
        }
        if self.partitions != other.partitions {
            out.push(format!(
                "partitions {:?}, expected {:?}",
                other.partitions, self.partitions
            ));
        }
        if self.pending != other.pending {
            out.push(format!(
                "change feed pending {:?}, expected {:?}",
                other.pending, self.pending
            ));
        }
        Some(out.join("; "))
    }
}
