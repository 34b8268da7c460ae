//! Cell blocks never change once written, so gold reads them eventually consistent (half the
//! read units) once the generation's registry records them, and reads again strongly consistent
//! when what came back is not exactly what was written. The emulator is always consistent: a
//! client whose eventually consistent queries each lose their last item stands for a replica
//! that has not caught up.

mod common;

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use chrono::NaiveDate;
use streamcube_aws::AwsBackend;
use streamcube_aws::gold::DynamoGold;
use streamcube_model::cube::{Cell, Cuboid, Dim, Dims, DimsRef};
use streamcube_model::event::Country;
use streamcube_pipeline::ports::{CellSelect, GoldStore, Level};

/// Records whether each `Query` asked for a consistent read; with `lag`, drops the last item of
/// every eventually consistent answer.
#[derive(Debug, Default)]
struct Replica {
    lag: bool,
    consistent: Arc<Mutex<Vec<bool>>>,
}

/// Whether the request of an operation asked for a consistent read.
#[derive(Debug)]
struct AskedConsistent(bool);

impl Storable for AskedConsistent {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Replica {
    fn name(&self) -> &'static str {
        "Replica"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let consistent = context
            .request()
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("ConsistentRead").and_then(serde_json::Value::as_bool))
            .unwrap_or(false);
        cfg.interceptor_state()
            .store_put(AskedConsistent(consistent));
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let consistent = cfg.load::<AskedConsistent>().is_some_and(|c| c.0);
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(query) = output.downcast_mut::<QueryOutput>() else {
            return Ok(());
        };
        self.consistent
            .lock()
            .map_err(|_| "poisoned")?
            .push(consistent);
        if self.lag
            && !consistent
            && let Some(items) = query.items.as_mut()
        {
            items.pop();
            query.count = i32::try_from(items.len())?;
        }
        Ok(())
    }
}

/// A gold store on `aws`'s cube table whose queries go through `replica`.
fn gold_through(aws: &AwsBackend, lag: bool) -> (DynamoGold, Arc<Mutex<Vec<bool>>>) {
    let consistent = Arc::new(Mutex::new(Vec::new()));
    let config = aws_sdk_dynamodb::config::Builder::from(&aws.sdk_config)
        .interceptor(Replica {
            lag,
            consistent: Arc::clone(&consistent),
        })
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(config);
    (DynamoGold::new(client, &aws.names.cube_table), consistent)
}

fn taken(log: &Mutex<Vec<bool>>) -> Vec<bool> {
    std::mem::take(&mut *log.lock().expect("log"))
}

const COUNTRIES: [&str; 12] = [
    "BR", "FR", "US", "DE", "PT", "AR", "MX", "CO", "CL", "ES", "IT", "JP",
];

/// Titles by country (BR's part over several blocks), and a total per country.
fn level() -> Vec<(Dims, Cell)> {
    let mut cells = Vec::new();
    for (i, c) in COUNTRIES.iter().enumerate() {
        let titles = if *c == "BR" { 30_000 } else { 40 };
        for t in 0..titles {
            let mut cell = Cell::default();
            cell.measures.plays = 1 + t;
            cell.measures.watch_seconds = 7 * t + i as u64;
            cells.push((
                Dims {
                    country: Some(Country::parse(c).expect("country")),
                    content_id: Some(format!("title-{t:06}").into()),
                    ..Dims::default()
                },
                cell,
            ));
        }
        let mut total = Cell::default();
        total.measures.plays = 1_000 + i as u64;
        cells.push((
            Dims {
                country: Some(Country::parse(c).expect("country")),
                ..Dims::default()
            },
            total,
        ));
    }
    cells
}

/// The same cells in any order (the message names how many differ, not all of them).
fn assert_same(got: Vec<(Dims, Cell)>, want: &[(Dims, Cell)]) {
    let key = |(d, c): &(Dims, Cell)| format!("{d:?} {c:?}");
    let got: std::collections::BTreeSet<String> = got.iter().map(key).collect();
    let want: std::collections::BTreeSet<String> = want.iter().map(key).collect();
    assert!(
        got == want,
        "{} cells read, {} written, {} missing, {} not written",
        got.len(),
        want.len(),
        want.difference(&got).count(),
        got.difference(&want).count()
    );
}

fn is_brazil(d: &DimsRef<'_>) -> bool {
    d.country == Country::parse("BR").ok()
}

async fn written(tag: &str, generation: u64) -> (AwsBackend, NaiveDate, Vec<(Dims, Cell)>) {
    let aws = common::backend(tag).await;
    let day = NaiveDate::from_ymd_opt(2026, 10, 7).expect("day");
    let cells = level();
    let (gold, _) = gold_through(&aws, false);
    gold.put_cells(day, Level::Day, generation, &cells)
        .await
        .expect("written");
    (aws, day, cells)
}

/// Reads the whole level and Brazil's titles, and checks both against what was written.
async fn read_back(gold: &DynamoGold, day: NaiveDate, generation: u64, cells: &[(Dims, Cell)]) {
    let all = gold
        .cells(day, Level::Day, generation, None)
        .await
        .expect("read");
    assert_same(all, cells);
    let select = CellSelect {
        keep: &is_brazil,
        countries: Some(vec![Country::parse("BR").expect("BR")]),
    };
    let brazil = gold
        .cells_where(
            day,
            Level::Day,
            generation,
            Cuboid::of(&[Dim::Country, Dim::ContentId]),
            &select,
        )
        .await
        .expect("read");
    let want: Vec<_> = cells
        .iter()
        .filter(|(d, _)| d.country == Country::parse("BR").ok() && d.content_id.is_some())
        .cloned()
        .collect();
    assert_eq!(want.len(), 30_000);
    assert_same(brazil, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_blocks_are_read_eventually_consistent() {
    let (aws, day, cells) = written("eventual", 21).await;
    let (gold, log) = gold_through(&aws, false);
    read_back(&gold, day, 21, &cells).await;
    let queries = taken(&log);
    assert!(
        queries.iter().all(|c| !c),
        "every block query eventually consistent: {queries:?}"
    );
    // The whole level: one query per shard. Brazil's titles: only the shards holding its
    // blocks, and no query for blocks older than the split by country.
    let shards = streamcube_aws::gold::CELL_SHARDS;
    assert!(
        queries.len() > shards && queries.len() < 2 * shards,
        "{} queries",
        queries.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_is_read_again_consistently() {
    let (aws, day, cells) = written("lagging", 22).await;
    let (gold, log) = gold_through(&aws, true);
    read_back(&gold, day, 22, &cells).await;
    let queries = taken(&log);
    assert!(
        queries.iter().any(|c| !c) && queries.iter().any(|c| *c),
        "an eventually consistent try, then consistent reads: {queries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_without_a_record_are_read_consistently() {
    // A generation half written (its process died), or written before the record.
    let (aws, day, cells) = written("unrecorded", 23).await;
    aws.dynamo
        .update_item()
        .table_name(&aws.names.cube_table)
        .key("pk", AttributeValue::S(format!("day#{day}")))
        .key("sk", AttributeValue::S(format!("gen#d#{:020}", 23)))
        .update_expression("REMOVE #w")
        .expression_attribute_names("#w", "blocks")
        .send()
        .await
        .expect("record removed");
    let (gold, log) = gold_through(&aws, true);
    read_back(&gold, day, 23, &cells).await;
    let queries = taken(&log);
    assert!(
        !queries.is_empty() && queries.iter().all(|c| *c),
        "{queries:?}"
    );
}
