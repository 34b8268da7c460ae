//! The AWS adapters on a local AWS emulator (`moto_server`, started by `scripts/test.sh`, which
//! exports `AWS_ENDPOINT_URL` and creates the two buckets): the port conformance suite, then the
//! whole pipeline on DynamoDB, S3 and Glue, compared with the embedded backend on the same files.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use streamcube_aws::{AwsBackend, changes::DynamoChanges, glue::GlueCatalog};
use streamcube_datagen::GenConfig;
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_model::query::{Query, QueryLimits};
use streamcube_pipeline::ports::ChangeFeed;
use streamcube_pipeline::{Pipeline, PipelineConfig, Stores, conformance, export};

mod common;

use common::backend;

fn stores(aws: &AwsBackend) -> Stores {
    aws.stores().expect("the S3 clients build")
}

macro_rules! checks {
    ($port:ident: $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let aws = backend(stringify!($check)).await;
                conformance::$check(&*stores(&aws).$port).await;
            }
        )+
    };
}

checks!(silver:
    silver_outcomes,
    silver_repeat_within_call,
    silver_repeat_same_origin_within_call,
    silver_first_writer_wins,
    silver_round_trip,
    silver_hour_boundaries,
    silver_viewer_events,
    silver_delete,
    silver_large_batch,
);

checks!(gold:
    gold_manifest_publish,
    gold_concurrent_publish,
    gold_cells_round_trip,
    gold_cells_by_cuboid,
    gold_cells_where,
    gold_levels_and_generations,
    gold_put_cells_idempotent,
    gold_stale_and_delete,
);

checks!(catalog: catalog_store);
checks!(ledger: ledger_store);

/// The change feed in the cube table, trusting hour reads at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_reported_changes() {
    let aws = backend("change_feed_reported_changes").await;
    let feed = DynamoChanges::settling(aws.dynamo.clone(), &aws.names.cube_table, Duration::ZERO);
    conformance::change_feed_reported_changes(&feed).await;
}

/// An hour changed within the settle time is listed, but its acknowledgement clears nothing
/// (silver's hour index may not show the change yet); once settled, the same ack clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_changed_moments_ago_stays_pending_after_its_ack() {
    let aws = backend("an_hour_changed_moments_ago").await;
    let settle = Duration::from_millis(1500);
    let feed = DynamoChanges::settling(aws.dynamo.clone(), &aws.names.cube_table, settle);
    let hour = 500_000;
    feed.mark(&[hour]).await.expect("mark");
    let [(h, fresh)] = feed.pending().await.expect("pending")[..] else {
        panic!("one hour pending");
    };
    assert_eq!(h, hour);
    feed.ack(hour, fresh).await.expect("ack");
    assert_eq!(
        feed.pending().await.expect("pending").len(),
        1,
        "still pending"
    );
    tokio::time::sleep(settle + Duration::from_millis(100)).await;
    let [(_, settled)] = feed.pending().await.expect("pending")[..] else {
        panic!("one hour pending");
    };
    assert_ne!(settled, fresh, "a settled hour gets a token that clears it");
    feed.ack(hour, settled).await.expect("ack");
    assert_eq!(feed.pending().await.expect("pending"), []);
}

/// The bulk path bronze files take (`BatchGetItem` + `BatchWriteItem`) decides like `put_new`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_writes_decide_like_conditional_ones() {
    use streamcube_pipeline::ports::PutOutcome::*;
    use streamcube_pipeline::ports::SilverStore;
    let aws = backend("bulk").await;
    let silver = streamcube_aws::silver::DynamoSilver::new(
        aws.dynamo.clone(),
        &aws.names.silver_table,
        None,
    );
    let key = PseudonymKey::from_bytes("t", vec![5; 32]).expect("key");
    let p = Pseudonymizer::new(&key);
    let event = |id: &str, origin: &str| streamcube_model::event::SilverEvent {
        event_id: id.into(),
        occurred_at_ms: 1_793_000_000_000,
        viewer: p.pseudonymize("viewer", 1_793_000_000_000),
        content_id: "c1".into(),
        device: streamcube_model::event::Device::Tv,
        country: "BR".parse().expect("country"),
        watch_seconds: 10,
        bitrate_kbps: None,
        buffering_ms: Some(3),
        completed: false,
        origin: origin.into(),
    };
    // 60 events: three BatchWriteItem calls, one id repeated within the call.
    let mut events: Vec<_> = (0..60)
        .map(|i| event(&format!("b{i}"), &format!("f#v:{i}")))
        .collect();
    events.push(event("b7", "f#v:99"));
    let out = silver
        .put_new_bulk(Arc::new(events.clone()))
        .await
        .expect("bulk write");
    assert_eq!(out.iter().filter(|o| **o == Inserted).count(), 60);
    assert_eq!(out[60], Duplicate);
    // The same rows again (a retried file): already stored; another file's row: duplicate.
    let again = silver
        .put_new_bulk(Arc::new(events[..3].to_vec()))
        .await
        .expect("retry");
    assert_eq!(again, [AlreadyStored, AlreadyStored, AlreadyStored]);
    let other = silver
        .put_new_bulk(Arc::new(vec![event("b1", "g#v:1")]))
        .await
        .expect("other file");
    assert_eq!(other, [Duplicate]);
    let hour = events[0].hour();
    assert_eq!(silver.hour_events(hour).await.expect("hour").len(), 60);
}

fn key() -> PseudonymKey {
    PseudonymKey::from_bytes("t", vec![7; 32]).expect("key")
}

fn pipeline(stores: Stores) -> Pipeline {
    Pipeline::new(stores, PipelineConfig::new(Pseudonymizer::new(&key())))
}

/// Small generated files with bad rows and duplicates, two days.
fn files() -> (Vec<u8>, Vec<u8>, GenConfig) {
    let cfg = GenConfig {
        events: 1_500,
        days: 2,
        start: chrono::NaiveDate::from_ymd_opt(2026, 10, 3).expect("date"),
        viewers: 300,
        titles: 40,
        genres: 4,
        duplicate_rate: 0.02,
        uncatalogued_rate: 0.05,
        bad_rows: 30,
        seed: 7,
    };
    let mut catalog = Vec::new();
    streamcube_datagen::write_catalog(&cfg, &mut catalog).expect("catalog");
    let mut events = Vec::new();
    streamcube_datagen::write_events(&cfg, &mut events, |_| {}).expect("events");
    (catalog, events, cfg)
}

async fn land(store: &Arc<dyn ObjectStore>, key: &str, bytes: &[u8]) {
    store
        .put(&Path::from(key), bytes.to_vec().into())
        .await
        .expect("landed in bronze");
}

/// Loads the files, consolidates every hour of the range and answers the dashboard's queries.
async fn run(p: &Pipeline, prefix: &str, cfg: &GenConfig) -> Vec<String> {
    let (catalog, events, _) = files();
    let catalog_key = format!("reference/catalog/{prefix}/catalog.csv");
    let events_key = format!("events/{prefix}/part 1.csv");
    land(&p.stores.bronze, &catalog_key, &catalog).await;
    land(&p.stores.bronze, &events_key, &events).await;
    p.process_object(&catalog_key, None).await.expect("catalog");
    let out = p.process_object(&events_key, None).await.expect("events");
    assert!(!out.already_processed);
    let c = &out.report.counts;
    assert_eq!(c.rows, c.accepted + c.duplicates + c.rejected);
    assert!(c.rejected >= 25 && c.duplicates > 0, "{c:?}");
    let first = first_hour(cfg);
    let hours: Vec<i64> = (first..first + 24 * i64::from(cfg.days)).collect();
    for day in p.consolidate_hours(&hours).await.expect("consolidated") {
        assert!(day.result.is_ok(), "{day:?}");
    }
    answers(p, cfg).await
}

fn first_hour(cfg: &GenConfig) -> i64 {
    streamcube_model::query::first_hour(cfg.start)
}

async fn answers(p: &Pipeline, cfg: &GenConfig) -> Vec<String> {
    let to = cfg.start + chrono::Days::new(u64::from(cfg.days) - 1);
    let (from, to) = (cfg.start.to_string(), to.to_string());
    let queries: [Vec<(&str, &str)>; 3] = [
        vec![
            ("granularity", "total"),
            ("measures", "plays,watch_seconds,completed,unique_viewers"),
        ],
        vec![
            ("granularity", "day"),
            ("group_by", "country,device"),
            ("measures", "plays,unique_viewers,avg_bitrate_kbps"),
        ],
        vec![
            ("granularity", "total"),
            ("group_by", "genre"),
            ("order_by", "plays"),
            ("limit", "3"),
        ],
    ];
    let mut out = Vec::new();
    for q in queries {
        let mut params = vec![("from", from.as_str()), ("to", to.as_str())];
        params.extend(q);
        let query = Query::from_params(params, &QueryLimits::default()).expect("query");
        out.push(p.query(&query).await.expect("answer").result.to_csv());
    }
    out
}

/// The same files through DynamoDB, S3 and Glue and through SQLite give the same cube; the
/// Parquet export and the Glue partition are there; a redelivered object and a replayed
/// consolidation change nothing; an erased viewer is gone on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_on_aws_equals_embedded() {
    let aws = backend("e2e").await;
    let on_aws = pipeline(stores(&aws));
    let dir = tempfile::tempdir().expect("tmp");
    let local = pipeline(
        EmbeddedBackend::open(dir.path())
            .expect("embedded")
            .stores(),
    );
    let (_, _, cfg) = files();
    let prefix = aws.names.silver_table.clone();
    let expected = run(&local, &prefix, &cfg).await;
    let got = run(&on_aws, &prefix, &cfg).await;
    assert_eq!(got, expected, "DynamoDB/S3 and SQLite answer alike");
    assert!(expected[0].lines().count() == 2, "{}", expected[0]);

    // Parquet in the lake, registered in Glue.
    let glue = GlueCatalog::new(
        aws.glue.clone(),
        &aws.names.glue_database,
        &aws.names.glue_table,
        &format!("s3://{}/{}", aws.names.lake_bucket, export::GOLD_PREFIX),
    );
    for d in 0..cfg.days {
        let day = cfg.start + chrono::Days::new(u64::from(d));
        let bytes = on_aws
            .stores
            .lake
            .get(&Path::from(export::parquet_path(day)))
            .await
            .expect("the day's Parquet export")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(&bytes[..4], b"PAR1");
        assert_eq!(
            glue.partition_location(day).await.expect("glue").as_deref(),
            Some(format!("s3://{}/gold/cube/day={day}/", aws.names.lake_bucket).as_str())
        );
    }

    // Redelivery and replay.
    let events_key = format!("events/{prefix}/part 1.csv");
    let again = on_aws
        .process_object(&events_key, None)
        .await
        .expect("redelivered");
    assert!(again.already_processed);
    let first = first_hour(&cfg);
    let hours: Vec<i64> = (first..first + 48).collect();
    on_aws.consolidate_hours(&hours).await.expect("replayed");
    assert_eq!(answers(&on_aws, &cfg).await, expected);

    // Erasure: the same viewer on both backends, then the same answers again.
    let gone_aws = on_aws.erase_viewer("v000001").await.expect("erased");
    let gone_local = local.erase_viewer("v000001").await.expect("erased");
    assert!(gone_aws.events_deleted > 0);
    assert_eq!(gone_aws.events_deleted, gone_local.events_deleted);
    let after = answers(&on_aws, &cfg).await;
    assert_ne!(after, expected);
    assert_eq!(after, answers(&local, &cfg).await);
}

/// Cell blocks written before they were split by country (`sk = <cuboid>#<chunk>`, every
/// country in one item) and before they were spread over shards (one partition key per level
/// and generation) are still read: whole, and by a query filtered by country, next to split
/// blocks of the same cuboid; and deleted with their generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsplit_cell_blocks_stay_readable() {
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::AttributeValue;
    use streamcube_aws::gold::CELL_SHARDS;
    use streamcube_model::codec::encode_cells;
    use streamcube_model::event::Country;
    use streamcube_pipeline::ports::Level;

    let aws = backend("unsplit").await;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 10, 5).expect("day");
    let (cuboid, old) = conformance::unsplit_sample();
    aws.dynamo
        .put_item()
        .table_name(&aws.names.cube_table)
        .item("pk", AttributeValue::S(format!("cells#{day}#d#7")))
        .item(
            "sk",
            AttributeValue::S(format!("{:03}#00000", cuboid.bits())),
        )
        .item("cells", AttributeValue::B(Blob::new(encode_cells(&old))))
        .send()
        .await
        .expect("an item in the old layout");
    let gold = stores(&aws).gold;
    conformance::gold_reads_unsplit_block(&*gold, day, 7).await;

    let sort_keys = |pk: String| {
        let aws = &aws;
        async move {
            let items = aws
                .dynamo
                .query()
                .table_name(&aws.names.cube_table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk))
                .send()
                .await
                .expect("query");
            items
                .items()
                .iter()
                .filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned())
                .collect::<Vec<String>>()
        }
    };
    // Generation 8, written now: one item per country, round-robin over the shards.
    let mut keys = Vec::new();
    let mut shards_used = 0;
    for shard in 0..CELL_SHARDS {
        let found = sort_keys(format!("cells#{day}#d#8#{shard}")).await;
        shards_used += usize::from(!found.is_empty());
        keys.extend(found);
    }
    assert!(sort_keys(format!("cells#{day}#d#8")).await.is_empty());
    keys.sort();
    let part = |c: &str| Country::parse(c).expect("country").code() + 1;
    let mut want_keys = vec![
        format!("009/{:03}#00000", part("BR")),
        format!("009/{:03}#00000", part("FR")),
    ];
    want_keys.sort();
    assert_eq!(keys, want_keys);
    assert_eq!(shards_used, 2, "two blocks, two shards");

    gold.delete_cells(day, Level::Day, 7)
        .await
        .expect("deleted");
    assert!(sort_keys(format!("cells#{day}#d#7")).await.is_empty());
}

/// A level of many blocks is spread evenly over the shards and reads back whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cell_blocks_are_spread_over_the_shards() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use streamcube_aws::gold::CELL_SHARDS;
    use streamcube_model::cube::{Cell, Dims};
    use streamcube_model::event::Country;
    use streamcube_pipeline::ports::Level;

    let aws = backend("spread").await;
    let gold = stores(&aws).gold;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 10, 6).expect("day");
    // Countries times titles in the country x title cuboid: one part (and block) per country.
    let countries: Vec<&str> = vec![
        "BR", "FR", "US", "DE", "PT", "AR", "MX", "CO", "CL", "ES", "IT", "JP", "KR", "IN", "CA",
        "GB", "NL", "PE", "UY", "PY",
    ];
    let mut cells: Vec<(Dims, Cell)> = Vec::new();
    for c in &countries {
        for t in 0..50 {
            let dims = Dims {
                country: Some(Country::parse(c).expect("country")),
                content_id: Some(format!("c{t:06}").into()),
                ..Dims::default()
            };
            let mut cell = Cell::default();
            cell.measures.plays = 1 + t;
            cells.push((dims, cell));
        }
    }
    gold.put_cells(day, Level::Day, 11, &cells)
        .await
        .expect("written");
    let mut per_shard = Vec::new();
    for shard in 0..CELL_SHARDS {
        let found = aws
            .dynamo
            .query()
            .table_name(&aws.names.cube_table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(format!("cells#{day}#d#11#{shard}")),
            )
            .send()
            .await
            .expect("query");
        for item in found.items() {
            assert!(
                item.contains_key("zcells") && !item.contains_key("cells"),
                "stored compressed"
            );
        }
        per_shard.push(found.count());
    }
    let (min, max) = (
        per_shard.iter().min().copied().unwrap_or(0),
        per_shard.iter().max().copied().unwrap_or(0),
    );
    assert_eq!(
        per_shard.iter().sum::<i32>(),
        countries.len() as i32,
        "{per_shard:?}"
    );
    assert!(min >= 2 && max - min <= 1, "evenly spread: {per_shard:?}");

    let mut back = gold.cells(day, Level::Day, 11, None).await.expect("read");
    let again = gold.cells(day, Level::Day, 11, None).await.expect("read");
    assert_eq!(back, again, "the same order every time");
    back.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    let mut want = cells.clone();
    want.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    assert_eq!(back, want);
    gold.delete_cells(day, Level::Day, 11)
        .await
        .expect("deleted");
    assert!(
        gold.cells(day, Level::Day, 11, None)
            .await
            .expect("read")
            .is_empty()
    );
}

/// The open day on DynamoDB: the scheduled run publishes today's hours without the day level,
/// queries merge the hours, and the answers equal those of the day level built afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_day_is_answered_from_its_hours() {
    use chrono::{Duration as Span, TimeZone, Utc};
    use streamcube_pipeline::consolidate::DayLevel;

    // Away from midnight UTC, so that today stays the day the run calls open.
    let now = Utc::now();
    let left = (now.date_naive() + Span::days(1))
        .and_hms_opt(0, 0, 0)
        .map(|m| Utc.from_utc_datetime(&m) - now)
        .and_then(|d| d.to_std().ok())
        .unwrap_or_default();
    if left < Duration::from_secs(120) {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
    let aws = backend("the_open_day_is_answered").await;
    let mut s = stores(&aws);
    let feed = Arc::new(DynamoChanges::settling(
        aws.dynamo.clone(),
        &aws.names.cube_table,
        Duration::ZERO,
    ));
    s.changes = feed.clone();
    let p = pipeline(s);
    let today = Utc::now().date_naive();
    let midnight = Utc.from_utc_datetime(&today.and_hms_opt(0, 0, 0).expect("midnight"));
    let start = (Utc::now() - Span::minutes(75)).max(midnight);
    // A minute apart, or closer in the day's first hour: events more than 5 minutes ahead of
    // the clock are refused.
    let step = ((Utc::now() - start) / 60).min(Span::minutes(1));
    let (devices, countries) = (["tv", "mobile", "web"], ["BR", "PT"]);
    let events: Vec<serde_json::Value> = (0..60_i32)
        .map(|i| {
            let at = start + step * i;
            serde_json::json!({
                "event_id": format!("open-{i}"),
                "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "viewer_id": format!("v{}", i % 9),
                "content_id": format!("c{}", i % 4),
                "device": devices[(i % 3) as usize],
                "country": countries[(i % 2) as usize],
                "watch_seconds": 20 + i,
                "bitrate_kbps": 3000 + i,
                "completed": i % 5 == 0,
            })
        })
        .collect();
    let r = p.ingest_json(&events).await.expect("ingest");
    assert_eq!(r.accepted, 60, "{r:?}");
    // The silver stream would mark these; here they are marked directly.
    let hours: Vec<i64> = (0..60_i32)
        .map(|i| (start + step * i).timestamp().div_euclid(3600))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    feed.mark(&hours).await.expect("mark");

    let run = p.consolidate_pending().await.expect("run");
    let [open] = &run[..] else {
        panic!("one day: {run:?}");
    };
    let summary = open.result.clone().expect("published");
    assert_eq!((summary.day_level, summary.events), (DayLevel::Defer, 60));
    let manifest = p.stores.gold.manifest(today).await.expect("m").expect("m");
    assert_eq!(manifest.day_generation, 0);
    assert_eq!(manifest.hours.len(), hours.len());
    assert_eq!(feed.pending().await.expect("pending"), []);
    let lake_csv = Path::from(export::csv_path(today));
    assert!(
        p.stores.lake.head(&lake_csv).await.is_err(),
        "no export yet"
    );
    let cfg = GenConfig {
        start: today,
        days: 1,
        ..GenConfig::default()
    };
    let from_hours = answers(&p, &cfg).await;
    assert!(
        from_hours[0]
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("60,")),
        "{from_hours:?}"
    );

    for o in p.consolidate_hours(&hours).await.expect("built") {
        assert_eq!(o.result.expect("built").day_level, DayLevel::Build);
    }
    assert_ne!(
        p.stores
            .gold
            .manifest(today)
            .await
            .expect("m")
            .expect("m")
            .day_generation,
        0
    );
    assert!(p.stores.lake.head(&lake_csv).await.is_ok(), "exported");
    assert_eq!(answers(&p, &cfg).await, from_hours);
}
