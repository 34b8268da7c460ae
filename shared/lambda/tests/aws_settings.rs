//! A function's cold start on the AWS backend, against the local emulator that `scripts/test.sh`
//! starts: names from the environment, the key from Secrets Manager, then a write and a read
//! through the pipeline it built.

use streamcube_aws::{AwsBackend, AwsNames, provision};
use streamcube_lambda::{KeyUse, Settings};
use streamcube_model::query::{Query, QueryLimits};

fn require(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: this test needs the AWS emulator; run `scripts/test.sh`")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_on_aws_reads_the_key_from_secrets_manager() {
    require("AWS_ENDPOINT_URL");
    let run = hex::encode(rand::random::<[u8; 4]>());
    let vars = vec![
        ("STREAMCUBE_BACKEND", "aws".to_owned()),
        ("STREAMCUBE_SILVER_TABLE", format!("silver-cold-{run}")),
        ("STREAMCUBE_CUBE_TABLE", format!("cube-cold-{run}")),
        ("STREAMCUBE_CATALOG_TABLE", format!("catalog-cold-{run}")),
        (
            "STREAMCUBE_BRONZE_BUCKET",
            require("STREAMCUBE_TEST_BRONZE_BUCKET"),
        ),
        (
            "STREAMCUBE_LAKE_BUCKET",
            require("STREAMCUBE_TEST_LAKE_BUCKET"),
        ),
        ("STREAMCUBE_GLUE_DATABASE", format!("cold_{run}")),
        ("STREAMCUBE_GLUE_TABLE", "cube".to_owned()),
        ("STREAMCUBE_RETENTION_DAYS", "30".to_owned()),
        ("STREAMCUBE_SERVED_COUNTRIES", "BR,PT".to_owned()),
    ];
    let get = |secret: Option<String>| {
        let vars = vars.clone();
        move |k: &str| {
            if k == "STREAMCUBE_PSEUDONYM_SECRET_ARN" {
                return secret.clone();
            }
            vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        }
    };
    let names = AwsNames::from_env(&get(None)).expect("names");
    let aws = AwsBackend::connect(names.clone()).await;
    provision::create_tables(&aws.dynamo, &names)
        .await
        .expect("tables");

    // A function that pseudonymizes refuses to start without the key's secret...
    let settings = Settings::from_env(get(None)).expect("settings");
    let Err(err) = settings.pipeline().await else {
        panic!("a function that pseudonymizes started without its key");
    };
    assert!(
        err.to_string()
            .starts_with("STREAMCUBE_PSEUDONYM_SECRET_ARN must be set"),
        "{err}"
    );
    // ...while one that never does starts without it.
    settings
        .pipeline_for(KeyUse::None)
        .await
        .expect("a reader starts without the key");

    // The key as the stack generates it: text, not hex.
    let secret = aws
        .secrets
        .create_secret()
        .name(format!("streamcube-key-{run}"))
        .secret_string(r#"{"key_id":"k1","key":"Zq3v9XbT2mLk8sPw4nRy7uJc1aHe6dGf"}"#)
        .send()
        .await
        .expect("secret created");
    let p = Settings::from_env(get(secret.arn().map(str::to_owned)))
        .expect("settings")
        .pipeline()
        .await
        .expect("the pipeline on AWS");
    let body: Vec<serde_json::Value> = serde_json::from_str(
        r#"[{"event_id":"cold-1","occurred_at":"2026-10-05T10:00:00Z","viewer_id":"v1","content_id":"c1","device":"tv","country":"BR","watch_seconds":60,"completed":true},
            {"event_id":"cold-2","occurred_at":"2026-10-05T11:00:00Z","viewer_id":"v2","content_id":"c1","device":"web","country":"PT","watch_seconds":30,"completed":false}]"#,
    )
    .expect("json");
    let first = p.ingest_json(&body).await.expect("ingested");
    let again = p.ingest_json(&body).await.expect("resent");
    assert_eq!((first.accepted, first.duplicates), (2, 0));
    assert_eq!((again.accepted, again.duplicates), (0, 2));
    let first_hour = streamcube_model::query::first_hour(
        chrono::NaiveDate::from_ymd_opt(2026, 10, 5).expect("date"),
    );
    let days = p
        .consolidate_hours(&[first_hour + 10, first_hour + 11])
        .await
        .expect("consolidated");
    assert!(days.iter().all(|d| d.result.is_ok()), "{days:?}");
    let q = Query::from_params(
        [
            ("from", "2026-10-05"),
            ("to", "2026-10-05"),
            ("granularity", "total"),
            ("measures", "plays,unique_viewers"),
        ],
        &QueryLimits::default(),
    )
    .expect("query");
    let csv = p.query(&q).await.expect("answer").result.to_csv();
    assert_eq!(csv.lines().nth(1), Some("2,2"), "{csv}");
}
