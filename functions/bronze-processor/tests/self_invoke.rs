//! A file larger than one run, on AWS: each run hands the rest of the object to another
//! invocation of the function through the Lambda API ([`SelfInvoke`]), here the emulator's.
//! Its Lambda backend is switched to the one that accepts invocations without running them, and
//! its request recorder gives back what the function sent: the invocation type, the function and
//! the payload, which then becomes the next invocation, as Lambda would deliver it.
//!
//! Needs the AWS emulator (`scripts/test.sh` starts it).

use base64::Engine;
use bronze_processor::{Budget, Input, SelfInvoke, Status, Summary, process};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use streamcube_aws::{AwsBackend, AwsNames, provision};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::event::SilverEvent;
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_pipeline::{Pipeline, PipelineConfig, Stores};

fn require(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this test needs the AWS emulator; run `scripts/test.sh` (it \
             starts moto_server on 127.0.0.1 and sets it), or `source scripts/emulator.sh` first"
        )
    })
}

fn pipeline(stores: Stores) -> Pipeline {
    let key = PseudonymKey::from_bytes("t", vec![9; 32]).expect("key");
    Pipeline::new(stores, PipelineConfig::new(Pseudonymizer::new(&key)))
}

/// A request to the emulator's own API (`/moto-api/...`); the answer's body.
async fn moto_api(method: &str, path: &str, body: &str) -> String {
    let endpoint = require("AWS_ENDPOINT_URL");
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("emulator");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("answer");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

/// The asynchronous invocations of `function` in the emulator's recording, oldest first: each
/// one's invocation type and payload.
async fn invocations(function: &str) -> Vec<(String, serde_json::Value)> {
    let recording = moto_api("GET", "/moto-api/recorder/download-recording", "").await;
    let path = format!("/2015-03-31/functions/{function}/invocations");
    recording
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|r| r["method"] == "POST" && r["url"].as_str().is_some_and(|u| u.contains(&path)))
        .map(|r| {
            let kind = r["headers"]
                .as_object()
                .and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-invocation-type"))
                })
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("RequestResponse")
                .to_owned();
            let body = r["body"].as_str().expect("recorded body");
            let bytes = if r["body_encoded"] == true {
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .expect("base64")
            } else {
                body.as_bytes().to_vec()
            };
            (
                kind,
                serde_json::from_slice(&bytes).expect("a JSON payload"),
            )
        })
        .collect()
}

async fn silver(stores: &Stores, hours: &[i64]) -> Vec<SilverEvent> {
    let mut all = Vec::new();
    for h in hours {
        all.extend(stores.silver.hour_events(*h).await.expect("hour"));
    }
    // The origin names the object version, which differs between the two stores.
    for e in &mut all {
        e.origin.clear();
    }
    all.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_continues_by_invoking_the_function_through_the_lambda_api() {
    let run = hex::encode(rand::random::<[u8; 4]>());
    let names = AwsNames {
        silver_table: format!("silver-selfinvoke-{run}"),
        cube_table: format!("cube-selfinvoke-{run}"),
        catalog_table: format!("catalog-selfinvoke-{run}"),
        bronze_bucket: require("STREAMCUBE_TEST_BRONZE_BUCKET"),
        lake_bucket: require("STREAMCUBE_TEST_LAKE_BUCKET"),
        glue_database: format!("streamcube_selfinvoke_{run}"),
        glue_table: "cube".into(),
        retention_days: Some(400),
    };
    let aws = AwsBackend::connect(names.clone()).await;
    provision::create_tables(&aws.dynamo, &aws.names)
        .await
        .expect("tables");
    let on_aws = pipeline(aws.stores().expect("stores"));

    // A generated file, with duplicates and broken rows, in the bronze bucket (versioned).
    let cfg = streamcube_datagen::GenConfig {
        events: 2_000,
        days: 1,
        viewers: 300,
        titles: 40,
        genres: 4,
        duplicate_rate: 0.03,
        bad_rows: 25,
        seed: 11,
        ..streamcube_datagen::GenConfig::default()
    };
    let mut bytes = Vec::new();
    streamcube_datagen::write_events(&cfg, &mut bytes, |_| {}).expect("generate");
    let key = format!("events/selfinvoke-{run}/big.csv");
    let put = on_aws
        .stores
        .bronze
        .put(&Path::from(key.as_str()), bytes.clone().into())
        .await
        .expect("landed");
    let version = put.version.expect("the test bucket is versioned");

    // The reference: the same bytes in one run on the embedded backend.
    let dir = tempfile::tempdir().expect("tmp");
    let single = pipeline(EmbeddedBackend::open(dir.path()).expect("open").stores());
    single
        .stores
        .bronze
        .put(&Path::from(key.as_str()), bytes.into())
        .await
        .expect("landed locally");
    let reference = single
        .process_object(&key, Some("v1"))
        .await
        .expect("single run")
        .report;
    assert_eq!(reference.counts.rows, 2_025);

    // Every invocation stops after 600 rows and invokes the function with the rest.
    moto_api(
        "POST",
        "/moto-api/config",
        r#"{"lambda": {"use_docker": false}}"#,
    )
    .await;
    let function = format!("bronze-processor-{run}");
    let lambda_config = aws_config::load_from_env().await;
    let continuation = SelfInvoke::new(
        aws_sdk_lambda::Client::new(&lambda_config),
        function.clone(),
    );
    let mut event: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/../../events/s3-put-events-csv.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture"),
    )
    .expect("json");
    event["Records"]
        .as_array_mut()
        .expect("records")
        .truncate(1);
    event["Records"][0]["s3"]["bucket"]["name"] = names.bronze_bucket.clone().into();
    event["Records"][0]["s3"]["object"]["key"] = key.clone().into();
    event["Records"][0]["s3"]["object"]["versionId"] = version.clone().into();
    let mut next: Input = serde_json::from_value(event).expect("an S3 event");
    let mut handed = 0;
    let last: Summary = loop {
        moto_api("POST", "/moto-api/recorder/reset-recording", "").await;
        moto_api("POST", "/moto-api/recorder/start-recording", "").await;
        let summary = process(&on_aws, &continuation, next, Budget::RowsPerPart(600)).await;
        moto_api("POST", "/moto-api/recorder/stop-recording", "").await;
        let summary = summary.expect("invocation");
        if summary.objects[0].status != Status::Continued {
            assert!(
                invocations(&function).await.is_empty(),
                "no hand-off at the end"
            );
            break summary;
        }
        handed += 1;
        let sent = invocations(&function).await;
        assert_eq!(sent.len(), 1, "one invocation per hand-off: {sent:?}");
        let (kind, payload) = sent.into_iter().next().expect("one");
        assert_eq!(kind, "Event", "asynchronous, so the run can end");
        assert_eq!(
            payload["streamcube_continue"]["key"].as_str(),
            Some(key.as_str())
        );
        next = serde_json::from_value(payload).expect("the handler's own input");
        assert!(matches!(next, Input::Continue(_)));
    };
    assert_eq!(handed, 2_025_usize.div_ceil(600) - 1);
    assert_eq!(last.objects[0].status, Status::Processed);
    let report = last.objects[0].report.clone().expect("report");
    assert_eq!(report.counts, reference.counts);
    let first = streamcube_model::query::first_hour(cfg.start);
    let hours: Vec<i64> = (first..first + 24).collect();
    assert_eq!(
        silver(&on_aws.stores, &hours).await,
        silver(&single.stores, &hours).await
    );
    // The object is in the ledger: its notification delivered again changes nothing.
    let done = on_aws
        .stores
        .ledger
        .processed(&key, &version)
        .await
        .expect("ledger")
        .expect("recorded as processed");
    assert_eq!(done, reference.counts);
}
