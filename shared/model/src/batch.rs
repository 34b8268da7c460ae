//! The batch path: bronze files straight to the cube CSV of the contract.
//!
//! 1. [`Collector`] streams every input row through the reader, validation, deduplication by
//!    `event_id` (first occurrence wins) and pseudonymization, keeping only a compact [`Fact`]
//!    per accepted event, partitioned by UTC day. Rejected rows are counted per reason.
//! 2. [`write_cube_csv`] builds each day's [`Cube`] on its own worker thread (the last day on
//!    all of them) and writes the days in order, so at most a few days' cells are in memory at
//!    once. Genre is derived from the title rather than built as a dimension of its own (see
//!    [`CuboidSet::genre_derived`]): a batch joins one catalog, so a title has one genre.
//!
//! Deduplication keeps 96 bits of a keyed SipHash of each event id rather than the id itself,
//! with the event's position in the input: 16 bytes per event. With a per-run random key, a
//! collision (two different ids taken for one) has a probability around n²/2⁹⁷, below 10⁻¹⁵ for
//! ten million events, and cannot be forced by crafted ids. Ids are not looked up one by one as
//! they come (a random probe into a table of millions, a cache miss each): an input's records
//! are appended as they come and, once it is read, sorted and checked against the sorted
//! records of the inputs before it, on all workers (see `SeenIds`).

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};

use chrono::NaiveDate;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::cube::{Cell, CellIds, CellOrder, Cube, CubeSpace, CuboidSet, Dims, DimsRef, Fact};
use crate::event::{Device, Validator};
use crate::pseudonym::Pseudonymizer;
use crate::reader::{EventReader, Format, MAX_ROW_BYTES};
use crate::report::FileReport;

/// The cube CSV header of the contract.
pub const CUBE_CSV_HEADER: &str = "day,country,device,genre,content_id,plays,watch_seconds,completed,buffering_ms,bitrate_sum,bitrate_count,unique_viewers";

const MS_PER_DAY: i64 = 86_400_000;

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
    workers: usize,
    seen: SeenIds,
    /// Position of the next valid event, over all inputs.
    events: u32,
    id_keys: (std::hash::RandomState, std::hash::RandomState),
    genres: Dictionary,
    contents: Dictionary,
    content_genre: Vec<u32>,
    days: BTreeMap<i64, Day>,
    /// Positions of the events found to repeat an earlier id, sorted: dropped from each day as
    /// it is built, on the build workers, rather than by one thread at the end of each input.
    repeats: Vec<u32>,
    report: BatchReport,
}

/// A day's valid events, in input order, with their positions (to drop repeats once found).
#[derive(Default)]
struct Day {
    facts: Vec<Fact>,
    positions: Vec<u32>,
}

/// The event ids seen, as records of 96 bits of the id's hash above the event's position (so
/// that, in record order, an id's first occurrence comes first). Records of the inputs already
/// read are `settled`: sorted (an id's repeats stay, next to its first record: dropping them
/// would cost a pass over all the records for a few in a thousand). The input being read
/// appends to `fresh`, which [`SeenIds::settle`] sorts (a radix pass on the top bits, then each
/// of [`ID_PARTITIONS`] small partitions on its own, in cache, both on all workers), checks and
/// merges in. Both are single large allocations, handed back to the system once freed.
#[derive(Default)]
struct SeenIds {
    settled: Vec<u128>,
    fresh: Vec<u128>,
}

const ID_PARTITIONS: usize = 1024;
const ID_PARTITION_SHIFT: u32 = 128 - ID_PARTITIONS.trailing_zeros();
const POSITION_MASK: u128 = 0xffff_ffff;

fn id_partition(record: u128) -> usize {
    // The shift leaves the top 10 bits: below ID_PARTITIONS.
    (record >> ID_PARTITION_SHIFT) as usize
}

impl SeenIds {
    fn reserve(&mut self, ids: usize) {
        self.fresh.reserve(ids);
    }

    #[inline]
    fn push(&mut self, id_hash: u128, position: u32) {
        self.fresh
            .push((id_hash & !POSITION_MASK) | u128::from(position));
    }

    /// Settles the records pushed since the last call, on `threads` threads, and returns the
    /// positions of the repeats among them (sorted): an id settled before, or seen earlier in
    /// the same input.
    fn settle(&mut self, threads: usize) -> Vec<u32> {
        let fresh = std::mem::take(&mut self.fresh);
        if fresh.is_empty() {
            return Vec::new();
        }
        // Counting sort by partition: starts[p]..starts[p + 1] is partition p.
        let mut starts = vec![0usize; ID_PARTITIONS + 1];
        for r in &fresh {
            starts[id_partition(*r) + 1] += 1;
        }
        for p in 1..starts.len() {
            starts[p] += starts[p - 1];
        }
        // Zeroed memory comes untouched from the system: the threads below fault it in.
        let mut sorted = vec![0u128; fresh.len()];
        // Each thread takes a run of whole partitions, and moves their records there itself
        // (reading all the records, which costs less than moving them on one thread).
        let per_thread = ID_PARTITIONS.div_ceil(threads.max(1));
        let (records, settled) = (&fresh, &self.settled);
        let mut repeats: Vec<u32> = std::thread::scope(|s| {
            let mut rest: &mut [u128] = &mut sorted;
            let mut handles = Vec::new();
            for first in (0..ID_PARTITIONS).step_by(per_thread) {
                let bounds = &starts[first..=(first + per_thread).min(ID_PARTITIONS)];
                let (mine, tail) =
                    std::mem::take(&mut rest).split_at_mut(bounds[bounds.len() - 1] - bounds[0]);
                rest = tail;
                handles.push(s.spawn(move || {
                    let mut next: Vec<usize> = bounds.iter().map(|b| b - bounds[0]).collect();
                    let last = first + bounds.len() - 1;
                    for r in records {
                        let p = id_partition(*r);
                        if (first..last).contains(&p) {
                            let at = &mut next[p - first];
                            mine[*at] = *r;
                            *at += 1;
                        }
                    }
                    mark_repeats(mine, bounds, first, settled)
                }));
            }
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        drop(fresh);
        repeats.sort_unstable();
        if self.settled.is_empty() {
            self.settled = sorted;
        } else {
            self.settled = merge_sorted(&self.settled, &sorted);
        }
        repeats
    }
}

/// Sorts each partition of `records` (partition `first + i` spans `bounds[i]..bounds[i + 1]`,
/// offsets into the whole of which `records` is a part) and returns the positions of the
/// records whose id is earlier in their partition or in `settled`.
fn mark_repeats(
    records: &mut [u128],
    bounds: &[usize],
    first: usize,
    settled: &[u128],
) -> Vec<u32> {
    let id = |r: u128| r >> 32;
    let base = bounds[0];
    let mut repeats = Vec::new();
    for (i, w) in bounds.windows(2).enumerate() {
        let part = &mut records[w[0] - base..w[1] - base];
        part.sort_unstable();
        // The settled records of the same partition.
        let p = first + i;
        let old = &settled[settled.partition_point(|r| id_partition(*r) < p)
            ..settled.partition_point(|r| id_partition(*r) <= p)];
        let mut last = None;
        for r in part.iter() {
            let repeat =
                last == Some(id(*r)) || old.binary_search_by(|o| id(*o).cmp(&id(*r))).is_ok();
            last = Some(id(*r));
            if repeat {
                repeats.push((*r & POSITION_MASK) as u32);
            }
        }
    }
    repeats
}

/// The union of two sorted runs, sorted.
fn merge_sorted(a: &[u128], b: &[u128]) -> Vec<u128> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Global string ids used while collecting; each day's cube re-interns what it sees.
#[derive(Default)]
struct Dictionary {
    /// Names of up to 15 bytes (content ids are short), packed with their length into one
    /// integer: looked up once per row without following a pointer or comparing bytes.
    short: FxHashMap<u128, u32>,
    long: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

/// A string of at most 15 bytes and its length as one integer; distinct strings, distinct
/// integers.
fn pack_short(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    let len = u8::try_from(b.len()).ok().filter(|n| *n < 16)?;
    let mut buf = [0u8; 16];
    buf[..b.len()].copy_from_slice(b);
    buf[15] = len;
    Some(u128::from_le_bytes(buf))
}

impl Dictionary {
    /// A dictionary whose id 0 is the empty name (rolled up, in a cube's dictionaries).
    fn with_empty() -> Dictionary {
        let mut d = Dictionary::default();
        d.id("");
        d
    }

    /// The CSV field texts of the names, by id.
    fn field_texts(&self) -> FieldTexts {
        FieldTexts::new(self.names.iter().map(|n| &**n))
    }

    fn id(&mut self, s: &str) -> (u32, bool) {
        let next = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let (id, new) = match pack_short(s) {
            Some(key) => {
                let id = *self.short.entry(key).or_insert(next);
                (id, id == next)
            }
            None => match self.long.get(s) {
                Some(id) => (*id, false),
                None => {
                    self.long.insert(s.into(), next);
                    (next, true)
                }
            },
        };
        if new {
            self.names.push(s.into());
        }
        (id, new)
    }
}

/// Bytes handed to a worker: whole records, numbered in input order.
struct Chunk {
    seq: u64,
    bytes: Vec<u8>,
}

/// A worker's result for one chunk. Content ids are the worker's own; `new_contents` lists the
/// names its dictionary gained with this chunk, in id order.
struct Parsed {
    seq: u64,
    worker: usize,
    facts: Vec<(u128, i64, Fact)>,
    new_contents: Vec<Box<str>>,
    report: FileReport,
}

const CHUNK_BYTES: usize = 1 << 20;

/// Cuts a stream into chunks of whole records. For CSV, a line break ends a record only outside
/// quotes; quote parity decides that exactly for RFC 4180 (an escaped `""` flips it twice). A
/// record that runs past [`MAX_ROW_BYTES`] is cut at the next line break, as the sequential
/// reader does.
struct Chunker<R: BufRead> {
    src: R,
    csv: bool,
    chunk_bytes: usize,
    carry: Vec<u8>,
    in_quotes: bool,
    scanned: usize,
    seq: u64,
}

impl<R: BufRead> Chunker<R> {
    /// The CSV header record, with its line break.
    fn header(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.boundary() {
                let rest = self.carry.split_off(end);
                let header = std::mem::replace(&mut self.carry, rest);
                self.scanned = 0;
                self.in_quotes = false;
                return Ok(header);
            }
            if !self.fill()? {
                return Ok(std::mem::take(&mut self.carry));
            }
        }
    }

    fn fill(&mut self) -> io::Result<bool> {
        let buf = self.src.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        let n = buf.len();
        self.carry.extend_from_slice(buf);
        self.src.consume(n);
        Ok(true)
    }

    /// The end (after its line break) of the next record in `carry`; scanning resumes where the
    /// previous call stopped.
    fn boundary(&mut self) -> Option<usize> {
        let mut i = self.scanned;
        while i < self.carry.len() {
            let hit = if self.csv {
                memchr::memchr2(b'"', b'\n', &self.carry[i..])
            } else {
                memchr::memchr(b'\n', &self.carry[i..])
            };
            let Some(off) = hit else { break };
            i += off;
            if self.carry[i] == b'"' {
                self.in_quotes = !self.in_quotes;
            } else if !self.in_quotes {
                self.scanned = i + 1;
                return Some(i + 1);
            }
            i += 1;
        }
        self.scanned = self.carry.len();
        None
    }

    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let mut last_end = 0;
        loop {
            while let Some(end) = self.boundary() {
                last_end = end;
                if last_end >= self.chunk_bytes {
                    break;
                }
            }
            if last_end >= self.chunk_bytes {
                break;
            }
            // A runaway quoted record: cut it at the next line break.
            if self.in_quotes && self.carry.len() - last_end > MAX_ROW_BYTES + self.chunk_bytes {
                self.in_quotes = false;
                self.scanned = last_end + MAX_ROW_BYTES;
                continue;
            }
            if !self.fill()? {
                last_end = self.carry.len();
                break;
            }
        }
        if last_end == 0 {
            return Ok(None);
        }
        let rest = self.carry.split_off(last_end);
        let bytes = std::mem::replace(&mut self.carry, rest);
        self.scanned -= last_end.min(self.scanned);
        let chunk = Chunk {
            seq: self.seq,
            bytes,
        };
        self.seq += 1;
        Ok(Some(chunk))
    }
}

/// One worker's state, kept across its chunks.
struct Worker {
    index: usize,
    validator: Validator,
    pseudonymizer: Pseudonymizer,
    /// The same keys in every worker, so equal ids hash equal.
    id_keys: (std::hash::RandomState, std::hash::RandomState),
    contents: Dictionary,
}

impl Worker {
    fn id_hash(&self, id: &str) -> u128 {
        let mut a = self.id_keys.0.build_hasher();
        let mut b = self.id_keys.1.build_hasher();
        a.write(id.as_bytes());
        b.write(id.as_bytes());
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    fn parse(&mut self, chunk: Chunk, format: Format, header: &[u8]) -> io::Result<Parsed> {
        // Decompressed already: a chunk is read where it lies.
        let source = header.chain(&chunk.bytes[..]);
        let mut rows = EventReader::from_decoded(source, format)?;
        let known = self.contents.names.len();
        let mut facts = Vec::with_capacity(chunk.bytes.len() / 90);
        let mut report = FileReport::default();
        while let Some(row) = rows.next_checked(&self.validator)? {
            report.rows += 1;
            let ev = match row.event {
                Ok(ev) => ev,
                Err(errors) => {
                    report.reject(&errors);
                    continue;
                }
            };
            // An HMAC per row rather than a cache of pseudonyms by viewer id: with the CPU's
            // SHA-256 instructions it costs less than a lookup in a map of 200,000 ids, which
            // misses the caches (measured on 1M rows: 16% less CPU, 2 x 200k entries less memory).
            let viewer = self
                .pseudonymizer
                .pseudonymize(ev.viewer_id, ev.occurred_at_ms)
                .sketch_hash();
            let (content, _) = self.contents.id(ev.content_id);
            facts.push((
                self.id_hash(ev.event_id),
                ev.occurred_at_ms.div_euclid(MS_PER_DAY),
                Fact {
                    country: ev.country,
                    device: ev.device,
                    genre: 0,
                    content,
                    viewer,
                    watch_seconds: ev.watch_seconds,
                    bitrate_kbps: ev.bitrate_kbps.unwrap_or(0),
                    buffering_ms: ev.buffering_ms.unwrap_or(0),
                    completed: ev.completed,
                },
            ));
        }
        Ok(Parsed {
            seq: chunk.seq,
            worker: self.index,
            facts,
            new_contents: self.contents.names[known..].to_vec(),
            report,
        })
    }
}

impl<'c> Collector<'c> {
    pub fn new(catalog: &'c Catalog, validator: Validator, pseudonymizer: Pseudonymizer) -> Self {
        Collector {
            catalog,
            validator,
            pseudonymizer,
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            seen: SeenIds::default(),
            events: 0,
            id_keys: Default::default(),
            genres: Dictionary::default(),
            contents: Dictionary::default(),
            content_genre: Vec::new(),
            days: BTreeMap::new(),
            repeats: Vec::new(),
            report: BatchReport::default(),
        }
    }

    /// Makes room for the id records of about `rows` events of the next input, when the caller
    /// can tell (from its size, say), so that they are not moved as they grow.
    pub fn reserve(&mut self, rows: usize) {
        self.seen.reserve(rows);
    }

    /// How many threads parse and validate rows (at least one).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Reads one input to its end. `progress` gets the number of rows read so far, now and then.
    ///
    /// A thread cuts the input into chunks of whole records, workers parse, validate and
    /// pseudonymize them, and this thread takes their results in input order, so the first
    /// occurrence of an event id is the one kept, as if it had all been read in one pass.
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
        let decoded = crate::reader::decompressed(source).map_err(read_err)?;
        let mut chunker = Chunker {
            src: decoded,
            csv: format == Format::Csv,
            chunk_bytes: CHUNK_BYTES,
            carry: Vec::with_capacity(2 * CHUNK_BYTES),
            in_quotes: false,
            scanned: 0,
            seq: 0,
        };
        let header = if format == Format::Csv {
            chunker.header().map_err(read_err)?
        } else {
            Vec::new()
        };
        let workers = self.workers;
        let mut report = FileReport::default();
        let first = self.events;
        let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Chunk>(workers * 2);
        let chunk_rx = std::sync::Mutex::new(chunk_rx);
        let result = std::thread::scope(|s| -> io::Result<()> {
            let (done_tx, done_rx) = mpsc::sync_channel::<io::Result<Parsed>>(workers * 2);
            let reader = s.spawn(move || -> io::Result<()> {
                while let Some(chunk) = chunker.next_chunk()? {
                    if chunk_tx.send(chunk).is_err() {
                        break;
                    }
                }
                Ok(())
            });
            for index in 0..workers {
                let (chunk_rx, done_tx, header) = (&chunk_rx, done_tx.clone(), &header);
                let mut worker = Worker {
                    index,
                    validator: self.validator,
                    pseudonymizer: self.pseudonymizer.clone(),
                    id_keys: self.id_keys.clone(),
                    contents: Dictionary::default(),
                };
                s.spawn(move || {
                    loop {
                        let next = match chunk_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break,
                        };
                        let Ok(chunk) = next else { break };
                        if done_tx.send(worker.parse(chunk, format, header)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            // Per worker, its content names and their global ids (assigned at first merge, so
            // ids follow the input order whatever the thread timing).
            let mut names: Vec<Vec<Box<str>>> = vec![Vec::new(); workers];
            let mut maps: Vec<Vec<u32>> = vec![Vec::new(); workers];
            let mut pending: BTreeMap<u64, Parsed> = BTreeMap::new();
            let mut want = 0;
            let mut failure = None;
            for parsed in done_rx {
                match parsed {
                    Ok(mut p) => {
                        // A worker's dictionary grows in the order of its own chunks.
                        let w = p.worker;
                        names[w].append(&mut p.new_contents);
                        maps[w].resize(names[w].len(), u32::MAX);
                        pending.insert(p.seq, p);
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                        break;
                    }
                }
                while let Some(p) = pending.remove(&want) {
                    if let Err(e) = self.merge(&mut report, p, &mut maps[..], &names) {
                        failure.get_or_insert(e);
                        break;
                    }
                    progress(report.rows);
                    want += 1;
                }
                if failure.is_some() {
                    break;
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            reader
                .join()
                .map_err(|_| io::Error::other("the reader thread panicked"))??;
            Ok(())
        });
        // Even after a failure, so that what was taken in stays deduplicated.
        self.drop_repeats(&mut report, first);
        result.map_err(read_err)?;
        progress(report.rows);
        self.report.total.absorb(&report);
        self.report.files.push(NamedReport {
            file: name.to_owned(),
            report,
        });
        Ok(())
    }

    /// Takes one chunk's results, in input order. Every valid event counts as accepted until
    /// [`Self::drop_repeats`] finds the repeats among them.
    fn merge(
        &mut self,
        report: &mut FileReport,
        p: Parsed,
        maps: &mut [Vec<u32>],
        names: &[Vec<Box<str>>],
    ) -> io::Result<()> {
        report.absorb(&p.report);
        let (map, names) = (&mut maps[p.worker], &names[p.worker]);
        for (id_hash, day, mut fact) in p.facts {
            let position = self.events;
            self.events = position.checked_add(1).ok_or_else(|| {
                io::Error::other(format!("a batch holds at most {} valid events", u32::MAX))
            })?;
            self.seen.push(id_hash, position);
            report.accepted += 1;
            let local = fact.content as usize;
            if map[local] == u32::MAX {
                let name = &names[local];
                let (id, new) = self.contents.id(name);
                if new {
                    let (genre, _) = self.genres.id(self.catalog.genre_of(name));
                    self.content_genre.push(genre);
                }
                map[local] = id;
            }
            fact.content = map[local];
            fact.genre = self
                .content_genre
                .get(fact.content as usize)
                .copied()
                .unwrap_or(0);
            let day = self.days.entry(day).or_default();
            day.facts.push(fact);
            day.positions.push(position);
        }
        Ok(())
    }

    /// Finds the repeated ids among the events taken in since position `first` (this input):
    /// the first occurrence of an id, in this input or an earlier one, is the one kept. The
    /// repeats are counted now and dropped from their day when it is built.
    fn drop_repeats(&mut self, report: &mut FileReport, first: u32) {
        let repeats = self.seen.settle(self.workers);
        let n = repeats.len() as u64;
        report.duplicates += n;
        report.accepted -= n;
        // This input's positions are all above the earlier inputs': the list stays sorted.
        debug_assert!(repeats.first().is_none_or(|r| *r >= first));
        self.repeats.extend(repeats);
    }

    /// The counts so far.
    pub fn report(&self) -> &BatchReport {
        &self.report
    }

    /// Number of accepted events.
    pub fn accepted(&self) -> u64 {
        self.report.total.accepted
    }

    /// The days that have events. (A day whose events all repeat ids first seen on other days
    /// is among them, but has no cells in the cube.)
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.days.keys().filter_map(|d| epoch_day(*d))
    }
}

fn epoch_day(d: i64) -> Option<NaiveDate> {
    chrono::DateTime::from_timestamp(d.checked_mul(86_400)?, 0).map(|t| t.date_naive())
}

impl Day {
    /// The facts without those at the positions in `repeats` (sorted). Only the facts after the
    /// first repeat are moved, a run at a time.
    fn into_facts(self, repeats: &[u32]) -> Vec<Fact> {
        let Day {
            mut facts,
            positions,
        } = self;
        let (Some(&lo), Some(&hi)) = (positions.first(), positions.last()) else {
            return facts;
        };
        let mine =
            &repeats[repeats.partition_point(|r| *r < lo)..repeats.partition_point(|r| *r <= hi)];
        // Indices in this day of its repeats, ascending like the positions.
        let mut gone = mine
            .iter()
            .filter_map(|r| positions.binary_search(r).ok())
            .peekable();
        let Some(&first) = gone.peek() else {
            return facts;
        };
        let mut kept = first;
        while let Some(i) = gone.next() {
            let end = gone.peek().copied().unwrap_or(facts.len());
            facts.copy_within(i + 1..end, kept);
            kept += end - (i + 1);
        }
        facts.truncate(kept);
        facts
    }
}

/// Totals of a written cube.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CubeStats {
    pub days: u64,
    pub cells: u64,
}

/// Room for a day's cells. A full cube of this data has about 1.4 cells per event: room for
/// them all up front spares copying the cells into a vector twice as large half way.
fn day_cells(facts: usize) -> usize {
    facts + facts / 2
}

/// Builds one day's cube of `built` (a set's [`CuboidSet::genre_derived`]) from collected facts;
/// also gives the genre of each of the cube's titles, by content id.
fn day_cube(
    built: &CuboidSet,
    facts: &mut [Fact],
    genres: &[Box<str>],
    contents: &[Box<str>],
    space: CubeSpace,
    threads: usize,
) -> (Cube, Vec<u32>) {
    // Facts of one title, country and device land in the same base cells: in that order, the
    // cells a fact touches are mostly in cache already.
    // One integer per comparison: content, then country code (< 676), then device code (< 8).
    facts.sort_unstable_by_key(|f| {
        (u64::from(f.content) << 16)
            | (u64::from(f.country.code()) << 3)
            | u64::from(f.device.code())
    });
    let mut cube = Cube::with_space(built, space, day_cells(facts.len()));
    let mut genre_map = vec![u32::MAX; genres.len()];
    let mut content_map = vec![u32::MAX; contents.len()];
    // By the cube's content id (0: rolled up), the cube's genre id of the title.
    let mut genre_of_content = vec![0];
    for f in facts.iter_mut() {
        let g = &mut genre_map[f.genre as usize];
        if *g == u32::MAX {
            *g = cube.genre_id(&genres[f.genre as usize]);
        }
        f.genre = *g;
        let c = &mut content_map[f.content as usize];
        if *c == u32::MAX {
            *c = cube.content_id(&contents[f.content as usize]);
            genre_of_content.push(f.genre);
        }
        f.content = *c;
    }
    cube.add_all_on(facts, threads);
    (cube, genre_of_content)
}

/// A day's cube once built, shared by the workers that write its parts.
struct BuiltDay {
    index: usize,
    date: NaiveDate,
    cube: Cube,
    order: CellOrder,
    genres: FieldTexts,
    contents: FieldTexts,
}

impl BuiltDay {
    /// The cells of part `part` of [`DAY_PARTS`], as equal as can be.
    fn part(&self, part: usize) -> std::ops::Range<usize> {
        let n = self.order.len();
        n * part / DAY_PARTS..n * (part + 1) / DAY_PARTS
    }
}

/// Each day's text is written in this many parts, which any worker can take: the last day
/// built is not left to one worker while the others have nothing to do.
const DAY_PARTS: usize = 4;

/// What the build workers share: which day is next, and the parts of built days waiting to be
/// written. Parts go first, so that a built cube's memory comes back soon; at most one cube a
/// worker is alive (built and not all written), so at most that many cube spaces are made.
struct Board {
    next_day: usize,
    days: usize,
    alive: usize,
    limit: usize,
    parts: VecDeque<(Arc<BuiltDay>, usize)>,
    stop: bool,
}

enum Job {
    /// Build a day's cube, on this many threads (more than one for the last day: the other
    /// workers would have nothing else to do).
    Build(usize, usize),
    Write(Arc<BuiltDay>, usize),
}

struct Jobs {
    board: Mutex<Board>,
    changed: Condvar,
}

impl Jobs {
    fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job, waiting while other workers may still make one; `None` when all is done
    /// or the run stopped.
    fn next(&self) -> Option<Job> {
        let mut b = self.board();
        loop {
            if b.stop {
                return None;
            }
            if let Some((day, part)) = b.parts.pop_front() {
                return Some(Job::Write(day, part));
            }
            if b.next_day < b.days && b.alive < b.limit {
                let i = b.next_day;
                b.next_day += 1;
                b.alive += 1;
                let threads = if b.next_day == b.days { b.limit } else { 1 };
                return Some(Job::Build(i, threads));
            }
            if b.next_day == b.days && b.alive == 0 {
                return None;
            }
            b = self.changed.wait(b).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn update(&self, f: impl FnOnce(&mut Board)) {
        f(&mut self.board());
        self.changed.notify_all();
    }
}

/// Stops the other workers if this one unwinds, rather than leaving them waiting for it.
struct StopOnPanic<'a>(&'a Jobs);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.update(|b| b.stop = true);
        }
    }
}

/// CSV text of a part of a day: the buffer, the length of the text in it, and how many rows.
type Text = (Vec<u8>, usize, u64);

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
        seen,
        repeats,
        ..
    } = collector;
    // Deduplication is over: free its records (16 bytes an event) before the days are built.
    drop(seen);
    // Each cube space is made for the largest day, so that no day has to move it.
    let most_facts = days.values().map(|d| d.facts.len()).max().unwrap_or(0);
    let days: Vec<(NaiveDate, Mutex<Day>)> = days
        .into_iter()
        .map(|(d, day)| (epoch_day(d).unwrap_or(NaiveDate::MIN), Mutex::new(day)))
        .collect();
    let threads = threads.max(1);
    let mut out = out;
    out.write_all(CUBE_CSV_HEADER.as_bytes())?;
    out.write_all(b"\n")?;
    let mut stats = CubeStats::default();

    let jobs = Jobs {
        board: Mutex::new(Board {
            next_day: 0,
            days: days.len(),
            alive: 0,
            limit: threads,
            parts: VecDeque::new(),
            stop: false,
        }),
        changed: Condvar::new(),
    };
    // Cube spaces and text buffers given back, for later days. Memory is reused rather than
    // freed: fresh memory costs a page fault per 4 KiB touched, and page faults were a tenth of
    // this command's CPU samples.
    let spaces: Mutex<Vec<CubeSpace>> = Mutex::default();
    let buffers: Mutex<Vec<Vec<u8>>> = Mutex::default();
    std::thread::scope(|s| -> Result<(), BatchError> {
        // Workers send each part of a day as finished CSV text, so only the days being built
        // or written are in memory, and formatting runs in parallel too.
        let (tx, rx) = mpsc::sync_channel::<(usize, usize, Text)>(threads * DAY_PARTS);
        for _ in 0..threads {
            let tx = tx.clone();
            let (days, genres, contents) = (&days, &genres.names, &contents.names);
            let (jobs, spaces, buffers, repeats) = (&jobs, &spaces, &buffers, &repeats);
            s.spawn(move || {
                let _stop = StopOnPanic(jobs);
                while let Some(job) = jobs.next() {
                    let (built, part) = match job {
                        Job::Build(i, on) => {
                            let space = spaces.lock().ok().and_then(|mut s| s.pop());
                            let built = build_day(
                                i, on, days, repeats, set, genres, contents, space, most_facts,
                            );
                            jobs.update(|b| {
                                b.parts
                                    .extend((1..DAY_PARTS).map(|p| (Arc::clone(&built), p)));
                            });
                            (built, 0)
                        }
                        Job::Write(built, part) => (built, part),
                    };
                    let buffer = buffers.lock().ok().and_then(|mut b| b.pop());
                    let text = format_part(&built, part, buffer.unwrap_or_default());
                    let index = built.index;
                    // The last part written gives the cube's memory back.
                    if let Some(done) = Arc::into_inner(built) {
                        if let Ok(mut s) = spaces.lock() {
                            s.push(done.cube.into_space());
                        }
                        jobs.update(|b| b.alive -= 1);
                    }
                    if tx.send((index, part, text)).is_err() {
                        jobs.update(|b| b.stop = true);
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Write the parts in order; hold early finishers until their turn. On a failed write,
        // `rx` is dropped and the workers stop at their next send.
        let mut pending: BTreeMap<(usize, usize), Text> = BTreeMap::new();
        let (mut day, mut part, mut day_cells) = (0, 0, 0);
        for (i, p, text) in rx {
            pending.insert((i, p), text);
            while let Some((bytes, len, cells)) = pending.remove(&(day, part)) {
                out.write_all(&bytes[..len])?;
                if let Ok(mut b) = buffers.lock() {
                    b.push(bytes);
                }
                day_cells += cells;
                part += 1;
                if part == DAY_PARTS {
                    stats.cells += day_cells;
                    // A day of nothing but repeats has no cells.
                    stats.days += u64::from(day_cells > 0);
                    progress(days[day].0);
                    (day, part, day_cells) = (day + 1, 0, 0);
                }
            }
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(stats)
}

/// Builds day `i`'s cube on `threads` threads (each day is built by exactly one worker; its
/// facts are freed once built) in `space`, or in a new one made for the largest day.
#[allow(clippy::too_many_arguments)]
fn build_day(
    i: usize,
    threads: usize,
    days: &[(NaiveDate, Mutex<Day>)],
    repeats: &[u32],
    set: &CuboidSet,
    genres: &[Box<str>],
    contents: &[Box<str>],
    space: Option<CubeSpace>,
    most_facts: usize,
) -> Arc<BuiltDay> {
    let mut facts = match days[i].1.lock() {
        Ok(mut day) => std::mem::take(&mut *day).into_facts(repeats),
        Err(_) => Vec::new(),
    };
    let space = space.unwrap_or_else(|| CubeSpace::with_capacity(day_cells(most_facts)));
    let built = set.genre_derived();
    let (cube, genre_of_content) = day_cube(&built, &mut facts, genres, contents, space, threads);
    drop(facts);
    Arc::new(BuiltDay {
        index: i,
        date: days[i].0,
        order: cube.derived_cell_order(set, &genre_of_content),
        genres: FieldTexts::new(cube.genre_names()),
        contents: FieldTexts::new(cube.content_names()),
        cube,
    })
}

/// Part `part` of a built day's cells as CSV rows (no header) in `out`, which is reused as it
/// is.
fn format_part(day: &BuiltDay, part: usize, mut out: Vec<u8>) -> Text {
    let range = day.part(part);
    let room = range.len() * 64;
    if out.len() < room {
        // A new buffer rather than growing the old one, which would copy its text over; with
        // room to spare, so that the buffer fits the next parts too (they have about as many
        // cells).
        out = vec![0; room + room / 8];
    }
    let cells = day.cube.ordered_cells(&day.order, range);
    let (end, n) = write_rows(&mut out, 0, day.date, &day.genres, &day.contents, cells);
    (out, end, n)
}

/// One day's cells in the cube CSV form of the contract, header included, ordered by cuboid and
/// coordinates: the export a consolidation leaves beside the gold store.
pub fn day_csv(day: NaiveDate, cells: &[(Dims, Cell)]) -> Vec<u8> {
    let mut sorted: Vec<(DimsRef<'_>, &Cell)> =
        cells.iter().map(|(d, c)| (d.as_ref(), c)).collect();
    sorted.sort_unstable_by(|a, b| (a.0.cuboid(), a.0).cmp(&(b.0.cuboid(), b.0)));
    // Names by id, id 0 (the empty name) for rolled up, as a cube's dictionaries have them.
    let (mut genres, mut contents) = (Dictionary::with_empty(), Dictionary::with_empty());
    let rows: Vec<(CellIds, &Cell)> = sorted
        .iter()
        .map(|(d, c)| {
            let ids = CellIds {
                country: d.country,
                device: d.device,
                genre: d.genre.map_or(0, |g| genres.id(g).0),
                content: d.content_id.map_or(0, |c| contents.id(c).0),
            };
            (ids, *c)
        })
        .collect();
    let mut out = Vec::with_capacity(64 * (cells.len() + 1));
    out.extend_from_slice(CUBE_CSV_HEADER.as_bytes());
    out.push(b'\n');
    let (genres, contents) = (genres.field_texts(), contents.field_texts());
    let at = out.len();
    let (end, _) = write_rows(&mut out, at, day, &genres, &contents, rows);
    out.truncate(end);
    out
}

/// Bytes moved at once for a name's field: most names are shorter, and their field is copied
/// with one fixed-size move instead of a `memcpy` call sized at run time.
const NAME_MOVE: usize = 32;
/// Room a row needs besides its names' fields: day, country, a device's 16-byte move, seven
/// numbers of up to 20 digits and their separators, and `NAME_MOVE` twice.
const ROW_ROOM: usize = 256;

/// The CSV field text of each name of a dimension, followed by its comma, quoted only when it
/// must be and with quotes doubled inside, as the `csv` crate's default writer does. All in one
/// buffer with `NAME_MOVE` bytes of padding at the end.
struct FieldTexts {
    text: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl FieldTexts {
    fn new<'a>(names: impl Iterator<Item = &'a str>) -> FieldTexts {
        let quoting = csv_core::Writer::new();
        let mut text = Vec::new();
        let mut spans = Vec::new();
        for name in names {
            let start = text.len();
            if quoting.should_quote(name.as_bytes()) {
                text.push(b'"');
                for (i, part) in name.split('"').enumerate() {
                    if i > 0 {
                        text.extend_from_slice(b"\"\"");
                    }
                    text.extend_from_slice(part.as_bytes());
                }
                text.push(b'"');
            } else {
                text.extend_from_slice(name.as_bytes());
            }
            text.push(b',');
            spans.push((start, text.len() - start));
        }
        text.resize(text.len() + NAME_MOVE, 0);
        FieldTexts { text, spans }
    }

    fn len(&self, id: u32) -> usize {
        self.spans.get(id as usize).map_or(1, |s| s.1)
    }
}

/// Two decimal digits for each of 0..100.
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Rows written at a cursor into initialized bytes, field by field without a bounds check or a
/// length computation each: room for a whole row is made once, before it.
struct RowText<'a> {
    out: &'a mut Vec<u8>,
    pos: usize,
}

impl RowText<'_> {
    fn room(&mut self, n: usize) {
        if self.out.len() - self.pos < n {
            // Into the room the buffer was made with first: doubling from the header's length
            // overshot it, and the copy took twice a day export's bytes.
            let len = (self.out.len() * 2)
                .max(self.pos + n)
                .max(self.out.capacity());
            self.out.resize(len, 0);
        }
    }

    /// Moves `N` bytes and keeps the first `len`.
    #[inline]
    fn fixed<const N: usize>(&mut self, src: &[u8; N], len: usize) {
        self.out[self.pos..self.pos + N].copy_from_slice(src);
        self.pos += len;
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.out[self.pos] = b;
        self.pos += 1;
    }

    #[inline]
    fn field(&mut self, texts: &FieldTexts, id: u32) {
        let Some(&(start, len)) = texts.spans.get(id as usize) else {
            // Not in the dictionary: cannot happen for a cube's own ids; an empty field.
            self.byte(b',');
            return;
        };
        match texts.text[start..].first_chunk::<NAME_MOVE>() {
            Some(head) if len <= NAME_MOVE => self.fixed(head, len),
            _ => {
                self.out[self.pos..self.pos + len].copy_from_slice(&texts.text[start..start + len]);
                self.pos += len;
            }
        }
    }

    /// `v` in decimal, the way `itoa` writes it, but in place: `itoa` formats into a buffer of
    /// its own, and the copy out of it was a `memcpy` call per number.
    #[inline]
    fn number(&mut self, mut v: u64) {
        let len = v.checked_ilog10().map_or(1, |l| l as usize + 1);
        let digits = &mut self.out[self.pos..self.pos + len];
        let mut i = len;
        while v >= 100 {
            let r = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
        }
        if v >= 10 {
            let r = v as usize * 2;
            digits[..2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
        } else {
            digits[0] = b'0' + v as u8;
        }
        self.pos += len;
    }
}

/// Writes cells as rows of the cube CSV into `out` from `at` on (growing it when needed), the
/// way the `csv` crate's default writer does (`\n` line ends, a field quoted only when it must
/// be, quotes doubled inside). Returns where the rows end and how many there are.
fn write_rows<'a>(
    out: &mut Vec<u8>,
    at: usize,
    day: NaiveDate,
    genres: &FieldTexts,
    contents: &FieldTexts,
    cells: impl IntoIterator<Item = (CellIds, &'a Cell)>,
) -> (usize, u64) {
    let mut prefix = [b','; 11];
    let date = day.format("%Y-%m-%d").to_string();
    if let Some(p) = prefix.first_chunk_mut::<10>()
        && let Some(d) = date.as_bytes().first_chunk::<10>()
    {
        *p = *d;
    }
    // Each device's field and comma, padded for one fixed-size move; index 0 for rolled up.
    let mut devices = [([0u8; 16], 1usize); Device::ALL.len() + 1];
    devices[0].0[0] = b',';
    for (d, slot) in Device::ALL.iter().zip(devices.iter_mut().skip(1)) {
        let name = d.as_str().as_bytes();
        slot.0[..name.len()].copy_from_slice(name);
        slot.0[name.len()] = b',';
        slot.1 = name.len() + 1;
    }
    let mut w = RowText { out, pos: at };
    let mut n = 0;
    for (ids, cell) in cells {
        w.room(ROW_ROOM + genres.len(ids.genre) + contents.len(ids.content));
        if date.len() == 10 {
            w.fixed(&prefix, 11);
        } else {
            // Years outside 0..=9999: not from validated events, but written right all the same.
            w.out[w.pos..w.pos + date.len()].copy_from_slice(date.as_bytes());
            w.pos += date.len();
            w.byte(b',');
        }
        match ids.country {
            Some(c) => {
                let [a, b] = c.bytes();
                w.fixed(&[a, b, b','], 3);
            }
            None => w.byte(b','),
        }
        let (device, len) = &devices[ids.device.map_or(0, |d| usize::from(d.code()) + 1)];
        w.fixed(device, *len);
        w.field(genres, ids.genre);
        w.field(contents, ids.content);
        let m = &cell.measures;
        for v in m.values() {
            w.number(v);
            w.byte(b',');
        }
        w.number(cell.viewers.estimate());
        w.byte(b'\n');
        n += 1;
    }
    (w.pos, n)
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
        let stats = write_cube_csv(c, set, 2, &mut out, &mut |_| {}).expect("write");
        let out = String::from_utf8(out).expect("utf8");
        // The totals count what was written: a day of nothing but repeats is not a day.
        let rows: Vec<&str> = out.lines().skip(1).collect();
        let days: std::collections::BTreeSet<&str> =
            rows.iter().filter_map(|r| r.split(',').next()).collect();
        assert_eq!(stats.cells, rows.len() as u64);
        assert_eq!(stats.days, days.len() as u64);
        (out, report)
    }

    fn chunks(data: &[u8], csv: bool, chunk_bytes: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut c = Chunker {
            src: data,
            csv,
            chunk_bytes,
            carry: Vec::new(),
            in_quotes: false,
            scanned: 0,
            seq: 0,
        };
        let header = if csv {
            c.header().expect("header")
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        while let Some(chunk) = c.next_chunk().expect("chunk") {
            assert_eq!(chunk.seq, out.len() as u64);
            out.push(chunk.bytes);
        }
        (header, out)
    }

    #[test]
    fn chunks_end_on_record_boundaries_even_inside_quotes() {
        let mut data = String::from("a,b\n");
        for i in 0..500 {
            match i % 4 {
                0 => data.push_str(&format!("{i},\"two\nlines, and \"\"quotes\"\"\"\n")),
                1 => data.push_str(&format!("{i},\"\"\"\"\n")),
                2 => data.push_str(&format!("{i},plain\r\n")),
                _ => data.push_str(&format!("{i},\"x\n\ny\"\n")),
            }
        }
        for size in [1, 7, 64, 1000, 1 << 20] {
            let (header, chunks) = chunks(data.as_bytes(), true, size);
            assert_eq!(header, b"a,b\n");
            let joined: Vec<u8> = header
                .iter()
                .chain(chunks.iter().flatten())
                .copied()
                .collect();
            assert_eq!(joined, data.as_bytes(), "chunks of {size} lose nothing");
            let mut records = 0;
            for chunk in &chunks {
                let mut r = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(&chunk[..]);
                for rec in r.records() {
                    let rec = rec.expect("each chunk parses on its own");
                    assert_eq!(rec.len(), 2, "size {size}: {rec:?}");
                    records += 1;
                }
            }
            assert_eq!(records, 500, "size {size}");
        }
    }

    #[test]
    fn the_dictionary_gives_one_id_per_distinct_name_short_or_long() {
        let names = [
            "",
            "a",
            "a\0",
            "\0a",
            "c12345",
            "exactly-15bytes",
            "exactly-16-bytes",
            "a rather long content id",
            "ção",
            "a\0\0\0\0\0\0\0\0\0\0\0\0\0",
        ];
        let mut d = Dictionary::default();
        let first: Vec<(u32, bool)> = names.iter().map(|n| d.id(n)).collect();
        let again: Vec<(u32, bool)> = names.iter().map(|n| d.id(n)).collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(first[i], (i as u32, true), "{name:?} is new");
            assert_eq!(again[i], (i as u32, false), "{name:?} is known");
            assert_eq!(&*d.names[i], *name);
        }
    }

    #[test]
    fn json_lines_chunk_at_line_breaks() {
        let data = "{\"a\":\"x\\\"y\"}\n".repeat(100);
        let (header, chunks) = chunks(data.as_bytes(), false, 50);
        assert!(header.is_empty());
        assert!(chunks.iter().all(|c| c.ends_with(b"\n")));
        assert_eq!(chunks.concat(), data.as_bytes());
    }

    #[test]
    fn parallel_reading_equals_one_pass() {
        let mut data = H.to_owned();
        for i in 0..30_000u32 {
            let content = if i % 7 == 0 {
                "\"c, with\nnewline\"".to_owned()
            } else {
                format!("c{}", i % 50)
            };
            // every 10th event repeats an earlier id with other numbers: the first must win
            let id = if i % 10 == 9 { i - 5 } else { i };
            data.push_str(&format!(
                "e{id},2026-11-0{}T10:00:00Z,v{},{content},tv,BR,{},,,true\n",
                1 + i % 3,
                i % 900,
                i % 100
            ));
        }
        let catalog = Catalog::new();
        let set = CuboidSet::parse("country;content_id").expect("spec");
        let run = |workers: usize, builders: usize| {
            let key = PseudonymKey::from_bytes("t", vec![1; 32]).expect("key");
            let mut c = Collector::new(
                &catalog,
                Validator::at(i64::MAX / 4),
                Pseudonymizer::new(&key),
            )
            .with_workers(workers);
            c.add_input("f.csv", Format::Csv, data.as_bytes(), &mut |_| {})
                .expect("read");
            let report = c.report().total.clone();
            let mut out = Vec::new();
            let mut days = Vec::new();
            write_cube_csv(c, &set, builders, &mut out, &mut |d| days.push(d)).expect("write");
            // Every day is reported once, in order.
            assert_eq!(days.len(), 3);
            assert!(days.is_sorted());
            (report, out)
        };
        let (one, cube_one) = run(1, 1);
        assert_eq!((one.rows, one.duplicates, one.rejected), (30_000, 3_000, 0));
        // More build workers than days, too: they write parts of the days others built.
        for builders in [2, 3, 8] {
            assert!(run(1, builders).1 == cube_one, "{builders} build workers");
        }
        for workers in [2, 3, 8] {
            let (many, cube_many) = run(workers, 2);
            assert_eq!(many, one, "{workers} workers");
            assert!(
                cube_many == cube_one,
                "{workers} workers give the same cube, in the same order"
            );
        }
    }

    /// Takes `left` bytes, then fails.
    struct FailingWriter {
        left: usize,
    }

    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_stops_the_build_and_is_reported() {
        let mut data = H.to_owned();
        for i in 0..5_000u32 {
            data.push_str(&format!(
                "e{i},2026-11-{:02}T10:00:00Z,v{},c{},tv,BR,{},,,true\n",
                1 + i % 20,
                i % 300,
                i % 40,
                i % 100
            ));
        }
        let catalog = Catalog::new();
        let set = CuboidSet::default();
        let collect = || {
            let key = PseudonymKey::from_bytes("t", vec![1; 32]).expect("key");
            let mut c = Collector::new(
                &catalog,
                Validator::at(i64::MAX / 4),
                Pseudonymizer::new(&key),
            );
            c.add_input("f.csv", Format::Csv, data.as_bytes(), &mut |_| {})
                .expect("read");
            c
        };
        let mut all = Vec::new();
        write_cube_csv(collect(), &set, 2, &mut all, &mut |_| {}).expect("write");
        let size = all.len();
        for (left, builders) in [(0, 2), (10, 1), (size / 3, 2), (size - 1, 3), (size / 2, 8)] {
            let out = FailingWriter { left };
            let Err(err) = write_cube_csv(collect(), &set, builders, out, &mut |_| {}) else {
                panic!("a writer failing after {left} of {size} bytes went unnoticed");
            };
            assert!(
                matches!(&err, BatchError::Write(e) if e.to_string() == "disk full"),
                "{err}"
            );
        }
    }

    proptest::proptest! {
        /// The rows are byte for byte what the `csv` crate's default writer makes of the same
        /// fields, whatever the texts hold (delimiters, quotes, line breaks, non-ASCII).
        #[test]
        fn rows_are_written_as_the_csv_crate_writes_them(
            texts in proptest::collection::vec(
                (
                    proptest::option::of("[a-z,\"\r\n #é]{0,40}"),
                    proptest::option::of("[a-z0-9,\"\n:]{0,40}"),
                    0u8..7,
                    proptest::option::of("[A-Z]{2}"),
                ),
                0..12,
            ),
            counts in proptest::collection::vec(0..u64::MAX, 6),
            small in 0u64..1000,
        ) {
            let day = NaiveDate::from_ymd_opt(2026, 11, 4).expect("date");
            let mut cell = Cell::default();
            let m = &mut cell.measures;
            (m.plays, m.watch_seconds, m.completed) = (counts[0], counts[1], small);
            (m.buffering_ms, m.bitrate_sum, m.bitrate_count) = (counts[3], counts[4], counts[5]);
            cell.viewers.insert(counts[0]);
            let (mut genres, mut contents) = (Dictionary::with_empty(), Dictionary::with_empty());
            let rows: Vec<(CellIds, &Cell)> = texts
                .iter()
                .map(|(genre, content, device, country)| {
                    let ids = CellIds {
                        country: country.as_deref().and_then(|c| crate::event::Country::parse(c).ok()),
                        device: Device::from_code(*device),
                        genre: genre.as_deref().map_or(0, |g| genres.id(g).0),
                        content: content.as_deref().map_or(0, |c| contents.id(c).0),
                    };
                    (ids, &cell)
                })
                .collect();
            let (genre_texts, content_texts) = (genres.field_texts(), contents.field_texts());
            // Written after bytes already there, into a buffer too small to start with.
            let mut ours = b"kept".to_vec();
            let (end, n) = write_rows(&mut ours, 4, day, &genre_texts, &content_texts, rows.iter().copied());
            proptest::prop_assert_eq!(n, rows.len() as u64);
            ours.truncate(end);
            let mut theirs = csv::Writer::from_writer(b"kept".to_vec());
            for (ids, cell) in &rows {
                let numbers: Vec<String> = cell.measures.values().into_iter()
                    .chain([cell.viewers.estimate()]).map(|v| v.to_string()).collect();
                let mut record = vec![
                    "2026-11-04".to_owned(),
                    ids.country.map_or(String::new(), |c| c.as_str().to_owned()),
                    ids.device.map_or("", |d| d.as_str()).to_owned(),
                    genres.names[ids.genre as usize].to_string(),
                    contents.names[ids.content as usize].to_string(),
                ];
                record.extend(numbers);
                theirs.write_record(&record).expect("write");
            }
            let theirs = theirs.into_inner().expect("flush");
            proptest::prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Feeding the same rows again, as a second file or appended, changes no cell.
        #[test]
        fn replaying_input_changes_nothing(
            rows in proptest::collection::vec((0..40u32, 1..4u32, 0..30u32, 0..6u32, 0..3u32), 1..120)
        ) {
            let mut data = H.to_owned();
            for (id, day, viewer, content, country) in &rows {
                let country = ["BR", "US", "PT"][*country as usize];
                data.push_str(&format!(
                    "e{id},2026-11-0{day}T10:00:00Z,v{viewer},c{content},tv,{country},{},,,false\n",
                    id * 7
                ));
            }
            let set = CuboidSet::default();
            let (once, r1) = run(&[&data], &Catalog::new(), &set);
            let (twice, r2) = run(&[&data, &data], &Catalog::new(), &set);
            proptest::prop_assert_eq!(once, twice);
            proptest::prop_assert_eq!(r2.total.accepted, r1.total.accepted);
            proptest::prop_assert_eq!(r2.total.duplicates, r1.total.duplicates + r1.total.rows);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Over several inputs, each id's first event is kept wherever its repeats are (same
        /// input or later, same day or not), and each input is charged with its own repeats:
        /// the same as a set of ids checked row by row.
        #[test]
        fn deduplication_equals_checking_each_row_in_turn(
            files in proptest::collection::vec(
                proptest::collection::vec((0..60u32, 1..4u32, 0..1000u32), 0..80),
                1..5,
            )
        ) {
            let mut seen = std::collections::HashSet::new();
            // Per day: plays and watch seconds of the events kept.
            let mut want: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            let mut want_repeats = Vec::new();
            let inputs: Vec<String> = files
                .iter()
                .map(|rows| {
                    let mut repeats = 0u64;
                    let mut data = H.to_owned();
                    for (id, day, watch) in rows {
                        data.push_str(&format!(
                            "e{id},2026-11-0{day}T10:00:00Z,v1,c1,tv,BR,{watch},,,false\n"
                        ));
                        if seen.insert(*id) {
                            let d = want.entry(*day).or_default();
                            d.0 += 1;
                            d.1 += u64::from(*watch);
                        } else {
                            repeats += 1;
                        }
                    }
                    want_repeats.push(repeats);
                    data
                })
                .collect();
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let set = CuboidSet::parse("country").expect("spec");
            let (csv, report) = run(&refs, &Catalog::new(), &set);
            let got: BTreeMap<u32, (u64, u64)> = csv
                .lines()
                .skip(1)
                .filter(|l| l.split(',').nth(1) == Some(""))
                .map(|l| {
                    let f: Vec<&str> = l.split(',').collect();
                    let day = f[0].rsplit('-').next().and_then(|d| d.parse().ok()).expect("day");
                    (day, (f[5].parse().expect("plays"), f[6].parse().expect("watch")))
                })
                .collect();
            proptest::prop_assert_eq!(got, want);
            let repeats: Vec<u64> = report.files.iter().map(|f| f.report.duplicates).collect();
            proptest::prop_assert_eq!(repeats, want_repeats);
            proptest::prop_assert!(report.files.iter().all(|f| f.report.is_balanced()));
        }
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
