//! The statistical model: who watches what, where, when and how.
//!
//! Everything that describes a *thing* (a viewer's home country, a title's
//! genre and duration) is a pure function of the seed and the thing's number,
//! so the catalog and the events agree without sharing state, and nothing is
//! held per viewer. Everything that describes a *play* is drawn from the
//! generator's sequential random stream.

use chrono::Datelike;
use rand_distr::{Distribution, Zipf};

use crate::rng::{Rng64, hash2, mix64, unit_from};
use crate::{GenConfig, GenError};

/// Countries (ISO 3166-1 alpha-2, all assigned codes), most frequent first.
/// Viewers' home countries follow a Zipf law (s = 1) over this order.
pub const COUNTRIES: [&str; 40] = [
    "BR", "US", "MX", "AR", "CO", "GB", "DE", "FR", "ES", "IT", "CA", "CL", "PE", "PT", "IN", "JP",
    "KR", "AU", "NL", "SE", "PL", "TR", "ZA", "NG", "EG", "PH", "ID", "TH", "VN", "NZ", "IE", "BE",
    "CH", "AT", "NO", "DK", "FI", "UY", "EC", "CR",
];

/// The devices of the contract, in contract order.
pub const DEVICES: [&str; 5] = ["tv", "mobile", "web", "tablet", "console"];

/// Share of plays per device, same order as [`DEVICES`]:
/// mobile > tv > web > tablet > console.
pub const DEVICE_WEIGHTS: [f64; 5] = [0.30, 0.40, 0.17, 0.09, 0.04];

/// Genre names; the first `GenConfig::genres` are used (more are named
/// `genre-17`, `genre-18`, ...). Earlier genres hold more titles.
pub const GENRES: [&str; 16] = [
    "drama",
    "comedy",
    "documentary",
    "action",
    "thriller",
    "romance",
    "animation",
    "horror",
    "sci-fi",
    "kids",
    "reality",
    "crime",
    "fantasy",
    "music",
    "sports",
    "news",
];

/// Exponent of the Zipf law that picks titles by popularity.
pub const CONTENT_ZIPF_S: f64 = 1.1;

/// Relative audience per UTC hour of the day: quiet at night, a lunch bump,
/// and an evening peak.
const HOUR_WEIGHTS: [f64; 24] = [
    3.0, 2.2, 1.6, 1.2, 1.0, 1.0, 1.4, 2.0, 2.8, 3.3, 3.8, 4.3, 4.8, 4.9, 4.8, 5.2, 5.8, 6.8, 8.2,
    9.6, 10.4, 10.0, 8.0, 5.2,
];

/// Relative audience per weekday, Monday first: weekends are busier.
const WEEKDAY_WEIGHTS: [f64; 7] = [0.95, 0.93, 0.95, 0.98, 1.08, 1.18, 1.13];

const ADJECTIVES: [&str; 32] = [
    "Silent",
    "Crimson",
    "Hidden",
    "Last",
    "Broken",
    "Golden",
    "Endless",
    "Midnight",
    "Frozen",
    "Wild",
    "Distant",
    "Burning",
    "Quiet",
    "Lost",
    "Secret",
    "Electric",
    "Hollow",
    "Iron",
    "Velvet",
    "Savage",
    "Northern",
    "Paper",
    "Restless",
    "Sunken",
    "Bright",
    "Fallen",
    "Little",
    "Final",
    "Shattered",
    "Wandering",
    "Emerald",
    "Lonely",
];

const NOUNS: [&str; 32] = [
    "River", "Empire", "Garden", "Signal", "Harbor", "Kingdom", "Horizon", "Witness", "Storm",
    "Orchard", "Frontier", "Mirror", "Tide", "Machine", "Lantern", "Summer", "Island", "Protocol",
    "Heist", "Crown", "Letters", "Station", "Valley", "Circus", "Archive", "Border", "Season",
    "Engine", "Choir", "Desert", "Compass", "Diner",
];

/// Salts that separate the independent hash streams.
const VIEWER_SALT: u64 = 0x5649_4557_4552_5321; // "VIEWERS!"
const TITLE_SALT: u64 = 0x5449_544c_4553_2121; // "TITLES!!"
const ID_SALT_A: u64 = 0x4556_454e_5449_4441; // "EVENTIDA"
const ID_SALT_B: u64 = 0x4556_454e_5449_4442; // "EVENTIDB"

/// Descriptive attributes of one catalogued (or uncatalogued) title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TitleInfo {
    pub title: String,
    pub genre: u32,
    pub release_year: i32,
    pub duration_seconds: u32,
}

/// The attributes of title number `number` (1-based). Pure function.
pub(crate) fn title_info(seed: u64, number: u32, genre_cdf: &[f64], year_now: i32) -> TitleInfo {
    let mut r = Rng64::new(hash2(seed ^ TITLE_SALT, u64::from(number)));
    let kind = r.unit();
    let duration_seconds = if kind < 0.60 {
        r.between(1_200, 3_600) // an episode
    } else if kind < 0.95 {
        r.between(4_800, 8_400) // a film
    } else {
        r.between(5_400, 14_400) // a live event or concert
    };
    let genre = pick(genre_cdf, r.unit()) as u32;
    let age = (-(1.0 - r.unit()).ln() * 6.0).floor().min(70.0) as i32;
    let release_year = year_now - age;

    let adj = ADJECTIVES[r.below(ADJECTIVES.len() as u64) as usize];
    let noun = NOUNS[r.below(NOUNS.len() as u64) as usize];
    let noun2 = NOUNS[r.below(NOUNS.len() as u64) as usize];
    let n = r.between(2, 12);
    let pattern = r.below(100);
    let title = if kind < 0.60 {
        match pattern {
            0..=49 => format!("The {adj} {noun}: Episode {n}"),
            50..=89 => format!("{adj} {noun} S{}E{:02}", n / 3 + 1, r.between(1, 12)),
            _ => format!("{noun}s of the {adj} {noun2}: Episode {n}"),
        }
    } else if kind < 0.95 {
        match pattern {
            0..=39 => format!("The {adj} {noun}"),
            40..=64 => format!("The {adj} {noun} {n}"),
            65..=84 => format!("{noun} of the {adj} {noun2}"),
            85..=96 => format!("{adj} {noun}"),
            // A comma, so the catalog exercises CSV quoting.
            _ => format!("{noun}, {noun2} and the {adj} One"),
        }
    } else {
        format!("{adj} {noun} Live {}", year_now - age.min(5))
    };
    TitleInfo {
        title,
        genre,
        release_year,
        duration_seconds,
    }
}

/// Name of genre number `g` (0-based).
pub(crate) fn genre_name(g: u32) -> String {
    GENRES
        .get(g as usize)
        .map_or_else(|| format!("genre-{}", g + 1), |s| (*s).to_string())
}

/// Cumulative distribution (last entry exactly 1.0) of the given weights.
pub(crate) fn cdf(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    let mut out: Vec<f64> = weights
        .into_iter()
        .map(|w| {
            acc += w;
            acc
        })
        .collect();
    for c in &mut out {
        *c /= acc;
    }
    if let Some(last) = out.last_mut() {
        *last = 1.0;
    }
    out
}

/// Index drawn from a cumulative distribution with a uniform `u` in `[0, 1)`.
#[inline]
pub(crate) fn pick(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
}

/// Cumulative genre distribution: Zipf (s = 0.6) over the first `n` genres.
pub(crate) fn genre_cdf(n: u32) -> Vec<f64> {
    cdf((1..=n).map(|k| 1.0 / f64::from(k).powf(0.6)))
}

/// A permutation of `0..n`: `k -> (a k + b) mod n` with `gcd(a, n) = 1`, so
/// that popularity rank and id number are unrelated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Perm {
    n: u64,
    a: u64,
    b: u64,
}

impl Perm {
    pub(crate) fn new(n: u64, seed: u64) -> Self {
        fn gcd(mut a: u64, mut b: u64) -> u64 {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        }
        let n = n.max(1);
        let mut a = ((n as f64 * 0.618_033_988_75) as u64) | 1;
        while gcd(a, n) != 1 {
            a += 1;
        }
        Self {
            n,
            a,
            b: mix64(seed) % n,
        }
    }

    #[inline]
    pub(crate) fn apply(&self, k: u64) -> u64 {
        ((u128::from(self.a) * u128::from(k) + u128::from(self.b)) % u128::from(self.n)) as u64
    }
}

/// One well-formed event, before serialisation.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// Input of the event-id function (a bijection, so ids never collide).
    pub id: u64,
    /// Unix seconds, UTC.
    pub secs: i64,
    /// Milliseconds to print, if this event's timestamp carries them.
    pub millis: Option<u16>,
    /// UTC offset in minutes to print the timestamp with (0 prints `Z`).
    pub offset_minutes: i32,
    /// Viewer number (1-based), printed `v000123`.
    pub viewer: u32,
    /// Content number (1-based), printed `c000123`; above `titles` means
    /// not in the catalog.
    pub content: u32,
    pub device: u8,
    pub country: u8,
    pub watch_seconds: u32,
    pub bitrate_kbps: Option<u32>,
    pub buffering_ms: Option<u32>,
    pub completed: bool,
    pub uncatalogued: bool,
}

/// Everything derived from the configuration that sampling needs.
pub(crate) struct Model {
    pub seed: u64,
    pub titles: u32,
    start_secs: i64,
    range_secs: i64,
    hour_cdf: Vec<f64>,
    content_zipf: Zipf<f64>,
    content_perm: Perm,
    uncat_zipf: Option<Zipf<f64>>,
    uncat_perm: Perm,
    uncatalogued_rate: f64,
    durations: Vec<u32>,
    viewers: u64,
    viewer_perm: Perm,
    tier_top: u64,
    tier_mid: u64,
    country_cdf: Vec<f64>,
    device_cdf: Vec<f64>,
    id_key_a: u64,
    id_key_b: u64,
}

/// Number of content ids that exist in the event stream but not in the
/// catalog (new releases the catalog feed has not caught up with).
pub(crate) fn uncatalogued_titles(titles: u32) -> u32 {
    (titles / 20).max(1)
}

impl Model {
    pub(crate) fn new(cfg: &GenConfig) -> Result<Self, GenError> {
        let bad = |e: rand_distr::ZipfError| GenError::InvalidConfig(format!("zipf: {e}"));
        let start_secs = cfg
            .start
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp();
        let first_day = start_secs.div_euclid(86_400);
        let hour_cdf = cdf((0..i64::from(cfg.days) * 24).map(|h| {
            let weekday = (first_day + h / 24 + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
            HOUR_WEIGHTS[(h % 24) as usize] * WEEKDAY_WEIGHTS[weekday]
        }));
        let uncat = uncatalogued_titles(cfg.titles);
        let genre_cdf = genre_cdf(cfg.genres);
        let year_now = cfg.start.year();
        let durations = (1..=cfg.titles + uncat)
            .map(|n| title_info(cfg.seed, n, &genre_cdf, year_now).duration_seconds)
            .collect();
        let viewers = u64::from(cfg.viewers);
        let tier_top = (viewers / 100).max(1);
        let tier_mid = (viewers / 5).max(tier_top);
        Ok(Self {
            seed: cfg.seed,
            titles: cfg.titles,
            start_secs,
            range_secs: i64::from(cfg.days) * 86_400,
            hour_cdf,
            content_zipf: Zipf::new(f64::from(cfg.titles), CONTENT_ZIPF_S).map_err(bad)?,
            content_perm: Perm::new(u64::from(cfg.titles), cfg.seed ^ 1),
            uncat_zipf: if cfg.uncatalogued_rate > 0.0 {
                Some(Zipf::new(f64::from(uncat), CONTENT_ZIPF_S).map_err(bad)?)
            } else {
                None
            },
            uncat_perm: Perm::new(u64::from(uncat), cfg.seed ^ 2),
            uncatalogued_rate: cfg.uncatalogued_rate,
            durations,
            viewers,
            viewer_perm: Perm::new(viewers, cfg.seed ^ 3),
            tier_top,
            tier_mid,
            country_cdf: cdf((1..=COUNTRIES.len()).map(|k| 1.0 / k as f64)),
            device_cdf: cdf(DEVICE_WEIGHTS),
            id_key_a: mix64(cfg.seed ^ ID_SALT_A),
            id_key_b: mix64(cfg.seed ^ ID_SALT_B),
        })
    }

    /// The two 64-bit halves of the event id for id input `id`. The second
    /// half is a bijection of `id`, so ids are unique within a seed.
    #[inline]
    pub(crate) fn event_id_words(&self, id: u64) -> (u64, u64) {
        let low = mix64(id ^ self.id_key_a);
        (hash2(self.id_key_b, low), low)
    }

    /// Draws one event. `q` in `[0, 1)` is the position in the file, which
    /// sets the time (files come out in time order, apart from late arrivals).
    pub(crate) fn sample(&self, r: &mut Rng64, q: f64, id: u64) -> Event {
        // When: inverse CDF of the hourly audience curve over the whole range.
        let target = q.clamp(0.0, 1.0);
        let hour = pick(&self.hour_cdf, target);
        let lo = if hour == 0 {
            0.0
        } else {
            self.hour_cdf[hour - 1]
        };
        let width = self.hour_cdf[hour] - lo;
        let frac = if width > 0.0 {
            ((target - lo) / width).clamp(0.0, 0.999_999)
        } else {
            r.unit()
        };
        let mut offset = hour as i64 * 3_600 + (frac * 3_600.0) as i64;
        if r.chance(0.01) {
            // A late arrival: the device was offline for a while.
            offset -= i64::from(r.between(60, 3 * 3_600));
        }
        let secs = self.start_secs + offset.clamp(0, self.range_secs - 1);

        // Who: a three-tier activity mix (1% of viewers make 10% of plays,
        // the next 19% make 50%, the other 80% make 40%), uniform in a tier.
        let u = r.unit();
        let k = if u < 0.10 {
            r.below(self.tier_top)
        } else if u < 0.60 && self.tier_mid > self.tier_top {
            self.tier_top + r.below(self.tier_mid - self.tier_top)
        } else if self.viewers > self.tier_mid {
            self.tier_mid + r.below(self.viewers - self.tier_mid)
        } else {
            r.below(self.viewers)
        };
        let viewer = self.viewer_perm.apply(k) as u32 + 1;
        let vh = hash2(self.seed ^ VIEWER_SALT, u64::from(viewer));
        let home = pick(&self.country_cdf, unit_from(vh)) as u8;
        let own_device = pick(&self.device_cdf, unit_from(mix64(vh))) as u8;
        let country = if r.chance(0.97) {
            home
        } else {
            pick(&self.country_cdf, r.unit()) as u8 // travelling
        };
        let device = if r.chance(0.75) {
            own_device
        } else {
            pick(&self.device_cdf, r.unit()) as u8
        };

        // What: Zipf over the catalog, or over the not-yet-catalogued titles.
        let (content, uncatalogued) = match &self.uncat_zipf {
            Some(z) if r.chance(self.uncatalogued_rate) => {
                let rank = z.sample(r) as u64 - 1;
                (self.titles + 1 + self.uncat_perm.apply(rank) as u32, true)
            }
            _ => {
                let rank = self.content_zipf.sample(r) as u64 - 1;
                (self.content_perm.apply(rank) as u32 + 1, false)
            }
        };
        let duration = f64::from(self.durations[content as usize - 1]);

        // How long: ~30% finish; the rest drop out early more often than late.
        let completed = r.chance(0.30);
        let watch = if completed {
            duration * (0.90 + 0.10 * r.unit())
        } else if r.chance(0.04) {
            0.0 // failed start
        } else {
            duration * 0.95 * r.unit().powf(1.6)
        };
        let watch_seconds = (watch as u32).min(86_400);

        let bitrate_kbps = if r.chance(0.05) {
            None
        } else {
            let (lo, hi) = match DEVICES[device as usize] {
                "tv" => (3_000, 25_000),
                "console" => (3_000, 20_000),
                "web" => (1_500, 8_000),
                "tablet" => (800, 6_000),
                _ => (300, 4_000),
            };
            Some(r.between(lo, hi))
        };
        let buffering_ms = if r.chance(0.05) {
            None
        } else if r.chance(0.45) {
            Some(0)
        } else if r.chance(0.01) {
            Some(r.between(10_000, 300_000)) // a stall
        } else {
            Some(((-(1.0 - r.unit()).ln() * 900.0) as u32).min(86_400_000))
        };

        // How the timestamp is written: mostly `Z` with whole seconds.
        let style = r.unit();
        let (millis, offset_minutes) = if style < 0.015 {
            (Some(r.below(1_000) as u16), 0)
        } else if style < 0.025 {
            (None, 60)
        } else if style < 0.030 {
            (None, -180)
        } else {
            (None, 0)
        };

        Event {
            id,
            secs,
            millis,
            offset_minutes,
            viewer,
            content,
            device,
            country,
            watch_seconds,
            bitrate_kbps,
            buffering_ms,
            completed,
            uncatalogued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perm_is_a_permutation() {
        for n in [1u64, 2, 3, 10, 97, 100, 5_000, 200_000] {
            let p = Perm::new(n, 42);
            let mut seen = vec![false; n as usize];
            for k in 0..n {
                let v = p.apply(k) as usize;
                assert!(!seen[v], "n={n} k={k}");
                seen[v] = true;
            }
        }
    }

    #[test]
    fn cdf_and_pick() {
        let c = cdf([1.0, 1.0, 2.0]);
        assert_eq!(c, vec![0.25, 0.5, 1.0]);
        assert_eq!(pick(&c, 0.0), 0);
        assert_eq!(pick(&c, 0.25), 1);
        assert_eq!(pick(&c, 0.99), 2);
    }

    #[test]
    fn genre_names_extend_past_the_list() {
        assert_eq!(genre_name(0), "drama");
        assert_eq!(genre_name(16), "genre-17");
    }
}
