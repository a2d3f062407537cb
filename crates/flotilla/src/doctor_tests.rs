//! The doctor's rules, table-style: one healthy status, one change per row, the findings
//! that change must produce.

use flotilla_core::types::NodeId;

use super::*;
use crate::node_status::{
    FsyncSummary, LeadershipHistory, MemberProgress, NamespaceSummary, NodeStatus, PeerStatus, StorageStatus,
};

const MIB: u64 = 1024 * 1024;

fn peer(n: u8) -> NodeId {
    // Fixed ids, so failures print the same every run.
    let key = libp2p_identity::Keypair::ed25519_from_bytes([n; 32]).expect("key");
    key.public().to_peer_id()
}

fn progress(n: u8, lag: u64, ack_ms: Option<u64>) -> MemberProgress {
    MemberProgress {
        id: peer(n),
        role: MemberRole::Voter,
        matched_index: Some(100 - lag),
        lag,
        last_ack_ms_ago: ack_ms,
    }
}

/// A three-voter namespace this node leads, followers fresh and caught up.
fn led(name: &str) -> NamespaceSummary {
    NamespaceSummary {
        namespace: name.into(),
        role: Role::Leader,
        leader: Some(peer(0)),
        term: 3,
        commit_index: 100,
        applied_index: 100,
        revision: Some(57),
        last_log_index: 100,
        voters: 3,
        learners: 0,
        quiesced: false,
        leadership: LeadershipHistory { changes: 1, last_change_ms_ago: Some(600_000), recent_ms_ago: vec![600_000] },
        splits: 0,
        progress: vec![progress(1, 0, Some(20)), progress(2, 0, Some(30))],
    }
}

fn healthy() -> NodeStatus {
    NodeStatus {
        peer_id: peer(0).to_string(),
        addrs: vec!["/ip4/127.0.0.1/tcp/7000".into()],
        election_timeout_ms: 300,
        storage: StorageStatus {
            write_blocked: None,
            free_bytes: Some(10_000 * MIB),
            reserve_bytes: 64 * MIB,
            fsync: FsyncSummary { count: 1_000, mean_us: 800, p99_le_us: Some(2_500) },
        },
        peers: vec![
            PeerStatus { id: peer(1), namespaces: 2, last_heard_ms_ago: Some(20), down: false },
            PeerStatus { id: peer(2), namespaces: 2, last_heard_ms_ago: Some(30), down: false },
        ],
        namespaces: vec![led("default"), NamespaceSummary { role: Role::Follower, progress: vec![], ..led("jobs") }],
    }
}

/// The non-ok findings, as (check, subject, verdict).
fn problems(status: &NodeStatus) -> Vec<(&'static str, String, Verdict)> {
    diagnose(status, &Thresholds::for_status(status))
        .into_iter()
        .filter(|f| f.verdict != Verdict::Ok)
        .map(|f| (f.check, f.subject, f.verdict))
        .collect()
}

#[test]
fn a_healthy_node_has_one_ok_finding_per_check() {
    let status = healthy();
    let findings = diagnose(&status, &Thresholds::for_status(&status));
    let checks: Vec<&str> = findings.iter().map(|f| f.check).collect();
    assert_eq!(checks, ["storage", "disk", "fsync", "peers", "leaders", "leader-changes", "splits", "lag"]);
    assert_eq!(worst(&findings), Verdict::Ok, "{findings:#?}");
}

#[test]
fn each_problem_gives_its_finding_and_verdict() {
    type Change = fn(&mut NodeStatus);
    type Problems = Vec<(&'static str, String, Verdict)>;
    let ns = |s: &str| format!("namespace {s}");
    let cases: Vec<(&str, Change, Problems)> = vec![
        (
            "write blocked",
            |s: &mut NodeStatus| s.storage.write_blocked = Some("disk full".into()),
            vec![("storage", "node".into(), Verdict::Fail)],
        ),
        (
            "below the reserve",
            |s: &mut NodeStatus| s.storage.free_bytes = Some(10 * MIB),
            vec![("disk", "node".into(), Verdict::Fail)],
        ),
        (
            "under twice the reserve",
            |s: &mut NodeStatus| s.storage.free_bytes = Some(100 * MIB),
            vec![("disk", "node".into(), Verdict::Warn)],
        ),
        (
            "unmeasurable disk",
            |s: &mut NodeStatus| s.storage.free_bytes = None,
            vec![("disk", "node".into(), Verdict::Warn)],
        ),
        (
            "reserve off, little free",
            |s: &mut NodeStatus| (s.storage.reserve_bytes, s.storage.free_bytes) = (0, Some(MIB)),
            vec![],
        ),
        (
            "fsync p99 25 ms",
            |s: &mut NodeStatus| s.storage.fsync.p99_le_us = Some(25_000),
            vec![("fsync", "node".into(), Verdict::Warn)],
        ),
        (
            "fsync p99 1 s",
            |s: &mut NodeStatus| s.storage.fsync.p99_le_us = Some(1_000_000),
            vec![("fsync", "node".into(), Verdict::Fail)],
        ),
        (
            "fsync over 1 s",
            |s: &mut NodeStatus| s.storage.fsync.p99_le_us = Some(u64::MAX),
            vec![("fsync", "node".into(), Verdict::Fail)],
        ),
        ("no fsync yet", |s: &mut NodeStatus| s.storage.fsync = FsyncSummary::default(), vec![]),
        (
            "peer down",
            |s: &mut NodeStatus| s.peers[1].down = true,
            vec![("peers", format!("peer {}", peer(2)), Verdict::Warn)],
        ),
        (
            "peer silent",
            |s: &mut NodeStatus| s.peers[0].last_heard_ms_ago = Some(5_000),
            vec![("peers", format!("peer {}", peer(1)), Verdict::Warn)],
        ),
        ("peer not observed", |s: &mut NodeStatus| s.peers[0].last_heard_ms_ago = None, vec![]),
        ("no leader", |s: &mut NodeStatus| s.namespaces[1].leader = None, vec![("leaders", ns("jobs"), Verdict::Fail)]),
        (
            "leader without quorum",
            |s: &mut NodeStatus| s.namespaces[0].progress.iter_mut().for_each(|p| p.last_ack_ms_ago = Some(9_000)),
            vec![("leaders", ns("default"), Verdict::Fail)],
        ),
        (
            "leader with one voter silent",
            |s: &mut NodeStatus| s.namespaces[0].progress[0].last_ack_ms_ago = None,
            vec![],
        ),
        (
            "quiesced leader has no acknowledgements by design",
            |s: &mut NodeStatus| {
                s.namespaces[0].quiesced = true;
                s.namespaces[0].progress.iter_mut().for_each(|p| p.last_ack_ms_ago = Some(60_000));
            },
            vec![],
        ),
        (
            "three changes in five minutes",
            |s: &mut NodeStatus| s.namespaces[1].leadership.recent_ms_ago = vec![1_000, 20_000, 299_000, 400_000],
            vec![("leader-changes", ns("jobs"), Verdict::Warn)],
        ),
        (
            "two changes in five minutes",
            |s: &mut NodeStatus| s.namespaces[1].leadership.recent_ms_ago = vec![1_000, 20_000, 301_000],
            vec![],
        ),
        (
            "ten changes in five minutes",
            |s: &mut NodeStatus| s.namespaces[0].leadership.recent_ms_ago = (1..=10).map(|i| i * 1_000).collect(),
            vec![("leader-changes", ns("default"), Verdict::Fail)],
        ),
        ("split", |s: &mut NodeStatus| s.namespaces[1].splits = 1, vec![("splits", ns("jobs"), Verdict::Fail)]),
        (
            "lagging member",
            |s: &mut NodeStatus| s.namespaces[0].progress[1].lag = 20_000,
            vec![("lag", ns("default"), Verdict::Warn)],
        ),
        (
            "several at once, in check order",
            |s: &mut NodeStatus| {
                s.storage.write_blocked = Some("store stopped".into());
                s.namespaces[0].splits = 2;
                s.namespaces[1].leader = None;
            },
            vec![
                ("storage", "node".into(), Verdict::Fail),
                ("leaders", ns("jobs"), Verdict::Fail),
                ("splits", ns("default"), Verdict::Fail),
            ],
        ),
    ];
    for (name, change, want) in cases {
        let mut status = healthy();
        change(&mut status);
        let got = problems(&status);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn worst_is_the_most_severe_verdict() {
    let f = |verdict| finding("disk", "node", verdict, String::new());
    assert_eq!(worst(&[]), Verdict::Ok);
    assert_eq!(worst(&[f(Verdict::Ok), f(Verdict::Warn)]), Verdict::Warn);
    assert_eq!(worst(&[f(Verdict::Fail), f(Verdict::Warn)]), Verdict::Fail);
}

#[test]
fn thresholds_follow_the_election_timeout() {
    let mut status = healthy();
    assert_eq!(Thresholds::for_status(&status).peer_silence_ms, 1_000, "at least a second");
    status.election_timeout_ms = 3_000;
    assert_eq!(Thresholds::for_status(&status).peer_silence_ms, 6_000);
    status.election_timeout_ms = 0;
    assert_eq!(Thresholds::for_status(&status).peer_silence_ms, 5_000, "an older node without timing");
}

#[test]
fn units_read_at_a_glance() {
    let cases =
        [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (64 * MIB, "64.0 MiB"), (3 * 1024 * 1024 * MIB, "3.0 TiB")];
    for (n, want) in cases {
        assert_eq!(bytes(n), want);
    }
    let cases = [(12, "12 ms"), (1_500, "1.5 s"), (300_000, "5 min")];
    for (ms, want) in cases {
        assert_eq!(millis(ms), want);
    }
    let cases = [(850, "850 µs"), (2_500, "2.5 ms"), (2_000_000, "2.0 s")];
    for (us, want) in cases {
        assert_eq!(micros(us), want);
    }
}
