//! End to end on the AWS emulator (`scripts/test.sh` starts it), through the real SDK and the
//! functions' handlers: a file lands in the bronze bucket, bronze-processor takes the S3 event,
//! the silver table's DynamoDB stream is read as Lambda's event source would and handed to this
//! function, which marks the hours in the cube table; its scheduled run publishes them, and the
//! published days' exports equal the cube `streamcube cube` computes from the same file. Then
//! every step again: nothing changes.

use std::collections::BTreeSet;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::s3::S3Event;
use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde_json::{Value, json};
use streamcube_aws::changes::DynamoChanges;
use streamcube_aws::{AwsBackend, AwsNames, provision};
use streamcube_datagen::GenConfig;
use streamcube_model::batch::{Collector, write_cube_csv};
use streamcube_model::catalog::read_catalog;
use streamcube_model::event::Validator;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_model::reader::Format;
use streamcube_pipeline::{Pipeline, PipelineConfig, export};

fn require(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: this test needs the AWS emulator; run `scripts/test.sh`")
    })
}

/// An attribute as the Lambda event carries it (`{"S": ...}`, `{"N": ...}`...).
fn attr(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        other => panic!("silver items hold no {other:?}"),
    }
}

fn image(m: Option<&std::collections::HashMap<String, AttributeValue>>) -> Value {
    m.map(|m| {
        Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), attr(v)))
                .collect::<serde_json::Map<_, _>>(),
        )
    })
    .unwrap_or(Value::Null)
}

/// Every record of the table's stream from its start, as the Lambda event of one batch.
async fn stream_batch(aws: &AwsBackend) -> Event {
    let streams = aws_sdk_dynamodbstreams::Client::new(&aws.sdk_config);
    let table = aws
        .dynamo
        .describe_table()
        .table_name(&aws.names.silver_table)
        .send()
        .await
        .expect("table");
    let arn = table
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("the silver table has a stream")
        .to_owned();
    let desc = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .expect("stream");
    let mut records = Vec::new();
    for shard in desc
        .stream_description()
        .map(|d| d.shards())
        .unwrap_or_default()
    {
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id().unwrap_or_default())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator")
            .shard_iterator;
        while let Some(it) = iterator {
            let out = streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .expect("records");
            if out.records().is_empty() {
                break;
            }
            for r in out.records() {
                let d = r.dynamodb().expect("change");
                records.push(json!({
                    "eventID": r.event_id(),
                    "eventName": r.event_name().map(|n| n.as_str()),
                    "eventVersion": r.event_version(),
                    "eventSource": "aws:dynamodb",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": arn,
                    "dynamodb": {
                        "Keys": image(d.keys()),
                        "NewImage": image(d.new_image()),
                        "OldImage": image(d.old_image()),
                        "SequenceNumber": d.sequence_number(),
                        "SizeBytes": d.size_bytes(),
                        "StreamViewType": "NEW_AND_OLD_IMAGES",
                    }
                }));
            }
            iterator = out.next_shard_iterator;
        }
    }
    let mut batch = json!({ "Records": records });
    // Absent images are absent keys in the event, not nulls.
    for r in batch["Records"].as_array_mut().expect("records") {
        let d = r["dynamodb"].as_object_mut().expect("change");
        d.retain(|_, v| !v.is_null());
    }
    serde_json::from_value(batch).expect("a DynamoDB stream event")
}

fn s3_event(bucket: &str, key: &str, version: &str) -> S3Event {
    // The sample notification of `events/`, pointed at this object. S3 encodes keys as a form:
    // a space becomes `+`.
    let path = format!(
        "{}/../../events/s3-put-events-csv.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let mut record = v["Records"][0].take();
    record["s3"]["bucket"]["name"] = json!(bucket);
    record["s3"]["bucket"]["arn"] = json!(format!("arn:aws:s3:::{bucket}"));
    record["s3"]["object"]["key"] = json!(form_encode(key));
    record["s3"]["object"]["versionId"] = json!(version);
    serde_json::from_value(json!({ "Records": [record] })).expect("an S3 event")
}

fn form_encode(key: &str) -> String {
    key.split('/')
        .map(|part| {
            part.bytes()
                .map(|b| match b {
                    b' ' => "+".to_owned(),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn cfg() -> GenConfig {
    GenConfig {
        events: 800,
        days: 2,
        start: chrono::NaiveDate::from_ymd_opt(2026, 10, 9).expect("date"),
        viewers: 150,
        titles: 20,
        genres: 3,
        duplicate_rate: 0.03,
        uncatalogued_rate: 0.05,
        bad_rows: 12,
        seed: 11,
    }
}

/// The cube the batch path (`streamcube cube`) computes, as a set of CSV lines.
fn batch_cube(catalog_csv: &[u8], events_csv: &[u8], key: &PseudonymKey) -> BTreeSet<String> {
    let (entries, _, _) = read_catalog(catalog_csv).expect("catalog");
    let catalog = entries.into_iter().collect();
    let mut c = Collector::new(&catalog, Validator::now(), Pseudonymizer::new(key));
    c.add_input("events.csv", Format::Csv, events_csv, &mut |_| {})
        .expect("read");
    let mut out = Vec::new();
    write_cube_csv(c, &Default::default(), 1, &mut out, &mut |_| {}).expect("cube");
    String::from_utf8(out)
        .expect("utf8")
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

async fn exported(p: &Pipeline, cfg: &GenConfig) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for d in 0..cfg.days {
        let day = cfg.start + chrono::Days::new(u64::from(d));
        let bytes = p
            .stores
            .lake
            .get(&Path::from(export::csv_path(day)))
            .await
            .expect("the day's export")
            .bytes()
            .await
            .expect("bytes");
        let text = String::from_utf8(bytes.to_vec()).expect("utf8");
        lines.extend(text.lines().skip(1).map(str::to_owned));
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_event_to_stream_to_cube_equals_the_batch_cube() {
    require("AWS_ENDPOINT_URL");
    let run = hex::encode(rand::random::<[u8; 4]>());
    let names = AwsNames {
        silver_table: format!("silver-flow-{run}"),
        cube_table: format!("cube-flow-{run}"),
        catalog_table: format!("catalog-flow-{run}"),
        bronze_bucket: require("STREAMCUBE_TEST_BRONZE_BUCKET"),
        lake_bucket: require("STREAMCUBE_TEST_LAKE_BUCKET"),
        glue_database: format!("flow_{run}"),
        glue_table: "cube".into(),
        retention_days: None,
    };
    let aws = AwsBackend::connect(names.clone()).await;
    provision::create_tables(&aws.dynamo, &names)
        .await
        .expect("tables");
    let key = PseudonymKey::from_bytes("t", vec![4; 32]).expect("key");
    let p = Pipeline::new(
        aws.stores().expect("stores"),
        PipelineConfig::new(Pseudonymizer::new(&key)),
    );
    let cfg = cfg();
    let mut catalog_csv = Vec::new();
    streamcube_datagen::write_catalog(&cfg, &mut catalog_csv).expect("catalog");
    let mut events_csv = Vec::new();
    streamcube_datagen::write_events(&cfg, &mut events_csv, |_| {}).expect("events");

    // Land both files; S3 versions them.
    let mut invoke = Vec::new();
    for (k, bytes) in [
        (format!("reference/catalog/{run}/catalog.csv"), &catalog_csv),
        (format!("events/{run}/batch 1+a.csv"), &events_csv),
    ] {
        let put = p
            .stores
            .bronze
            .put(&Path::from(k.as_str()), bytes.clone().into())
            .await
            .expect("landed");
        invoke.push(s3_event(
            &names.bronze_bucket,
            &k,
            put.version.as_deref().expect("a versioned bucket"),
        ));
    }
    // bronze-processor, in parts of 300 rows (a file larger than one run).
    let mut reports = Vec::new();
    for event in &invoke {
        let summary = bronze_processor::process(
            &p,
            &bronze_processor::InProcess,
            bronze_processor::Input::S3(event.clone()),
            bronze_processor::Budget::RowsPerPart(300),
        )
        .await
        .expect("processed");
        reports.push(serde_json::to_value(&summary).expect("json"));
    }
    // The stream, to the consolidator.
    let batch = stream_batch(&aws).await;
    assert!(
        batch.records.len() >= 700,
        "{} records",
        batch.records.len()
    );
    let response = cube_consolidator::mark_batch(&p, &batch)
        .await
        .expect("response");
    assert!(response.batch_item_failures.is_empty());
    let marked = p.stores.changes.pending().await.expect("pending");
    assert!(!marked.is_empty(), "the batch's hours are pending");
    let expected = batch_cube(&catalog_csv, &events_csv, &key);
    // The scheduled run.
    let summary = cube_consolidator::consolidate_pending(&p)
        .await
        .expect("the scheduled run");
    assert!(!summary.days.is_empty());
    let got = exported(&p, &cfg).await;
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        got, expected,
        "the cube from S3 → silver → stream → gold equals the batch cube"
    );
    // Changed moments ago, so silver's hour index may not have shown them whole: they stay
    // pending for the next run. Once settled (here: at once), a run clears them.
    assert_eq!(
        p.stores.changes.pending().await.expect("pending").len(),
        marked.len()
    );
    let mut p = p;
    p.stores.changes = std::sync::Arc::new(DynamoChanges::settling(
        aws.dynamo.clone(),
        &names.cube_table,
        std::time::Duration::ZERO,
    ));
    cube_consolidator::consolidate_pending(&p)
        .await
        .expect("the next run");
    assert_eq!(p.stores.changes.pending().await.expect("pending"), []);
    assert_eq!(exported(&p, &cfg).await, expected);

    // Every step again: redelivered S3 events, the stream batch replayed.
    for (event, first) in invoke.iter().zip(&reports) {
        let again = bronze_processor::process(
            &p,
            &bronze_processor::InProcess,
            bronze_processor::Input::S3(event.clone()),
            bronze_processor::Budget::Unlimited,
        )
        .await
        .expect("redelivered");
        let again = serde_json::to_value(&again).expect("json");
        assert_eq!(again["objects"][0]["status"], "already_processed");
        assert_eq!(again["objects"][0]["report"], first["objects"][0]["report"]);
    }
    let replay = stream_batch(&aws).await;
    assert_eq!(
        replay.records.len(),
        batch.records.len(),
        "no new silver writes"
    );
    let response = cube_consolidator::mark_batch(&p, &replay)
        .await
        .expect("replayed");
    assert!(response.batch_item_failures.is_empty());
    cube_consolidator::consolidate_pending(&p)
        .await
        .expect("the run after the replay");
    assert_eq!(exported(&p, &cfg).await, expected);
}
