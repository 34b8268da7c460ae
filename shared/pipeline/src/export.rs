//! The published day as files for the lake: the cube CSV of the contract and a Parquet file
//! that Athena, Redshift Spectrum, EMR and QuickSight read through the gold table's partition.
//!
//! The Parquet file holds the day-level cells and every hour's cells, told apart by `level`
//! (`day` or `hour`) and `hour`; a rolled-up dimension is null. The day itself is the partition
//! (`gold/cube/day=YYYY-MM-DD/`), not a column.

use std::sync::Arc;

use bytes::Bytes;
use chrono::NaiveDate;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;
use rustc_hash::FxHashMap;
use streamcube_model::cube::{Cell, Dims};
use streamcube_model::event::{Country, Device};

/// Where the gold Parquet files live in the lake.
pub const GOLD_PREFIX: &str = "gold/cube/";

/// The CSV export of a day.
pub fn csv_path(day: NaiveDate) -> String {
    format!("exports/cube/day={}/cube.csv", day.format("%Y-%m-%d"))
}

/// The Parquet export of a day.
pub fn parquet_path(day: NaiveDate) -> String {
    format!("{GOLD_PREFIX}day={}/cube.parquet", day.format("%Y-%m-%d"))
}

/// The schema of the gold table's files (the Glue table declares the same columns).
pub const PARQUET_SCHEMA: &str = "message cube {
    REQUIRED BYTE_ARRAY level (UTF8);
    OPTIONAL INT32 hour;
    OPTIONAL BYTE_ARRAY country (UTF8);
    OPTIONAL BYTE_ARRAY device (UTF8);
    OPTIONAL BYTE_ARRAY genre (UTF8);
    OPTIONAL BYTE_ARRAY content_id (UTF8);
    REQUIRED INT64 plays;
    REQUIRED INT64 watch_seconds;
    REQUIRED INT64 completed;
    REQUIRED INT64 buffering_ms;
    REQUIRED INT64 bitrate_sum;
    REQUIRED INT64 bitrate_count;
    REQUIRED INT64 unique_viewers;
}";

/// Rows per row group: bounded memory for readers, few groups for a typical day.
const ROW_GROUP: usize = 256 * 1024;

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Each distinct text of a file as one shared buffer (see [`DayParquet`]): countries and
/// devices by their codes, other texts through a map.
#[derive(Default)]
struct Texts {
    countries: Vec<Option<ByteArray>>,
    devices: [Option<ByteArray>; Device::ALL.len()],
    others: FxHashMap<Box<str>, ByteArray>,
}

fn shared(t: &str) -> ByteArray {
    ByteArray::from(Bytes::copy_from_slice(t.as_bytes()))
}

impl Texts {
    fn country(&mut self, c: Country) -> ByteArray {
        let i = usize::from(c.code());
        if self.countries.len() <= i {
            self.countries.resize(i + 1, None);
        }
        self.countries[i]
            .get_or_insert_with(|| shared(c.as_str()))
            .clone()
    }

    fn device(&mut self, d: Device) -> ByteArray {
        self.devices[usize::from(d.code())]
            .get_or_insert_with(|| shared(d.as_str()))
            .clone()
    }

    fn other(&mut self, t: &str) -> ByteArray {
        if let Some(b) = self.others.get(t) {
            return b.clone();
        }
        let b = shared(t);
        self.others.insert(t.into(), b.clone());
        b
    }
}

/// A day's Parquet export (Snappy-compressed), written a level at a time: the hours as they
/// are computed, then the day. An hour's cells can thus be dropped once they are written here,
/// instead of all the hours being held until the day is complete.
pub struct DayParquet {
    writer: SerializedFileWriter<Vec<u8>>,
    /// Values repeat a lot (a few levels, countries, devices, genres, some thousands of titles):
    /// each distinct text becomes one shared buffer, and every row a reference to it.
    texts: Texts,
}

impl DayParquet {
    pub fn new() -> Result<Self, ParquetError> {
        let schema = Arc::new(parse_message_type(PARQUET_SCHEMA)?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                // Rows are ordered by level and hour only: min/max of the other columns span
                // every value in each row group and would prune nothing, so they are not
                // computed.
                .set_statistics_enabled(EnabledStatistics::None)
                .set_column_statistics_enabled(ColumnPath::from("level"), EnabledStatistics::Page)
                .set_column_statistics_enabled(ColumnPath::from("hour"), EnabledStatistics::Page)
                .build(),
        );
        Ok(DayParquet {
            writer: SerializedFileWriter::new(Vec::new(), schema, props)?,
            texts: Texts::default(),
        })
    }

    /// Appends the cells of one level: an hour of the day, or the day itself (`None`).
    pub fn add(&mut self, hour: Option<u8>, cells: &[(Dims, Cell)]) -> Result<(), ParquetError> {
        let DayParquet { writer, texts } = self;
        let level = texts.other(if hour.is_some() { "hour" } else { "day" });
        for group in cells.chunks(ROW_GROUP) {
            let mut rg = writer.next_row_group()?;
            let mut column = 0;
            while let Some(mut col) = rg.next_column()? {
                match column {
                    0 => {
                        let v = vec![level.clone(); group.len()];
                        col.typed::<ByteArrayType>().write_batch(&v, None, None)?;
                    }
                    1 => {
                        let v = hour.map_or_else(Vec::new, |h| vec![i32::from(h); group.len()]);
                        let d = vec![i16::from(hour.is_some()); group.len()];
                        col.typed::<Int32Type>().write_batch(&v, Some(&d), None)?;
                    }
                    2..=5 => {
                        let mut v = Vec::with_capacity(group.len());
                        let mut d = Vec::with_capacity(group.len());
                        for (dims, _) in group {
                            let t = match column {
                                2 => dims.country.map(|c| texts.country(c)),
                                3 => dims.device.map(|d| texts.device(d)),
                                4 => dims.genre.as_deref().map(|t| texts.other(t)),
                                _ => dims.content_id.as_deref().map(|t| texts.other(t)),
                            };
                            d.push(i16::from(t.is_some()));
                            v.extend(t);
                        }
                        col.typed::<ByteArrayType>()
                            .write_batch(&v, Some(&d), None)?;
                    }
                    _ => {
                        let v: Vec<i64> = group
                            .iter()
                            .map(|(_, cell)| {
                                let m = &cell.measures;
                                int(match column {
                                    6 => m.plays,
                                    7 => m.watch_seconds,
                                    8 => m.completed,
                                    9 => m.buffering_ms,
                                    10 => m.bitrate_sum,
                                    11 => m.bitrate_count,
                                    _ => cell.viewers.estimate(),
                                })
                            })
                            .collect();
                        col.typed::<Int64Type>().write_batch(&v, None, None)?;
                    }
                }
                col.close()?;
                column += 1;
            }
            rg.close()?;
        }
        Ok(())
    }

    /// The file's bytes.
    pub fn finish(self) -> Result<Vec<u8>, ParquetError> {
        self.writer.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    use streamcube_model::cube::Measures;
    use streamcube_model::event::{Country, Device};

    fn cell(plays: u64) -> Cell {
        Cell {
            measures: Measures {
                plays,
                watch_seconds: plays * 60,
                ..Measures::default()
            },
            ..Cell::default()
        }
    }

    /// Texts are shared buffers, kept per country and device code and per other text across
    /// levels: every row still reads back its own cell's values.
    #[test]
    fn every_row_has_its_own_texts() {
        let countries = ["BR", "US", "PT", "AD", "ZW"];
        let mut levels = Vec::new();
        for (l, hour) in [Some(0), Some(23), None].into_iter().enumerate() {
            let cells = (0..40_usize)
                .map(|i| {
                    let dims = Dims {
                        country: (i % 6 != 5)
                            .then(|| countries[(i + l) % 5].parse().expect("country")),
                        device: Device::ALL.get((i + 2 * l) % 6).copied(),
                        genre: (i % 4 != 0).then(|| format!("genre-{}", (i + l) % 3).into()),
                        content_id: (i % 3 != 0).then(|| format!("c{}", (i * 7 + l) % 11).into()),
                    };
                    (dims, cell(i as u64 + 1))
                })
                .collect::<Vec<(Dims, Cell)>>();
            levels.push((hour, cells));
        }
        let mut file = DayParquet::new().expect("a writer");
        for (hour, cells) in &levels {
            file.add(*hour, cells).expect("a level");
        }
        let bytes = file.finish().expect("encodes");
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("a parquet file");
        let text = |f: &Field| match f {
            Field::Str(s) => Some(s.clone()),
            Field::Null => None,
            other => panic!("not a text: {other:?}"),
        };
        let got: Vec<[Option<String>; 4]> = reader
            .get_row_iter(None)
            .expect("rows")
            .map(|r| {
                let r = r.expect("row");
                let f: Vec<Field> = r.get_column_iter().map(|(_, f)| f.clone()).collect();
                [text(&f[2]), text(&f[3]), text(&f[4]), text(&f[5])]
            })
            .collect();
        let want: Vec<[Option<String>; 4]> = levels
            .iter()
            .flat_map(|(_, cells)| cells.iter())
            .map(|(d, _)| {
                [
                    d.country.map(|c| c.as_str().to_owned()),
                    d.device.map(|v| v.as_str().to_owned()),
                    d.genre.as_deref().map(str::to_owned),
                    d.content_id.as_deref().map(str::to_owned),
                ]
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn parquet_round_trip() {
        let all = Dims::default();
        let br = Dims {
            country: Some("BR".parse::<Country>().expect("country")),
            device: Some(Device::Tv),
            genre: Some("drama".into()),
            content_id: None,
        };
        let mut file = DayParquet::new().expect("a writer");
        file.add(Some(7), &[(all.clone(), cell(3))])
            .expect("an hour");
        file.add(None, &[(all, cell(3)), (br, cell(2))])
            .expect("the day");
        let bytes = file.finish().expect("encodes");
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("a parquet file");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 3);
        // Min/max where they can prune (level, hour), not where they cannot.
        let group = reader.metadata().row_group(0);
        assert!(
            group.column(0).statistics().is_some(),
            "level has statistics"
        );
        assert!(
            group.column(1).statistics().is_some(),
            "hour has statistics"
        );
        assert!(group.column(2).statistics().is_none(), "country has none");
        assert!(group.column(12).statistics().is_none(), "viewers have none");
        let rows: Vec<_> = reader
            .get_row_iter(None)
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect();
        let fields = |i: usize| -> Vec<(String, Field)> {
            rows[i]
                .get_column_iter()
                .map(|(n, f)| (n.clone(), f.clone()))
                .collect()
        };
        // The hours first, then the day.
        let first = fields(0);
        assert_eq!(first[0].1, Field::Str("hour".into()));
        assert_eq!(first[1].1, Field::Int(7));
        assert_eq!(first[2].1, Field::Null);
        assert_eq!(first[6].1, Field::Long(3));
        assert_eq!(fields(1)[0].1, Field::Str("day".into()));
        let third = fields(2);
        assert_eq!(third[0].1, Field::Str("day".into()));
        assert_eq!(third[1].1, Field::Null);
        assert_eq!(third[2].1, Field::Str("BR".into()));
        assert_eq!(third[3].1, Field::Str("tv".into()));
        assert_eq!(third[4].1, Field::Str("drama".into()));
        assert_eq!(third[5].1, Field::Null);
        assert_eq!(third[6].1, Field::Long(2));
        assert_eq!(third[7].1, Field::Long(120));
    }
}
