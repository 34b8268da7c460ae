//! A map from event ids to row numbers that keeps the ids' bytes end to end in one buffer.

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;
use twox_hash::XxHash3_64;

/// Event id -> `seq`, for the writer's recent ids (see `RecentIds` in the SQLite adapter).
///
/// A `HashMap<String, i64>` took a heap block per id: a `malloc`, a copy and later a `free` for
/// every event written, with a hash of the id each time it was looked up, added, and looked up
/// again. Here the ids sit end to end in one `String`, each entry records where its id starts
/// (it ends where the next one starts) and its `seq`, and the table holds entry numbers: an id
/// costs its bytes plus 25 bytes, no allocation of its own, and [`IdMap::clear`] keeps the
/// memory for the next round. Callers that touch an id twice hash it once ([`IdMap::hash`],
/// then the `_hashed` methods); the table hashes an id again only when it grows.
///
/// The hash is the store's ([`IdMap::hash`]): the one that keys `silver_ids` and the filter of
/// indexed ids, so that an id is hashed once for the three.
#[derive(Debug, Default)]
pub(crate) struct IdMap {
    text: String,
    entries: Vec<Entry>,
    /// Numbers of the live entries; a removed id's entry stays in `entries` until `clear`.
    table: HashTable<usize>,
    seed: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    seq: i64,
}

/// XXH3 (64 bits) of the id's UTF-8 bytes with `seed`: the key of an id in `silver_ids` (as a
/// signed integer, [`key`]). The seed is random per store, so that ids sent to collide (XXH3 is
/// not made to resist that) cannot be chosen without it.
pub(crate) fn id_hash(seed: u64, id: &str) -> u64 {
    XxHash3_64::oneshot_with_seed(seed, id.as_bytes())
}

/// A hash as SQLite stores it: the same 64 bits, read as a signed integer (the order of
/// `silver_ids`' keys is the order of these).
pub(crate) fn key(hash: u64) -> i64 {
    i64::from_ne_bytes(hash.to_ne_bytes())
}

impl IdMap {
    /// An empty map hashing with the store's `seed`.
    pub(crate) fn with_seed(seed: u64) -> Self {
        IdMap {
            seed,
            ..IdMap::default()
        }
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    pub(crate) fn hash(&self, id: &str) -> u64 {
        id_hash(self.seed, id)
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The id of entry `i`: from its start to the next entry's (entries are only ever added at
    /// the end of `text`, in order).
    fn id_of<'a>(text: &'a str, entries: &[Entry], i: usize) -> &'a str {
        let end = entries.get(i + 1).map_or(text.len(), |e| e.start);
        &text[entries[i].start..end]
    }

    /// `hash` is [`IdMap::hash`] of `id`.
    pub(crate) fn get_hashed(&self, hash: u64, id: &str) -> Option<i64> {
        let (text, entries) = (&self.text, &self.entries);
        self.table
            .find(hash, |&i| Self::id_of(text, entries, i) == id)
            .map(|&i| entries[i].seq)
    }

    /// Adds `id`, or gives it this `seq` if it is there already.
    pub(crate) fn insert(&mut self, id: &str, seq: i64) {
        self.insert_hashed(self.hash(id), id, seq);
    }

    /// `hash` is [`IdMap::hash`] of `id`.
    pub(crate) fn insert_hashed(&mut self, hash: u64, id: &str, seq: i64) {
        let Self {
            text,
            entries,
            table,
            seed,
        } = self;
        let slot = table.entry(
            hash,
            |&i| Self::id_of(text, entries, i) == id,
            |&i| id_hash(*seed, Self::id_of(text, entries, i)),
        );
        match slot {
            Slot::Occupied(o) => entries[*o.get()].seq = seq,
            Slot::Vacant(v) => {
                v.insert(entries.len());
                entries.push(Entry {
                    start: text.len(),
                    seq,
                });
                text.push_str(id);
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<i64> {
        let hash = self.hash(id);
        let (text, entries) = (&self.text, &self.entries);
        let found = self
            .table
            .find_entry(hash, |&i| Self::id_of(text, entries, i) == id)
            .ok()?;
        let (i, _) = found.remove();
        Some(self.entries[i].seq)
    }

    /// Keeps the ids whose `seq` passes `keep`.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(i64) -> bool) {
        let kept: Vec<(String, i64)> = self
            .iter()
            .filter(|&(_, seq)| keep(seq))
            .map(|(id, seq)| (id.to_owned(), seq))
            .collect();
        self.clear();
        for (id, seq) in kept {
            self.insert(&id, seq);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
        self.table.clear();
    }

    /// The ids and their `seq`, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        self.table.iter().map(|&i| {
            (
                Self::id_of(&self.text, &self.entries, i),
                self.entries[i].seq,
            )
        })
    }

    /// The keys of the ids in `silver_ids`, `(key(hash), seq)`, sorted: the order of that
    /// index, so that a pass writes each of its pages once.
    pub(crate) fn sorted_keys(&self) -> Vec<(i64, i64)> {
        let mut keys: Vec<(i64, i64)> = self
            .iter()
            .map(|(id, seq)| (key(self.hash(id)), seq))
            .collect();
        keys.sort_unstable();
        keys
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(String, i64),
        Remove(String),
        Retain(i64),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct ids, so that inserts, removes and lookups meet the same ones.
        let id = "[ab\u{e9}]{0,3}";
        prop_oneof![
            6 => (id, 0..50_i64).prop_map(|(i, s)| Op::Insert(i, s)),
            2 => id.prop_map(Op::Remove),
            1 => (0..50_i64).prop_map(Op::Retain),
            1 => Just(Op::Clear),
        ]
    }

    #[test]
    fn the_hash_is_xxh3_as_specified() {
        // XXH3_64bits of the empty input (the reference implementation's value), and of an id
        // with a seed as Python's `xxhash.xxh3_64_intdigest` gives it (the benchmark's pandas
        // job writes the same index): keys written by one process are found by any other.
        assert_eq!(id_hash(0, ""), 0x2d06_8005_38d3_94c2);
        assert_eq!(
            id_hash(
                0x9e37_79b9_7f4a_7c15,
                "0f8fad5b-d9cb-469f-a165-70867728950e"
            ),
            6_688_584_542_793_234_430
        );
        assert_ne!(id_hash(0, "a"), id_hash(1, "a"));
        assert_eq!(key(u64::MAX), -1);
        assert_eq!(key(1 << 63), i64::MIN);
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map_of_strings(ops in prop::collection::vec(op(), 0..200)) {
            let mut map = IdMap::with_seed(7);
            let mut model: HashMap<String, i64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(id, seq) => {
                        map.insert(&id, seq);
                        model.insert(id, seq);
                    }
                    Op::Remove(id) => prop_assert_eq!(map.remove(&id), model.remove(&id)),
                    Op::Retain(at) => {
                        map.retain(|seq| seq > at);
                        model.retain(|_, seq| *seq > at);
                    }
                    Op::Clear => {
                        map.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                let mut got: Vec<(String, i64)> =
                    map.iter().map(|(id, seq)| (id.to_owned(), seq)).collect();
                let mut want: Vec<(String, i64)> = model.clone().into_iter().collect();
                got.sort();
                want.sort();
                prop_assert_eq!(&got, &want);
                let mut keys: Vec<(i64, i64)> =
                    want.iter().map(|(id, seq)| (key(id_hash(7, id)), *seq)).collect();
                keys.sort_unstable();
                prop_assert_eq!(map.sorted_keys(), keys);
                for id in ["", "a", "ab", "\u{e9}b", "abb"] {
                    prop_assert_eq!(map.get_hashed(map.hash(id), id), model.get(id).copied());
                }
            }
        }
    }
}
