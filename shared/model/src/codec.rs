//! A compact binary form for a list of cube cells, so a store can keep a whole cuboid of a day
//! (or hour) as one value: cells are always read a cuboid at a time, and one value per cuboid
//! costs a store one write instead of one per cell.
//!
//! Layout (version 1): a version byte, the cell count (LEB128), then per cell: country code + 1
//! (u16 LE, 0 = rolled up), device code + 1 (u8, 0 = rolled up), genre and content id (each
//! LEB128 length + 1 then UTF-8, 0 = rolled up), the six measures (LEB128) and the sketch
//! (LEB128 length, then [`ViewerSketch::encode_into`]'s bytes).
//!
//! ```
//! use streamcube_model::codec::{decode_cells, encode_cells};
//! use streamcube_model::cube::{Cell, Dims};
//! let cells = vec![(Dims { genre: Some("drama".into()), ..Dims::default() }, Cell::default())];
//! assert_eq!(decode_cells(&encode_cells(&cells)).unwrap(), cells);
//! ```

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::cube::{Cell, Dims, DimsRef, Measures};
use crate::event::{Country, Device};
use crate::sketch::{SketchError, ViewerSketch};

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("cell block ends early")]
    Truncated,
    #[error("unsupported cell block version {0}")]
    Version(u8),
    #[error("cell block holds an invalid {0}")]
    Invalid(&'static str),
    #[error("cell block holds an invalid sketch: {0}")]
    Sketch(#[from] SketchError),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_text(out: &mut Vec<u8>, t: Option<&str>) {
    match t {
        None => out.push(0),
        Some(s) => {
            put_varint(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// The part of a cuboid a cell's block belongs to: its country's code + 1, 0 when the cuboid
/// rolls the country up. Stores keep one block (or a few) per cuboid and part, so a query for
/// some countries reads only theirs.
pub fn part_of(country: Option<Country>) -> u16 {
    country.map_or(0, |c| c.code() + 1)
}

/// Cells grouped by cuboid (by its bit set) and part ([`part_of`]), in that order, borrowed.
pub fn by_part(cells: &[(Dims, Cell)]) -> BTreeMap<(u8, u16), Vec<&(Dims, Cell)>> {
    let mut out: BTreeMap<(u8, u16), Vec<&(Dims, Cell)>> = BTreeMap::new();
    for cell in cells {
        let key = (cell.0.as_ref().cuboid().bits(), part_of(cell.0.country));
        out.entry(key).or_default().push(cell);
    }
    out
}

/// Encodes cells into one block.
pub fn encode_cells<C: Borrow<(Dims, Cell)>>(cells: &[C]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + cells.len() * 48);
    out.push(VERSION);
    put_varint(&mut out, cells.len() as u64);
    let mut sketch = Vec::new();
    for cell in cells {
        let (d, c) = cell.borrow();
        let country = d.country.map_or(0, |c| c.code() + 1);
        out.extend_from_slice(&country.to_le_bytes());
        out.push(d.device.map_or(0, |d| d.code() + 1));
        put_text(&mut out, d.genre.as_deref());
        put_text(&mut out, d.content_id.as_deref());
        let m = &c.measures;
        for v in m.values() {
            put_varint(&mut out, v);
        }
        sketch.clear();
        c.viewers.encode_into(&mut sketch);
        put_varint(&mut out, sketch.len() as u64);
        out.extend_from_slice(&sketch);
    }
    out
}

struct Input<'a> {
    b: &'a [u8],
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.b.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Invalid("number"))
    }

    fn text(&mut self) -> Result<Option<&'a str>, CodecError> {
        let n = self.varint()?;
        if n == 0 {
            return Ok(None);
        }
        let len = usize::try_from(n - 1).map_err(|_| CodecError::Invalid("length"))?;
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| CodecError::Invalid("text"))?;
        Ok(Some(s))
    }
}

/// The one string of a block for `text`.
fn shared<'a>(names: &mut FxHashMap<&'a str, Arc<str>>, text: Option<&'a str>) -> Option<Arc<str>> {
    text.map(|t| Arc::clone(names.entry(t).or_insert_with(|| t.into())))
}

/// Decodes a block written by [`encode_cells`]; never panics on bad input.
pub fn decode_cells(bytes: &[u8]) -> Result<Vec<(Dims, Cell)>, CodecError> {
    decode_cells_where(bytes, |_| true)
}

/// The cells of a block that `keep` accepts. The others are stepped over: neither their names
/// nor their sketches are decoded, which is most of the work when a query filters a large
/// cuboid (one country's titles out of every country's). Never panics on bad input.
pub fn decode_cells_where(
    bytes: &[u8],
    mut keep: impl FnMut(&DimsRef<'_>) -> bool,
) -> Result<Vec<(Dims, Cell)>, CodecError> {
    let mut inp = Input { b: bytes };
    let version = inp.take(1)?[0];
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let count = inp.varint()?;
    // Each cell takes at least 11 bytes: bound the allocation by the input.
    let mut cells = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(bytes.len() / 11));
    // The block's cells share one string per distinct text (a dozen genres, titles repeated
    // across devices), as a cube's own cells do.
    let mut names: FxHashMap<&str, Arc<str>> = FxHashMap::default();
    for _ in 0..count {
        let c = inp.take(2)?;
        let country = match u16::from_le_bytes([c[0], c[1]]) {
            0 => None,
            n => Some(Country::from_code(n - 1).ok_or(CodecError::Invalid("country"))?),
        };
        let device = match inp.take(1)?[0] {
            0 => None,
            n => Some(Device::from_code(n - 1).ok_or(CodecError::Invalid("device"))?),
        };
        let dims = DimsRef {
            country,
            device,
            genre: inp.text()?,
            content_id: inp.text()?,
        };
        let mut m = [0u64; 6];
        for v in &mut m {
            *v = inp.varint()?;
        }
        let len = usize::try_from(inp.varint()?).map_err(|_| CodecError::Invalid("length"))?;
        let sketch = inp.take(len)?;
        if !keep(&dims) {
            continue;
        }
        let viewers = ViewerSketch::from_bytes(sketch)?;
        cells.push((
            Dims {
                country,
                device,
                genre: shared(&mut names, dims.genre),
                content_id: shared(&mut names, dims.content_id),
            },
            Cell {
                measures: Measures {
                    plays: m[0],
                    watch_seconds: m[1],
                    completed: m[2],
                    buffering_ms: m[3],
                    bitrate_sum: m[4],
                    bitrate_count: m[5],
                },
                viewers,
            },
        ));
    }
    if !inp.b.is_empty() {
        return Err(CodecError::Invalid("trailing bytes"));
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cells() -> impl Strategy<Value = Vec<(Dims, Cell)>> {
        let dims = (
            prop::option::of(prop::sample::select(vec!["BR", "US", "PT"])),
            prop::option::of(0..5u8),
            prop::option::of("[a-z ,\"#é]{0,12}"),
            prop::option::of("[a-z0-9:,#]{1,20}"),
        );
        let cell = (
            prop::array::uniform6(any::<u64>()),
            prop::collection::vec(any::<u64>(), 0..40),
            any::<bool>(),
        );
        prop::collection::vec((dims, cell), 0..30).prop_map(|v| {
            v.into_iter()
                .map(
                    |((country, device, genre, content_id), (m, hashes, dense))| {
                        let mut viewers: ViewerSketch = hashes.into_iter().collect();
                        if dense {
                            for h in 0..2000u64 {
                                viewers.insert(h.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                            }
                        }
                        (
                            Dims {
                                country: country.and_then(|c| Country::parse(c).ok()),
                                device: device.and_then(Device::from_code),
                                genre: genre.map(Into::into),
                                content_id: content_id.map(Into::into),
                            },
                            Cell {
                                measures: Measures {
                                    plays: m[0],
                                    watch_seconds: m[1],
                                    completed: m[2],
                                    buffering_ms: m[3],
                                    bitrate_sum: m[4],
                                    bitrate_count: m[5],
                                },
                                viewers,
                            },
                        )
                    },
                )
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trips(cells in cells()) {
            prop_assert_eq!(decode_cells(&encode_cells(&cells)).expect("decode"), cells);
        }

        #[test]
        fn a_filtered_decode_is_the_filtered_whole(cells in cells(), want in prop::sample::select(vec!["BR", "US", "PT"])) {
            let want = Country::parse(want).ok();
            let keep = |d: &DimsRef<'_>| d.country == want;
            let all = decode_cells(&encode_cells(&cells)).expect("decode");
            let expected: Vec<_> = all.into_iter().filter(|(d, _)| keep(&d.as_ref())).collect();
            prop_assert_eq!(decode_cells_where(&encode_cells(&cells), keep).expect("decode"), expected);
        }

        #[test]
        fn never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_cells(&bytes);
        }

        #[test]
        fn every_truncation_is_an_error(cells in cells()) {
            let bytes = encode_cells(&cells);
            // Every cut in the first 512 bytes, then a sample: dense sketches make blocks long.
            let step = (bytes.len() / 64).max(1);
            for n in (0..bytes.len().min(512)).chain((512..bytes.len()).step_by(step)) {
                prop_assert!(decode_cells(&bytes[..n]).is_err());
            }
        }
    }

    #[test]
    fn rolled_up_and_empty_text_differ() {
        let cells = vec![
            (
                Dims {
                    genre: Some("".into()),
                    ..Dims::default()
                },
                Cell::default(),
            ),
            (Dims::default(), Cell::default()),
        ];
        assert_eq!(decode_cells(&encode_cells(&cells)).expect("decode"), cells);
        assert_eq!(decode_cells(&[2, 0]), Err(CodecError::Version(2)));
    }
}
