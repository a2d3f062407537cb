//! Recovery from a lost quorum (`flotilla recover`): when a majority of a namespace's voters is
//! gone for good, an operator makes one survivor, its agent stopped, the only voter of a new
//! cluster of the namespace that keeps the survivor's log and data.
//!
//! Three steps, each a function here:
//! - [`inspect`] reads what the survivor holds (vote, last log id, committed, applied, the
//!   effective membership and its cluster), so the operator can pick the most up-to-date one;
//! - [`decide`] is the guard, a pure function of what was observed: it refuses when there is
//!   nothing to recover, when this node is no member, when it already is the only voter, and
//!   when a quorum of the old configuration is reachable (unless the operator insists);
//! - [`force_new_cluster`] appends a membership entry with this node as the only voter,
//!   stamped with a new cluster id, at a term no leader ever had, with its vote, in one durable
//!   commit ([`flotilla_store::Store::force_membership`]), [`settle`]s the log there (applied,
//!   snapshotted and purged up to that entry, so joiners start from the new configuration),
//!   then records the new cluster in `node.key`.
//!
//! Why a new cluster id: an old member that comes back still holds the old configuration and
//! its log. Its Raft messages name the old cluster, which this node now refuses
//! (`formation::admission`), and where hellos meet they show another cluster of the
//! namespace: a split reported in status on both sides, never a silent merge of two histories. Such a node must
//! be wiped (data directory and `node.key`) before it may join the recovered cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_core::formation::ClusterId;
use flotilla_core::kv::KvStateMachine;
use flotilla_core::types::{Entry, LogId, MemberInfo, NodeId, StoredMembership, TypeConfig, Vote};
use flotilla_core::Namespace;
use flotilla_store::{ForcedMembership, RestoredBackup, Store, StoreError};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, Membership, RaftTypeConfig, StorageHelper};

use crate::formation::view::cluster_id;

/// Most log entries applied at once while settling a forced membership.
const APPLY_BATCH: u64 = 256;

/// What a survivor holds of a namespace, read offline.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<flotilla_store::Store>, me: flotilla_core::types::NodeId) -> Result<(), Box<dyn std::error::Error>> {
/// let ns = flotilla::Namespace::new("orders")?;
/// let facts = flotilla::recovery::inspect(&store, &ns, me).await?;
/// // Pick the survivor with the highest last log id.
/// println!("last log {:?}, applied {:?}, cluster {}", facts.last_log, facts.applied, facts.cluster);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RecoveryFacts {
    /// The namespace.
    pub namespace: Namespace,
    /// This node.
    pub me: NodeId,
    /// The last vote it saved.
    pub vote: Option<Vote>,
    /// Its last log id (the purged id when the log is empty).
    pub last_log: Option<LogId>,
    /// The last committed log id it knew of (a hint: it may lag).
    pub committed: Option<LogId>,
    /// The last log id applied to its state machine.
    pub applied: Option<LogId>,
    /// The configuration in effect: the last membership entry of its log, else the applied one.
    pub membership: StoredMembership,
    /// The cluster that configuration is stamped with.
    pub cluster: ClusterId,
    /// A membership forced onto this log before, if any was.
    pub forced: Option<ForcedMembership>,
}

impl RecoveryFacts {
    /// The voter sets of the configuration (two while it is joint).
    ///
    /// ```no_run
    /// # fn example(facts: flotilla::recovery::RecoveryFacts) {
    /// for (i, voters) in facts.voter_sets().iter().enumerate() {
    ///     println!("voter set {i}: {} voters, {} needed", voters.len(), voters.len() / 2 + 1);
    /// }
    /// # }
    /// ```
    pub fn voter_sets(&self) -> &[BTreeSet<NodeId>] {
        self.membership.membership().get_joint_config()
    }

    /// Every member but this node, with the addresses the configuration keeps for it.
    ///
    /// ```no_run
    /// # fn example(facts: flotilla::recovery::RecoveryFacts) {
    /// // The members to probe before deciding: are they really gone?
    /// for (id, addrs) in facts.others() {
    ///     println!("{id} at {addrs:?}");
    /// }
    /// # }
    /// ```
    pub fn others(&self) -> Vec<(NodeId, Vec<String>)> {
        let nodes = self.membership.membership().nodes();
        nodes.filter(|(id, _)| **id != self.me).map(|(id, info)| (*id, info.addrs.clone())).collect()
    }
}

/// How hard the operator insists.
///
/// ```
/// use flotilla::recovery::Force;
///
/// // Each level allows what the one before does, and more.
/// assert!(Force::DryRun < Force::Once && Force::Once < Force::Twice);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Force {
    /// Only look (dry run): print the facts and what recovering would do.
    DryRun,
    /// `--force-new-cluster`: recover unless a quorum of the old configuration is reachable.
    Once,
    /// `--force-new-cluster` twice (or `--i-know-a-quorum-is-reachable`): recover even so.
    Twice,
}

/// Why recovering is refused.
///
/// ```
/// use flotilla::recovery::Refusal;
///
/// let refusal = Refusal::QuorumReachable { reachable: 2, voters: 3, needed: 2 };
/// assert!(refusal.to_string().contains("2 of 3 voters")); // says what to do instead
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The node has no log of the namespace: there is nothing to keep.
    #[error("this node holds no Raft log of the namespace: nothing to recover (start a fresh node instead)")]
    NoState,
    /// The node is not in the configuration (it was removed): its data is not the namespace's.
    #[error("this node is not a member of the namespace's configuration (it was removed): recover another survivor")]
    NotMember,
    /// The node already is the only voter: it makes progress on its own.
    #[error("this node already is the namespace's only voter: just start the agent")]
    AlreadyAlone,
    /// Enough voters of the old configuration answer for it to make progress.
    #[error(
        "a quorum of the old configuration is reachable ({reachable} of {voters} voters, counting this node; \
         {needed} needed): start the agent instead. If those nodes are not really members any more, \
         repeat --force-new-cluster (or pass --i-know-a-quorum-is-reachable)"
    )]
    QuorumReachable {
        /// Voters of the tightest voter set that answered (this node included).
        reachable: usize,
        /// Voters in that set.
        voters: usize,
        /// Its majority.
        needed: usize,
    },
}

/// What the guard observed.
///
/// ```
/// use std::collections::BTreeSet;
/// use flotilla::recovery::{decide, Force, Observed, Refusal};
/// # use flotilla_core::types::NodeId;
///
/// let me = NodeId::random();
/// let (voters, members, nobody) = ([BTreeSet::from([me])], BTreeSet::from([me]), BTreeSet::new());
/// let seen = Observed { me, has_log: true, voter_sets: &voters, members: &members, reachable: &nobody, force: Force::Once };
/// assert_eq!(decide(&seen), Err(Refusal::AlreadyAlone)); // just start the agent
/// ```
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// This node.
    pub me: NodeId,
    /// Whether the node holds a log of the namespace.
    pub has_log: bool,
    /// Voter sets of the configuration in effect (two while joint).
    pub voter_sets: &'a [BTreeSet<NodeId>],
    /// Every member of that configuration (voters and learners).
    pub members: &'a BTreeSet<NodeId>,
    /// Members other than this node that answered a probe.
    pub reachable: &'a BTreeSet<NodeId>,
    /// How hard the operator insists.
    pub force: Force,
}

/// The guard: `Ok` when this node may become the only voter of a new cluster (a dry run is
/// judged as `--force-new-cluster` would be). A quorum is reachable when, in every voter set,
/// a majority is this node (its agent would come back) or answered the probe.
///
/// ```
/// use std::collections::BTreeSet;
/// use flotilla::recovery::{decide, Force, Observed, Refusal};
/// # use flotilla_core::types::NodeId;
///
/// let (me, b, c) = (NodeId::random(), NodeId::random(), NodeId::random());
/// let (voters, members) = ([BTreeSet::from([me, b, c])], BTreeSet::from([me, b, c]));
/// let nobody = BTreeSet::new();
/// let seen = Observed { me, has_log: true, voter_sets: &voters, members: &members, reachable: &nobody, force: Force::Once };
/// assert_eq!(decide(&seen), Ok(())); // b and c are gone: this node may go on alone
/// let b_answers = BTreeSet::from([b]);
/// let seen = Observed { reachable: &b_answers, ..seen }; // with b, a quorum is reachable
/// assert_eq!(decide(&seen), Err(Refusal::QuorumReachable { reachable: 2, voters: 3, needed: 2 }));
/// assert_eq!(decide(&Observed { force: Force::Twice, ..seen }), Ok(())); // unless the operator insists
/// ```
pub fn decide(seen: &Observed<'_>) -> Result<(), Refusal> {
    if !seen.has_log {
        return Err(Refusal::NoState);
    }
    if !seen.members.contains(&seen.me) {
        return Err(Refusal::NotMember);
    }
    if seen.voter_sets.iter().all(|set| set.len() == 1 && set.contains(&seen.me)) {
        return Err(Refusal::AlreadyAlone);
    }
    let tally = |set: &BTreeSet<NodeId>| {
        let up = set.iter().filter(|v| **v == seen.me || seen.reachable.contains(v)).count();
        (up, set.len(), set.len() / 2 + 1)
    };
    let quorum = seen.voter_sets.iter().map(tally).all(|(up, _, needed)| up >= needed);
    if quorum && seen.force < Force::Twice {
        let (reachable, voters, needed) = seen
            .voter_sets
            .iter()
            .map(tally)
            .min_by_key(|(up, _, needed)| up.saturating_sub(*needed))
            .unwrap_or_default();
        return Err(Refusal::QuorumReachable { reachable, voters, needed });
    }
    Ok(())
}

/// Why reading or rewriting the survivor's state failed.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<flotilla_store::Store>, ns: flotilla::Namespace, me: flotilla_core::types::NodeId) {
/// use flotilla::recovery::{inspect, RecoveryError};
///
/// match inspect(&store, &ns, me).await {
///     Ok(facts) => println!("{:?}", facts.last_log),
///     Err(RecoveryError::Store(e)) => eprintln!("the store: {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// openraft could not read the state back.
    #[error("reading the Raft state: {0}")]
    Raft(String),
    /// The store is recovered but `node.key` could not be updated (the agent updates it at
    /// start).
    #[error("the membership is forced, but recording the new cluster in node.key failed: {0}")]
    KeyFile(String),
}

/// Read what this node (`me`) holds of `ns` from `store` (its agent stopped).
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::path::Path;
///
/// // The agent is stopped; its identity names this node.
/// let dir = Path::new("/var/lib/flotilla");
/// let me = flotilla_net::load_or_create_keypair(dir)?.public().to_peer_id();
/// let store = flotilla_store::Store::open(dir)?;
/// let facts = flotilla::recovery::inspect(&store, &flotilla::Namespace::new("orders")?, me).await?;
/// # Ok(()) }
/// ```
pub async fn inspect(store: &Arc<Store>, ns: &Namespace, me: NodeId) -> Result<RecoveryFacts, RecoveryError> {
    let raft = |e: std::io::Error| RecoveryError::Raft(e.to_string());
    let mut log = store.log_store(ns)?;
    let mut sm = store.state_machine(ns, Arc::new(KvStateMachine))?;
    let vote = log.read_vote().await.map_err(raft)?;
    let committed = log.read_committed().await.map_err(raft)?;
    let last_log = log.get_log_state().await.map_err(raft)?.last_log_id;
    let state =
        StorageHelper::new(&mut log, &mut sm).get_membership().await.map_err(|e| RecoveryError::Raft(e.to_string()))?;
    let membership = state.effective().as_ref().clone();
    let cluster = own_cluster(&membership, me);
    Ok(RecoveryFacts {
        namespace: ns.clone(),
        me,
        vote,
        last_log,
        committed,
        applied: store.applied(ns)?,
        membership,
        cluster,
        forced: store.forced_membership(ns)?,
    })
}

/// The cluster `membership` is stamped with (this node's entry first).
fn own_cluster(membership: &StoredMembership, me: NodeId) -> ClusterId {
    let m = membership.membership();
    let own = m.get_node(&me).map(|i| i.cluster.clone()).filter(|c| !c.is_empty());
    own.or_else(|| m.nodes().map(|(_, i)| i.cluster.clone()).find(|c| !c.is_empty())).unwrap_or_default()
}

/// Make this node the only voter of a new cluster of the namespace, keeping its log: append
/// the forced membership entry after `facts.last_log` with its vote (one durable commit),
/// [`settle`] the log up to it, then record the new cluster in `node.key` (when the key is in
/// the store's data directory).
/// Call only after [`decide`] allowed it.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<flotilla_store::Store>, facts: flotilla::recovery::RecoveryFacts,
/// #     reachable: std::collections::BTreeSet<flotilla_core::types::NodeId>) -> Result<(), Box<dyn std::error::Error>> {
/// use flotilla::recovery::{decide, force_new_cluster, Force, Observed};
///
/// let members = facts.membership.membership().nodes().map(|(id, _)| *id).collect();
/// let seen = Observed { me: facts.me, has_log: facts.last_log.is_some(), voter_sets: facts.voter_sets(),
///     members: &members, reachable: &reachable, force: Force::Once };
/// decide(&seen)?; // only then
/// let forced = force_new_cluster(&store, &facts).await?;
/// println!("now the only voter of cluster {}", forced.cluster);
/// # Ok(()) }
/// ```
pub async fn force_new_cluster(store: &Arc<Store>, facts: &RecoveryFacts) -> Result<ForcedMembership, RecoveryError> {
    force_one_voter(store, facts, LOST_QUORUM).await
}

/// Restore the backup file at `path` into namespace `ns` of `store` (which must hold nothing
/// of it) and make this node (`me`) the only voter of a new cluster of the namespace, with
/// the backup's data: the same one-voter cluster [`force_new_cluster`] makes, on top of the
/// backup installed as a snapshot. Revisions continue from the backup's.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<flotilla_store::Store>, me: flotilla_core::types::NodeId) -> Result<(), Box<dyn std::error::Error>> {
/// use std::path::Path;
///
/// // Into a store that holds nothing of `orders` (a fresh data directory).
/// let ns = flotilla::Namespace::new("orders")?;
/// let (restored, forced) = flotilla::recovery::restore(&store, &ns, Path::new("/backups/orders.flbk"), me).await?;
/// println!("{} rows; the only voter of cluster {}", restored.summary.rows, forced.cluster);
/// # Ok(()) }
/// ```
pub async fn restore(
    store: &Arc<Store>,
    ns: &Namespace,
    path: &std::path::Path,
    me: NodeId,
) -> Result<(RestoredBackup, ForcedMembership), RecoveryError> {
    let restored = store.restore_backup(ns, path).await?;
    let facts = inspect(store, ns, me).await?;
    let meta = &restored.summary.meta;
    let reason = format!(
        "restored from a backup of cluster {} at index {}, revision {}",
        meta.cluster_id, meta.index, meta.revision
    );
    let forced = force_one_voter(store, &facts, &reason).await?;
    Ok((restored, forced))
}

/// The reason a recovery records.
const LOST_QUORUM: &str = "recovered from a lost quorum";

/// Force the membership to this node alone, under a new cluster id, for `reason`.
async fn force_one_voter(
    store: &Arc<Store>,
    facts: &RecoveryFacts,
    reason: &str,
) -> Result<ForcedMembership, RecoveryError> {
    let me = facts.me;
    let term = facts
        .vote
        .as_ref()
        .map_or(0, |v| v.leader_id.term)
        .max(facts.last_log.as_ref().map_or(0, |l| l.leader_id.term))
        + 1;
    let index = facts.last_log.as_ref().map_or(0, |l| l.index + 1);
    let log_id = LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(term, me), index);
    let cluster = cluster_id(me, rand::random());
    let addrs = facts.membership.membership().get_node(&me).map(|i| i.addrs.clone()).unwrap_or_default();
    let nodes = BTreeMap::from([(me, MemberInfo { addrs, cluster: cluster.clone() })]);
    let membership = Membership::new(vec![BTreeSet::from([me])], nodes)
        .map_err(|e| RecoveryError::Raft(format!("a one-voter membership: {e}")))?;
    let record = ForcedMembership {
        log_id,
        previous_cluster: facts.cluster.clone(),
        cluster: cluster.clone(),
        at_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        reason: reason.to_string(),
    };
    let entry = Entry { log_id, payload: EntryPayload::Membership(membership) };
    store.force_membership(&facts.namespace, Vote::new(term, me), entry, &record).await?;
    settle(store, &facts.namespace, &record.log_id).await?;
    record_in_key_file(store, facts, &cluster)?;
    Ok(record)
}

/// Whether a forced membership was left unsettled (a recovery interrupted before
/// [`settle`] finished): its entry is not applied yet.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<flotilla_store::Store>, facts: flotilla::recovery::RecoveryFacts) -> Result<(), flotilla::recovery::RecoveryError> {
/// use flotilla::recovery::{settle, unsettled};
///
/// // An earlier recovery was interrupted: finish it.
/// if let Some(forced) = unsettled(&facts) {
///     settle(&store, &facts.namespace, forced).await?;
/// }
/// # Ok(()) }
/// ```
pub fn unsettled(facts: &RecoveryFacts) -> Option<&LogId> {
    let forced = &facts.forced.as_ref()?.log_id;
    (facts.applied.as_ref().map_or(0, |a| a.index + 1) <= forced.index).then_some(forced)
}

/// Apply `ns`'s log up to the forced entry `upto`, snapshot the state there and purge the log
/// up to it, so that the log this node serves starts after the forced membership.
///
/// Why: a node that joins the new cluster must never replay the old configurations. They are
/// stamped with the old cluster id, and a replica whose configuration names the old cluster
/// refuses the new leader's traffic (admission), so it would stall half way. From a snapshot
/// at the forced entry it learns the new configuration first. Applying entries the old leader
/// may not have committed is what forcing the membership means: the new cluster commits them.
/// Each step is durable and idempotent, so an interrupted run is finished by running again.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<flotilla_store::Store>, facts: flotilla::recovery::RecoveryFacts) -> Result<(), flotilla::recovery::RecoveryError> {
/// if let Some(forced) = &facts.forced {
///     // Every step is idempotent: an interrupted run is finished by running it again.
///     flotilla::recovery::settle(&store, &facts.namespace, &forced.log_id).await?;
/// }
/// # Ok(()) }
/// ```
pub async fn settle(store: &Arc<Store>, ns: &Namespace, upto: &LogId) -> Result<(), RecoveryError> {
    let raft = |e: std::io::Error| RecoveryError::Raft(e.to_string());
    let mut log = store.log_store(ns)?;
    let mut sm = store.state_machine(ns, Arc::new(KvStateMachine))?;
    // Bounded: every round applies at least one entry, up to `upto`, or fails.
    loop {
        let next = store.applied(ns)?.map_or(0, |l| l.index + 1);
        if next > upto.index {
            break;
        }
        let end = next.saturating_add(APPLY_BATCH).min(upto.index + 1);
        let entries = log.try_get_log_entries(next..end).await.map_err(raft)?;
        if entries.first().map(|e| e.log_id.index) != Some(next) {
            return Err(RecoveryError::Raft(format!("log entry {next} is missing: cannot apply up to {}", upto.index)));
        }
        sm.apply(futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))))).await.map_err(raft)?;
    }
    sm.get_snapshot_builder().await.build_snapshot().await.map_err(raft)?;
    log.save_committed(Some(*upto)).await.map_err(raft)?;
    log.purge(*upto).await.map_err(raft)?;
    Ok(())
}

/// Record `cluster` as this identity's cluster of the namespace in `node.key`, when the key
/// lives in the data directory (it does for an agent).
fn record_in_key_file(store: &Store, facts: &RecoveryFacts, cluster: &str) -> Result<(), RecoveryError> {
    let dir = store.data_dir();
    if !dir.join(flotilla_net::KEY_FILE).exists() {
        return Ok(());
    }
    flotilla_net::record_membership(dir, &facts.me, facts.namespace.as_str(), cluster)
        .map(|_| ())
        .map_err(|e| RecoveryError::KeyFile(e.to_string()))
}

/// The status timeline's line for a forced membership.
///
/// ```no_run
/// # fn example(facts: flotilla::recovery::RecoveryFacts) {
/// if let Some(forced) = &facts.forced {
///     println!("{}", flotilla::recovery::describe(forced)); // as the status timeline shows it
/// }
/// # }
/// ```
pub fn describe(forced: &ForcedMembership) -> String {
    format!(
        "{}: membership forced to this node at index {}, term {} (cluster {} -> {}, at unix ms {})",
        forced.reason,
        forced.log_id.index,
        forced.log_id.leader_id.term,
        forced.previous_cluster,
        forced.cluster,
        forced.at_unix_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        let mut seed = [0u8; 32];
        seed[0] = n;
        libp2p_identity::Keypair::ed25519_from_bytes(seed).expect("key").public().to_peer_id()
    }

    fn set(ids: &[u8]) -> BTreeSet<NodeId> {
        ids.iter().map(|n| node(*n)).collect()
    }

    /// A survivor of three voters, its log at index 6 (three writes applied, two not), becomes
    /// the only voter of a new cluster: the forced entry goes at index 7 under term 3 (the
    /// vote's 2 plus one), everything up to it is applied and snapshotted, the log purged there,
    /// and a second look finds nothing left to settle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forced_membership_settles_the_log_into_a_snapshot() {
        use openraft::storage::RaftLogStorageExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ns = Namespace::new("default").unwrap();
        let at = |index| LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(2, node(2)), index);
        let info = MemberInfo { addrs: vec![], cluster: "old/01".into() };
        let nodes: BTreeMap<NodeId, MemberInfo> = [1, 2, 3].map(|n| (node(n), info.clone())).into();
        let old = Membership::new(vec![set(&[1, 2, 3])], nodes).unwrap();
        let write = |i: u64| flotilla_core::Command {
            id: None,
            payload: flotilla_core::kv::encode_ops(&[flotilla_core::KvOp::Set { key: vec![i as u8], value: vec![1] }]),
        };
        let mut entries = vec![Entry { log_id: at(1), payload: EntryPayload::Membership(old) }];
        entries.extend((2..=6).map(|i| Entry { log_id: at(i), payload: EntryPayload::Normal(write(i)) }));
        let mut log = store.log_store(&ns).unwrap();
        log.save_vote(&Vote::new(2, node(2))).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        let mut sm = store.state_machine(&ns, Arc::new(KvStateMachine)).unwrap();
        sm.apply(futures::stream::iter(entries.into_iter().take(4).map(|e| Ok((e, None))))).await.unwrap();

        let facts = inspect(&store, &ns, node(1)).await.unwrap();
        assert_eq!((facts.last_log.map(|l| l.index), facts.applied.map(|l| l.index)), (Some(6), Some(4)));
        assert_eq!(facts.cluster, "old/01");
        let forced = force_new_cluster(&store, &facts).await.unwrap();
        assert_eq!((forced.log_id.index, forced.log_id.leader_id.term), (7, 3));

        let after = inspect(&store, &ns, node(1)).await.unwrap();
        assert_eq!(after.applied, Some(forced.log_id));
        assert_eq!(after.last_log, Some(forced.log_id), "the log is purged up to the forced entry");
        assert_eq!(after.voter_sets(), &[set(&[1])]);
        assert_eq!(after.cluster, forced.cluster);
        assert!(after.others().is_empty());
        assert_eq!(after.vote, Some(Vote::new(3, node(1))));
        assert_eq!(unsettled(&after), None);
        assert_eq!(store.kv_keys(&ns, b"", 10).unwrap().len(), 5, "the two unapplied writes are applied too");
    }

    /// Table: (has log, voter sets, members, reachable others, force) -> verdict, with node 1
    /// as this node.
    #[test]
    fn the_guard_refuses_unless_a_quorum_is_gone_or_the_operator_insists() {
        use Force::*;
        let quorum = |reachable, voters, needed| Err(Refusal::QuorumReachable { reachable, voters, needed });
        type Case = (bool, Vec<&'static [u8]>, &'static [u8], &'static [u8], Force, Result<(), Refusal>);
        let cases: Vec<Case> = vec![
            // Five voters, three gone: recover (a dry run is judged the same).
            (true, vec![&[1, 2, 3, 4, 5]], &[1, 2, 3, 4, 5], &[2], Once, Ok(())),
            (true, vec![&[1, 2, 3, 4, 5]], &[1, 2, 3, 4, 5], &[], DryRun, Ok(())),
            // Three of five answer (this node and two others): refuse, unless insisted.
            (true, vec![&[1, 2, 3, 4, 5]], &[1, 2, 3, 4, 5], &[2, 3], Once, quorum(3, 5, 3)),
            (true, vec![&[1, 2, 3, 4, 5]], &[1, 2, 3, 4, 5], &[2, 3], DryRun, quorum(3, 5, 3)),
            (true, vec![&[1, 2, 3, 4, 5]], &[1, 2, 3, 4, 5], &[2, 3], Twice, Ok(())),
            // Learners that answer do not make a quorum.
            (true, vec![&[1, 2, 3]], &[1, 2, 3, 6, 7], &[6, 7], Once, Ok(())),
            // A learner survivor may be recovered; the voters it reaches count.
            (true, vec![&[2, 3, 4]], &[1, 2, 3, 4], &[2], Once, Ok(())),
            (true, vec![&[2, 3, 4]], &[1, 2, 3, 4], &[2, 3], Once, quorum(2, 3, 2)),
            // Joint configuration: a quorum needs a majority of both sets.
            (true, vec![&[1, 2, 3], &[3, 4, 5]], &[1, 2, 3, 4, 5], &[2], Once, Ok(())),
            (true, vec![&[1, 2, 3], &[3, 4, 5]], &[1, 2, 3, 4, 5], &[2, 3, 4], Once, quorum(2, 3, 2)),
            // Nothing to recover, or not this node's to recover, even when insisted.
            (false, vec![&[1, 2, 3]], &[1, 2, 3], &[], Twice, Err(Refusal::NoState)),
            (true, vec![&[2, 3, 4]], &[2, 3, 4], &[], Twice, Err(Refusal::NotMember)),
            (true, vec![&[1]], &[1, 2], &[], Twice, Err(Refusal::AlreadyAlone)),
        ];
        for (has_log, sets, members, reachable, force, want) in cases {
            let voter_sets: Vec<BTreeSet<NodeId>> = sets.iter().map(|s| set(s)).collect();
            let (members, reachable) = (set(members), set(reachable));
            let seen = Observed {
                me: node(1),
                has_log,
                voter_sets: &voter_sets,
                members: &members,
                reachable: &reachable,
                force,
            };
            assert_eq!(decide(&seen), want, "{sets:?}, reachable {reachable:?}, {force:?}");
        }
    }
}
