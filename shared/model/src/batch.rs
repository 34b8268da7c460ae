//! The batch path: bronze files straight to the cube CSV of the contract.
//!
//! 1. [`Collector`] streams every input row through the reader, validation, deduplication by
//!    `event_id` (first occurrence wins) and pseudonymization, keeping only a compact [`Fact`]
//!    per accepted event, partitioned by UTC day. Rejected rows are counted per reason.
//! 2. [`write_cube_csv`] builds each day's [`Cube`] on its own worker thread and writes the days
//!    in order, so at most a few days' cells are in memory at once.
//!
//! Deduplication keeps a 128-bit keyed SipHash of each event id rather than the id itself, which
//! bounds its memory at 16 bytes per event; with a per-run random key, a collision (two different
//! ids taken for one) has a probability around n²/2¹²⁹, about 10⁻²⁵ for ten million events, and
//! cannot be forced by crafted ids.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use chrono::NaiveDate;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::cube::{Cube, CuboidSet, Fact};
use crate::event::Validator;
use crate::pseudonym::Pseudonymizer;
use crate::reader::{EventReader, Format};
use crate::report::FileReport;

/// The cube CSV header of the contract.
pub const CUBE_CSV_HEADER: &str = "day,country,device,genre,content_id,plays,watch_seconds,completed,buffering_ms,bitrate_sum,bitrate_count,unique_viewers";

const MS_PER_DAY: i64 = 86_400_000;
/// Viewer pseudonyms are cached per distinct id; past this many the cache starts over.
const VIEWER_CACHE_MAX: usize = 4_000_000;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot read `{name}`: {source}")]
    Read { name: String, source: io::Error },
    #[error("cannot write the cube: {0}")]
    Write(#[from] io::Error),
}

/// Counts for the whole run and per input.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BatchReport {
    #[serde(flatten)]
    pub total: FileReport,
    pub files: Vec<NamedReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NamedReport {
    pub file: String,
    #[serde(flatten)]
    pub report: FileReport,
}

/// Accepted events of a batch, compacted and partitioned by day.
pub struct Collector<'c> {
    catalog: &'c Catalog,
    validator: Validator,
    pseudonymizer: Pseudonymizer,
    seen: FxHashSet<u128>,
    id_keys: (std::hash::RandomState, std::hash::RandomState),
    viewers: FxHashMap<Box<str>, u64>,
    genres: Dictionary,
    contents: Dictionary,
    content_genre: Vec<u32>,
    days: BTreeMap<i64, Vec<Fact>>,
    report: BatchReport,
}

/// Global string ids used while collecting; each day's cube re-interns what it sees.
#[derive(Default)]
struct Dictionary {
    ids: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Dictionary {
    fn id(&mut self, s: &str) -> (u32, bool) {
        if let Some(id) = self.ids.get(s) {
            return (*id, false);
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        (id, true)
    }
}

impl<'c> Collector<'c> {
    pub fn new(catalog: &'c Catalog, validator: Validator, pseudonymizer: Pseudonymizer) -> Self {
        Collector {
            catalog,
            validator,
            pseudonymizer,
            seen: FxHashSet::default(),
            id_keys: Default::default(),
            viewers: FxHashMap::default(),
            genres: Dictionary::default(),
            contents: Dictionary::default(),
            content_genre: Vec::new(),
            days: BTreeMap::new(),
            report: BatchReport::default(),
        }
    }

    fn id_hash(&self, id: &str) -> u128 {
        let mut a = self.id_keys.0.build_hasher();
        let mut b = self.id_keys.1.build_hasher();
        a.write(id.as_bytes());
        b.write(id.as_bytes());
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    /// Reads one input to its end. `progress` gets the number of rows read so far, now and then.
    pub fn add_input<R: Read + Send>(
        &mut self,
        name: &str,
        format: Format,
        source: R,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), BatchError> {
        let read_err = |source| BatchError::Read {
            name: name.to_owned(),
            source,
        };
        let mut rows = EventReader::new(source, format).map_err(read_err)?;
        let mut report = FileReport::default();
        loop {
            let row = match rows.next_row() {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => return Err(read_err(e)),
            };
            report.rows += 1;
            if report.rows % 65_536 == 0 {
                progress(report.rows);
            }
            let ev = match row
                .fields
                .map_err(|e| vec![e])
                .and_then(|f| self.validator.validate(&f))
            {
                Ok(ev) => ev,
                Err(errors) => {
                    report.reject(&errors);
                    continue;
                }
            };
            let h = self.id_hash(ev.event_id);
            if !self.seen.insert(h) {
                report.duplicates += 1;
                continue;
            }
            report.accepted += 1;
            let viewer = match self.viewers.get(ev.viewer_id) {
                Some(v) => *v,
                None => {
                    if self.viewers.len() >= VIEWER_CACHE_MAX {
                        self.viewers.clear();
                    }
                    let v = self.pseudonymizer.pseudonymize(ev.viewer_id).sketch_hash();
                    self.viewers.insert(ev.viewer_id.into(), v);
                    v
                }
            };
            let (content, new) = self.contents.id(ev.content_id);
            if new {
                let (genre, _) = self.genres.id(self.catalog.genre_of(ev.content_id));
                self.content_genre.push(genre);
            }
            let genre = self
                .content_genre
                .get(content as usize)
                .copied()
                .unwrap_or(0);
            self.days
                .entry(ev.occurred_at_ms.div_euclid(MS_PER_DAY))
                .or_default()
                .push(Fact {
                    country: ev.country,
                    device: ev.device,
                    genre,
                    content,
                    viewer,
                    watch_seconds: ev.watch_seconds,
                    bitrate_kbps: ev.bitrate_kbps,
                    buffering_ms: ev.buffering_ms,
                    completed: ev.completed,
                });
        }
        progress(report.rows);
        self.report.total.absorb(&report);
        self.report.files.push(NamedReport {
            file: name.to_owned(),
            report,
        });
        Ok(())
    }

    /// The counts so far.
    pub fn report(&self) -> &BatchReport {
        &self.report
    }

    /// Number of accepted events.
    pub fn accepted(&self) -> u64 {
        self.report.total.accepted
    }

    /// The days that have events.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.days.keys().filter_map(|d| epoch_day(*d))
    }
}

fn epoch_day(d: i64) -> Option<NaiveDate> {
    chrono::DateTime::from_timestamp(d.checked_mul(86_400)?, 0).map(|t| t.date_naive())
}

/// Totals of a written cube.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CubeStats {
    pub days: u64,
    pub cells: u64,
}

/// Builds one day's cube from collected facts.
fn day_cube(set: &CuboidSet, facts: &[Fact], genres: &[Box<str>], contents: &[Box<str>]) -> Cube {
    let mut cube = Cube::new(set);
    let mut genre_map = vec![u32::MAX; genres.len()];
    let mut content_map = vec![u32::MAX; contents.len()];
    for f in facts {
        let mut local = *f;
        let g = &mut genre_map[f.genre as usize];
        if *g == u32::MAX {
            *g = cube.genre_id(&genres[f.genre as usize]);
        }
        local.genre = *g;
        let c = &mut content_map[f.content as usize];
        if *c == u32::MAX {
            *c = cube.content_id(&contents[f.content as usize]);
        }
        local.content = *c;
        cube.add(&local);
    }
    cube
}

/// Writes the cube CSV of everything collected, one day at a time on `threads` workers.
/// `progress` is told each finished day.
pub fn write_cube_csv<W: Write>(
    collector: Collector<'_>,
    set: &CuboidSet,
    threads: usize,
    out: W,
    progress: &mut dyn FnMut(NaiveDate),
) -> Result<CubeStats, BatchError> {
    let Collector {
        days,
        genres,
        contents,
        ..
    } = collector;
    let days: Vec<(i64, Vec<Fact>)> = days.into_iter().collect();
    let next = AtomicUsize::new(0);
    let threads = threads.max(1).min(days.len().max(1));
    let mut w = csv::WriterBuilder::new().from_writer(out);
    w.write_record(CUBE_CSV_HEADER.split(','))
        .map_err(io::Error::from)?;
    let mut stats = CubeStats::default();

    std::thread::scope(|s| -> Result<(), BatchError> {
        let (tx, rx) = mpsc::sync_channel::<(usize, Cube)>(threads);
        for _ in 0..threads {
            let tx = tx.clone();
            let (days, next, genres, contents) = (&days, &next, &genres.names, &contents.names);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, facts)) = days.get(i) else { break };
                    if tx
                        .send((i, day_cube(set, facts, genres, contents)))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Write days in order; hold early finishers until their turn.
        let mut pending: BTreeMap<usize, Cube> = BTreeMap::new();
        let mut want = 0;
        for (i, cube) in rx {
            pending.insert(i, cube);
            while let Some(cube) = pending.remove(&want) {
                let day = epoch_day(days[want].0).unwrap_or(NaiveDate::MIN);
                stats.cells += write_day(&mut w, day, &cube)?;
                stats.days += 1;
                progress(day);
                want += 1;
            }
        }
        Ok(())
    })?;
    w.flush()?;
    Ok(stats)
}

fn write_day<W: Write>(w: &mut csv::Writer<W>, day: NaiveDate, cube: &Cube) -> io::Result<u64> {
    let day = day.format("%Y-%m-%d").to_string();
    let mut n = 0;
    let mut nums: [itoa::Buffer; 7] = Default::default();
    for (dims, cell) in cube.sorted_cells() {
        let m = &cell.measures;
        let [a, b, c, d, e, f, g] = &mut nums;
        w.write_record([
            day.as_str(),
            dims.country.as_ref().map_or("", |c| c.as_str()),
            dims.device.map_or("", |d| d.as_str()),
            dims.genre.unwrap_or(""),
            dims.content_id.unwrap_or(""),
            a.format(m.plays),
            b.format(m.watch_seconds),
            c.format(m.completed),
            d.format(m.buffering_ms),
            e.format(m.bitrate_sum),
            f.format(m.bitrate_count),
            g.format(cell.viewers.estimate()),
        ])
        .map_err(io::Error::from)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogEntry;
    use crate::pseudonym::PseudonymKey;

    fn run(inputs: &[&str], catalog: &Catalog, set: &CuboidSet) -> (String, BatchReport) {
        let key = PseudonymKey::from_bytes("t", vec![1; 32]).expect("key");
        let mut c = Collector::new(
            catalog,
            Validator::at(i64::MAX / 4),
            Pseudonymizer::new(&key),
        );
        for (i, data) in inputs.iter().enumerate() {
            c.add_input(
                &format!("f{i}.csv"),
                Format::Csv,
                data.as_bytes(),
                &mut |_| {},
            )
            .expect("read");
        }
        let report = c.report().clone();
        let mut out = Vec::new();
        write_cube_csv(c, set, 2, &mut out, &mut |_| {}).expect("write");
        (String::from_utf8(out).expect("utf8"), report)
    }

    const H: &str = "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed\n";

    #[test]
    fn dedupes_first_wins_and_accounts_for_every_row() {
        let a = format!(
            "{H}e1,2026-11-01T10:00:00Z,v1,c1,tv,BR,100,3000,5,true\n\
             e2,2026-11-01T23:59:59Z,v2,c2,web,US,50,,,false\n\
             bad,2026-11-01T10:00:00Z,v1,c1,fridge,XX,1,,,true\n"
        );
        // e1 again with different numbers: the first one counts.
        let b = format!(
            "{H}e1,2026-11-01T10:00:00Z,v1,c1,tv,BR,999,1,1,false\ne3,2026-11-02T00:00:00Z,v1,c1,tv,BR,1,,,false\n"
        );
        let catalog: Catalog = [CatalogEntry {
            content_id: "c1".into(),
            title: "One".into(),
            genre: "drama".into(),
            release_year: None,
            duration_seconds: None,
        }]
        .into_iter()
        .collect();
        let set = CuboidSet::parse("country,genre").expect("spec");
        let (csv, report) = run(&[&a, &b], &catalog, &set);
        assert_eq!(
            (
                report.total.rows,
                report.total.accepted,
                report.total.duplicates,
                report.total.rejected
            ),
            (5, 3, 1, 1)
        );
        assert_eq!(
            report.total.rejected_by_reason.get("device:unknown_device"),
            Some(&1)
        );
        assert_eq!(
            report
                .total
                .rejected_by_reason
                .get("country:unknown_country"),
            Some(&1)
        );
        assert!(report.files.iter().all(|f| f.report.is_balanced()));
        let expected = [
            CUBE_CSV_HEADER,
            "2026-11-01,,,,,2,150,1,5,3000,1,2",
            "2026-11-01,BR,,,,1,100,1,5,3000,1,1",
            "2026-11-01,US,,,,1,50,0,0,0,0,1",
            "2026-11-01,,,drama,,1,100,1,5,3000,1,1",
            "2026-11-01,,,unknown,,1,50,0,0,0,0,1",
            "2026-11-01,BR,,drama,,1,100,1,5,3000,1,1",
            "2026-11-01,US,,unknown,,1,50,0,0,0,0,1",
            "2026-11-02,,,,,1,1,0,0,0,0,1",
            "2026-11-02,BR,,,,1,1,0,0,0,0,1",
            "2026-11-02,,,drama,,1,1,0,0,0,0,1",
            "2026-11-02,BR,,drama,,1,1,0,0,0,0,1",
        ];
        assert_eq!(csv.lines().collect::<Vec<_>>(), expected);
    }
}
