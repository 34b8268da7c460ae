//! What the emulator tests share: the emulator's settings, fresh tables, scans, and a capture of
//! the process's log lines. Each test file uses part of it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use aws_sdk_dynamodb::types::AttributeValue;
use streamcube_aws::{AwsBackend, AwsNames, provision};

/// A variable `scripts/emulator.sh` sets.
pub fn require(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: these tests need the AWS emulator; run `scripts/test.sh` (it \
             starts moto_server on 127.0.0.1 and sets it), or `source scripts/emulator.sh` first"
        )
    })
}

/// Fresh table and Glue names (unique per call), and the test buckets.
pub fn names(tag: &str) -> AwsNames {
    require("AWS_ENDPOINT_URL");
    let run = format!("{tag}-{}", hex::encode(rand::random::<[u8; 4]>()));
    AwsNames {
        silver_table: format!("silver-{run}"),
        cube_table: format!("cube-{run}"),
        catalog_table: format!("catalog-{run}"),
        bronze_bucket: require("STREAMCUBE_TEST_BRONZE_BUCKET"),
        lake_bucket: require("STREAMCUBE_TEST_LAKE_BUCKET"),
        glue_database: format!("streamcube_{}", run.replace('-', "_")),
        glue_table: "cube".into(),
        retention_days: Some(400),
    }
}

/// A backend on fresh tables of the emulator.
pub async fn backend(tag: &str) -> AwsBackend {
    let aws = AwsBackend::connect(names(tag)).await;
    provision::create_tables(&aws.dynamo, &aws.names)
        .await
        .expect("tables created on the emulator");
    aws
}

/// Every item of a table.
pub async fn scan(aws: &AwsBackend, table: &str) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = aws
            .dynamo
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return items;
        }
    }
}

/// The log lines of this process, without colours.
#[derive(Clone, Default)]
pub struct Logs(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Captures the process's log lines from the first call on, with the first call's `filter`
/// (`tracing_subscriber`'s `EnvFilter` syntax).
pub fn logs(filter: &str) -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(logs.clone())
            .with_ansi(false)
            .init();
        logs
    })
}
