//! The incremental pipeline on the embedded backend: `ingest`, `consolidate`, `query`, `erase`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use streamcube_model::query::{Query, first_hour};
use streamcube_pipeline::Pipeline;
use streamcube_pipeline::bronze::{ObjectOutcome, object_path};
use streamcube_pipeline::consolidate::{DayLevel, DayOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::output::{spinner, table, thousands};
use crate::setup::{Opened, must_exist};

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Event files (CSV or JSON lines, optionally gzip).
    pub files: Vec<PathBuf>,
    /// Catalog files (reference data), loaded before the events.
    #[arg(long)]
    pub catalog: Vec<PathBuf>,
}

/// Copies a local file into bronze under `key`, streaming, and returns its content version
/// (`sha256:<hex>`), so the same bytes ingested twice are recognised.
pub async fn land(bronze: &Arc<dyn ObjectStore>, file: &Path, key: &str) -> anyhow::Result<String> {
    let mut src = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let mut w = object_store::buffered::BufWriter::new(Arc::clone(bronze), object_path(key)?);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        w.write_all(&buf[..n]).await?;
    }
    w.shutdown().await?;
    Ok(format!("sha256:{}", hex::encode(hash.finalize())))
}

fn key_for(prefix: &str, file: &Path) -> String {
    let name = file
        .file_name()
        .map_or_else(|| "input".to_owned(), |n| n.to_string_lossy().into_owned());
    format!("{prefix}{name}")
}

/// Lands and processes files; returns the outcomes in order.
pub async fn ingest_files(
    pipeline: &Pipeline,
    catalogs: &[PathBuf],
    files: &[PathBuf],
    quiet: bool,
) -> anyhow::Result<Vec<ObjectOutcome>> {
    let mut outcomes = Vec::new();
    let prefix = pipeline.config.reference_prefix.clone();
    let jobs = catalogs
        .iter()
        .map(|f| (f, key_for(&prefix, f)))
        .chain(files.iter().map(|f| (f, key_for("events/", f))));
    for (file, key) in jobs {
        must_exist(file)?;
        let pb = spinner(format!("ingesting {}", file.display()));
        if quiet {
            pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let version = land(&pipeline.stores.bronze, file, &key).await?;
        let outcome = pipeline
            .process_object(&key, Some(&version))
            .await
            .with_context(|| format!("processing {}", file.display()))?;
        pb.finish_and_clear();
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

pub fn print_ingest(backend: &Opened, outcomes: &[ObjectOutcome]) {
    let rows = outcomes
        .iter()
        .map(|o| {
            let c = &o.report.counts;
            vec![
                o.report.key.clone(),
                if o.already_processed {
                    "already done".into()
                } else {
                    "processed".into()
                },
                thousands(c.rows),
                thousands(c.accepted),
                thousands(c.duplicates),
                thousands(c.rejected),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "object",
                "status",
                "rows",
                "accepted",
                "duplicates",
                "rejected"
            ],
            &[2, 3, 4, 5],
            rows
        )
    );
    let mut reasons = std::collections::BTreeMap::<String, u64>::new();
    for o in outcomes.iter().filter(|o| !o.already_processed) {
        for (k, v) in &o.report.counts.rejected_by_reason {
            *reasons.entry(k.clone()).or_default() += v;
        }
    }
    if !reasons.is_empty() {
        let rows = reasons
            .into_iter()
            .map(|(k, v)| vec![k, thousands(v)])
            .collect();
        println!("Rejected rows by reason (a row may have several):");
        println!("{}", table(&["field:reason", "rows"], &[1], rows));
    }
    for o in outcomes {
        if let Some(q) = &o.report.quarantine {
            println!("quarantine: {}", backend.lake_location(q));
        }
    }
}

pub async fn ingest(
    pipeline: &Pipeline,
    backend: &Opened,
    args: &IngestArgs,
) -> anyhow::Result<()> {
    if args.files.is_empty() && args.catalog.is_empty() {
        anyhow::bail!("nothing to ingest: give event files and/or --catalog files");
    }
    let outcomes = ingest_files(pipeline, &args.catalog, &args.files, false).await?;
    print_ingest(backend, &outcomes);
    println!("next: streamcube consolidate");
    Ok(())
}

pub fn print_consolidation(outcomes: &[DayOutcome]) -> bool {
    if outcomes.is_empty() {
        println!("nothing to consolidate: every partition is up to date");
        return true;
    }
    let mut ok = true;
    let rows = outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(s) => vec![
                o.day.to_string(),
                o.hours.len().to_string(),
                thousands(s.events),
                match s.day_level {
                    DayLevel::Build => thousands(s.day_cells),
                    DayLevel::Defer => "open day: hours only".into(),
                },
                s.generation.to_string(),
            ],
            Err(e) => {
                ok = false;
                vec![
                    o.day.to_string(),
                    o.hours.len().to_string(),
                    "failed".into(),
                    e.clone(),
                    String::new(),
                ]
            }
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "day",
                "hours recomputed",
                "events",
                "day cells",
                "generation"
            ],
            &[1, 2, 3],
            rows
        )
    );
    ok
}

#[derive(Args, Debug)]
pub struct ConsolidateArgs {
    /// Recompute every hour from this day (UTC), whatever changed: a backfill or a repair.
    /// Without it, the hours that changed since the last run (on AWS, those the silver table's
    /// stream reported: what the scheduled run of cube-consolidator would do now).
    #[arg(long, requires = "to")]
    pub from: Option<chrono::NaiveDate>,
    /// Last day of the range to recompute.
    #[arg(long, requires = "from")]
    pub to: Option<chrono::NaiveDate>,
}

pub async fn consolidate(
    pipeline: &Pipeline,
    backend: &Opened,
    args: &ConsolidateArgs,
) -> anyhow::Result<()> {
    let pb = spinner("consolidating");
    let outcomes = match (args.from, args.to, backend) {
        (Some(from), Some(to), _) => {
            if to < from || (to - from).num_days() > 366 {
                anyhow::bail!("--from must not be after --to, and the range at most 366 days");
            }
            let hours: Vec<i64> = (first_hour(from)..first_hour(to) + 24).collect();
            pipeline.consolidate_hours(&hours).await?
        }
        _ => pipeline.consolidate_pending().await?,
    };
    pb.finish_and_clear();
    if !print_consolidation(&outcomes) {
        anyhow::bail!("some days failed; their hours stay pending for the next run");
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// First day, YYYY-MM-DD.
    #[arg(long)]
    pub from: String,
    /// Last day (inclusive), YYYY-MM-DD; default: `from`.
    #[arg(long)]
    pub to: Option<String>,
    /// hour, day or total.
    #[arg(long, default_value = "day")]
    pub granularity: String,
    /// Dimensions to group by, comma-separated (country, device, genre, content_id).
    #[arg(long)]
    pub group_by: Option<String>,
    /// Filters, `dimension=value[,value...]`, repeatable.
    #[arg(long = "filter", value_name = "DIM=VALUES")]
    pub filters: Vec<String>,
    /// Measures to show, comma-separated (default: all).
    #[arg(long)]
    pub measures: Option<String>,
    /// Order by a measure, `measure[:asc|:desc]` (default descending).
    #[arg(long)]
    pub order_by: Option<String>,
    #[arg(long)]
    pub limit: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

impl QueryArgs {
    pub fn params(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut p = vec![
            ("from".to_owned(), self.from.clone()),
            (
                "to".to_owned(),
                self.to.clone().unwrap_or_else(|| self.from.clone()),
            ),
            ("granularity".to_owned(), self.granularity.clone()),
        ];
        let opt = [
            ("group_by", &self.group_by),
            ("measures", &self.measures),
            ("order_by", &self.order_by),
            ("limit", &self.limit),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                p.push((k.to_owned(), v.clone()));
            }
        }
        for f in &self.filters {
            let (k, v) = f.split_once('=').with_context(|| {
                format!("--filter `{f}`: write it as dimension=value[,value...]")
            })?;
            p.push((k.trim().to_owned(), v.to_owned()));
        }
        Ok(p)
    }
}

pub async fn query(pipeline: &Pipeline, args: &QueryArgs) -> anyhow::Result<()> {
    let q = Query::from_params(args.params()?, &pipeline.config.query_limits)?;
    let answer = pipeline.query(&q).await?;
    match args.format {
        OutputFormat::Csv => print!("{}", answer.result.to_csv()),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        OutputFormat::Table => {
            let numeric: Vec<usize> = answer
                .result
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| streamcube_model::query::Measure::from_name(c).is_some())
                .map(|(i, _)| i)
                .collect();
            let rows = answer
                .result
                .rows
                .iter()
                .map(|r| r.iter().map(ToString::to_string).collect())
                .collect();
            let header: Vec<&str> = answer.result.columns.iter().map(String::as_str).collect();
            println!("{}", table(&header, &numeric, rows));
            if answer.generations.is_empty() {
                println!(
                    "no published data in that range: run `streamcube ingest` and `streamcube consolidate` first"
                );
            }
        }
    }
    Ok(())
}

pub async fn erase(pipeline: &Pipeline, viewer_id: &str) -> anyhow::Result<()> {
    let erasure = pipeline.erase_viewer(viewer_id).await?;
    println!(
        "deleted {} silver events; recomputed {} day(s)",
        thousands(erasure.events_deleted),
        erasure.days.len()
    );
    if !erasure.days.is_empty() && !print_consolidation(&erasure.days) {
        anyhow::bail!("some days failed to recompute; run `streamcube consolidate` to finish");
    }
    Ok(())
}
