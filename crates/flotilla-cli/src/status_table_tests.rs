//! The status tables from fixed input: what `flotilla status` and `flotilla ns status` print.

use super::*;

const ME: &str = "12D3KooWAxzCBFVtEyKLnRm43gHxigCoe2d4UmkRTXhBNSv5bcCx";
const PEER: &str = "12D3KooWC7cDcNR4J3NC9y1gTkqafZKmnjCUvrRMxU2LMugGJGgy";

fn node_status() -> NodeStatus {
    let json = serde_json::json!({
        "peer_id": ME,
        "addrs": ["/ip4/10.0.0.1/tcp/7000"],
        "election_timeout_ms": 300,
        "storage": {
            "write_blocked": null,
            "free_bytes": 10_737_418_240u64,
            "reserve_bytes": 67_108_864,
            "fsync": { "count": 1200, "mean_us": 850, "p99_le_us": 2500 }
        },
        "peers": [{ "id": PEER, "namespaces": 2, "last_heard_ms_ago": 40, "down": false }],
        "namespaces": [
            {
                "namespace": "default", "role": "leader", "leader": ME, "term": 3,
                "commit_index": 120, "applied_index": 120, "revision": 57, "last_log_index": 120,
                "voters": 3, "learners": 0, "quiesced": false,
                "leadership": { "changes": 1, "last_change_ms_ago": 600_000, "recent_ms_ago": [600_000] },
                "splits": 0, "progress": []
            },
            {
                "namespace": "jobs", "role": "follower", "leader": PEER, "term": 7,
                "commit_index": 9, "applied_index": 8, "voters": 3, "learners": 1, "quiesced": true,
                "leadership": { "changes": 2, "last_change_ms_ago": 1500 }
            }
        ],
        "sealing": { "enabled": false },
        "insecure_no_cluster_key": false
    });
    serde_json::from_value(json).expect("a node's status")
}

#[test]
fn the_node_table_shows_facts_peers_and_namespaces() {
    let want = "\
node     12D3KooWAxzCBFVtEyKLnRm43gHxigCoe2d4UmkRTXhBNSv5bcCx
addrs    /ip4/10.0.0.1/tcp/7000
storage  client writes taken
disk     10.0 GiB free, reserve 64.0 MiB
fsync    p99 ≤ 2.5 ms, mean 850 µs (1200 fsyncs)

PEER       NAMESPACES  LAST HEARD  STATE
…MugGJGgy  2           40 ms ago   up

NAMESPACE  ROLE              LEADER     TERM  COMMIT  APPLIED  REVISION  VOTERS/LEARNERS  LEADER CHANGED
default    leader            self       3     120     120      57        3/0              10 min ago
jobs       follower (quiet)  …MugGJGgy  7     9       8        -         3/1              1.5 s ago
";
    assert_eq!(node_table(&node_status()), want);
}

#[test]
fn the_node_table_says_when_writes_are_refused_and_without_namespaces() {
    let mut status = node_status();
    status.storage.write_blocked = Some("disk almost full".into());
    status.storage.free_bytes = None;
    status.storage.fsync = Default::default();
    status.peers.clear();
    status.namespaces.clear();
    let text = node_table(&status);
    assert!(text.contains("storage  CLIENT WRITES REFUSED: disk almost full\n"), "{text}");
    assert!(text.contains("disk     free space not measurable\n"), "{text}");
    assert!(text.contains("fsync    no fsync yet\n"), "{text}");
    assert!(text.ends_with("\nno namespaces\n"), "{text}");
    assert!(!text.contains("PEER"), "{text}");
}

#[test]
fn an_older_nodes_status_still_reads() {
    // What a node before this change returned: no timing, peers, disk or leadership fields.
    let json = serde_json::json!({
        "peer_id": ME, "addrs": [],
        "namespaces": [{ "namespace": "default", "role": "leader", "leader": ME, "term": 1, "commit_index": 1, "applied_index": 1 }],
        "storage": { "write_blocked": null }
    });
    let status: NodeStatus = serde_json::from_value(json).expect("an older status");
    let text = node_table(&status);
    assert!(text.contains("default    leader  self"), "{text}");
}

#[test]
fn the_namespace_table_shows_members_with_their_lag() {
    let json = serde_json::json!({
        "namespace": "default", "node_id": ME, "role": "leader", "leader": ME, "term": 3,
        "last_log_index": 120, "commit_index": 120, "applied_index": 119, "snapshot_index": 100, "revision": 57,
        "members": [
            { "id": ME, "addrs": [], "role": "voter" },
            { "id": PEER, "addrs": [], "role": "voter" },
            { "id": "12D3KooWDGEF3VLEM7R3XWGJsqPCcSSjwRmuNw6JTQMVMNSSzwAz", "addrs": [], "role": "learner" }
        ],
        "membership_changing": false, "cluster": "c-1", "quiesced": false,
        "leadership": { "changes": 1, "last_change_ms_ago": 90_000, "recent_ms_ago": [90_000] },
        "progress": [
            { "id": PEER, "role": "voter", "matched_index": 120, "lag": 0, "last_ack_ms_ago": 12 },
            { "id": "12D3KooWDGEF3VLEM7R3XWGJsqPCcSSjwRmuNw6JTQMVMNSSzwAz", "role": "learner", "matched_index": null, "lag": 120, "last_ack_ms_ago": null }
        ],
        "formation": {
            "phase": "member", "reason": "in cluster c-1", "mode": "expect 3", "peers": [],
            "timeline": [{ "at_ms": 250, "event": "founded cluster c-1" }],
            "splits": [{ "cluster": "c-2", "seen_via": PEER, "voters": 1, "holds_data": false, "resolution": "the other side dissolves" }],
            "counters": {}
        }
    });
    let want = "\
namespace  default
cluster    c-1
role       leader, term 3, leader self
log        last 120, commit 120, applied 119, snapshot 100; revision 57
members    2 voters, 1 learners
leader     1 changes, last 90.0 s ago

MEMBER     ROLE     MATCHED  LAG  LAST ACK
self       voter    -        -    -
…MugGJGgy  voter    120      0    12 ms ago
…MNSSzwAz  learner  -        120  -

formation  member: in cluster c-1
split      cluster c-2 via 12D3KooWC7cDcNR4J3NC9y1gTkqafZKmnjCUvrRMxU2LMugGJGgy: the other side dissolves
  at 250 ms: founded cluster c-1
";
    assert_eq!(namespace_table(&json), want);
}

#[test]
fn short_ids_and_tables() {
    assert_eq!(short_id(ME, ME), "self");
    assert_eq!(short_id(PEER, ME), "…MugGJGgy");
    assert_eq!(short_id("abc", ME), "abc");
    let rows =
        vec![vec!["a".to_string(), "long cell".into(), "x".into()], vec!["bbbb".into(), "c".into(), String::new()]];
    assert_eq!(table(&["H1", "H2", "H3"], &rows), "H1    H2         H3\na     long cell  x\nbbbb  c\n");
}
