//! `flotilla-bench ab`: two Flotilla binaries (a baseline A and a candidate B), each as its own
//! 3-node cluster on loopback, both running for the whole run, driven with the same workloads
//! in many short alternating rounds (A B, B A, A B, ...).
//!
//! These machines drift by 10-30% over minutes (other tenants, writeback, thermal), far more
//! than the differences worth measuring between two builds. Separate runs cannot resolve a 5%
//! change; rounds a few seconds apart, alternating which goes first, can: each pair of
//! adjacent rounds sees the same machine, and the median of the per-pair ratios B/A cancels the
//! drift that a ratio of two medians keeps.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::cluster::{Binaries, Cluster, System};
use crate::load::{self, reference_cases, scaled, Keys, Op, PUT_KEY_BASE};
use crate::stats::{median, RunFigures};

/// Options of `ab`.
#[derive(Debug, clap::Args)]
pub struct AbArgs {
    /// The baseline flotilla binary.
    #[arg(long)]
    a: PathBuf,
    /// The candidate flotilla binary.
    #[arg(long)]
    b: PathBuf,
    /// Put cases to run, from a,b,c (as in vs-etcd).
    #[arg(long, value_delimiter = ',', default_value = "b,c")]
    cases: Vec<String>,
    /// Rounds of each case per binary (even, so each goes first equally often).
    #[arg(long, default_value_t = 8)]
    rounds: usize,
    /// Scale every case's op count by this factor (rounds are short on purpose).
    #[arg(long, default_value_t = 0.1)]
    scale: f64,
    /// Timeout of each operation, ms.
    #[arg(long, default_value_t = 10_000)]
    op_timeout_ms: u64,
    /// Directory for the clusters' data directories (default: the system temp dir). Must be on
    /// a real disk.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One round of one binary.
struct Sample {
    throughput: f64,
    p99_ms: f64,
    cpu_ms_per_op: f64,
}

/// Run `ab` and print its table.
pub async fn run(args: AbArgs) -> anyhow::Result<()> {
    if args.rounds < 2 || !args.rounds.is_multiple_of(2) {
        bail!("--rounds must be even and at least 2, got {}", args.rounds);
    }
    if !(args.scale.is_finite() && args.scale > 0.0 && args.scale <= 10.0) {
        bail!("--scale must be in (0, 10], got {}", args.scale);
    }
    let cases: Vec<_> = reference_cases()
        .into_iter()
        .filter(|c| c.op == Op::Put && args.cases.iter().any(|w| w.trim().eq_ignore_ascii_case(c.id)))
        .collect();
    if cases.is_empty() {
        bail!("no put case selected (cases are a, b, c)");
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let bins = |flotilla: &PathBuf| Binaries { etcd: PathBuf::new(), flotilla: flotilla.clone() };
    let mut clusters = [
        Cluster::start(System::Flotilla, &bins(&args.a), &parent)?,
        Cluster::start(System::Flotilla, &bins(&args.b), &parent)?,
    ];
    for c in clusters.iter_mut() {
        load::first_write(c, Duration::from_secs(60)).await?;
        c.wait_healthy(Duration::from_secs(60)).await?;
    }
    let timeout = Duration::from_millis(args.op_timeout_ms);
    let mut next_key = [PUT_KEY_BASE; 2];
    println!(
        "A: {}\nB: {}\n{} rounds per binary, alternating; loadavg {}",
        args.a.display(),
        args.b.display(),
        args.rounds,
        crate::loadavg()
    );
    println!("| case | A ops/s | B ops/s | B/A (median of pairs) | A p99 ms | B p99 ms | A CPU ms/op | B CPU ms/op | B/A CPU |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for case in &cases {
        let ops = scaled(case.ops, args.scale);
        let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        for round in 0..args.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let c = &mut clusters[which];
                c.check_running()?;
                let cpu_before = c.cpu_seconds();
                let keys = Keys::Sequential { base: next_key[which] };
                let out = load::run(c, case.op, case.clients, case.conns, ops, keys, timeout).await?;
                next_key[which] += ops;
                if out.figures.errors > 0 {
                    bail!("({}) {} errors: {}", case.id, out.figures.errors, out.first_error.unwrap_or_default());
                }
                samples[which].push(sample(&out.figures, c.cpu_seconds() - cpu_before));
            }
        }
        print_row(case.id, &samples);
    }
    println!("loadavg at the end {}", crate::loadavg());
    Ok(())
}

fn sample(f: &RunFigures, cpu_s: f64) -> Sample {
    Sample { throughput: f.throughput, p99_ms: f.p99_ms, cpu_ms_per_op: cpu_s * 1e3 / f.ops_ok.max(1) as f64 }
}

fn print_row(case: &str, samples: &[Vec<Sample>; 2]) {
    let med = |which: usize, f: fn(&Sample) -> f64| {
        median(&samples[which].iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    let pair_ratios: Vec<f64> = samples[0].iter().zip(&samples[1]).map(|(a, b)| b.throughput / a.throughput).collect();
    let spread = {
        let mut r = pair_ratios.clone();
        r.sort_by(f64::total_cmp);
        format!("{:.2}..{:.2}", r.first().unwrap_or(&f64::NAN), r.last().unwrap_or(&f64::NAN))
    };
    let (cpu_a, cpu_b) = (med(0, |s| s.cpu_ms_per_op), med(1, |s| s.cpu_ms_per_op));
    println!(
        "| ({case}) | {:.0} | {:.0} | {:.3} (pairs {spread}) | {:.1} | {:.1} | {cpu_a:.3} | {cpu_b:.3} | {:.3} |",
        med(0, |s| s.throughput),
        med(1, |s| s.throughput),
        median(&pair_ratios).unwrap_or(f64::NAN),
        med(0, |s| s.p99_ms),
        med(1, |s| s.p99_ms),
        cpu_b / cpu_a
    );
}
