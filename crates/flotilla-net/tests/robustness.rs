//! Hostile frames, unknown peers, and peers that go away and come back.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use flotilla_core::wire::{WireError, WireResponse};
use flotilla_core::{Transport, TransportError};
use flotilla_net::{rpc_protocol, Host, NetConfig};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::Stream;

const LIMIT: usize = 64 * 1024;

/// B with a small frame limit, A calling it, and C holding a raw RPC stream to B.
async fn hostile_setup() -> (Arc<Host>, Arc<Host>, Arc<Host>) {
    let b = host_with(Keypair::generate_ed25519(), NetConfig { max_frame_bytes: LIMIT, ..NetConfig::default() }).await;
    echo(&b);
    let (a, c) = (host().await, host().await);
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    assert_eq!(c.connect(&b.local_addrs()[0], CALL_TIMEOUT).await.unwrap(), b.local_id());
    (a, b, c)
}

async fn raw_stream(from: &Host, to: &Host) -> Stream {
    let mut control = from.stream_control();
    tokio::time::timeout(CALL_TIMEOUT, control.open_stream(to.local_id(), rpc_protocol()))
        .await
        .expect("stream opens in time")
        .expect("stream opens")
}

/// Wait until B ends `stream`: a read returns end-of-stream or an error.
async fn assert_dropped(mut stream: Stream) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await.expect("B ends the stream in time");
    assert!(matches!(read, Ok(0) | Err(_)), "B answered instead of dropping the stream: {read:?}");
}

async fn assert_still_serving(a: &Host, b: &Host, n: u64) {
    let response = a.call(b.local_id(), request(n), CALL_TIMEOUT).await.unwrap();
    assert_eq!(echoed(&response), Some(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_drops_only_that_stream() {
    let (a, b, c) = hostile_setup().await;
    assert_still_serving(&a, &b, 1).await;

    let mut stream = raw_stream(&c, &b).await;
    stream.write_all(&(LIMIT as u32 + 1).to_be_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    assert_dropped(stream).await;

    let mut stream = raw_stream(&c, &b).await;
    stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    // B may already have reset the stream after the header, failing these writes.
    let _ = stream.write_all(&[0xAB; 1024]).await;
    let _ = stream.flush().await;
    assert_dropped(stream).await;

    assert_still_serving(&a, &b, 2).await;
    // C's connection survives too; only the offending streams went.
    assert_still_serving(&c, &b, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_too_short_for_an_id_drops_the_stream() {
    let (a, b, c) = hostile_setup().await;
    let mut stream = raw_stream(&c, &b).await;
    stream.write_all(&3u32.to_be_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    // B may already have reset the stream after the header, failing these writes.
    let _ = stream.write_all(b"abc").await;
    let _ = stream.flush().await;
    assert_dropped(stream).await;
    assert_still_serving(&a, &b, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_with_an_id_is_answered_as_malformed() {
    let (a, b, c) = hostile_setup().await;
    let mut stream = raw_stream(&c, &b).await;
    let garbage = [0xFFu8; 40];
    stream.write_all(&((8 + garbage.len()) as u32).to_be_bytes()).await.unwrap();
    stream.write_all(&42u64.to_be_bytes()).await.unwrap();
    stream.write_all(&garbage).await.unwrap();
    stream.flush().await.unwrap();

    let mut header = [0u8; 4];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut header)).await.unwrap().unwrap();
    let len = u32::from_be_bytes(header) as usize;
    assert!((8..=LIMIT).contains(&len));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(u64::from_be_bytes(body[..8].try_into().unwrap()), 42, "the reply carries the request id");
    let response: WireResponse = flotilla_core::decode(&body[8..], LIMIT as u64).unwrap();
    assert!(matches!(response, WireResponse::Error(WireError::Malformed(_))), "{response:?}");

    // The stream stays usable: a valid request on it is answered.
    let message = flotilla_core::encode(&request(77)).unwrap();
    stream.write_all(&((8 + message.len()) as u32).to_be_bytes()).await.unwrap();
    stream.write_all(&43u64.to_be_bytes()).await.unwrap();
    stream.write_all(&message).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut header)).await.unwrap().unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(u64::from_be_bytes(body[..8].try_into().unwrap()), 43);
    let response: WireResponse = flotilla_core::decode(&body[8..], LIMIT as u64).unwrap();
    assert_eq!(echoed(&response), Some(77));

    assert_still_serving(&a, &b, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_address_is_unreachable() {
    let a = host().await;
    let stranger = Keypair::generate_ed25519().public().to_peer_id();
    let started = std::time::Instant::now();
    match a.call(stranger, request(1), CALL_TIMEOUT).await {
        Err(TransportError::Unreachable(peer, reason)) => {
            assert_eq!(peer, stranger);
            println!("unreachable after {:?}: {reason}", started.elapsed());
        }
        Err(TransportError::Timeout(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // Fails fast during the backoff, too.
    assert!(matches!(a.call(stranger, request(2), CALL_TIMEOUT).await, Err(TransportError::Unreachable(..))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_when_the_handler_is_slow() {
    struct Slow;
    #[async_trait::async_trait]
    impl flotilla_core::InboundHandler for Slow {
        async fn handle(&self, _: flotilla_core::NodeId, _: flotilla_core::wire::WireRequest) -> WireResponse {
            std::future::pending().await
        }
    }
    let (a, b) = (host().await, host().await);
    b.set_handler(Arc::new(Slow));
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    let timeout = Duration::from_millis(200);
    assert_eq!(a.call(b.local_id(), request(1), timeout).await.unwrap_err(), TransportError::Timeout(timeout));
    // The stream is not poisoned by the abandoned call.
    echo(&b);
    assert_still_serving(&a, &b, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart_on_a_new_port() {
    let key_b = Keypair::generate_ed25519();
    let a = host().await;
    let b = host_with(key_b.clone(), NetConfig::default()).await;
    echo(&b);
    let id_b = b.local_id();
    a.add_peer_addrs(id_b, &b.local_addrs());
    assert_still_serving(&a, &b, 1).await;

    b.shutdown().await;
    assert_eq!(b.call(a.local_id(), request(1), CALL_TIMEOUT).await.unwrap_err(), TransportError::Closed);
    assert_eq!(b.connect(&a.local_addrs()[0], CALL_TIMEOUT).await.unwrap_err(), TransportError::Closed);
    // A's calls fail cleanly (the stream is gone, the old address refuses) rather than hang.
    let error = eventually("calls to a stopped peer fail", || async {
        a.call(id_b, request(2), Duration::from_secs(2)).await.err()
    })
    .await;
    assert!(matches!(error, TransportError::Unreachable(..) | TransportError::Timeout(_)), "{error:?}");

    // Same key, new port; A learns the new address from the node layer.
    let b2 = host_with(key_b, NetConfig::default()).await;
    assert_eq!(b2.local_id(), id_b);
    assert_ne!(b2.local_addrs(), b.local_addrs());
    echo(&b2);
    a.add_peer_addrs(id_b, &b2.local_addrs());
    let n = eventually("calls succeed after the restart", || async {
        a.call(id_b, request(3), Duration::from_secs(2)).await.ok().and_then(|r| echoed(&r))
    })
    .await;
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_calls_in_flight() {
    let (a, _b, call) = call_stuck_in_b().await;
    a.shutdown().await;
    let result = tokio::time::timeout(DEADLINE, call).await.expect("the call ends at shutdown").unwrap();
    assert_eq!(result.unwrap_err(), TransportError::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_shutdown_fails_calls_in_flight_as_unreachable() {
    let (_a, b, call) = call_stuck_in_b().await;
    let started = std::time::Instant::now();
    b.shutdown().await;
    let result = tokio::time::timeout(DEADLINE, call).await.expect("the call ends when B goes").unwrap();
    assert!(matches!(result, Err(TransportError::Unreachable(..))), "{result:?}");
    println!("in-flight call failed {:?} after the peer's shutdown began", started.elapsed());
}

/// Records that a request arrived, then never answers.
#[derive(Default)]
struct Stuck(AtomicBool);

#[async_trait::async_trait]
impl flotilla_core::InboundHandler for Stuck {
    async fn handle(&self, _: flotilla_core::NodeId, _: flotilla_core::wire::WireRequest) -> WireResponse {
        self.0.store(true, Ordering::SeqCst);
        std::future::pending().await
    }
}

type PendingCall = tokio::task::JoinHandle<Result<WireResponse, TransportError>>;

/// Two hosts A and B, and a call from A that B has received and will never answer.
async fn call_stuck_in_b() -> (Arc<flotilla_net::Host>, Arc<flotilla_net::Host>, PendingCall) {
    let (a, b) = (host().await, host().await);
    let stuck = Arc::new(Stuck::default());
    b.set_handler(stuck.clone());
    a.add_peer_addrs(b.local_id(), &b.local_addrs());
    let call = {
        let a = a.clone();
        let id_b = b.local_id();
        tokio::spawn(async move { a.call(id_b, request(1), DEADLINE).await })
    };
    eventually("the call reaches B", || async { stuck.0.load(Ordering::SeqCst).then_some(()) }).await;
    (a, b, call)
}
