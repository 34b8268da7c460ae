//! `streamcube-load`: sends batches of playback events to `streamcube serve` (or any deployment
//! of `POST /v1/events`) and checks that every event was accepted exactly once.
//!
//! Exit status: 0 when every check holds, 1 when one fails, 2 when the run could not be made.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use clap::Parser;
use streamcube_load::workload::MAX_BATCH;
use streamcube_load::{BodyFormat, IdStyle, RunConfig, Summary, Workload, WorkloadConfig};
use streamcube_model::event::Country;

#[derive(Parser, Debug)]
#[command(
    name = "streamcube-load",
    version,
    about = "Load generator for `streamcube serve`: POST /v1/events in batches, with resends, and the accepted/duplicates check."
)]
struct Args {
    /// Address of the server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Events to send, resends included (the run stops earlier if --duration runs out).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// No batch is started after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Events per request (the API takes at most 500).
    #[arg(long, default_value_t = MAX_BATCH)]
    batch_size: usize,
    /// Concurrent keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Share of the events that resend one already sent (byte-identical).
    #[arg(long, default_value_t = 0.02)]
    duplicate_rate: f64,
    /// Share of the resends that repeat an event of their own batch (the rest repeat one of an
    /// earlier batch).
    #[arg(long, default_value_t = 0.2)]
    in_batch_share: f64,
    /// Day (UTC) of the events; default yesterday.
    #[arg(long)]
    day: Option<NaiveDate>,
    /// Countries of the events, comma-separated; they must be served by the server. Default: the
    /// 40 countries of the sample data.
    #[arg(long, value_delimiter = ',')]
    countries: Vec<String>,
    /// Distinct viewer ids.
    #[arg(long, default_value_t = 100_000)]
    viewers: u64,
    /// Distinct content ids.
    #[arg(long, default_value_t = 2_000)]
    titles: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Prefix of the event ids; default a random one, so that runs never collide.
    #[arg(long)]
    id_prefix: Option<String>,
    /// Event ids: random (`uuid`, as client apps make them) or consecutive (`sequential`).
    #[arg(long, value_enum, default_value_t = IdStyle::Uuid)]
    ids: IdStyle,
    /// Body format.
    #[arg(long, value_enum, default_value_t = BodyFormat::Ndjson)]
    format: BodyFormat,
    /// A request without an answer after this many seconds counts as failed.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    request_timeout: f64,
    /// Worker threads of the generator (keep it small: the server needs the cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Writes the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{name} {s}"))
}

fn workload_config(a: &Args) -> anyhow::Result<WorkloadConfig> {
    let countries = if a.countries.is_empty() {
        streamcube_datagen::COUNTRIES
            .iter()
            .map(|c| Country::parse(c).map_err(|r| anyhow::anyhow!("{c}: {}", r.name())))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        a.countries
            .iter()
            .map(|c| {
                Country::parse(c.trim())
                    .map_err(|r| anyhow::anyhow!("--countries: `{c}` ({})", r.name()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let day = match a.day {
        Some(d) => d,
        None => Utc::now()
            .date_naive()
            .pred_opt()
            .context("the day before today")?,
    };
    Ok(WorkloadConfig {
        events: a.events,
        batch_size: a.batch_size,
        duplicate_rate: a.duplicate_rate,
        in_batch_share: a.in_batch_share,
        day,
        countries,
        viewers: a.viewers,
        titles: a.titles,
        seed: a.seed,
        id_prefix: a
            .id_prefix
            .clone()
            .unwrap_or_else(|| format!("load-{:08x}", rand::random::<u32>())),
        ids: a.ids,
        format: a.format,
    })
}

fn main_result(a: Args) -> anyhow::Result<bool> {
    let wcfg = workload_config(&a)?;
    let run_cfg = RunConfig {
        addr: a.addr,
        connections: a.connections,
        duration: a.duration.map(|d| seconds("duration", d)).transpose()?,
        request_timeout: seconds("request-timeout", a.request_timeout)?,
    };
    let t = Instant::now();
    let workload = Arc::new(Workload::generate(&wcfg)?);
    let generation = t.elapsed();
    eprintln!(
        "generated {} events in {} batches ({} MB) in {:.2} s; sending to {}",
        wcfg.events,
        workload.batches.len(),
        workload.bytes() / 1_000_000,
        generation.as_secs_f64(),
        a.addr
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(streamcube_load::run(run_cfg.clone(), Arc::clone(&workload)))?;
    let summary = Summary::new(&workload, &run_cfg, wcfg.batch_size, generation, &result);
    print!("{}", summary.text());
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary.ok)
}

fn main() -> ExitCode {
    match main_result(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
