//! `streamcube`: the whole pipeline on one machine.
//!
//! The batch path (`cube`) turns bronze files straight into the cube CSV; the incremental path
//! (`ingest`, `consolidate`, `query`, `erase`, `serve`) runs the same services as the Lambda
//! functions on the embedded backend (SQLite and a local directory). `demo` shows it all.

mod batch;
mod demo;
mod direct;
mod local;
mod output;
mod serve;
mod setup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::setup::Settings;

#[derive(Parser, Debug)]
#[command(
    name = "streamcube",
    version,
    about = "Playback analytics: bronze files and events in, a data cube out."
)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate sample data and run ingest, consolidate and queries on it.
    Demo(demo::DemoArgs),
    /// Batch: bronze files straight to the cube CSV (no data directory involved).
    Cube(batch::CubeArgs),
    /// Land files in bronze and process them into silver (rejected rows go to the quarantine).
    Ingest(local::IngestArgs),
    /// Recompute the hour partitions that changed and publish their days.
    Consolidate(local::ConsolidateArgs),
    /// Query the cube.
    Query(local::QueryArgs),
    /// Erase a viewer's events and recompute what they touched.
    Erase {
        /// The viewer id as the client apps send it.
        viewer_id: String,
    },
    /// Serve the HTTP API on 127.0.0.1.
    Serve(serve::ServeArgs),
    /// Write deterministic sample data (events and catalog CSV).
    Generate(batch::GenerateArgs),
    /// Create the AWS backend's DynamoDB tables where missing, with the template's keys, indexes,
    /// stream and TTL: for a local AWS emulator (a deployed stack has them from `template.yaml`).
    #[cfg(feature = "aws")]
    Provision,
}

fn init_logs() {
    // Logs go to stderr, quiet unless RUST_LOG asks; they never carry raw viewer ids.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let s = &cli.settings;
    match &cli.command {
        Command::Cube(args) => batch::cube(s, args),
        Command::Generate(args) => batch::generate(args),
        Command::Demo(args) => {
            if s.backend != setup::BackendKind::Embedded {
                anyhow::bail!("the demo runs on the embedded backend only");
            }
            let (p, b) = s.embedded()?;
            demo::demo(&p, &b, args).await
        }
        Command::Ingest(args) => {
            let (p, b) = s.open().await?;
            local::ingest(&p, &b, args).await
        }
        Command::Consolidate(args) => {
            let (p, b) = s.open().await?;
            local::consolidate(&p, &b, args).await
        }
        Command::Query(args) => {
            let (p, _) = s.open().await?;
            local::query(&p, args).await
        }
        Command::Erase { viewer_id } => {
            let (p, _) = s.open().await?;
            local::erase(&p, viewer_id).await
        }
        Command::Serve(args) => {
            let (p, _) = s.open().await?;
            serve::serve(p, args).await
        }
        #[cfg(feature = "aws")]
        Command::Provision => setup::provision().await,
    }
}

/// Caps glibc's malloc at one arena per core and, with `fixed_mmap_threshold`, fixes the size
/// from which a block gets its own mapping, unless the environment tunes malloc itself. Called
/// before the process starts any other thread.
///
/// By default glibc gives a thread that finds the arenas in use one of its own, up to eight per
/// core, and an arena keeps what is freed in it for its own later use. Work here moves between
/// threads (the runtime's blocking pool runs each write on whichever thread is free), so a long
/// run spreads its allocations over many arenas, each holding its own free memory, and how much
/// depends on the threads' timing. Ingesting 10,000,000 CSV rows on 2 cores peaked at 389 to 514
/// MiB resident in four runs with the default and at 362 to 374 MiB in three with two arenas,
/// in about the same time (110 and 114 s on average; see docs/performance.md).
///
/// Blocks from 4 MiB up (a batch of rows, the writer's id map and its sorted passes) are then
/// mapped on their own and go back to the system when freed. glibc's default threshold starts
/// at 128 KiB but rises to the size of each mapped block freed, up to 32 MiB, after which such
/// blocks come from the arenas and their memory stays there: ingesting the 10,000,000-row gzip
/// file, own memory peaked at 367 MiB without the fixed threshold and 319 MiB with it (310 with
/// 1 MiB, 352 with 16 MiB), in the same time (64.0 and 63.1 s; 1 MiB cost 9 to 13%).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc(fixed_mmap_threshold: bool) {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only sets a parameter of the allocator, and this runs before the
    // process starts any other thread. A refusal (0) leaves glibc's default, which is harmless.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
        if fixed_mmap_threshold {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc(_fixed_mmap_threshold: bool) {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // For the commands that take events in for as long as their input lasts or they serve.
    // The others are short, and busier with malloc from more threads at once: with the cap the
    // batch cube took 9% longer (0.74 -> 0.81 s on 1M rows, 8 alternating runs) and a day's
    // consolidation published 6% later (8.49 -> 8.98 s, 3 alternating runs).
    // The fixed mapping threshold is measured on ingest only.
    match cli.command {
        Command::Ingest(_) => tune_malloc(true),
        Command::Serve(_) => tune_malloc(false),
        _ => {}
    }
    init_logs();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
