//! Load across namespaces (issue 12, points 7 and 8), for `flotilla-bench namespaces`:
//! put throughput of the same clients into one namespace and spread over many, and the
//! latency of a light writer into one namespace alone and while a heavy writer loads another.
//!
//! Every run records where the leaders of the namespaces it writes to were when it started,
//! and how many of its clients entered through their namespace's leader (the others were
//! forwarded), since both change what a run measures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stats::{percentile, ratio};

/// One client of a run: the node it enters through and the namespace it writes to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index of the node the client sends its puts to.
    pub node: usize,
    /// The namespace it writes to.
    pub ns: String,
}

/// The figures of one timed load run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadRun {
    /// Clients of the run.
    pub clients: usize,
    /// Namespaces they wrote to.
    pub namespaces: usize,
    /// Clients whose entry node led their namespace when the run started (not forwarded).
    pub to_leader: usize,
    /// Leaders of the run's namespaces per node when the run started.
    pub leaders_per_node: Vec<usize>,
    /// Puts acknowledged.
    pub ok: u64,
    /// Puts that failed or timed out.
    pub errors: u64,
    /// Acknowledged puts per second.
    pub rate: f64,
    /// Latency of acknowledged puts: median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Load average (1 min) when the run ended.
    pub load1: f64,
    /// CPU each agent used during the run, % of one core (filled by the caller, which knows
    /// the processes).
    pub cpu_pct: Vec<f64>,
    /// Failed puts by error code (`connect` when the node could not be reached or the client
    /// timed out).
    pub error_codes: BTreeMap<String, u64>,
}

/// Throughput of the same clients into one namespace, then spread over many.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// All clients into one namespace.
    pub one: LoadRun,
    /// The clients spread over many namespaces.
    pub many: LoadRun,
}

/// A light writer into one namespace, alone and next to a heavy writer into another.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Isolation {
    /// The light writer's namespace and its leader's node index.
    pub light_ns: (String, Option<usize>),
    /// The heavy writer's namespace and its leader's node index.
    pub heavy_ns: (String, Option<usize>),
    /// The light writer alone.
    pub alone: LoadRun,
    /// The light writer while the heavy one runs.
    pub loaded: LoadRun,
    /// The heavy writer.
    pub heavy: LoadRun,
    /// `loaded.p99_ms / alone.p99_ms` (the goal: at most 2).
    pub p99_ratio: Option<f64>,
}

/// Where the leaders are: namespace -> index of the node leading it.
pub type LeaderMap = BTreeMap<String, usize>;

/// Clients `0..clients` writing into `spread` namespaces (`names(i)` for `i < spread`), client
/// `c` into namespace `c % spread`; through the leader when `to_leader` (and it is known),
/// otherwise through node `c % nodes`.
pub fn spread_targets(
    clients: usize,
    spread: usize,
    nodes: usize,
    to_leader: bool,
    leaders: &LeaderMap,
    names: impl Fn(usize) -> String,
) -> Vec<Target> {
    (0..clients)
        .map(|c| {
            let ns = names(c % spread.max(1));
            let node = match leaders.get(&ns) {
                Some(&l) if to_leader => l,
                _ => c % nodes.max(1),
            };
            Target { node, ns }
        })
        .collect()
}

/// Put `value_len`-byte values for `duration` from one task per target, keys prefixed with
/// `prefix`, and gather the figures.
pub async fn drive(
    nodes: &[flotilla_http::Client],
    targets: &[Target],
    leaders: &LeaderMap,
    duration: Duration,
    prefix: &str,
) -> LoadRun {
    let mut run = describe(nodes.len(), targets, leaders);
    let stop = Instant::now() + duration;
    let value = Arc::new(vec![b'v'; 256]);
    let mut tasks = Vec::with_capacity(targets.len());
    for (c, t) in targets.iter().enumerate() {
        let (client, ns, value, prefix) = (nodes[t.node].clone(), t.ns.clone(), value.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), BTreeMap::<String, u64>::new());
            let mut n = 0u64;
            while Instant::now() < stop {
                let t0 = Instant::now();
                match client.put(&ns, &format!("{prefix}c{c}-{n}"), value.to_vec()).await {
                    Ok(_) => lat.push(t0.elapsed().as_secs_f64() * 1e3),
                    Err(e) => *errors.entry(e.code().unwrap_or("connect").to_string()).or_default() += 1,
                }
                n += 1;
            }
            (lat, errors)
        }));
    }
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            for (code, n) in e {
                run.errors += n;
                *run.error_codes.entry(code).or_default() += n;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    run.ok = lat.len() as u64;
    run.rate = run.ok as f64 / secs;
    run.p50_ms = percentile(&lat, 50.0).unwrap_or(0.0);
    run.p99_ms = percentile(&lat, 99.0).unwrap_or(0.0);
    run.max_ms = lat.last().copied().unwrap_or(0.0);
    run.load1 = load1();
    run
}

/// One put into every namespace of `targets` (through the node of its first client), so that
/// a timed run does not start with quiesced groups waking.
pub async fn warm_up(nodes: &[flotilla_http::Client], targets: &[Target]) {
    let mut seen = BTreeMap::new();
    for t in targets {
        seen.entry(t.ns.clone()).or_insert(t.node);
    }
    let tasks: Vec<_> = seen
        .into_iter()
        .map(|(ns, node)| {
            let client = nodes[node].clone();
            tokio::spawn(async move { client.put(&ns, "warm-up", b"x".to_vec()).await.is_ok() })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// The light writer (`light` targets) alone for `duration`, then again while the heavy
/// writer (`heavy` targets) runs from one second before until one second after it.
pub async fn isolation(
    nodes: &[flotilla_http::Client],
    light: &[Target],
    heavy: &[Target],
    leaders: &LeaderMap,
    duration: Duration,
) -> Isolation {
    let leader_of = |t: &[Target]| {
        let ns = t.first().map(|t| t.ns.clone()).unwrap_or_default();
        let l = leaders.get(&ns).copied();
        (ns, l)
    };
    let (light_ns, heavy_ns) = (leader_of(light), leader_of(heavy));
    warm_up(nodes, light).await;
    warm_up(nodes, heavy).await;
    let alone = drive(nodes, light, leaders, duration, "iso-alone-").await;
    let heavy_run = {
        let (nodes, heavy, leaders) = (nodes.to_vec(), heavy.to_vec(), leaders.clone());
        let longer = duration + Duration::from_secs(2);
        tokio::spawn(async move { drive(&nodes, &heavy, &leaders, longer, "iso-heavy-").await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = drive(nodes, light, leaders, duration, "iso-loaded-").await;
    let heavy = heavy_run.await.unwrap_or_default();
    Isolation { light_ns, heavy_ns, p99_ratio: ratio(loaded.p99_ms, alone.p99_ms), alone, loaded, heavy }
}

/// Clients that entered through their namespace's leader, and leaders per node of the
/// namespaces the targets write to.
fn describe(nodes: usize, targets: &[Target], leaders: &LeaderMap) -> LoadRun {
    let mut per_node = vec![0; nodes];
    let mut namespaces: Vec<&str> = targets.iter().map(|t| t.ns.as_str()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in &namespaces {
        if let Some(&l) = leaders.get(*ns) {
            if let Some(n) = per_node.get_mut(l) {
                *n += 1;
            }
        }
    }
    LoadRun {
        clients: targets.len(),
        namespaces: namespaces.len(),
        to_leader: targets.iter().filter(|t| leaders.get(&t.ns) == Some(&t.node)).count(),
        leaders_per_node: per_node,
        ..Default::default()
    }
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_targets_round_robin_or_to_leader() {
        let leaders: LeaderMap = [("a0".to_string(), 2), ("a1".to_string(), 0)].into();
        let names = |i: usize| format!("a{i}");
        let t = spread_targets(4, 2, 3, false, &leaders, names);
        assert_eq!(
            t.iter().map(|t| (t.node, t.ns.as_str())).collect::<Vec<_>>(),
            [(0, "a0"), (1, "a1"), (2, "a0"), (0, "a1")]
        );
        let t = spread_targets(4, 2, 3, true, &leaders, names);
        assert!(t.iter().all(|t| leaders[&t.ns] == t.node));
    }

    #[test]
    fn describe_counts_leaders_and_direct_clients() {
        let leaders: LeaderMap = [("a0".to_string(), 2), ("a1".to_string(), 0)].into();
        let t = spread_targets(4, 2, 3, false, &leaders, |i| format!("a{i}"));
        let d = describe(3, &t, &leaders);
        assert_eq!((d.clients, d.namespaces, d.to_leader), (4, 2, 2));
        assert_eq!(d.leaders_per_node, [1, 0, 1]);
    }
}
