//! `streamcube`: the whole pipeline on one machine.
//!
//! The batch path (`cube`) turns bronze files straight into the cube CSV; the incremental path
//! (`ingest`, `consolidate`, `query`, `erase`, `serve`) runs the same services as the Lambda
//! functions on the embedded backend (SQLite and a local directory). `demo` shows it all.

mod batch;
mod demo;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
