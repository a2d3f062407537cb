//! Throughput figures of the group-commit writer: sequential appends against many groups
//! appending at once. A benchmark, not a test: the numbers depend on the disk.
//!
//! Run: `cargo bench -p flotilla-store --bench group_commit`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(sequential_vs_grouped_appends());
}

async fn sequential_vs_grouped_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    // One writer, one append at a time: every append is its own commit.
    const SEQUENTIAL: u64 = 1000;
    let mut log = store.log_store(&ns("sequential")).unwrap();
    let started = Instant::now();
    for i in 1..=SEQUENTIAL {
        append(&mut log, vec![normal(1, i, None, vec![0u8; 100])]).await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let m = store.metrics();
    println!(
        "sequential: {SEQUENTIAL} appends in {secs:.2}s = {:.0} appends/s, {} commits, mean commit {:.0} µs",
        SEQUENTIAL as f64 / secs,
        m.commits,
        m.commit_latency_us_sum as f64 / m.commits as f64
    );

    // Many groups appending at once: the writer groups them.
    for groups in [8usize, 64, 256] {
        const APPENDS: u64 = 100;
        let before = store.metrics();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for g in 0..groups {
            let mut log = store.log_store(&ns(&format!("g{groups}-{g}"))).unwrap();
            tasks.push(tokio::spawn(async move {
                for i in 1..=APPENDS {
                    append(&mut log, vec![normal(1, i, None, vec![0u8; 100])]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let after = store.metrics();
        let ops = after.ops - before.ops;
        let commits = after.commits - before.commits;
        println!(
            "{groups} groups: {ops} appends in {secs:.2}s = {:.0} appends/s, {commits} commits ({:.0} commits/s), {:.1} appends/commit, mean commit {:.0} µs",
            ops as f64 / secs,
            commits as f64 / secs,
            ops as f64 / commits as f64,
            (after.commit_latency_us_sum - before.commit_latency_us_sum) as f64 / commits as f64
        );
    }
}
