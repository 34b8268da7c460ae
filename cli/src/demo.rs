//! `streamcube demo`: the whole pipeline on generated data, explained as it goes.

use std::time::Instant;

use chrono::{Days, Utc};
use clap::Args;
use streamcube_datagen::GenConfig;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::query::{Query, Value};
use streamcube_pipeline::Pipeline;

use crate::batch::generate_files;
use crate::local::{ingest_files, print_consolidation, print_ingest};
use crate::output::{hours, percent, spinner, table, thousands};
use crate::setup::Opened;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many events to generate.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Over how many days (ending yesterday).
    #[arg(long, default_value_t = 7)]
    pub days: u32,
}

fn text(v: &Value) -> String {
    v.to_string()
}

fn int(v: &Value) -> u64 {
    match v {
        Value::Int(i) => *i,
        _ => 0,
    }
}

fn float(v: &Value) -> f64 {
    match v {
        Value::Float(f) => *f,
        Value::Int(i) => *i as f64,
        _ => 0.0,
    }
}

pub async fn demo(
    pipeline: &Pipeline,
    backend: &EmbeddedBackend,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let today = Utc::now().date_naive();
    let start = today
        .checked_sub_days(Days::new(u64::from(args.days)))
        .unwrap_or(today);
    let last = today.pred_opt().unwrap_or(today);
    let cfg = GenConfig {
        events: args.events,
        days: args.days,
        start,
        viewers: u32::try_from((args.events / 5).clamp(100, 200_000)).unwrap_or(200_000),
        titles: 2_000,
        bad_rows: 21,
        ..GenConfig::default()
    };
    let input = backend.dir().join("demo-input");
    println!(
        "streamcube demo: {} playback events over {} days ({start} to {last}), a catalog, and a few broken rows",
        thousands(args.events),
        args.days
    );
    println!("data directory: {}\n", backend.dir().display());

    println!("1. Generating sample files in {}", input.display());
    let (events, catalog) = generate_files(&cfg, &input, false, false)?;

    println!(
        "2. Ingesting: validate, pseudonymize viewer ids, deduplicate into silver; bad rows to quarantine"
    );
    let outcomes = ingest_files(pipeline, &[catalog], &[events], false).await?;
    print_ingest(&Opened::Embedded(backend.clone()), &outcomes);
    if outcomes.iter().all(|o| o.already_processed) {
        println!("(these exact files were ingested before: nothing changed; a replay is harmless)");
    }

    println!("\n3. Consolidating the hour partitions that changed into the cube");
    let pb = spinner("consolidating");
    let days = pipeline.consolidate_pending().await?;
    pb.finish_and_clear();
    print_consolidation(&days);

    let catalog = pipeline.stores.catalog.load().await?;
    let range = [("from", start.to_string()), ("to", last.to_string())];
    let run = |extra: Vec<(&'static str, String)>| {
        let mut params: Vec<(&str, String)> = range.to_vec();
        params.extend(extra);
        let q = Query::from_params(params, &pipeline.config.query_limits);
        async move {
            let q = q?;
            anyhow::Ok(pipeline.query(&q).await?.result)
        }
    };

    println!("\n4. Querying the cube");
    let totals = run(vec![
        ("granularity", "total".into()),
        (
            "measures",
            "plays,unique_viewers,watch_seconds,completion_rate".into(),
        ),
    ])
    .await?;
    if let Some(r) = totals.rows.first() {
        println!(
            "Week total: {} plays by {} viewers, {} watched, {} completed\n",
            thousands(int(&r[0])),
            thousands(int(&r[1])),
            hours(int(&r[2])),
            percent(float(&r[3]))
        );
    }
    let top = run(vec![
        ("granularity", "total".into()),
        ("group_by", "content_id,genre".into()),
        (
            "measures",
            "plays,unique_viewers,watch_seconds,completion_rate".into(),
        ),
        ("order_by", "plays".into()),
        ("limit", "10".into()),
    ])
    .await?;
    let rows = top
        .rows
        .iter()
        .map(|r| {
            let id = text(&r[0]);
            vec![
                catalog
                    .title_of(&id)
                    .map_or_else(|| format!("({id})"), str::to_owned),
                text(&r[1]),
                thousands(int(&r[2])),
                thousands(int(&r[3])),
                hours(int(&r[4])),
                percent(float(&r[5])),
            ]
        })
        .collect();
    println!("Top titles");
    println!(
        "{}",
        table(
            &[
                "title",
                "genre",
                "plays",
                "viewers",
                "watch time",
                "completed"
            ],
            &[2, 3, 4, 5],
            rows
        )
    );
    let countries = run(vec![
        ("granularity", "total".into()),
        ("group_by", "country".into()),
        (
            "measures",
            "plays,unique_viewers,watch_seconds,avg_bitrate_kbps".into(),
        ),
        ("order_by", "plays".into()),
        ("limit", "10".into()),
    ])
    .await?;
    let rows = countries
        .rows
        .iter()
        .map(|r| {
            vec![
                text(&r[0]),
                thousands(int(&r[1])),
                thousands(int(&r[2])),
                hours(int(&r[3])),
                format!("{:.0} kbps", float(&r[4])),
            ]
        })
        .collect();
    println!("Top countries");
    println!(
        "{}",
        table(
            &["country", "plays", "viewers", "watch time", "avg bitrate"],
            &[1, 2, 3, 4],
            rows
        )
    );
    println!(
        "done in {:.1} s. Try next:",
        started.elapsed().as_secs_f64()
    );
    println!("  streamcube query --from {start} --to {last} --group-by device --order-by plays");
    println!(
        "  streamcube query --from {start} --to {last} --granularity hour --filter country=BR --measures plays,unique_viewers --format csv"
    );
    println!("  streamcube serve    # the HTTP API on http://127.0.0.1:8080");
    println!("  streamcube erase v000042   # remove a viewer everywhere and recompute");
    Ok(())
}
