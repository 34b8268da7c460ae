//! Gold in DynamoDB: the cube table holds, per day,
//! - the manifest (`pk = day#<day>`, `sk = manifest`): which generation readers see, replaced by
//!   a conditional write on its `version` (the atomic publish);
//! - a registry of the generations written (`pk = day#<day>`, `sk = gen#<level>#<generation>`),
//!   written before their cells, so unpublished leftovers are always found and swept;
//! - the cells, as encoded blocks of at most [`BLOCK_BYTES`]
//!   (`pk = cells#<day>#<level>#<generation>#<shard>`, `sk = <cuboid>/<part>#<chunk>`, the part
//!   being the country's code + 1 in cuboids that keep the country, 000 elsewhere). The blocks of
//!   a level and generation go round-robin to [`CELL_SHARDS`] partition keys: DynamoDB takes at
//!   most 1,000 write units a second per partition, and a day's level of a few hundred MB under
//!   one key took minutes to write and as long to delete. A query reads one cuboid, or, filtered
//!   by country, only its countries' parts, with one `Query` per shard, and puts the blocks back
//!   in key order. Blocks written before the shards (one key per level and generation, `pk =
//!   cells#<day>#<level>#<generation>`) and before the split by country (`sk =
//!   <cuboid>#<chunk>`, every country in one) are still read, the latter filtered cell by cell.
//!
//! Blocks never change once written, so they are read with eventually consistent queries, at
//! half the read units of strongly consistent ones. Such a read may miss a block written moments
//! before; the reader tells by the generation's registry item, which records each part's number
//! of blocks once all of them are written ([`Written`]) and is read strongly consistent: it
//! knows every block's sort key and shard, queries only the shards that hold some, and reads
//! again strongly consistent whenever what it got is not exactly that. A generation without
//! the record (half written, or written before it) is read strongly consistent.
//!
//! Blocks are stored compressed with Zstandard (attribute `zcells`): DynamoDB bills storage,
//! writes and reads by the byte, and a day of cells shrinks about 1.56x at level 3. Blocks
//! written before (attribute `cells`) are read as they are.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use chrono::NaiveDate;
use streamcube_model::codec::{by_part, decode_cells_where, encode_cells, part_of};
use streamcube_model::cube::{Cell, Cuboid, Dim, Dims, DimsRef};
use streamcube_pipeline::ports::{
    CellSelect, DayManifest, GoldStore, Level, StoreError, StoreResult,
};

use crate::dynamo::{
    Consistency, Item, batch_write, batch_write_from, get_s, is_condition_failed, n,
    query_partition, s, store_err,
};

/// Largest encoded block per item (DynamoDB items are limited to 400 KB).
pub const BLOCK_BYTES: usize = 300_000;

/// Partition keys the cell blocks of one level and generation are spread over.
pub const CELL_SHARDS: usize = 8;

/// Zstandard level of the stored blocks: the blocks of a day of 2.4M events shrank 1.38x at
/// level 1 and 1.56x at level 3 (compressing at half the speed); in 300 KB chunks, levels 3, 6
/// and 9 gave 1.50x, 1.54x and 1.55x, the last at under half level 3's speed.
const ZSTD_LEVEL: i32 = 3;

/// Most a stored block may expand to: blocks are split at [`BLOCK_BYTES`] unless a single
/// cell is larger, and a cell is at most a few dozen KB (a dense sketch is 12 KiB).
const MAX_BLOCK_BYTES: usize = 4 * BLOCK_BYTES;

/// A block as stored.
fn compress(block: &[u8]) -> StoreResult<Vec<u8>> {
    zstd::bulk::compress(block, ZSTD_LEVEL).map_err(StoreError::backend)
}

/// A stored block's cells encoded: `zcells` decompressed, or `cells` as written before the
/// compression.
fn block_of(item: &Item) -> StoreResult<std::borrow::Cow<'_, [u8]>> {
    match (item.get("zcells"), item.get("cells")) {
        (Some(AttributeValue::B(z)), _) => {
            let size = zstd::zstd_safe::get_frame_content_size(z.as_ref())
                .ok()
                .flatten()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n <= MAX_BLOCK_BYTES)
                .ok_or_else(|| StoreError::Corrupt("a compressed cell block's size".into()))?;
            zstd::bulk::decompress(z.as_ref(), size)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| StoreError::Corrupt(format!("a compressed cell block: {e}")))
        }
        (None, Some(AttributeValue::B(raw))) => Ok(std::borrow::Cow::Borrowed(raw.as_ref())),
        _ => Err(StoreError::Corrupt("a cell block without cells".into())),
    }
}

#[derive(Clone, Debug)]
pub struct DynamoGold {
    client: Client,
    table: String,
}

fn level_code(l: Level) -> String {
    match l {
        Level::Day => "d".to_owned(),
        Level::Hour(h) => format!("h{h:02}"),
    }
}

fn level_of(code: &str) -> StoreResult<Level> {
    match code {
        "d" => Ok(Level::Day),
        h => h
            .strip_prefix('h')
            .and_then(|h| h.parse::<u8>().ok())
            .filter(|h| *h < 24)
            .map(Level::Hour)
            .ok_or_else(|| StoreError::Corrupt(format!("level `{code}`"))),
    }
}

fn day_pk(day: NaiveDate) -> String {
    format!("day#{day}")
}

/// The partition key of a level and generation's blocks before they were spread over shards.
fn cells_pk(day: NaiveDate, level: Level, generation: u64) -> String {
    format!("cells#{day}#{}#{generation}", level_code(level))
}

fn shard_pk(base: &str, shard: usize) -> String {
    format!("{base}#{shard}")
}

/// Every partition key a level and generation's blocks may be under: the shards, and the one
/// key of blocks written before them.
fn cell_pks(day: NaiveDate, level: Level, generation: u64) -> Vec<String> {
    let base = cells_pk(day, level, generation);
    let mut pks: Vec<String> = (0..CELL_SHARDS).map(|i| shard_pk(&base, i)).collect();
    pks.push(base);
    pks
}

fn gen_sk(level: Level, generation: u64) -> String {
    format!("gen#{}#{generation:020}", level_code(level))
}

/// Sort-key prefix of one part of a cuboid.
fn part_prefix(cuboid: u8, part: u16) -> String {
    format!("{cuboid:03}/{part:03}#")
}

/// The registry's attribute recording a generation's blocks once they are all written.
const WRITTEN: &str = "blocks";

/// A generation's blocks as written: each part's sort-key prefix (`<cuboid>/<part>#`) and its
/// number of blocks, in the order they were written, which puts the `i`-th block of the whole
/// level under shard `i % CELL_SHARDS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Written {
    parts: Vec<(String, usize)>,
}

impl Written {
    /// As the registry stores it: `1:` then `<prefix><blocks>` for each part, comma-separated
    /// (`1:009/001#3,009/002#1`); the version keeps it non-empty.
    fn encode(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(prefix, blocks)| format!("{prefix}{blocks}"))
            .collect();
        format!("1:{}", parts.join(","))
    }

    /// `None` for anything [`Written::encode`] did not write.
    fn decode(text: &str) -> Option<Self> {
        let body = text.strip_prefix("1:")?;
        let parts = body
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (prefix, blocks) = p.rsplit_once('#')?;
                Some((format!("{prefix}#"), blocks.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Written { parts })
    }

    /// The sort keys of the blocks that start with one of `prefixes`, by shard.
    fn expected(&self, prefixes: &[String]) -> Vec<BTreeSet<String>> {
        let mut by_shard = vec![BTreeSet::new(); CELL_SHARDS];
        let mut i = 0;
        for (prefix, blocks) in &self.parts {
            for chunk in 0..*blocks {
                let sk = format!("{prefix}{chunk:05}");
                if prefixes.iter().any(|p| sk.starts_with(p.as_str())) {
                    by_shard[i % CELL_SHARDS].insert(sk);
                }
                i += 1;
            }
        }
        by_shard
    }
}

/// Splits one part's cells into encoded blocks under [`BLOCK_BYTES`].
fn blocks(cells: &[&(Dims, Cell)]) -> Vec<Vec<u8>> {
    let whole = encode_cells(cells);
    if whole.len() <= BLOCK_BYTES || cells.len() < 2 {
        return vec![whole];
    }
    let (a, b) = cells.split_at(cells.len() / 2);
    let mut out = blocks(a);
    out.extend(blocks(b));
    out
}

fn key(pk: String, sk: String) -> Item {
    Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn put(item: Item) -> StoreResult<WriteRequest> {
    Ok(WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(StoreError::backend)?,
        )
        .build())
}

fn delete(key: Item) -> StoreResult<WriteRequest> {
    Ok(WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(StoreError::backend)?,
        )
        .build())
}

impl DynamoGold {
    /// The cells of a (day, level, generation) that `keep` accepts, read from the items whose
    /// sort keys start with one of `prefixes` (queried concurrently).
    async fn cells_decoded(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        prefixes: Vec<String>,
        keep: impl Fn(&DimsRef<'_>) -> bool,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        let mut items = self.blocks(day, level, generation, &prefixes).await?;
        // Key order, as one partition key would give them: the same cells in the same order
        // however the blocks were spread.
        let sk = |item: &Item| match item.get("sk") {
            Some(AttributeValue::S(sk)) => sk.clone(),
            _ => String::new(),
        };
        items.sort_by_cached_key(sk);
        let mut out = Vec::new();
        for item in &items {
            out.extend(
                decode_cells_where(&block_of(item)?, &keep)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        Ok(out)
    }

    pub fn new(client: Client, table: &str) -> Self {
        DynamoGold {
            client,
            table: table.to_owned(),
        }
    }

    /// Items of a partition key whose sort key starts with `prefix`, strongly consistent.
    async fn query(&self, pk: &str, prefix: &str, keys_only: bool) -> StoreResult<Vec<Item>> {
        query_partition(
            &self.client,
            &self.table,
            pk,
            prefix,
            keys_only,
            Consistency::Strong,
        )
        .await
    }

    /// What the registry records of a generation's blocks, read strongly consistent; `None`
    /// until they are all written, and for generations written before the record.
    async fn written(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
    ) -> StoreResult<Option<Written>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(day_pk(day), gen_sk(level, generation))))
            .projection_expression("#w")
            .expression_attribute_names("#w", WRITTEN)
            .consistent_read(true)
            .send()
            .await
            .map_err(store_err)?;
        Ok(match out.item.as_ref().and_then(|item| item.get(WRITTEN)) {
            Some(AttributeValue::S(text)) => {
                let written = Written::decode(text);
                if written.is_none() {
                    tracing::warn!(%day, generation, "unreadable block record; reading consistently");
                }
                written
            }
            _ => None,
        })
    }

    /// The blocks of a (day, level, generation) whose sort keys start with one of `prefixes`,
    /// in no particular order. Eventually consistent when the registry records the blocks and
    /// the reads returned exactly those; strongly consistent otherwise.
    async fn blocks(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        prefixes: &[String],
    ) -> StoreResult<Vec<Item>> {
        let pks = cell_pks(day, level, generation);
        if let Some(written) = self.written(day, level, generation).await? {
            let expected = written.expected(prefixes);
            let reads = expected.iter().enumerate().flat_map(|(shard, sks)| {
                let pk = &pks[shard];
                prefixes
                    .iter()
                    .filter(move |p| sks.iter().any(|sk| sk.starts_with(p.as_str())))
                    .map(move |p| {
                        query_partition(
                            &self.client,
                            &self.table,
                            pk,
                            p,
                            false,
                            Consistency::Eventual,
                        )
                    })
            });
            let items: Vec<Item> = futures::future::try_join_all(reads)
                .await?
                .into_iter()
                .flatten()
                .collect();
            let want: BTreeSet<&String> = expected.iter().flatten().collect();
            let got: BTreeSet<&String> = items
                .iter()
                .filter_map(|item| match item.get("sk") {
                    Some(AttributeValue::S(sk)) => Some(sk),
                    _ => None,
                })
                .collect();
            if got.len() == items.len() && got == want {
                return Ok(items);
            }
            tracing::debug!(
                %day,
                generation,
                expected = want.len(),
                got = items.len(),
                "blocks not all visible yet; reading consistently"
            );
        }
        let reads = prefixes
            .iter()
            .flat_map(|p| pks.iter().map(move |pk| self.query(pk, p, false)));
        Ok(futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Deletes every item under these partition keys.
    async fn delete_partitions(&self, pks: &[String]) -> StoreResult<()> {
        let found = futures::future::try_join_all(pks.iter().map(|pk| self.query(pk, "", true)));
        let requests = found
            .await?
            .into_iter()
            .flatten()
            .map(delete)
            .collect::<StoreResult<Vec<_>>>()?;
        batch_write(&self.client, &self.table, requests).await
    }
}

#[async_trait]
impl GoldStore for DynamoGold {
    async fn manifest(&self, day: NaiveDate) -> StoreResult<Option<DayManifest>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(day_pk(day), "manifest".into())))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_err)?;
        out.item
            .map(|item| {
                serde_json::from_str(get_s(&item, "body")?)
                    .map_err(|e| StoreError::Corrupt(format!("manifest of {day}: {e}")))
            })
            .transpose()
    }

    async fn put_cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cells: &[(Dims, Cell)],
    ) -> StoreResult<()> {
        // Registered first: if the cells are half written when this process dies, the registry
        // still lists them for the sweep.
        let mut reg = key(day_pk(day), gen_sk(level, generation));
        reg.insert("written_at".into(), n(chrono::Utc::now().timestamp()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(reg.clone()))
            .send()
            .await
            .map_err(store_err)?;
        let pks = cell_pks(day, level, generation);
        // A repeat replaces: drop what an earlier attempt left under this generation.
        self.delete_partitions(&pks).await?;
        // Blocks are encoded and compressed as the writes need them, one (cuboid, part) at a
        // time: holding a level's compressed blocks took 1.7 GB for a day at 100M events.
        // Round-robin over the shards, so that every batch of writes spans them all.
        let mut written = Written::default();
        let (mut parts, mut made) = (by_part(cells).into_iter(), 0);
        let mut pending = Vec::<(String, Vec<u8>)>::new().into_iter();
        let (pks, written_parts) = (&pks, &mut written.parts);
        let requests = std::iter::from_fn(move || {
            loop {
                if let Some((sk, block)) = pending.next() {
                    let mut item = key(pks[made % CELL_SHARDS].clone(), sk);
                    made += 1;
                    return Some(compress(&block).and_then(|z| {
                        item.insert("zcells".into(), AttributeValue::B(Blob::new(z)));
                        put(item)
                    }));
                }
                let ((cuboid, part), cells) = parts.next()?;
                let prefix = part_prefix(cuboid, part);
                let blocks = blocks(&cells);
                written_parts.push((prefix.clone(), blocks.len()));
                pending = blocks
                    .into_iter()
                    .enumerate()
                    .map(|(chunk, block)| (format!("{prefix}{chunk:05}"), block))
                    .collect::<Vec<_>>()
                    .into_iter();
            }
        });
        batch_write_from(&self.client, &self.table, requests).await?;
        // Every block is written: readers may now read them eventually consistent.
        reg.insert(WRITTEN.into(), s(written.encode()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(reg))
            .send()
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn publish(&self, manifest: &DayManifest, expected_version: u64) -> StoreResult<()> {
        let day = manifest
            .day
            .ok_or_else(|| StoreError::Corrupt("a manifest without a day".into()))?;
        let body =
            serde_json::to_string(manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut item = key(day_pk(day), "manifest".into());
        item.insert("version".into(), n(manifest.version));
        item.insert("body".into(), s(body));
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        put = if expected_version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("#v = :expected")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":expected", n(expected_version))
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::Conflict),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn cells(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Option<Cuboid>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        // `009` starts both `009/...` (split) and `009#...` (written before the split).
        let prefix = cuboid
            .map(|c| format!("{:03}", c.bits()))
            .unwrap_or_default();
        self.cells_decoded(day, level, generation, vec![prefix], |_| true)
            .await
    }

    async fn cells_where(
        &self,
        day: NaiveDate,
        level: Level,
        generation: u64,
        cuboid: Cuboid,
        select: &CellSelect<'_>,
    ) -> StoreResult<Vec<(Dims, Cell)>> {
        let bits = cuboid.bits();
        let prefixes = match &select.countries {
            Some(countries) if cuboid.has(Dim::Country) => {
                let mut parts: Vec<u16> = countries.iter().map(|c| part_of(Some(*c))).collect();
                parts.sort_unstable();
                parts.dedup();
                // The blocks written before the split, then the countries' parts.
                std::iter::once(format!("{bits:03}#"))
                    .chain(parts.into_iter().map(|p| part_prefix(bits, p)))
                    .collect()
            }
            _ => vec![format!("{bits:03}")],
        };
        self.cells_decoded(day, level, generation, prefixes, select.keep)
            .await
    }

    async fn stale_generations(
        &self,
        day: NaiveDate,
        keep: &[(Level, u64)],
    ) -> StoreResult<Vec<(Level, u64)>> {
        let mut out = Vec::new();
        for item in self.query(&day_pk(day), "gen#", true).await? {
            let sk = get_s(&item, "sk")?;
            let mut parts = sk.splitn(3, '#').skip(1);
            let (Some(level), Some(generation)) = (parts.next(), parts.next()) else {
                return Err(StoreError::Corrupt(format!("registry key `{sk}`")));
            };
            let found = (
                level_of(level)?,
                generation
                    .parse::<u64>()
                    .map_err(|_| StoreError::Corrupt(format!("registry key `{sk}`")))?,
            );
            if !keep.contains(&found) {
                out.push(found);
            }
        }
        Ok(out)
    }

    async fn delete_cells(&self, day: NaiveDate, level: Level, generation: u64) -> StoreResult<()> {
        self.delete_partitions(&cell_pks(day, level, generation))
            .await?;
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(day_pk(day), gen_sk(level, generation))))
            .send()
            .await
            .map_err(store_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written() -> Written {
        Written {
            parts: vec![
                ("009/001#".into(), 3),
                ("009/002#".into(), 1),
                ("012/000#".into(), 9),
            ],
        }
    }

    #[test]
    fn blocks_are_stored_compressed_and_read_back() {
        let block: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i / 7).to_le_bytes())
            .collect();
        let stored = compress(&block).expect("compressed");
        assert!(stored.len() * 4 < block.len(), "{} bytes", stored.len());
        let cut = stored[..stored.len() / 2].to_vec();
        let item = Item::from([("zcells".to_owned(), AttributeValue::B(Blob::new(stored)))]);
        assert_eq!(block_of(&item).expect("read").as_ref(), block.as_slice());
        // Blocks written before the compression are read as they are.
        let item = Item::from([(
            "cells".to_owned(),
            AttributeValue::B(Blob::new(block.clone())),
        )]);
        assert_eq!(block_of(&item).expect("read").as_ref(), block.as_slice());
        // Damaged or oversized blocks are errors, not panics or huge allocations.
        let bomb = compress(&vec![0u8; MAX_BLOCK_BYTES + 1]).expect("compressed");
        for bad in [b"not zstd".to_vec(), cut, bomb] {
            let item = Item::from([("zcells".to_owned(), AttributeValue::B(Blob::new(bad)))]);
            assert!(matches!(block_of(&item), Err(StoreError::Corrupt(_))));
        }
        assert!(matches!(
            block_of(&Item::new()),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn the_record_reads_back_as_written() {
        for w in [written(), Written::default()] {
            assert_eq!(Written::decode(&w.encode()), Some(w));
        }
        assert_eq!(written().encode(), "1:009/001#3,009/002#1,012/000#9");
        for bad in ["", "009/001#3", "1:009/001", "1:009/001#x", "2:009/001#3"] {
            assert_eq!(Written::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn blocks_are_expected_on_the_shards_they_were_written_to() {
        let all = written().expected(&[String::new()]);
        assert_eq!(all.iter().map(BTreeSet::len).sum::<usize>(), 13);
        // Written in order, round-robin: the 4th block (009/002's only one) went to shard 3,
        // and 012/000's nine blocks to shards 4, 5, 6, 7, 0, 1, 2, 3, 4.
        assert!(all[3].contains("009/002#00000"));
        assert!(all[0].contains("009/001#00000") && all[0].contains("012/000#00004"));
        assert!(all[4].contains("012/000#00000") && all[4].contains("012/000#00008"));
        let part = written().expected(&["009/002#".into()]);
        let found: Vec<(usize, &String)> = part
            .iter()
            .enumerate()
            .flat_map(|(shard, sks)| sks.iter().map(move |sk| (shard, sk)))
            .collect();
        assert_eq!(found, vec![(3, &"009/002#00000".to_owned())]);
        // Blocks older than the split by country (`009#...`) are never in a record.
        let old = written().expected(&["009#".into()]);
        assert!(old.iter().all(BTreeSet::is_empty));
        let cuboid = written().expected(&["009".into()]);
        assert_eq!(cuboid.iter().map(BTreeSet::len).sum::<usize>(), 4);
    }
}
