//! A bronze object read more slowly than any request deadline still arrives whole: the stream
//! waits while silver's writes are behind, and only a stall (the emulator sending nothing while
//! the reader waits) may time out. Run against the emulator with the timeouts scaled down from
//! their defaults (30 s stall, 15 min of resumptions) to a 1 s stall and 2 s of resumptions, and
//! a reader that takes over 6 s: with a deadline on the whole request, as the S3 client has by
//! default, the same read fails.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use streamcube_aws::{AwsBackend, S3Timeouts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_read_object_arrives_whole() {
    let mut aws = AwsBackend::connect(common::names("slow")).await;
    aws.s3_timeouts = S3Timeouts {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(1),
        retry_window: Duration::from_secs(2),
    };
    let bronze = aws.stores().expect("stores").bronze;

    // 16 MiB: more than the loopback socket buffers hold, so the emulator is still sending
    // while the reader pauses.
    let body: Vec<u8> = (0..16u32 << 20)
        .map(|i| b"0123456789abcdef,\n"[(i % 18) as usize])
        .collect();
    let path = Path::from(format!(
        "events/slow-{}.csv",
        hex::encode(rand::random::<[u8; 4]>())
    ));
    bronze
        .put(&path, PutPayload::from(body.clone()))
        .await
        .expect("put");

    let started = Instant::now();
    let mut stream = bronze.get(&path).await.expect("get").into_stream();
    let mut got = Vec::with_capacity(body.len());
    let mut next_pause = 1 << 20;
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.expect("the stream is not cut"));
        if got.len() >= next_pause {
            // The reader is busy (writing rows) for 400 ms of every MiB.
            tokio::time::sleep(Duration::from_millis(400)).await;
            next_pause += 1 << 20;
        }
    }
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(6),
        "the read took {took:?}: too fast to prove anything"
    );
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the bytes read differ from the bytes put");
    bronze.delete(&path).await.expect("delete");
}
