//! Deterministic synthetic playback data in the bronze contract.
//!
//! This crate makes the data that the demo, the tests and the benchmarks feed
//! to streamcube: a stream of playback events (bronze CSV, or JSON Lines) and
//! the content catalog they refer to, shaped like a real streaming service's:
//!
//! * **content** is drawn by popularity, Zipf with s = 1.1 over the titles;
//!   a share of plays ([`GenConfig::uncatalogued_rate`]) is for titles the
//!   catalog does not list yet (ids just past the catalog's numbering);
//! * **viewers** follow a three-tier activity mix (1% of viewers make 10% of
//!   the plays, the next 19% make 50%, the remaining 80% make 40%; uniform
//!   within a tier). Each viewer has a home country and a favourite device,
//!   used for 97% and 75% of their plays respectively;
//! * **countries** are 40 assigned ISO 3166-1 codes, Zipf (s = 1) with BR and
//!   then US most frequent ([`COUNTRIES`]); **devices** are weighted
//!   mobile > tv > web > tablet > console ([`DEVICE_WEIGHTS`]);
//! * **time** spreads over [`GenConfig::days`] days from
//!   [`GenConfig::start`] with an evening-heavy daily curve and busier
//!   weekends, at whole seconds. The file comes out in time order except for
//!   1% late arrivals (up to 3 hours late). About 1.5% of timestamps carry
//!   milliseconds, 1% are written in `+01:00` and 0.5% in `-03:00`;
//! * **measures**: ~30% of plays complete (watching 90-100% of the title),
//!   4% of the rest are failed starts (0 s), the rest stop early more often
//!   than late, so `watch_seconds` is mostly below 7200; bitrate depends on
//!   the device and is absent in ~5% of rows, buffering is 0 in ~45%, absent
//!   in ~5%, exponential otherwise with rare long stalls;
//! * **duplicates**: a share ([`GenConfig::duplicate_rate`]) of the rows are
//!   byte-identical copies of one of the 4096 previous original rows, as an
//!   at-least-once delivery would produce;
//! * **bad rows** ([`GenConfig::bad_rows`]) break one contract rule each, in
//!   the fixed cycle of [`BadRowKind::ALL`], spread evenly through the file.
//!
//! Everything is a pure function of the [`GenConfig`]: the same configuration
//! gives the same bytes, run after run and machine after machine (the crate
//! carries its own random number generator, so a `rand` upgrade changes
//! nothing; only the platform's `ln`/`powf` could, in the last bit, on an
//! exotic target). A test pins the bytes of a small file. The good rows do not depend on `bad_rows`:
//! removing the bad lines of a file gives the file generated with
//! `bad_rows = 0`. Events are streamed; memory stays a few MiB whatever the
//! number of events (plus 4 bytes per catalog title).
//!
//! ```
//! let cfg = streamcube_datagen::GenConfig { events: 1_000, ..Default::default() };
//! let mut csv = Vec::new();
//! let summary = streamcube_datagen::write_events(&cfg, &mut csv, |_rows| {}).unwrap();
//! assert_eq!(summary.rows, 1_000);
//! assert!(csv.starts_with(b"event_id,occurred_at,"));
//! ```

mod bad;
mod format;
mod model;
mod rng;

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use bad::BadRowKind;
pub use format::EVENTS_HEADER;
pub use model::{CONTENT_ZIPF_S, COUNTRIES, DEVICE_WEIGHTS, DEVICES, GENRES};

use format::{fields, push_csv_fields, push_csv_row, push_json_fields};
use model::{Event, Model, genre_cdf, genre_name, title_info};
use rng::Rng64;

/// The catalog CSV header, in contract order (with the trailing newline).
pub const CATALOG_HEADER: &str = "content_id,title,genre,release_year,duration_seconds\n";

/// How many earlier original rows a duplicate may copy from.
pub const DUPLICATE_WINDOW: usize = 4096;

/// What to generate. `Default` is the benchmark's data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenConfig {
    /// Well-formed event rows to write, duplicates included (bad rows come on
    /// top).
    pub events: u64,
    /// Number of days the events span, starting at `start` (UTC).
    pub days: u32,
    /// First day of the range (UTC).
    pub start: NaiveDate,
    /// Number of distinct viewers that may appear (`v000001`, ...).
    pub viewers: u32,
    /// Number of titles in the catalog (`c000001`, ...).
    pub titles: u32,
    /// Number of genres the catalog uses (names from [`GENRES`]).
    pub genres: u32,
    /// Share of the well-formed rows that are exact copies of an earlier row.
    pub duplicate_rate: f64,
    /// Share of the events whose content is missing from the catalog.
    pub uncatalogued_rate: f64,
    /// Number of deliberately malformed rows to mix in.
    pub bad_rows: u32,
    /// Seed of everything.
    pub seed: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            events: 1_000_000,
            days: 7,
            start: NaiveDate::from_ymd_opt(2026, 11, 1).expect("valid date"),
            viewers: 200_000,
            titles: 5_000,
            genres: 12,
            duplicate_rate: 0.005,
            uncatalogued_rate: 0.02,
            bad_rows: 0,
            seed: 42,
        }
    }
}

impl GenConfig {
    /// Checks the configuration; the writers call it first.
    pub fn validate(&self) -> Result<(), GenError> {
        let fail = |m: &str| Err(GenError::InvalidConfig(m.to_string()));
        if !(1..=36_600).contains(&self.days) {
            return fail("days must be between 1 and 36600");
        }
        if !(1970..=9000).contains(&chrono::Datelike::year(&self.start)) {
            return fail("start must be between the years 1970 and 9000");
        }
        if self.viewers == 0 {
            return fail("viewers must be at least 1");
        }
        if !(1..=50_000_000).contains(&self.titles) {
            return fail("titles must be between 1 and 50000000");
        }
        if !(1..=1_000).contains(&self.genres) {
            return fail("genres must be between 1 and 1000");
        }
        for (name, rate) in [
            ("duplicate_rate", self.duplicate_rate),
            ("uncatalogued_rate", self.uncatalogued_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(GenError::InvalidConfig(format!(
                    "{name} must be between 0 and 1, got {rate}"
                )));
            }
        }
        if self.duplicate_rate >= 1.0 && self.events > 0 {
            return fail("duplicate_rate must be below 1");
        }
        Ok(())
    }

    /// The first day after the range.
    pub fn end(&self) -> NaiveDate {
        self.start + chrono::Days::new(u64::from(self.days))
    }

    /// The generated instants lie in `[from, to)`.
    pub fn time_range(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        (midnight(self.start), midnight(self.end()))
    }

    /// The genre names the catalog uses.
    pub fn genre_names(&self) -> Vec<String> {
        (0..self.genres).map(genre_name).collect()
    }
}

/// What [`write_events`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenSummary {
    /// Every data line written (header excluded): `valid + bad_rows`.
    pub rows: u64,
    /// Well-formed lines, duplicates included (`= GenConfig::events`).
    pub valid: u64,
    /// Well-formed lines that repeat an earlier line exactly; the distinct
    /// events are `valid - duplicates`.
    pub duplicates: u64,
    /// Malformed lines.
    pub bad_rows: u64,
    /// Well-formed lines (duplicates included) whose `content_id` is not in
    /// the catalog.
    pub uncatalogued: u64,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The [`GenConfig`] is out of range.
    #[error("invalid generator configuration: {0}")]
    InvalidConfig(String),
    /// Writing to the output failed.
    #[error("writing generated data failed: {0}")]
    Io(#[from] std::io::Error),
    /// The CSV writer failed (catalog).
    #[error("writing the generated catalog failed: {0}")]
    Csv(#[from] csv::Error),
}

#[derive(Serialize)]
struct CatalogRow<'a> {
    content_id: String,
    title: String,
    genre: &'a str,
    release_year: i32,
    duration_seconds: u32,
}

/// Writes the catalog CSV (header included) and returns the number of data
/// rows, which is `cfg.titles`. Titles containing a comma are quoted.
pub fn write_catalog<W: Write>(cfg: &GenConfig, w: W) -> Result<u32, GenError> {
    cfg.validate()?;
    let genres = cfg.genre_names();
    let gcdf = genre_cdf(cfg.genres);
    let year = chrono::Datelike::year(&cfg.start);
    let mut out = csv::Writer::from_writer(w);
    for n in 1..=cfg.titles {
        let info = title_info(cfg.seed, n, &gcdf, year);
        out.serialize(CatalogRow {
            content_id: format!("c{n:06}"),
            title: info.title,
            genre: &genres[info.genre as usize],
            release_year: info.release_year,
            duration_seconds: info.duration_seconds,
        })?;
    }
    out.flush()?;
    Ok(cfg.titles)
}

/// Writes the events as bronze CSV (header included).
///
/// `progress` is called with the number of rows written so far, every 65,536
/// rows and once at the end. The writer is buffered internally (writes of
/// about 256 KiB), so a bare `File` is fine; wrap it in a compressor for
/// gzip.
pub fn write_events<W: Write>(
    cfg: &GenConfig,
    w: W,
    progress: impl FnMut(u64),
) -> Result<GenSummary, GenError> {
    write_rows(cfg, w, progress, Format::Csv)
}

/// Writes the same events as [`write_events`], one JSON object per line with
/// the contract's field names: numbers are JSON numbers, `completed` a JSON
/// bool and absent optional values `null`. Bad rows break the same rules
/// (the 0xFF byte is written raw, so that line is not valid UTF-8), except
/// [`BadRowKind::ExtraField`], which is a line of malformed JSON here.
pub fn write_events_jsonl<W: Write>(
    cfg: &GenConfig,
    w: W,
    progress: impl FnMut(u64),
) -> Result<GenSummary, GenError> {
    write_rows(cfg, w, progress, Format::JsonLines)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

const FLUSH_AT: usize = 256 * 1024;
const PROGRESS_EVERY: u64 = 1 << 16;
/// Id inputs of bad rows have the top bit set, so they never meet good ones.
const BAD_ID_BIT: u64 = 1 << 63;

fn write_rows<W: Write>(
    cfg: &GenConfig,
    mut w: W,
    mut progress: impl FnMut(u64),
    fmt: Format,
) -> Result<GenSummary, GenError> {
    cfg.validate()?;
    let model = Model::new(cfg)?;
    let mut plan = Plan::new(cfg);
    let mut ring = Ring::new(DUPLICATE_WINDOW);
    let mut out: Vec<u8> = Vec::with_capacity(FLUSH_AT + 4096);
    let mut line: Vec<u8> = Vec::with_capacity(512);
    let mut summary = GenSummary::default();
    if fmt == Format::Csv {
        out.extend_from_slice(EVENTS_HEADER.as_bytes());
    }
    while let Some(item) = plan.next(&model) {
        match item {
            Item::Original(ev) => {
                line.clear();
                match fmt {
                    Format::Csv => push_csv_row(&mut line, &ev, &model),
                    Format::JsonLines => push_json_fields(&mut line, &fields(&ev, &model)),
                }
                out.extend_from_slice(&line);
                ring.push(&line, ev.uncatalogued);
                summary.valid += 1;
                summary.uncatalogued += u64::from(ev.uncatalogued);
            }
            Item::Duplicate { back } => {
                let (bytes, uncatalogued) = ring.back(back);
                out.extend_from_slice(bytes);
                summary.valid += 1;
                summary.duplicates += 1;
                summary.uncatalogued += u64::from(uncatalogued);
            }
            Item::Bad(kind, ev) => {
                let mut f = fields(&ev, &model);
                kind.apply(&mut f);
                match fmt {
                    Format::Csv => push_csv_fields(&mut out, &f),
                    Format::JsonLines => {
                        push_json_fields(&mut out, &f);
                        if kind == BadRowKind::ExtraField {
                            // Unknown keys are allowed in JSON: cut the object
                            // short instead (malformed JSON).
                            out.truncate(out.len() - 2);
                            out.push(b'\n');
                        }
                    }
                }
                summary.bad_rows += 1;
            }
        }
        summary.rows += 1;
        if out.len() >= FLUSH_AT {
            w.write_all(&out)?;
            out.clear();
        }
        if summary.rows % PROGRESS_EVERY == 0 {
            progress(summary.rows);
        }
    }
    w.write_all(&out)?;
    w.flush()?;
    progress(summary.rows);
    Ok(summary)
}

/// One line to write.
enum Item {
    Original(Event),
    /// A copy of the `back`-th most recent original (1 = the last one).
    Duplicate {
        back: usize,
    },
    Bad(BadRowKind, Event),
}

/// Decides, row by row, what comes next. Good rows draw from `rng` only and
/// bad rows from `bad_rng` only, so the good rows ignore `bad_rows`.
struct Plan {
    events: u64,
    bad_rows: u64,
    duplicate_rate: f64,
    rng: Rng64,
    bad_rng: Rng64,
    /// Good rows emitted so far.
    pos: u64,
    originals: u64,
    bad_done: u64,
}

impl Plan {
    fn new(cfg: &GenConfig) -> Self {
        Self {
            events: cfg.events,
            bad_rows: u64::from(cfg.bad_rows),
            duplicate_rate: cfg.duplicate_rate,
            rng: Rng64::new(cfg.seed),
            bad_rng: Rng64::new(cfg.seed ^ 0xbad0_bad0_bad0_bad0),
            pos: 0,
            originals: 0,
            bad_done: 0,
        }
    }

    /// Bad row `k` goes before good row `(k + 1) * events / (bad_rows + 1)`.
    fn bad_due(&self) -> bool {
        self.bad_done < self.bad_rows
            && (u128::from(self.bad_done + 1) * u128::from(self.events)
                / u128::from(self.bad_rows + 1))
                <= u128::from(self.pos)
    }

    fn position(&self) -> f64 {
        if self.events == 0 {
            0.5
        } else {
            self.pos.min(self.events - 1) as f64 / self.events as f64
        }
    }

    fn next(&mut self, model: &Model) -> Option<Item> {
        if self.bad_due() || (self.pos >= self.events && self.bad_done < self.bad_rows) {
            let q = self.position() + self.bad_rng.unit() / self.events.max(1) as f64;
            let ev = model.sample(&mut self.bad_rng, q, BAD_ID_BIT | self.bad_done);
            let kind = BadRowKind::nth(self.bad_done);
            self.bad_done += 1;
            return Some(Item::Bad(kind, ev));
        }
        if self.pos >= self.events {
            return None;
        }
        let q = (self.pos as f64 + self.rng.unit()) / self.events as f64;
        self.pos += 1;
        if self.originals > 0 && self.rng.chance(self.duplicate_rate) {
            let window = self.originals.min(DUPLICATE_WINDOW as u64);
            let back = 1 + self.rng.below(window) as usize;
            return Some(Item::Duplicate { back });
        }
        let ev = model.sample(&mut self.rng, q, self.originals);
        self.originals += 1;
        Some(Item::Original(ev))
    }
}

/// The last `cap` original lines, for duplicates.
struct Ring {
    cap: usize,
    slots: Vec<(Vec<u8>, bool)>,
    pushed: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            slots: Vec::with_capacity(cap),
            pushed: 0,
        }
    }

    fn push(&mut self, line: &[u8], uncatalogued: bool) {
        let i = self.pushed % self.cap;
        if i == self.slots.len() {
            self.slots.push((line.to_vec(), uncatalogued));
        } else {
            let slot = &mut self.slots[i];
            slot.0.clear();
            slot.0.extend_from_slice(line);
            slot.1 = uncatalogued;
        }
        self.pushed += 1;
    }

    /// The `back`-th most recent line (1-based, at most `min(pushed, cap)`).
    fn back(&self, back: usize) -> (&[u8], bool) {
        let (bytes, unc) = &self.slots[(self.pushed - back) % self.cap];
        (bytes, *unc)
    }
}
