//! Two clusters of the same namespace on one network never exchange Raft traffic: every Raft
//! RPC carries the sender's cluster id and a node refuses appends, votes, pre-votes, snapshot
//! chunks and leadership transfers naming another cluster (or none), even from a peer its own
//! configuration lists (a member that has since founded or joined another cluster).

mod common;

use std::collections::BTreeSet;

use common::{eventually, Harness, PATIENCE};
use flotilla::Consistency;
use flotilla_core::types::{SnapshotMeta, StoredMembership, Vote};
use flotilla_core::wire::{
    RaftEnvelope, RaftRequest, RaftResponse, RequestBody, SnapshotChunk, WireError, WireRequest, WireResponse,
};
use flotilla_core::{MemberInfo, Namespace, NodeId, TypeConfig};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::Membership;

const NS: &str = "default";

/// Wait until `among` agree on one named cluster with a leader among them; returns the leader.
async fn one_cluster(h: &Harness, among: &[usize]) -> usize {
    let l = h.leader_among(NS, among).await;
    eventually("one named cluster with every node a voter", || {
        let s = h.cluster(l, NS).state();
        let voters: BTreeSet<NodeId> = s.members.iter().map(|m| m.id).collect();
        !s.cluster.is_empty()
            && voters == among.iter().map(|i| h.ids[*i]).collect()
            && among.iter().all(|i| h.cluster(*i, NS).state().cluster == s.cluster)
    })
    .await;
    l
}

/// One of each Raft RPC, as the node `sender` with vote term `term` would send it.
fn every_rpc(sender: NodeId, to: NodeId, term: u64) -> Vec<RaftRequest> {
    let membership: Membership<NodeId, MemberInfo> =
        Membership::new_with_defaults(vec![BTreeSet::from([sender])], Vec::<NodeId>::new());
    let meta = SnapshotMeta { last_log_id: None, last_membership: StoredMembership::new(None, membership) };
    vec![
        RaftRequest::Append(AppendEntriesRequest {
            vote: Vote::new_committed(term, sender),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        }),
        RaftRequest::Vote(VoteRequest::<TypeConfig>::new(Vote::new(term, sender), None)),
        RaftRequest::PreVote(VoteRequest::<TypeConfig>::new(Vote::new(term, sender), None)),
        RaftRequest::SnapshotChunk(SnapshotChunk {
            vote: Vote::new_committed(term, sender),
            meta,
            offset: 0,
            total: 0,
            data: vec![],
            done: true,
        }),
        RaftRequest::TransferLeader(TransferLeaderRequest::new(Vote::new_committed(term, sender), to, None)),
    ]
}

async fn send(h: &Harness, from: NodeId, to: NodeId, cluster: &str, rpc: RaftRequest) -> WireResponse {
    let request = WireRequest {
        namespace: Namespace::new(NS).expect("ns"),
        body: RequestBody::Raft(RaftEnvelope { cluster: cluster.to_string(), rpc }),
    };
    h.network.transport(from).call(to, request, PATIENCE).await.expect("a reply")
}

fn refused_for_its_cluster(reply: &WireResponse) -> bool {
    matches!(reply, WireResponse::Error(WireError::Rejected(m)) if m.contains("cluster"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_traffic_from_another_cluster_of_the_namespace_is_refused() {
    let mut h = Harness::new(4, 23, &[NS], |c| {
        c.expect = None;
        c.discovery_window_ms = Some(1_000);
    });
    let all = h.ids.clone();
    // Each side founds its own cluster of the namespace, and writes to it.
    h.network.partition(&all[0..2], &all);
    for i in 0..4 {
        h.boot(i).await;
    }
    let a = one_cluster(&h, &[0, 1]).await;
    let b = one_cluster(&h, &[2, 3]).await;
    h.cluster(a, NS).set(b"a", b"1").await.expect("write on side a");
    h.cluster(b, NS).set(b"b", b"2").await.expect("write on side b");
    let (cluster_a, cluster_b) = (h.cluster(a, NS).state().cluster, h.cluster(b, NS).state().cluster);
    assert_ne!(cluster_a, cluster_b);
    h.network.heal();

    let follower_b = if b == 2 { 3 } else { 2 };
    let term = h.cluster(b, NS).state().term + 5;
    let (to, leader_b, leader_a) = (h.ids[follower_b], h.ids[b], h.ids[a]);
    // A peer the follower's configuration lists (its own leader), now naming another cluster:
    // what a member that lost its data and founded or joined elsewhere sends. The membership
    // rule alone would take it.
    for cluster in [cluster_a.as_str(), ""] {
        for rpc in every_rpc(leader_b, to, term) {
            let what = format!("{rpc:?}");
            let reply = send(&h, leader_b, to, cluster, rpc).await;
            assert!(refused_for_its_cluster(&reply), "{what} naming cluster {cluster:?} was not refused: {reply:?}");
        }
    }
    // The other cluster's leader, naming its own cluster.
    for rpc in every_rpc(leader_a, to, term) {
        let what = format!("{rpc:?}");
        let reply = send(&h, leader_a, to, &cluster_a, rpc).await;
        assert!(refused_for_its_cluster(&reply), "{what} from the other cluster was not refused: {reply:?}");
    }
    // The gate lets the follower's own cluster through: a stale heartbeat gets Raft's answer.
    let stale = RaftRequest::Append(AppendEntriesRequest {
        vote: Vote::new_committed(0, leader_b),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    });
    let reply = send(&h, leader_b, to, &cluster_b, stale).await;
    assert!(matches!(reply, WireResponse::Raft(RaftResponse::Append(_))), "{reply:?}");

    // Nothing moved: each cluster keeps its leader, its members and its data.
    assert_eq!(h.cluster(follower_b, NS).state().cluster, cluster_b);
    assert_eq!(h.cluster(b, NS).state().leader, Some(leader_b), "a refused vote moved leadership");
    let got = h.cluster(follower_b, NS).get(b"b", Consistency::Linearizable).await.expect("side b serves");
    assert_eq!(got.value.as_deref(), Some(&b"2"[..]));
    let got = h.cluster(a, NS).get(b"a", Consistency::Linearizable).await.expect("side a serves");
    assert_eq!(got.value.as_deref(), Some(&b"1"[..]));
    h.shutdown().await;
}
