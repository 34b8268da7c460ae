//! Probe events for the privacy tests (embedded and on the emulator): viewer ids that cannot
//! occur by chance, random content, HMAC-SHA-256 from its definition (independent of the
//! pipeline's pseudonymizer) and searches for the ids. Included by `#[path]`; each test uses
//! part of it.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// One playback event as a client sends it.
#[derive(Clone, Debug)]
pub struct Ev {
    pub id: String,
    pub at: String,
    pub viewer: String,
    pub content: String,
    pub device: &'static str,
    pub country: &'static str,
    pub watch: u32,
    pub bitrate: Option<u32>,
    pub buffering: Option<u32>,
    pub completed: bool,
}

impl Ev {
    pub fn day(&self) -> String {
        self.at[..10].to_owned()
    }

    pub fn hour(&self) -> String {
        format!("{}:00:00Z", &self.at[..13])
    }

    pub fn csv(&self) -> String {
        let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{},{},{}",
            self.id,
            self.at,
            self.viewer,
            self.content,
            self.device,
            self.country,
            self.watch,
            opt(self.bitrate),
            opt(self.buffering),
            self.completed
        )
    }

    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "event_id": self.id,
            "occurred_at": self.at,
            "viewer_id": self.viewer,
            "content_id": self.content,
            "device": self.device,
            "country": self.country,
            "watch_seconds": self.watch,
            "completed": self.completed,
        });
        if let Some(b) = self.bitrate {
            v["bitrate_kbps"] = b.into();
        }
        if let Some(b) = self.buffering {
            v["buffering_ms"] = b.into();
        }
        v
    }
}

pub fn token(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
        .collect()
}

/// Events with random content; ids unique within the run.
pub struct Gen {
    pub rng: StdRng,
    n: u32,
    days: [&'static str; 2],
}

impl Gen {
    pub fn new(seed: u64, days: [&'static str; 2]) -> Self {
        // Shown with a failing test's output, so that the run can be repeated.
        eprintln!("generator seed {seed}");
        Gen {
            rng: StdRng::seed_from_u64(seed),
            n: 0,
            days,
        }
    }

    pub fn event(&mut self, viewer: &str, day: &str) -> Ev {
        self.n += 1;
        let rng = &mut self.rng;
        let (h, m) = (rng.random_range(0..24), rng.random_range(0..60));
        Ev {
            id: format!("e{:04}-{}", self.n, token(rng, 8)),
            at: format!("{day}T{h:02}:{m:02}:{:02}Z", rng.random_range(0..60)),
            viewer: viewer.to_owned(),
            content: format!("c{}", rng.random_range(1..=6)),
            device: ["tv", "mobile", "web", "tablet"][rng.random_range(0..4)],
            country: ["BR", "AR"][rng.random_range(0..2)],
            watch: rng.random_range(0..7200),
            bitrate: rng.random_bool(0.7).then(|| rng.random_range(300..9000)),
            buffering: rng.random_bool(0.5).then(|| rng.random_range(0..5000)),
            completed: rng.random_bool(0.4),
        }
    }

    /// `n` events of random viewers, plus one per day for each of `always`.
    pub fn batch(&mut self, viewers: &[String], always: &[&String], n: usize) -> Vec<Ev> {
        let mut out = Vec::new();
        for day in self.days {
            for v in always {
                out.push(self.event(v, day));
            }
        }
        for _ in 0..n {
            let v = viewers[self.rng.random_range(0..viewers.len())].clone();
            let day = self.days[self.rng.random_range(0..2)];
            out.push(self.event(&v, day));
        }
        out
    }
}

/// HMAC-SHA-256 from its definition (RFC 2104), independent of the pipeline's pseudonymizer.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The ids of `ids` that occur in `text`.
pub fn found_in<'a>(text: &str, ids: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    ids.into_iter()
        .filter(|id| text.contains(id.as_str()))
        .cloned()
        .collect()
}
