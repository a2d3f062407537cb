//! Automatic compaction keeps the configured history and compacts the rest.

mod common;

use std::time::Duration;

use common::Harness;
use flotilla::{ApiError, Config, Consistency};

const NS: &str = "default";

fn keep_ten(c: &mut Config) {
    c.compact_keep_revisions = 10;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_compacts_history_beyond_the_kept_revisions() {
    let h = Harness::start(3, 61, &[NS], keep_ten).await;
    let l = h.leader(NS).await;
    let c = h.cluster(l, NS);
    let mut last = 0;
    for i in 0..50u32 {
        last = c.set(b"k", &i.to_be_bytes()).await.unwrap().revision;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Compactions may run while the writes go on; once they stop, one reaches the last
    // revision minus the kept ten (give or take the batch of one).
    let compacted = loop {
        match c.get_at(b"k", 1, Consistency::Linearizable).await {
            Err(ApiError::Compacted { compacted, .. }) if compacted >= last - 11 => break compacted,
            Ok(_) | Err(ApiError::Compacted { .. }) => {
                assert!(tokio::time::Instant::now() < deadline, "no automatic compaction near {last} within 30 s")
            }
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(compacted <= last - 10, "compacted to {compacted}, beyond the kept ten before {last}");
    let kept = c.get_at(b"k", last - 10, Consistency::Linearizable).await.unwrap();
    assert!(kept.value.is_some(), "the kept history still reads");
    h.shutdown().await;
}
