//! Leases over a three-node cluster: kept alive from any node they live on, across a leader
//! change; left alone they expire and take their keys with them; revoked they go at once.

mod common;

use std::time::Duration;

use common::Harness;
use flotilla::{ApiError, Consistency};

const NS: &str = "default";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_kept_alive_survives_a_leader_change_and_expires_when_left_alone() {
    let h = Harness::start(3, 31, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    let follower = h.cluster(f, NS);
    let lease = follower.lease_grant(0, Duration::from_secs(1)).await.unwrap();
    let ttl = Duration::from_secs(lease.ttl_secs);
    assert!(ttl >= follower.min_lease_ttl(), "a short TTL is raised to the minimum");
    follower.set_with_lease(b"svc/a", b"up", lease.id).await.unwrap();
    follower.set(b"svc/keep", b"no lease").await.unwrap();

    // Kept alive through a follower for two TTLs, with a leader change in between.
    let until = tokio::time::Instant::now() + ttl * 2;
    let mut moved = false;
    while tokio::time::Instant::now() < until {
        follower.lease_keep_alive(lease.id).await.expect("kept alive");
        if !moved {
            let to = (0..3).find(|i| *i != l && *i != f).unwrap();
            h.cluster(l, NS).transfer_leadership(Some(h.node(to).id())).await.unwrap();
            moved = true;
        }
        tokio::time::sleep(ttl / 4).await;
    }
    let read = follower.get(b"svc/a", Consistency::Linearizable).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"up"[..]), "a lease kept alive does not expire");
    let status = follower.lease_time_to_live(lease.id, true).await.unwrap();
    assert_eq!(status.keys, vec![b"svc/a".to_vec()]);
    assert!(status.remaining <= ttl);

    // Left alone: gone within its TTL plus a generous margin, with its key, not the other.
    let deadline = tokio::time::Instant::now() + ttl * 4;
    loop {
        let gone = follower.get(b"svc/a", Consistency::Linearizable).await.map(|r| r.value.is_none());
        if gone == Ok(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lease did not expire within 4 TTLs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(follower.get(b"svc/keep", Consistency::Linearizable).await.unwrap().value.is_some());
    let err = follower.lease_keep_alive(lease.id).await.unwrap_err();
    assert_eq!(err, ApiError::LeaseNotFound(lease.id));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_lease_takes_its_keys_at_once() {
    let h = Harness::start(3, 32, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let c = h.cluster(l, NS);
    let lease = c.lease_grant(0, Duration::from_secs(60)).await.unwrap();
    for i in 0..5 {
        c.set_with_lease(format!("eph/{i}").as_bytes(), b"x", lease.id).await.unwrap();
    }
    assert_eq!(c.leases().await.unwrap(), vec![(lease.id, Duration::from_secs(60))]);
    let revoked = c.lease_revoke(lease.id).await.unwrap();
    assert_eq!(revoked.deleted, 5);
    assert!(c.keys(b"eph/", Consistency::Linearizable).await.unwrap().keys.is_empty());
    assert_eq!(c.lease_revoke(lease.id).await.unwrap_err(), ApiError::LeaseNotFound(lease.id));
    let on_gone = c.set_with_lease(b"eph/late", b"x", lease.id).await.unwrap_err();
    assert_eq!(on_gone, ApiError::LeaseNotFound(lease.id));
    assert!(c.leases().await.unwrap().is_empty());
    h.shutdown().await;
}
