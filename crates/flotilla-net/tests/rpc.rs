//! Calls between real hosts over loopback TCP.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use flotilla_core::wire::{WireError, WireResponse};
use flotilla_core::{Transport, TransportError};
use flotilla_net::{Host, NetConfig};
use libp2p::identity::Keypair;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_then_call() {
    let (a, b) = (host().await, host().await);
    let echo_b = echo(&b);

    let addrs = b.local_addrs();
    assert!(!addrs.is_empty());
    for addr in &addrs {
        assert!(addr.ends_with(&format!("/p2p/{}", b.local_id())), "{addr}");
        assert!(!addr.contains("0.0.0.0"), "{addr}");
    }

    // Without the /p2p suffix, connect learns who is there.
    let bare = addrs[0].rsplit_once("/p2p/").unwrap().0;
    assert_eq!(a.connect(bare, CALL_TIMEOUT).await.unwrap(), b.local_id());
    // With it, the identity is checked (and the existing connection reused).
    assert_eq!(a.connect(&addrs[0], CALL_TIMEOUT).await.unwrap(), b.local_id());

    let response = a.call(b.local_id(), request(7), CALL_TIMEOUT).await.unwrap();
    assert_eq!(echoed(&response), Some(7));
    assert_eq!(*echo_b.callers.lock().unwrap(), vec![a.local_id()], "the handler sees the authenticated caller");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_fails() {
    let a = host().await;
    // Find a port nobody listens on by listening and stopping.
    let gone = host().await;
    let addr = gone.local_addrs()[0].clone();
    gone.shutdown().await;
    match a.connect(&addr, CALL_TIMEOUT).await {
        Err(TransportError::Unreachable(peer, _)) => assert_eq!(peer, gone.local_id()),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let bare = addr.rsplit_once("/p2p/").unwrap().0;
    assert!(matches!(a.connect(bare, CALL_TIMEOUT).await, Err(TransportError::Unreachable(..))));
    assert!(matches!(a.connect("not an address", CALL_TIMEOUT).await, Err(TransportError::Unreachable(..))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_with_known_address_dials_by_itself() {
    let (a, b) = (host().await, host().await);
    echo(&b);
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    let response = a.call(b.local_id(), request(1), CALL_TIMEOUT).await.unwrap();
    assert_eq!(echoed(&response), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_on_one_stream() {
    let (a, b) = (host().await, host().await);
    let echo_b = echo(&b);
    a.add_peer_addrs(b.local_id(), &b.local_addrs());

    let calls = (0..200u64).map(|n| {
        let a = a.clone();
        let b = b.local_id();
        tokio::spawn(async move { (n, a.call(b, request(n), CALL_TIMEOUT).await) })
    });
    for call in futures::future::join_all(calls).await {
        let (n, response) = call.unwrap();
        assert_eq!(echoed(&response.unwrap()), Some(n), "response {n} reached its own caller");
    }
    let overlap = echo_b.max_inflight.load(std::sync::atomic::Ordering::SeqCst);
    assert!(overlap > 1, "requests were handled concurrently, not one by one ({overlap})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_direction_uses_the_same_connection() {
    // A listens nowhere, so B can only reach it over the connection A opened.
    let a = Host::start(Keypair::generate_ed25519(), &[], NetConfig::default()).await.unwrap();
    assert!(a.local_addrs().is_empty());
    let b = host().await;
    let echo_a = echo(&a);
    echo(&b);

    assert_eq!(a.connect(&b.local_addrs()[0], CALL_TIMEOUT).await.unwrap(), b.local_id());
    // A call from A guarantees B has seen the connection too (connect only waits for A's side).
    assert_eq!(echoed(&a.call(b.local_id(), request(4), CALL_TIMEOUT).await.unwrap()), Some(4));
    let response = b.call(a.local_id(), request(3), CALL_TIMEOUT).await.unwrap();
    assert_eq!(echoed(&response), Some(3));
    assert_eq!(*echo_a.callers.lock().unwrap(), vec![b.local_id()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_self_skip_the_network() {
    let a = Host::start(Keypair::generate_ed25519(), &[], NetConfig::default()).await.unwrap();
    let echo_a = echo(&a);
    let response = a.call(a.local_id(), request(9), CALL_TIMEOUT).await.unwrap();
    assert_eq!(echoed(&response), Some(9));
    assert_eq!(*echo_a.callers.lock().unwrap(), vec![a.local_id()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_handler_yet_is_unavailable() {
    let (a, b) = (host().await, host().await);
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    let response = a.call(b.local_id(), request(1), CALL_TIMEOUT).await.unwrap();
    assert!(matches!(response, WireResponse::Error(WireError::Unavailable(_))), "{response:?}");
    // Registering later takes effect on the same stream.
    echo(&b);
    assert_eq!(echoed(&a.call(b.local_id(), request(2), CALL_TIMEOUT).await.unwrap()), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_refused_locally() {
    let config = NetConfig { max_frame_bytes: 4096, ..NetConfig::default() };
    let a = host_with(Keypair::generate_ed25519(), config).await;
    let b = host().await;
    echo(&b);
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    let mut big = request(0);
    if let flotilla_core::wire::RequestBody::Command(envelope) = &mut big.body {
        envelope.request =
            flotilla_core::wire::CommandRequest::Write(flotilla_core::Command { id: None, payload: vec![0; 8192] });
    }
    match a.call(b.local_id(), big, CALL_TIMEOUT).await {
        Err(TransportError::TooLarge { size, limit }) => assert!(size > limit && limit == 4096),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_round_trip_latency() {
    let (a, b) = (host().await, host().await);
    echo(&b);
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    // Warm up: connection and stream.
    a.call(b.local_id(), request(1), CALL_TIMEOUT).await.unwrap();

    const CALLS: u32 = 1000;
    let start = Instant::now();
    for n in 0..CALLS {
        // Numbers not divisible by 5, so the echo never sleeps.
        let n = u64::from(n) * 5 + 1;
        let response = a.call(b.local_id(), request(n), CALL_TIMEOUT).await.unwrap();
        assert_eq!(echoed(&response), Some(n));
    }
    let elapsed = start.elapsed();
    println!("{CALLS} sequential calls over loopback: {:?} per round trip", elapsed / CALLS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_independent_arcs() {
    // The transport is used as a trait object by the node layer.
    let a: Arc<dyn Transport> = host().await;
    let b = host().await;
    echo(&b);
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    assert_eq!(echoed(&a.call(b.local_id(), request(5), CALL_TIMEOUT).await.unwrap()), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_listen_reports_concrete_addresses() {
    init_tracing();
    let b = Host::start(Keypair::generate_ed25519(), &["/ip4/0.0.0.0/tcp/0".to_string()], NetConfig::default())
        .await
        .unwrap();
    echo(&b);
    let addrs = b.local_addrs();
    assert!(!addrs.is_empty());
    assert!(addrs.iter().all(|a| !a.contains("/0.0.0.0/")), "{addrs:?}");
    let loopback = addrs.iter().find(|a| a.starts_with("/ip4/127.0.0.1/")).expect("loopback is among the interfaces");

    let a = host().await;
    assert_eq!(a.connect(loopback, CALL_TIMEOUT).await.unwrap(), b.local_id());
    assert_eq!(echoed(&a.call(b.local_id(), request(8), CALL_TIMEOUT).await.unwrap()), Some(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_listen_address_is_an_error() {
    let result = Host::start(Keypair::generate_ed25519(), &["not a multiaddr".to_string()], NetConfig::default()).await;
    assert!(matches!(result, Err(flotilla_net::NetError::InvalidAddr { .. })));
    let result =
        Host::start(Keypair::generate_ed25519(), &["/ip4/127.0.0.1/udp/0/quic-v1".to_string()], NetConfig::default())
            .await;
    assert!(matches!(result, Err(flotilla_net::NetError::Listen { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_close_and_reopen_transparently() {
    // Streams idle out after 20 ms, so calls keep meeting links that are just stopping.
    let config = NetConfig { idle_stream_timeout: std::time::Duration::from_millis(20), ..NetConfig::default() };
    let a = host_with(Keypair::generate_ed25519(), config).await;
    let b = host().await;
    echo(&b);
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    for round in 0..60u64 {
        let gap = std::time::Duration::from_millis(round % 4 * 9);
        tokio::time::sleep(gap).await; // The gap is the scenario, not a synchronization.
        let calls = (0..5).map(|i| {
            let a = a.clone();
            let b = b.local_id();
            let n = round * 10 + i + 1;
            tokio::spawn(async move { (n, a.call(b, request(n), CALL_TIMEOUT).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (n, response) = call.unwrap();
            assert_eq!(echoed(&response.unwrap()), Some(n));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_pass_alongside_small_ones() {
    let (a, b) = (host().await, host().await);
    echo(&b);
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    let big = |len: usize| {
        let mut request = request(0);
        if let flotilla_core::wire::RequestBody::Command(envelope) = &mut request.body {
            envelope.request =
                flotilla_core::wire::CommandRequest::Write(flotilla_core::Command { id: None, payload: vec![7; len] });
        }
        request
    };
    let large = (0..3).map(|i| {
        let (a, b) = (a.clone(), b.local_id());
        let len = 4 * 1024 * 1024 + i;
        tokio::spawn(async move { (len as u64, a.call(b, big(len), CALL_TIMEOUT).await) })
    });
    let small = (1..=50u64).map(|n| {
        let (a, b) = (a.clone(), b.local_id());
        tokio::spawn(async move { (n, a.call(b, request(n), CALL_TIMEOUT).await) })
    });
    for call in futures::future::join_all(large.chain(small)).await {
        let (expected, response) = call.unwrap();
        assert_eq!(echoed(&response.unwrap()), Some(expected));
    }
}
