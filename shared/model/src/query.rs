//! Cube queries: parse the parameters, pick the cuboid to read, aggregate, order, cut.
//!
//! A query names a day range, a granularity (hour, day or total), dimensions to group by, filters
//! on any dimension, measures (stored or derived) and an ordering with a limit. The storage layer
//! hands the cells of [`Query::cuboid`] for every bucket in the range to an [`Aggregator`], which
//! rolls them up to the requested dimensions: exact measures add, sketches merge.
//!
//! ```
//! use streamcube_model::query::{Query, QueryLimits};
//! let q = Query::from_params(
//!     [("from", "2026-11-01"), ("to", "2026-11-07"), ("group_by", "content_id"),
//!      ("country", "BR"), ("order_by", "plays"), ("limit", "10")],
//!     &QueryLimits::default(),
//! ).unwrap();
//! assert_eq!(q.days().count(), 7);
//! let err = Query::from_params([("from", "2026-11-01"), ("to", "2026-11-07"), ("group_by", "city")],
//!     &QueryLimits::default()).unwrap_err();
//! assert_eq!(err.to_string(), "unknown dimension `city` in group_by (known: country, device, genre, content_id)");
//! ```

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::cube::{Cell, Cuboid, CuboidSet, Dim, DimsRef};
use crate::event::{Country, Device};

/// Time resolution of a query's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Hour,
    Day,
    Total,
}

/// What a result row can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Plays,
    WatchSeconds,
    Completed,
    BufferingMs,
    BitrateSum,
    BitrateCount,
    UniqueViewers,
    AvgWatchSeconds,
    AvgBitrateKbps,
    CompletionRate,
}

impl Measure {
    pub const ALL: [Measure; 10] = [
        Measure::Plays,
        Measure::WatchSeconds,
        Measure::Completed,
        Measure::BufferingMs,
        Measure::BitrateSum,
        Measure::BitrateCount,
        Measure::UniqueViewers,
        Measure::AvgWatchSeconds,
        Measure::AvgBitrateKbps,
        Measure::CompletionRate,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Measure::Plays => "plays",
            Measure::WatchSeconds => "watch_seconds",
            Measure::Completed => "completed",
            Measure::BufferingMs => "buffering_ms",
            Measure::BitrateSum => "bitrate_sum",
            Measure::BitrateCount => "bitrate_count",
            Measure::UniqueViewers => "unique_viewers",
            Measure::AvgWatchSeconds => "avg_watch_seconds",
            Measure::AvgBitrateKbps => "avg_bitrate_kbps",
            Measure::CompletionRate => "completion_rate",
        }
    }

    pub fn from_name(s: &str) -> Option<Measure> {
        Measure::ALL.into_iter().find(|m| m.name() == s)
    }

    /// The measure's value for a cell; derived measures are `None` when undefined (no plays).
    pub fn value(self, c: &Cell) -> Value {
        let m = &c.measures;
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                Value::Null
            } else {
                Value::Float(num as f64 / den as f64)
            }
        };
        match self {
            Measure::Plays => Value::Int(m.plays),
            Measure::WatchSeconds => Value::Int(m.watch_seconds),
            Measure::Completed => Value::Int(m.completed),
            Measure::BufferingMs => Value::Int(m.buffering_ms),
            Measure::BitrateSum => Value::Int(m.bitrate_sum),
            Measure::BitrateCount => Value::Int(m.bitrate_count),
            Measure::UniqueViewers => Value::Int(c.viewers.estimate()),
            Measure::AvgWatchSeconds => ratio(m.watch_seconds, m.plays),
            Measure::AvgBitrateKbps => ratio(m.bitrate_sum, m.bitrate_count),
            Measure::CompletionRate => ratio(m.completed, m.plays),
        }
    }
}

/// A cell of a query result.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    Int(u64),
    Float(f64),
    Null,
}

impl Value {
    fn sort_key(&self) -> f64 {
        match self {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Text(_) | Value::Null => f64::NEG_INFINITY,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", (x * 10_000.0).round() / 10_000.0),
            Value::Null => Ok(()),
        }
    }
}

/// Limits a deployment puts on queries.
#[derive(Clone, Copy, Debug)]
pub struct QueryLimits {
    pub max_days: u32,
    pub max_rows: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_days: 366,
            max_rows: 10_000,
        }
    }
}

/// Why a query was refused. Every message names the parameter and what it accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("missing parameter `{0}`")]
    Missing(&'static str),
    #[error("`{param}` must be a date like 2026-11-01, got `{value}`")]
    BadDate { param: &'static str, value: String },
    #[error("`from` ({from}) is after `to` ({to})")]
    FromAfterTo { from: NaiveDate, to: NaiveDate },
    #[error("the range covers {days} days; at most {max} are allowed")]
    RangeTooLong { days: i64, max: u32 },
    #[error("`granularity` must be hour, day or total, got `{0}`")]
    BadGranularity(String),
    #[error("unknown dimension `{value}` in {param} (known: country, device, genre, content_id)")]
    UnknownDimension { param: &'static str, value: String },
    #[error("unknown measure `{value}` in {param} (known: {known})")]
    UnknownMeasure {
        param: &'static str,
        value: String,
        known: String,
    },
    #[error("`{dim}` filter value `{value}` is not valid")]
    BadFilterValue { dim: Dim, value: String },
    #[error("`limit` must be a whole number from 1 to {max}, got `{value}`")]
    BadLimit { value: String, max: usize },
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),
    #[error("parameter `{0}` is given twice")]
    Repeated(String),
    #[error("no materialized cuboid keeps {0}; this deployment's cuboids are `{1}`")]
    NotMaterialized(String, String),
}

/// The ordering of result rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    pub measure: Measure,
    pub descending: bool,
}

/// A parsed, validated cube query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub group_by: Vec<Dim>,
    /// Per dimension, the accepted values (any of them).
    pub filters: BTreeMap<Dim, Vec<String>>,
    pub measures: Vec<Measure>,
    pub order: Option<Order>,
    pub limit: Option<usize>,
}

impl Query {
    /// Parses query-string parameters. Dimension names are filter parameters
    /// (`country=BR,PT`); `measures`, `group_by` take comma lists; `order_by` takes a measure
    /// with an optional `:asc` or `:desc` (default descending).
    pub fn from_params<'a, I, K, V>(params: I, limits: &QueryLimits) -> Result<Query, QueryError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str> + 'a,
        V: AsRef<str> + 'a,
    {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in params {
            let (k, v) = (k.as_ref().to_owned(), v.as_ref().to_owned());
            if seen.contains_key(&k) {
                return Err(QueryError::Repeated(k));
            }
            seen.insert(k, v);
        }
        let mut take = |k: &str| seen.remove(k);

        let date = |param: &'static str, v: Option<String>| -> Result<NaiveDate, QueryError> {
            let v = v.ok_or(QueryError::Missing(param))?;
            NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
                .map_err(|_| QueryError::BadDate { param, value: v })
        };
        let from = date("from", take("from"))?;
        let to = date("to", take("to"))?;
        if from > to {
            return Err(QueryError::FromAfterTo { from, to });
        }
        let days = (to - from).num_days() + 1;
        if days > i64::from(limits.max_days) {
            return Err(QueryError::RangeTooLong {
                days,
                max: limits.max_days,
            });
        }
        let granularity = match take("granularity").as_deref().map(str::trim) {
            None | Some("day") => Granularity::Day,
            Some("hour") => Granularity::Hour,
            Some("total") => Granularity::Total,
            Some(other) => return Err(QueryError::BadGranularity(other.to_owned())),
        };
        let mut group_by = Vec::new();
        for name in list(take("group_by")) {
            let d = Dim::from_name(&name).ok_or(QueryError::UnknownDimension {
                param: "group_by",
                value: name,
            })?;
            if !group_by.contains(&d) {
                group_by.push(d);
            }
        }
        let known = || {
            Measure::ALL
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let measures = match take("measures") {
            None => Measure::ALL.to_vec(),
            Some(v) => {
                let mut ms = Vec::new();
                for name in list(Some(v)) {
                    let m =
                        Measure::from_name(&name).ok_or_else(|| QueryError::UnknownMeasure {
                            param: "measures",
                            value: name,
                            known: known(),
                        })?;
                    if !ms.contains(&m) {
                        ms.push(m);
                    }
                }
                ms
            }
        };
        let order = match take("order_by") {
            None => None,
            Some(v) => {
                let (name, dir) = v.split_once(':').unwrap_or((&v, "desc"));
                let measure =
                    Measure::from_name(name.trim()).ok_or_else(|| QueryError::UnknownMeasure {
                        param: "order_by",
                        value: name.to_owned(),
                        known: known(),
                    })?;
                let descending = match dir.trim() {
                    "desc" => true,
                    "asc" => false,
                    _ => {
                        return Err(QueryError::UnknownMeasure {
                            param: "order_by",
                            value: v.clone(),
                            known: "<measure>, <measure>:asc, <measure>:desc".into(),
                        });
                    }
                };
                Some(Order {
                    measure,
                    descending,
                })
            }
        };
        let limit = match take("limit") {
            None => None,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=limits.max_rows).contains(&n) => Some(n),
                _ => {
                    return Err(QueryError::BadLimit {
                        value: v,
                        max: limits.max_rows,
                    });
                }
            },
        };
        let mut filters = BTreeMap::new();
        for d in Dim::ALL {
            if let Some(v) = take(d.name()) {
                let values = list(Some(v));
                for value in &values {
                    let ok = match d {
                        Dim::Country => Country::parse(value).is_ok(),
                        Dim::Device => value.parse::<Device>().is_ok(),
                        Dim::Genre | Dim::ContentId => true,
                    };
                    if !ok {
                        return Err(QueryError::BadFilterValue {
                            dim: d,
                            value: value.clone(),
                        });
                    }
                }
                filters.insert(d, values);
            }
        }
        if let Some(k) = seen.into_keys().next() {
            return Err(QueryError::UnknownParameter(k));
        }
        Ok(Query {
            from,
            to,
            granularity,
            group_by,
            filters,
            measures,
            order,
            limit,
        })
    }

    /// The days of the range, in order.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.from.iter_days().take_while(move |d| *d <= self.to)
    }

    /// The dimensions the query needs kept: grouped or filtered.
    pub fn needed_dims(&self) -> Vec<Dim> {
        let mut dims = self.group_by.clone();
        dims.extend(self.filters.keys().copied());
        dims.sort();
        dims.dedup();
        dims
    }

    /// The cuboid to read in a deployment with `set`.
    pub fn cuboid(&self, set: &CuboidSet) -> Result<Cuboid, QueryError> {
        let dims = self.needed_dims();
        set.best_for(&dims).ok_or_else(|| {
            let names: Vec<_> = dims.iter().map(|d| d.name()).collect();
            QueryError::NotMaterialized(names.join(" and "), set.spec())
        })
    }

    /// Whether a cell passes the filters.
    pub fn matches(&self, dims: &DimsRef<'_>) -> bool {
        self.filters.iter().all(|(d, values)| {
            dims.get(*d)
                .is_some_and(|v| values.iter().any(|want| want == v))
        })
    }
}

fn list(v: Option<String>) -> Vec<String> {
    v.map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// The time bucket of a stored cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// Hours since the Unix epoch.
    Hour(i64),
    Day(NaiveDate),
    Total,
}

impl Bucket {
    pub fn label(&self) -> Option<String> {
        match self {
            Bucket::Hour(h) => DateTime::from_timestamp(h * 3600, 0)
                .map(|t| t.format("%Y-%m-%dT%H:00:00Z").to_string()),
            Bucket::Day(d) => Some(d.format("%Y-%m-%d").to_string()),
            Bucket::Total => None,
        }
    }
}

/// The first hour (since the epoch) of a day.
pub fn first_hour(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp() / 3600)
}

/// The day an hour (since the epoch) belongs to.
pub fn day_of_hour(hour: i64) -> NaiveDate {
    try_day_of_hour(hour).unwrap_or(NaiveDate::MIN)
}

/// The day of an hour partition, `None` for an hour outside the calendar.
pub fn try_day_of_hour(hour: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp(hour.checked_mul(3600)?, 0).map(|t| t.date_naive())
}

/// Rolls cells up to a query's groups.
pub struct Aggregator<'q> {
    q: &'q Query,
    groups: FxHashMap<(Bucket, Vec<Option<String>>), Cell>,
}

impl<'q> Aggregator<'q> {
    pub fn new(q: &'q Query) -> Self {
        Aggregator {
            q,
            groups: FxHashMap::default(),
        }
    }

    /// Adds a cell of `bucket` (an hour for hourly queries, a day otherwise).
    pub fn add(&mut self, bucket: Bucket, dims: DimsRef<'_>, cell: &Cell) {
        if !self.q.matches(&dims) {
            return;
        }
        let bucket = match (self.q.granularity, bucket) {
            (Granularity::Total, _) => Bucket::Total,
            (Granularity::Day, Bucket::Hour(h)) => Bucket::Day(day_of_hour(h)),
            (_, b) => b,
        };
        let key: Vec<Option<String>> = self
            .q
            .group_by
            .iter()
            .map(|d| dims.get(*d).map(str::to_owned))
            .collect();
        self.groups.entry((bucket, key)).or_default().merge(cell);
    }

    /// The result: one row per group, ordered and cut as asked.
    pub fn finish(self) -> QueryResult {
        let q = self.q;
        let mut columns = Vec::new();
        match q.granularity {
            Granularity::Hour => columns.push("hour".to_owned()),
            Granularity::Day => columns.push("day".to_owned()),
            Granularity::Total => {}
        }
        columns.extend(q.group_by.iter().map(|d| d.name().to_owned()));
        columns.extend(q.measures.iter().map(|m| m.name().to_owned()));

        let mut groups: Vec<_> = self.groups.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(order) = q.order {
            groups.sort_by(|a, b| {
                let (x, y) = (
                    order.measure.value(&a.1).sort_key(),
                    order.measure.value(&b.1).sort_key(),
                );
                let o = x.total_cmp(&y);
                if order.descending { o.reverse() } else { o }
            });
        }
        if let Some(n) = q.limit {
            groups.truncate(n);
        }
        let rows = groups
            .into_iter()
            .map(|((bucket, key), cell)| {
                let mut row = Vec::with_capacity(columns.len());
                if let Some(label) = bucket.label() {
                    row.push(Value::Text(label));
                }
                row.extend(key.into_iter().map(|v| v.map_or(Value::Null, Value::Text)));
                row.extend(q.measures.iter().map(|m| m.value(&cell)));
                row
            })
            .collect();
        QueryResult { columns, rows }
    }
}

/// A table of results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl QueryResult {
    /// Rows as JSON objects keyed by column, serialized straight from the table (no
    /// intermediate JSON values: a large answer is written in one pass).
    pub fn json_rows(&self) -> JsonRows<'_> {
        JsonRows(self)
    }

    /// [`Self::json_rows`] as JSON values.
    pub fn to_json_rows(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        match serde_json::to_value(self.json_rows()) {
            Ok(serde_json::Value::Array(rows)) => rows
                .into_iter()
                .filter_map(|r| match r {
                    serde_json::Value::Object(m) => Some(m),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The table as CSV with a header line.
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        // Writing to a Vec cannot fail.
        let _ = w.write_record(&self.columns);
        for r in &self.rows {
            let _ = w.write_record(r.iter().map(ToString::to_string));
        }
        w.into_inner()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// The rows of a [`QueryResult`] as a JSON array of objects keyed by column.
pub struct JsonRows<'a>(&'a QueryResult);

impl Serialize for JsonRows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let columns = &self.0.columns;
        let mut seq = s.serialize_seq(Some(self.0.rows.len()))?;
        for row in &self.0.rows {
            seq.serialize_element(&JsonRow(columns, row))?;
        }
        seq.end()
    }
}

struct JsonRow<'a>(&'a [String], &'a [Value]);

impl Serialize for JsonRow<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (column, value) in self.0.iter().zip(self.1) {
            map.serialize_entry(column, &JsonValue(value))?;
        }
        map.end()
    }
}

/// A value as JSON: a string, a number, or null (also for a float that is not finite).
struct JsonValue<'a>(&'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Text(t) => s.serialize_str(t),
            Value::Int(i) => s.serialize_u64(*i),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(_) | Value::Null => s.serialize_unit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cube::{Cube, Fact};

    fn q(params: &[(&str, &str)]) -> Result<Query, QueryError> {
        Query::from_params(params.iter().copied(), &QueryLimits::default())
    }

    #[test]
    fn json_rows_are_objects_keyed_by_column() {
        let r = QueryResult {
            columns: vec!["day".into(), "genre".into(), "plays".into(), "rate".into()],
            rows: vec![
                vec![
                    Value::Text("2026-11-01".into()),
                    Value::Null,
                    Value::Int(3),
                    Value::Float(0.5),
                ],
                vec![
                    Value::Text("2026-11-02".into()),
                    Value::Text("drama \"x\"".into()),
                    Value::Int(0),
                    Value::Float(f64::NAN),
                ],
            ],
        };
        assert_eq!(
            serde_json::to_string(&r.json_rows()).expect("json"),
            r#"[{"day":"2026-11-01","genre":null,"plays":3,"rate":0.5},{"day":"2026-11-02","genre":"drama \"x\"","plays":0,"rate":null}]"#
        );
        assert_eq!(r.to_json_rows().len(), 2);
        assert_eq!(r.to_json_rows()[1]["rate"], serde_json::Value::Null);
    }

    #[test]
    fn errors_are_precise() {
        let base = [("from", "2026-11-01"), ("to", "2026-11-02")];
        let with = |extra: (&'static str, &'static str)| {
            let mut v = base.to_vec();
            v.push(extra);
            q(&v).expect_err("bad").to_string()
        };
        assert_eq!(
            q(&[("to", "2026-11-01")]).expect_err("x"),
            QueryError::Missing("from")
        );
        assert_eq!(
            q(&[("from", "2026-13-01"), ("to", "2026-11-01")])
                .expect_err("x")
                .to_string(),
            "`from` must be a date like 2026-11-01, got `2026-13-01`"
        );
        assert_eq!(
            q(&[("from", "2026-11-02"), ("to", "2026-11-01")])
                .expect_err("x")
                .to_string(),
            "`from` (2026-11-02) is after `to` (2026-11-01)"
        );
        assert_eq!(
            q(&[("from", "2020-01-01"), ("to", "2026-11-01")])
                .expect_err("x")
                .to_string(),
            "the range covers 2497 days; at most 366 are allowed"
        );
        assert_eq!(
            with(("granularity", "week")),
            "`granularity` must be hour, day or total, got `week`"
        );
        assert!(
            with(("measures", "plays,views")).starts_with("unknown measure `views` in measures")
        );
        assert_eq!(
            with(("country", "Brazil")),
            "`country` filter value `Brazil` is not valid"
        );
        assert_eq!(
            with(("limit", "0")),
            "`limit` must be a whole number from 1 to 10000, got `0`"
        );
        assert_eq!(with(("colour", "red")), "unknown parameter `colour`");
    }

    #[test]
    fn the_query_reads_the_smallest_covering_cuboid() {
        let set = CuboidSet::parse("country,device,genre;content_id,country").expect("spec");
        let query = q(&[
            ("from", "2026-11-01"),
            ("to", "2026-11-01"),
            ("group_by", "content_id"),
            ("country", "BR"),
        ])
        .expect("query");
        assert_eq!(
            query.cuboid(&set),
            Ok(Cuboid::of(&[Dim::ContentId, Dim::Country]))
        );
        let query = q(&[
            ("from", "2026-11-01"),
            ("to", "2026-11-01"),
            ("group_by", "content_id,device"),
        ])
        .expect("query");
        assert!(matches!(
            query.cuboid(&set),
            Err(QueryError::NotMaterialized(..))
        ));
    }

    #[test]
    fn top_n_by_a_measure_with_derived_values() {
        let set = CuboidSet::default();
        let mut cube = Cube::new(&set);
        let genre = cube.genre_id("drama");
        for (i, content) in ["a", "b", "b", "c", "c", "c"].iter().enumerate() {
            let f = Fact {
                country: Country::parse("BR").expect("BR"),
                device: Device::Tv,
                genre,
                content: cube.content_id(content),
                viewer: i as u64,
                watch_seconds: 100,
                bitrate_kbps: 0,
                buffering_ms: 0,
                completed: i % 2 == 0,
            };
            cube.add(&f);
        }
        let query = q(&[
            ("from", "2026-11-01"),
            ("to", "2026-11-01"),
            ("granularity", "total"),
            ("group_by", "content_id"),
            ("measures", "plays,completion_rate,avg_bitrate_kbps"),
            ("order_by", "plays"),
            ("limit", "2"),
        ])
        .expect("query");
        let cuboid = query.cuboid(&set).expect("cuboid");
        let mut agg = Aggregator::new(&query);
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).expect("day");
        for (dims, cell) in cube.cells().filter(|(d, _)| d.cuboid() == cuboid) {
            agg.add(Bucket::Day(day), dims, cell);
        }
        let result = agg.finish();
        assert_eq!(
            result.columns,
            ["content_id", "plays", "completion_rate", "avg_bitrate_kbps"]
        );
        assert_eq!(
            result.rows,
            vec![
                vec![
                    Value::Text("c".into()),
                    Value::Int(3),
                    Value::Float(1.0 / 3.0),
                    Value::Null
                ],
                vec![
                    Value::Text("b".into()),
                    Value::Int(2),
                    Value::Float(0.5),
                    Value::Null
                ],
            ]
        );
        assert_eq!(
            result.to_csv(),
            "content_id,plays,completion_rate,avg_bitrate_kbps\nc,3,0.3333,\nb,2,0.5,\n"
        );
    }
}
