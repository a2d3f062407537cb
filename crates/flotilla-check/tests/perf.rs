//! The checker is fast on histories of the size a chaos run produces.

mod support;

use std::time::{Duration, Instant};

use flotilla_check::{check_all, Budget};
use support::{generate, Shape};

#[test]
fn five_clients_forty_ops_four_keys_check_quickly() {
    let started = Instant::now();
    for seed in 0..20 {
        let h = generate(seed, &Shape { clients: 5, ops_per_client: 40, keys: 4, max_latency_us: 2_000 });
        let report = check_all(&h, Budget::default());
        assert!(report.is_linearizable(), "{report}");
    }
    // About a millisecond per history in release builds; the bound is for loaded debug CI.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}
