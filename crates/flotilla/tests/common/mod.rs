//! Test harness: N in-process nodes on real stores over the seeded in-process network.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use flotilla::in_process::InProcessNetwork;
use flotilla::{Cluster, Config, Namespace, Node, NodeServices, Role};
use flotilla_core::types::NodeId;
use flotilla_store::Store;
use tempfile::TempDir;
use tokio::time::Instant;

/// Generous bound for anything cluster-wide to happen on a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Harness {
    pub network: InProcessNetwork,
    pub ids: Vec<NodeId>,
    pub dirs: Vec<TempDir>,
    pub nodes: Vec<Option<Arc<Node>>>,
    pub namespaces: Vec<String>,
    pub tweak: fn(&mut Config),
    /// Per-node `--cluster-key-file` (None = no key).
    pub key_files: Vec<Option<std::path::PathBuf>>,
}

fn new_id() -> NodeId {
    libp2p_identity::Keypair::generate_ed25519().public().to_peer_id()
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

impl Harness {
    /// Start `n` nodes serving `namespaces` at once, with `--expect n` and simulated discovery.
    pub async fn start(n: usize, seed: u64, namespaces: &[&str], tweak: fn(&mut Config)) -> Harness {
        let mut h = Harness::new(n, seed, namespaces, tweak);
        for i in 0..n {
            h.boot(i).await;
        }
        for ns in namespaces {
            h.wait_voters(ns, n).await;
        }
        h
    }

    /// A harness for `n` nodes, none started yet.
    pub fn new(n: usize, seed: u64, namespaces: &[&str], tweak: fn(&mut Config)) -> Harness {
        init_tracing();
        Harness {
            network: InProcessNetwork::new(seed),
            ids: (0..n).map(|_| new_id()).collect(),
            dirs: (0..n).map(|_| tempfile::tempdir().expect("tempdir")).collect(),
            nodes: (0..n).map(|_| None).collect(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            tweak,
            key_files: vec![None; n],
        }
    }

    pub fn config_for(&self, i: usize) -> Config {
        let mut c = Config {
            data_dir: self.dirs[i].path().to_path_buf(),
            expect: Some(self.ids.len()),
            namespaces: self.namespaces.iter().map(|n| Namespace::new(n.as_str()).expect("valid ns")).collect(),
            heartbeat_ms: Some(50),
            election_min_ms: Some(300),
            election_max_ms: Some(600),
            request_timeout_ms: 8_000,
            // In-process nodes: the cluster plane counts as loopback (an exposed one needs a key).
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            ..Config::default()
        };
        c.cluster_key_file = self.key_files[i].clone();
        (self.tweak)(&mut c);
        c
    }

    /// Start (or restart) node `i` on its data directory.
    pub async fn boot(&mut self, i: usize) {
        self.boot_wrapped(i, |t| t).await
    }

    /// Start node `i` with its in-process transport wrapped by `wrap` (e.g. a spy).
    pub async fn boot_wrapped(
        &mut self,
        i: usize,
        wrap: impl FnOnce(Arc<dyn flotilla_core::Transport>) -> Arc<dyn flotilla_core::Transport>,
    ) {
        let transport = wrap(self.network.transport(self.ids[i]));
        self.boot_with(i, transport, NodeServices::default()).await
    }

    /// Start node `i` over `transport` with `services` (their discovery is replaced by the
    /// network's), e.g. another state machine.
    pub async fn boot_with(&mut self, i: usize, transport: Arc<dyn flotilla_core::Transport>, services: NodeServices) {
        let config = self.config_for(i);
        let store = open_store(&config).await;
        let services = NodeServices { discovery: vec![self.network.discovery(self.ids[i])], ..services };
        let node = Node::start_with(config, transport, store, services).await.expect("node starts");
        self.nodes[i] = Some(node);
    }

    /// Crash node `i`: it vanishes from the network and stops without any hand-off.
    pub async fn crash(&mut self, i: usize) {
        self.network.down(self.ids[i]);
        if let Some(node) = self.nodes[i].take() {
            node.halt().await;
        }
    }

    /// Reboot a crashed node on the same data directory and identity.
    pub async fn reboot(&mut self, i: usize) {
        self.network.up(self.ids[i]);
        self.boot(i).await;
    }

    /// Wipe node `i`'s data directory (it must be down).
    pub fn wipe(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "wipe a running node");
        self.dirs[i] = tempfile::tempdir().expect("tempdir");
    }

    pub fn node(&self, i: usize) -> &Arc<Node> {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn cluster(&self, i: usize, ns: &str) -> Cluster {
        self.node(i).cluster(ns).expect("namespace served")
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some()).collect()
    }

    /// Wait until the given nodes agree on one leader among them; returns its position.
    pub async fn leader_among(&self, ns: &str, among: &[usize]) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leaders: Vec<Option<NodeId>> = among.iter().map(|i| self.cluster(*i, ns).leader()).collect();
            if let Some(Some(l)) = leaders.first() {
                if leaders.iter().all(|x| *x == Some(*l)) {
                    if let Some(pos) = among.iter().position(|i| self.ids[*i] == *l) {
                        if self.cluster(among[pos], ns).state().role == Role::Leader {
                            return among[pos];
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader among {among:?} for {ns}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn leader(&self, ns: &str) -> usize {
        let live = self.live();
        self.leader_among(ns, &live).await
    }

    /// Wait until the leader's configuration has `n` voters.
    pub async fn wait_voters(&self, ns: &str, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let l = self.leader(ns).await;
            let state = self.cluster(l, ns).state();
            let voters = state.members.iter().filter(|m| m.role == flotilla::MemberRole::Voter).count();
            if voters == n && !state.membership_changing {
                return;
            }
            assert!(Instant::now() < deadline, "{ns}: {voters} voters, want {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until node `i` has applied at least `index` in `ns`.
    pub async fn wait_applied(&self, i: usize, ns: &str, index: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.cluster(i, ns).state().applied_index < index {
            assert!(Instant::now() < deadline, "node {i} never applied {index} in {ns}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if let Some(node) = self.nodes[i].take() {
                node.halt().await;
            }
        }
    }
}

/// Open the store (with the write-ahead log when `config` asks for it), waiting for a previous
/// instance in this process to release the file.
pub async fn open_store(config: &Config) -> Arc<Store> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let opened = match config.write_ahead_log {
            true => {
                let options = flotilla::at_rest::store_options(config, None).expect("store options");
                Store::open_with(&config.data_dir, options)
            }
            false => Store::open(&config.data_dir),
        };
        match opened {
            Ok(store) => return store,
            Err(e) => {
                assert!(Instant::now() < deadline, "store never reopened: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Poll `check` until it holds or `PATIENCE` runs out.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seeds a seeded chaos test runs, from the environment: `{prefix}_SEED` alone, or
/// `{prefix}_SEEDS` of them (`default` if unset) from `{prefix}_FIRST` (0 if unset). A value
/// that is not a number fails the test, saying which.
pub fn seeds_from_env(prefix: &str, default: u64) -> Vec<u64> {
    if let Some(seed) = env_u64(&format!("{prefix}_SEED")) {
        return vec![seed];
    }
    let first = env_u64(&format!("{prefix}_FIRST")).unwrap_or(0);
    (first..first + env_u64(&format!("{prefix}_SEEDS")).unwrap_or(default)).collect()
}

/// A number from the environment variable `name`, if set.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// Run `run(seed)` for each of `seeds`, at most `parallel` at a time, each in its own task so
/// that a panic names its seed: each seed with its result, or the message of its panic.
pub async fn run_seeds<R, F, Fut>(seeds: Vec<u64>, parallel: usize, run: F) -> Vec<(u64, Result<R, String>)>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::new();
    for seed in seeds {
        let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let running = run(seed);
        let task = tokio::spawn(async move {
            let result = running.await;
            drop(permit);
            result
        });
        tasks.push((seed, task));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for (seed, task) in tasks {
        results.push((seed, task.await.map_err(panic_message)));
    }
    results
}

/// What a task's panic said.
fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".into()),
        Err(e) => e.to_string(),
    }
}
