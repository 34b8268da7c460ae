//! A Bloom filter of the event ids in silver's id index.
//!
//! Nearly every id a bronze file brings is new, and finding that out in `silver_ids` is a
//! B-tree descent per id: at 10,000,000 rows the index no longer fits the page cache, and those
//! lookups took 33 of a 78-second ingest (measured by leaving them out). The filter answers
//! "certainly not indexed" for all but about 1% of new ids from memory; the rest, and every id
//! that is indexed, are still looked up, so a false positive costs a lookup and never a wrong
//! answer.

use fastbloom::BloomFilter;

/// Bits per id the filter is sized for, and the hashes per id: 3 hashes at 12 bits give about
/// 1% false positives when full (7 hashes at 10 bits would too, but every insert touches a
/// random cache line per hash).
const BITS_PER_ID: usize = 12;
const HASHES: u32 = 3;

/// The ids of silver's rows with `seq <= covers`, as hashes ([`crate::idmap::IdMap::hash`]),
/// and maybe ids of rows since deleted.
#[derive(Debug)]
pub(crate) struct IdFilter {
    bloom: BloomFilter,
    capacity: usize,
    items: usize,
    /// Every row of silver with `seq <= covers` has its id's hash in the filter.
    pub(crate) covers: i64,
}

impl IdFilter {
    /// An empty filter sized for `capacity` ids, covering the rows through `covers` once the
    /// caller has added them.
    pub(crate) fn new(capacity: usize, covers: i64) -> Self {
        let capacity = capacity.max(1);
        IdFilter {
            bloom: BloomFilter::with_num_bits(capacity.saturating_mul(BITS_PER_ID)).hashes(HASHES),
            capacity,
            items: 0,
            covers,
        }
    }

    pub(crate) fn insert(&mut self, hash: u64) {
        self.bloom.insert_hash(hash);
        self.items += 1;
    }

    /// False when no id with this hash was inserted.
    pub(crate) fn may_contain(&self, hash: u64) -> bool {
        self.bloom.contains_hash(hash)
    }

    /// More ids than it was sized for: its false positives grow past 1%.
    pub(crate) fn is_full(&self) -> bool {
        self.items > self.capacity
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use foldhash::fast::RandomState;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn inserted_ids_are_always_found_and_few_others_are() {
        let hasher = RandomState::default();
        let mut filter = IdFilter::new(100_000, 0);
        for i in 0..100_000 {
            filter.insert(hasher.hash_one(format!("in-{i}")));
        }
        assert!(!filter.is_full());
        for i in 0..100_000 {
            assert!(filter.may_contain(hasher.hash_one(format!("in-{i}"))));
        }
        let false_positives = (0..100_000)
            .filter(|i| filter.may_contain(hasher.hash_one(format!("out-{i}"))))
            .count();
        // About 1% when full; 2% leaves room for the hash's luck.
        assert!(false_positives < 2_000, "{false_positives} false positives");
        filter.insert(hasher.hash_one("one more"));
        assert!(filter.is_full());
    }
}
