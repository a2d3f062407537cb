//! `flotilla bench`: put and get load against running nodes over HTTP, with latency figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_http::Client;

/// Options of `flotilla bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// HTTP addresses of the nodes; clients are spread over all of them.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072")]
    addrs: Vec<String>,
    /// Namespace.
    #[arg(long, short = 'n', default_value = flotilla_core::config::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Total operations.
    #[arg(long, default_value_t = 10_000)]
    ops: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// `put`, `get` (linearizable) or `stale-get`.
    #[arg(long, default_value = "put")]
    workload: String,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.addrs.is_empty() && args.clients > 0, "need at least one address and one client");
    let consistency = match args.workload.as_str() {
        "put" => None,
        "get" => Some("linearizable"),
        "stale-get" => Some("stale"),
        other => anyhow::bail!("unknown workload {other:?}"),
    };
    let next = Arc::new(AtomicU64::new(0));
    let value = vec![b'x'; args.value_size];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = Client::new(&args.addrs[c % args.addrs.len()], Duration::from_secs(30));
        let (next, value, ns, total) = (next.clone(), value.clone(), args.namespace.clone(), args.ops);
        let consistency = consistency.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let key = format!("{:08x}", i);
                let t = Instant::now();
                let ok = match &consistency {
                    None => client.put(&ns, &key, value.clone()).await.is_ok(),
                    Some(level) => client.get(&ns, &key, level).await.is_ok(),
                };
                latencies.push(t.elapsed());
                errors += u64::from(!ok);
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied();
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0);
    println!(
        "{} clients={} ops={} errors={} throughput={:.0} ops/s p50={:.2} ms p99={:.2} ms max={:.2} ms",
        args.workload,
        args.clients,
        all.len(),
        errors,
        all.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(all.last().copied()),
    );
    Ok(())
}
