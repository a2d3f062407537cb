//! Namespaces opened and closed at runtime, in process over the in-process network on real stores:
//! formation at runtime, leaving a membership, the persisted set across restarts, crashes in
//! the middle of an open or a close, and many namespaces at once.

mod common;

use std::time::Duration;

use common::{eventually, Harness, PATIENCE};
use flotilla::in_process::CrashPoint;
use flotilla::{CloseOptions, Consistency, MemberRole, Namespace, NamespaceError, Role};
use tokio::time::Instant;

const BASE: &str = "base";
const RT: &str = "runtime";

fn no_tweak(_: &mut flotilla::Config) {}

/// Voters of `ns` in the configuration of the leader agreed among `among`.
async fn voters_among(h: &Harness, ns: &str, among: &[usize]) -> Vec<flotilla_core::types::NodeId> {
    let l = h.leader_among(ns, among).await;
    h.cluster(l, ns).state().members.iter().filter(|m| m.role == MemberRole::Voter).map(|m| m.id).collect()
}

/// Wait until the leader agreed among `among` has exactly `want` as voters, no change pending.
async fn wait_voter_set(h: &Harness, ns: &str, among: &[usize], want: &[usize]) {
    let deadline = Instant::now() + PATIENCE;
    let mut want: Vec<_> = want.iter().map(|i| h.ids[*i]).collect();
    want.sort();
    loop {
        let mut voters = voters_among(h, ns, among).await;
        voters.sort();
        let l = h.leader_among(ns, among).await;
        if voters == want && !h.cluster(l, ns).state().membership_changing {
            return;
        }
        assert!(Instant::now() < deadline, "{ns}: voters {voters:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn serves(h: &Harness, i: usize, ns: &str) -> bool {
    h.node(i).namespaces().iter().any(|n| n.as_str() == ns)
}

fn stores_anything(h: &Harness, i: usize, ns: &str) -> bool {
    let ns = Namespace::new(ns).unwrap();
    h.node(i).store().stored_namespaces().unwrap().contains(&ns)
}

/// Open `ns` on every node of `nodes` at once.
async fn open_on(h: &Harness, ns: &str, nodes: &[usize]) {
    let opens = nodes.iter().map(|i| h.node(*i).open_namespace(ns));
    for result in futures::future::join_all(opens).await {
        result.expect("open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opened_at_runtime_closed_on_one_node_and_the_set_survives_restarts() {
    let mut h = Harness::start(3, 41, &[BASE], no_tweak).await;
    open_on(&h, RT, &[0, 1, 2]).await;
    // Opening again, twice at once, is a no-op that succeeds.
    let (a, b) = tokio::join!(h.node(0).open_namespace(RT), h.node(0).open_namespace(RT));
    a.unwrap();
    b.unwrap();
    h.wait_voters(RT, 3).await;
    let l = h.leader(RT).await;
    let written = h.cluster(l, RT).set(b"k", b"v1").await.unwrap();
    let other = (0..3).find(|i| *i != l).unwrap();
    let read = h.cluster(other, RT).get(b"k", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v1"[..]));
    assert!(read.index >= written.index);

    // Close on the leader: it hands off, leaves, and its data is gone.
    h.node(l).close_namespace(RT, CloseOptions::default()).await.expect("close");
    assert!(!serves(&h, l, RT));
    assert!(matches!(h.node(l).cluster(RT), Err(flotilla::ApiError::UnknownNamespace(_))));
    assert!(!stores_anything(&h, l, RT), "the closed node's data of {RT} is gone");
    assert!(!h.dirs[l].path().join("formation").join(format!("{RT}.rec")).exists(), "formation record gone");
    h.node(l).close_namespace(RT, CloseOptions::default()).await.expect("closing a closed namespace is a no-op");
    let rest: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    wait_voter_set(&h, RT, &rest, &rest).await;
    // The other two keep serving.
    let new = h.leader_among(RT, &rest).await;
    let follower = rest.iter().copied().find(|i| *i != new).unwrap();
    h.cluster(follower, RT).set(b"k", b"v2").await.unwrap();
    let read = h.cluster(new, RT).get(b"k", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v2"[..]));
    // The base namespace was not touched.
    h.cluster(l, BASE).set(b"b", b"1").await.unwrap();

    // A restart reopens exactly the persisted set: without RT on the closed node, with RT on
    // another, whatever the --namespace flags say.
    h.crash(l).await;
    h.reboot(l).await;
    h.crash(follower).await;
    h.reboot(follower).await;
    assert!(!serves(&h, l, RT) && serves(&h, l, BASE));
    assert!(serves(&h, follower, RT));
    let read = h.cluster(follower, RT).get(b"k", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v2"[..]));

    // Reopened, the node joins the running cluster again (its membership was forgotten).
    h.node(l).open_namespace(RT).await.expect("reopen");
    h.wait_voters(RT, 3).await;
    h.wait_applied(l, RT, h.cluster(follower, RT).state().applied_index).await;
    let read = h.cluster(l, RT).get(b"k", Consistency::Stale).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v2"[..]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_with_keep_data_leaves_but_keeps_the_data_and_rejoins_with_it() {
    let mut h = Harness::start(3, 42, &[BASE, RT], no_tweak).await;
    let l = h.leader(RT).await;
    h.cluster(l, RT).set(b"kept", b"1").await.unwrap();
    let f = (0..3).find(|i| *i != l).unwrap();
    h.wait_applied(f, RT, h.cluster(l, RT).state().applied_index).await;
    h.node(f).close_namespace(RT, CloseOptions { keep_data: true }).await.expect("close");
    let rest: Vec<usize> = (0..3).filter(|i| *i != f).collect();
    wait_voter_set(&h, RT, &rest, &rest).await;
    assert!(!serves(&h, f, RT));
    // Kept data survives a restart (not cleaned as a leftover).
    h.crash(f).await;
    h.reboot(f).await;
    assert!(!serves(&h, f, RT));
    assert!(stores_anything(&h, f, RT), "kept data is still there");
    h.node(f).open_namespace(RT).await.expect("reopen");
    h.wait_voters(RT, 3).await;
    let read = h.cluster(f, RT).get(b"kept", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"1"[..]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_only_member_closes_alone_and_a_bad_name_is_refused() {
    let mut h = Harness::new(1, 43, &[BASE], no_tweak);
    h.boot(0).await;
    h.wait_voters(BASE, 1).await;
    h.node(0).open_namespace("solo").await.unwrap();
    h.wait_voters("solo", 1).await;
    h.cluster(0, "solo").set(b"k", b"v").await.unwrap();
    h.node(0).close_namespace("solo", CloseOptions::default()).await.expect("the last member closes alone");
    assert!(!stores_anything(&h, 0, "solo"));
    assert!(matches!(h.node(0).open_namespace("Not/valid").await, Err(NamespaceError::InvalidName(_))));
    // Opens and closes of one namespace racing each other run one at a time; whatever the
    // order, what the node serves is what it reopens after a restart.
    for round in 0..3 {
        let node = h.node(0).clone();
        let (opened, closed) =
            tokio::join!(node.open_namespace("race"), node.close_namespace("race", CloseOptions::default()));
        opened.unwrap();
        closed.unwrap();
        let serving = serves(&h, 0, "race");
        let set = flotilla::namespace_set::NamespaceSetFile::new(h.dirs[0].path()).load().unwrap().unwrap();
        assert_eq!(set.open.contains(&Namespace::new("race").unwrap()), serving, "round {round}");
    }
    let before = h.node(0).namespaces();
    h.crash(0).await;
    h.reboot(0).await;
    assert_eq!(h.node(0).namespaces(), before, "a restart reopens exactly the persisted set");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_during_open_resumes_the_open_at_restart() {
    let mut h = Harness::start(3, 44, &[BASE], no_tweak).await;
    h.node(0).crash_at(Some(CrashPoint::OpenAfterPersist));
    let (crashed, one, two) =
        tokio::join!(h.node(0).open_namespace(RT), h.node(1).open_namespace(RT), h.node(2).open_namespace(RT));
    assert!(matches!(crashed, Err(NamespaceError::Crashed(CrashPoint::OpenAfterPersist))), "{crashed:?}");
    one.unwrap();
    two.unwrap();
    h.crash(0).await;
    h.reboot(0).await;
    assert!(serves(&h, 0, RT), "listed before the crash: reopened at start");
    h.wait_voters(RT, 3).await;
    let l = h.leader(RT).await;
    h.cluster(l, RT).set(b"k", b"v").await.unwrap();
    let read = h.cluster(0, RT).get(b"k", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_during_close_leaves_a_member_with_its_data_or_a_clean_leave() {
    let mut h = Harness::start(3, 45, &[BASE, RT], no_tweak).await;
    let l = h.leader(RT).await;
    let written = h.cluster(l, RT).set(b"k", b"v").await.unwrap();

    // Crash once the removal is committed, before anything else: the node restarts with the
    // namespace open and its data, and asks back in; it never serves it without its data.
    let f = (0..3).find(|i| *i != l).unwrap();
    h.wait_applied(f, RT, written.index).await;
    h.node(f).crash_at(Some(CrashPoint::CloseAfterLeave));
    let crashed = h.node(f).close_namespace(RT, CloseOptions::default()).await;
    assert!(matches!(crashed, Err(NamespaceError::Crashed(CrashPoint::CloseAfterLeave))), "{crashed:?}");
    h.crash(f).await;
    let rest: Vec<usize> = (0..3).filter(|i| *i != f).collect();
    wait_voter_set(&h, RT, &rest, &rest).await;
    h.reboot(f).await;
    assert!(serves(&h, f, RT), "still listed: reopened");
    assert!(h.cluster(f, RT).state().applied_index >= written.index, "reopened with its data");
    h.wait_voters(RT, 3).await;
    let read = h.cluster(f, RT).get(b"k", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));

    // Crash once the namespace is out of the set, before its data is dropped: the next start
    // drops the leftovers, and the node is no member.
    let l = h.leader(RT).await;
    let g = (0..3).find(|i| *i != l).unwrap();
    h.node(g).crash_at(Some(CrashPoint::CloseAfterUnlist));
    let crashed = h.node(g).close_namespace(RT, CloseOptions::default()).await;
    assert!(matches!(crashed, Err(NamespaceError::Crashed(CrashPoint::CloseAfterUnlist))), "{crashed:?}");
    h.crash(g).await;
    h.reboot(g).await;
    assert!(!serves(&h, g, RT));
    assert!(!stores_anything(&h, g, RT), "leftovers of {RT} dropped at start");
    assert!(!h.dirs[g].path().join("formation").join(format!("{RT}.rec")).exists(), "formation record dropped");
    let rest: Vec<usize> = (0..3).filter(|i| *i != g).collect();
    wait_voter_set(&h, RT, &rest, &rest).await;
    let l = h.leader_among(RT, &rest).await;
    h.cluster(l, RT).set(b"after", b"1").await.unwrap();
    h.shutdown().await;
}

/// Longer heartbeats for the many-namespaces test: 600 groups in one process on a small CI
/// machine (see issue 12 point 2: idle groups are not cheap yet).
fn many_groups(c: &mut flotilla::Config) {
    c.heartbeat_ms = Some(500);
    c.election_min_ms = Some(3_000);
    c.election_max_ms = Some(6_000);
    c.request_timeout_ms = 30_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_namespaces_opened_at_start_and_at_runtime_all_get_a_leader() {
    const AT_START: usize = 100;
    const AT_RUNTIME: usize = 100;
    let names: Vec<String> = (0..AT_START + AT_RUNTIME).map(|i| format!("ns-{i:03}")).collect();
    let start: Vec<&str> = names[..AT_START].iter().map(String::as_str).collect();
    let mut h = Harness::new(3, 46, &start, many_groups);
    for i in 0..3 {
        h.boot(i).await;
    }
    let began = Instant::now();
    for ns in &names[AT_START..] {
        open_on(&h, ns, &[0, 1, 2]).await;
    }
    let bound = Duration::from_secs(240);
    let deadline = began + bound;
    loop {
        let led = names.iter().filter(|ns| (0..3).any(|i| h.cluster(i, ns).state().role == Role::Leader)).count();
        if led == names.len() {
            break;
        }
        assert!(Instant::now() < deadline, "{led} of {} namespaces have a leader after {bound:?}", names.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{} namespaces have a leader after {:?}", names.len(), began.elapsed());
    eventually("every node serves every namespace", || (0..3).all(|i| h.node(i).namespaces().len() == names.len()))
        .await;
    h.shutdown().await;
}

fn two_voters(c: &mut flotilla::Config) {
    c.voter_target = 2;
    c.min_quorum = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_closes_by_removing_itself() {
    let mut h = Harness::new(3, 47, &[RT], two_voters);
    for i in 0..3 {
        h.boot(i).await;
    }
    // Two voters and one learner (the voter target is two).
    let deadline = Instant::now() + PATIENCE;
    let learner = loop {
        let l = h.leader(RT).await;
        let state = h.cluster(l, RT).state();
        let learners: Vec<_> = state.members.iter().filter(|m| m.role == MemberRole::Learner).collect();
        if state.members.len() == 3 && learners.len() == 1 && !state.membership_changing {
            break h.ids.iter().position(|id| *id == learners[0].id).unwrap();
        }
        assert!(Instant::now() < deadline, "no learner: {:?}", state.members);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Only voters may change the membership, but any member may take itself out.
    h.node(learner).close_namespace(RT, CloseOptions::default()).await.expect("a learner leaves too");
    let rest: Vec<usize> = (0..3).filter(|i| *i != learner).collect();
    let l = h.leader_among(RT, &rest).await;
    eventually("the learner is out of the configuration", || {
        h.cluster(l, RT).state().members.iter().all(|m| m.id != h.ids[learner])
    })
    .await;
    assert!(!stores_anything(&h, learner, RT));
    h.shutdown().await;
}
