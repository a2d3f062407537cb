//! What a node's status shows an operator, observed on a live three-node cluster, and what
//! `flotilla::doctor` concludes from it as followers go away: acknowledgements and lag on the
//! leader, peers heard, then a silent peer (warn), then a leader without a quorum (fail).

mod common;

use common::*;
use flotilla::doctor::{diagnose, worst, Finding, Thresholds, Verdict};
use flotilla::{NodeStatus, Role};

const NS: &str = "default";

fn findings(status: &NodeStatus) -> Vec<Finding> {
    diagnose(status, &Thresholds::for_status(status))
}

fn verdict_of(findings: &[Finding], check: &str) -> Verdict {
    findings.iter().filter(|f| f.check == check).map(|f| f.verdict).max().unwrap_or(Verdict::Ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_doctor_follow_the_cluster_as_followers_go_away() {
    // Never quiesce: a quiet leader has no acknowledgements to report, by design.
    let mut h = Harness::start(3, 11, &[NS], |c| c.quiesce_after_ms = Some(0)).await;
    let l = h.leader(NS).await;
    let entry = h.cluster(l, NS);
    let mut last = 0;
    for i in 0..20 {
        last = entry.set(format!("k{i}").as_bytes(), b"v").await.expect("write").index;
    }
    let followers: Vec<usize> = (0..3).filter(|i| *i != l).collect();

    // The leader sees both followers caught up and acknowledging; the doctor is content.
    eventually("the leader sees its followers caught up and heard", || {
        let s = h.node(l).status();
        let row = &s.namespaces[0];
        row.role == Role::Leader
            && row.voters == 3
            && row.progress.len() == 2
            && row.progress.iter().all(|p| p.matched_index >= Some(last) && p.last_ack_ms_ago.is_some())
            && s.peers.len() == 2
            && s.peers.iter().all(|p| p.last_heard_ms_ago.is_some() && !p.down)
    })
    .await;
    let status = h.node(l).status();
    assert!(status.storage.fsync.count > 0 && status.storage.fsync.p99_le_us.is_some(), "{:?}", status.storage);
    assert!(status.storage.free_bytes.is_some(), "{:?}", status.storage);
    assert!(status.namespaces[0].leadership.changes >= 1, "{:?}", status.namespaces[0]);
    assert!(status.namespaces[0].revision >= Some(20), "twenty writes: {:?}", status.namespaces[0]);
    let found = findings(&status);
    for check in ["storage", "peers", "leaders", "splits", "lag"] {
        assert_eq!(verdict_of(&found, check), Verdict::Ok, "{check}: {found:#?}");
    }
    // A follower knows its leader but not the others' progress.
    let follower = h.node(followers[0]).status();
    assert_eq!(follower.namespaces[0].role, Role::Follower);
    assert!(follower.namespaces[0].progress.is_empty());
    assert_eq!(follower.namespaces[0].leader, Some(h.ids[l]));

    // One follower stops: the leader keeps its quorum; the silent peer is a warning.
    let gone = h.ids[followers[0]];
    h.crash(followers[0]).await;
    eventually("the doctor warns about the silent peer", || {
        let found = findings(&h.node(l).status());
        found.iter().any(|f| f.check == "peers" && f.verdict == Verdict::Warn && f.subject.contains(&gone.to_string()))
            && verdict_of(&found, "leaders") == Verdict::Ok
    })
    .await;

    // The other one stops too: no quorum, and the doctor fails.
    h.crash(followers[1]).await;
    eventually("the doctor fails the leaderless or quorumless namespace", || {
        let found = findings(&h.node(l).status());
        verdict_of(&found, "leaders") == Verdict::Fail && worst(&found) == Verdict::Fail
    })
    .await;
    h.shutdown().await;
}
