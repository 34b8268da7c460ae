//! The playback event contract and its validation.
//!
//! Input arrives as text (CSV cells) or typed JSON values. [`RawFields`] holds the ten contract
//! fields as they arrived, borrowed from the reader's buffer; [`Validator::validate`] turns them
//! into a [`ValidEvent`] or into the complete list of what is wrong, one machine-readable
//! [`Reason`] per failed field. Nothing here allocates for a valid row except what the caller keeps.
//! [`Validator::validate_plain`] is the quick way for the common CSV row: one pass over its text
//! for the plain form of every field, the general validation for anything else.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::DateTime;
use serde::{Deserialize, Serialize};

/// The contract's fields, in bronze CSV column order, plus [`Field::Row`] for what concerns the
/// row as a whole (its encoding, its shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    EventId,
    OccurredAt,
    ViewerId,
    ContentId,
    Device,
    Country,
    WatchSeconds,
    BitrateKbps,
    BufferingMs,
    Completed,
    Row,
}

impl Field {
    /// The ten contract fields in bronze CSV column order.
    pub const CONTRACT: [Field; 10] = [
        Field::EventId,
        Field::OccurredAt,
        Field::ViewerId,
        Field::ContentId,
        Field::Device,
        Field::Country,
        Field::WatchSeconds,
        Field::BitrateKbps,
        Field::BufferingMs,
        Field::Completed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Field::EventId => "event_id",
            Field::OccurredAt => "occurred_at",
            Field::ViewerId => "viewer_id",
            Field::ContentId => "content_id",
            Field::Device => "device",
            Field::Country => "country",
            Field::WatchSeconds => "watch_seconds",
            Field::BitrateKbps => "bitrate_kbps",
            Field::BufferingMs => "buffering_ms",
            Field::Completed => "completed",
            Field::Row => "row",
        }
    }

    /// The contract field with this column name.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::CONTRACT.into_iter().find(|f| f.name() == name)
    }

    const fn is_optional(self) -> bool {
        matches!(self, Field::BitrateKbps | Field::BufferingMs)
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a field (or a row) was rejected. The serialized names are the stable, machine-readable form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A required field is absent.
    Missing,
    /// A required field is present but empty.
    Empty,
    TooLong,
    InvalidCharacters,
    InvalidTimestamp,
    InFuture,
    NotAnInteger,
    OutOfRange,
    UnknownDevice,
    UnknownCountry,
    NotUpperCase,
    NotABoolean,
    /// A JSON value of the wrong type (an object where a string was expected, say).
    WrongType,
    /// Row level: bytes that are not UTF-8.
    InvalidUtf8,
    /// Row level: a CSV row with more or fewer fields than the header.
    FieldCount,
    /// Row level: a JSON line that does not parse, or is not an object.
    MalformedJson,
    /// Row level: a row larger than the reader accepts.
    RowTooLong,
    /// Row level: the file's CSV header lacks a required column or repeats one.
    BadHeader,
    /// Row level: the event's country is valid but not served by this deployment (residency).
    CountryNotServed,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Empty => "empty",
            Reason::TooLong => "too_long",
            Reason::InvalidCharacters => "invalid_characters",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::InFuture => "in_future",
            Reason::NotAnInteger => "not_an_integer",
            Reason::OutOfRange => "out_of_range",
            Reason::UnknownDevice => "unknown_device",
            Reason::UnknownCountry => "unknown_country",
            Reason::NotUpperCase => "not_upper_case",
            Reason::NotABoolean => "not_a_boolean",
            Reason::WrongType => "wrong_type",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::FieldCount => "field_count",
            Reason::MalformedJson => "malformed_json",
            Reason::RowTooLong => "row_too_long",
            Reason::BadHeader => "bad_header",
            Reason::CountryNotServed => "country_not_served",
        }
    }
}

/// One thing wrong with an input row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldError {
    pub field: Field,
    pub reason: Reason,
}

impl FieldError {
    pub const fn new(field: Field, reason: Reason) -> Self {
        FieldError { field, reason }
    }

    /// The key under which reports count this error, e.g. `country:unknown_country`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.field.name(), self.reason.name())
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field.name(), self.reason.name())
    }
}

/// Playback device, one of the five of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Tv,
    Mobile,
    Web,
    Tablet,
    Console,
}

impl Device {
    pub const ALL: [Device; 5] = [
        Device::Tv,
        Device::Mobile,
        Device::Web,
        Device::Tablet,
        Device::Console,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Device::Tv => "tv",
            Device::Mobile => "mobile",
            Device::Web => "web",
            Device::Tablet => "tablet",
            Device::Console => "console",
        }
    }

    /// A small dense code, 0..5.
    pub const fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Device> {
        Device::ALL.get(usize::from(code)).copied()
    }
}

impl FromStr for Device {
    type Err = Reason;
    fn from_str(s: &str) -> Result<Self, Reason> {
        Device::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or(Reason::UnknownDevice)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An assigned ISO 3166-1 alpha-2 country code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

/// Assigned alpha-2 codes, as a 26x26 bitmap built once from the `celes` table.
static ASSIGNED: LazyLock<[bool; 676]> = LazyLock::new(|| {
    let mut table = [false; 676];
    for c in celes::Country::get_countries() {
        let b = c.alpha2.as_bytes();
        // `XK` (Kosovo) is a user-assigned code, not an assigned one.
        if b.len() == 2 && b.iter().all(u8::is_ascii_uppercase) && c.alpha2 != "XK" {
            table[usize::from(b[0] - b'A') * 26 + usize::from(b[1] - b'A')] = true;
        }
    }
    table
});

impl Country {
    /// Parses an upper-case assigned code.
    pub fn parse(s: &str) -> Result<Country, Reason> {
        let b = s.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_alphabetic) {
            return Err(Reason::UnknownCountry);
        }
        let upper = [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()];
        let assigned = ASSIGNED[usize::from(upper[0] - b'A') * 26 + usize::from(upper[1] - b'A')];
        match (assigned, upper == [b[0], b[1]]) {
            (false, _) => Err(Reason::UnknownCountry),
            (true, false) => Err(Reason::NotUpperCase),
            (true, true) => Ok(Country(upper)),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The two letters.
    pub const fn bytes(self) -> [u8; 2] {
        self.0
    }

    /// A dense code in 0..676.
    pub const fn code(self) -> u16 {
        (self.0[0] - b'A') as u16 * 26 + (self.0[1] - b'A') as u16
    }

    pub fn from_code(code: u16) -> Option<Country> {
        let c = usize::from(code);
        if c >= 676 || !ASSIGNED[c] {
            return None;
        }
        // c < 676, so both quotients fit in a u8.
        Some(Country([b'A' + (c / 26) as u8, b'A' + (c % 26) as u8]))
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Country {
    type Err = Reason;
    fn from_str(s: &str) -> Result<Self, Reason> {
        Country::parse(s)
    }
}

impl Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Country::parse(&s).map_err(|r| serde::de::Error::custom(r.name()))
    }
}

/// A field's value as it arrived: untyped text from CSV, or a typed JSON value.
#[derive(Clone, Copy, Debug, Default)]
pub enum FieldValue<'a> {
    /// The field is not there at all (a JSON key that is absent).
    #[default]
    Absent,
    /// JSON `null`.
    Null,
    /// A CSV cell: text whose type the contract decides.
    Text(&'a str),
    /// A JSON string.
    Str(&'a str),
    /// A JSON number.
    Number(&'a serde_json::Number),
    /// A JSON boolean.
    Bool(bool),
    /// A JSON array or object.
    Composite,
}

impl<'a> FieldValue<'a> {
    /// Maps a JSON value to the field value it stands for.
    pub fn from_json(v: &'a serde_json::Value) -> FieldValue<'a> {
        use serde_json::Value;
        match v {
            Value::Null => FieldValue::Null,
            Value::Bool(b) => FieldValue::Bool(*b),
            Value::Number(n) => FieldValue::Number(n),
            Value::String(s) => FieldValue::Str(s),
            Value::Array(_) | Value::Object(_) => FieldValue::Composite,
        }
    }

    /// Absent, null and empty text all mean "no value" for an optional field.
    fn is_blank(&self) -> bool {
        match self {
            FieldValue::Absent | FieldValue::Null => true,
            FieldValue::Text(s) | FieldValue::Str(s) => s.is_empty(),
            _ => false,
        }
    }
}

/// The ten contract fields of one input row, borrowed from the reader.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawFields<'a> {
    values: [FieldValue<'a>; 10],
}

impl<'a> RawFields<'a> {
    pub fn set(&mut self, field: Field, value: FieldValue<'a>) {
        if let Some(slot) = self.values.get_mut(field.index()) {
            *slot = value;
        }
    }

    pub fn get(&self, field: Field) -> FieldValue<'a> {
        self.values
            .get(field.index())
            .copied()
            .unwrap_or(FieldValue::Absent)
    }

    /// Fields from one JSON object; keys outside the contract are ignored.
    pub fn from_json_object(obj: &'a serde_json::Map<String, serde_json::Value>) -> Self {
        let mut raw = RawFields::default();
        for (k, v) in obj {
            if let Some(f) = Field::from_name(k) {
                raw.set(f, FieldValue::from_json(v));
            }
        }
        raw
    }

    /// The event id as given, if it is a string, for echoing back in rejections.
    pub fn event_id_hint(&self) -> Option<&'a str> {
        match self.get(Field::EventId) {
            FieldValue::Text(s) | FieldValue::Str(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }
}

/// A validated event. Text fields borrow from the input; the raw viewer id is still here and must
/// be pseudonymized before the event leaves the edge (see [`crate::pseudonym`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidEvent<'a> {
    pub event_id: &'a str,
    /// Milliseconds since the Unix epoch, UTC.
    pub occurred_at_ms: i64,
    pub viewer_id: &'a str,
    pub content_id: &'a str,
    pub device: Device,
    pub country: Country,
    pub watch_seconds: u32,
    pub bitrate_kbps: Option<u32>,
    pub buffering_ms: Option<u32>,
    pub completed: bool,
}

pub const MAX_EVENT_ID_LEN: usize = 128;

/// Whether every byte of `id` may be in an event id: ASCII letters and digits, `.`, `_`, `:`
/// and `-`. A fold without an early exit, which the compiler turns into vector compares: every
/// accepted row checks each byte of its id (a byte table looked up one byte at a time was 3% of
/// the batch cube's CPU time).
fn event_id_bytes(id: &[u8]) -> bool {
    id.iter().fold(true, |ok, &b| {
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        // '-', '.', the digits and ':' are 0x2D..=0x3A, but for '/'.
        let digit_or_sign = b.wrapping_sub(b'-') <= b':' - b'-' && b != b'/';
        ok & (letter | digit_or_sign | (b == b'_'))
    })
}

pub const MAX_TEXT_LEN: usize = 256;
pub const MAX_WATCH_SECONDS: u64 = 86_400;
pub const MAX_BITRATE_KBPS: u64 = 200_000;
pub const MAX_BUFFERING_MS: u64 = 86_400_000;
/// How far in the future an event may claim to be, for clock skew.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

/// Validates raw fields against the contract, judging "the future" against a fixed `now`.
#[derive(Clone, Copy, Debug)]
pub struct Validator {
    now_ms: i64,
}

impl Validator {
    /// A validator whose "now" is the wall clock at construction.
    pub fn now() -> Self {
        Validator {
            now_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// A validator with a fixed "now" (milliseconds since the epoch), for replays and tests.
    pub const fn at(now_ms: i64) -> Self {
        Validator { now_ms }
    }

    /// Every failed field of the row, or the valid event.
    pub fn validate<'a>(&self, raw: &RawFields<'a>) -> Result<ValidEvent<'a>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut check = |field: Field, r: Result<(), Reason>| {
            if let Err(reason) = r {
                errors.push(FieldError::new(field, reason));
            }
        };

        let event_id = text(raw.get(Field::EventId), MAX_EVENT_ID_LEN).and_then(|s| {
            if event_id_bytes(s.as_bytes()) {
                Ok(s)
            } else {
                Err(Reason::InvalidCharacters)
            }
        });
        let occurred_at = text(raw.get(Field::OccurredAt), 64).and_then(|s| {
            let ms = DateTime::parse_from_rfc3339(s)
                .map_err(|_| Reason::InvalidTimestamp)?
                .timestamp_millis();
            if ms > self.now_ms.saturating_add(MAX_FUTURE_MS) {
                Err(Reason::InFuture)
            } else {
                Ok(ms)
            }
        });
        let viewer_id = text(raw.get(Field::ViewerId), MAX_TEXT_LEN);
        let content_id = text(raw.get(Field::ContentId), MAX_TEXT_LEN);
        let device = text(raw.get(Field::Device), 16).and_then(str::parse::<Device>);
        let country = text(raw.get(Field::Country), 16).and_then(Country::parse);
        let watch = integer(raw.get(Field::WatchSeconds), MAX_WATCH_SECONDS, 0);
        let bitrate = optional(raw.get(Field::BitrateKbps), |v| {
            integer(v, MAX_BITRATE_KBPS, 1)
        });
        let buffering = optional(raw.get(Field::BufferingMs), |v| {
            integer(v, MAX_BUFFERING_MS, 0)
        });
        let completed = boolean(raw.get(Field::Completed));

        check(Field::EventId, event_id.map(drop));
        check(Field::OccurredAt, occurred_at.map(drop));
        check(Field::ViewerId, viewer_id.map(drop));
        check(Field::ContentId, content_id.map(drop));
        check(Field::Device, device.map(drop));
        check(Field::Country, country.map(drop));
        check(Field::WatchSeconds, watch.map(drop));
        check(Field::BitrateKbps, bitrate.map(drop));
        check(Field::BufferingMs, buffering.map(drop));
        check(Field::Completed, completed.map(drop));

        match (
            event_id,
            occurred_at,
            viewer_id,
            content_id,
            device,
            country,
            watch,
            bitrate,
            buffering,
            completed,
        ) {
            (
                Ok(event_id),
                Ok(occurred_at_ms),
                Ok(viewer_id),
                Ok(content_id),
                Ok(device),
                Ok(country),
                Ok(watch_seconds),
                Ok(bitrate_kbps),
                Ok(buffering_ms),
                Ok(completed),
            ) if errors.is_empty() => Ok(ValidEvent {
                event_id,
                occurred_at_ms,
                viewer_id,
                content_id,
                device,
                country,
                watch_seconds,
                bitrate_kbps,
                buffering_ms,
                completed,
            }),
            _ => Err(errors),
        }
    }

    /// The event of a CSV record whose fields are the text between its commas (no quoting),
    /// when every field has its plain form, as nearly every row of a well-formed file has:
    /// checked in one pass, without building [`RawFields`] first. `None` leaves the row to
    /// [`Self::validate`], which accepts every event this accepts, with the same values, and
    /// names what is wrong with the others. `columns` maps the record's fields to the contract.
    pub fn validate_plain<'a>(
        &self,
        record: &'a str,
        columns: &[Option<Field>],
    ) -> Option<ValidEvent<'a>> {
        let mut texts = [None; 10];
        let (ends, fields) = field_ends(record.as_bytes())?;
        if fields != columns.len() {
            return None;
        }
        let mut start = 0;
        for (column, &end) in columns.iter().zip(&ends) {
            let end = end as usize;
            if let Some(f) = column {
                *texts.get_mut(f.index())? = Some(record.get(start..end)?);
            }
            start = end + 1;
        }
        let [
            Some(event_id),
            Some(occurred_at),
            Some(viewer_id),
            Some(content_id),
            Some(device),
            Some(country),
            Some(watch),
            bitrate,
            buffering,
            Some(completed),
        ] = texts
        else {
            return None;
        };
        let sized = |s: &'a str, max| (!s.is_empty() && s.len() <= max).then_some(s);
        let event_id = sized(event_id, MAX_EVENT_ID_LEN)?;
        if !event_id_bytes(event_id.as_bytes()) {
            return None;
        }
        let occurred_at_ms = plain_timestamp_ms(occurred_at.as_bytes())?;
        if occurred_at_ms > self.now_ms.saturating_add(MAX_FUTURE_MS) {
            return None;
        }
        let optional = |v: Option<&str>, max, min| match v {
            None | Some("") => Some(None),
            Some(s) => plain_integer(s, max, min).map(Some),
        };
        Some(ValidEvent {
            event_id,
            occurred_at_ms,
            viewer_id: sized(viewer_id, MAX_TEXT_LEN)?,
            content_id: sized(content_id, MAX_TEXT_LEN)?,
            device: device.parse().ok()?,
            country: Country::parse(country).ok()?,
            watch_seconds: plain_integer(watch, MAX_WATCH_SECONDS, 0)?,
            bitrate_kbps: optional(bitrate, MAX_BITRATE_KBPS, 1)?,
            buffering_ms: optional(buffering, MAX_BUFFERING_MS, 0)?,
            completed: match completed {
                "true" => true,
                "false" => false,
                _ => return None,
            },
        })
    }
}

/// The end of each comma-separated field of `record` and how many there are, if at most
/// [`PLAIN_FIELDS`]. The commas are found eight bytes at a time: a byte-at-a-time loop or a
/// `memchr` call per field costs a branch miss per field, and fields here are a few bytes long.
fn field_ends(record: &[u8]) -> Option<([u32; PLAIN_FIELDS], usize)> {
    const COMMAS: u64 = u64::from_le_bytes([b','; 8]);
    const LOW7: u64 = u64::from_le_bytes([0x7f; 8]);
    let mut ends = [0; PLAIN_FIELDS];
    let mut n = 0;
    let mut push = |end: usize| -> Option<()> {
        *ends.get_mut(n)? = u32::try_from(end).ok()?;
        n += 1;
        Some(())
    };
    let mut words = record.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let t = u64::from_le_bytes(word.try_into().ok()?) ^ COMMAS;
        // 0x80 in each byte of `t` that is zero (a comma), 0 elsewhere: exact, no carries.
        let mut commas = !(((t & LOW7) + LOW7) | t | LOW7);
        while commas != 0 {
            push(base + commas.trailing_zeros() as usize / 8)?;
            commas &= commas - 1;
        }
        base += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b',' {
            push(base + i)?;
        }
    }
    push(record.len())?;
    Some((ends, n))
}

/// The most fields a record may have for [`Validator::validate_plain`]; wider ones go the
/// general way.
const PLAIN_FIELDS: usize = 16;

/// Up to ten decimal digits, no sign, in `min..=max`.
fn plain_integer(s: &str, max: u64, min: u64) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    if n < min || n > max {
        return None;
    }
    u32::try_from(n).ok()
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.F{1,9}](Z|±HH:MM)`, the form nearly
/// every producer writes; `None` for anything else (other RFC 3339 spellings, a leap second),
/// which chrono then parses.
fn plain_timestamp_ms(s: &[u8]) -> Option<i64> {
    // Two decimal digits, without iterators: this runs for every row.
    fn d2(a: u8, b: u8) -> Option<i64> {
        let (a, b) = (a.wrapping_sub(b'0'), b.wrapping_sub(b'0'));
        (a <= 9 && b <= 9).then(|| i64::from(a * 10 + b))
    }
    let (date_time, rest) = s.split_at_checked(19)?;
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        i0,
        i1,
        b':',
        s0,
        s1,
    ] = *date_time
    else {
        return None;
    };
    let year = d2(y0, y1)? * 100 + d2(y2, y3)?;
    let (month, day) = (d2(m0, m1)?, d2(d0, d1)?);
    let (hour, minute, second) = (d2(h0, h1)?, d2(i0, i1)?, d2(s0, s1)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let (mut millis, mut zone) = (0, rest);
    if let [b'.', tail @ ..] = rest {
        // One to nine digits, of which the first three are milliseconds.
        let mut n = 0;
        while let Some(&b) = tail.get(n)
            && b.is_ascii_digit()
        {
            if n < 3 {
                millis = millis * 10 + i64::from(b - b'0');
            }
            n += 1;
        }
        if !(1..=9).contains(&n) {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
        zone = tail.get(n..)?;
    }
    let offset_minutes = match *zone {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h0, h1, b':', m0, m1] => {
            let (h, m) = (d2(h0, h1)?, d2(m0, m1)?);
            if h > 23 || m > 59 {
                return None;
            }
            if sign == b'-' {
                -(h * 60 + m)
            } else {
                h * 60 + m
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm), proleptic Gregorian.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// A required text field: present, a string, non-empty, at most `max` bytes.
fn text(v: FieldValue<'_>, max: usize) -> Result<&str, Reason> {
    match v {
        FieldValue::Absent | FieldValue::Null => Err(Reason::Missing),
        FieldValue::Text(s) | FieldValue::Str(s) => {
            if s.is_empty() {
                Err(Reason::Empty)
            } else if s.len() > max {
                Err(Reason::TooLong)
            } else {
                Ok(s)
            }
        }
        FieldValue::Number(_) | FieldValue::Bool(_) | FieldValue::Composite => {
            Err(Reason::WrongType)
        }
    }
}

/// A required integer in `min..=max`: CSV text of digits, or a JSON integer.
fn integer(v: FieldValue<'_>, max: u64, min: u64) -> Result<u32, Reason> {
    let n: i128 = match v {
        FieldValue::Absent | FieldValue::Null => return Err(Reason::Missing),
        FieldValue::Text(s) => {
            if s.is_empty() {
                return Err(Reason::Empty);
            }
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(Reason::NotAnInteger);
            }
            s.parse::<i128>().map_err(|_| Reason::NotAnInteger)?
        }
        FieldValue::Number(n) => {
            if let Some(u) = n.as_u64() {
                i128::from(u)
            } else if let Some(i) = n.as_i64() {
                i128::from(i)
            } else {
                return Err(Reason::NotAnInteger);
            }
        }
        FieldValue::Str(_) | FieldValue::Bool(_) | FieldValue::Composite => {
            return Err(Reason::WrongType);
        }
    };
    if n < i128::from(min) || n > i128::from(max) {
        return Err(Reason::OutOfRange);
    }
    u32::try_from(n).map_err(|_| Reason::OutOfRange)
}

fn optional<T>(
    v: FieldValue<'_>,
    parse: impl FnOnce(FieldValue<'_>) -> Result<T, Reason>,
) -> Result<Option<T>, Reason> {
    if v.is_blank() {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

fn boolean(v: FieldValue<'_>) -> Result<bool, Reason> {
    match v {
        FieldValue::Absent | FieldValue::Null => Err(Reason::Missing),
        FieldValue::Bool(b) => Ok(b),
        FieldValue::Text("true") => Ok(true),
        FieldValue::Text("false") => Ok(false),
        FieldValue::Text("") => Err(Reason::Empty),
        FieldValue::Text(_) => Err(Reason::NotABoolean),
        FieldValue::Str(_) | FieldValue::Number(_) | FieldValue::Composite => {
            Err(Reason::WrongType)
        }
    }
}

/// Whether a missing optional field is fine; used by readers to decide on absent CSV columns.
pub fn is_optional(field: Field) -> bool {
    field.is_optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000; // 2026-11-18

    fn csv_row<'a>(cells: [&'a str; 10]) -> RawFields<'a> {
        let mut raw = RawFields::default();
        for (f, c) in Field::CONTRACT.into_iter().zip(cells) {
            raw.set(f, FieldValue::Text(c));
        }
        raw
    }

    fn good() -> [&'static str; 10] {
        [
            "e-1",
            "2026-11-17T10:00:00+02:00",
            "viewer-9",
            "c-1",
            "tv",
            "BR",
            "120",
            "4500",
            "",
            "true",
        ]
    }

    fn reasons(cells: [&str; 10]) -> Vec<(Field, Reason)> {
        match Validator::at(NOW).validate(&csv_row(cells)) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| (e.field, e.reason)).collect(),
        }
    }

    #[test]
    fn a_good_row_validates_and_normalizes_to_utc() {
        let ev = Validator::at(NOW)
            .validate(&csv_row(good()))
            .expect("valid");
        let utc = DateTime::parse_from_rfc3339("2026-11-17T08:00:00Z").expect("ts");
        assert_eq!(ev.occurred_at_ms, utc.timestamp_millis());
        assert_eq!(ev.device, Device::Tv);
        assert_eq!(ev.country.as_str(), "BR");
        assert_eq!(ev.bitrate_kbps, Some(4500));
        assert_eq!(ev.buffering_ms, None);
        assert!(ev.completed);
    }

    #[test]
    fn every_failed_field_is_reported() {
        let got = reasons([
            "bad id!",
            "yesterday",
            "",
            "c",
            "fridge",
            "br",
            "-5",
            "0",
            "x",
            "yes",
        ]);
        assert_eq!(
            got,
            vec![
                (Field::EventId, Reason::InvalidCharacters),
                (Field::OccurredAt, Reason::InvalidTimestamp),
                (Field::ViewerId, Reason::Empty),
                (Field::Device, Reason::UnknownDevice),
                (Field::Country, Reason::NotUpperCase),
                (Field::WatchSeconds, Reason::OutOfRange),
                (Field::BitrateKbps, Reason::OutOfRange),
                (Field::BufferingMs, Reason::NotAnInteger),
                (Field::Completed, Reason::NotABoolean),
            ]
        );
    }

    #[test]
    fn ranges_are_inclusive() {
        let mut c = good();
        c[6] = "86400";
        c[7] = "200000";
        c[8] = "86400000";
        assert!(reasons(c).is_empty());
        c[6] = "86401";
        c[7] = "200001";
        c[8] = "86400001";
        assert_eq!(reasons(c).len(), 3);
        c = good();
        c[6] = "99999999999999999999999";
        assert_eq!(
            reasons(c),
            vec![(Field::WatchSeconds, Reason::NotAnInteger)]
        );
    }

    #[test]
    fn countries_must_be_assigned_and_upper_case() {
        assert_eq!(Country::parse("XX"), Err(Reason::UnknownCountry));
        assert_eq!(Country::parse("XK"), Err(Reason::UnknownCountry));
        assert_eq!(Country::parse("us"), Err(Reason::NotUpperCase));
        assert_eq!(Country::parse("BRA"), Err(Reason::UnknownCountry));
        assert_eq!(Country::parse("É"), Err(Reason::UnknownCountry));
        let pt = Country::parse("PT").expect("assigned");
        assert_eq!(Country::from_code(pt.code()), Some(pt));
    }

    #[test]
    fn the_future_is_five_minutes_away() {
        let v = Validator::at(0);
        let mut c = good();
        c[1] = "1970-01-01T00:05:00Z";
        assert!(v.validate(&csv_row(c)).is_ok());
        c[1] = "1970-01-01T00:05:00.001Z";
        let err = v.validate(&csv_row(c)).expect_err("future");
        assert_eq!(
            err,
            vec![FieldError::new(Field::OccurredAt, Reason::InFuture)]
        );
    }

    proptest::proptest! {
        /// The fields' ends are where the commas are, whatever bytes surround them.
        #[test]
        fn field_ends_are_the_commas(
            record in proptest::collection::vec(
                proptest::sample::select(vec![b',', b'-', b'+', b'a', 0, 0x2c ^ 0x80, 0xff, 0x01]),
                0..40,
            ),
        ) {
            let want: Vec<u32> = record
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b',')
                .map(|(i, _)| i as u32)
                .chain([record.len() as u32])
                .collect();
            match field_ends(&record) {
                Some((ends, n)) => proptest::prop_assert_eq!(&ends[..n], &want[..]),
                None => proptest::prop_assert!(want.len() > PLAIN_FIELDS),
            }
        }
    }

    #[test]
    fn event_id_bytes_are_letters_digits_and_four_signs() {
        for b in 0..=u8::MAX {
            let allowed = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
            assert_eq!(event_id_bytes(&[b]), allowed, "byte {b:#04x}");
            assert_eq!(event_id_bytes(&[b'a', b, b'9']), allowed, "byte {b:#04x}");
        }
        assert!(event_id_bytes(b""));
    }

    #[test]
    fn json_values_are_typed() {
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"event_id":"e","occurred_at":"2026-01-01T00:00:00Z","viewer_id":"v",
                "content_id":"c","device":"web","country":"PT","watch_seconds":"10",
                "bitrate_kbps":null,"completed":false,"extra":1}"#,
        )
        .expect("json");
        let err = Validator::at(NOW)
            .validate(&RawFields::from_json_object(&obj))
            .expect_err("string for an integer");
        assert_eq!(
            err,
            vec![FieldError::new(Field::WatchSeconds, Reason::WrongType)]
        );
    }

    /// Cell texts per contract field: the first `PLAIN[i]` in the form the quick check takes,
    /// the rest valid in other forms, or invalid.
    fn cells() -> [Vec<String>; 10] {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let long = |n| "x".repeat(n);
        [
            [
                own(&["e-1", "a.b_c:D-9"]),
                vec![long(128)],
                own(&["", "e 1", "é", "a/b"]),
                vec![long(129)],
            ]
            .concat(),
            own(&[
                "2026-11-17T10:00:00Z",
                "2026-11-17T10:00:00+02:00",
                "2024-02-29T23:59:59.999999999-11:30",
                "1969-12-31T23:59:59.5Z",
                "2026-11-18T11:11:40Z",
                "2026-11-17t10:00:00z",
                "2026-11-17 10:00:00Z",
                "2023-02-29T00:00:00Z",
                "2016-12-31T23:59:60Z",
                "2026-11-17T10:00:00.Z",
                "2026-11-17T10:00:00.1234567891Z",
                "2026-11-17T10:00:00",
                "2026-11-18T11:11:40.001Z",
                "2026-11-17T24:00:00Z",
                "",
            ]),
            [
                own(&["v1", "vé"]),
                vec![long(256)],
                own(&[""]),
                vec![long(257)],
            ]
            .concat(),
            [
                own(&["c-1", "c é"]),
                vec![long(256)],
                own(&[""]),
                vec![long(257)],
            ]
            .concat(),
            own(&["tv", "mobile", "web", "TV", "phone", ""]),
            own(&["BR", "PT", "br", "XX", "B", "BRA", ""]),
            own(&[
                "0",
                "86400",
                "120",
                "0060",
                "-0",
                "86401",
                "1.5",
                "",
                "+1",
                "00000000000060",
            ]),
            own(&["", "1", "200000", "0", "200001", "-1", "x"]),
            own(&["", "0", "86400000", "86400001", "-0"]),
            own(&["true", "false", "True", "1", ""]),
        ]
    }
    const PLAIN: [usize; 10] = [3, 5, 3, 3, 3, 2, 4, 3, 3, 2];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// What the quick check accepts, the general validator accepts with the same values,
        /// whatever the column order, extra columns or missing optional ones; and it accepts
        /// every row whose cells all have the plain form.
        #[test]
        fn the_plain_check_agrees_with_validation(
            picks in proptest::collection::vec((proptest::bool::weighted(0.8), 0usize..16), 10),
            order in proptest::strategy::Strategy::prop_shuffle(proptest::strategy::Just((0..10).collect::<Vec<usize>>())),
            extra in proptest::option::of(0usize..11),
            drop_optional in proptest::bool::ANY,
        ) {
            use proptest::prelude::*;
            let cells = cells();
            let v = Validator::at(NOW);
            // Mostly plain cells, so that most rows are one cell away from plain.
            let picked: Vec<usize> = (0..10)
                .map(|i| {
                    let (plain, p) = picks[i];
                    p % if plain { PLAIN[i] } else { cells[i].len() }
                })
                .collect();
            let mut columns = Vec::new();
            let mut texts = Vec::new();
            let mut raw = RawFields::default();
            for &i in &order {
                let f = Field::CONTRACT[i];
                if drop_optional && f.is_optional() {
                    continue;
                }
                columns.push(Some(f));
                texts.push(cells[i][picked[i]].as_str());
                raw.set(f, FieldValue::Text(cells[i][picked[i]].as_str()));
            }
            if let Some(at) = extra {
                let at = at.min(columns.len());
                columns.insert(at, None);
                texts.insert(at, "ignored");
            }
            let record = texts.join(",");
            let quick = v.validate_plain(&record, &columns);
            if let Some(ev) = quick {
                prop_assert_eq!(Ok(ev), v.validate(&raw));
            }
            let plain = (0..10).all(|i| {
                picked[i] < PLAIN[i] || (drop_optional && Field::CONTRACT[i].is_optional())
            });
            prop_assert_eq!(quick.is_some(), plain && !texts.iter().any(|t| t.contains(',')));
        }

        /// The quick timestamp reading equals chrono's on its form and takes nothing chrono
        /// refuses; a leap second and other forms are left to chrono.
        #[test]
        fn plain_timestamps_read_as_chrono_reads_them(
            date in (0i64..10_000, 0i64..14, 0i64..33),
            time in (0i64..25, 0i64..61, 0i64..61),
            fraction in (0usize..11, 0u64..10_000_000_000),
            zone in (0usize..4, 0i64..25, 0i64..61),
        ) {
            let (y, mo, d) = date;
            let (h, mi, sec) = time;
            let mut s = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}");
            if fraction.0 > 0 {
                let digits = format!("{:010}", fraction.1);
                s.push('.');
                s.push_str(&digits[..fraction.0]);
            }
            match zone.0 {
                0 => s.push('Z'),
                1 => s.push_str(&format!("+{:02}:{:02}", zone.1, zone.2)),
                2 => s.push_str(&format!("-{:02}:{:02}", zone.1, zone.2)),
                _ => s.push_str(&format!("+{:02}{:02}", zone.1, zone.2)),
            }
            let quick = plain_timestamp_ms(s.as_bytes());
            let chrono = DateTime::parse_from_rfc3339(&s).ok().map(|t| t.timestamp_millis());
            if quick.is_some() {
                proptest::prop_assert_eq!(quick, chrono, "{}", s);
            }
            let in_form = fraction.0 <= 9 && sec < 60 && zone.0 < 3 && zone.1 < 24 && zone.2 < 60;
            if in_form {
                proptest::prop_assert_eq!(quick, chrono, "{}", s);
            }
        }
    }
}

/// An event as silver stores it: validated, with the viewer pseudonymized. `origin` names the
/// input row that first wrote it (`<object>#<version>:<line>`, or empty for API and stream
/// ingestion), so a retried file recognises its own earlier writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilverEvent {
    pub event_id: String,
    pub occurred_at_ms: i64,
    pub viewer: crate::pseudonym::Pseudonym,
    pub content_id: String,
    pub device: Device,
    pub country: Country,
    pub watch_seconds: u32,
    pub bitrate_kbps: Option<u32>,
    pub buffering_ms: Option<u32>,
    pub completed: bool,
    #[serde(default)]
    pub origin: String,
}

/// Milliseconds in an hour: silver is partitioned by event hour.
pub const MS_PER_HOUR: i64 = 3_600_000;

impl SilverEvent {
    pub fn new(ev: &ValidEvent<'_>, p: &crate::pseudonym::Pseudonymizer, origin: String) -> Self {
        SilverEvent {
            event_id: ev.event_id.to_owned(),
            occurred_at_ms: ev.occurred_at_ms,
            viewer: p.pseudonymize(ev.viewer_id, ev.occurred_at_ms),
            content_id: ev.content_id.to_owned(),
            device: ev.device,
            country: ev.country,
            watch_seconds: ev.watch_seconds,
            bitrate_kbps: ev.bitrate_kbps,
            buffering_ms: ev.buffering_ms,
            completed: ev.completed,
            origin,
        }
    }

    /// The hour partition (hours since the Unix epoch).
    pub fn hour(&self) -> i64 {
        self.occurred_at_ms.div_euclid(MS_PER_HOUR)
    }
}

/// What the cube reads of a silver event: its dimensions, its measures and its viewer's sketch
/// hash, without its id, time and origin. Consolidation reads silver this way, so a store that
/// can leave the other columns out reads less (see `SilverStore::hour_cube_parts`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CubeEvent {
    pub content_id: String,
    pub country: Country,
    pub device: Device,
    /// [`crate::pseudonym::Pseudonym::sketch_hash`] of the viewer.
    pub viewer_hash: u64,
    pub watch_seconds: u32,
    pub bitrate_kbps: Option<u32>,
    pub buffering_ms: Option<u32>,
    pub completed: bool,
}

impl CubeEvent {
    /// The silver event of these fields and the others, as a store reads one back.
    pub fn into_silver(
        self,
        event_id: String,
        occurred_at_ms: i64,
        viewer: crate::pseudonym::Pseudonym,
        origin: String,
    ) -> SilverEvent {
        SilverEvent {
            event_id,
            occurred_at_ms,
            viewer,
            content_id: self.content_id,
            device: self.device,
            country: self.country,
            watch_seconds: self.watch_seconds,
            bitrate_kbps: self.bitrate_kbps,
            buffering_ms: self.buffering_ms,
            completed: self.completed,
            origin,
        }
    }
}

impl From<&SilverEvent> for CubeEvent {
    fn from(e: &SilverEvent) -> Self {
        CubeEvent {
            content_id: e.content_id.clone(),
            country: e.country,
            device: e.device,
            viewer_hash: e.viewer.sketch_hash(),
            watch_seconds: e.watch_seconds,
            bitrate_kbps: e.bitrate_kbps,
            buffering_ms: e.buffering_ms,
            completed: e.completed,
        }
    }
}
