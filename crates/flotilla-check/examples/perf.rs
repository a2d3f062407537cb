//! Time the checker on generated histories: `cargo run --release -p flotilla-check --example perf`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use flotilla_check::{check_all, Budget};
use support::{generate, Shape};

fn main() {
    for (clients, ops, keys, latency) in
        [(5, 40, 4, 2_000), (10, 100, 4, 2_000), (20, 200, 1, 500), (20, 200, 1, 5_000)]
    {
        let shape = Shape { clients, ops_per_client: ops, keys, max_latency_us: latency };
        let started = Instant::now();
        let mut steps = 0;
        let mut undetermined = 0;
        for seed in 0..20 {
            let report = check_all(
                &generate(seed, &shape),
                Budget { max_steps: 2_000_000, max_time: std::time::Duration::from_secs(2) },
            );
            assert!(report.violations().is_empty(), "{report}");
            undetermined += report.undetermined().len();
            steps += report.keys.values().map(|k| k.steps).sum::<u64>();
        }
        println!(
            "20 histories of {clients} clients x {ops} ops x {keys} keys (latency <= {latency}us): {:?}, {steps} steps, {undetermined} undetermined keys",
            started.elapsed()
        );
    }
}
