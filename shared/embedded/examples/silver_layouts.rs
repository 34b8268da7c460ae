//! What writing silver costs in SQLite, by layout: the bronze benchmark's goal (20x the pandas
//! job) needs a layout several times cheaper to write than a row per event, and this measures
//! the candidates side by side, on the storage alone (no reading, validation or
//! pseudonymization, no lookups: a new store).
//!
//! - `rows`: silver as `sqlite.rs` wrote it up to schema 6: a row per event in `silver_events`
//!   with its hour index, and the ids added to `silver_ids` (text key) in sorted passes of
//!   250,000; batches of 100,000 events, one transaction each.
//! - `rows-no-ids`: the same without the id passes, to show their share.
//! - `rows-hashed-ids`: the same with the id index keyed by a 64-bit hash of the id and the seq
//!   (`WITHOUT ROWID`, 16 bytes a key instead of some 45) instead of the id's text: the layout
//!   of schema 7, in use (the store's hash is XXH3; which 64-bit hash changes nothing here).
//! - `blocks`: a batch's events grouped by hour, each group one row holding the events encoded
//!   end to end (`silver_blocks`, indexed by hour), and the ids as sorted runs of (64-bit hash,
//!   seq) pairs written 4,096 to a row (`silver_id_runs`), one run per 250,000 ids.
//!
//! The same generated events (seeded) go to every layout, through the same pragmas as
//! `SqliteStore` (WAL, `synchronous = NORMAL`, 64 MiB cache, 1 GiB memory map), each into a new
//! database file, timed from the first transaction to a passive checkpoint.
//!
//! `cargo run --release -p streamcube-embedded --example silver_layouts -- [EVENTS] [DIR]`
//! (default 1,000,000 events, files in the system's temporary directory, removed after).

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, params};

const BATCH: usize = 100_000;
const ID_PASS: usize = 250_000;
const RUN_CHUNK: usize = 4_096;
const HOURS: i64 = 168;

struct Event {
    id: String,
    hour: i64,
    at_ms: i64,
    viewer: [u8; 32],
    content_id: String,
    device: &'static str,
    country: &'static str,
    watch_seconds: u32,
    bitrate_kbps: u32,
    buffering_ms: u32,
    completed: bool,
    line: u32,
}

fn events(n: usize) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(42);
    let devices = ["tv", "mobile", "web", "tablet"];
    let countries = ["BR", "PT", "US", "MX", "AR"];
    (0..n)
        .map(|i| {
            let h = format!("{:032x}", rng.random::<u128>());
            let mut viewer = [0u8; 32];
            rng.fill(&mut viewer[..]);
            let hour = 491_000 + rng.random_range(0..HOURS);
            Event {
                id: format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                ),
                hour,
                at_ms: hour * 3_600_000 + rng.random_range(0..3_600_000),
                viewer,
                content_id: format!("c{:05}", rng.random_range(0..5_000)),
                device: devices[i % devices.len()],
                country: countries[i % countries.len()],
                watch_seconds: rng.random_range(0..7_200),
                bitrate_kbps: 3_000,
                buffering_ms: 120,
                completed: i % 3 == 0,
                line: u32::try_from(i + 2).unwrap_or(u32::MAX),
            }
        })
        .collect()
}

/// Removes the database file and its log, if there.
fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    remove(path);
    let c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "cache_size", -65_536)?;
    c.pragma_update(None, "mmap_size", 1_i64 << 30)?;
    Ok(c)
}

fn seq(batch: usize, i: usize) -> i64 {
    i64::try_from(batch * BATCH + i + 1).unwrap_or(i64::MAX)
}

/// How the row layout indexes the ids.
#[derive(Clone, Copy, PartialEq)]
enum Ids {
    None,
    /// `silver_ids` as schema 6 had it: the id's text as the key.
    Text,
    /// Keyed by a 64-bit hash of the id and the seq (a lookup would compare the row's id).
    Hashed,
}

fn rows(c: &Connection, events: &[Event], ids: Ids) -> rusqlite::Result<()> {
    if ids == Ids::Hashed {
        c.execute_batch(
            "CREATE TABLE silver_hashed_ids (hash INTEGER NOT NULL, seq INTEGER NOT NULL,
                 PRIMARY KEY (hash, seq)) WITHOUT ROWID;",
        )?;
    }
    let hasher = foldhash::quality::FixedState::with_seed(7);
    c.execute_batch(
        "CREATE TABLE silver_events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL,
             hour INTEGER NOT NULL, occurred_at_ms INTEGER NOT NULL, viewer BLOB NOT NULL,
             content_id TEXT NOT NULL, device TEXT NOT NULL, country TEXT NOT NULL,
             watch_seconds INTEGER NOT NULL, bitrate_kbps INTEGER, buffering_ms INTEGER,
             completed INTEGER NOT NULL, origin TEXT NOT NULL, origin_file INTEGER,
             origin_line INTEGER);
         CREATE INDEX silver_by_hour ON silver_events(hour);
         CREATE TABLE silver_ids (event_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;",
    )?;
    let mut pending: Vec<(&str, i64)> = Vec::new();
    let mut hashed: Vec<(i64, i64)> = Vec::new();
    for (b, batch) in events.chunks(BATCH).enumerate() {
        let tx = c.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO silver_events VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, '', 1, ?13)",
            )?;
            for (i, e) in batch.iter().enumerate() {
                let s = seq(b, i);
                insert.execute(params![
                    s,
                    e.id,
                    e.hour,
                    e.at_ms,
                    &e.viewer[..],
                    e.content_id,
                    e.device,
                    e.country,
                    e.watch_seconds,
                    e.bitrate_kbps,
                    e.buffering_ms,
                    e.completed,
                    e.line
                ])?;
                match ids {
                    Ids::None => {}
                    Ids::Text => pending.push((e.id.as_str(), s)),
                    Ids::Hashed => {
                        let h = hasher.hash_one(e.id.as_bytes());
                        hashed.push((i64::from_le_bytes(h.to_le_bytes()), s));
                    }
                }
            }
            if pending.len() >= ID_PASS {
                pending.sort_unstable();
                let mut ids = tx.prepare_cached("INSERT INTO silver_ids VALUES (?1, ?2)")?;
                for (id, s) in pending.drain(..) {
                    ids.execute(params![id, s])?;
                }
            }
            if hashed.len() >= ID_PASS {
                hashed.sort_unstable();
                let mut ids = tx.prepare_cached("INSERT INTO silver_hashed_ids VALUES (?1, ?2)")?;
                for (h, s) in hashed.drain(..) {
                    ids.execute(params![h, s])?;
                }
            }
        }
        tx.commit()?;
    }
    Ok(())
}

fn encode(e: &Event, seq: i64, out: &mut Vec<u8>) {
    let text = |out: &mut Vec<u8>, s: &str| {
        out.push(u8::try_from(s.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(s.as_bytes());
    };
    out.extend_from_slice(&seq.to_le_bytes());
    text(out, &e.id);
    out.extend_from_slice(&e.at_ms.to_le_bytes());
    out.extend_from_slice(&e.viewer);
    text(out, &e.content_id);
    text(out, e.device);
    out.extend_from_slice(e.country.as_bytes());
    for v in [e.watch_seconds, e.bitrate_kbps, e.buffering_ms, e.line] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(u8::from(e.completed));
}

/// Returns the seconds spent encoding and sorting, out of the whole.
fn blocks(c: &Connection, events: &[Event]) -> rusqlite::Result<f64> {
    c.execute_batch(
        "CREATE TABLE silver_blocks (block INTEGER PRIMARY KEY, hour INTEGER NOT NULL,
             first_seq INTEGER NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL);
         CREATE INDEX silver_blocks_by_hour ON silver_blocks(hour);
         CREATE TABLE silver_id_runs (run INTEGER NOT NULL, chunk INTEGER NOT NULL,
             first_hash INTEGER NOT NULL, data BLOB NOT NULL,
             PRIMARY KEY (run, chunk)) WITHOUT ROWID;",
    )?;
    let hasher = foldhash::quality::FixedState::with_seed(7);
    let mut pending: Vec<(u64, i64)> = Vec::new();
    let mut run = 0_i64;
    let mut cpu = 0.0;
    for (b, batch) in events.chunks(BATCH).enumerate() {
        let started = Instant::now();
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&i| batch[i].hour);
        let mut encoded: Vec<(i64, i64, Vec<u8>)> = Vec::new();
        for group in order.chunk_by(|&x, &y| batch[x].hour == batch[y].hour) {
            let mut data = Vec::with_capacity(group.len() * 128);
            for &i in group {
                encode(&batch[i], seq(b, i), &mut data);
                pending.push((hasher.hash_one(batch[i].id.as_bytes()), seq(b, i)));
            }
            let n = i64::try_from(group.len()).unwrap_or(i64::MAX);
            encoded.push((batch[group[0]].hour, n, data));
        }
        let run_now = pending.len() >= ID_PASS;
        if run_now {
            pending.sort_unstable();
        }
        cpu += started.elapsed().as_secs_f64();
        let tx = c.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO silver_blocks (hour, first_seq, n, data) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (hour, n, data) in &encoded {
                insert.execute(params![hour, seq(b, 0), n, data])?;
            }
            if run_now {
                run += 1;
                let mut runs =
                    tx.prepare_cached("INSERT INTO silver_id_runs VALUES (?1, ?2, ?3, ?4)")?;
                for (k, chunk) in pending.chunks(RUN_CHUNK).enumerate() {
                    let mut data = Vec::with_capacity(chunk.len() * 16);
                    for (hash, s) in chunk {
                        data.extend_from_slice(&hash.to_le_bytes());
                        data.extend_from_slice(&s.to_le_bytes());
                    }
                    let first = i64::from_le_bytes(chunk[0].0.to_le_bytes());
                    runs.execute(params![
                        run,
                        i64::try_from(k).unwrap_or(i64::MAX),
                        first,
                        data
                    ])?;
                }
                pending.clear();
            }
        }
        tx.commit()?;
    }
    Ok(cpu)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = args.next().map_or_else(std::env::temp_dir, PathBuf::from);
    let events = events(n);
    println!("{n} events over {HOURS} hours, batches of {BATCH}");
    for layout in ["rows", "rows-no-ids", "rows-hashed-ids", "blocks"] {
        let path = dir.join(format!("silver-layout-{layout}.db"));
        let c = open(&path)?;
        let started = Instant::now();
        let cpu = match layout {
            "rows" => rows(&c, &events, Ids::Text).map(|()| None)?,
            "rows-no-ids" => rows(&c, &events, Ids::None).map(|()| None)?,
            "rows-hashed-ids" => rows(&c, &events, Ids::Hashed).map(|()| None)?,
            _ => Some(blocks(&c, &events)?),
        };
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        let secs = started.elapsed().as_secs_f64();
        drop(c);
        let mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
        let of_which =
            cpu.map_or_else(String::new, |s| format!(" (encoding and sorting {s:.2} s)"));
        println!("{layout:15} {secs:6.2} s{of_which}, {mb:.0} MB");
        remove(&path);
    }
    Ok(())
}
