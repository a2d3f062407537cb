//! Building this node's [`PeerView`] of a namespace, and reading facts out of Raft metrics.

use flotilla_core::formation::{ClusterId, MemberView, PeerAddrs, PeerPhase, PeerView, MAX_VIEW_PEERS};
use flotilla_core::types::{NodeId, TypeConfig};
use flotilla_core::Namespace;
use openraft::RaftMetrics;

use crate::node::Node;

/// Whether a replica holds Raft state (any log entry, kept or purged).
pub fn has_state(m: &RaftMetrics<TypeConfig>) -> bool {
    m.last_log_index.is_some()
}

/// The cluster a replica belongs to, from the stamps in its membership configuration.
pub fn cluster_of(m: &RaftMetrics<TypeConfig>) -> ClusterId {
    let membership = m.membership_config.membership();
    if let Some(own) = membership.get_node(&m.id) {
        if !own.cluster.is_empty() {
            return own.cluster.clone();
        }
    }
    membership.nodes().find(|(_, info)| !info.cluster.is_empty()).map(|(_, i)| i.cluster.clone()).unwrap_or_default()
}

/// The id of the cluster a ballot founds.
pub fn cluster_id(coordinator: NodeId, round: u64) -> ClusterId {
    format!("{coordinator}/{round:016x}")
}

impl Node {
    /// This node's view of `ns` for `requester` (whose membership it reports).
    pub(crate) fn local_view(&self, ns: &Namespace, requester: Option<NodeId>) -> PeerView {
        let except = requester.unwrap_or(self.id);
        let mut members = self.peers.registrations(ns, except);
        let phase = match (self.group(ns), self.formation(ns)) {
            (Some(group), Some(formation)) => {
                let m = group.metrics();
                if has_state(&m) {
                    let membership = m.membership_config.membership();
                    for (id, info) in membership.nodes() {
                        if *id != except && *id != self.id && !members.iter().any(|p| p.peer == *id) {
                            members.push(PeerAddrs { peer: *id, addrs: info.addrs.clone() });
                        }
                    }
                    PeerPhase::Member(MemberView {
                        cluster: cluster_of(&m),
                        leader: m.current_leader,
                        voters: membership.voter_ids().count() as u32,
                        members: membership.nodes().count() as u32,
                        config_index: m.membership_config.log_id().as_ref().map(|l| l.index).unwrap_or(0),
                        includes_you: requester.is_some_and(|r| membership.get_node(&r).is_some()),
                        holds_data: self.store.holds_data(ns).unwrap_or(true),
                    })
                } else {
                    PeerPhase::Fresh {
                        expect: self.config.expect.map(|n| n as u32),
                        phase: formation.lock().founder.phase(),
                    }
                }
            }
            _ => PeerPhase::NotServed,
        };
        members.truncate(MAX_VIEW_PEERS);
        PeerView { phase, addrs: self.transport.local_addrs(), members, known: self.peers.recent(except) }
    }
}
