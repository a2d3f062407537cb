//! A small configuration service on Flotilla: three nodes in one process (libp2p on loopback,
//! stores in temporary directories) found one namespace together (`expect = 3`), then
//! - a watcher on node 3 prints every change under `config/` (a KV watch);
//! - a cache on node 2 follows the applied entries (`Cluster::subscribe`) and reloads the keys
//!   each one touched, resuming from a fresh read if it ever falls behind;
//! - configuration is written through every node (sets, a transaction, a delete);
//! - two deployers on nodes 1 and 3 take turns under a lock, each writing `config/version`
//!   only while it still holds the lock, with fencing tokens that increase.
//!
//! At the end the cache and a linearizable read agree, and the example exits 0. If the
//! cluster does not form within 60 s, or anything else fails, it says what and exits 1.
//!
//! ```sh
//! cargo run -p flotilla --example config_service
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use flotilla::kv::restore::RestoreStep;
use flotilla::kv::{self, EventKind, KvCommand, RangeEnd, RangeRequest, Txn, TxnOp};
use flotilla::{
    Cluster, Consistency, Held, MemberRole, Node, RunningNode, Subscription, SubscriptionEnded, Watch, WatchMessage,
    WatchRequest,
};
use futures::StreamExt;
use tokio::time::Instant;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The namespace the service keeps its configuration in.
const NS: &str = "config";
/// The keys the service owns.
const PREFIX: &[u8] = b"config/";
/// How long the three nodes get to form the cluster.
const FORM_WITHIN: Duration = Duration::from_secs(60);
/// Bound of every wait after that (a watch event, a lock, the cache catching up).
const PATIENCE: Duration = Duration::from_secs(30);
/// Lease of a deployer's lock.
const LOCK_TTL: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    match run().await {
        Ok(()) => {
            println!("config_service: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("config_service failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Failure> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let nodes = start_nodes(&dirs.iter().map(|d| d.path()).collect::<Vec<_>>()).await?;
    let outcome = serve(&nodes).await;
    for node in nodes {
        node.shutdown().await;
    }
    outcome
}

/// Start three nodes that found the namespace together once they all see each other; the
/// second and third find the first through its address.
async fn start_nodes(dirs: &[&Path]) -> Result<Vec<RunningNode>, Failure> {
    let mut nodes: Vec<RunningNode> = Vec::new();
    for dir in dirs {
        let mut builder = Node::builder(*dir)
            .listen("/ip4/127.0.0.1/tcp/0")
            .no_mdns()
            .configure(|c| {
                c.expect = Some(dirs.len());
                // This namespace only, not the agent's `default` too.
                c.namespaces.clear();
            })
            .namespace(NS);
        if let Some(first) = nodes.first() {
            builder = builder.bootstrap(first.addrs().into_iter().next().ok_or("the first node listens nowhere")?);
        }
        nodes.push(builder.start().await?);
    }
    println!("started {} nodes on loopback", nodes.len());
    Ok(nodes)
}

/// Wait until the namespace has a leader and three voters.
async fn wait_formed(cluster: &Cluster) -> Result<(), Failure> {
    let deadline = Instant::now() + FORM_WITHIN;
    loop {
        let state = cluster.state();
        let voters = state.members.iter().filter(|m| m.role == MemberRole::Voter).count();
        if voters == 3 && state.leader.is_some() && !state.membership_changing {
            println!("cluster formed: 3 voters, term {}", state.term);
            return Ok(());
        }
        if Instant::now() >= deadline {
            let leader = state.leader.map_or("none".to_string(), |l| l.to_string());
            return Err(format!(
                "the cluster did not form within {} s ({voters} voters, leader {leader})",
                FORM_WITHIN.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn serve(nodes: &[RunningNode]) -> Result<(), Failure> {
    let clusters = nodes.iter().map(|n| n.cluster(NS)).collect::<Result<Vec<_>, _>>()?;
    let [one, two, three] = <[Cluster; 3]>::try_from(clusters).map_err(|_| "three nodes")?;
    wait_formed(&one).await?;

    let mut watch = three.watch(WatchRequest::prefix(PREFIX.to_vec())).await?;
    let mut cache = ConfigCache::load(two.clone()).await?;
    println!("node 3 watches {}; node 2 caches it from index {}", show(PREFIX), cache.index);

    // After each step the cache follows up to the step's index, so its lines come in order.
    let index = one.set(b"config/feature-x", b"on").await?.index;
    println!("node 1 set config/feature-x = on (index {index})");
    cache.catch_up(index).await?;
    let index = two.set(b"config/timeout-ms", b"250").await?.index;
    println!("node 2 set config/timeout-ms = 250 (index {index})");
    cache.catch_up(index).await?;
    let swap = Txn {
        success: vec![TxnOp::put("config/feature-y", "on"), TxnOp::delete("config/feature-x")],
        ..Txn::default()
    };
    let index = three.txn(swap).await?.index;
    println!("node 3 replaced feature-x by feature-y in one transaction (index {index})");
    cache.catch_up(index).await?;
    deploy_in_turns(&one, &three, &mut cache).await?;

    // The watch shows the service's keys only: it ends at the last change of config/version.
    let version = one.get(b"config/version", Consistency::Linearizable).await?;
    let revision = version.key_revisions.ok_or("config/version is missing")?.mod_revision;
    print_watch(&mut watch, revision).await?;
    let truth = read_config(&one, Consistency::Linearizable).await?.1;
    if cache.entries != truth {
        return Err(format!("the cache {:?} differs from the state {:?}", cache.entries, truth).into());
    }
    println!("node 2's cache matches a linearizable read: {} keys", truth.len());
    for (key, value) in &truth {
        println!("  {} = {}", show(key), show(value));
    }
    Ok(())
}

/// Two deployers take the lock `deploy` in turn and write `config/version` only while they
/// hold it; the cache follows each write.
async fn deploy_in_turns(one: &Cluster, three: &Cluster, cache: &mut ConfigCache) -> Result<(), Failure> {
    let first = one.lock("deploy", LOCK_TTL, PATIENCE).await?;
    println!("node 1 holds lock deploy (fencing token {})", first.fencing_token());
    // The second deployer waits for the lock in the background.
    let waiting = three.clone();
    let second = tokio::spawn(async move { waiting.lock("deploy", LOCK_TTL, PATIENCE).await });
    write_version(one, &first, "v2", cache).await?;
    let first_token = first.fencing_token();
    first.release().await?;
    println!("node 1 released the lock");
    let second = second.await??;
    if second.fencing_token() <= first_token {
        return Err(format!("fencing token {} after {first_token}", second.fencing_token()).into());
    }
    println!("node 3 holds lock deploy (fencing token {})", second.fencing_token());
    write_version(three, &second, "v3", cache).await?;
    second.release().await?;
    Ok(())
}

/// Write `config/version` only if `held` is still held (a compare in the same transaction),
/// then let the cache follow.
async fn write_version(cluster: &Cluster, held: &Held, version: &str, cache: &mut ConfigCache) -> Result<(), Failure> {
    let txn = Txn {
        compares: vec![held.still_held()],
        success: vec![TxnOp::put("config/version", version)],
        ..Txn::default()
    };
    let outcome = cluster.txn(txn).await?;
    if !outcome.reply.succeeded {
        return Err(format!("lost the lock before writing version {version}").into());
    }
    println!("  the holder set config/version = {version} (index {})", outcome.index);
    cache.catch_up(outcome.index).await
}

/// Print the watch's changes up to `revision`.
async fn print_watch(watch: &mut Watch, revision: u64) -> Result<(), Failure> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let message = tokio::time::timeout_at(deadline, watch.next()).await.map_err(|_| "the watch fell silent")?;
        match message.ok_or("the watch ended")?? {
            WatchMessage::Changes { revision: at, events } => {
                for event in events {
                    let change = match event.kind {
                        EventKind::Put => format!("{} = {}", show(&event.kv.key), show(&event.kv.value)),
                        EventKind::Delete => format!("{} deleted", show(&event.kv.key)),
                    };
                    println!("watch on node 3, revision {at}: {change}");
                }
                if at >= revision {
                    return Ok(());
                }
            }
            WatchMessage::Progress { .. } => {}
        }
    }
}

/// The service's keys as this node holds them, and the index the read reflects.
async fn read_config(
    cluster: &Cluster,
    consistency: Consistency,
) -> Result<(u64, BTreeMap<Vec<u8>, Vec<u8>>), Failure> {
    // One page holds this example's few keys; a larger service pages with `after`.
    let read = cluster.range(RangeRequest::prefix(PREFIX.to_vec()), consistency).await?;
    Ok((read.index, read.result.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()))
}

/// A cache of the service's keys on one node, kept up to date from the applied entries.
struct ConfigCache {
    cluster: Cluster,
    changes: Subscription,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The index the cache reflects.
    index: u64,
}

impl ConfigCache {
    /// Subscribe, then read: the entries after the read's index are the changes to follow.
    async fn load(cluster: Cluster) -> Result<Self, Failure> {
        let mut changes = cluster.subscribe()?;
        let (index, entries) = read_config(&cluster, Consistency::Stale).await?;
        // Read after subscribing, so the read is never older than the subscription.
        changes.skip_through(index)?;
        Ok(Self { cluster, changes, entries, index })
    }

    /// Follow the applied entries until the cache reflects `index`.
    async fn catch_up(&mut self, index: u64) -> Result<(), Failure> {
        let deadline = Instant::now() + PATIENCE;
        while self.index < index {
            let next = tokio::time::timeout_at(deadline, self.changes.recv()).await.map_err(|_| "no entry applied")?;
            match next {
                Ok(applied) => {
                    if applied.reply.is_ok() {
                        self.reload(applied.index, &applied.command).await?;
                    }
                    self.index = applied.index;
                }
                Err(SubscriptionEnded::FellBehind { next_index }) => {
                    println!("the cache fell behind at index {next_index}: reading the state again");
                    *self = Self::load(self.cluster.clone()).await?;
                }
                Err(SubscriptionEnded::Closed) => return Err("the node stopped".into()),
            }
        }
        Ok(())
    }

    /// Reload the keys `command` may have changed. This node has applied it already (it was
    /// handed over after it was applied), so a local read shows its effect or a later one.
    async fn reload(&mut self, index: u64, command: &[u8]) -> Result<(), Failure> {
        let txn = match kv::decode_command(command) {
            Some(KvCommand::Txn(txn)) => txn,
            // A backup restored into the namespace replaces everything: reload it all once the
            // restore's last step is applied (reads are refused until then).
            Some(KvCommand::Restore(RestoreStep::Finish { .. })) => return self.reload_all().await,
            Some(KvCommand::Restore(_)) => return Ok(()),
            // Leases, queues and compactions: a revoke deletes the keys on its lease, and this
            // service puts none of its keys on one.
            _ => return Ok(()),
        };
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                TxnOp::Put { key, .. } | TxnOp::Delete { key, end: RangeEnd::Key, .. } => {
                    if key.starts_with(PREFIX) {
                        self.reload_key(index, key).await?;
                    }
                }
                TxnOp::Delete { .. } | TxnOp::Txn(_) => self.reload_all().await?,
                TxnOp::Range(_) => {}
            }
        }
        Ok(())
    }

    async fn reload_all(&mut self) -> Result<(), Failure> {
        self.entries = read_config(&self.cluster, Consistency::Stale).await?.1;
        Ok(())
    }

    async fn reload_key(&mut self, index: u64, key: &[u8]) -> Result<(), Failure> {
        match self.cluster.get(key, Consistency::Stale).await?.value {
            Some(value) => {
                println!("  cache on node 2, entry {index}: {} = {}", show(key), show(&value));
                self.entries.insert(key.to_vec(), value);
            }
            None => {
                println!("  cache on node 2, entry {index}: {} removed", show(key));
                self.entries.remove(key);
            }
        }
        Ok(())
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
