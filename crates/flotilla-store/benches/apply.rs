//! What applying a put costs the store, with the KV state machine (revisions: a current row, an
//! event row, the revision row) next to a plain state machine that stores the value under its
//! key and nothing else (what a put cost before revisions). Both decode the same command and
//! carry a request id, so the difference is the revision model's own work. A benchmark, not a
//! test: the figures depend on the machine; compare the two lines of one run.
//!
//! Run: `cargo bench -p flotilla-store --bench apply`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use flotilla_core::kv::TxnOp;
use flotilla_core::{ApplyContext, KvCommand, KvStateMachine, StateMachine, StateTable};
use rand::{Rng, SeedableRng};

/// Entries applied per case.
const ENTRIES: u64 = 100_000;
/// Rounds of each case, alternating; the median is compared.
const ROUNDS: usize = 3;
/// Entries per apply call: a busy group's committed batch.
const BATCH: u64 = 32;
/// Distinct keys written (as in vs-etcd's put cases).
const KEYS: u64 = 50_000;
/// Value size, as in vs-etcd.
const VALUE_BYTES: usize = 256;

/// Stores a put's value under its key, and nothing else.
struct PlainSm;

impl StateMachine for PlainSm {
    fn apply(
        &self,
        _context: &ApplyContext,
        table: &mut dyn StateTable,
        payload: &[u8],
    ) -> io::Result<Result<Vec<u8>, String>> {
        let command: KvCommand = flotilla_core::decode(payload, u64::MAX).map_err(io::Error::other)?;
        if let KvCommand::Txn(txn) = command {
            for op in &txn.success {
                if let TxnOp::Put { key, value, .. } = op {
                    table.put(key, value)?;
                }
            }
        }
        Ok(Ok(Vec::new()))
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut plain, mut kv) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(runtime.block_on(run("plain (one row)", Arc::new(PlainSm))));
        kv.push(runtime.block_on(run("kv (revisions)", Arc::new(KvStateMachine))));
    }
    let (plain, kv) = (median(plain), median(kv));
    println!("median CPU per put: plain {plain:.1} µs, kv {kv:.1} µs, kv / plain {:.2}", kv / plain);
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Apply [`ENTRIES`] puts in batches of [`BATCH`]; prints and returns the process CPU per put, µs.
async fn run(name: &str, sm: Arc<dyn StateMachine>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut machine = store.state_machine(&ns("bench"), sm).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let value = vec![b'v'; VALUE_BYTES];
    apply(&mut machine, vec![membership(1, 1, &[1])]).await.unwrap();
    // Built first: making log ids derives a node id (an ed25519 key), which is not the store's work.
    let batches: Vec<Vec<_>> = (0..ENTRIES / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    let index = 2 + b * BATCH + i;
                    let key = format!("key-{:08}", rng.gen_range(0..KEYS));
                    normal(1, index, rid(1, index), set(key.as_bytes(), &value))
                })
                .collect()
        })
        .collect();
    let (cpu_before, started) = (cpu_secs(), Instant::now());
    for batch in batches {
        apply(&mut machine, batch).await.unwrap();
    }
    let (cpu, wall) = (cpu_secs() - cpu_before, started.elapsed().as_secs_f64());
    let per_put = cpu * 1e6 / ENTRIES as f64;
    println!(
        "{name}: {ENTRIES} puts in {wall:.2} s ({:.0} puts/s), CPU {per_put:.1} µs per put",
        ENTRIES as f64 / wall
    );
    per_put
}

/// User plus system CPU time of this process so far, in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}
