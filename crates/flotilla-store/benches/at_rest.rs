//! The cost of encryption at rest: the same workloads on a plaintext store and on a sealed one,
//! plus the raw XChaCha20-Poly1305 seal/open rate. A benchmark, not a test: the numbers depend on the
//! disk and the CPU (AES-NI).
//!
//! Run: `cargo bench -p flotilla-store --bench at_rest`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use flotilla_core::KvStateMachine;
use flotilla_store::{AtRestCipher, AtRestKey, Store, StoreOptions};

const VALUE: usize = 1024;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    raw_cipher_rate();
    for sealed in [false, true] {
        runtime.block_on(workloads(sealed));
    }
}

fn cipher() -> Arc<AtRestCipher> {
    Arc::new(AtRestCipher::new([AtRestKey { id: [1; 8], key: [7; 32] }], [1; 8]).unwrap())
}

fn raw_cipher_rate() {
    let c = cipher();
    for size in [100usize, VALUE, 64 * 1024] {
        let plain = vec![0x5au8; size];
        let n = (256 * 1024 * 1024 / size).min(200_000);
        let started = Instant::now();
        let mut sealed = Vec::new();
        for _ in 0..n {
            sealed = c.seal(b"kv/bench\0key", &plain).unwrap();
        }
        let seal_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        for _ in 0..n {
            c.open(b"kv/bench\0key", &sealed).unwrap();
        }
        let open_s = started.elapsed().as_secs_f64();
        println!(
            "raw {size:>6} B: seal {:.2} µs ({:.0} MB/s), open {:.2} µs ({:.0} MB/s)",
            seal_s * 1e6 / n as f64,
            (n * size) as f64 / seal_s / 1e6,
            open_s * 1e6 / n as f64,
            (n * size) as f64 / open_s / 1e6
        );
    }
}

async fn workloads(sealed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let at_rest = sealed.then(cipher);
    let store = Store::open_with(dir.path(), StoreOptions { at_rest, ..StoreOptions::default() }).unwrap();
    let label = if sealed { "sealed   " } else { "plaintext" };
    grouped_appends(&store, label).await;
    apply_batches(&store, label).await;
    store.shutdown();
}

/// 64 groups appending 1 KiB entries at once: the writer groups them into shared commits.
async fn grouped_appends(store: &Arc<Store>, label: &str) {
    const GROUPS: usize = 64;
    const APPENDS: u64 = 100;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for g in 0..GROUPS {
        let mut log = store.log_store(&ns(&format!("g{g}"))).unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 1..=APPENDS {
                append(&mut log, vec![normal(1, i, None, vec![0u8; VALUE])]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label} {GROUPS} groups x {APPENDS} appends of {VALUE} B: {:.0} appends/s",
        (GROUPS as u64 * APPENDS) as f64 / secs
    );
}

/// Apply batches of 100 KV writes (1 KiB values, request ids) to one namespace.
async fn apply_batches(store: &Arc<Store>, label: &str) {
    const BATCHES: u64 = 200;
    const PER_BATCH: u64 = 100;
    let a = ns("apply");
    let mut sm = store.state_machine(&a, Arc::new(KvStateMachine)).unwrap();
    let value = vec![0x42u8; VALUE];
    let started = Instant::now();
    for b in 0..BATCHES {
        let entries = (0..PER_BATCH)
            .map(|i| {
                let index = b * PER_BATCH + i + 1;
                normal(1, index, rid(1, index), set(format!("key/{}", index % 5000).as_bytes(), &value))
            })
            .collect();
        apply(&mut sm, entries).await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label} apply {BATCHES} batches of {PER_BATCH} writes of {VALUE} B: {:.0} writes/s",
        (BATCHES * PER_BATCH) as f64 / secs
    );
}
