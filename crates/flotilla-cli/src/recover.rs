//! `flotilla recover`: recovery from a lost quorum, run on a survivor with its agent stopped.
//!
//! Without `--force-new-cluster` it only prints what the node holds of the namespace (last log
//! index and term, applied and committed index, the configuration) and the guard's verdict, so
//! the operator can pick the most up-to-date survivor. With it, the node becomes the only voter
//! of a new cluster of the namespace, keeping its log and data (`flotilla::recovery`).
//!
//! The guard dials every other member of the old configuration at the addresses the
//! configuration keeps for it, over libp2p with the node's own identity (a Noise handshake
//! proves that a process holding that member's key answers there). This needs no cluster key:
//! only the connection is made, no request is sent.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use flotilla::recovery::{self, Force, Observed, RecoveryFacts, Refusal};
use flotilla_core::{Config, Namespace, NodeId, Transport};
use flotilla_net::{Host, NetConfig};
use flotilla_store::Store;
use serde_json::{json, Value};

/// Most members probed at once (a configuration lists a handful; this bounds a damaged one).
const MAX_PROBED: usize = 64;
/// Most addresses dialled per member.
const MAX_ADDRS: usize = 8;

/// `flotilla recover ...`
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// The data directory of the stopped agent on this survivor.
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    data_dir: PathBuf,
    /// The namespace to recover.
    #[arg(long, short = 'n', default_value = flotilla_core::config::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Make this node the only voter of a new cluster of the namespace, keeping its log and
    /// data. Refused while a quorum of the old configuration answers; give it twice to insist.
    #[arg(long, action = clap::ArgAction::Count)]
    force_new_cluster: u8,
    /// With --force-new-cluster: recover even though a quorum of the old configuration
    /// answers (same as giving --force-new-cluster twice).
    #[arg(long)]
    i_know_a_quorum_is_reachable: bool,
    /// The cluster key file, needed when the data directory is encrypted at rest.
    #[arg(long, env = "FLOTILLA_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<PathBuf>,
    /// The data directory is encrypted at rest (as the agent's --encrypt-at-rest).
    #[arg(long)]
    encrypt_at_rest: bool,
    /// How long each old member has to answer the probe, in milliseconds.
    #[arg(long, default_value_t = 3_000)]
    probe_timeout_ms: u64,
}

impl RecoverArgs {
    fn force(&self) -> anyhow::Result<Force> {
        Ok(match (self.force_new_cluster, self.i_know_a_quorum_is_reachable) {
            (0, false) => Force::DryRun,
            (0, true) => bail!("--i-know-a-quorum-is-reachable goes with --force-new-cluster"),
            (1, false) => Force::Once,
            _ => Force::Twice,
        })
    }
}

pub async fn run(args: RecoverArgs) -> anyhow::Result<()> {
    let force = args.force()?;
    let ns = Namespace::new(args.namespace.clone()).context("the namespace name")?;
    let keypair = existing_keypair(&args.data_dir)?;
    let me = keypair.public().to_peer_id();
    check_served(&args.data_dir, &ns)?;
    let store = open_store(&args)?;
    let facts = recovery::inspect(&store, &ns, me).await?;
    if let (Some(forced), true) = (recovery::unsettled(&facts), force != Force::DryRun) {
        // An earlier run stopped after forcing the membership: finish it, nothing else.
        recovery::settle(&store, &ns, forced).await?;
        store.shutdown();
        let before = facts.forced.as_ref().map(recovery::describe);
        return print(
            &json!({ "namespace": ns.as_str(), "action": "finished an interrupted recovery", "recovered_before": before }),
        );
    }
    let reachable = probe(keypair, &facts, Duration::from_millis(args.probe_timeout_ms)).await?;
    let (mut report, verdict) = judge(&facts, &reachable, force);
    match (force, verdict) {
        (Force::DryRun, _) => {
            report["action"] = json!("dry run: nothing changed; pass --force-new-cluster on the survivor with the highest last log term, then index");
        }
        (_, Err(refusal)) => {
            print(&report)?;
            bail!("not recovering namespace {ns}: {refusal}");
        }
        (_, Ok(())) => {
            let forced = recovery::force_new_cluster(&store, &facts).await?;
            store.shutdown();
            report["action"] = json!(recovery::describe(&forced));
            report["new_cluster"] = json!(forced.cluster);
            report["next"] = json!("start the agent on this data directory: it leads the namespace alone; start fresh nodes (empty data directories) to join it; never restart the lost members with their old data");
        }
    }
    print(&report)
}

/// The guard's verdict on `facts` with the members that answered, and the report to print
/// (what the node held before any change, and the verdict).
fn judge(facts: &RecoveryFacts, reachable: &BTreeSet<NodeId>, force: Force) -> (Value, Result<(), Refusal>) {
    let members: BTreeSet<NodeId> = facts.membership.membership().nodes().map(|(id, _)| *id).collect();
    let seen = Observed {
        me: facts.me,
        has_log: facts.last_log.is_some(),
        voter_sets: facts.voter_sets(),
        members: &members,
        reachable,
        force,
    };
    let verdict = recovery::decide(&seen);
    let mut report = describe(facts, reachable);
    report["verdict"] = json!(match &verdict {
        Ok(()) => "recovery allowed".to_string(),
        Err(refusal) => format!("refused: {refusal}"),
    });
    (report, verdict)
}

/// The node's key, which must exist already: a new key would be a new node.
fn existing_keypair(data_dir: &Path) -> anyhow::Result<libp2p_identity::Keypair> {
    let key = data_dir.join(flotilla_net::KEY_FILE);
    if !key.exists() {
        bail!("{} does not exist: not the data directory of a node", key.display());
    }
    Ok(flotilla_net::load_or_create_keypair(data_dir)?)
}

/// Refuse a namespace the agent would not serve at start (or would drop as a leftover).
fn check_served(data_dir: &Path, ns: &Namespace) -> anyhow::Result<()> {
    let file = flotilla::namespace_set::NamespaceSetFile::new(data_dir);
    match file.load().map_err(anyhow::Error::msg)? {
        Some(set) if !set.open.contains(ns) => {
            bail!("namespace {ns} is not open on this node (not in {})", flotilla::namespace_set::NAMESPACE_SET_FILE)
        }
        _ => Ok(()),
    }
}

/// Open the store; refused while an agent runs on the directory (redb's file lock).
fn open_store(args: &RecoverArgs) -> anyhow::Result<Arc<Store>> {
    let config = Config {
        data_dir: args.data_dir.clone(),
        cluster_key_file: args.cluster_key_file.clone(),
        encrypt_at_rest: args.encrypt_at_rest,
        ..Config::default()
    };
    let keyring = config.keyring()?;
    let options = flotilla::at_rest::store_options(&config, keyring.as_ref())?;
    Store::open_with(&args.data_dir, options)
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))
}

/// The members of the old configuration (other than this node) that answer a libp2p dial at
/// one of their recorded addresses within `timeout`, all dialled at once.
async fn probe(
    keypair: libp2p_identity::Keypair,
    facts: &RecoveryFacts,
    timeout: Duration,
) -> anyhow::Result<BTreeSet<NodeId>> {
    let others: Vec<(NodeId, Vec<String>)> = facts.others().into_iter().take(MAX_PROBED).collect();
    if others.is_empty() {
        return Ok(BTreeSet::new());
    }
    let host = Host::start(keypair, &[], NetConfig::default()).await?;
    let mut dials = tokio::task::JoinSet::new();
    for (peer, addrs) in others {
        let host = host.clone();
        dials.spawn(async move { answers(&host, peer, &addrs, timeout).await.then_some(peer) });
    }
    let mut reachable = BTreeSet::new();
    while let Some(done) = dials.join_next().await {
        reachable.extend(done.ok().flatten());
    }
    host.shutdown().await;
    Ok(reachable)
}

/// Whether `peer` answers at one of `addrs` (tried in turn) within `timeout` in all.
async fn answers(host: &Host, peer: NodeId, addrs: &[String], timeout: Duration) -> bool {
    let attempt = async {
        for addr in addrs.iter().take(MAX_ADDRS) {
            if host.connect(addr, timeout).await.is_ok_and(|found| found == peer) {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(false)
}

fn describe(facts: &RecoveryFacts, reachable: &BTreeSet<NodeId>) -> Value {
    let m = facts.membership.membership();
    let ids = |it: &mut dyn Iterator<Item = NodeId>| it.map(|id| id.to_string()).collect::<Vec<_>>();
    json!({
        "namespace": facts.namespace.as_str(),
        "node_id": facts.me.to_string(),
        "last_log_index": facts.last_log.as_ref().map(|l| l.index),
        "last_log_term": facts.last_log.as_ref().map(|l| l.leader_id.term),
        "applied_index": facts.applied.as_ref().map(|l| l.index),
        "committed_index": facts.committed.as_ref().map(|l| l.index),
        "vote_term": facts.vote.as_ref().map(|v| v.leader_id.term),
        "cluster": facts.cluster,
        "voters": ids(&mut m.voter_ids()),
        "learners": ids(&mut m.learner_ids()),
        "reachable_members": ids(&mut reachable.iter().copied()),
        "recovered_before": facts.forced.as_ref().map(recovery::describe),
    })
}

fn print(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
