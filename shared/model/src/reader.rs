//! Streaming readers for bronze files: CSV (RFC 4180) and JSON lines, plain or gzip.
//!
//! A reader holds one row at a time, never the whole file. Each row comes back with its line
//! number and its raw bytes (for the quarantine), and either its contract fields or the reason the
//! row as a whole is unreadable (bad UTF-8, wrong field count, malformed JSON, too long). A bad row
//! never stops the file; only an I/O error (a truncated gzip stream, say) does.
//!
//! CSV goes through `csv-core` rather than `csv::Reader` because the quarantine needs the exact
//! bytes of each record, which only the low-level reader exposes.
//! [`EventReader::next_checked`] returns rows validated; a CSV row on one line without quotes is
//! then split and checked where it lies in the input buffer, without being copied.
//!
//! ```
//! use streamcube_model::reader::{EventReader, Format};
//! let data = "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed\r\n\
//!             e1,2026-01-01T00:00:00Z,v1,c1,tv,BR,60,,,true\r\n\
//!             \r\n\
//!             e2,oops\r\n";
//! let mut rows = EventReader::new(data.as_bytes(), Format::Csv).unwrap();
//! let first = rows.next_row().unwrap().unwrap();
//! assert_eq!(first.line, 2);
//! assert!(first.fields.is_ok());
//! let second = rows.next_row().unwrap().unwrap();
//! assert_eq!((second.line, second.raw_text().as_ref()), (4, "e2,oops"));
//! assert!(second.fields.is_err());
//! assert!(rows.next_row().unwrap().is_none());
//! ```

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read};

use csv_core::ReadRecordResult;

use crate::event::{
    Field, FieldError, FieldValue, RawFields, Reason, ValidEvent, Validator, is_optional,
};

/// Rows longer than this are rejected (and skipped up to the next line break), so one runaway
/// quote cannot make the reader buffer the rest of the file.
pub const MAX_ROW_BYTES: usize = 256 * 1024;
/// How much of an over-long row the quarantine keeps.
const KEPT_PREFIX: usize = 1024;

/// The bronze file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// The format an object key or file name implies (`.csv`, `.jsonl`, `.ndjson`, `.json`, each
    /// optionally followed by `.gz`).
    pub fn from_name(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        let base = lower.strip_suffix(".gz").unwrap_or(&lower);
        if base.ends_with(".csv") {
            Some(Format::Csv)
        } else if base.ends_with(".jsonl") || base.ends_with(".ndjson") || base.ends_with(".json") {
            Some(Format::JsonLines)
        } else {
            None
        }
    }
}

/// One input row.
#[derive(Debug)]
pub struct Row<'a> {
    /// 1-based line number where the row starts.
    pub line: u64,
    /// The row's bytes as they were in the file, without the line break.
    pub raw: &'a [u8],
    /// The contract fields, or why the row cannot be read at all.
    pub fields: Result<RawFields<'a>, FieldError>,
}

impl Row<'_> {
    /// The raw row as text; bytes that are not UTF-8 become U+FFFD.
    pub fn raw_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.raw)
    }
}

/// One input row, validated: [`EventReader::next_checked`].
#[derive(Debug)]
pub struct Checked<'a> {
    /// 1-based line number where the row starts.
    pub line: u64,
    /// The row's bytes as they were in the file, without the line break.
    pub raw: &'a [u8],
    /// The valid event, or every reason the row is refused.
    pub event: Result<ValidEvent<'a>, Vec<FieldError>>,
}

/// Reads rows from a CSV or JSON-lines source, decompressing gzip when the data starts with the
/// gzip magic number (whatever the name says).
pub struct EventReader<'r> {
    src: Source<'r>,
    kind: Kind,
    /// The current row's bytes, including any blank lines skipped before it.
    raw: Vec<u8>,
    raw_start: usize,
    line: u64,
    rows: u64,
    /// Bytes of the source that belong to the row last returned by [`EventReader::next_checked`]
    /// straight from the source's buffer: consumed when the next row is asked for.
    pending: usize,
}

enum Kind {
    Csv(Box<CsvState>),
    Json(Option<serde_json::Map<String, serde_json::Value>>),
}

struct CsvState {
    rdr: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    nfields: usize,
    /// Bytes between two fields in `out`: none as csv-core leaves them, the comma for a plain
    /// record (see `read_plain_record`). Field `i` ends at `ends[i]`; the next starts `gap`
    /// bytes later.
    gap: usize,
    header: Option<Header>,
    /// Whether plain records are split without csv-core (see `read_plain_record`); off only
    /// in tests, to compare both ways.
    plain_records: bool,
}

struct Header {
    columns: Vec<Option<Field>>,
    ok: bool,
}

enum RowShape {
    Csv(CsvShape),
    Json(Result<(), Reason>),
}

enum CsvShape {
    Fields,
    TooLong,
}

impl<'r> EventReader<'r> {
    /// A reader over `source` in `format`.
    pub fn new<R: Read + Send + 'r>(source: R, format: Format) -> io::Result<Self> {
        Self::from_decoded(decompressed(source)?, format)
    }

    /// A reader over data already decompressed and buffered (a chunk in memory, say): read
    /// as it is, without copying it through another buffer or looking for gzip in it.
    pub fn from_decoded<B: BufRead + Send + 'r>(source: B, format: Format) -> io::Result<Self> {
        let mut src = Source {
            again: Vec::new(),
            pos: 0,
            inner: Box::new(source),
        };
        if format == Format::Csv {
            // Stripped here rather than by csv-core, which takes a first input of exactly the
            // BOM for the end of the data.
            src.skip_bom()?;
        }
        let kind = match format {
            Format::Csv => Kind::Csv(Box::new(CsvState {
                rdr: csv_reader_without_bom(),
                out: vec![0; 4096],
                ends: vec![0; 32],
                nfields: 0,
                gap: 0,
                header: None,
                plain_records: true,
            })),
            Format::JsonLines => Kind::Json(None),
        };
        Ok(EventReader {
            src,
            kind,
            raw: Vec::with_capacity(1024),
            raw_start: 0,
            line: 1,
            rows: 0,
            pending: 0,
        })
    }

    /// How many rows (not counting a CSV header or blank lines) have been returned so far.
    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// The next row, `None` at the end of the data.
    pub fn next_row(&mut self) -> io::Result<Option<Row<'_>>> {
        self.src.consume(std::mem::take(&mut self.pending));
        let (line, shape) = match &mut self.kind {
            Kind::Csv(state) => loop {
                let Some((line, shape)) = read_csv_record(
                    &mut self.src,
                    state,
                    &mut self.raw,
                    &mut self.raw_start,
                    &mut self.line,
                )?
                else {
                    return Ok(None);
                };
                if state.header.is_none() {
                    state.header = Some(parse_header(state));
                    continue;
                }
                break (line, RowShape::Csv(shape));
            },
            Kind::Json(obj) => {
                let Some((line, parsed)) = read_json_line(
                    &mut self.src,
                    &mut self.raw,
                    &mut self.raw_start,
                    &mut self.line,
                    obj,
                )?
                else {
                    return Ok(None);
                };
                (line, RowShape::Json(parsed))
            }
        };
        self.rows += 1;
        let raw = trim_line_end(&self.raw[self.raw_start..]);
        let fields = match (&self.kind, shape) {
            (Kind::Csv(state), RowShape::Csv(shape)) => csv_fields(state, shape),
            (Kind::Json(Some(obj)), RowShape::Json(Ok(()))) => Ok(RawFields::from_json_object(obj)),
            (_, RowShape::Json(Err(reason))) => Err(FieldError::new(Field::Row, reason)),
            _ => Err(FieldError::new(Field::Row, Reason::MalformedJson)),
        };
        Ok(Some(Row { line, raw, fields }))
    }
}

impl EventReader<'_> {
    /// The next row, validated by `validator`: what [`Self::next_row`] and
    /// [`Validator::validate`] give, without copying the common CSV row out of the input.
    pub fn next_checked(&mut self, validator: &Validator) -> io::Result<Option<Checked<'_>>> {
        self.src.consume(std::mem::take(&mut self.pending));
        let plain = match &self.kind {
            Kind::Csv(state)
                if state.plain_records && state.header.as_ref().is_some_and(|h| h.ok) =>
            {
                plain_line(self.src.fill_buf()?)
            }
            _ => None,
        };
        let Some(line) = plain else {
            return self.next_row_checked(validator);
        };
        let Kind::Csv(state) = &mut self.kind else {
            // Only a CSV reader looks for plain records.
            return Err(io::Error::other("a plain CSV record outside a CSV reader"));
        };
        let input = self.src.fill_buf()?;
        if input.len() <= line.end {
            // A buffered reader gives the same bytes until they are consumed.
            return Err(io::Error::other("the source changed its buffered bytes"));
        }
        self.pending = line.end + 1;
        self.rows += 1;
        let start = self.line + count_newlines(&input[..line.lead]);
        self.line = start + 1;
        let text = &input[line.lead..line.lead + line.len];
        let columns = state.header.as_ref().map_or(&[][..], |h| &h.columns[..]);
        if let Some(event) = std::str::from_utf8(text)
            .ok()
            .and_then(|record| validator.validate_plain(record, columns))
        {
            return Ok(Some(Checked {
                line: start,
                raw: text,
                event: Ok(event),
            }));
        }
        // Refused, or valid in a form the quick check leaves out: the row goes the general way.
        split_plain(state, text);
        self.raw.clear();
        self.raw.extend_from_slice(text);
        let event = csv_fields(state, CsvShape::Fields)
            .map_err(|e| vec![e])
            .and_then(|f| validator.validate(&f));
        Ok(Some(Checked {
            line: start,
            raw: &self.raw,
            event,
        }))
    }

    fn next_row_checked(&mut self, validator: &Validator) -> io::Result<Option<Checked<'_>>> {
        Ok(self.next_row()?.map(|row| Checked {
            line: row.line,
            raw: row.raw,
            event: row
                .fields
                .map_err(|e| vec![e])
                .and_then(|f| validator.validate(&f)),
        }))
    }
}

/// The decompressed bytes, with bytes already read put back in front of them to be read again.
struct Source<'r> {
    again: Vec<u8>,
    pos: usize,
    inner: Box<dyn BufRead + Send + 'r>,
}

impl Source<'_> {
    /// Makes `bytes` the next bytes read, before whatever was to come.
    fn unread(&mut self, bytes: &[u8]) {
        let mut again = Vec::with_capacity(bytes.len() + self.again.len() - self.pos);
        again.extend_from_slice(bytes);
        again.extend_from_slice(&self.again[self.pos..]);
        self.again = again;
        self.pos = 0;
    }

    /// Drops a UTF-8 byte order mark at the start, however the source chunks its first bytes.
    fn skip_bom(&mut self) -> io::Result<()> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let mut head = Vec::with_capacity(BOM.len());
        while head.len() < BOM.len() {
            let buf = self.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let n = buf.len().min(BOM.len() - head.len());
            head.extend_from_slice(&buf[..n]);
            self.consume(n);
        }
        if head != BOM {
            self.unread(&head);
        }
        Ok(())
    }
}

impl Read for Source<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Source<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos < self.again.len() {
            Ok(&self.again[self.pos..])
        } else {
            self.inner.fill_buf()
        }
    }

    fn consume(&mut self, n: usize) {
        if self.pos < self.again.len() {
            self.pos += n;
            if self.pos >= self.again.len() {
                self.again = Vec::new();
                self.pos = 0;
            }
        } else {
            self.inner.consume(n);
        }
    }
}

/// A buffered reader over `source`, decompressing gzip when the data starts with its magic
/// number (whatever the name says).
pub fn decompressed<'r, R: Read + Send + 'r>(
    mut source: R,
) -> io::Result<Box<dyn BufRead + Send + 'r>> {
    // The magic number's two bytes may come in two reads (a network stream's first chunk can
    // be one byte): read until there are two, then put them back in front.
    let mut magic = [0; 2];
    let mut got = 0;
    while got < magic.len() {
        match source.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let gzip = magic[..got] == [0x1f, 0x8b];
    let source = io::Cursor::new(magic).take(got as u64).chain(source);
    let buffered = BufReader::with_capacity(64 * 1024, source);
    Ok(if gzip {
        Box::new(BufReader::with_capacity(
            64 * 1024,
            flate2::bufread::MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    })
}

fn trim_line_end(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = b {
        b = rest;
    }
    b
}

/// Reads one CSV record into `state.out`/`state.ends` and its bytes into `raw`. Returns the line
/// the record starts on, or `None` at the end.
fn read_csv_record(
    src: &mut Source<'_>,
    state: &mut CsvState,
    raw: &mut Vec<u8>,
    raw_start: &mut usize,
    line: &mut u64,
) -> io::Result<Option<(u64, CsvShape)>> {
    raw.clear();
    *raw_start = 0;
    if state.plain_records
        && let Some(record) = read_plain_record(src, state, raw, raw_start, line)?
    {
        return Ok(Some(record));
    }
    let mut outlen = 0;
    let mut nends = 0;
    loop {
        let input = src.fill_buf()?;
        let eof = input.is_empty();
        let (res, nin, nout, nend) =
            state
                .rdr
                .read_record(input, &mut state.out[outlen..], &mut state.ends[nends..]);
        raw.extend_from_slice(&input[..nin]);
        src.consume(nin);
        outlen += nout;
        nends += nend;
        match res {
            ReadRecordResult::InputEmpty => {
                if eof {
                    // csv-core needs an empty input to flush the final record.
                    continue;
                }
            }
            ReadRecordResult::OutputFull => {
                let n = state.out.len();
                state.out.resize(n * 2, 0);
            }
            ReadRecordResult::OutputEndsFull => {
                let n = state.ends.len();
                state.ends.resize(n * 2, 0);
            }
            ReadRecordResult::Record => {
                state.nfields = nends;
                state.gap = 0;
                // Blank lines before the record are skipped by csv-core; start at its content.
                let lead = raw
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                let start = *line + count_newlines(&raw[..lead]);
                *line += count_newlines(raw);
                *raw_start = lead;
                return Ok(Some((start, CsvShape::Fields)));
            }
            ReadRecordResult::End => {
                return Ok(None);
            }
        }
        if raw.len() > MAX_ROW_BYTES {
            // A record this long is a runaway quote or a line without a break: its first line
            // is refused (a prefix kept for the quarantine) and the lines after it are read
            // again, so that one stray quote cannot swallow the valid rows that follow it.
            let lead = raw
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let start = *line + count_newlines(&raw[..lead]);
            let first_line_end = raw[lead..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| lead + p + 1);
            match first_line_end {
                Some(end) => {
                    src.unread(&raw[end..]);
                    raw.truncate(end);
                    *line = start + 1;
                }
                None => {
                    if skip_to_line_end(src)? {
                        *line = start + 1;
                    } else {
                        *line = start;
                    }
                }
            }
            raw.drain(..lead);
            raw.truncate(KEPT_PREFIX);
            state.rdr = csv_reader_without_bom();
            state.nfields = 0;
            state.gap = 0;
            return Ok(Some((start, CsvShape::TooLong)));
        }
    }
}

/// The common case without csv-core's state machine: a record that is one whole line of the
/// buffered input (after any blank lines), with no quote and no carriage return but the one of
/// a CRLF. Its text goes to `state.out` as it is, the fields split at the commas. Anything else
/// is left to csv-core: `None`, nothing consumed. Between records csv-core is at the start of
/// one, so taking a record past it leaves it where it was.
fn read_plain_record(
    src: &mut Source<'_>,
    state: &mut CsvState,
    raw: &mut Vec<u8>,
    raw_start: &mut usize,
    line: &mut u64,
) -> io::Result<Option<(u64, CsvShape)>> {
    let input = src.fill_buf()?;
    let Some(plain) = plain_line(input) else {
        return Ok(None);
    };
    split_plain(state, &input[plain.lead..plain.lead + plain.len]);
    raw.extend_from_slice(&input[..=plain.end]);
    src.consume(plain.end + 1);
    *raw_start = plain.lead;
    // The record's own line holds no line break but the one that ends it.
    let start = *line + count_newlines(&raw[..plain.lead]);
    *line = start + 1;
    Ok(Some((start, CsvShape::Fields)))
}

/// Where a plain record lies in the buffered input.
struct PlainLine {
    /// Blank lines (CR or LF) before it, skipped as csv-core skips them.
    lead: usize,
    /// Its text, from `lead`, without the line break.
    len: usize,
    /// Where its line feed is.
    end: usize,
}

/// The plain record at the start of `input`, if there is one.
fn plain_line(input: &[u8]) -> Option<PlainLine> {
    let lead = input
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let end = lead + memchr::memchr(b'\n', &input[lead..])?;
    let text = &input[lead..end];
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    // Long records go to csv-core, which decides when one is too long.
    if end >= MAX_ROW_BYTES || memchr::memchr2(b'"', b'\r', text).is_some() {
        return None;
    }
    Some(PlainLine {
        lead,
        len: text.len(),
        end,
    })
}

/// A plain record's text into `state.out`, its fields split at the commas.
fn split_plain(state: &mut CsvState, text: &[u8]) {
    if state.out.len() < text.len() {
        state.out.resize(text.len(), 0);
    }
    state.out[..text.len()].copy_from_slice(text);
    let mut fields = 0;
    for field_end in memchr::memchr_iter(b',', text).chain([text.len()]) {
        if fields == state.ends.len() {
            state.ends.push(field_end);
        } else {
            state.ends[fields] = field_end;
        }
        fields += 1;
    }
    state.nfields = fields;
    state.gap = 1;
}

/// Skips past the next line break; whether there was one before the end.
fn skip_to_line_end(src: &mut Source<'_>) -> io::Result<bool> {
    loop {
        let buf = src.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            src.consume(pos + 1);
            return Ok(true);
        }
        let n = buf.len();
        src.consume(n);
    }
}

/// A csv-core reader that takes its input as data from the first byte. csv-core drops a byte
/// order mark at the start of the first input it is given, wherever in the file that input
/// starts: the file's BOM is stripped before (see [`Source::skip_bom`]), and plain lines are
/// split without csv-core, so its first input may be a later record whose first field starts
/// with U+FEFF. It is shown an empty line first, which it skips.
fn csv_reader_without_bom() -> csv_core::Reader {
    let mut rdr = csv_core::Reader::new();
    let _ = rdr.read_record(b"\n", &mut [], &mut []);
    rdr
}

fn count_newlines(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}

fn csv_field(state: &CsvState, i: usize) -> &[u8] {
    let start = if i == 0 {
        0
    } else {
        state.ends[i - 1] + state.gap
    };
    &state.out[start..state.ends[i]]
}

fn parse_header(state: &CsvState) -> Header {
    let mut columns = Vec::with_capacity(state.nfields);
    for i in 0..state.nfields {
        let mut name = csv_field(state, i);
        if i == 0 {
            name = name.strip_prefix(b"\xef\xbb\xbf").unwrap_or(name);
        }
        let name = std::str::from_utf8(name).unwrap_or("").trim();
        columns.push(Field::from_name(name));
    }
    let ok = Field::CONTRACT.iter().all(|f| {
        let n = columns.iter().filter(|c| **c == Some(*f)).count();
        n == 1 || (n == 0 && is_optional(*f))
    });
    Header { columns, ok }
}

fn csv_fields(state: &CsvState, shape: CsvShape) -> Result<RawFields<'_>, FieldError> {
    let row_err = |r| Err(FieldError::new(Field::Row, r));
    if let CsvShape::TooLong = shape {
        return row_err(Reason::RowTooLong);
    }
    let Some(header) = &state.header else {
        return row_err(Reason::BadHeader);
    };
    if !header.ok {
        return row_err(Reason::BadHeader);
    }
    if state.nfields != header.columns.len() {
        return row_err(Reason::FieldCount);
    }
    // The fields lie in `out` end to end, or one comma apart: one UTF-8 check for the record,
    // then each field is valid exactly when it also starts and ends on character boundaries.
    let end = state
        .nfields
        .checked_sub(1)
        .map_or(0, |last| state.ends[last]);
    let Ok(all) = std::str::from_utf8(&state.out[..end]) else {
        return row_err(Reason::InvalidUtf8);
    };
    let mut fields = RawFields::default();
    let mut start = 0;
    for (column, &field_end) in header.columns.iter().zip(&state.ends[..state.nfields]) {
        let Some(text) = all.get(start..field_end) else {
            return row_err(Reason::InvalidUtf8);
        };
        start = field_end + state.gap;
        if let Some(f) = column {
            fields.set(*f, FieldValue::Text(text));
        }
    }
    Ok(fields)
}

/// Reads one non-blank line into `raw` and parses it into `obj`.
fn read_json_line(
    src: &mut Source<'_>,
    raw: &mut Vec<u8>,
    raw_start: &mut usize,
    line: &mut u64,
    obj: &mut Option<serde_json::Map<String, serde_json::Value>>,
) -> io::Result<Option<(u64, Result<(), Reason>)>> {
    *raw_start = 0;
    loop {
        raw.clear();
        let limit = (MAX_ROW_BYTES + 1) as u64;
        let n = src.by_ref().take(limit).read_until(b'\n', raw)?;
        if n == 0 {
            return Ok(None);
        }
        let start = *line;
        *line += 1;
        if raw.len() > MAX_ROW_BYTES && raw.last() != Some(&b'\n') {
            raw.truncate(KEPT_PREFIX);
            // The break that ends this row was counted above.
            skip_to_line_end(src)?;
            return Ok(Some((start, Err(Reason::RowTooLong))));
        }
        let body = trim_line_end(raw);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if std::str::from_utf8(body).is_err() {
            return Ok(Some((start, Err(Reason::InvalidUtf8))));
        }
        return Ok(Some((
            start,
            match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(map)) => {
                    *obj = Some(map);
                    Ok(())
                }
                _ => Err(Reason::MalformedJson),
            },
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const HEADER: &str = "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed";

    /// (line, raw, Ok(event_id) | Err(reason)) for every row.
    fn rows(data: &[u8], format: Format) -> Vec<(u64, String, Result<String, Reason>)> {
        let mut r = EventReader::new(data, format).expect("open");
        let mut out = Vec::new();
        while let Some(row) = r.next_row().expect("read") {
            let f = match &row.fields {
                Ok(f) => Ok(match f.get(Field::EventId) {
                    FieldValue::Text(s) | FieldValue::Str(s) => s.to_owned(),
                    other => format!("{other:?}"),
                }),
                Err(e) => Err(e.reason),
            };
            out.push((row.line, row.raw_text().into_owned(), f));
        }
        out
    }

    /// (line, raw, fields or error) for every row, plain records split with or without csv-core.
    fn rows_both_ways(data: &[u8]) -> [Vec<(u64, String, String)>; 2] {
        [true, false].map(|plain| {
            let mut r = EventReader::new(data, Format::Csv).expect("open");
            if let Kind::Csv(state) = &mut r.kind {
                state.plain_records = plain;
            }
            let mut out = Vec::new();
            while let Some(row) = r.next_row().expect("read") {
                let fields = format!("{:?}", row.fields);
                out.push((row.line, row.raw_text().into_owned(), fields));
            }
            out
        })
    }

    /// (line, raw, event or reasons) for every row: read by `next_checked`, and by `next_row`
    /// then validated, plain records split without csv-core and with it.
    fn checked_three_ways(data: &[u8]) -> [Vec<(u64, String, String)>; 3] {
        let validator = Validator::at(1_795_000_000_000);
        [(true, true), (false, true), (false, false)].map(|(checked, plain)| {
            let mut r = EventReader::new(data, Format::Csv).expect("open");
            if let Kind::Csv(state) = &mut r.kind {
                state.plain_records = plain;
            }
            let mut out = Vec::new();
            if checked {
                while let Some(row) = r.next_checked(&validator).expect("read") {
                    let raw = String::from_utf8_lossy(row.raw).into_owned();
                    out.push((row.line, raw, format!("{:?}", row.event)));
                }
            } else {
                while let Some(row) = r.next_row().expect("read") {
                    let event = row.fields.map_err(|e| vec![e]);
                    let event = event.and_then(|f| validator.validate(&f));
                    out.push((row.line, row.raw_text().into_owned(), format!("{event:?}")));
                }
            }
            out
        })
    }

    const PIECES: &[&[u8]] = &[
        b"a",
        b"7",
        b",",
        b",,",
        b"\"",
        b"\r",
        b"\n",
        b"\r\n",
        b"\xc3\xa9",
        b"\xc3",
        b"\xff",
        b" ",
        b"2026-11-01T00:00:00Z,v1,c1,tv,BR,1,2,3,true\n",
        b"2026-11-01T00:00:00.25-03:00,v\xc3\xa9,c1,web,PT,0,,,false\n",
        b"2026-11-01 00:00:00Z,v1,c1,tv,br,-1,0,,yes\r\n",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Splitting plain records at the commas gives what csv-core gives, on any mix of
        /// quotes, CR, LF, blank lines, missing or extra fields and broken UTF-8.
        #[test]
        fn plain_records_read_as_csv_core_reads_them(
            body in proptest::collection::vec(proptest::sample::select(PIECES), 0..60),
            header in proptest::bool::ANY,
        ) {
            let mut data = Vec::new();
            if header {
                data.extend_from_slice(HEADER.as_bytes());
                data.push(b'\n');
            }
            data.extend(body.concat());
            let [plain, csv_core] = rows_both_ways(&data);
            proptest::prop_assert_eq!(plain, csv_core);
        }

        /// Reading rows validated gives what reading them and then validating them gives.
        #[test]
        fn checked_rows_equal_rows_then_validated(
            body in proptest::collection::vec(proptest::sample::select(PIECES), 0..60),
        ) {
            let mut data = format!("{HEADER}\n").into_bytes();
            data.extend(body.concat());
            let [checked, plain, csv_core] = checked_three_ways(&data);
            proptest::prop_assert_eq!(&checked, &plain);
            proptest::prop_assert_eq!(&checked, &csv_core);
        }
    }

    #[test]
    fn plain_records_across_buffer_ends_read_as_csv_core_reads_them() {
        // Several of the reader's 64 KiB buffers, records of every length crossing their ends.
        let mut data = format!("{HEADER}\r\n").into_bytes();
        for i in 0..6000 {
            let quote = if i % 97 == 0 { "\"" } else { "" };
            let blank = if i % 13 == 0 { "\r\n\n" } else { "" };
            let pad = "x".repeat(i % 37);
            data.extend_from_slice(
                format!(
                    "{blank}e{i}{pad},2026-11-01T00:00:00Z,{quote}v{i}{quote},c1,tv,BR,1,,,true\n"
                )
                .as_bytes(),
            );
        }
        let [plain, csv_core] = rows_both_ways(&data);
        assert_eq!(plain.len(), 6000);
        assert_eq!(plain, csv_core);
        let [checked, plain, csv_core] = checked_three_ways(&data);
        assert_eq!(checked, plain);
        assert_eq!(checked, csv_core);
        let valid = checked.iter().filter(|r| r.2.starts_with("Ok")).count();
        assert_eq!(valid, 6000);
    }

    #[test]
    fn csv_with_crlf_quotes_blank_lines_and_bad_rows() {
        let mut data = Vec::new();
        data.extend_from_slice(b"\xef\xbb\xbf");
        data.extend_from_slice(HEADER.as_bytes());
        data.extend_from_slice(b"\r\n");
        data.extend_from_slice(b"\"a,1\",t,v,c,tv,BR,1,,,true\r\n");
        data.extend_from_slice(b"\r\n\r\n");
        data.extend_from_slice(b"b,t,\"multi\nline\",c,tv,BR,1,,,true\r\n");
        data.extend_from_slice(b"c,t,v\xff,c,tv,BR,1,,,true\r\n");
        data.extend_from_slice(b"d,t,v,c,tv,BR,1,,,true,extra\n");
        data.extend_from_slice(b"e,t,v,c,tv\n");
        data.extend_from_slice(b"\"f \"\"quoted\"\"\",t,v,c,tv,BR,1,,,true");
        let got = rows(&data, Format::Csv);
        assert_eq!(
            got,
            vec![
                (2, "\"a,1\",t,v,c,tv,BR,1,,,true".into(), Ok("a,1".into())),
                (
                    5,
                    "b,t,\"multi\nline\",c,tv,BR,1,,,true".into(),
                    Ok("b".into())
                ),
                (
                    7,
                    "c,t,v\u{fffd},c,tv,BR,1,,,true".into(),
                    Err(Reason::InvalidUtf8)
                ),
                (
                    8,
                    "d,t,v,c,tv,BR,1,,,true,extra".into(),
                    Err(Reason::FieldCount)
                ),
                (9, "e,t,v,c,tv".into(), Err(Reason::FieldCount)),
                (
                    10,
                    "\"f \"\"quoted\"\"\",t,v,c,tv,BR,1,,,true".into(),
                    Ok("f \"quoted\"".into())
                ),
            ]
        );
    }

    #[test]
    fn a_character_split_by_a_delimiter_is_invalid_utf8() {
        // The two bytes of `é` in two fields: each field is invalid although the fields end to
        // end (as the parser stores them) are not. `é` whole, in one field, is fine.
        let mut data = format!("{HEADER}\n").into_bytes();
        data.extend_from_slice(b"a,t,v\xc3,\xa9c,tv,BR,1,,,true\n");
        data.extend_from_slice(b"b,t,v\xc3\xa9,c,tv,BR,1,,,true\n");
        data.extend_from_slice(b"c\xc3,\xa9,v,c,tv,BR,1,,,true\n");
        let got = rows(&data, Format::Csv);
        let reasons: Vec<_> = got.into_iter().map(|r| r.2).collect();
        assert_eq!(
            reasons,
            vec![
                Err(Reason::InvalidUtf8),
                Ok("b".into()),
                Err(Reason::InvalidUtf8)
            ]
        );
    }

    #[test]
    fn csv_columns_are_matched_by_name_and_optional_ones_may_be_absent() {
        let data = "completed,country,device,content_id,viewer_id,occurred_at,event_id,watch_seconds\n\
                    true,BR,tv,c,v,t,id-1,5\n";
        let got = rows(data.as_bytes(), Format::Csv);
        assert_eq!(got[0].2, Ok("id-1".into()));
    }

    #[test]
    fn a_bad_header_rejects_every_row_but_loses_none() {
        let data = "event_id,occurred_at\na,b\nc,d\n";
        let got = rows(data.as_bytes(), Format::Csv);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|r| r.2 == Err(Reason::BadHeader)));
    }

    #[test]
    fn a_runaway_quote_is_cut_and_the_file_goes_on() {
        let mut data = format!("{HEADER}\n").into_bytes();
        data.extend_from_slice(b"x,\"");
        data.extend(std::iter::repeat_n(b'a', MAX_ROW_BYTES + 10));
        data.extend_from_slice(b"\nok,t,v,c,tv,BR,1,,,true\n");
        let got = rows(&data, Format::Csv);
        assert_eq!(
            got.len(),
            2,
            "{:?}",
            got.iter().map(|g| &g.2).collect::<Vec<_>>()
        );
        assert_eq!(got[0].2, Err(Reason::RowTooLong));
        assert!(got[0].1.len() <= KEPT_PREFIX);
        assert_eq!((got[1].0, got[1].2.clone()), (3, Ok("ok".into())));
    }

    #[test]
    fn many_blank_lines_are_no_row() {
        let mut data = b"event_id,occurred_at\n".to_vec();
        data.extend(std::iter::repeat_n(b'\n', MAX_ROW_BYTES + 10));
        data.extend_from_slice(b"e1,t\n");
        let got = rows(&data, Format::Csv);
        assert_eq!(got.len(), 1, "{:?}", &got[..got.len().min(2)]);
        assert_eq!(got[0].0, 2 + MAX_ROW_BYTES as u64 + 10);
        assert_eq!(got[0].1, "e1,t");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("gzip")
    }

    #[test]
    fn gzip_is_detected_by_content() {
        let plain = format!("{HEADER}\na,t,v,c,tv,BR,1,,,true\n");
        let data = gzip(plain.as_bytes());
        assert_eq!(
            rows(&data, Format::Csv),
            rows(plain.as_bytes(), Format::Csv)
        );
    }

    /// A source that gives one byte per read, as a network stream may.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(out)) => {
                    *out = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn gzip_is_detected_when_its_magic_number_comes_one_byte_at_a_time() {
        let plain = format!("{HEADER}\na,t,v,c,tv,BR,1,,,true\r\nb,t,v,c,tv,BR,1,,,true\n");
        let data = gzip(plain.as_bytes());
        let one_byte_reads = |data: &[u8]| {
            let mut r = EventReader::new(OneByte(data), Format::Csv).expect("open");
            let mut out = Vec::new();
            while let Some(row) = r.next_row().expect("read") {
                out.push((
                    row.line,
                    row.raw_text().into_owned(),
                    format!("{:?}", row.fields),
                ));
            }
            out
        };
        let want = one_byte_reads(plain.as_bytes());
        assert_eq!(want.len(), 2);
        assert!(want.iter().all(|r| r.2.starts_with("Ok")));
        assert_eq!(one_byte_reads(&data), want);
        // Shorter than the magic number: read as it is.
        assert_eq!(one_byte_reads(b"e"), vec![]);
        assert_eq!(one_byte_reads(b""), vec![]);
    }

    #[test]
    fn truncated_gzip_is_an_io_error_not_a_panic() {
        let plain = format!("{HEADER}\n{}", "a,t,v,c,tv,BR,1,,,true\n".repeat(1000));
        let mut data = gzip(plain.as_bytes());
        data.truncate(data.len() / 2);
        let mut r = EventReader::new(&data[..], Format::Csv).expect("open");
        let mut result = Ok(());
        loop {
            match r.next_row() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        assert!(result.is_err());
    }

    #[test]
    fn json_lines() {
        let data = b"{\"event_id\":\"a\",\"watch_seconds\":3}\r\n\n  \n[1,2]\n{\"event_id\":\"\xff\"}\n{oops\n{\"event_id\":\"b\"}";
        let got = rows(data, Format::JsonLines);
        assert_eq!(
            got.iter().map(|g| (g.0, g.2.clone())).collect::<Vec<_>>(),
            vec![
                (1, Ok("a".into())),
                (4, Err(Reason::MalformedJson)),
                (5, Err(Reason::InvalidUtf8)),
                (6, Err(Reason::MalformedJson)),
                (7, Ok("b".into())),
            ]
        );
    }

    #[test]
    fn format_from_name() {
        assert_eq!(Format::from_name("a/b c.CSV.gz"), Some(Format::Csv));
        assert_eq!(Format::from_name("x.ndjson"), Some(Format::JsonLines));
        assert_eq!(Format::from_name("x.parquet"), None);
    }
}
