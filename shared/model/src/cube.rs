//! The data cube: cells for every combination of a time bucket and a cuboid of the dimensions
//! {country, device, genre, content_id}, with exact measures and a unique-viewer sketch.
//!
//! A [`Cube`] holds the cells of one time bucket (an hour or a day). It is built from [`Fact`]s
//! (validated, pseudonymized events) and merged with other cubes: merging is associative and
//! commutative, so a day is the merge of its hours and a week the merge of its days, whatever the
//! order. Which cuboids exist is a [`CuboidSet`]: the full cube by default, or the union of
//! declared aggregation groups (every subset of each group), the way OLAP engines keep a
//! high-cardinality dimension from multiplying the cell count.
//!
//! ```
//! use streamcube_model::cube::{CuboidSet, Dim};
//! let set = CuboidSet::parse("country,device,genre;content_id,country").unwrap();
//! // every subset of {country, device, genre} and of {content_id, country}: 8 + 4 - 2 shared.
//! assert_eq!(set.len(), 10);
//! assert!(set.best_for(&[Dim::ContentId]).is_some());
//! ```

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::event::{Country, Device};
use crate::sketch::ViewerSketch;

/// A cube dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    Country,
    Device,
    Genre,
    ContentId,
}

impl Dim {
    pub const ALL: [Dim; 4] = [Dim::Country, Dim::Device, Dim::Genre, Dim::ContentId];

    pub const fn name(self) -> &'static str {
        match self {
            Dim::Country => "country",
            Dim::Device => "device",
            Dim::Genre => "genre",
            Dim::ContentId => "content_id",
        }
    }

    pub fn from_name(s: &str) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.name() == s)
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of dimensions kept (the others are rolled up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cuboid(u8);

impl Cuboid {
    /// All dimensions rolled up: the grand total.
    pub const APEX: Cuboid = Cuboid(0);
    /// No dimension rolled up.
    pub const BASE: Cuboid = Cuboid(0b1111);

    pub fn of(dims: &[Dim]) -> Cuboid {
        Cuboid(dims.iter().fold(0, |m, d| m | d.bit()))
    }

    pub const fn from_bits(bits: u8) -> Option<Cuboid> {
        if bits <= 0b1111 {
            Some(Cuboid(bits))
        } else {
            None
        }
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn has(self, d: Dim) -> bool {
        self.0 & d.bit() != 0
    }

    pub const fn contains(self, other: Cuboid) -> bool {
        self.0 & other.0 == other.0
    }

    /// This cuboid with `d` rolled up.
    pub const fn without(self, d: Dim) -> Cuboid {
        Cuboid(self.0 & !d.bit())
    }

    pub fn dims(self) -> impl Iterator<Item = Dim> {
        Dim::ALL.into_iter().filter(move |d| self.has(*d))
    }

    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Cuboid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("total");
        }
        let names: Vec<_> = self.dims().map(Dim::name).collect();
        f.write_str(&names.join("+"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CuboidSpecError {
    #[error(
        "unknown dimension `{0}` in the cuboid spec (known: country, device, genre, content_id)"
    )]
    UnknownDimension(String),
    #[error("the cuboid spec declares no aggregation group")]
    Empty,
    #[error("the aggregation group `{0}` of the cuboid spec names no dimension")]
    EmptyGroup(String),
}

/// The cuboids a deployment materializes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CuboidSet {
    cuboids: Vec<Cuboid>,
    groups: Vec<Cuboid>,
}

impl Default for CuboidSet {
    fn default() -> Self {
        CuboidSet::from_groups(&[Cuboid::BASE])
    }
}

impl CuboidSet {
    /// Every subset of every group.
    pub fn from_groups(groups: &[Cuboid]) -> CuboidSet {
        let mut cuboids: Vec<Cuboid> = (0..=0b1111u8)
            .map(Cuboid)
            .filter(|c| groups.iter().any(|g| g.contains(*c)))
            .collect();
        cuboids.sort();
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        CuboidSet { cuboids, groups }
    }

    /// Parses aggregation groups: dimension names separated by `,`, groups by `;`.
    /// `"country,device,genre,content_id"` is the full cube.
    pub fn parse(spec: &str) -> Result<CuboidSet, CuboidSpecError> {
        let mut groups = Vec::new();
        for group in spec.split(';').map(str::trim).filter(|g| !g.is_empty()) {
            let mut dims = Vec::new();
            for name in group.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                dims.push(
                    Dim::from_name(name)
                        .ok_or_else(|| CuboidSpecError::UnknownDimension(name.to_owned()))?,
                );
            }
            if dims.is_empty() {
                return Err(CuboidSpecError::EmptyGroup(group.to_owned()));
            }
            groups.push(Cuboid::of(&dims));
        }
        if groups.is_empty() {
            return Err(CuboidSpecError::Empty);
        }
        Ok(CuboidSet::from_groups(&groups))
    }

    /// The spec string this set was declared with (canonical form).
    pub fn spec(&self) -> String {
        self.groups
            .iter()
            .map(|g| g.dims().map(Dim::name).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
            .join(";")
    }

    pub fn iter(&self) -> impl Iterator<Item = Cuboid> + '_ {
        self.cuboids.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.cuboids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cuboids.is_empty()
    }

    pub fn contains(&self, c: Cuboid) -> bool {
        self.cuboids.contains(&c)
    }

    /// The cuboids to build for this set when genre is a function of content (each title has
    /// one genre, as in a batch joined with one catalog): a cuboid with both is its cuboid
    /// without genre, its cells keyed with each title's genre (the derived dimensions of OLAP
    /// engines). Such a cube's cells are read in this set's order with
    /// [`Cube::derived_cell_order`].
    pub fn genre_derived(&self) -> CuboidSet {
        let built: Vec<Cuboid> = self
            .cuboids
            .iter()
            .map(|c| {
                if c.has(Dim::ContentId) {
                    c.without(Dim::Genre)
                } else {
                    *c
                }
            })
            .collect();
        CuboidSet::from_groups(&built)
    }

    /// The smallest materialized cuboid that keeps all of `dims`: the one a query grouping or
    /// filtering on them reads and rolls up. Among equals, the one without `content_id` (fewer
    /// cells) wins.
    pub fn best_for(&self, dims: &[Dim]) -> Option<Cuboid> {
        let needed = Cuboid::of(dims);
        self.cuboids
            .iter()
            .copied()
            .filter(|c| c.contains(needed))
            .min_by_key(|c| (c.len(), c.has(Dim::ContentId), c.0))
    }
}

/// The exact measures of a cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measures {
    pub plays: u64,
    pub watch_seconds: u64,
    pub completed: u64,
    pub buffering_ms: u64,
    pub bitrate_sum: u64,
    pub bitrate_count: u64,
}

impl Measures {
    /// The measures in the order of the contract's columns (plays, watch_seconds, completed,
    /// buffering_ms, bitrate_sum, bitrate_count).
    pub fn values(&self) -> [u64; 6] {
        [
            self.plays,
            self.watch_seconds,
            self.completed,
            self.buffering_ms,
            self.bitrate_sum,
            self.bitrate_count,
        ]
    }

    #[inline]
    pub fn add(&mut self, f: &Fact) {
        self.plays += 1;
        self.watch_seconds += u64::from(f.watch_seconds);
        self.completed += u64::from(f.completed);
        self.buffering_ms += u64::from(f.buffering_ms);
        if f.bitrate_kbps > 0 {
            self.bitrate_sum += u64::from(f.bitrate_kbps);
            self.bitrate_count += 1;
        }
    }

    #[inline]
    pub fn merge(&mut self, o: &Measures) {
        self.plays += o.plays;
        self.watch_seconds += o.watch_seconds;
        self.completed += o.completed;
        self.buffering_ms += o.buffering_ms;
        self.bitrate_sum += o.bitrate_sum;
        self.bitrate_count += o.bitrate_count;
    }
}

/// One cell's content.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    pub measures: Measures,
    pub viewers: ViewerSketch,
}

impl Cell {
    /// Adds one event.
    #[inline]
    pub fn add(&mut self, f: &Fact) {
        self.measures.add(f);
        self.viewers.insert(f.viewer);
    }

    pub fn merge(&mut self, o: &Cell) {
        self.measures.merge(&o.measures);
        self.viewers.merge(&o.viewers);
    }
}

/// A validated, pseudonymized event reduced to what the cube needs. Text dimensions are ids in
/// the [`Cube`]'s dictionaries (see [`Cube::content_id`] and [`Cube::genre_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fact {
    pub country: Country,
    pub device: Device,
    pub genre: u32,
    pub content: u32,
    /// The viewer's pseudonym hash ([`crate::pseudonym::Pseudonym::sketch_hash`]).
    pub viewer: u64,
    pub watch_seconds: u32,
    /// 0 when the event gave none: the contract's bitrates start at 1.
    pub bitrate_kbps: u32,
    /// 0 when the event gave none, which is what it adds to the sum. (Two plain integers rather
    /// than options keep a fact at 32 bytes: there are millions of them in a batch.)
    pub buffering_ms: u32,
    pub completed: bool,
}

const _: () = assert!(std::mem::size_of::<Fact>() == 32);

/// A cell's coordinates, owned. `None` is a rolled-up dimension ("all"), never a real value.
/// The texts are shared: the cells a cube gives away point at its dictionaries' strings instead
/// of each carrying copies (a day has millions of cells and a few thousand titles).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dims {
    pub country: Option<Country>,
    pub device: Option<Device>,
    pub genre: Option<Arc<str>>,
    pub content_id: Option<Arc<str>>,
}

/// A cell's coordinates, borrowed from a cube's dictionaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DimsRef<'a> {
    pub country: Option<Country>,
    pub device: Option<Device>,
    pub genre: Option<&'a str>,
    pub content_id: Option<&'a str>,
}

impl DimsRef<'_> {
    pub fn cuboid(&self) -> Cuboid {
        let mut bits = 0;
        bits |= u8::from(self.country.is_some()) * Dim::Country.bit();
        bits |= u8::from(self.device.is_some()) * Dim::Device.bit();
        bits |= u8::from(self.genre.is_some()) * Dim::Genre.bit();
        bits |= u8::from(self.content_id.is_some()) * Dim::ContentId.bit();
        Cuboid(bits)
    }

    /// The value of `d` as text, `None` when rolled up.
    pub fn get(&self, d: Dim) -> Option<&str> {
        match d {
            Dim::Country => self.country.as_ref().map(Country::as_str),
            Dim::Device => self.device.map(Device::as_str),
            Dim::Genre => self.genre,
            Dim::ContentId => self.content_id,
        }
    }

    pub fn to_owned(&self) -> Dims {
        Dims {
            country: self.country,
            device: self.device,
            genre: self.genre.map(Arc::from),
            content_id: self.content_id.map(Arc::from),
        }
    }
}

impl Dims {
    pub fn as_ref(&self) -> DimsRef<'_> {
        DimsRef {
            country: self.country,
            device: self.device,
            genre: self.genre.as_deref(),
            content_id: self.content_id.as_deref(),
        }
    }
}

/// String interning for one dimension; id 0 is reserved for "rolled up".
#[derive(Clone, Debug)]
struct Interner {
    ids: FxHashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            ids: FxHashMap::default(),
            names: vec!["".into()],
        }
    }
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        // More than 2^32 distinct values of one dimension in one bucket cannot happen: each comes
        // from at least one event and the key packs 32 bits (content) or 19 (genre).
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = s.into();
        self.names.push(Arc::clone(&name));
        self.ids.insert(name, id);
        id
    }

    fn name(&self, id: u32) -> Option<&str> {
        self.shared(id).map(|n| &**n)
    }

    fn shared(&self, id: u32) -> Option<&Arc<str>> {
        if id == 0 {
            return None;
        }
        self.names.get(id as usize)
    }
}

/// The largest number of distinct genres a cube can key.
pub const MAX_GENRES: u32 = (1 << 19) - 1;

// Cell key layout (u64): device+1 in bits 0..3, country code+1 in bits 3..13, genre id in bits
// 13..32, content id in bits 32..64. A zero part is a rolled-up dimension.
const DEVICE_MASK: u64 = 0b111;
const COUNTRY_SHIFT: u32 = 3;
const COUNTRY_MASK: u64 = 0x3ff << COUNTRY_SHIFT;
const GENRE_SHIFT: u32 = 13;
const GENRE_MASK: u64 = 0x7ffff << GENRE_SHIFT;
const CONTENT_SHIFT: u32 = 32;
const CONTENT_MASK: u64 = 0xffff_ffff << CONTENT_SHIFT;

fn key_mask(c: Cuboid) -> u64 {
    let mut m = 0;
    if c.has(Dim::Device) {
        m |= DEVICE_MASK;
    }
    if c.has(Dim::Country) {
        m |= COUNTRY_MASK;
    }
    if c.has(Dim::Genre) {
        m |= GENRE_MASK;
    }
    if c.has(Dim::ContentId) {
        m |= CONTENT_MASK;
    }
    m
}

/// Cells by key.
#[derive(Clone, Debug, Default)]
struct Table {
    /// Key to position in `cells`, built when first needed: a cube built in one go and then
    /// only read in order (a batch day, a consolidated partition) never needs one.
    index: OnceLock<FxHashMap<u64, u32>>,
    cells: Vec<(u64, Cell)>,
}

impl Table {
    fn index_of(cells: &[(u64, Cell)]) -> FxHashMap<u64, u32> {
        let mut index = FxHashMap::with_capacity_and_hasher(cells.len(), Default::default());
        // Fewer than 2^32 cells: each comes from at least one event of one bucket.
        index.extend(cells.iter().zip(0u32..).map(|((k, _), i)| (*k, i)));
        index
    }

    fn index(&self) -> &FxHashMap<u64, u32> {
        self.index.get_or_init(|| Self::index_of(&self.cells))
    }

    /// Cells were added without the index: it is rebuilt when next needed.
    fn forget_index(&mut self) {
        self.index = OnceLock::new();
    }

    #[inline]
    fn cell_mut(&mut self, key: u64) -> &mut Cell {
        if self.index.get().is_none() {
            self.index = OnceLock::from(Self::index_of(&self.cells));
        }
        let index = self
            .index
            .get_mut()
            .unwrap_or_else(|| unreachable!("the index is built just above"));
        let next = self.cells.len();
        let i = *index
            .entry(key)
            .or_insert_with(|| u32::try_from(next).unwrap_or(u32::MAX)) as usize;
        if i == next {
            self.cells.push((key, Cell::default()));
        }
        &mut self.cells[i].1
    }

    fn get(&self, key: u64) -> Option<&Cell> {
        let i = *self.index().get(&key)?;
        self.cells.get(i as usize).map(|(_, c)| c)
    }

    fn len(&self) -> usize {
        self.cells.len()
    }
}

/// Up to `threads` ranges of `facts` (sorted by content) that split no title, for
/// [`Cube::add_all_on`]: the first is the smaller, as its thread also builds the cuboids
/// without content (about a quarter of the work of those with it).
fn title_ranges(facts: &[Fact], threads: usize) -> Vec<std::ops::Range<usize>> {
    let n = facts.len();
    // The first range gets (n - (threads - 1) n / 4) / threads, the others the rest evenly.
    let first = n.saturating_sub((threads - 1) * n / 4) / threads;
    let mut ranges = Vec::with_capacity(threads);
    let mut start = 0;
    for t in 0..threads - 1 {
        let target = first + t * (n - first) / (threads - 1);
        let Some(at) = facts.get(target.max(start)) else {
            break;
        };
        // The range ends where the title at the target begins (or ends, if it begins here).
        let mut end = facts.partition_point(|f| f.content < at.content);
        if end <= start {
            end = facts.partition_point(|f| f.content <= at.content);
        }
        if end >= n {
            break;
        }
        ranges.push(start..end);
        start = end;
    }
    ranges.push(start..n);
    ranges
}

/// Appends the cells of one cuboid to a table's cells, from `start` on, and finds them again.
/// When the cuboid's keys come in order, equal keys are neighbours and need no index: a day's
/// facts are sorted by their full key (see `batch::day_cube`), and a cuboid that keeps a prefix
/// of the key's dimensions (content, genre, country, device) sees its keys in order too.
/// The index is borrowed so that one allocation serves every cuboid of a build.
struct Appender<'i> {
    start: usize,
    in_order: bool,
    index: &'i mut FxHashMap<u64, u32>,
}

impl<'i> Appender<'i> {
    fn new(
        start: usize,
        keys: impl Iterator<Item = u64>,
        index: &'i mut FxHashMap<u64, u32>,
    ) -> Appender<'i> {
        index.clear();
        Appender {
            start,
            in_order: keys.is_sorted(),
            index,
        }
    }

    /// The position of `key`'s cell, appended (empty) if new, and whether it is new.
    #[inline]
    fn slot(&mut self, cells: &mut Vec<(u64, Cell)>, key: u64) -> (usize, bool) {
        let next = cells.len();
        if self.in_order {
            if next > self.start && cells[next - 1].0 == key {
                return (next - 1, false);
            }
        } else {
            let j = *self
                .index
                .entry(key)
                .or_insert_with(|| u32::try_from(next).unwrap_or(u32::MAX))
                as usize;
            if j != next {
                return (j, false);
            }
        }
        cells.push((key, Cell::default()));
        (next, true)
    }
}

/// The memory of a dropped cube's cells, empty, to build another cube in.
#[derive(Debug, Default)]
pub struct CubeSpace {
    cells: Vec<(u64, Cell)>,
}

impl CubeSpace {
    /// Room for `cells` cells (memory the system hands out as it is first touched).
    pub fn with_capacity(cells: usize) -> CubeSpace {
        CubeSpace {
            cells: Vec::with_capacity(cells),
        }
    }
}

/// The cells of one time bucket.
#[derive(Clone, Debug)]
pub struct Cube {
    cuboids: CuboidSet,
    masks: Vec<u64>,
    genres: Interner,
    contents: Interner,
    table: Table,
}

impl Cube {
    pub fn new(cuboids: &CuboidSet) -> Cube {
        Cube {
            masks: cuboids.iter().map(key_mask).collect(),
            cuboids: cuboids.clone(),
            genres: Interner::default(),
            contents: Interner::default(),
            table: Table::default(),
        }
    }

    /// A cube with room for about `cells` cells, built in the memory an earlier cube left
    /// ([`Self::into_space`]): a run that builds cube after cube of similar sizes touches the
    /// same pages again rather than asking the system for new ones each time.
    pub fn with_space(cuboids: &CuboidSet, space: CubeSpace, cells: usize) -> Cube {
        let mut cube = Cube::new(cuboids);
        // Too small: a new allocation rather than `reserve`, which would copy the old one.
        if space.cells.capacity() >= cells {
            cube.table.cells = space.cells;
            cube.table.cells.clear();
        } else {
            cube.table.cells = Vec::with_capacity(cells);
        }
        cube
    }

    /// Drops the cells and keeps their memory for [`Self::with_space`].
    pub fn into_space(self) -> CubeSpace {
        let mut cells = self.table.cells;
        cells.clear();
        CubeSpace { cells }
    }

    pub fn cuboids(&self) -> &CuboidSet {
        &self.cuboids
    }

    /// The dictionary id of a content id, for building [`Fact`]s.
    pub fn content_id(&mut self, content_id: &str) -> u32 {
        self.contents.id(content_id)
    }

    /// The dictionary id of a genre, for building [`Fact`]s.
    pub fn genre_id(&mut self, genre: &str) -> u32 {
        self.genres.id(genre).min(MAX_GENRES)
    }

    fn full_key(country: Option<Country>, device: Option<Device>, genre: u32, content: u32) -> u64 {
        let d = device.map_or(0, |d| u64::from(d.code()) + 1);
        let c = country.map_or(0, |c| u64::from(c.code()) + 1);
        d | (c << COUNTRY_SHIFT)
            | ((u64::from(genre) << GENRE_SHIFT) & GENRE_MASK)
            | (u64::from(content) << CONTENT_SHIFT)
    }

    fn fact_key(f: &Fact) -> u64 {
        Self::full_key(Some(f.country), Some(f.device), f.genre, f.content)
    }

    /// Adds one event to every cuboid's cell.
    #[inline]
    pub fn add(&mut self, f: &Fact) {
        let key = Self::fact_key(f);
        for i in 0..self.masks.len() {
            self.table.cell_mut(key & self.masks[i]).add(f);
        }
    }

    /// Adds many events, with the same cells as [`Self::add`] for each. The events update only
    /// the cells of the largest cuboids (those no other cuboid of the set contains); every other
    /// cuboid is then rolled up from its smallest parent already built. A coarse cell thus merges
    /// a few parent cells instead of being updated by each of its events, and the roll-up reads
    /// its parent in order and looks its cells up in an index that is small next to it.
    pub fn add_all(&mut self, facts: &[Fact]) {
        self.add_all_on(facts, 1);
    }

    /// [`Self::add_all`] on up to `threads` threads, when `facts` are sorted by content (as a
    /// batch day's are): the cuboids with content are built over disjoint ranges of titles,
    /// one range a thread, while the calling thread also builds the cuboids without content.
    /// A range's cells of a cuboid with content are all its cells for those titles, so the
    /// ranges' cells are only put side by side.
    pub fn add_all_on(&mut self, facts: &[Fact], threads: usize) {
        if facts.is_empty() {
            return;
        }
        let all: Vec<Cuboid> = self.cuboids.iter().collect();
        let split = all.iter().any(|c| c.has(Dim::ContentId));
        let ranges = if threads > 1 && split && facts.is_sorted_by_key(|f| f.content) {
            title_ranges(facts, threads)
        } else {
            Vec::new()
        };
        let build = |out: &mut Vec<(u64, Cell)>| {
            if ranges.len() < 2 {
                return Self::build_into(all, out, facts);
            }
            let (with, without): (Vec<Cuboid>, Vec<Cuboid>) =
                all.into_iter().partition(|c| c.has(Dim::ContentId));
            std::thread::scope(|s| {
                let helpers: Vec<_> = ranges[1..]
                    .iter()
                    .map(|r| {
                        let (with, facts) = (with.clone(), &facts[r.clone()]);
                        s.spawn(move || {
                            let mut cells = Vec::new();
                            Self::build_into(with, &mut cells, facts);
                            cells
                        })
                    })
                    .collect();
                Self::build_into(without, out, facts);
                Self::build_into(with, out, &facts[ranges[0].clone()]);
                for h in helpers {
                    let cells = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                    out.extend(cells);
                }
            });
        };
        if self.table.cells.is_empty() {
            // Built in place (keeping any room given by `with_space`).
            build(&mut self.table.cells);
            self.table.forget_index();
        } else {
            let mut fresh = Vec::new();
            build(&mut fresh);
            for (key, cell) in fresh {
                self.table.cell_mut(key).merge(&cell);
            }
        }
    }

    /// Appends every cuboid of `cuboids` built from `facts` to `out`, one cuboid after the
    /// other, each cuboid's cells contiguous so that its children read them in order. A cuboid
    /// is rolled up from one of `cuboids`, or built from the facts when none contains it.
    /// Besides `out`, only the index of the cuboid being built is held, and none when its keys
    /// come in order.
    fn build_into(cuboids: Vec<Cuboid>, out: &mut Vec<(u64, Cell)>, facts: &[Fact]) {
        let mut order = cuboids;
        // Parents before their children: more dimensions first.
        order.sort_by_key(|c| std::cmp::Reverse(c.len()));
        let mut built: Vec<(Cuboid, std::ops::Range<usize>)> = Vec::with_capacity(order.len());
        let mut index = FxHashMap::default();
        for c in order {
            let mask = key_mask(c);
            let start = out.len();
            let parent = built
                .iter()
                .filter(|(p, _)| *p != c && p.contains(c))
                .min_by_key(|(_, r)| r.len())
                .map(|(_, r)| r.clone());
            match parent {
                None => {
                    let key = |f: &Fact| Self::fact_key(f) & mask;
                    let mut cells = Appender::new(start, facts.iter().map(key), &mut index);
                    for f in facts {
                        let (j, _) = cells.slot(out, key(f));
                        out[j].1.add(f);
                    }
                }
                Some(range) => {
                    let keys = out[range.clone()].iter().map(|(k, _)| k & mask);
                    let mut cells = Appender::new(start, keys, &mut index);
                    for i in range {
                        let (j, new) = cells.slot(out, out[i].0 & mask);
                        // Parents lie before `start`, the child's cells from it on.
                        let (parents, children) = out.split_at_mut(start);
                        if new {
                            // A child cell's first parent, already normalized, is copied as it
                            // is. Many children have one parent each: a title's genre is the
                            // same in all its events, so dropping the genre keeps cells apart.
                            children[j - start].1.clone_from(&parents[i].1);
                        } else {
                            children[j - start].1.merge(&parents[i].1);
                        }
                    }
                }
            }
            // Inserts and roll-ups leave sketches with unsorted tails; sort them once here
            // rather than in every later merge, estimate or encoding.
            for (_, cell) in &mut out[start..] {
                cell.viewers.normalize();
            }
            built.push((c, start..out.len()));
        }
    }

    /// Merges a cell given by its coordinates (a stored cell, say). Cells of cuboids outside this
    /// cube's set are merged too: the caller decides what it reads.
    pub fn merge_cell(&mut self, dims: DimsRef<'_>, cell: &Cell) {
        let genre = dims.genre.map_or(0, |g| self.genre_id(g));
        let content = dims.content_id.map_or(0, |c| self.content_id(c));
        let key = Self::full_key(dims.country, dims.device, genre, content);
        self.table.cell_mut(key).merge(cell);
    }

    /// Merges another cube into this one.
    pub fn merge(&mut self, other: &Cube) {
        for (dims, cell) in other.cells() {
            self.merge_cell(dims, cell);
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.cells.is_empty()
    }

    fn dims_of(&self, key: u64) -> DimsRef<'_> {
        dims_of(&self.genres, &self.contents, key)
    }

    /// Every cell with its coordinates, in no particular order.
    pub fn cells(&self) -> impl Iterator<Item = (DimsRef<'_>, &Cell)> {
        self.table.cells.iter().map(|(k, c)| (self.dims_of(*k), c))
    }

    /// The order of the cells by cuboid, then by coordinates in dictionary order (which follows
    /// the input): the same input always gives the same order. Only the order (16 bytes a cell)
    /// is held; the cells are looked up as they are taken, a range at a time if need be (see
    /// [`Self::ordered_cells`]).
    pub fn cell_order(&self) -> CellOrder {
        CellOrder(self.sorted_order().0)
    }

    /// The order of the cells of `set` in a cube built with [`CuboidSet::genre_derived`] of it,
    /// as [`Self::cell_order`] gives it for a cube of `set`: a cell of a cuboid with genre and
    /// content is the cell without genre, keyed with `genre_of_content[content id]` (as these
    /// ids are in this cube). A cuboid built but not in `set` is left out.
    pub fn derived_cell_order(&self, set: &CuboidSet, genre_of_content: &[u32]) -> CellOrder {
        let (built, starts) = self.sorted_order();
        let cells = |c: Cuboid| &built[starts[usize::from(c.0)]..starts[usize::from(c.0) + 1]];
        let derived = |c: Cuboid| c.has(Dim::ContentId) && c.has(Dim::Genre);
        // The built cuboid whose cells are those of `c`.
        let source = |c: Cuboid| {
            if derived(c) { c.without(Dim::Genre) } else { c }
        };
        let len = set.iter().map(|c| cells(source(c)).len()).sum();
        let mut order = Vec::with_capacity(len);
        // In bit order, as `sorted_order` groups them. A title's cells keep their order with
        // its genre added: content ranks above genre in a key.
        for c in set.iter() {
            if derived(c) {
                let genre = |k: u64| {
                    let g = genre_of_content.get(content_of(k) as usize).copied();
                    (u64::from(g.unwrap_or(0)) << GENRE_SHIFT) & GENRE_MASK
                };
                order.extend(cells(source(c)).iter().map(|(k, i)| (k | genre(*k), *i)));
            } else {
                order.extend_from_slice(cells(c));
            }
        }
        CellOrder(order)
    }

    /// The cells at `range` of `order` (this cube's [`Self::cell_order`]), with genre and content
    /// as ids into [`Self::genre_names`] and [`Self::content_names`], for writers that keep
    /// tables of their own per name.
    pub fn ordered_cells<'a>(
        &'a self,
        order: &'a CellOrder,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (CellIds, &'a Cell)> {
        order.0[range]
            .iter()
            .filter_map(|(k, i)| Some((cell_ids(*k), &self.table.cells.get(*i as usize)?.1)))
    }

    /// The genres by id; id 0, the empty name, stands for rolled up.
    pub fn genre_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.genres.names.iter().map(|n| &**n)
    }

    /// The content ids by id; id 0, the empty name, stands for rolled up.
    pub fn content_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.contents.names.iter().map(|n| &**n)
    }

    /// Keys and positions of the cells in the order of [`Self::cell_order`]. A cuboid's cells
    /// are grouped by counting, and sorted only when they are not in order yet (most are, as
    /// [`Self::add_all`] leaves them). Also gives where each cuboid's group lies: cuboid `b`'s
    /// at `order[starts[b]..starts[b + 1]]`.
    fn sorted_order(&self) -> (Vec<(u64, u32)>, CuboidStarts) {
        let cells = &self.table.cells;
        let cuboid = |key: u64| usize::from(cuboid_of(key).bits());
        // Cuboid `b`'s cells go to order[starts[b]..starts[b + 1]] (bits are below 16).
        let mut starts: CuboidStarts = [0; (1 << Dim::ALL.len()) + 1];
        for (k, _) in cells {
            starts[cuboid(*k) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut order: Vec<(u64, u32)> = vec![(0, 0); cells.len()];
        let mut next = starts;
        for ((k, _), i) in cells.iter().zip(0u32..) {
            let at = &mut next[cuboid(*k)];
            order[*at] = (*k, i);
            *at += 1;
        }
        for range in starts.windows(2) {
            let group = &mut order[range[0]..range[1]];
            if !group.is_sorted() {
                group.sort_unstable();
            }
        }
        (order, starts)
    }

    /// The cell at these coordinates.
    pub fn get(&self, dims: DimsRef<'_>) -> Option<&Cell> {
        let genre = match dims.genre {
            Some(g) => *self.genres.ids.get(g)?,
            None => 0,
        };
        let content = match dims.content_id {
            Some(c) => *self.contents.ids.get(c)?,
            None => 0,
        };
        self.table
            .get(Self::full_key(dims.country, dims.device, genre, content))
    }

    /// Consumes the cube into owned cells.
    pub fn into_cells(self) -> Vec<(Dims, Cell)> {
        let Cube {
            genres,
            contents,
            table,
            ..
        } = self;
        table
            .cells
            .into_iter()
            .map(|(k, mut c)| {
                c.viewers.normalize();
                (owned_dims(&genres, &contents, k), c)
            })
            .collect()
    }
}

/// The coordinates of `key`, sharing the dictionaries' strings.
fn owned_dims(genres: &Interner, contents: &Interner, key: u64) -> Dims {
    let d = dims_of(genres, contents, key);
    Dims {
        country: d.country,
        device: d.device,
        genre: genres.shared(genre_of(key)).cloned(),
        content_id: contents.shared(content_of(key)).cloned(),
    }
}

fn genre_of(key: u64) -> u32 {
    ((key & GENRE_MASK) >> GENRE_SHIFT) as u32
}

fn content_of(key: u64) -> u32 {
    (key >> CONTENT_SHIFT) as u32
}

/// The cuboid of a cell key: the dimensions whose part is not zero.
fn cuboid_of(key: u64) -> Cuboid {
    let mut bits = 0;
    bits |= u8::from(key & COUNTRY_MASK != 0) * Dim::Country.bit();
    bits |= u8::from(key & DEVICE_MASK != 0) * Dim::Device.bit();
    bits |= u8::from(key & GENRE_MASK != 0) * Dim::Genre.bit();
    bits |= u8::from(key & CONTENT_MASK != 0) * Dim::ContentId.bit();
    Cuboid(bits)
}

/// Where each cuboid's cells begin in a cube's order, by cuboid bits, and where the last ends.
type CuboidStarts = [usize; (1 << Dim::ALL.len()) + 1];

/// A cube's cells in order (see [`Cube::cell_order`]).
#[derive(Debug)]
pub struct CellOrder(Vec<(u64, u32)>);

impl CellOrder {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A cell's coordinates with genre and content as dictionary ids (0: rolled up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellIds {
    pub country: Option<Country>,
    pub device: Option<Device>,
    pub genre: u32,
    pub content: u32,
}

fn cell_ids(key: u64) -> CellIds {
    let d = (key & DEVICE_MASK) as u8;
    let c = ((key & COUNTRY_MASK) >> COUNTRY_SHIFT) as u16;
    CellIds {
        device: d.checked_sub(1).and_then(Device::from_code),
        country: c.checked_sub(1).and_then(Country::from_code),
        genre: genre_of(key),
        content: content_of(key),
    }
}

fn dims_of<'a>(genres: &'a Interner, contents: &'a Interner, key: u64) -> DimsRef<'a> {
    let d = (key & DEVICE_MASK) as u8;
    let c = ((key & COUNTRY_MASK) >> COUNTRY_SHIFT) as u16;
    DimsRef {
        device: d.checked_sub(1).and_then(Device::from_code),
        country: c.checked_sub(1).and_then(Country::from_code),
        genre: genres.name(genre_of(key)),
        content_id: contents.name(content_of(key)),
    }
}

impl PartialEq for Cube {
    /// Two cubes are equal when they hold the same cells at the same coordinates.
    fn eq(&self, other: &Cube) -> bool {
        self.len() == other.len() && self.cells().all(|(d, c)| other.get(d) == Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fact(
        cube: &mut Cube,
        country: &str,
        device: Device,
        genre: &str,
        content: &str,
        viewer: u64,
        watch: u32,
    ) -> Fact {
        Fact {
            country: Country::parse(country).expect("country"),
            device,
            genre: cube.genre_id(genre),
            content: cube.content_id(content),
            viewer,
            watch_seconds: watch,
            bitrate_kbps: if watch.is_multiple_of(3) {
                0
            } else {
                watch * 10 + 1
            },
            buffering_ms: if watch.is_multiple_of(5) { 0 } else { watch },
            completed: watch.is_multiple_of(2),
        }
    }

    type Input = (usize, usize, usize, usize, u64, u32);

    fn facts_of(cube: &mut Cube, input: &[Input]) -> Vec<Fact> {
        const C: [&str; 3] = ["BR", "US", "PT"];
        const G: [&str; 3] = ["drama", "comedy", "unknown"];
        input
            .iter()
            .map(|&(c, d, g, n, v, w)| {
                fact(
                    cube,
                    C[c % 3],
                    Device::ALL[d % 5],
                    G[g % 3],
                    &format!("c{n}"),
                    v,
                    w,
                )
            })
            .collect()
    }

    fn build(set: &CuboidSet, input: &[Input]) -> Cube {
        let mut cube = Cube::new(set);
        for f in facts_of(&mut cube, input) {
            cube.add(&f);
        }
        cube
    }

    fn input() -> impl Strategy<Value = Vec<Input>> {
        prop::collection::vec(
            (
                0..3usize,
                0..5usize,
                0..3usize,
                0..6usize,
                0..40u64,
                0..7200u32,
            ),
            0..60,
        )
    }

    #[test]
    fn the_full_cube_has_sixteen_cuboids() {
        assert_eq!(CuboidSet::default().len(), 16);
        assert_eq!(
            CuboidSet::default().spec(),
            "country,device,genre,content_id"
        );
        assert_eq!(
            CuboidSet::parse("country,oops"),
            Err(CuboidSpecError::UnknownDimension("oops".into()))
        );
        assert_eq!(CuboidSet::parse(" ; "), Err(CuboidSpecError::Empty));
    }

    #[test]
    fn best_cuboid_is_the_smallest_superset() {
        let set = CuboidSet::parse("country,device,genre;content_id,country").expect("spec");
        assert_eq!(set.best_for(&[]), Some(Cuboid::APEX));
        assert_eq!(
            set.best_for(&[Dim::ContentId]),
            Some(Cuboid::of(&[Dim::ContentId]))
        );
        assert_eq!(set.best_for(&[Dim::ContentId, Dim::Device]), None);
        assert!(!set.contains(Cuboid::BASE));
    }

    #[test]
    fn a_rolled_up_dimension_is_not_a_value() {
        let set = CuboidSet::default();
        let mut cube = Cube::new(&set);
        // A content id that is the empty string can't be stored (validation forbids it), and a
        // genre id 0 would mean "all": the dictionary never hands it out.
        let f = fact(&mut cube, "BR", Device::Tv, "drama", "c1", 1, 10);
        assert_ne!(f.genre, 0);
        assert_ne!(f.content, 0);
        cube.add(&f);
        assert_eq!(cube.len(), 16);
        let total = cube.get(DimsRef::default()).expect("apex");
        assert_eq!(total.measures.plays, 1);
    }

    proptest! {
        #[test]
        fn merge_is_commutative_and_associative(a in input(), b in input(), c in input()) {
            let set = CuboidSet::default();
            let (ca, cb, cc) = (build(&set, &a), build(&set, &b), build(&set, &c));
            let mut ab = ca.clone(); ab.merge(&cb);
            let mut ba = cb.clone(); ba.merge(&ca);
            prop_assert!(ab == ba);
            let mut ab_c = ab.clone(); ab_c.merge(&cc);
            let mut bc = cb.clone(); bc.merge(&cc);
            let mut a_bc = ca.clone(); a_bc.merge(&bc);
            prop_assert!(ab_c == a_bc);
            // merging parts equals building from the concatenation
            let all: Vec<_> = a.iter().chain(&b).chain(&c).copied().collect();
            prop_assert!(ab_c == build(&set, &all));
        }

        #[test]
        fn adding_all_at_once_equals_adding_one_by_one(
            before in input(),
            a in input(),
            groups in prop::collection::vec(1..=0b1111u8, 1..4),
        ) {
            let groups: Vec<Cuboid> = groups.into_iter().map(Cuboid).collect();
            for set in [CuboidSet::default(), CuboidSet::from_groups(&groups)] {
                let one_by_one = build(&set, &[before.clone(), a.clone()].concat());
                // The same facts, the later ones added at once to a cube that has cells.
                let mut at_once = build(&set, &before);
                let facts = facts_of(&mut at_once, &a);
                at_once.add_all(&facts);
                prop_assert!(at_once == one_by_one);
                let mut fresh = Cube::new(&set);
                let facts = facts_of(&mut fresh, &a);
                fresh.add_all(&facts);
                prop_assert!(fresh == build(&set, &a));
            }
        }

        #[test]
        fn a_cube_built_in_an_earlier_cubes_space_equals_a_fresh_one(
            a in input(),
            b in input(),
            room in 0..200usize,
        ) {
            let set = CuboidSet::default();
            let mut first = Cube::new(&set);
            let facts = facts_of(&mut first, &a);
            first.add_all(&facts);
            // Room for fewer cells than the next cube needs, or more.
            let mut second = Cube::with_space(&set, first.into_space(), room);
            let facts = facts_of(&mut second, &b);
            second.add_all(&facts);
            prop_assert!(second == build(&set, &b));
            let mut third = Cube::with_space(&set, second.into_space(), 0);
            prop_assert!(third.is_empty());
            let facts = facts_of(&mut third, &a);
            third.add_all(&facts);
            prop_assert!(third == build(&set, &a));
        }

        #[test]
        fn building_on_threads_equals_building_on_one(
            a in input(),
            threads in 1..12usize,
            groups in prop::collection::vec(1..=0b1111u8, 1..4),
        ) {
            let groups: Vec<Cuboid> = groups.into_iter().map(Cuboid).collect();
            for set in [CuboidSet::default(), CuboidSet::from_groups(&groups)] {
                let mut one = Cube::new(&set);
                let mut facts = facts_of(&mut one, &a);
                facts.sort_by_key(|f| f.content);
                one.add_all(&facts);
                let ranges = title_ranges(&facts, threads);
                prop_assert!(ranges.len() <= threads.max(1));
                prop_assert_eq!(ranges.first().map(|r| r.start), Some(0));
                prop_assert_eq!(ranges.last().map(|r| r.end), Some(facts.len()));
                for pair in ranges.windows(2) {
                    prop_assert_eq!(pair[0].end, pair[1].start);
                    prop_assert!(pair[0].start < pair[0].end);
                    // No title is split between two ranges.
                    prop_assert!(facts[pair[0].end - 1].content < facts[pair[1].start].content);
                }
                let mut many = Cube::new(&set);
                let mut facts = facts_of(&mut many, &a);
                facts.sort_by_key(|f| f.content);
                many.add_all_on(&facts, threads);
                prop_assert!(many == one);
                let (o1, o2) = (one.cell_order(), many.cell_order());
                prop_assert_eq!(
                    many.ordered_cells(&o2, 0..o2.len()).collect::<Vec<_>>(),
                    one.ordered_cells(&o1, 0..o1.len()).collect::<Vec<_>>()
                );
            }
        }

        #[test]
        fn a_genre_derived_cube_reads_as_the_whole_one(
            a in input(),
            groups in prop::collection::vec(1..=0b1111u8, 1..4),
        ) {
            // Each title's genre fixed, as a catalog join makes it.
            let a: Vec<Input> = a.into_iter().map(|(c, d, _, n, v, w)| (c, d, n, n, v, w)).collect();
            let groups: Vec<Cuboid> = groups.into_iter().map(Cuboid).collect();
            for set in [CuboidSet::default(), CuboidSet::from_groups(&groups)] {
                let mut whole = Cube::new(&set);
                let facts = facts_of(&mut whole, &a);
                whole.add_all(&facts);
                let built = set.genre_derived();
                prop_assert!(
                    built.iter().all(|c| !(c.has(Dim::Genre) && c.has(Dim::ContentId)))
                );
                let mut derived = Cube::new(&built);
                let facts = facts_of(&mut derived, &a);
                let mut genre_of_content = vec![0; derived.contents.names.len()];
                for f in &facts {
                    genre_of_content[f.content as usize] = f.genre;
                }
                derived.add_all(&facts);
                let order = whole.cell_order();
                let expected: Vec<_> = whole.ordered_cells(&order, 0..order.len()).collect();
                let order = derived.derived_cell_order(&set, &genre_of_content);
                let got: Vec<_> = derived.ordered_cells(&order, 0..order.len()).collect();
                prop_assert_eq!(got, expected);
            }
        }

        #[test]
        fn every_rollup_equals_the_sum_of_its_children(a in input()) {
            let set = CuboidSet::default();
            let cube = build(&set, &a);
            for (dims, cell) in cube.cells() {
                let cuboid = dims.cuboid();
                for d in Dim::ALL.into_iter().filter(|d| !cuboid.has(*d)) {
                    // children: cells of cuboid+d that agree on cuboid's dims
                    let mut sum = Cell::default();
                    for (cd, cc) in cube.cells() {
                        if cd.cuboid() == Cuboid(cuboid.0 | d.bit())
                            && cuboid.dims().all(|k| cd.get(k) == dims.get(k))
                        {
                            sum.merge(cc);
                        }
                    }
                    prop_assert_eq!(sum.measures, cell.measures);
                    prop_assert_eq!(sum.viewers.estimate(), cell.viewers.estimate());
                }
            }
        }
    }
}
