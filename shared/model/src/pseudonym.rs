//! Keyed pseudonymization of viewer ids (HMAC-SHA-256).
//!
//! A raw viewer id is personal data; silver, gold, logs and exports only ever see its pseudonym,
//! `HMAC-SHA-256(key, viewer_id)`. Without the key a pseudonym cannot be linked back to a person by
//! guessing ids, and the same viewer always maps to the same pseudonym, so deduplication and the
//! unique-viewer sketches keep working. The key comes from configuration (a secret on AWS).
//!
//! Keys rotate by day: a [`KeyRing`] says from which day (UTC, of the event's `occurred_at`) each
//! key pseudonymizes. Every event of a day is pseudonymized with the same key whenever it
//! arrives, so a day's and an hour's unique viewers stay exact across a rotation (a late event
//! of a day before the rotation still gets the old key); deduplication is by `event_id` and does
//! not involve the key. Erasure looks a viewer up under every key of the ring. Only ranges that
//! span the rotation day count a viewer seen on both sides twice, because the two pseudonyms
//! cannot be linked without the raw id.
//!
//! ```
//! use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
//! let key = PseudonymKey::from_hex("k1", &"ab".repeat(32)).unwrap();
//! let p = Pseudonymizer::new(&key);
//! let at = 1_795_456_800_000; // occurred_at, ms since the epoch
//! assert_eq!(p.pseudonymize("viewer-1", at), p.pseudonymize("viewer-1", at));
//! assert_ne!(p.pseudonymize("viewer-1", at).to_hex(), "viewer-1");
//! ```

use std::fmt;

use chrono::NaiveDate;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the pseudonymization key is not valid hex")]
    NotHex,
    #[error("the pseudonymization key has {0} bytes; at least {MIN_KEY_BYTES} are required")]
    TooShort(usize),
    #[error("the pseudonymization key id must be 1..=16 characters of [A-Za-z0-9_-]")]
    BadId,
    #[error("the key ring is not valid: {0}")]
    BadRing(String),
}

/// A secret HMAC key with a short public id (so rotation can be traced). Its `Debug` never prints
/// the key.
#[derive(Clone)]
pub struct PseudonymKey {
    id: String,
    secret: Vec<u8>,
}

impl PseudonymKey {
    /// A key from its hex form (64 hex digits or more).
    pub fn from_hex(id: &str, hex_secret: &str) -> Result<Self, KeyError> {
        let secret = hex::decode(hex_secret.trim()).map_err(|_| KeyError::NotHex)?;
        Self::from_bytes(id, secret)
    }

    pub fn from_bytes(id: &str, secret: Vec<u8>) -> Result<Self, KeyError> {
        if id.is_empty()
            || id.len() > 16
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(KeyError::BadId);
        }
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(secret.len()));
        }
        Ok(PseudonymKey {
            id: id.to_owned(),
            secret,
        })
    }

    /// A key as configuration holds it: hex (64 digits or more), or any text of at least 32
    /// bytes used as bytes (as Secrets Manager generates secrets).
    pub fn from_text(id: &str, text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() >= 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Self::from_hex(id, text)
        } else {
            Self::from_bytes(id, text.as_bytes().to_vec())
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The keys of a deployment and the first day each one pseudonymizes (see the module's
/// documentation). The oldest key has no first day: it covers everything before the next one.
#[derive(Clone, Debug)]
pub struct KeyRing {
    /// By first day, oldest first; the first entry's day is `NaiveDate::MIN`.
    keys: Vec<(NaiveDate, PseudonymKey)>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    key_id: String,
    key: String,
    #[serde(default)]
    from: Option<NaiveDate>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RingText {
    Ring { keys: Vec<KeyEntry> },
    One(KeyEntry),
}

impl KeyRing {
    /// One key for every day.
    pub fn single(key: PseudonymKey) -> Self {
        KeyRing {
            keys: vec![(NaiveDate::MIN, key)],
        }
    }

    /// Keys with their first days; exactly one (the oldest) has none.
    pub fn new(keys: Vec<(Option<NaiveDate>, PseudonymKey)>) -> Result<Self, KeyError> {
        let bad = |m: &str| KeyError::BadRing(m.to_owned());
        if keys.iter().filter(|(from, _)| from.is_none()).count() != 1 {
            return Err(bad(
                "exactly one key (the oldest) must have no `from` day; every other key names                  the first day it pseudonymizes",
            ));
        }
        let mut keys: Vec<(NaiveDate, PseudonymKey)> = keys
            .into_iter()
            .map(|(from, k)| (from.unwrap_or(NaiveDate::MIN), k))
            .collect();
        keys.sort_by_key(|(from, _)| *from);
        if keys.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(bad("two keys start on the same day"));
        }
        let mut ids: Vec<&str> = keys.iter().map(|(_, k)| k.id()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("two keys have the same id"));
        }
        Ok(KeyRing { keys })
    }

    /// From JSON: `{"key_id": "k1", "key": "..."}` for one key, or
    /// `{"keys": [{"key_id": "k1", "key": "..."}, {"key_id": "k2", "key": "...", "from":
    /// "2027-01-01"}]}` for a rotation. Keys as in [`PseudonymKey::from_text`].
    pub fn from_json(text: &str) -> Result<Self, KeyError> {
        let parsed: RingText = serde_json::from_str(text).map_err(|_| {
            KeyError::BadRing(
                "expected JSON {\"key_id\", \"key\"} or {\"keys\": [{\"key_id\", \"key\", \"from\"?}, ...]}"
                    .to_owned(),
            )
        })?;
        let entries = match parsed {
            RingText::Ring { keys } => keys,
            RingText::One(one) => vec![one],
        };
        let keys = entries
            .into_iter()
            .map(|e| Ok((e.from, PseudonymKey::from_text(&e.key_id, &e.key)?)))
            .collect::<Result<Vec<_>, KeyError>>()?;
        Self::new(keys)
    }

    /// The ids of the keys and their first days, oldest first (`None` for the oldest).
    pub fn schedule(&self) -> Vec<(&str, Option<NaiveDate>)> {
        self.keys
            .iter()
            .map(|(from, k)| (k.id(), (*from != NaiveDate::MIN).then_some(*from)))
            .collect()
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PseudonymKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A viewer's pseudonym: the 32-byte HMAC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym([u8; 32]);

impl Pseudonym {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Pseudonym(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Pseudonym(out))
    }

    /// The 64-bit hash the unique-viewer sketch consumes: the HMAC output is already uniform.
    pub fn sketch_hash(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(first)
    }
}

impl serde::Serialize for Pseudonym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Pseudonym {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Pseudonym::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("not a 64-digit hex pseudonym"))
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pseudonym({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Computes pseudonyms with the key of each event's day. Cheap to clone; keying is done once.
#[derive(Clone)]
pub struct Pseudonymizer {
    /// (first millisecond, key id, keyed HMAC), oldest first.
    keys: Vec<(i64, String, HmacSha256)>,
}

impl Pseudonymizer {
    /// One key for every event.
    pub fn new(key: &PseudonymKey) -> Self {
        Self::from_ring(&KeyRing::single(key.clone()))
    }

    /// Each event pseudonymized with the key of its day.
    pub fn from_ring(ring: &KeyRing) -> Self {
        let keys = ring
            .keys
            .iter()
            .map(|(from, key)| {
                let from_ms = if *from == NaiveDate::MIN {
                    i64::MIN
                } else {
                    from.and_time(chrono::NaiveTime::MIN)
                        .and_utc()
                        .timestamp_millis()
                };
                // HMAC accepts keys of any length, so this cannot fail.
                let keyed = <HmacSha256 as Mac>::new_from_slice(&key.secret)
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
                (from_ms, key.id.clone(), keyed)
            })
            .collect();
        Pseudonymizer { keys }
    }

    /// The index of the key of an event that occurred at `occurred_at_ms`.
    fn index_at(&self, occurred_at_ms: i64) -> usize {
        self.keys
            .partition_point(|(from, _, _)| *from <= occurred_at_ms)
            .saturating_sub(1)
    }

    /// The id of the key that pseudonymizes an event that occurred at `occurred_at_ms`.
    pub fn key_id(&self, occurred_at_ms: i64) -> &str {
        &self.keys[self.index_at(occurred_at_ms)].1
    }

    /// The pseudonym of `viewer_id` in an event that occurred at `occurred_at_ms`.
    pub fn pseudonymize(&self, viewer_id: &str, occurred_at_ms: i64) -> Pseudonym {
        Self::mac(&self.keys[self.index_at(occurred_at_ms)].2, viewer_id)
    }

    /// The pseudonyms of `viewer_id` under every key (to find all of a viewer's events).
    pub fn every_pseudonym(&self, viewer_id: &str) -> Vec<Pseudonym> {
        self.keys
            .iter()
            .map(|(_, _, keyed)| Self::mac(keyed, viewer_id))
            .collect()
    }

    fn mac(keyed: &HmacSha256, viewer_id: &str) -> Pseudonym {
        let mut mac = keyed.clone();
        mac.update(viewer_id.as_bytes());
        Pseudonym(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field(
                "key_ids",
                &self.keys.iter().map(|(_, id, _)| id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_construction() {
        // HMAC-SHA-256 test case 2 of RFC 4231 uses a 4-byte key, so check against the hmac crate
        // used directly with our 32-byte key instead, plus determinism and key separation.
        let k1 = PseudonymKey::from_bytes("k1", vec![7; 32]).expect("key");
        let k2 = PseudonymKey::from_bytes("k2", vec![8; 32]).expect("key");
        let p1 = Pseudonymizer::new(&k1);
        let p2 = Pseudonymizer::new(&k2);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&[7; 32]).expect("key");
        mac.update(b"viewer-1");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(p1.pseudonymize("viewer-1", 0).as_bytes(), &expected);
        assert_ne!(
            p1.pseudonymize("viewer-1", 0),
            p2.pseudonymize("viewer-1", 0)
        );
        assert_ne!(
            p1.pseudonymize("viewer-1", 0),
            p1.pseudonymize("viewer-2", 0)
        );
    }

    #[test]
    fn keys_are_checked_and_never_printed() {
        assert_eq!(
            PseudonymKey::from_hex("k", "abcd").err(),
            Some(KeyError::TooShort(2))
        );
        assert_eq!(
            PseudonymKey::from_hex("k", "zz").err(),
            Some(KeyError::NotHex)
        );
        assert_eq!(
            PseudonymKey::from_bytes("bad id", vec![0; 32]).err(),
            Some(KeyError::BadId)
        );
        let key = PseudonymKey::from_hex("k1", &"5a".repeat(32)).expect("key");
        assert!(!format!("{key:?}").contains("5a5a"));
        let p = Pseudonymizer::new(&key).pseudonymize("v", 0);
        assert_eq!(Pseudonym::from_hex(&p.to_hex()), Some(p));
    }

    fn ms(day: &str, hour: u32) -> i64 {
        let d: NaiveDate = day.parse().expect("day");
        d.and_hms_opt(hour, 0, 0)
            .expect("time")
            .and_utc()
            .timestamp_millis()
    }

    #[test]
    fn a_ring_picks_the_key_of_the_event_day() {
        let ring = KeyRing::from_json(&format!(
            r#"{{"keys": [
                {{"key_id": "k2", "key": "{}", "from": "2027-01-01"}},
                {{"key_id": "k1", "key": "{}"}},
                {{"key_id": "k3", "key": "AbcdefghijklmnopqrstuvwxyZ0123456789", "from": "2027-06-01"}}
            ]}}"#,
            "22".repeat(32),
            "11".repeat(32)
        ))
        .expect("ring");
        let k1 = Pseudonymizer::new(&PseudonymKey::from_hex("k1", &"11".repeat(32)).expect("k1"));
        let k2 = Pseudonymizer::new(&PseudonymKey::from_hex("k2", &"22".repeat(32)).expect("k2"));
        let p = Pseudonymizer::from_ring(&ring);
        // The last hour before the rotation day keeps the old key, whenever it arrives.
        let before = ms("2026-12-31", 23);
        let after = ms("2027-01-01", 0);
        assert_eq!(p.key_id(before), "k1");
        assert_eq!(p.key_id(after), "k2");
        assert_eq!(p.key_id(ms("2027-06-01", 5)), "k3");
        assert_eq!(p.key_id(i64::MIN), "k1");
        assert_eq!(p.pseudonymize("v", before), k1.pseudonymize("v", before));
        assert_eq!(p.pseudonymize("v", after), k2.pseudonymize("v", after));
        assert_eq!(p.every_pseudonym("v").len(), 3);
        assert!(p.every_pseudonym("v").contains(&k1.pseudonymize("v", 0)));
        assert_eq!(
            ring.schedule(),
            vec![
                ("k1", None),
                ("k2", "2027-01-01".parse().ok()),
                ("k3", "2027-06-01".parse().ok())
            ]
        );
    }

    #[test]
    fn a_ring_is_checked() {
        let k = "ab".repeat(32);
        let one = KeyRing::from_json(&format!(r#"{{"key_id": "k1", "key": "{k}"}}"#)).expect("one");
        assert_eq!(one.schedule(), vec![("k1", None)]);
        for bad in [
            // No key without a first day, or two of them.
            format!(r#"{{"keys": [{{"key_id": "k1", "key": "{k}", "from": "2027-01-01"}}]}}"#),
            format!(
                r#"{{"keys": [{{"key_id": "k1", "key": "{k}"}}, {{"key_id": "k2", "key": "{k}"}}]}}"#
            ),
            // The same day twice, the same id twice.
            format!(
                r#"{{"keys": [{{"key_id": "k1", "key": "{k}"}}, {{"key_id": "k2", "key": "{k}", "from": "2027-01-01"}}, {{"key_id": "k3", "key": "{k}", "from": "2027-01-01"}}]}}"#
            ),
            format!(
                r#"{{"keys": [{{"key_id": "k1", "key": "{k}"}}, {{"key_id": "k1", "key": "{k}", "from": "2027-01-01"}}]}}"#
            ),
            // A short key, a bad date, an unknown field, not JSON.
            r#"{"key_id": "k1", "key": "short"}"#.to_owned(),
            format!(
                r#"{{"keys": [{{"key_id": "k1", "key": "{k}"}}, {{"key_id": "k2", "key": "{k}", "from": "2027-13-01"}}]}}"#
            ),
            format!(r#"{{"key_id": "k1", "key": "{k}", "form": "2027-01-01"}}"#),
            "not json".to_owned(),
        ] {
            let err = KeyRing::from_json(&bad).expect_err(&bad);
            assert!(
                !err.to_string().contains(&k),
                "the error shows the key: {err}"
            );
        }
    }
}
