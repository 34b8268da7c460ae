//! Serialisation of events to CSV and JSON Lines, by hand: the values are
//! known to need no quoting, and this is the generator's hot loop.

use crate::model::{COUNTRIES, DEVICES, Event, Model};

/// The bronze CSV header, in contract order (with the trailing newline).
pub const EVENTS_HEADER: &str = "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed\n";

/// Appends the decimal digits of `v`.
#[inline]
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Appends `v` zero-padded to at least `width` digits.
#[inline]
pub(crate) fn push_padded(buf: &mut Vec<u8>, v: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut i = tmp.len();
    let mut x = v;
    loop {
        i -= 1;
        tmp[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    let start = i.min(tmp.len() - width.min(tmp.len()));
    buf.extend_from_slice(&tmp[start..]);
}

#[inline]
fn push2(buf: &mut Vec<u8>, v: u32) {
    buf.push(b'0' + (v / 10) as u8);
    buf.push(b'0' + (v % 10) as u8);
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
#[inline]
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends an RFC 3339 timestamp: the instant `secs` (Unix, UTC) written in
/// the given UTC offset, with optional milliseconds.
pub(crate) fn push_timestamp(buf: &mut Vec<u8>, secs: i64, millis: Option<u16>, offset_min: i32) {
    let local = secs + i64::from(offset_min) * 60;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    let sod = local.rem_euclid(86_400) as u32;
    push_padded(buf, y as u64, 4);
    buf.push(b'-');
    push2(buf, m);
    buf.push(b'-');
    push2(buf, d);
    buf.push(b'T');
    push2(buf, sod / 3_600);
    buf.push(b':');
    push2(buf, sod / 60 % 60);
    buf.push(b':');
    push2(buf, sod % 60);
    if let Some(ms) = millis {
        buf.push(b'.');
        push_padded(buf, u64::from(ms), 3);
    }
    if offset_min == 0 {
        buf.push(b'Z');
    } else {
        buf.push(if offset_min < 0 { b'-' } else { b'+' });
        let a = offset_min.unsigned_abs();
        push2(buf, a / 60);
        buf.push(b':');
        push2(buf, a % 60);
    }
}

/// Appends a UUID-shaped event id (8-4-4-4-12 lowercase hex) made of two
/// 64-bit words.
pub(crate) fn push_event_id(buf: &mut Vec<u8>, (hi, lo): (u64, u64)) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        let word = if i < 16 { hi } else { lo };
        let shift = 60 - 4 * (i % 16);
        *d = HEX[((word >> shift) & 0xf) as usize];
    }
    for (i, d) in digits.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            buf.push(b'-');
        }
        buf.push(*d);
    }
}

/// Appends a CSV line (with newline) for a well-formed event.
pub(crate) fn push_csv_row(buf: &mut Vec<u8>, ev: &Event, model: &Model) {
    push_event_id(buf, model.event_id_words(ev.id));
    buf.push(b',');
    push_timestamp(buf, ev.secs, ev.millis, ev.offset_minutes);
    buf.extend_from_slice(b",v");
    push_padded(buf, u64::from(ev.viewer), 6);
    buf.extend_from_slice(b",c");
    push_padded(buf, u64::from(ev.content), 6);
    buf.push(b',');
    buf.extend_from_slice(DEVICES[ev.device as usize].as_bytes());
    buf.push(b',');
    buf.extend_from_slice(COUNTRIES[ev.country as usize].as_bytes());
    buf.push(b',');
    push_u64(buf, u64::from(ev.watch_seconds));
    buf.push(b',');
    if let Some(b) = ev.bitrate_kbps {
        push_u64(buf, u64::from(b));
    }
    buf.push(b',');
    if let Some(b) = ev.buffering_ms {
        push_u64(buf, u64::from(b));
    }
    buf.extend_from_slice(if ev.completed {
        b",true\n"
    } else {
        b",false\n"
    });
}

/// A field value of the generic (slow) path, used for JSON and bad rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    /// Text: quoted in CSV when needed, a string in JSON.
    Str(Vec<u8>),
    Int(i64),
    Bool(bool),
    /// Absent optional value: empty in CSV, `null` in JSON.
    Null,
    /// Written verbatim in both formats (e.g. `12.5`).
    Raw(Vec<u8>),
}

/// The named fields of an event, in contract order.
pub(crate) fn fields(ev: &Event, model: &Model) -> Vec<(&'static str, Val)> {
    let mut id = Vec::with_capacity(36);
    push_event_id(&mut id, model.event_id_words(ev.id));
    let mut ts = Vec::with_capacity(29);
    push_timestamp(&mut ts, ev.secs, ev.millis, ev.offset_minutes);
    let mut viewer = vec![b'v'];
    push_padded(&mut viewer, u64::from(ev.viewer), 6);
    let mut content = vec![b'c'];
    push_padded(&mut content, u64::from(ev.content), 6);
    let opt = |v: Option<u32>| v.map_or(Val::Null, |x| Val::Int(i64::from(x)));
    vec![
        ("event_id", Val::Str(id)),
        ("occurred_at", Val::Str(ts)),
        ("viewer_id", Val::Str(viewer)),
        ("content_id", Val::Str(content)),
        ("device", Val::Str(DEVICES[ev.device as usize].into())),
        ("country", Val::Str(COUNTRIES[ev.country as usize].into())),
        ("watch_seconds", Val::Int(i64::from(ev.watch_seconds))),
        ("bitrate_kbps", opt(ev.bitrate_kbps)),
        ("buffering_ms", opt(ev.buffering_ms)),
        ("completed", Val::Bool(ev.completed)),
    ]
}

/// Appends a CSV line for arbitrary fields, quoting text that needs it.
pub(crate) fn push_csv_fields(buf: &mut Vec<u8>, fields: &[(&'static str, Val)]) {
    for (i, (_, v)) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        match v {
            Val::Str(s) if s.iter().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r')) => {
                buf.push(b'"');
                for &c in s {
                    if c == b'"' {
                        buf.push(b'"');
                    }
                    buf.push(c);
                }
                buf.push(b'"');
            }
            Val::Str(s) | Val::Raw(s) => buf.extend_from_slice(s),
            Val::Int(n) => buf.extend_from_slice(n.to_string().as_bytes()),
            Val::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
            Val::Null => {}
        }
    }
    buf.push(b'\n');
}

/// Appends a JSON object line for arbitrary fields. Bytes >= 0x80 are copied
/// verbatim (so a deliberately invalid UTF-8 byte stays invalid).
pub(crate) fn push_json_fields(buf: &mut Vec<u8>, fields: &[(&'static str, Val)]) {
    buf.push(b'{');
    for (i, (name, v)) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'"');
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\":");
        match v {
            Val::Str(s) => {
                buf.push(b'"');
                for &c in s {
                    match c {
                        b'"' => buf.extend_from_slice(b"\\\""),
                        b'\\' => buf.extend_from_slice(b"\\\\"),
                        0..=0x1f => buf.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
                        _ => buf.push(c),
                    }
                }
                buf.push(b'"');
            }
            Val::Raw(s) => buf.extend_from_slice(s),
            Val::Int(n) => buf.extend_from_slice(n.to_string().as_bytes()),
            Val::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
            Val::Null => buf.extend_from_slice(b"null"),
        }
    }
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64, ms: Option<u16>, off: i32) -> String {
        let mut b = Vec::new();
        push_timestamp(&mut b, secs, ms, off);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn timestamps_match_chrono() {
        for secs in [
            0i64,
            951_782_400,
            1_793_577_600,
            1_793_663_999,
            4_102_444_800,
        ] {
            let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap();
            assert_eq!(
                ts(secs, None, 0),
                dt.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            );
            let parsed = chrono::DateTime::parse_from_rfc3339(&ts(secs, Some(7), -180)).unwrap();
            assert_eq!(parsed.timestamp(), secs);
            assert_eq!(parsed.timestamp_subsec_millis(), 7);
            let parsed = chrono::DateTime::parse_from_rfc3339(&ts(secs, None, 60)).unwrap();
            assert_eq!(parsed.timestamp(), secs);
        }
        assert_eq!(ts(1_793_577_600, None, 60), "2026-11-02T01:00:00+01:00");
        assert_eq!(ts(1_793_577_600, Some(5), 0), "2026-11-02T00:00:00.005Z");
        assert_eq!(ts(1_793_577_600, None, -180), "2026-11-01T21:00:00-03:00");
    }

    #[test]
    fn numbers() {
        let mut b = Vec::new();
        push_u64(&mut b, 0);
        b.push(b' ');
        push_u64(&mut b, 18_446_744_073_709_551_615);
        b.push(b' ');
        push_padded(&mut b, 123, 6);
        b.push(b' ');
        push_padded(&mut b, 1_234_567, 6);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "0 18446744073709551615 000123 1234567"
        );
    }

    #[test]
    fn event_id_shape() {
        let mut b = Vec::new();
        push_event_id(&mut b, (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210));
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "01234567-89ab-cdef-fedc-ba9876543210"
        );
    }

    #[test]
    fn generic_csv_quotes_commas() {
        let mut b = Vec::new();
        push_csv_fields(
            &mut b,
            &[
                ("a", Val::Str(b"Rio, de Janeiro".to_vec())),
                ("b", Val::Null),
                ("c", Val::Int(-5)),
            ],
        );
        assert_eq!(b, b"\"Rio, de Janeiro\",,-5\n");
    }
}
