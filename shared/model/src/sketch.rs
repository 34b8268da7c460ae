//! Mergeable distinct-count sketch of unique viewers per cube cell.
//!
//! [`ViewerSketch`] counts distinct 64-bit viewer hashes. The inputs are
//! already uniformly random (the first 8 bytes of an HMAC-SHA-256 pseudonym),
//! so the sketch uses them as they are and never hashes them again.
//!
//! # Why this design
//!
//! Most cube cells have one to three viewers, a few have hundreds of
//! thousands, and the product requirements are measured against exact counts:
//! at most 3 off below 1000 viewers, at most 2.5 % relative error at the 99th
//! percentile (4 % worst case) from 1000 viewers on, and at most 16 KiB per
//! serialized cell. The sketch therefore has two representations:
//!
//! * **Sparse** (up to [`SPARSE_MAX`] = 1536 distinct hashes): the exact set
//!   of hashes, so small cells are counted exactly. In memory it is a
//!   vector (inline up to two hashes, so the one- and two-viewer cells that
//!   make up most of a cube need no heap block) made of a sorted,
//!   deduplicated prefix and a short unsorted
//!   tail of recent inserts; the tail is folded into the prefix (sort and
//!   dedup) once it grows past `max(8, prefix length)`, which keeps inserts
//!   amortized `O(log n)` with no per-insert memmove. Serialized, it costs
//!   8 bytes per hash plus a 3-4 byte header, so a one-viewer cell is 11
//!   bytes.
//! * **Dense** (more than 1536 distinct hashes): a HyperLogLog sketch with
//!   precision `p = 14` (16384 registers, one byte each in memory, 6 bits
//!   each when serialized, i.e. 12 KiB = 1536 * 8 bytes, which is why the
//!   sparse form switches over at 1536). The estimate is Otmar Ertl's
//!   "improved raw estimator" (*New cardinality estimation algorithms for
//!   HyperLogLog sketches*, 2017), which is unbiased over the whole range
//!   without empirical bias tables; its relative standard error is about
//!   `1.04 / sqrt(16384)`, i.e. 0.8 %.
//!
//! Merging is a set union (sparse) or a register-wise maximum (dense), so it
//! is associative, commutative and idempotent, and the serialized form is
//! canonical: the same set of inserted hashes gives the same bytes whatever
//! the insertion or merge order.
//!
//! # Example
//!
//! ```
//! use streamcube_model::sketch::ViewerSketch;
//!
//! let mut monday = ViewerSketch::new();
//! monday.insert(0x9e37_79b9_7f4a_7c15);
//! monday.insert(0x9e37_79b9_7f4a_7c15); // the same viewer counts once
//! let mut tuesday = ViewerSketch::new();
//! tuesday.insert(0x0123_4567_89ab_cdef);
//!
//! monday.merge(&tuesday);
//! assert_eq!(monday.estimate(), 2);
//!
//! let bytes = monday.to_bytes();
//! assert_eq!(bytes.len(), 2 + 1 + 2 * 8); // version, tag, count, 2 hashes
//! let back = ViewerSketch::from_bytes(&bytes)?;
//! assert_eq!(back, monday);
//! # Ok::<(), streamcube_model::sketch::SketchError>(())
//! ```
//!
//! # Serialized format (version 1)
//!
//! | bytes | meaning |
//! | --- | --- |
//! | 1 | format version, `1` |
//! | 1 | tag: `0` sparse, `1` dense |
//! | sparse | the number of hashes as an LEB128 varint (shortest form), then the hashes, strictly increasing, each as a little-endian `u64` |
//! | dense | the 16384 registers packed 6 bits each, least significant bits first (register `i` occupies bits `6i..6i+6` of the little-endian bit stream): 12288 bytes |
//!
//! A sparse sketch never holds more than [`SPARSE_MAX`] hashes and dense
//! registers never exceed [`MAX_REGISTER`]; [`ViewerSketch::from_bytes`]
//! rejects anything else, as well as truncated input and trailing bytes.

use std::fmt;

use smallvec::SmallVec;

/// A sparse set's hashes: up to two inline, more on the heap.
type Hashes = SmallVec<[u64; 2]>;

/// HyperLogLog precision of the dense representation: `2^14` registers.
pub const PRECISION: u32 = 14;

/// Number of registers of the dense representation (`2^PRECISION`).
pub const REGISTERS: usize = 1 << PRECISION;

/// Number of hash bits left after the register index (`64 - PRECISION`).
const Q: u32 = 64 - PRECISION;

/// Largest possible register value (`64 - PRECISION + 1`).
pub const MAX_REGISTER: u8 = (Q + 1) as u8;

/// Largest number of distinct hashes kept exactly; one more switches the
/// sketch to the dense HyperLogLog representation.
pub const SPARSE_MAX: usize = 1536;

/// Version byte that starts every serialized sketch.
pub const FORMAT_VERSION: u8 = 1;

const TAG_SPARSE: u8 = 0;
const TAG_DENSE: u8 = 1;

/// Size of the dense registers packed 6 bits each.
const PACKED_LEN: usize = REGISTERS * 6 / 8;

/// The unsorted tail may always grow to at least this many hashes before it
/// is folded into the sorted prefix.
const MIN_TAIL: usize = 8;

/// Inserts check a tail of at most this many hashes for duplicates, so cells
/// with a handful of viewers seen many times do not grow their vector.
const TAIL_SCAN: usize = 16;

/// Unsorted sparse sets up to this size are normalized on the stack by the
/// `&self` methods.
const STACK_SORT: usize = 32;

/// Why a byte string is not a valid serialized [`ViewerSketch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SketchError {
    /// The input ends before the sketch does.
    #[error("sketch truncated: need at least {expected} bytes, got {actual}")]
    Truncated {
        /// Smallest total length the input would need.
        expected: usize,
        /// Actual length of the input.
        actual: usize,
    },
    /// The first byte is not a supported format version.
    #[error("unsupported sketch format version {0} (expected {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// The representation tag is neither sparse (0) nor dense (1).
    #[error("unknown sketch representation tag {0}")]
    UnknownTag(u8),
    /// The sparse count is not a shortest-form LEB128 varint fitting in 64 bits.
    #[error("malformed varint at byte offset {offset}")]
    InvalidVarint {
        /// Offset of the varint's first byte.
        offset: usize,
    },
    /// The sparse count exceeds [`SPARSE_MAX`].
    #[error("sparse sketch claims {count} hashes, more than the maximum {SPARSE_MAX}")]
    SparseTooLarge {
        /// The count found in the input.
        count: u64,
    },
    /// The sparse hashes are not strictly increasing (unsorted or duplicated).
    #[error("sparse hashes not strictly increasing at position {index}")]
    UnsortedSparse {
        /// Position of the first hash not greater than its predecessor.
        index: usize,
    },
    /// A dense register holds a value no hash can produce.
    #[error("register {index} holds {value}, above the maximum {MAX_REGISTER}")]
    RegisterOutOfRange {
        /// Index of the register.
        index: usize,
        /// The value found.
        value: u8,
    },
    /// Bytes follow the end of the sketch.
    #[error("{extra} trailing bytes after the sketch")]
    TrailingBytes {
        /// Number of extra bytes.
        extra: usize,
    },
}

/// A mergeable distinct-count sketch of viewer hashes; see the
/// [module documentation](self) for the design and the serialized format.
///
/// Equality ([`PartialEq`]) compares the normalized content: two sketches are
/// equal exactly when they serialize to the same bytes.
#[derive(Clone, Default)]
pub struct ViewerSketch {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// Exact set. Invariants: `hashes[..sorted]` is strictly increasing (the
    /// tail `hashes[sorted..]` may repeat prefix hashes until the next
    /// normalization), and
    /// `hashes.len() <= SPARSE_MAX` between calls, so the set never holds
    /// more than `SPARSE_MAX` distinct hashes. `sorted` is a `u32` so that the
    /// whole sketch fits in 32 bytes.
    Sparse { hashes: Hashes, sorted: u32 },
    /// HyperLogLog registers, each `<= MAX_REGISTER`.
    Dense(Box<[u8; REGISTERS]>),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Sparse {
            hashes: SmallVec::new_const(),
            sorted: 0,
        }
    }
}

impl ViewerSketch {
    /// An empty sketch. Does not allocate.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            repr: Repr::Sparse {
                hashes: SmallVec::new_const(),
                sorted: 0,
            },
        }
    }

    /// Adds one viewer hash. Inserting a hash already present changes nothing.
    #[inline]
    pub fn insert(&mut self, hash: u64) {
        match &mut self.repr {
            Repr::Dense(registers) => dense_insert(registers, hash),
            Repr::Sparse { hashes, sorted } => {
                let sorted = *sorted as usize;
                // Checking the sorted prefix costs a cache miss per probe on mid-size sets;
                // there a duplicate is cheaper to append and drop at the next normalization.
                // Tiny sets (a cache line or two) and sets near the cap, where a duplicate
                // would force frequent normalizations, are still checked.
                let check = sorted <= TAIL_SCAN || sorted >= SPARSE_MAX / 2;
                if check && hashes[..sorted].binary_search(&hash).is_ok() {
                    return;
                }
                let tail = &hashes[sorted..];
                if tail.len() <= TAIL_SCAN && tail.contains(&hash) {
                    return;
                }
                hashes.push(hash);
                let tail_len = hashes.len() - sorted;
                if tail_len > MIN_TAIL.max(sorted) || hashes.len() > SPARSE_MAX {
                    self.normalize();
                }
            }
        }
    }

    /// Adds the content of `other`, so that `self` becomes the sketch of the
    /// union of both inputs. Merging is associative and commutative, and
    /// merging the same sketch again changes nothing.
    pub fn merge(&mut self, other: &ViewerSketch) {
        let merged = match (&mut self.repr, &other.repr) {
            (Repr::Dense(mine), Repr::Dense(theirs)) => {
                for (a, &b) in mine.iter_mut().zip(theirs.iter()) {
                    *a = (*a).max(b);
                }
                return;
            }
            (Repr::Dense(mine), Repr::Sparse { hashes, .. }) => {
                for &hash in hashes {
                    dense_insert(mine, hash);
                }
                return;
            }
            (Repr::Sparse { hashes, .. }, Repr::Dense(theirs)) => {
                let mut registers = theirs.clone();
                for &hash in hashes.iter() {
                    dense_insert(&mut registers, hash);
                }
                Repr::Dense(registers)
            }
            (
                Repr::Sparse { hashes, sorted },
                Repr::Sparse {
                    hashes: theirs,
                    sorted: theirs_sorted,
                },
            ) => {
                if theirs.is_empty() {
                    return;
                }
                // A sketch small next to this one joins the unsorted tail, the way inserts do:
                // rolling many small cells up into a big one then costs amortized O(log n) per
                // hash instead of a full union per merge.
                let mine_sorted = *sorted as usize;
                if theirs.len() <= MIN_TAIL.max(mine_sorted) {
                    hashes.extend_from_slice(theirs);
                    if hashes.len() - mine_sorted > MIN_TAIL.max(mine_sorted)
                        || hashes.len() > SPARSE_MAX
                    {
                        self.normalize();
                    }
                    return;
                }
                normalize_sparse(hashes, sorted);
                let union = with_sorted(theirs, *theirs_sorted, |theirs| {
                    union_sorted(hashes, theirs)
                });
                sparse_or_dense(union)
            }
        };
        self.repr = merged;
    }

    /// Estimated number of distinct hashes inserted, rounded to the nearest
    /// integer: exact while the sketch is sparse (at most [`SPARSE_MAX`]
    /// distinct hashes), a HyperLogLog estimate when dense.
    ///
    /// Only a hand-crafted dense sketch whose registers are all at
    /// [`MAX_REGISTER`] estimates infinity, returned as `u64::MAX`.
    #[must_use]
    pub fn estimate(&self) -> u64 {
        match &self.repr {
            Repr::Sparse { hashes, sorted } => {
                if *sorted as usize == hashes.len() {
                    hashes.len() as u64
                } else {
                    with_sorted(hashes, *sorted, |set| set.len() as u64)
                }
            }
            // Saturating float-to-int conversion: +inf becomes u64::MAX.
            Repr::Dense(registers) => dense_estimate(registers).round() as u64,
        }
    }

    /// `true` when no hash has been inserted (the estimate is 0).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        match &self.repr {
            Repr::Sparse { hashes, .. } => hashes.is_empty(),
            Repr::Dense(registers) => registers.iter().all(|&r| r == 0),
        }
    }

    /// Bytes the sketch holds on the heap, beside its own 32: none for one or two viewers, 8
    /// a viewer up to [`SPARSE_MAX`] (with the vector's spare room), then the registers.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Sparse { hashes, .. } if hashes.spilled() => {
                hashes.capacity() * std::mem::size_of::<u64>()
            }
            Repr::Sparse { .. } => 0,
            Repr::Dense(_) => REGISTERS,
        }
    }

    /// `true` when the sketch uses the dense HyperLogLog representation,
    /// i.e. it has seen more than [`SPARSE_MAX`] distinct hashes.
    #[must_use]
    pub fn is_dense(&self) -> bool {
        matches!(self.repr, Repr::Dense(_))
    }

    /// Sorts and deduplicates the pending inserts of a sparse sketch (a no-op
    /// for a dense one). Never needed for correctness: the `&self` methods
    /// work on a normalized copy when needed. Calling it before
    /// [`estimate`](Self::estimate), [`to_bytes`](Self::to_bytes) or
    /// comparisons just saves them that copy.
    pub fn normalize(&mut self) {
        if let Repr::Sparse { hashes, sorted } = &mut self.repr {
            normalize_sparse(hashes, sorted);
            if hashes.len() > SPARSE_MAX {
                self.repr = Repr::Dense(dense_from(hashes));
            }
        }
    }

    /// The canonical serialized form (see the module documentation): at most
    /// 12292 bytes, 3 for an empty sketch and 11 for one hash.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical serialized form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FORMAT_VERSION);
        match &self.repr {
            Repr::Sparse { hashes, sorted } => with_sorted(hashes, *sorted, |set| {
                out.push(TAG_SPARSE);
                write_varint(out, set.len() as u64);
                out.reserve(set.len() * 8);
                for hash in set {
                    out.extend_from_slice(&hash.to_le_bytes());
                }
            }),
            Repr::Dense(registers) => {
                out.push(TAG_DENSE);
                pack_registers(registers, out);
            }
        }
    }

    /// Parses a serialized sketch. Any input that [`encode_into`] could not
    /// have produced is an error; this never panics.
    ///
    /// [`encode_into`]: Self::encode_into
    pub fn from_bytes(bytes: &[u8]) -> Result<ViewerSketch, SketchError> {
        let truncated = |expected| SketchError::Truncated {
            expected,
            actual: bytes.len(),
        };
        let (&version, rest) = bytes.split_first().ok_or_else(|| truncated(2))?;
        if version != FORMAT_VERSION {
            return Err(SketchError::UnsupportedVersion(version));
        }
        let (&tag, body) = rest.split_first().ok_or_else(|| truncated(2))?;
        let repr = match tag {
            TAG_SPARSE => {
                let (count, used) = read_varint(body, 2, bytes.len())?;
                if count > SPARSE_MAX as u64 {
                    return Err(SketchError::SparseTooLarge { count });
                }
                // count <= SPARSE_MAX, so neither conversion nor product overflows.
                let count = count as usize;
                let data = &body[used..];
                let needed = count * 8;
                if data.len() < needed {
                    return Err(truncated(2 + used + needed));
                }
                if data.len() > needed {
                    return Err(SketchError::TrailingBytes {
                        extra: data.len() - needed,
                    });
                }
                let mut hashes = Hashes::with_capacity(count);
                for (index, chunk) in data.chunks_exact(8).enumerate() {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(chunk);
                    let hash = u64::from_le_bytes(word);
                    if hashes.last().is_some_and(|&last| last >= hash) {
                        return Err(SketchError::UnsortedSparse { index });
                    }
                    hashes.push(hash);
                }
                Repr::Sparse {
                    sorted: sorted_len(&hashes),
                    hashes,
                }
            }
            TAG_DENSE => {
                if body.len() < PACKED_LEN {
                    return Err(truncated(2 + PACKED_LEN));
                }
                if body.len() > PACKED_LEN {
                    return Err(SketchError::TrailingBytes {
                        extra: body.len() - PACKED_LEN,
                    });
                }
                Repr::Dense(unpack_registers(body)?)
            }
            other => return Err(SketchError::UnknownTag(other)),
        };
        Ok(ViewerSketch { repr })
    }
}

impl PartialEq for ViewerSketch {
    fn eq(&self, other: &Self) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Dense(a), Repr::Dense(b)) => a == b,
            (
                Repr::Sparse {
                    hashes: a,
                    sorted: a_sorted,
                },
                Repr::Sparse {
                    hashes: b,
                    sorted: b_sorted,
                },
            ) => with_sorted(a, *a_sorted, |a| with_sorted(b, *b_sorted, |b| a == b)),
            _ => false,
        }
    }
}

impl Eq for ViewerSketch {}

impl fmt::Debug for ViewerSketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("ViewerSketch");
        match &self.repr {
            Repr::Sparse { hashes, sorted } => out
                .field("repr", &"sparse")
                .field("distinct", &self.estimate())
                .field("unsorted_tail", &(hashes.len() - *sorted as usize)),
            Repr::Dense(registers) => out
                .field("repr", &"dense")
                .field("estimate", &self.estimate())
                .field(
                    "nonzero_registers",
                    &registers.iter().filter(|&&r| r != 0).count(),
                ),
        };
        out.finish()
    }
}

impl Extend<u64> for ViewerSketch {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, hashes: I) {
        for hash in hashes {
            self.insert(hash);
        }
    }
}

impl FromIterator<u64> for ViewerSketch {
    fn from_iter<I: IntoIterator<Item = u64>>(hashes: I) -> Self {
        let mut sketch = ViewerSketch::new();
        sketch.extend(hashes);
        sketch
    }
}

/// Sorts and deduplicates the whole sparse vector.
fn normalize_sparse(hashes: &mut Hashes, sorted: &mut u32) {
    if (*sorted as usize) < hashes.len() {
        hashes.sort_unstable();
        hashes.dedup();
        *sorted = sorted_len(hashes);
    }
}

/// The length of a sparse vector, as its `sorted` count. Sparse vectors hold a few thousand
/// hashes at most ([`SPARSE_MAX`] plus a tail no longer than it).
fn sorted_len(hashes: &[u64]) -> u32 {
    u32::try_from(hashes.len()).unwrap_or(u32::MAX)
}

/// Calls `f` with the sorted, deduplicated set of a sparse vector, sorting a
/// copy (on the stack when small) if it has an unsorted tail.
fn with_sorted<R>(hashes: &[u64], sorted: u32, f: impl FnOnce(&[u64]) -> R) -> R {
    if sorted as usize == hashes.len() {
        f(hashes)
    } else if hashes.len() <= STACK_SORT {
        let mut buffer = [0u64; STACK_SORT];
        let buffer = &mut buffer[..hashes.len()];
        buffer.copy_from_slice(hashes);
        buffer.sort_unstable();
        let len = dedup_sorted(buffer);
        f(&buffer[..len])
    } else {
        let mut copy = hashes.to_vec();
        copy.sort_unstable();
        copy.dedup();
        f(&copy)
    }
}

/// Moves the distinct values of a sorted slice to its front; returns how many.
fn dedup_sorted(values: &mut [u64]) -> usize {
    let mut len = 0;
    for read in 0..values.len() {
        if len == 0 || values[read] != values[len - 1] {
            values[len] = values[read];
            len += 1;
        }
    }
    len
}

/// Union of two strictly increasing slices, strictly increasing.
fn union_sorted(a: &[u64], b: &[u64]) -> Hashes {
    let mut out = Hashes::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        out.push(x.min(y));
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The canonical representation of a strictly increasing set.
fn sparse_or_dense(set: Hashes) -> Repr {
    if set.len() > SPARSE_MAX {
        Repr::Dense(dense_from(&set))
    } else {
        Repr::Sparse {
            sorted: sorted_len(&set),
            hashes: set,
        }
    }
}

fn dense_from(hashes: &[u64]) -> Box<[u8; REGISTERS]> {
    let mut registers = Box::new([0u8; REGISTERS]);
    for &hash in hashes {
        dense_insert(&mut registers, hash);
    }
    registers
}

/// Register index = top `PRECISION` bits; value = 1 + leading zeros of the
/// remaining `Q` bits, capped at `Q + 1` when they are all zero.
#[inline]
fn dense_insert(registers: &mut [u8; REGISTERS], hash: u64) {
    let index = (hash >> Q) as usize;
    let rest = hash << PRECISION;
    // At most Q + 1 = 51, so the narrowing cannot truncate.
    let rho = (rest.leading_zeros() + 1).min(Q + 1) as u8;
    let register = &mut registers[index];
    if rho > *register {
        *register = rho;
    }
}

/// Ertl's improved raw estimator (2017), Algorithm 6 of the paper.
fn dense_estimate(registers: &[u8; REGISTERS]) -> f64 {
    let q = Q as usize;
    let mut counts = [0u32; Q as usize + 2];
    for &r in registers.iter() {
        counts[usize::from(r).min(q + 1)] += 1;
    }
    let m = REGISTERS as f64;
    let mut z = m * tau(1.0 - f64::from(counts[q + 1]) / m);
    for &count in counts[1..=q].iter().rev() {
        z = 0.5 * (z + f64::from(count));
    }
    z += m * sigma(f64::from(counts[0]) / m);
    m * m / (2.0 * std::f64::consts::LN_2 * z)
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let z_old = z;
        z += x * y;
        y += y;
        if z == z_old {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let z_old = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == z_old {
            return z / 3.0;
        }
    }
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a shortest-form LEB128 `u64` from the start of `bytes`, which begin
/// at `offset` of an input of `total` bytes. Returns the value and the number
/// of bytes used.
fn read_varint(bytes: &[u8], offset: usize, total: usize) -> Result<(u64, usize), SketchError> {
    let invalid = SketchError::InvalidVarint { offset };
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let payload = u64::from(byte & 0x7f);
        if i == 9 && payload > 1 {
            return Err(invalid);
        }
        value |= payload << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(invalid);
            }
            return Ok((value, i + 1));
        }
    }
    if bytes.len() >= 10 {
        Err(invalid)
    } else {
        Err(SketchError::Truncated {
            expected: offset + bytes.len() + 1,
            actual: total,
        })
    }
}

/// Packs four 6-bit registers into three bytes, least significant bits first.
fn pack_registers(registers: &[u8; REGISTERS], out: &mut Vec<u8>) {
    out.reserve(PACKED_LEN);
    for group in registers.chunks_exact(4) {
        let word = u32::from(group[0] & 0x3f)
            | (u32::from(group[1] & 0x3f) << 6)
            | (u32::from(group[2] & 0x3f) << 12)
            | (u32::from(group[3] & 0x3f) << 18);
        out.extend_from_slice(&word.to_le_bytes()[..3]);
    }
}

/// Inverse of [`pack_registers`]; `packed` must be `PACKED_LEN` bytes.
fn unpack_registers(packed: &[u8]) -> Result<Box<[u8; REGISTERS]>, SketchError> {
    let mut registers = Box::new([0u8; REGISTERS]);
    for (group, (src, dst)) in packed
        .chunks_exact(3)
        .zip(registers.chunks_exact_mut(4))
        .enumerate()
    {
        let word = u32::from(src[0]) | (u32::from(src[1]) << 8) | (u32::from(src[2]) << 16);
        for (j, register) in dst.iter_mut().enumerate() {
            let value = ((word >> (6 * j)) & 0x3f) as u8;
            if value > MAX_REGISTER {
                return Err(SketchError::RegisterOutOfRange {
                    index: group * 4 + j,
                    value,
                });
            }
            *register = value;
        }
    }
    Ok(registers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A bijective 64-bit mixer (SplitMix64 finalizer): turns small ids into
    /// uniformly spread, distinct hashes.
    fn mix(id: u64) -> u64 {
        let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn sketch_of(ids: &[u64]) -> ViewerSketch {
        ids.iter().map(|&id| mix(id)).collect()
    }

    fn dense_sketch(n: u64, salt: u64) -> ViewerSketch {
        (0..n).map(|i| mix(i ^ (salt << 40))).collect()
    }

    #[test]
    fn heap_bytes_follow_the_representation() {
        assert_eq!(ViewerSketch::new().heap_bytes(), 0);
        assert_eq!(
            sketch_of(&[1, 2]).heap_bytes(),
            0,
            "two viewers stay inline"
        );
        let sparse = sketch_of(&(0..100).collect::<Vec<_>>());
        assert!(
            (800..=2 * 800).contains(&sparse.heap_bytes()),
            "{}",
            sparse.heap_bytes()
        );
        let dense = dense_sketch(SPARSE_MAX as u64 + 1, 0);
        assert!(dense.is_dense());
        assert_eq!(dense.heap_bytes(), REGISTERS);
    }

    #[test]
    fn empty() {
        let sketch = ViewerSketch::new();
        assert!(sketch.is_empty());
        assert!(!sketch.is_dense());
        assert_eq!(sketch.estimate(), 0);
        assert_eq!(sketch.to_bytes(), vec![1, 0, 0]);
        assert_eq!(sketch, ViewerSketch::default());
        assert_eq!(ViewerSketch::from_bytes(&[1, 0, 0]), Ok(sketch));
    }

    #[test]
    fn one() {
        let mut sketch = ViewerSketch::new();
        sketch.insert(0x0102_0304_0506_0708);
        assert!(!sketch.is_empty());
        assert_eq!(sketch.estimate(), 1);
        assert_eq!(
            sketch.to_bytes(),
            vec![1, 0, 1, 8, 7, 6, 5, 4, 3, 2, 1],
            "version, tag, count, little-endian hash"
        );
    }

    #[test]
    fn duplicates_count_once() {
        let mut sketch = ViewerSketch::new();
        for _ in 0..100 {
            sketch.insert(42);
            sketch.insert(7);
        }
        assert_eq!(sketch.estimate(), 2);
        // Repeats of a small set do not grow the vector.
        let Repr::Sparse { hashes, .. } = &sketch.repr else {
            panic!("expected sparse");
        };
        assert_eq!(hashes.len(), 2);

        // Duplicates across the sorted prefix and the tail.
        let mut big = ViewerSketch::new();
        for round in 0..3 {
            for id in 0..1000 {
                big.insert(mix(id));
            }
            assert_eq!(big.estimate(), 1000, "round {round}");
        }
        assert!(!big.is_dense());
    }

    #[test]
    fn extreme_hashes() {
        let mut sketch = ViewerSketch::new();
        for hash in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63, (1 << 50) - 1] {
            sketch.insert(hash);
        }
        assert_eq!(sketch.estimate(), 6);
        let bytes = sketch.to_bytes();
        assert_eq!(ViewerSketch::from_bytes(&bytes), Ok(sketch.clone()));

        // Dense registers at both extremes of rho.
        let mut dense = dense_sketch(2000, 9);
        dense.insert(0); // register 0, rho capped at 51
        dense.insert(u64::MAX); // register 16383, rho 1
        dense.insert(1 << 49); // register 0, rho 1
        let Repr::Dense(registers) = &dense.repr else {
            panic!("expected dense");
        };
        assert_eq!(registers[0], MAX_REGISTER);
        assert!(registers[REGISTERS - 1] >= 1);
        let back = ViewerSketch::from_bytes(&dense.to_bytes()).expect("valid");
        assert_eq!(back, dense);
    }

    #[test]
    fn sparse_to_dense_switch() {
        let mut sketch = ViewerSketch::new();
        for id in 0..SPARSE_MAX as u64 {
            sketch.insert(mix(id));
            assert!(!sketch.is_dense());
            assert_eq!(sketch.estimate(), id + 1);
        }
        // Re-inserting known hashes at the limit keeps it sparse and exact.
        for id in 0..SPARSE_MAX as u64 {
            sketch.insert(mix(id));
        }
        assert!(!sketch.is_dense());
        assert_eq!(sketch.estimate(), SPARSE_MAX as u64);
        assert_eq!(sketch.to_bytes().len(), 2 + 2 + SPARSE_MAX * 8);

        sketch.insert(mix(SPARSE_MAX as u64));
        assert!(sketch.is_dense());
        let estimate = sketch.estimate() as f64;
        let truth = (SPARSE_MAX + 1) as f64;
        assert!(
            (estimate - truth).abs() / truth < 0.03,
            "estimate {estimate}"
        );
        assert_eq!(sketch.to_bytes().len(), 2 + PACKED_LEN);

        // The same set reached through merges is the same dense sketch.
        let ids: Vec<u64> = (0..=SPARSE_MAX as u64).collect();
        let mut left = sketch_of(&ids[..800]);
        let right = sketch_of(&ids[700..]);
        assert!(!left.is_dense() && !right.is_dense());
        left.merge(&right);
        assert!(left.is_dense());
        assert_eq!(left, sketch);
        assert_eq!(left.to_bytes(), sketch.to_bytes());
    }

    #[test]
    fn normalize_is_invisible() {
        let ids: Vec<u64> = (0..700).collect();
        let mut sketch = sketch_of(&ids);
        let before = sketch.to_bytes();
        let estimate = sketch.estimate();
        sketch.normalize();
        assert_eq!(sketch.to_bytes(), before);
        assert_eq!(sketch.estimate(), estimate);
        let Repr::Sparse { hashes, sorted } = &sketch.repr else {
            panic!("expected sparse");
        };
        assert_eq!(*sorted as usize, hashes.len());
    }

    #[test]
    fn round_trip_sparse() {
        for n in [0u64, 1, 2, 8, 9, 17, 100, 1000, SPARSE_MAX as u64] {
            let sketch = dense_sketch(n, 1);
            assert!(!sketch.is_dense());
            let bytes = sketch.to_bytes();
            let back = ViewerSketch::from_bytes(&bytes).expect("valid sparse");
            assert_eq!(back, sketch);
            assert_eq!(back.estimate(), n);
            assert_eq!(back.to_bytes(), bytes);
            let mut appended = vec![0xaa];
            sketch.encode_into(&mut appended);
            assert_eq!(&appended[1..], &bytes[..]);
        }
    }

    #[test]
    fn round_trip_dense() {
        for n in [SPARSE_MAX as u64 + 1, 20_000, 200_000] {
            let sketch = dense_sketch(n, 2);
            assert!(sketch.is_dense());
            let bytes = sketch.to_bytes();
            assert_eq!(bytes.len(), 2 + PACKED_LEN);
            let back = ViewerSketch::from_bytes(&bytes).expect("valid dense");
            assert!(back.is_dense());
            assert_eq!(back, sketch);
            assert_eq!(back.estimate(), sketch.estimate());
            assert_eq!(back.to_bytes(), bytes);
        }
    }

    #[test]
    fn malformed_bytes_are_errors() {
        use SketchError as E;
        let sparse = dense_sketch(3, 3).to_bytes();
        let dense = dense_sketch(5000, 3).to_bytes();
        let parse = ViewerSketch::from_bytes;

        assert!(matches!(parse(&[]), Err(E::Truncated { .. })));
        assert!(matches!(parse(&[1]), Err(E::Truncated { .. })));
        assert_eq!(parse(&[0, 0, 0]), Err(E::UnsupportedVersion(0)));
        assert_eq!(parse(&[2, 0, 0]), Err(E::UnsupportedVersion(2)));
        assert_eq!(parse(&[255]), Err(E::UnsupportedVersion(255)));
        assert_eq!(parse(&[1, 2, 0]), Err(E::UnknownTag(2)));
        assert_eq!(parse(&[1, 255]), Err(E::UnknownTag(255)));

        // Sparse: missing count, truncated varint, overlong and oversized varints.
        assert!(matches!(parse(&[1, 0]), Err(E::Truncated { .. })));
        assert!(matches!(parse(&[1, 0, 0x80]), Err(E::Truncated { .. })));
        assert_eq!(
            parse(&[1, 0, 0x80, 0x00]),
            Err(E::InvalidVarint { offset: 2 })
        );
        assert_eq!(
            parse(&[1, 0, 0x81, 0x00]),
            Err(E::InvalidVarint { offset: 2 })
        );
        let mut too_long = vec![1, 0];
        too_long.extend([0xff; 10]);
        too_long.push(0x01);
        assert_eq!(parse(&too_long), Err(E::InvalidVarint { offset: 2 }));
        let mut overflow = vec![1, 0];
        overflow.extend([0xff; 9]);
        overflow.push(0x02);
        assert_eq!(parse(&overflow), Err(E::InvalidVarint { offset: 2 }));
        let mut max_varint = vec![1, 0];
        max_varint.extend([0xff; 9]);
        max_varint.push(0x01);
        assert_eq!(
            parse(&max_varint),
            Err(E::SparseTooLarge { count: u64::MAX })
        );
        let mut too_many = vec![1, 0];
        write_varint(&mut too_many, SPARSE_MAX as u64 + 1);
        too_many.extend(std::iter::repeat_n(0, (SPARSE_MAX + 1) * 8));
        assert_eq!(
            parse(&too_many),
            Err(E::SparseTooLarge {
                count: SPARSE_MAX as u64 + 1
            })
        );

        // Sparse: every truncation, trailing bytes, unsorted and duplicated hashes.
        for len in 0..sparse.len() {
            assert!(parse(&sparse[..len]).is_err(), "truncated to {len}");
        }
        let mut trailing = sparse.clone();
        trailing.push(0);
        assert_eq!(parse(&trailing), Err(E::TrailingBytes { extra: 1 }));
        let mut count_too_small = sparse.clone();
        count_too_small[2] = 2;
        assert_eq!(parse(&count_too_small), Err(E::TrailingBytes { extra: 8 }));
        let mut count_too_big = sparse.clone();
        count_too_big[2] = 4;
        assert!(matches!(
            parse(&count_too_big),
            Err(E::Truncated { expected: 35, .. })
        ));
        let hash = |i: u64| mix(i).to_le_bytes();
        let sparse_from = |words: &[[u8; 8]]| {
            let mut bytes = vec![1, 0, words.len() as u8];
            for word in words {
                bytes.extend_from_slice(word);
            }
            bytes
        };
        let (a, b) = if mix(1) < mix(2) { (1, 2) } else { (2, 1) };
        assert!(parse(&sparse_from(&[hash(a), hash(b)])).is_ok());
        assert_eq!(
            parse(&sparse_from(&[hash(b), hash(a)])),
            Err(E::UnsortedSparse { index: 1 })
        );
        assert_eq!(
            parse(&sparse_from(&[hash(a), hash(a)])),
            Err(E::UnsortedSparse { index: 1 })
        );
        assert_eq!(
            parse(&sparse_from(&[hash(a), hash(b), hash(b)])),
            Err(E::UnsortedSparse { index: 2 })
        );

        // Dense: truncations, trailing bytes, out-of-range registers.
        for len in [2, 3, 100, dense.len() - 1] {
            assert!(
                matches!(parse(&dense[..len]), Err(E::Truncated { .. })),
                "truncated to {len}"
            );
        }
        let mut trailing = dense.clone();
        trailing.push(0);
        assert_eq!(parse(&trailing), Err(E::TrailingBytes { extra: 1 }));
        let mut high = dense.clone();
        high[2] |= 0x3f; // register 0 = 63
        assert_eq!(
            parse(&high),
            Err(E::RegisterOutOfRange {
                index: 0,
                value: 63
            })
        );
        let mut high = dense.clone();
        let last = high.len() - 1;
        high[last] = (52 << 2) | (high[last] & 0x03); // register 16383 = 52
        assert_eq!(
            parse(&high),
            Err(E::RegisterOutOfRange {
                index: REGISTERS - 1,
                value: 52
            })
        );
        let mut at_max = vec![1, 1];
        at_max.extend(std::iter::repeat_n(0, PACKED_LEN));
        at_max[2] = MAX_REGISTER; // register 0 = 51 is legal
        assert!(parse(&at_max).is_ok());
    }

    #[test]
    fn decoded_corner_cases_do_not_panic() {
        // All-zero dense registers: a valid encoding that estimates 0.
        let mut zeros = vec![1, 1];
        zeros.extend(std::iter::repeat_n(0, PACKED_LEN));
        let sketch = ViewerSketch::from_bytes(&zeros).expect("valid");
        assert!(sketch.is_empty() && sketch.is_dense());
        assert_eq!(sketch.estimate(), 0);
        // All registers at the maximum: estimate is infinite, saturates.
        let mut full = ViewerSketch::from_bytes(&zeros).expect("valid");
        let Repr::Dense(registers) = &mut full.repr else {
            panic!("expected dense");
        };
        registers.fill(MAX_REGISTER);
        let bytes = full.to_bytes();
        let full = ViewerSketch::from_bytes(&bytes).expect("valid");
        assert_eq!(full.estimate(), u64::MAX);
        assert_eq!(full.to_bytes(), bytes);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(7);
        let valid = [
            dense_sketch(5, 4).to_bytes(),
            dense_sketch(4000, 4).to_bytes(),
        ];
        for _ in 0..2000 {
            let len = rng.random_range(0..40);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = ViewerSketch::from_bytes(&bytes);
            // Single-byte corruptions of valid encodings either fail or round trip.
            for base in &valid {
                let mut corrupt = base.clone();
                let at = rng.random_range(0..corrupt.len());
                corrupt[at] ^= 1 << rng.random_range(0..8);
                if let Ok(sketch) = ViewerSketch::from_bytes(&corrupt) {
                    assert_eq!(sketch.to_bytes(), corrupt);
                }
            }
        }
    }

    #[test]
    fn sizes() {
        assert!(size_of::<ViewerSketch>() <= 32);
        assert_eq!(ViewerSketch::new().to_bytes().len(), 3);
        assert_eq!(dense_sketch(1, 5).to_bytes().len(), 11);
        assert_eq!(dense_sketch(3, 5).to_bytes().len(), 27);
        for n in [100, 1000, SPARSE_MAX as u64, 1537, 1_000_000] {
            let len = dense_sketch(n, 5).to_bytes().len();
            assert!(len <= 16 * 1024, "{n} hashes: {len} bytes");
        }
        assert_eq!(
            dense_sketch(SPARSE_MAX as u64, 5).to_bytes().len(),
            2 + 2 + SPARSE_MAX * 8
        );
        assert_eq!(dense_sketch(50_000, 5).to_bytes().len(), 2 + PACKED_LEN);
        // One or two viewers live inside the sketch, with no heap block; a third moves them out.
        let mut small = ViewerSketch::new();
        for (n, hash) in [(1, 10), (2, 20), (2, 10)] {
            small.insert(hash);
            let Repr::Sparse { hashes, .. } = &small.repr else {
                panic!("expected sparse");
            };
            assert!(!hashes.spilled(), "{n} viewers spilled");
            assert_eq!(small.estimate(), n);
        }
        small.merge(&[30].into_iter().collect());
        let Repr::Sparse { hashes, .. } = &small.repr else {
            panic!("expected sparse");
        };
        assert!(hashes.spilled());
        assert_eq!(small.estimate(), 3);
        assert!(size_of::<ViewerSketch>() <= 32);
    }

    #[test]
    fn estimator_helpers() {
        assert_eq!(sigma(1.0), f64::INFINITY);
        assert_eq!(sigma(0.0), 0.0);
        assert_eq!(tau(0.0), 0.0);
        assert_eq!(tau(1.0), 0.0);
        let empty = Box::new([0u8; REGISTERS]);
        assert_eq!(dense_estimate(&empty), 0.0);
    }

    /// Exact counts below [`SPARSE_MAX`], checked after every insert; then
    /// p99 and maximum relative errors of dense sketches from 1,000 to
    /// 300,000 distinct hashes, log-spaced.
    #[test]
    fn accuracy() {
        let mut rng = StdRng::seed_from_u64(0x5eed_cafe);

        for run in 0..5 {
            let mut sketch = ViewerSketch::new();
            for n in 1..=SPARSE_MAX as u64 {
                let hash = rng.random::<u64>();
                sketch.insert(hash);
                if n % 5 == 0 {
                    sketch.insert(hash); // duplicates do not count
                }
                assert_eq!(sketch.estimate(), n, "run {run}");
            }
        }

        let sketches = 300;
        let (low, high) = (1_000f64, 300_000f64);
        let mut errors = Vec::with_capacity(sketches);
        for i in 0..sketches {
            let n = (low * (high / low).powf(i as f64 / (sketches - 1) as f64)).round() as u64;
            let mut sketch = ViewerSketch::new();
            // 64-bit random values: a collision among 300,000 has probability
            // ~2.4e-9, so `n` is the exact distinct count.
            for _ in 0..n {
                sketch.insert(rng.random());
            }
            let error = (sketch.estimate() as f64 - n as f64).abs() / n as f64;
            errors.push(error);
        }
        errors.sort_by(f64::total_cmp);
        let p99 = errors[(errors.len() * 99).div_ceil(100) - 1];
        let max = errors[errors.len() - 1];
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        println!(
            "accuracy over {sketches} sketches of 1e3..3e5: mean |err| {:.3}%, p99 {:.3}%, max {:.3}%",
            mean * 100.0,
            p99 * 100.0,
            max * 100.0
        );
        assert!(p99 <= 0.025, "p99 relative error {p99}");
        assert!(max <= 0.04, "max relative error {max}");
    }

    /// Inputs are ids from a pool small enough to repeat, and lists long
    /// enough to cross [`SPARSE_MAX`] (about a third of the cases go dense).
    fn ids() -> impl Strategy<Value = Vec<u64>> {
        prop_oneof![
            3 => prop::collection::vec(0u64..64, 0..40),
            3 => prop::collection::vec(0u64..3000, 0..1200),
            2 => prop::collection::vec(0u64..5000, 1200..3200),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn merge_is_commutative(a in ids(), b in ids()) {
            let (sa, sb) = (sketch_of(&a), sketch_of(&b));
            let mut ab = sa.clone();
            ab.merge(&sb);
            let mut ba = sb.clone();
            ba.merge(&sa);
            prop_assert_eq!(ab.to_bytes(), ba.to_bytes());
            prop_assert_eq!(&ab, &ba);
            prop_assert_eq!(ab.estimate(), ba.estimate());
        }

        #[test]
        fn merge_is_associative(a in ids(), b in ids(), c in ids()) {
            let (sa, sb, sc) = (sketch_of(&a), sketch_of(&b), sketch_of(&c));
            let mut left = sa.clone();
            left.merge(&sb);
            left.merge(&sc);
            let mut bc = sb.clone();
            bc.merge(&sc);
            let mut right = sa.clone();
            right.merge(&bc);
            prop_assert_eq!(left.to_bytes(), right.to_bytes());
            prop_assert_eq!(left, right);
        }

        #[test]
        fn merge_is_idempotent(a in ids(), b in ids()) {
            let sa = sketch_of(&a);
            let mut twice = sa.clone();
            twice.merge(&sa);
            prop_assert_eq!(twice.to_bytes(), sa.to_bytes());
            prop_assert_eq!(twice.estimate(), sa.estimate());

            let sb = sketch_of(&b);
            let mut once = sa.clone();
            once.merge(&sb);
            let mut again = once.clone();
            again.merge(&sb);
            again.merge(&sa);
            again.merge(&once);
            prop_assert_eq!(again.to_bytes(), once.to_bytes());
            prop_assert_eq!(again.estimate(), once.estimate());
        }

        #[test]
        fn insertion_order_does_not_matter(
            shuffled in ids().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
        ) {
            let (ids, permuted) = shuffled;
            let forward = sketch_of(&ids);
            let mut reversed_ids = ids.clone();
            reversed_ids.reverse();
            let mut sorted_ids = ids.clone();
            sorted_ids.sort_unstable();
            let bytes = forward.to_bytes();
            for other in [&permuted, &reversed_ids, &sorted_ids] {
                let sketch = sketch_of(other);
                prop_assert_eq!(sketch.to_bytes(), bytes.clone());
                prop_assert_eq!(sketch.estimate(), forward.estimate());
                prop_assert_eq!(&sketch, &forward);
            }
        }

        #[test]
        fn merge_equals_sketch_of_union(a in ids(), b in ids(), split in 0usize..64) {
            let mut merged = sketch_of(&a);
            merged.merge(&sketch_of(&b));
            let union: Vec<u64> = a.iter().chain(&b).copied().collect();
            let direct = sketch_of(&union);
            prop_assert_eq!(merged.to_bytes(), direct.to_bytes());
            prop_assert_eq!(merged.estimate(), direct.estimate());
            prop_assert_eq!(&merged, &direct);

            // Also when the union arrives in many small pieces.
            let pieces = split + 1;
            let mut from_pieces = ViewerSketch::new();
            for chunk in union.chunks(union.len().div_ceil(pieces).max(1)) {
                from_pieces.merge(&sketch_of(chunk));
            }
            prop_assert_eq!(from_pieces.to_bytes(), direct.to_bytes());

            // Sparse estimates are exact.
            let mut distinct = union.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() <= SPARSE_MAX {
                prop_assert!(!direct.is_dense());
                prop_assert_eq!(direct.estimate(), distinct.len() as u64);
            } else {
                prop_assert!(direct.is_dense());
            }
        }

        #[test]
        fn bytes_round_trip(a in ids()) {
            let sketch = sketch_of(&a);
            let bytes = sketch.to_bytes();
            let back = ViewerSketch::from_bytes(&bytes);
            prop_assert_eq!(back.as_ref(), Ok(&sketch));
            prop_assert!(bytes.len() <= 16 * 1024);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(sketch) = ViewerSketch::from_bytes(&bytes) {
                prop_assert_eq!(sketch.to_bytes(), bytes);
            }
        }
    }
}
