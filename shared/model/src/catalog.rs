//! Reference data: the content catalog (`content_id,title,genre,release_year,duration_seconds`).
//!
//! Events are joined to the catalog for their genre; content the catalog does not know gets the
//! genre [`UNKNOWN_GENRE`]. A catalog file is read like any bronze file: every bad row is reported
//! with its line and reason, and a later row for the same content replaces an earlier one.

use std::collections::BTreeMap;
use std::io::Read;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::report::{FileReport, Rejection};

/// The genre of content missing from the catalog.
pub const UNKNOWN_GENRE: &str = "unknown";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub content_id: String,
    pub title: String,
    pub genre: String,
    pub release_year: Option<u16>,
    pub duration_seconds: Option<u32>,
}

/// Content id to catalog entry.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    by_id: FxHashMap<String, CatalogEntry>,
}

impl Catalog {
    pub fn new() -> Self {
        Catalog::default()
    }

    pub fn insert(&mut self, e: CatalogEntry) {
        self.by_id.insert(e.content_id.clone(), e);
    }

    pub fn get(&self, content_id: &str) -> Option<&CatalogEntry> {
        self.by_id.get(content_id)
    }

    /// The genre of `content_id`, or [`UNKNOWN_GENRE`].
    pub fn genre_of(&self, content_id: &str) -> &str {
        self.by_id
            .get(content_id)
            .map_or(UNKNOWN_GENRE, |e| e.genre.as_str())
    }

    pub fn title_of(&self, content_id: &str) -> Option<&str> {
        self.by_id.get(content_id).map(|e| e.title.as_str())
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.by_id.values()
    }
}

impl FromIterator<CatalogEntry> for Catalog {
    fn from_iter<I: IntoIterator<Item = CatalogEntry>>(iter: I) -> Self {
        let mut c = Catalog::new();
        for e in iter {
            c.insert(e);
        }
        c
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog file cannot be read: {0}")]
    Io(#[from] std::io::Error),
    #[error("the catalog header lacks the column `{0}`")]
    MissingColumn(&'static str),
}

/// Reads a catalog CSV. Returns the good entries, the rejected rows and the file's counts.
pub fn read_catalog<'r, R: Read + 'r>(
    source: R,
) -> Result<(Vec<CatalogEntry>, Vec<Rejection>, FileReport), CatalogError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(flate_aware(source)?);
    let headers = rdr.byte_headers().map_err(csv_io)?.clone();
    let col = |name: &'static str| {
        headers
            .iter()
            .position(|h| {
                let h = h.strip_prefix(b"\xef\xbb\xbf").unwrap_or(h);
                h.trim_ascii() == name.as_bytes()
            })
            .ok_or(CatalogError::MissingColumn(name))
    };
    let (id_c, title_c, genre_c) = (col("content_id")?, col("title")?, col("genre")?);
    let year_c = col("release_year").ok();
    let dur_c = col("duration_seconds").ok();

    let mut entries = Vec::new();
    let mut rejected = Vec::new();
    let mut report = FileReport::default();
    let mut rec = csv::ByteRecord::new();
    while rdr.read_byte_record(&mut rec).map_err(csv_io)? {
        let line = rec.position().map_or(0, csv::Position::line);
        let raw = rec
            .iter()
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(",");
        report.rows += 1;
        match parse_entry(&rec, headers.len(), id_c, title_c, genre_c, year_c, dur_c) {
            Ok(e) => {
                report.accepted += 1;
                entries.push(e);
            }
            Err(error) => {
                report.reject(&[error]);
                rejected.push(Rejection {
                    line,
                    raw,
                    errors: vec![error],
                    origin: BTreeMap::new(),
                });
            }
        }
    }
    Ok((entries, rejected, report))
}

fn csv_io(e: csv::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

fn flate_aware<'r, R: Read + 'r>(source: R) -> std::io::Result<Box<dyn Read + 'r>> {
    use std::io::BufRead;
    let mut b = std::io::BufReader::new(source);
    if b.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(b)))
    } else {
        Ok(Box::new(b))
    }
}

fn parse_entry(
    rec: &csv::ByteRecord,
    width: usize,
    id_c: usize,
    title_c: usize,
    genre_c: usize,
    year_c: Option<usize>,
    dur_c: Option<usize>,
) -> Result<CatalogEntry, crate::event::FieldError> {
    use crate::event::{Field, FieldError, Reason};
    let row = |r| FieldError::new(Field::Row, r);
    if rec.len() != width {
        return Err(row(Reason::FieldCount));
    }
    let text = |i: usize| -> Result<&str, FieldError> {
        std::str::from_utf8(rec.get(i).unwrap_or_default())
            .map(str::trim)
            .map_err(|_| row(Reason::InvalidUtf8))
    };
    let content_id = text(id_c)?;
    if content_id.is_empty() {
        return Err(FieldError::new(Field::ContentId, Reason::Empty));
    }
    let genre = text(genre_c)?;
    if genre.is_empty() {
        return Err(row(Reason::Missing));
    }
    let number = |c: Option<usize>| -> Result<Option<u64>, FieldError> {
        match c {
            None => Ok(None),
            Some(i) => {
                let t = text(i)?;
                if t.is_empty() {
                    Ok(None)
                } else {
                    t.parse().map(Some).map_err(|_| row(Reason::NotAnInteger))
                }
            }
        }
    };
    let release_year = number(year_c)?
        .map(u16::try_from)
        .transpose()
        .map_err(|_| row(Reason::OutOfRange))?;
    let duration_seconds = number(dur_c)?
        .map(u32::try_from)
        .transpose()
        .map_err(|_| row(Reason::OutOfRange))?;
    Ok(CatalogEntry {
        content_id: content_id.to_owned(),
        title: text(title_c)?.to_owned(),
        genre: genre.to_lowercase(),
        release_year,
        duration_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_good_rows_and_reports_bad_ones() {
        let data = "content_id,title,genre,release_year,duration_seconds\n\
                    c1,\"Rio, Again\",Drama,2020,5400\n\
                    ,No id,comedy,,\n\
                    c2,Two,comedy,19x9,\n\
                    c3,Three,,2001,60\n\
                    c1,Rio Again (cut),drama,2021,5000\n";
        let (entries, rejected, report) = read_catalog(data.as_bytes()).expect("read");
        assert_eq!((report.rows, report.accepted, report.rejected), (5, 2, 3));
        assert_eq!(
            rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let cat: Catalog = entries.into_iter().collect();
        assert_eq!(cat.len(), 1);
        assert_eq!(cat.title_of("c1"), Some("Rio Again (cut)"));
        assert_eq!(cat.genre_of("c1"), "drama");
        assert_eq!(cat.genre_of("nope"), UNKNOWN_GENRE);
    }

    #[test]
    fn a_header_without_genre_is_an_error() {
        let err = read_catalog("content_id,title\nc1,x\n".as_bytes()).expect_err("no genre");
        assert!(matches!(err, CatalogError::MissingColumn("genre")));
    }
}
