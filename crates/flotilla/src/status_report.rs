//! Observing a node for its status report: [`Node::status`] and [`Cluster::summary`] read the
//! groups' Raft metrics, the store and the liveness probe into the plain values of
//! [`crate::node_status`]. Nothing here judges them: that is `crate::doctor`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::types::{NodeId, TypeConfig};
use flotilla_core::wire::log_index;
use flotilla_store::Histogram;
use openraft::{Instant as _, RaftMetrics};

use crate::cluster::Cluster;
use crate::leader_changes::millis;
use crate::node::Node;
use crate::node_status::{FsyncSummary, MemberProgress, NamespaceSummary, NodeStatus, PeerStatus, StorageStatus};
use crate::status::{MemberRole, Role};

impl Node {
    /// This node's status for operators (`GET /v1/status`, `flotilla status`, `flotilla
    /// doctor`): identity, storage, peers and one row per namespace. Reads every group's
    /// metrics once; meant for operators and monitoring, not for a request path.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) {
    /// let status = node.status();
    /// let findings = flotilla::doctor::diagnose(&status, &flotilla::doctor::Thresholds::for_status(&status));
    /// println!("{} namespaces, worst finding: {}", status.namespaces.len(), flotilla::doctor::worst(&findings).name());
    /// # }
    /// ```
    pub fn status(self: &Arc<Self>) -> NodeStatus {
        let clusters = self.clusters();
        let namespaces: Vec<NamespaceSummary> = clusters.iter().map(Cluster::summary).collect();
        let space = self.store.disk_space();
        let storage = StorageStatus {
            write_blocked: self.store.write_blocked(),
            free_bytes: space.free_bytes,
            reserve_bytes: space.reserve_bytes,
            fsync: fsync_summary(&self.store.metrics().fsync_latency_us),
        };
        NodeStatus {
            peer_id: self.id.to_string(),
            addrs: self.addrs(),
            election_timeout_ms: self.config.timing().election_max_ms,
            storage,
            peers: self.peer_statuses(&clusters),
            namespaces,
        }
    }

    /// Every other member of this node's namespaces, with the freshest observation of it:
    /// acknowledgements to the namespaces this node leads, and the liveness probe.
    fn peer_statuses(&self, clusters: &[Cluster]) -> Vec<PeerStatus> {
        // peer -> (namespaces shared, youngest observation)
        let mut seen: BTreeMap<NodeId, (u32, Option<Duration>)> = BTreeMap::new();
        for cluster in clusters {
            let m = cluster.group().metrics();
            let acks = m.heartbeat.as_ref();
            for (id, _) in m.membership_config.nodes().filter(|(id, _)| **id != self.id) {
                let entry = seen.entry(*id).or_insert((0, None));
                entry.0 += 1;
                let ack = acks.and_then(|h| h.get(id).cloned().flatten()).map(|at| at.elapsed());
                entry.1 = youngest(entry.1, ack);
            }
        }
        seen.into_iter()
            .map(|(id, (namespaces, ack))| PeerStatus {
                id,
                namespaces,
                last_heard_ms_ago: youngest(ack, self.liveness.heard_ago(&id)).map(millis),
                down: self.liveness.is_down(&id),
            })
            .collect()
    }
}

impl Cluster {
    /// The namespace's row in the node's status.
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// let row = cluster.summary();
    /// println!("{}: {} voters, {} learners, leader {:?}", row.namespace, row.voters, row.learners, row.leader);
    /// # }
    /// ```
    pub fn summary(&self) -> NamespaceSummary {
        let group = self.group();
        let m = group.metrics();
        let voters = m.membership_config.voter_ids().count() as u32;
        let members = m.membership_config.nodes().count() as u32;
        let splits = self.formation_status().map_or(0, |f| f.splits.len() as u32);
        NamespaceSummary {
            namespace: self.namespace().to_string(),
            role: role_of(&m),
            leader: m.current_leader,
            term: m.current_term,
            commit_index: log_index(&m.local_committed),
            applied_index: log_index(&m.last_applied),
            revision: self.revision(),
            last_log_index: m.last_log_index.unwrap_or(0),
            voters,
            learners: members.saturating_sub(voters),
            quiesced: group.is_quiesced(),
            leadership: group.counters.leader_changes.history(),
            splits,
            progress: member_progress(&m),
        }
    }
}

impl Cluster {
    /// The namespace's current KV revision as this replica has applied it; `None` when the
    /// namespace runs another state machine or cannot be read now (installing a snapshot).
    pub(crate) fn revision(&self) -> Option<u64> {
        if !self.group().serves_leases {
            return None;
        }
        let view = self.node.store.view(self.namespace()).ok()?;
        flotilla_core::kv::revisions(&view).ok().map(|r| r.current)
    }
}

/// This node's role, from its Raft metrics.
pub(crate) fn role_of(m: &RaftMetrics<TypeConfig>) -> Role {
    use openraft::ServerState;
    match m.state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    }
}

/// On a leader, every other member's matched index, lag and last acknowledgement (openraft
/// keeps them only while leading); empty on any other node.
pub(crate) fn member_progress(m: &RaftMetrics<TypeConfig>) -> Vec<MemberProgress> {
    let (Some(replication), Some(acks)) = (m.replication.as_ref(), m.heartbeat.as_ref()) else {
        return Vec::new();
    };
    let last = m.last_log_index.unwrap_or(0);
    let membership = &m.membership_config;
    membership
        .nodes()
        .filter(|(id, _)| **id != m.id)
        .map(|(id, _)| {
            let matched_index = replication.get(id).cloned().flatten().map(|l| l.index);
            MemberProgress {
                id: *id,
                role: if membership.voter_ids().any(|v| v == *id) { MemberRole::Voter } else { MemberRole::Learner },
                matched_index,
                lag: last.saturating_sub(matched_index.unwrap_or(0)),
                last_ack_ms_ago: acks.get(id).cloned().flatten().map(|at| millis(at.elapsed())),
            }
        })
        .collect()
}

/// The fsync latency histogram, summed up for status.
pub(crate) fn fsync_summary(h: &Histogram) -> FsyncSummary {
    FsyncSummary {
        count: h.count,
        mean_us: h.sum.checked_div(h.count).unwrap_or(0),
        p99_le_us: h.quantile_bound(0.99).map(|bound| bound.unwrap_or(u64::MAX)),
    }
}

/// The more recent of two optional observation ages.
fn youngest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
