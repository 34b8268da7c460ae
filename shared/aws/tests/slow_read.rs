//! A bronze object read more slowly than the S3 client's deadline per request still arrives
//! whole: the reader works through its rows for as long as silver's writes take, and the
//! object is fetched in ranges that each finish at network speed. On the emulator, with the
//! deadline scaled down from 30 s to 2 s (and retries from 3 min to 4 s) and a reader pausing
//! 2.5 s after every MiB: read in 1 MiB ranges the object arrives whole; read as one response,
//! the same reader is cut.

mod common;

use std::time::Duration;

use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use streamcube_aws::{AwsBackend, S3Timeouts};
use streamcube_pipeline::bronze::object_bytes;

const MIB: usize = 1 << 20;

/// Reads the stream, pausing 2.5 s (busy writing rows) after every MiB.
async fn read_slowly<S, E>(mut stream: S) -> Result<Vec<u8>, E>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let mut got = Vec::new();
    let mut next_pause = MIB;
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk?);
        if got.len() >= next_pause {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            next_pause += MIB;
        }
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_read_object_arrives_whole() {
    let mut aws = AwsBackend::connect(common::names("slow")).await;
    aws.s3_timeouts = S3Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(2),
        retry_window: Duration::from_secs(4),
    };
    let bronze = aws.stores().expect("stores").bronze;

    // 4 MiB: more than the loopback socket buffers hold, so a single response is still being
    // sent while the reader pauses.
    let body: Vec<u8> = (0..4 * MIB)
        .map(|i| b"0123456789abcdef,\n"[i % 18])
        .collect();
    let path = Path::from(format!(
        "events/slow-{}.csv",
        hex::encode(rand::random::<[u8; 4]>())
    ));
    bronze
        .put(&path, PutPayload::from(body.clone()))
        .await
        .expect("put");
    let meta = bronze.head(&path).await.expect("head");

    let ranged = object_bytes(
        bronze.clone(),
        path.clone(),
        meta.size,
        meta.e_tag.clone(),
        MIB as u64,
    );
    let got = read_slowly(ranged)
        .await
        .expect("the ranged read is not cut");
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the bytes read differ from the bytes put");

    // The same reader on one response: the deadline cuts it (which is why ranges are used).
    let single = bronze.get(&path).await.expect("get").into_stream();
    assert!(
        read_slowly(single).await.is_err(),
        "one response read over 10 s outlived a 2 s deadline and 4 s of retries: this test proves nothing"
    );
    bronze.delete(&path).await.expect("delete");
}
