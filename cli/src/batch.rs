//! `streamcube cube` (bronze files to the cube CSV) and `streamcube generate` (sample data).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use streamcube_datagen::GenConfig;
use streamcube_model::batch::{Collector, write_cube_csv};
use streamcube_model::catalog::{Catalog, read_catalog};
use streamcube_model::event::Validator;
use streamcube_model::pseudonym::Pseudonymizer;
use streamcube_model::reader::Format;

use crate::direct::DirectFile;
use crate::output::{counter, thousands};
use crate::setup::{Settings, must_exist};

#[derive(Args, Debug)]
pub struct CubeArgs {
    /// Bronze event files (CSV or JSON lines, optionally gzip).
    #[arg(long, required = true, num_args = 1..)]
    pub events: Vec<PathBuf>,
    /// The catalog CSV.
    #[arg(long)]
    pub catalog: PathBuf,
    /// Where to write the cube CSV; `-` for standard output.
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write a JSON report of rows, accepted, duplicates and rejected (by reason).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Worker threads for building the days' cubes.
    #[arg(long, default_value_t = default_threads())]
    pub threads: usize,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

pub fn cube(settings: &Settings, args: &CubeArgs) -> anyhow::Result<()> {
    let set = settings.cuboid_set()?;
    for f in args.events.iter().chain([&args.catalog]) {
        must_exist(f)?;
    }
    let catalog_file =
        File::open(&args.catalog).with_context(|| format!("opening {}", args.catalog.display()))?;
    let (entries, _, catalog_report) = read_catalog(catalog_file)
        .with_context(|| format!("reading {}", args.catalog.display()))?;
    let catalog: Catalog = entries.into_iter().collect();
    let keys = settings.keys(None)?;
    let mut collector = Collector::new(&catalog, Validator::now(), Pseudonymizer::from_ring(&keys))
        .with_workers(args.threads);
    let to_stdout = args.out.as_os_str() == "-";
    let started = std::time::Instant::now();

    // ~100 bytes a row: the progress bars are estimates that turn exact at the end.
    const ROW_BYTES: u64 = 100;
    for path in &args.events {
        let name = path.display().to_string();
        let format = Format::from_name(&name).unwrap_or(Format::Csv);
        let file = File::open(path).with_context(|| format!("opening {name}"))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        // A compressed file's size says little about its rows.
        if path.extension().is_none_or(|e| e != "gz") {
            collector.reserve(usize::try_from(size / ROW_BYTES).unwrap_or(0));
        }
        let pb = counter(size / ROW_BYTES, format!("reading {name}"));
        if to_stdout {
            pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        collector.add_input(&name, format, file, &mut |rows| pb.set_position(rows))?;
        pb.finish_and_clear();
    }
    let report = collector.report().clone();
    let days = collector.days().count() as u64;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "inputs read");

    let pb = counter(days, "building the cube");
    let stats = if to_stdout {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        let stdout = std::io::stdout();
        write_cube_csv(collector, &set, args.threads, stdout.lock(), &mut |_| {
            pb.inc(1)
        })?
    } else {
        let mut w = DirectFile::create(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let stats = write_cube_csv(collector, &set, args.threads, &mut w, &mut |_| pb.inc(1))?;
        w.flush()
            .with_context(|| format!("writing {}", args.out.display()))?;
        stats
    };
    pb.finish_and_clear();
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "cube written");

    if let Some(path) = &args.report {
        let mut json = serde_json::to_value(&report)?;
        if let Some(obj) = json.as_object_mut() {
            obj.insert("catalog".into(), serde_json::to_value(&catalog_report)?);
            obj.insert("cube".into(), serde_json::to_value(stats)?);
        }
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !to_stdout {
        eprintln!(
            "{} rows: {} accepted, {} duplicates, {} rejected; {} cells over {} days written to {}",
            thousands(report.total.rows),
            thousands(report.total.accepted),
            thousands(report.total.duplicates),
            thousands(report.total.rejected),
            thousands(stats.cells),
            stats.days,
            args.out.display()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Directory for `events.csv` and `catalog.csv`.
    #[arg(long)]
    pub out_dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// First day (UTC), default 2026-11-01.
    #[arg(long)]
    pub start: Option<chrono::NaiveDate>,
    #[arg(long, default_value_t = 200_000)]
    pub viewers: u32,
    #[arg(long, default_value_t = 5_000)]
    pub titles: u32,
    /// Deliberately invalid rows mixed in.
    #[arg(long, default_value_t = 0)]
    pub bad_rows: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write `events.csv.gz` instead of `events.csv`.
    #[arg(long)]
    pub gzip: bool,
}

impl GenerateArgs {
    pub fn config(&self) -> GenConfig {
        let mut cfg = GenConfig {
            events: self.events,
            days: self.days,
            viewers: self.viewers,
            titles: self.titles,
            bad_rows: self.bad_rows,
            seed: self.seed,
            ..GenConfig::default()
        };
        if let Some(start) = self.start {
            cfg.start = start;
        }
        cfg
    }
}

/// Writes sample events and catalog; returns the events file and the catalog file.
pub fn generate_files(
    cfg: &GenConfig,
    dir: &std::path::Path,
    gzip: bool,
    quiet: bool,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let catalog = dir.join("catalog.csv");
    streamcube_datagen::write_catalog(cfg, BufWriter::new(File::create(&catalog)?))?;
    let events = dir.join(if gzip { "events.csv.gz" } else { "events.csv" });
    let file = BufWriter::new(File::create(&events)?);
    let pb = counter(cfg.events, "generating events");
    if quiet {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        streamcube_datagen::write_events(cfg, &mut gz, |n| pb.set_position(n))?;
        gz.finish()?.flush()?;
    } else {
        streamcube_datagen::write_events(cfg, file, |n| pb.set_position(n))?;
    }
    pb.finish_and_clear();
    Ok((events, catalog))
}

pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let (events, catalog) = generate_files(&args.config(), &args.out_dir, args.gzip, false)?;
    eprintln!("wrote {} and {}", events.display(), catalog.display());
    Ok(())
}
