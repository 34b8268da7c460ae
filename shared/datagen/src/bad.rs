//! Deliberately broken rows, for the demo and for validator tests.
//!
//! Each bad row starts from a well-formed event and breaks exactly one rule
//! of the bronze contract. With `bad_rows = n`, row `k` (0-based) is of kind
//! `BadRowKind::ALL[k % ALL.len()]`, so the first 14 are the ones the demo
//! lists, and every kind appears once `n >= ALL.len()`.

use crate::format::Val;

/// The ways a generated bad row breaks the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadRowKind {
    /// `country` = `XX` (not an assigned code).
    CountryUnknown,
    /// `country` = `br` (lower case).
    CountryLowercase,
    /// `device` = `fridge`.
    DeviceUnknown,
    /// `watch_seconds` = `-5`.
    WatchNegative,
    /// `watch_seconds` = `90000` (over a day).
    WatchTooLarge,
    /// `occurred_at` = `yesterday`.
    TimestampNotATime,
    /// `occurred_at` in the year 2999 (in the future for any wall clock).
    TimestampFuture,
    /// `bitrate_kbps` = `0`.
    BitrateZero,
    /// `completed` = `yes`.
    CompletedYes,
    /// `event_id` empty.
    EventIdEmpty,
    /// The last field missing: 9 columns in CSV, no `completed` key in JSON.
    MissingField,
    /// One field too many: 11 columns in CSV. JSON allows unknown keys, so
    /// in JSON Lines the object (with an `extra` key) is cut short instead:
    /// the line is not valid JSON.
    ExtraField,
    /// `country` = `Rio, de Janeiro` (a quoted CSV field with a comma).
    CountryWithComma,
    /// A 0xFF byte (invalid UTF-8) inside `viewer_id`.
    ViewerIdNotUtf8,
    /// `event_id` with characters outside `[A-Za-z0-9._:-]`.
    EventIdBadChars,
    /// `event_id` of 129 characters.
    EventIdTooLong,
    /// `content_id` empty.
    ContentIdEmpty,
    /// `buffering_ms` = `-1`.
    BufferingNegative,
    /// `occurred_at` without `T` and time zone (`2026-11-02 13:45:07`).
    TimestampNoZone,
    /// `bitrate_kbps` = `fast`.
    BitrateNotANumber,
    /// `watch_seconds` = `12.5`.
    WatchFractional,
}

impl BadRowKind {
    /// Every kind, in the order bad rows cycle through them.
    pub const ALL: [BadRowKind; 21] = [
        Self::CountryUnknown,
        Self::CountryLowercase,
        Self::DeviceUnknown,
        Self::WatchNegative,
        Self::WatchTooLarge,
        Self::TimestampNotATime,
        Self::TimestampFuture,
        Self::BitrateZero,
        Self::CompletedYes,
        Self::EventIdEmpty,
        Self::MissingField,
        Self::ExtraField,
        Self::CountryWithComma,
        Self::ViewerIdNotUtf8,
        Self::EventIdBadChars,
        Self::EventIdTooLong,
        Self::ContentIdEmpty,
        Self::BufferingNegative,
        Self::TimestampNoZone,
        Self::BitrateNotANumber,
        Self::WatchFractional,
    ];

    /// The kind of the `k`-th bad row (0-based).
    pub fn nth(k: u64) -> Self {
        Self::ALL[(k % Self::ALL.len() as u64) as usize]
    }

    /// The contract field the row breaks (`None` for a wrong column count).
    pub fn field(self) -> Option<&'static str> {
        use BadRowKind::*;
        match self {
            CountryUnknown | CountryLowercase | CountryWithComma => Some("country"),
            DeviceUnknown => Some("device"),
            WatchNegative | WatchTooLarge | WatchFractional => Some("watch_seconds"),
            TimestampNotATime | TimestampFuture | TimestampNoZone => Some("occurred_at"),
            BitrateZero | BitrateNotANumber => Some("bitrate_kbps"),
            CompletedYes => Some("completed"),
            EventIdEmpty | EventIdBadChars | EventIdTooLong => Some("event_id"),
            MissingField | ExtraField => None,
            ViewerIdNotUtf8 => Some("viewer_id"),
            ContentIdEmpty => Some("content_id"),
            BufferingNegative => Some("buffering_ms"),
        }
    }

    /// Breaks a well-formed row (fields in contract order) in this way.
    pub(crate) fn apply(self, fields: &mut Vec<(&'static str, Val)>) {
        use BadRowKind::*;
        let set = |fields: &mut Vec<(&'static str, Val)>, name: &str, v: Val| {
            if let Some(f) = fields.iter_mut().find(|(n, _)| *n == name) {
                f.1 = v;
            }
        };
        let text = |fields: &Vec<(&'static str, Val)>, name: &str| -> Vec<u8> {
            match fields.iter().find(|(n, _)| *n == name) {
                Some((_, Val::Str(s))) => s.clone(),
                _ => Vec::new(),
            }
        };
        let s = |t: &str| Val::Str(t.as_bytes().to_vec());
        match self {
            CountryUnknown => set(fields, "country", s("XX")),
            CountryLowercase => set(fields, "country", s("br")),
            DeviceUnknown => set(fields, "device", s("fridge")),
            WatchNegative => set(fields, "watch_seconds", Val::Int(-5)),
            WatchTooLarge => set(fields, "watch_seconds", Val::Int(90_000)),
            TimestampNotATime => set(fields, "occurred_at", s("yesterday")),
            TimestampFuture => {
                let mut ts = text(fields, "occurred_at");
                ts[..4].copy_from_slice(b"2999");
                if &ts[4..10] == b"-02-29" {
                    ts[9] = b'8'; // 2999 is not a leap year
                }
                set(fields, "occurred_at", Val::Str(ts));
            }
            BitrateZero => set(fields, "bitrate_kbps", Val::Int(0)),
            CompletedYes => set(fields, "completed", s("yes")),
            EventIdEmpty => set(fields, "event_id", s("")),
            MissingField => {
                fields.pop();
            }
            ExtraField => fields.push(("extra", s("surplus"))),
            CountryWithComma => set(fields, "country", s("Rio, de Janeiro")),
            ViewerIdNotUtf8 => {
                let mut v = text(fields, "viewer_id");
                v.insert(v.len().min(3), 0xFF);
                set(fields, "viewer_id", Val::Str(v));
            }
            EventIdBadChars => {
                let mut v = b"evt#".to_vec();
                v.extend_from_slice(&text(fields, "event_id")[..8]);
                v.extend_from_slice(b" x");
                set(fields, "event_id", Val::Str(v));
            }
            EventIdTooLong => {
                let id = text(fields, "event_id");
                let long: Vec<u8> = id.iter().copied().cycle().take(129).collect();
                set(fields, "event_id", Val::Str(long));
            }
            ContentIdEmpty => set(fields, "content_id", s("")),
            BufferingNegative => set(fields, "buffering_ms", Val::Int(-1)),
            TimestampNoZone => {
                let ts = text(fields, "occurred_at");
                let mut v = ts[..19].to_vec();
                v[10] = b' ';
                set(fields, "occurred_at", Val::Str(v));
            }
            BitrateNotANumber => set(fields, "bitrate_kbps", s("fast")),
            WatchFractional => set(fields, "watch_seconds", Val::Raw(b"12.5".to_vec())),
        }
    }
}

impl std::fmt::Display for BadRowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}
