//! Bad input for the bronze readers (CSV and JSON lines, plain or gzip): property-based fuzzing
//! on stable Rust with `proptest`.
//!
//! Every property first replays the checked-in seed corpus (`fuzz/corpus/reader-csv/`,
//! `fuzz/corpus/reader-jsonl/`), then runs generated cases: `PROPTEST_CASES` of them (a few dozen
//! by default so that `cargo test` stays quick; `scripts/fuzz.sh` asks for many more), stopping
//! early after `FUZZ_SECONDS` when that is set. A failing case is shrunk and its seed is saved in
//! `fuzz/corpus/<target>/proptest-regressions.txt`, which every later run replays first.
//!
//! The properties:
//! - the reader never panics and never loses a row: it returns exactly the records an
//!   independent CSV parse (or a split on line breaks) finds, each with the line it starts on,
//!   its exact raw bytes, and either its fields or one row-level reason;
//! - how the source hands the bytes over (one byte at a time, odd chunks) changes nothing;
//! - a valid event survives any re-quoting, column order, line ending, BOM and blank lines;
//! - a gzip of the same bytes (one member or several) gives the same rows; a truncated gzip
//!   gives a prefix of them and then an I/O error, never a panic;
//! - a single huge line (a runaway quote, a line without a break, a gzip bomb) is one
//!   `row:row_too_long` rejection, the rows after it are read normally, and the reader's memory
//!   stays bounded whatever the line's size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};

use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use streamcube_model::event::{
    Country, Field, FieldError, FieldValue, Reason, ValidEvent, Validator,
};
use streamcube_model::reader::{EventReader, Format, MAX_ROW_BYTES};

// ---------------------------------------------------------------------------------------------
// A per-thread allocation counter, to bound the reader's memory.

struct Counting;

thread_local! {
    /// (bytes live now, peak since the last reset) on this thread.
    static LIVE: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|c| {
        let (live, peak) = c.get();
        let live = live.saturating_add_signed(delta);
        c.set((live, peak.max(live)));
    });
}

// SAFETY: every call is forwarded to the system allocator; the counter does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Resets this thread's peak to what is live now; returns the live bytes.
fn reset_peak() -> usize {
    LIVE.with(|c| {
        let (live, _) = c.get();
        c.set((live, live));
        live
    })
}

fn peak() -> usize {
    LIVE.with(|c| c.get().1)
}

mod driver;

use driver::{corpus, fuzz};

// ---------------------------------------------------------------------------------------------
// Reading, summarized so that two reads can be compared.

const BOM: &[u8] = b"\xef\xbb\xbf";

const HEADER: &str = "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed";

/// One row as the reader returned it: line, raw bytes, and the fields (debug form) or the
/// row-level reason.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RowSummary {
    line: u64,
    raw: Bytes,
    fields: Result<Vec<String>, (Field, Reason)>,
}

/// Bytes that debug-print as an escaped byte string, so that a failing input is readable.
#[derive(Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// A source that hands its bytes over in the given chunk sizes (cycled), like a slow network.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self.sizes[self.next % self.sizes.len()].max(1);
        self.next += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Every row of `source`, and the I/O error that ended the read early, if any.
fn read_all<R: Read + Send>(
    source: R,
    format: Format,
) -> (Vec<RowSummary>, Option<std::io::Error>) {
    let mut r = match EventReader::new(source, format) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut out = Vec::new();
    loop {
        match r.next_row() {
            Ok(Some(row)) => out.push(RowSummary {
                line: row.line,
                raw: Bytes(row.raw.to_vec()),
                fields: match &row.fields {
                    Ok(f) => Ok(Field::CONTRACT
                        .iter()
                        .map(|c| format!("{:?}", f.get(*c)))
                        .collect()),
                    Err(e) => Err((e.field, e.reason)),
                },
            }),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

// ---------------------------------------------------------------------------------------------
// The oracles.

/// The CSV records an independent parse (the `csv` crate) finds: (byte offset after each
/// record, fields). The first is the header.
fn csv_records(data: &[u8]) -> Vec<(u64, Vec<Vec<u8>>)> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut out = Vec::new();
    let mut rec = csv::ByteRecord::new();
    while rdr.read_byte_record(&mut rec).expect("in-memory csv") {
        out.push((
            rdr.position().byte(),
            rec.iter().map(<[u8]>::to_vec).collect(),
        ));
    }
    out
}

/// Checks the CSV reader on `data` (not gzip, every row shorter than the limit): the rows are
/// exactly the records after the header, at the right lines, with their exact bytes and the
/// right row-level reasons; chunked reads give the same.
fn check_csv(data: &[u8], chunks: &[usize]) -> TestCaseResult {
    if is_gzip(data) {
        return Ok(());
    }
    let (rows, err) = read_all(data, Format::Csv);
    prop_assert!(err.is_none(), "I/O error on in-memory CSV: {err:?}");
    let sizes = chunks.to_vec();
    let (chunked, err) = read_all(
        Chunked {
            data,
            sizes,
            next: 0,
        },
        Format::Csv,
    );
    prop_assert!(err.is_none(), "I/O error on chunked CSV: {err:?}");
    prop_assert_eq!(&rows, &chunked, "chunked reads changed the rows");

    let records = csv_records(data);
    let expected = records.len().saturating_sub(1);
    prop_assert_eq!(
        rows.len(),
        expected,
        "rows lost or invented: the reader returned {} rows, the file has {} records after the header",
        rows.len(),
        expected
    );
    let canonical = records.first().is_some_and(|(_, h)| {
        h.iter()
            .map(|f| f.as_slice())
            .eq(HEADER.split(',').map(str::as_bytes))
    });
    // Each row starts after the previous record's end and the blank lines after it.
    let mut cursor = records.first().map_or(0, |(end, _)| *end as usize);
    let mut last_line = 0;
    for (row, (end, fields)) in rows.iter().zip(records.iter().skip(1)) {
        while cursor < data.len() && matches!(data[cursor], b'\r' | b'\n') {
            cursor += 1;
        }
        prop_assert!(
            data[cursor..].starts_with(&row.raw.0),
            "row at line {} is not the bytes at offset {cursor}: {:?}",
            row.line,
            row.raw
        );
        prop_assert_eq!(
            row.line,
            1 + newlines(&data[..cursor]),
            "wrong line for {:?}",
            row.raw
        );
        // Not strictly: csv-core ends a record at a bare CR too, and lines count LFs only.
        prop_assert!(row.line >= last_line, "lines go backwards");
        last_line = row.line;
        cursor = *end as usize;
        match &row.fields {
            Ok(_) => {
                if canonical {
                    prop_assert_eq!(fields.len(), 10);
                    prop_assert!(fields.iter().all(|f| std::str::from_utf8(f).is_ok()));
                }
            }
            Err((field, reason)) => {
                prop_assert_eq!(*field, Field::Row);
                prop_assert!(
                    matches!(
                        reason,
                        Reason::InvalidUtf8 | Reason::FieldCount | Reason::BadHeader
                    ),
                    "unexpected row reason {reason:?}"
                );
                if canonical {
                    let want = if fields.len() != 10 {
                        Reason::FieldCount
                    } else {
                        Reason::InvalidUtf8
                    };
                    prop_assert_eq!(*reason, want, "{:?}", row.raw);
                    if want == Reason::InvalidUtf8 {
                        prop_assert!(fields.iter().any(|f| std::str::from_utf8(f).is_err()));
                    }
                }
            }
        }
    }
    Ok(())
}

/// What the JSON-lines reader must return for `data` (shorter rows than the limit or not):
/// one row per line that is not blank, with its line, bytes and reason.
fn jsonl_oracle(data: &[u8]) -> Vec<(u64, Bytes, Option<Reason>)> {
    let mut out = Vec::new();
    let mut pieces: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    if data.ends_with(b"\n") || data.is_empty() {
        pieces.pop();
    }
    for (i, piece) in pieces.into_iter().enumerate() {
        let mut body = piece;
        while let [rest @ .., b'\r'] = body {
            body = rest;
        }
        let line = i as u64 + 1;
        if piece.len() > MAX_ROW_BYTES {
            let mut kept = &piece[..1024];
            while let [rest @ .., b'\r' | b'\n'] = kept {
                kept = rest;
            }
            out.push((line, Bytes(kept.to_vec()), Some(Reason::RowTooLong)));
            continue;
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reason = match std::str::from_utf8(body) {
            Err(_) => Some(Reason::InvalidUtf8),
            Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(_)) => None,
                _ => Some(Reason::MalformedJson),
            },
        };
        out.push((line, Bytes(body.to_vec()), reason));
    }
    out
}

fn check_jsonl(data: &[u8], chunks: &[usize]) -> TestCaseResult {
    if is_gzip(data) {
        return Ok(());
    }
    let (rows, err) = read_all(data, Format::JsonLines);
    prop_assert!(err.is_none(), "I/O error on in-memory JSON lines: {err:?}");
    let (chunked, err) = read_all(
        Chunked {
            data,
            sizes: chunks.to_vec(),
            next: 0,
        },
        Format::JsonLines,
    );
    prop_assert!(err.is_none());
    prop_assert_eq!(&rows, &chunked, "chunked reads changed the rows");
    let want = jsonl_oracle(data);
    let got: Vec<(u64, Bytes, Option<Reason>)> = rows
        .iter()
        .map(|r| (r.line, r.raw.clone(), r.fields.as_ref().err().map(|e| e.1)))
        .collect();
    prop_assert_eq!(got, want);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies: hostile files.

/// Assigned country codes, for valid rows.
fn countries() -> Vec<String> {
    let mut out = Vec::new();
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            let s = String::from_utf8(vec![a, b]).expect("ascii");
            if Country::parse(&s).is_ok() {
                out.push(s);
            }
        }
    }
    out
}

/// Text a valid row may carry in its free-text fields (viewer_id, content_id): CSV specials,
/// line breaks, NUL, confusables, non-BMP characters, BOM and line separators.
fn free_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        "Z",
        "9",
        " ",
        ",",
        "\"",
        "\"\"",
        "\r",
        "\n",
        "\r\n",
        "\0",
        "\t",
        "é",
        "В",
        "Ｂ",
        "🙂",
        "\u{2028}",
        "\u{85}",
        "\u{feff}",
        "\u{200b}",
        "=cmd|' /C calc'!A0",
        "'",
        "\\",
        "{",
        "}",
        "[",
        "]",
        "%FF",
    ]);
    prop::collection::vec(pieces, 1..12)
        .prop_map(|p| p.concat())
        .prop_map(|s| {
            // At most 256 bytes, cut on a character boundary.
            let mut end = s.len().min(256);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_owned()
        })
        .prop_filter("non-empty", |s| !s.is_empty())
}

/// A valid event's fields, in contract order, as text (None: an empty optional).
#[derive(Clone, Debug)]
struct Ev {
    cells: [Option<String>; 10],
}

fn valid_event() -> impl Strategy<Value = Ev> {
    let id = "[A-Za-z0-9._:-]{1,128}";
    let ts = (
        2000i32..2026,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
        prop::option::of(0u32..1_000_000_000),
        prop::sample::select(vec!["Z", "+00:00", "-03:00", "+05:30", "+14:00", "-12:00"]),
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            let frac = frac.map_or(String::new(), |f| format!(".{f:09}"));
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
        });
    (
        id,
        ts,
        free_text(),
        free_text(),
        prop::sample::select(vec!["tv", "mobile", "web", "tablet", "console"]),
        prop::sample::select(countries()),
        0u32..=86_400,
        prop::option::of(1u32..=200_000),
        prop::option::of(0u32..=86_400_000),
        any::<bool>(),
    )
        .prop_map(|(id, ts, v, c, d, co, w, b, bu, done)| Ev {
            cells: [
                Some(id),
                Some(ts),
                Some(v),
                Some(c),
                Some(d.to_owned()),
                Some(co),
                Some(w.to_string()),
                b.map(|b| b.to_string()),
                bu.map(|b| b.to_string()),
                Some(done.to_string()),
            ],
        })
}

/// A CSV cell: quoted when it must be, or always, or never when it may be.
fn quote(cell: &str, mode: u8) -> String {
    let needs = cell.contains([',', '"', '\r', '\n']);
    if needs || mode % 2 == 1 {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

/// Byte-level damage to a file.
#[derive(Clone, Debug)]
enum Damage {
    Cut(prop::sample::Index),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Duplicate(prop::sample::Index, usize),
    Replace(prop::sample::Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    let bytes = prop::sample::select(vec![
        b"\"".to_vec(),
        b"\"\"".to_vec(),
        b",".to_vec(),
        b"\r".to_vec(),
        b"\n".to_vec(),
        b"\r\n".to_vec(),
        b"\n\n".to_vec(),
        b"\0".to_vec(),
        b"\xff".to_vec(),
        b"\xc3".to_vec(),
        b"\xc0\xaf".to_vec(),
        b"\xed\xa0\x80".to_vec(),
        b"\xef\xbb\xbf".to_vec(),
        "\u{2028}".as_bytes().to_vec(),
        "В".as_bytes().to_vec(),
        b"{".to_vec(),
        b"}".to_vec(),
        b"[".to_vec(),
        b"]".to_vec(),
        b":".to_vec(),
        b"null".to_vec(),
        b"1e999".to_vec(),
        b"-9223372036854775809".to_vec(),
        b"18446744073709551616".to_vec(),
        b"\\u0000".to_vec(),
        b"\\ud800".to_vec(),
        b"true".to_vec(),
        b" ".to_vec(),
        b"\t".to_vec(),
    ]);
    prop_oneof![
        1 => any::<prop::sample::Index>().prop_map(Damage::Cut),
        4 => (any::<prop::sample::Index>(), bytes).prop_map(|(i, b)| Damage::Insert(i, b)),
        2 => (any::<prop::sample::Index>(), 1usize..8).prop_map(|(i, n)| Damage::Delete(i, n)),
        1 => (any::<prop::sample::Index>(), 1usize..40).prop_map(|(i, n)| Damage::Duplicate(i, n)),
        2 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Replace(i, b)),
    ]
}

fn apply(data: &mut Vec<u8>, damage: &[Damage]) {
    for d in damage {
        let len = data.len();
        match d {
            Damage::Cut(i) => data.truncate(i.index(len + 1)),
            Damage::Insert(i, b) => {
                let at = i.index(len + 1);
                data.splice(at..at, b.iter().copied());
            }
            Damage::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                data.drain(at..(at + n).min(len));
            }
            Damage::Duplicate(i, n) if len > 0 => {
                let at = i.index(len);
                let piece = data[at..(at + n).min(len)].to_vec();
                data.splice(at..at, piece);
            }
            Damage::Replace(i, b) if len > 0 => {
                let at = i.index(len);
                data[at] = *b;
            }
            _ => {}
        }
    }
}

const ENDINGS: [&str; 4] = ["\n", "\r\n", "\r", "\n\r\n"];

/// Headers: the contract's, permuted, missing a column, repeating one, with a BOM, spaces,
/// other case, extra columns, or garbage.
fn csv_header() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(HEADER.to_owned()),
        1 => Just(format!("\u{feff}{HEADER}")),
        1 => Just(HEADER.replace(',', " , ")),
        1 => Just(HEADER.to_uppercase()),
        1 => Just(format!("{HEADER},extra")),
        1 => Just(HEADER.replace(",bitrate_kbps,buffering_ms", "")),
        1 => Just(HEADER.replace("device", "event_id")),
        1 => Just(HEADER.replace(",completed", "")),
        1 => Just(format!("\"{}\"", HEADER.replace(',', "\",\""))),
        1 => Just(String::new()),
        1 => "[a-z_,\"]{0,40}",
    ]
}

/// A hostile CSV file: a header, valid and damaged rows, mixed line endings, then byte damage.
fn hostile_csv() -> impl Strategy<Value = Bytes> {
    let row = (
        valid_event(),
        prop::collection::vec(any::<u8>(), 10),
        prop::collection::vec(damage(), 0..2),
    )
        .prop_map(|(ev, modes, dmg)| {
            let cells: Vec<String> = ev
                .cells
                .iter()
                .zip(modes)
                .map(|(c, m)| quote(c.as_deref().unwrap_or(""), m))
                .collect();
            let mut bytes = cells.join(",").into_bytes();
            apply(&mut bytes, &dmg);
            bytes
        });
    let noise = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(prop::sample::select(b",\"\r\n a\xff\x00".to_vec()), 0..64),
    ];
    let line = prop_oneof![6 => row, 1 => noise];
    (
        csv_header(),
        prop::collection::vec((line, 0usize..ENDINGS.len()), 0..10),
        any::<bool>(),
        prop::collection::vec(damage(), 0..4),
    )
        .prop_map(|(header, lines, final_break, dmg)| {
            let mut data = header.into_bytes();
            data.extend_from_slice(b"\n");
            for (i, (l, e)) in lines.iter().enumerate() {
                data.extend_from_slice(l);
                if i + 1 < lines.len() || final_break {
                    data.extend_from_slice(ENDINGS[*e].as_bytes());
                }
            }
            apply(&mut data, &dmg);
            Bytes(data)
        })
}

/// A JSON object for a valid event, with keys in a random order and random spacing.
fn json_event(ev: &Ev, order: &[usize], spaced: bool, escape_all: bool) -> String {
    let mut parts = Vec::new();
    for &i in order {
        let f = Field::CONTRACT[i % 10];
        let Some(v) = &ev.cells[i % 10] else {
            continue;
        };
        let value = match f {
            Field::WatchSeconds | Field::BitrateKbps | Field::BufferingMs | Field::Completed => {
                v.clone()
            }
            _ if escape_all => {
                let mut s = String::from("\"");
                for u in v.encode_utf16() {
                    s.push_str(&format!("\\u{u:04x}"));
                }
                s.push('"');
                s
            }
            _ => serde_json::to_string(v).expect("string"),
        };
        let sep = if spaced { " : " } else { ":" };
        parts.push(format!("\"{}\"{sep}{value}", f.name()));
    }
    format!("{{{}}}", parts.join(if spaced { " ,\t" } else { "," }))
}

fn hostile_jsonl() -> impl Strategy<Value = Bytes> {
    let row = (
        valid_event(),
        Just((0..10).collect::<Vec<usize>>()).prop_shuffle(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(damage(), 0..3),
    )
        .prop_map(|(ev, order, spaced, esc, dmg)| {
            let mut b = json_event(&ev, &order, spaced, esc).into_bytes();
            apply(&mut b, &dmg);
            b
        });
    let other = prop::sample::select(vec![
        "[]",
        "[{}]",
        "{}",
        "null",
        "1",
        "\"s\"",
        "{\"a\":",
        "{\"event_id\":1e999}",
        "{\"a\":1}{\"b\":2}",
        "   ",
        "\t",
        "{\"event_id\":\"a\",\"event_id\":\"b\"}",
        "\u{feff}{}",
        "{\"\\ud800\":1}",
        "{'a':1}",
        "{\"a\":NaN}",
    ])
    .prop_map(|s| s.as_bytes().to_vec());
    let deep = (1usize..300).prop_map(|n| {
        let mut s = "[".repeat(n).into_bytes();
        s.extend("]".repeat(n).into_bytes());
        let mut obj = b"{\"a\":".to_vec();
        obj.extend(s);
        obj.push(b'}');
        obj
    });
    let noise = prop::collection::vec(any::<u8>(), 0..64);
    let line = prop_oneof![6 => row, 2 => other, 1 => deep, 1 => noise];
    (
        prop::collection::vec((line, 0usize..ENDINGS.len()), 0..10),
        any::<bool>(),
        prop::collection::vec(damage(), 0..3),
    )
        .prop_map(|(lines, final_break, dmg)| {
            let mut data = Vec::new();
            for (i, (l, e)) in lines.iter().enumerate() {
                data.extend_from_slice(l);
                if i + 1 < lines.len() || final_break {
                    data.extend_from_slice(ENDINGS[*e].as_bytes());
                }
            }
            apply(&mut data, &dmg);
            Bytes(data)
        })
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..300, 1..6)
}

// ---------------------------------------------------------------------------------------------
// The properties.

/// With `FUZZ_REPORT=1`, prints what the reader makes of every corpus file, row by row (the
/// README's table of bad inputs comes from this).
fn report_corpus(target: &str, format: Format) {
    if std::env::var_os("FUZZ_REPORT").is_none() {
        return;
    }
    for (name, data) in corpus(target) {
        let (rows, err) = read_all(&data[..], format);
        let rows: Vec<String> = rows
            .iter()
            .map(|r| match &r.fields {
                Ok(_) => format!("line {}: fields", r.line),
                Err((f, reason)) => format!(
                    "line {}: {}",
                    r.line,
                    streamcube_model::event::FieldError::new(*f, *reason).key()
                ),
            })
            .collect();
        let err = err.map_or(String::new(), |e| format!("; then I/O error: {e}"));
        println!("corpus {target}/{name}: {}{err}", rows.join(", "));
    }
}

#[test]
fn csv_reader_never_panics_and_accounts_for_every_record() {
    report_corpus("reader-csv", Format::Csv);
    for (name, data) in corpus("reader-csv") {
        if !name.ends_with(".gz") {
            check_csv(&data, &[1, 7, 4096]).unwrap_or_else(|e| panic!("corpus {name}: {e}"));
        }
    }
    fuzz(
        "reader-csv",
        "accounts_for_every_record",
        256,
        (hostile_csv(), chunk_sizes()),
        |(data, chunks)| check_csv(&data.0, &chunks),
    );
}

#[test]
fn jsonl_reader_never_panics_and_accounts_for_every_line() {
    report_corpus("reader-jsonl", Format::JsonLines);
    for (name, data) in corpus("reader-jsonl") {
        if !name.ends_with(".gz") {
            check_jsonl(&data, &[1, 7, 4096]).unwrap_or_else(|e| panic!("corpus {name}: {e}"));
        }
    }
    fuzz(
        "reader-jsonl",
        "accounts_for_every_line",
        256,
        (hostile_jsonl(), chunk_sizes()),
        |(data, chunks)| check_jsonl(&data.0, &chunks),
    );
}

/// The fields of every row that validates (judged at a fixed "now"), or its errors; the same
/// whether rows are read and then validated, or read validated from small reads.
fn validated(
    rows: &[RowSummary],
    data: &[u8],
    format: Format,
) -> Vec<Result<Vec<String>, Vec<String>>> {
    let v = Validator::at(4_102_444_800_000); // 2100-01-01
    let summary = |event: Result<ValidEvent<'_>, Vec<FieldError>>| match event {
        Ok(ev) => Ok(vec![
            ev.event_id.to_owned(),
            ev.occurred_at_ms.to_string(),
            ev.viewer_id.to_owned(),
            ev.content_id.to_owned(),
            ev.device.to_string(),
            ev.country.to_string(),
            ev.watch_seconds.to_string(),
            format!("{:?}", ev.bitrate_kbps),
            format!("{:?}", ev.buffering_ms),
            ev.completed.to_string(),
        ]),
        Err(errs) => Err(errs.iter().map(|e| e.key()).collect::<Vec<_>>()),
    };
    // Read again to validate borrowed fields.
    let mut r = EventReader::new(data, format).expect("open");
    let mut out = Vec::new();
    while let Some(row) = r.next_row().expect("read") {
        out.push(summary(
            row.fields.map_err(|e| vec![e]).and_then(|f| v.validate(&f)),
        ));
    }
    assert_eq!(out.len(), rows.len());
    let small_reads = Chunked {
        data,
        sizes: vec![1, 7, 64, 300, 4096],
        next: 0,
    };
    let mut r = EventReader::new(small_reads, format).expect("open");
    let mut checked = Vec::new();
    while let Some(row) = r.next_checked(&v).expect("read") {
        checked.push(summary(row.event));
    }
    assert_eq!(checked, out);
    out
}

fn expected_fields(ev: &Ev) -> Vec<String> {
    let c = &ev.cells;
    let ms = chrono::DateTime::parse_from_rfc3339(c[1].as_deref().expect("ts"))
        .expect("valid ts")
        .timestamp_millis();
    let opt =
        |v: &Option<String>| format!("{:?}", v.as_ref().map(|s| s.parse::<u32>().expect("n")));
    vec![
        c[0].clone().expect("id"),
        ms.to_string(),
        c[2].clone().expect("viewer"),
        c[3].clone().expect("content"),
        c[4].clone().expect("device"),
        c[5].clone().expect("country"),
        c[6].clone().expect("watch"),
        opt(&c[7]),
        opt(&c[8]),
        c[9].clone().expect("completed"),
    ]
}

#[test]
fn valid_rows_survive_any_requoting_order_ending_and_compression() {
    let strategy = (
        prop::collection::vec(
            (valid_event(), prop::collection::vec(any::<u8>(), 10)),
            1..5,
        ),
        Just((0..10).collect::<Vec<usize>>()).prop_shuffle(),
        prop::collection::vec(0usize..ENDINGS.len(), 5),
        prop::collection::vec(0usize..3, 5),
        any::<bool>(),
        prop::option::of(0u32..=9),
        any::<bool>(),
        any::<bool>(),
    );
    fuzz(
        "reader-csv",
        "valid_rows_survive_requoting",
        256,
        strategy,
        |(events, order, endings, blanks, bom, gz, spaced, escape_all)| {
            // CSV: the columns in `order` (optional ones dropped when no row has them), any
            // quoting, any line ending, blank lines between rows.
            let keep: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| i < 7 || i == 9 || events.iter().any(|(e, _)| e.cells[i].is_some()))
                .collect();
            let mut data = Vec::new();
            if bom {
                data.extend_from_slice("\u{feff}".as_bytes());
            }
            let names: Vec<&str> = keep.iter().map(|&i| Field::CONTRACT[i].name()).collect();
            data.extend_from_slice(names.join(",").as_bytes());
            for (k, (ev, modes)) in events.iter().enumerate() {
                data.extend_from_slice(ENDINGS[endings[k]].as_bytes());
                for _ in 0..blanks[k] {
                    data.extend_from_slice(b"\r\n");
                }
                let cells: Vec<String> = keep
                    .iter()
                    .map(|&i| quote(ev.cells[i].as_deref().unwrap_or(""), modes[i]))
                    .collect();
                data.extend_from_slice(cells.join(",").as_bytes());
            }
            if endings[4] % 2 == 0 {
                data.extend_from_slice(b"\r\n");
            }
            let data = match gz {
                Some(level) => gzip(&data, level),
                None => data,
            };
            let (rows, err) = read_all(&data[..], Format::Csv);
            prop_assert!(err.is_none());
            let got = validated(&rows, &data, Format::Csv);
            let want: Vec<_> = events.iter().map(|(e, _)| Ok(expected_fields(e))).collect();
            prop_assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&data));

            // JSON lines: the same events, keys in any order, any spacing and escaping.
            let mut data = Vec::new();
            for (k, (ev, _)) in events.iter().enumerate() {
                data.extend_from_slice(json_event(ev, &order, spaced, escape_all).as_bytes());
                // JSON lines end at LF (a bare CR is not a line break there).
                data.extend_from_slice(if endings[k] % 2 == 0 { b"\n" } else { b"\r\n" });
            }
            let (rows, err) = read_all(&data[..], Format::JsonLines);
            prop_assert!(err.is_none());
            let got = validated(&rows, &data, Format::JsonLines);
            let want: Vec<_> = events.iter().map(|(e, _)| Ok(expected_fields(e))).collect();
            prop_assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&data));
            Ok(())
        },
    );
}

#[test]
fn gzip_of_the_same_bytes_reads_the_same_and_truncation_is_an_error() {
    for (name, data) in corpus("reader-csv")
        .into_iter()
        .chain(corpus("reader-jsonl"))
    {
        // The checked-in gzip seeds decode to the plain seeds next to them.
        if let Some(plain) = name.strip_suffix(".gz") {
            let format = Format::from_name(plain).unwrap_or(Format::Csv);
            let (rows, err) = read_all(&data[..], format);
            let mut decoded = Vec::new();
            let ok = flate2::read::MultiGzDecoder::new(&data[..])
                .read_to_end(&mut decoded)
                .is_ok();
            let (want, _) = read_all(&decoded[..], format);
            assert_eq!(err.is_none(), ok, "corpus {name}");
            assert!(want.starts_with(&rows), "corpus {name}");
        }
    }
    let strategy = (
        prop_oneof![
            hostile_csv().prop_map(|d| (d, Format::Csv)),
            hostile_jsonl().prop_map(|d| (d, Format::JsonLines)),
        ],
        0u32..=9,
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
    );
    fuzz(
        "reader-gzip",
        "same_rows_as_plain",
        256,
        strategy,
        |((Bytes(plain), format), level, split, cut)| {
            prop_assume!(!is_gzip(&plain));
            let (want, err) = read_all(&plain[..], format);
            prop_assert!(err.is_none());
            // One member.
            let one = gzip(&plain, level);
            let (got, err) = read_all(&one[..], format);
            prop_assert!(err.is_none(), "{err:?}");
            prop_assert_eq!(&got, &want);
            // Two members, split anywhere.
            let at = split.index(plain.len() + 1);
            let mut two = gzip(&plain[..at], level);
            two.extend(gzip(&plain[at..], level));
            let (got, err) = read_all(&two[..], format);
            prop_assert!(err.is_none(), "{err:?}");
            prop_assert_eq!(&got, &want);
            // Truncated: a prefix of the rows, then an I/O error (never a panic, never a
            // made-up row).
            // Past the magic number (two bytes), so that the data is still taken for gzip.
            let at = 2 + cut.index(one.len() - 2);
            let (got, err) = read_all(&one[..at], format);
            prop_assert!(
                err.is_some(),
                "a gzip cut at {at} of {} read without error",
                one.len()
            );
            prop_assert!(
                want.starts_with(&got),
                "rows of a truncated gzip are not a prefix of the plain rows"
            );
            Ok(())
        },
    );
}

/// A source of `len` bytes of `fill` between a prefix and a suffix, made on the fly (never held
/// in memory).
struct Huge {
    prefix: Vec<u8>,
    fill: u8,
    len: u64,
    suffix: Vec<u8>,
    pos: u64,
}

impl Read for Huge {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let p = self.prefix.len() as u64;
        let total = p + self.len + self.suffix.len() as u64;
        let mut n = 0;
        while n < buf.len() && self.pos < total {
            let b = if self.pos < p {
                self.prefix[self.pos as usize]
            } else if self.pos < p + self.len {
                // Fill the rest of the middle in one go.
                let left = (p + self.len - self.pos) as usize;
                let k = left.min(buf.len() - n);
                buf[n..n + k].fill(self.fill);
                n += k;
                self.pos += k as u64;
                continue;
            } else {
                self.suffix[(self.pos - p - self.len) as usize]
            };
            buf[n] = b;
            n += 1;
            self.pos += 1;
        }
        Ok(n)
    }
}

fn gzip_huge(src: &mut Huge) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = src.read(&mut buf).expect("huge");
        if n == 0 {
            break;
        }
        gz.write_all(&buf[..n]).expect("gzip");
    }
    gz.finish().expect("gzip")
}

/// The reader's peak memory on this thread while it reads `source`, and the rows.
fn measure<R: Read + Send>(source: R, format: Format) -> (usize, Vec<RowSummary>) {
    let base = reset_peak();
    let (rows, err) = read_all(source, format);
    assert!(err.is_none(), "{err:?}");
    (peak().saturating_sub(base), rows)
}

/// What the reader may hold for one row, whatever the row's size: the row limit a few times over
/// (row bytes, decoded fields, growth slack) plus the read buffers.
const MEMORY_BOUND: usize = 6 * MAX_ROW_BYTES + (1 << 20);

#[test]
fn a_huge_line_is_one_rejection_and_memory_stays_bounded() {
    let strategy = (
        any::<bool>(),                         // CSV or JSON lines
        0u8..3, // runaway quote, long unquoted field, no break at all
        (MAX_ROW_BYTES as u64 + 1)..(6 << 20), // the line's size
        any::<bool>(), // gzip bomb
    );
    fuzz(
        "reader-huge",
        "bounded_memory",
        6,
        strategy,
        |(csv, shape, len, bomb)| {
            let valid = "e2,2026-01-01T00:00:00Z,v,c,tv,BR,1,,,true";
            let json = r#"{"event_id":"e2","occurred_at":"2026-01-01T00:00:00Z","viewer_id":"v","content_id":"c","device":"tv","country":"BR","watch_seconds":1,"completed":true}"#;
            let (format, prefix, suffix) = if csv {
                let start = match shape {
                    0 => "e1,\"",
                    _ => "e1,",
                };
                (
                    Format::Csv,
                    format!("{HEADER}\n{start}"),
                    if shape == 2 {
                        String::new()
                    } else {
                        format!("\n{valid}\n")
                    },
                )
            } else {
                (
                    Format::JsonLines,
                    "{\"event_id\":\"".to_owned(),
                    if shape == 2 {
                        String::new()
                    } else {
                        format!("\n{json}\n")
                    },
                )
            };
            let mut src = Huge {
                prefix: prefix.into_bytes(),
                fill: b'a',
                len,
                suffix: suffix.into_bytes(),
                pos: 0,
            };
            let (used, rows) = if bomb {
                let gz = gzip_huge(&mut src);
                measure(std::io::Cursor::new(gz), format)
            } else {
                measure(src, format)
            };
            if std::env::var_os("FUZZ_REPORT").is_some() {
                println!(
                    "huge line of {len} bytes (csv {csv}, shape {shape}, gzip {bomb}): \
                     reader peak {used} bytes"
                );
            }
            prop_assert!(
                used < MEMORY_BOUND,
                "reading a {len}-byte line used {used} bytes (bound {MEMORY_BOUND})"
            );
            let first_line = if csv { 2 } else { 1 };
            prop_assert!(!rows.is_empty());
            prop_assert_eq!(rows[0].line, first_line);
            prop_assert_eq!(&rows[0].fields, &Err((Field::Row, Reason::RowTooLong)));
            prop_assert!(
                rows[0].raw.0.len() <= 1024,
                "the quarantine keeps a prefix only"
            );
            if shape == 2 {
                prop_assert_eq!(rows.len(), 1);
            } else {
                // The next row is read normally, at its own line.
                prop_assert_eq!(
                    rows.len(),
                    2,
                    "{:?}",
                    rows.iter().map(|r| &r.fields).collect::<Vec<_>>()
                );
                prop_assert_eq!(rows[1].line, first_line + 1);
                prop_assert!(rows[1].fields.is_ok(), "{:?}", rows[1].fields);
            }
            Ok(())
        },
    );
}

/// A single field's value right at the size limit: never confused with the next row.
#[test]
fn rows_around_the_size_limit_never_swallow_the_next_row() {
    let strategy = (
        any::<bool>(),
        (MAX_ROW_BYTES - 200)..(MAX_ROW_BYTES + 200),
        prop::collection::vec(1usize..70_000, 1..4),
    );
    fuzz(
        "reader-huge",
        "limit_boundary",
        6,
        strategy,
        |(csv, size, chunks)| {
            let data = if csv {
                let mut d = format!("{HEADER}\ne1,2026-01-01T00:00:00Z,").into_bytes();
                d.extend(std::iter::repeat_n(b'v', size));
                d.extend_from_slice(
                    b",c,tv,BR,1,,,true\ne2,2026-01-01T00:00:00Z,v,c,tv,BR,1,,,true\n",
                );
                d
            } else {
                let mut d = b"{\"viewer_id\":\"".to_vec();
                d.extend(std::iter::repeat_n(b'v', size));
                d.extend_from_slice(b"\"}\n{\"event_id\":\"e2\"}\n");
                d
            };
            let format = if csv { Format::Csv } else { Format::JsonLines };
            let (rows, err) = read_all(
                Chunked {
                    data: &data,
                    sizes: chunks,
                    next: 0,
                },
                format,
            );
            prop_assert!(err.is_none());
            prop_assert_eq!(
                rows.len(),
                2,
                "{:?}",
                rows.iter().map(|r| (r.line, &r.fields)).collect::<Vec<_>>()
            );
            let first = if csv { 2 } else { 1 };
            prop_assert_eq!((rows[0].line, rows[1].line), (first, first + 1));
            prop_assert!(rows[1].fields.is_ok());
            // The first row is either read whole or refused as too long, nothing else.
            match &rows[0].fields {
                Ok(_) => prop_assert!(rows[0].raw.0.len() >= size),
                Err(e) => prop_assert_eq!(e, &(Field::Row, Reason::RowTooLong)),
            }
            Ok(())
        },
    );
}

#[test]
fn field_values_are_what_the_contract_accepts() {
    // A smoke check of the oracle's own premise: the sample row of the contract validates.
    let data = format!("{HEADER}\ne1,2026-01-01T00:00:00Z,v,c,tv,BR,60,,,true\n");
    let mut r = EventReader::new(data.as_bytes(), Format::Csv).expect("open");
    let row = r.next_row().expect("read").expect("row");
    let f = row.fields.expect("fields");
    assert!(matches!(f.get(Field::BitrateKbps), FieldValue::Text("")));
    assert!(Validator::at(4_102_444_800_000).validate(&f).is_ok());
}

/// Found by `csv_reader_never_panics_and_accounts_for_every_record`: when the first read of the
/// source returned exactly the three bytes of a UTF-8 BOM, `csv-core` stripped them, saw an empty
/// input, took it for the end of the data and the whole file was lost without an error (a pipe
/// or network stream that sent the BOM on its own, a gzip decoder whose first output is the BOM).
#[test]
fn a_first_read_of_exactly_the_bom_loses_nothing() {
    let mut data = BOM.to_vec();
    data.extend_from_slice(
        format!("{HEADER}\ne1,2026-01-01T00:00:00Z,v,c,tv,BR,1,,,true\n").as_bytes(),
    );
    let (whole, _) = read_all(&data[..], Format::Csv);
    assert_eq!(whole.len(), 1);
    let (chunked, err) = read_all(
        Chunked {
            data: &data,
            sizes: vec![3, 4096],
            next: 0,
        },
        Format::Csv,
    );
    assert!(err.is_none());
    assert_eq!(chunked, whole, "the file's rows were lost");
}

/// Found by `valid_rows_survive_any_requoting_order_ending_and_compression`: csv-core drops a BOM
/// at the start of the first input it is given. Plain lines are split without it, so its first
/// input could be a later record (one with a quote, say), and a first field starting with U+FEFF
/// lost that character; after a row over the size limit the reader started a fresh csv-core,
/// and the same could happen again.
#[test]
fn a_field_starting_with_u_feff_keeps_it_wherever_csv_core_first_reads() {
    let row = "\u{feff}e2,2026-01-01T00:00:00Z,\"v\",c,tv,BR,1,,,true";
    let too_long = format!(
        "e1,2026-01-01T00:00:00Z,\"{}\",c,tv,BR,1,,,true",
        "x".repeat(MAX_ROW_BYTES + 10)
    );
    for data in [
        format!("{HEADER}\ne0,2026-01-01T00:00:00Z,v,c,tv,BR,1,,,true\n{row}\n"),
        format!("{HEADER}\n{too_long}\n{row}\n"),
    ] {
        let (rows, err) = read_all(data.as_bytes(), Format::Csv);
        assert!(err.is_none());
        let last = rows.last().expect("rows");
        let Ok(fields) = &last.fields else {
            panic!("the row is valid: {:?}", last.fields);
        };
        assert_eq!(fields[0], r#"Text("\u{feff}e2")"#, "{fields:?}");
    }
}

/// Found while building the table of bad inputs: a stray quote opens a quoted field that runs
/// over the following lines, so they all become one record. When it passes `MAX_ROW_BYTES`, only
/// its first line is refused (`row:row_too_long`) and the lines after it are read again: the
/// valid rows after a stray quote are not lost (they were, up to 256 KiB of them, before).
#[test]
fn a_stray_quote_swallows_no_valid_row() {
    let mut data = format!("{HEADER}\ne0,2026-01-01T00:00:00Z,\"oops,c,tv,BR,1,,,true\n");
    for i in 1..=10_000 {
        data.push_str(&format!("e{i},2026-01-01T00:00:00Z,v,c,tv,BR,1,,,true\n"));
    }
    let (rows, err) = read_all(data.as_bytes(), Format::Csv);
    assert!(err.is_none());
    let ok = rows.iter().filter(|r| r.fields.is_ok()).count();
    assert_eq!(
        ok,
        10_000,
        "{} of the 10,000 valid rows after the stray quote were lost",
        10_000 - ok
    );
    assert_eq!(rows.len(), 10_001, "every record once");
    assert_eq!(
        (rows[0].line, &rows[0].fields),
        (2, &Err((Field::Row, Reason::RowTooLong)))
    );
    assert!(rows[0].raw.0.starts_with(b"e0,") && !rows[0].raw.0.contains(&b'\n'));
    assert_eq!((rows[1].line, rows[10_000].line), (3, 10_002));
}
