//! Load generation: client handles of both systems, the workload cases, the timed runs, and the
//! formation probe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde::Serialize;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::cluster::{connect_etcd, Cluster, Protocol, NS};
use crate::stats::RunFigures;

/// Value size of every put, bytes.
pub const VALUE_SIZE: usize = 256;
/// First key number of the put cases: far above the preloaded keys (0..preload), so every put
/// of the run writes a key that did not exist.
pub const PUT_KEY_BASE: u64 = 0x1000_0000;

/// The 8-byte key of number `n` (lower-case hex, zero-padded; numbers above `u32::MAX` wrap).
pub fn key(n: u64) -> String {
    format!("{:08x}", n & 0xffff_ffff)
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadLevel {
    /// etcd's default range; Flotilla `consistency=linearizable`.
    Linearizable,
    /// etcd `serializable`; Flotilla `consistency=stale`.
    Serializable,
}

/// What a case does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Put distinct sequential keys.
    Put,
    /// Get preloaded keys, cycling through them.
    Get(ReadLevel),
}

/// One workload shape.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// Short id, `a`..`e`.
    pub id: &'static str,
    /// One-line description.
    pub title: &'static str,
    /// What each operation is.
    pub op: Op,
    /// Concurrent clients (each with one request in flight).
    pub clients: usize,
    /// Client connections (handles) the clients share; see [`Handle`].
    pub conns: usize,
    /// Operations in the run.
    pub ops: u64,
}

/// The five reference shapes at full size.
pub fn reference_cases() -> Vec<Case> {
    use Op::*;
    use ReadLevel::*;
    vec![
        Case { id: "a", title: "put, 1 client", op: Put, clients: 1, conns: 1, ops: 10_000 },
        Case { id: "b", title: "put, 64 clients / 8 conns", op: Put, clients: 64, conns: 8, ops: 100_000 },
        Case { id: "c", title: "put, 256 clients / 32 conns", op: Put, clients: 256, conns: 32, ops: 200_000 },
        Case {
            id: "d",
            title: "linearizable get, 64 clients",
            op: Get(Linearizable),
            clients: 64,
            conns: 8,
            ops: 100_000,
        },
        Case {
            id: "e",
            title: "serializable get, 64 clients",
            op: Get(Serializable),
            clients: 64,
            conns: 8,
            ops: 100_000,
        },
    ]
}

/// Keys preloaded for the read cases at full size.
pub const PRELOAD_KEYS: u64 = 100_000;
// The put keys never meet the preloaded ones, even at the largest scale (10).
const _: () = assert!(PUT_KEY_BASE > PRELOAD_KEYS * 10);

/// `n` scaled by `scale`, at least 1.
pub fn scaled(n: u64, scale: f64) -> u64 {
    ((n as f64 * scale).round() as u64).max(1)
}

/// A client connection to one member.
///
/// etcd's API (etcd, or Flotilla's etcd endpoint): an `etcd_client` KV client bound to that one endpoint, i.e. one HTTP/2 connection
/// that multiplexes every request of the clients sharing it. Flotilla's HTTP API: a `flotilla_http::Client`
/// (a reqwest/hyper keep-alive pool for that node); HTTP/1.1 cannot multiplex, so the pool
/// holds one TCP connection per request in flight and reuses them.
#[derive(Clone)]
pub enum Handle {
    /// etcd gRPC (boxed: it is much larger than the HTTP client).
    Etcd(Box<etcd_client::KvClient>),
    /// Flotilla HTTP.
    Flotilla(flotilla_http::Client),
}

impl Handle {
    /// A handle speaking `protocol` to the member at `addr`, with a per-request timeout.
    pub async fn connect(protocol: Protocol, addr: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(match protocol {
            Protocol::EtcdGrpc => Handle::Etcd(Box::new(connect_etcd(addr, timeout).await?.kv_client())),
            Protocol::FlotillaHttp => Handle::Flotilla(flotilla_http::Client::new(addr, timeout)),
        })
    }

    /// Put `value` under `key`; acknowledged once committed.
    pub async fn put(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match self {
            Handle::Etcd(kv) => {
                kv.put(key, value, None).await?;
            }
            Handle::Flotilla(c) => {
                c.put(NS, key, value.to_vec()).await?;
            }
        }
        Ok(())
    }

    /// Read `key`; the value's length, `None` when the key is absent.
    pub async fn get(&mut self, key: &str, level: ReadLevel) -> anyhow::Result<Option<usize>> {
        match self {
            Handle::Etcd(kv) => {
                let options = match level {
                    ReadLevel::Linearizable => None,
                    ReadLevel::Serializable => Some(etcd_client::GetOptions::new().with_serializable()),
                };
                let r = kv.get(key, options).await?;
                Ok(r.kvs().first().map(|kv| kv.value().len()))
            }
            Handle::Flotilla(c) => {
                let consistency = match level {
                    ReadLevel::Linearizable => "linearizable",
                    ReadLevel::Serializable => "stale",
                };
                Ok(c.get(NS, key, consistency).await?.value.map(|v| v.len()))
            }
        }
    }
}

/// Where the keys of a run come from.
#[derive(Debug, Clone, Copy)]
pub enum Keys {
    /// Operation `i` uses key `base + i`.
    Sequential {
        /// First key number.
        base: u64,
    },
    /// Operation `i` uses key `i % count` (the preloaded keys).
    Cycle {
        /// Number of preloaded keys.
        count: u64,
    },
}

impl Keys {
    fn number(self, i: u64) -> u64 {
        match self {
            Keys::Sequential { base } => base + i,
            Keys::Cycle { count } => i % count.max(1),
        }
    }
}

/// What a timed run measured, plus the first error seen (for diagnosis).
#[derive(Debug)]
pub struct RunOutcome {
    /// The figures.
    pub figures: RunFigures,
    /// The first error, if any operation failed.
    pub first_error: Option<String>,
}

/// Run `ops` operations of `op` with `clients` clients sharing `conns` connection groups
/// against `cluster`. A connection group holds one [`Handle`] per member; client `c` uses group
/// `c % conns` and sends its successive operations to the members in turn (starting at member
/// `c % 3`), so load is spread over all members whatever the counts. Every client first sends
/// one untimed read to each member (connections are open before the clock starts), then all
/// start together.
pub async fn run(
    cluster: &Cluster,
    op: Op,
    clients: usize,
    conns: usize,
    ops: u64,
    keys: Keys,
    timeout: Duration,
) -> anyhow::Result<RunOutcome> {
    if clients == 0 || conns == 0 {
        bail!("need at least one client and one connection");
    }
    let addrs = cluster.load_addrs();
    let members = addrs.len();
    let mut groups = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut group = Vec::with_capacity(members);
        for addr in &addrs {
            group.push(Handle::connect(cluster.protocol(), addr, timeout).await?);
        }
        groups.push(group);
    }
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let start = Arc::new(Barrier::new(clients + 1));
    let value: Arc<[u8]> = vec![b'v'; VALUE_SIZE].into();
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let mut handles = groups[c % conns].clone();
        let (next, errors, first_error, start, value) =
            (next.clone(), errors.clone(), first_error.clone(), start.clone(), value.clone());
        tasks.spawn(async move {
            let record = |e: anyhow::Error| {
                errors.fetch_add(1, Ordering::Relaxed);
                let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| format!("{e:#}"));
            };
            // Warm-up: open this client's connection to every member (errors do not count).
            for h in handles.iter_mut() {
                let _ = h.get(&key(u64::from(u32::MAX)), ReadLevel::Serializable).await;
            }
            start.wait().await;
            let mut latencies = Vec::new();
            let mut member = c % members;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let k = key(keys.number(i));
                let h = &mut handles[member];
                member = (member + 1) % members;
                let t = Instant::now();
                match op {
                    Op::Put => match h.put(&k, &value).await {
                        Ok(()) => latencies.push(t.elapsed().as_nanos() as u64),
                        Err(e) => record(e),
                    },
                    Op::Get(level) => match h.get(&k, level).await {
                        Ok(Some(VALUE_SIZE)) => latencies.push(t.elapsed().as_nanos() as u64),
                        Ok(other) => record(anyhow!("key {k}: value of {other:?} bytes, want {VALUE_SIZE}")),
                        Err(e) => record(e),
                    },
                }
            }
            latencies
        });
    }
    start.wait().await;
    let started = Instant::now();
    let mut all = Vec::with_capacity(usize::try_from(ops).unwrap_or(0));
    while let Some(done) = tasks.join_next().await {
        all.extend(done?);
    }
    let elapsed = started.elapsed();
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok(RunOutcome { figures: RunFigures::from_samples(all, errors.load(Ordering::Relaxed), elapsed), first_error })
}

/// Time from `cluster.started` until the first acknowledged put: a new attempt every 20 ms
/// (round robin over the members, each with a 2 s timeout, at most 100 in flight) so the
/// answer does not depend on how either system treats a request sent before it is ready.
pub async fn first_write(cluster: &mut Cluster, deadline: Duration) -> anyhow::Result<Duration> {
    let addrs = cluster.load_addrs();
    let system = cluster.system;
    let protocol = cluster.protocol();
    let until = cluster.started + deadline;
    let mut attempts = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= until {
                    bail!(
                        "no write acknowledged by the {} cluster within {deadline:?} (logs in {})",
                        system.name(),
                        cluster.dir().display()
                    );
                }
                cluster.check_running()?;
                if attempts.len() < 100 {
                    let addr = addrs[n % addrs.len()].clone();
                    let k = key(0xf000_0000 + n as u64);
                    n += 1;
                    attempts.spawn(async move {
                        let attempt = async {
                            let mut h = Handle::connect(protocol, &addr, Duration::from_secs(2)).await?;
                            h.put(&k, b"formed").await
                        };
                        tokio::time::timeout(Duration::from_secs(2), attempt).await.ok()?.ok()?;
                        Some(Instant::now())
                    });
                }
            }
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                if let Some(at) = done? {
                    attempts.abort_all();
                    return Ok(at.saturating_duration_since(cluster.started));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_eight_bytes_and_distinct() {
        assert_eq!(key(0), "00000000");
        assert_eq!(key(PUT_KEY_BASE + 1), "10000001");
        assert_eq!(key(0xffff_ffff).len(), 8);
        assert_eq!(Keys::Sequential { base: 10 }.number(5), 15);
        assert_eq!(Keys::Cycle { count: 100 }.number(205), 5);
        assert_eq!(Keys::Cycle { count: 0 }.number(7), 0, "no division by zero");
    }

    #[test]
    fn cases_scale_and_keep_their_shape() {
        let cases = reference_cases();
        assert_eq!(cases.iter().map(|c| c.id).collect::<Vec<_>>(), ["a", "b", "c", "d", "e"]);
        assert_eq!(scaled(10_000, 0.1), 1_000);
        assert_eq!(scaled(10_000, 0.000_001), 1, "never zero operations");
        assert_eq!(scaled(200_000, 1.0), 200_000);
    }
}
