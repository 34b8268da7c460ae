//! A map from event ids to row numbers that keeps the ids' bytes end to end in one buffer.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;

/// Event id -> `seq`, for the writer's recent ids (see `RecentIds` in the SQLite adapter).
///
/// A `HashMap<String, i64>` took a heap block per id: a `malloc`, a copy and later a `free` for
/// every event written, with a hash of the id each time it was looked up, added, and looked up
/// again. Here the ids sit end to end in one `String`, each entry records where its id starts
/// (it ends where the next one starts) and its `seq`, and the table holds entry numbers: an id
/// costs its bytes plus 25 bytes, no allocation of its own, and [`IdMap::clear`] keeps the
/// memory for the next round. Callers that touch an id twice hash it once ([`IdMap::hash`],
/// then the `_hashed` methods); the table hashes an id again only when it grows.
#[derive(Debug, Default)]
pub(crate) struct IdMap {
    text: String,
    entries: Vec<Entry>,
    /// Numbers of the live entries; a removed id's entry stays in `entries` until `clear`.
    table: HashTable<usize>,
    hasher: RandomState,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    seq: i64,
}

impl IdMap {
    pub(crate) fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
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
            hasher,
        } = self;
        let slot = table.entry(
            hash,
            |&i| Self::id_of(text, entries, i) == id,
            |&i| hasher.hash_one(Self::id_of(text, entries, i)),
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

    /// Calls `f` with every id and its `seq` in the ids' byte order. `prefix` must order ids
    /// as their bytes do wherever it differs (the first bytes of an id as a number, say): the
    /// sort compares it first, and the ids themselves only where it ties. The order is sorted
    /// as 16 bytes per id, not a copy of each id's text.
    pub(crate) fn for_each_sorted<E>(
        &self,
        prefix: impl Fn(&str) -> u64,
        mut f: impl FnMut(&str, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        let (text, entries) = (&self.text, &self.entries);
        let mut order: Vec<(u64, usize)> = self
            .table
            .iter()
            .map(|&i| (prefix(Self::id_of(text, entries, i)), i))
            .collect();
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| Self::id_of(text, entries, a.1).cmp(Self::id_of(text, entries, b.1)))
        });
        for (_, i) in order {
            f(Self::id_of(text, entries, i), entries[i].seq)?;
        }
        Ok(())
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

    proptest! {
        #[test]
        fn behaves_like_a_hash_map_of_strings(ops in prop::collection::vec(op(), 0..200)) {
            let mut map = IdMap::default();
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
                let mut walked: Vec<(String, i64)> = Vec::new();
                // A coarse prefix (the first byte), so that ties are settled by the ids.
                let first = |id: &str| u64::from(id.as_bytes().first().copied().unwrap_or(0));
                map.for_each_sorted(first, |id, seq| {
                    walked.push((id.to_owned(), seq));
                    Ok::<(), ()>(())
                })
                .map_err(|()| TestCaseError::fail("the walk failed"))?;
                prop_assert_eq!(&walked, &want);
                for id in ["", "a", "ab", "\u{e9}b", "abb"] {
                    prop_assert_eq!(map.get_hashed(map.hash(id), id), model.get(id).copied());
                }
            }
        }
    }
}
