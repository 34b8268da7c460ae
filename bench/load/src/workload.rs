//! The events a run sends, generated before the clock starts.
//!
//! Event number `k` is a pure function of the seed and `k`, so a resend is a byte-identical copy
//! of the original line, and the expected cube totals are the sums over the first occurrences.
//! Slots are filled in order: most take the next new event; a share of them
//! ([`WorkloadConfig::duplicate_rate`]) resend an event of an earlier batch, or of the same batch
//! ([`WorkloadConfig::in_batch_share`] of the resends), as an at-least-once client would.

use std::fmt::Write as _;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use serde::Serialize;
use streamcube_model::event::{
    Country, Device, MAX_BITRATE_KBPS, MAX_EVENT_ID_LEN, MAX_WATCH_SECONDS,
};

/// The most events one request may carry (the API's limit).
pub const MAX_BATCH: usize = 500;

/// How a batch is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BodyFormat {
    /// `application/x-ndjson`: one event per line.
    Ndjson,
    /// `application/json`: an array of events.
    Json,
}

impl BodyFormat {
    pub const fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Ndjson => "application/x-ndjson",
            BodyFormat::Json => "application/json",
        }
    }
}

/// How event ids look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IdStyle {
    /// `<prefix>-<128 random bits in the UUID layout>`, as client apps make ids: every insert
    /// lands at a random place of silver's key order.
    Uuid,
    /// `<prefix>-<n>`: consecutive events are neighbours in silver's key order.
    Sequential,
}

impl IdStyle {
    pub const fn as_str(self) -> &'static str {
        match self {
            IdStyle::Uuid => "uuid",
            IdStyle::Sequential => "sequential",
        }
    }
}

/// What to send.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Events to send, resends included.
    pub events: u64,
    /// Events per request, at most [`MAX_BATCH`].
    pub batch_size: usize,
    /// Share of the slots that resend an event already sent.
    pub duplicate_rate: f64,
    /// Share of the resends that repeat an event of the same batch (the others repeat one of an
    /// earlier batch).
    pub in_batch_share: f64,
    /// Day (UTC) of every event; instants later than now are never drawn.
    pub day: NaiveDate,
    /// Countries drawn from (the server must serve them all).
    pub countries: Vec<Country>,
    /// Distinct viewer ids drawn from.
    pub viewers: u64,
    /// Distinct content ids drawn from.
    pub titles: u64,
    pub seed: u64,
    /// Prefix of the event ids, so that runs against one server do not collide.
    pub id_prefix: String,
    pub ids: IdStyle,
    pub format: BodyFormat,
}

/// Sums over events, as the cube's total row reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Totals {
    pub plays: u64,
    pub watch_seconds: u64,
    pub completed: u64,
    pub buffering_ms: u64,
    pub bitrate_sum: u64,
    pub bitrate_count: u64,
}

impl Totals {
    fn add(&mut self, e: &Event) {
        self.plays += 1;
        self.watch_seconds += u64::from(e.watch_seconds);
        self.completed += u64::from(e.completed);
        self.buffering_ms += u64::from(e.buffering_ms.unwrap_or(0));
        if let Some(b) = e.bitrate_kbps {
            self.bitrate_sum += u64::from(b);
            self.bitrate_count += 1;
        }
    }

    fn merge(&mut self, o: &Totals) {
        self.plays += o.plays;
        self.watch_seconds += o.watch_seconds;
        self.completed += o.completed;
        self.buffering_ms += o.buffering_ms;
        self.bitrate_sum += o.bitrate_sum;
        self.bitrate_count += o.bitrate_count;
    }
}

/// One request's body and what it holds.
#[derive(Clone, Debug)]
pub struct Batch {
    pub body: Bytes,
    /// Events in the body, resends included.
    pub events: u64,
    /// Events sent here for the first time.
    pub new_events: u64,
    /// Totals over the events sent here for the first time.
    pub new_totals: Totals,
}

/// What the first batches of a run add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Expected {
    pub batches: u64,
    pub events_sent: u64,
    pub unique_events: u64,
    pub duplicates_sent: u64,
    /// What the cube must report for these events.
    pub totals: Totals,
}

/// Every batch of a run, in sending order.
#[derive(Clone, Debug)]
pub struct Workload {
    pub batches: Vec<Batch>,
    pub format: BodyFormat,
    pub ids: IdStyle,
    pub day: NaiveDate,
}

/// Small, fast and good enough for test data: SplitMix64.
struct Mix(u64);

/// SplitMix64's finalizer: a bijection of `u64`.
const fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        fmix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`; the bias of a modulo is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One event's contract fields.
#[derive(Clone, Copy, Debug)]
struct Event {
    second_of_day: u32,
    viewer: u64,
    title: u64,
    device: Device,
    country: Country,
    watch_seconds: u32,
    bitrate_kbps: Option<u32>,
    buffering_ms: Option<u32>,
    completed: bool,
}

struct Generator<'a> {
    cfg: &'a WorkloadConfig,
    day: String,
    /// Seconds of the day that may be drawn (the whole day, or up to now for today).
    window: u64,
}

impl Generator<'_> {
    /// Event number `k`.
    fn event(&self, k: u64) -> Event {
        let mut r = Mix(self.cfg.seed ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let devices = Device::ALL;
        let device = devices[r.below(devices.len() as u64) as usize];
        let country = self.cfg.countries[r.below(self.cfg.countries.len() as u64) as usize];
        let completed = r.below(10) < 3;
        let watch_seconds = if completed {
            1_200 + r.below(6_000)
        } else {
            r.below(3_600)
        }
        .min(MAX_WATCH_SECONDS) as u32;
        let bitrate_kbps =
            (r.below(20) != 0).then(|| (500 + r.below(19_500)).min(MAX_BITRATE_KBPS) as u32);
        let buffering_ms = match r.below(20) {
            0 => None,
            1..=9 => Some(0),
            _ => Some(r.below(8_000) as u32),
        };
        Event {
            second_of_day: r.below(self.window) as u32,
            viewer: r.below(self.cfg.viewers),
            title: r.below(self.cfg.titles),
            device,
            country,
            watch_seconds,
            bitrate_kbps,
            buffering_ms,
            completed,
        }
    }

    /// Appends the id of event `k`. The low 64 bits of a UUID-style id are a bijection of `k`, so
    /// ids never repeat within a run.
    fn write_id(&self, k: u64, out: &mut String) {
        let prefix = &self.cfg.id_prefix;
        let _ = match self.cfg.ids {
            IdStyle::Sequential => write!(out, "{prefix}-{k}"),
            IdStyle::Uuid => {
                let low = fmix(k ^ self.cfg.seed.wrapping_mul(0xA24B_AED4_963E_E407));
                let high = fmix(low ^ 0x9FB2_1C65_1E98_DF25 ^ self.cfg.seed);
                write!(
                    out,
                    "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    high >> 32,
                    (high >> 16) & 0xFFFF,
                    high & 0xFFFF,
                    low >> 48,
                    low & 0xFFFF_FFFF_FFFF
                )
            }
        };
    }

    /// Appends event `k` as one JSON object (no newline). An absent bitrate is left out, an
    /// absent buffering time is `null`: both forms of "no value".
    fn write(&self, k: u64, e: &Event, out: &mut String) {
        let s = e.second_of_day;
        let _ = write!(
            out,
            r#"{{"event_id":"{}","occurred_at":"{}T{:02}:{:02}:{:02}Z","viewer_id":"v{}","content_id":"c{}","device":"{}","country":"{}","watch_seconds":{}"#,
            {
                let mut id = String::with_capacity(64);
                self.write_id(k, &mut id);
                id
            },
            self.day,
            s / 3600,
            s / 60 % 60,
            s % 60,
            e.viewer,
            e.title,
            e.device.as_str(),
            e.country.as_str(),
            e.watch_seconds,
        );
        if let Some(b) = e.bitrate_kbps {
            let _ = write!(out, r#","bitrate_kbps":{b}"#);
        }
        match e.buffering_ms {
            Some(b) => {
                let _ = write!(out, r#","buffering_ms":{b}"#);
            }
            None => out.push_str(r#","buffering_ms":null"#),
        }
        let _ = write!(out, r#","completed":{}}}"#, e.completed);
    }
}

impl WorkloadConfig {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=MAX_BATCH).contains(&self.batch_size),
            "the batch size must be between 1 and {MAX_BATCH}"
        );
        ensure!(
            (0.0..1.0).contains(&self.duplicate_rate),
            "the duplicate rate must be in [0, 1)"
        );
        ensure!(
            (0.0..=1.0).contains(&self.in_batch_share),
            "the in-batch share must be in [0, 1]"
        );
        ensure!(!self.countries.is_empty(), "give at least one country");
        ensure!(
            self.viewers > 0 && self.titles > 0,
            "viewers and titles must be at least 1"
        );
        ensure!(
            !self.id_prefix.is_empty()
                && self
                    .id_prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')),
            "the id prefix must be letters, digits, `.`, `_`, `:` or `-`"
        );
        ensure!(
            self.id_prefix.len() + 37 <= MAX_EVENT_ID_LEN,
            "the id prefix is too long for an event id of at most {MAX_EVENT_ID_LEN} bytes"
        );
        Ok(())
    }
}

impl Workload {
    /// Generates every batch. Fails on a configuration the API would refuse.
    pub fn generate(cfg: &WorkloadConfig) -> anyhow::Result<Workload> {
        cfg.check()?;
        let midnight = cfg
            .day
            .and_hms_opt(0, 0, 0)
            .context("midnight of the day")?
            .and_utc()
            .timestamp();
        // A minute of margin: the server judges "the future" by its own clock.
        let now = Utc::now().timestamp() - 60;
        let window = (now - midnight).clamp(0, 86_400);
        if window == 0 {
            bail!(
                "{} has not begun yet (UTC): events must not be in the future",
                cfg.day
            );
        }
        let g = Generator {
            cfg,
            day: cfg.day.format("%Y-%m-%d").to_string(),
            window: window as u64,
        };
        let mut mix = Mix(cfg.seed.rotate_left(17) ^ 0x4C4F_4144_4745_4E21);
        let batch_count = cfg.events.div_ceil(cfg.batch_size as u64);
        let mut batches = Vec::with_capacity(usize::try_from(batch_count)?);
        // New events so far: events 0..unique have been written.
        let mut unique = 0u64;
        let mut left = cfg.events;
        let (open, sep, close) = match cfg.format {
            BodyFormat::Ndjson => ("", "\n", "\n"),
            BodyFormat::Json => ("[", ",", "]"),
        };
        while left > 0 {
            let n = left.min(cfg.batch_size as u64);
            left -= n;
            let first_of_batch = unique;
            let mut body = String::with_capacity(n as usize * 240);
            let mut totals = Totals::default();
            body.push_str(open);
            for i in 0..n {
                if i > 0 {
                    body.push_str(sep);
                }
                let resend = if mix.unit() < cfg.duplicate_rate {
                    let same_batch = mix.unit() < cfg.in_batch_share;
                    let (here, before) = (unique - first_of_batch, first_of_batch);
                    match (same_batch, here, before) {
                        (true, 1.., _) | (false, 1.., 0) => Some(first_of_batch + mix.below(here)),
                        (_, _, 1..) => Some(mix.below(before)),
                        _ => None,
                    }
                } else {
                    None
                };
                let k = resend.unwrap_or_else(|| {
                    unique += 1;
                    unique - 1
                });
                let e = g.event(k);
                if resend.is_none() {
                    totals.add(&e);
                }
                g.write(k, &e, &mut body);
            }
            body.push_str(close);
            batches.push(Batch {
                body: Bytes::from(body),
                events: n,
                new_events: unique - first_of_batch,
                new_totals: totals,
            });
        }
        Ok(Workload {
            batches,
            format: cfg.format,
            ids: cfg.ids,
            day: cfg.day,
        })
    }

    /// What the first `n` batches hold.
    pub fn expected(&self, n: usize) -> Expected {
        let mut x = Expected::default();
        for b in self.batches.iter().take(n) {
            x.batches += 1;
            x.events_sent += b.events;
            x.unique_events += b.new_events;
            x.totals.merge(&b.new_totals);
        }
        x.duplicates_sent = x.events_sent - x.unique_events;
        x
    }

    /// Bytes of all the bodies.
    pub fn bytes(&self) -> u64 {
        self.batches.iter().map(|b| b.body.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use streamcube_model::event::{RawFields, Validator};

    use super::*;

    fn config(events: u64, format: BodyFormat) -> WorkloadConfig {
        WorkloadConfig {
            events,
            batch_size: 500,
            duplicate_rate: 0.05,
            in_batch_share: 0.25,
            day: NaiveDate::from_ymd_opt(2025, 6, 1).expect("date"),
            countries: ["BR", "US", "DE"]
                .iter()
                .map(|c| Country::parse(c).expect("country"))
                .collect(),
            viewers: 1_000,
            titles: 50,
            seed: 7,
            id_prefix: "t".into(),
            ids: IdStyle::Uuid,
            format,
        }
    }

    fn lines(b: &Batch, format: BodyFormat) -> Vec<serde_json::Value> {
        match format {
            BodyFormat::Ndjson => std::str::from_utf8(&b.body)
                .expect("utf-8")
                .lines()
                .map(|l| serde_json::from_str(l).expect("json line"))
                .collect(),
            BodyFormat::Json => serde_json::from_slice(&b.body).expect("json array"),
        }
    }

    /// Every event is valid, resends are byte-identical, and the counts and totals match a
    /// recount from the bodies.
    #[test]
    fn batches_hold_valid_events_and_counted_resends() {
        for (format, ids) in [
            (BodyFormat::Ndjson, IdStyle::Uuid),
            (BodyFormat::Json, IdStyle::Sequential),
        ] {
            let w = Workload::generate(&WorkloadConfig {
                ids,
                ..config(20_250, format)
            })
            .expect("workload");
            assert_eq!(w.batches.len(), 41);
            let validator = Validator::now();
            let mut seen: HashMap<String, serde_json::Value> = HashMap::new();
            let (mut in_batch, mut across) = (0u64, 0u64);
            let mut recount = Totals::default();
            for b in &w.batches {
                let events = lines(b, format);
                assert_eq!(events.len() as u64, b.events);
                let mut here = HashSet::new();
                for v in events {
                    let obj = v.as_object().expect("object");
                    let raw = RawFields::from_json_object(obj);
                    let ev = validator.validate(&raw).expect("valid event");
                    let id = ev.event_id.to_owned();
                    if let Some(first) = seen.get(&id) {
                        assert_eq!(first, &v, "a resend equals its original");
                        if here.contains(&id) {
                            in_batch += 1;
                        } else {
                            across += 1;
                        }
                    } else {
                        recount.plays += 1;
                        recount.watch_seconds += u64::from(ev.watch_seconds);
                        recount.completed += u64::from(ev.completed);
                        recount.buffering_ms += u64::from(ev.buffering_ms.unwrap_or(0));
                        recount.bitrate_sum += u64::from(ev.bitrate_kbps.unwrap_or(0));
                        recount.bitrate_count += u64::from(ev.bitrate_kbps.is_some());
                        seen.insert(id.clone(), v.clone());
                    }
                    here.insert(id);
                }
            }
            let x = w.expected(w.batches.len());
            assert_eq!(x.events_sent, 20_250);
            assert_eq!(x.unique_events, seen.len() as u64);
            assert_eq!(x.duplicates_sent, in_batch + across);
            assert_eq!(x.totals, recount);
            assert_eq!(x.totals.plays, x.unique_events);
            // About 5% resends, a quarter of them within their batch.
            assert!((700..1_350).contains(&x.duplicates_sent), "{x:?}");
            assert!(in_batch > 100 && across > 500, "{in_batch} {across}");
        }
    }

    #[test]
    fn prefixes_add_up_and_generation_is_deterministic() {
        let cfg = config(3_000, BodyFormat::Ndjson);
        let a = Workload::generate(&cfg).expect("workload");
        let b = Workload::generate(&cfg).expect("workload");
        assert!(
            a.batches
                .iter()
                .zip(&b.batches)
                .all(|(x, y)| x.body == y.body)
        );
        let two = a.expected(2);
        assert_eq!((two.batches, two.events_sent), (2, 1_000));
        assert_eq!(
            two.unique_events,
            a.batches[0].new_events + a.batches[1].new_events
        );
        assert_eq!(a.expected(100), a.expected(6));
    }

    #[test]
    fn refuses_what_the_api_would() {
        let mut cfg = config(10, BodyFormat::Ndjson);
        cfg.batch_size = 501;
        assert!(Workload::generate(&cfg).is_err());
        let mut cfg = config(10, BodyFormat::Ndjson);
        cfg.id_prefix = "a b".into();
        assert!(Workload::generate(&cfg).is_err());
        let mut cfg = config(10, BodyFormat::Ndjson);
        cfg.day = Utc::now().date_naive() + chrono::Days::new(2);
        assert!(Workload::generate(&cfg).is_err());
    }
}
