//! Property tests of the sealing layer's inbound side against hostile input: arbitrary
//! requests, and genuine sealed requests with one thing changed, never reach the node's
//! handler and never panic; a genuine request reaches it exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flotilla::sealing::channel::{Channel, Direction, Peers};
use flotilla::sealing::handshake::{fresh_nonce, hello_proof, session_secret};
use flotilla::sealing::inbound::SealingInbound;
use flotilla::sealing::Sealing;
use flotilla_core::keyring::{ClusterKey, Keyring};
use flotilla_core::types::NodeId;
use flotilla_core::wire::{
    CommandEnvelope, CommandRequest, Hello, Lane, RequestBody, Sealed, WireError, WireRequest, WireResponse,
};
use flotilla_core::{InboundHandler, Namespace};
use proptest::prelude::*;

/// Counts the requests that get through to the node.
#[derive(Default)]
struct Counting(AtomicU64);

#[async_trait::async_trait]
impl InboundHandler for Counting {
    async fn handle(&self, _from: NodeId, _request: WireRequest) -> WireResponse {
        self.0.fetch_add(1, Ordering::Relaxed);
        WireResponse::Error(WireError::NoLeader("test".into()))
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    inbound: SealingInbound,
    handled: Arc<Counting>,
    initiator: NodeId,
    channel: Channel,
    session: [u8; 16],
}

/// A responder with a key and an initiator holding a genuine session with it.
fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let key = ClusterKey::generate();
    let (initiator, responder) = (NodeId::random(), NodeId::random());
    let sealing = Arc::new(Sealing::new(responder, Some(Keyring::new(vec![key.clone()]).unwrap()), 1 << 20));
    let handled = Arc::new(Counting::default());
    let inbound = SealingInbound::new(sealing, handled.clone());
    let nonce = fresh_nonce();
    let hello = Hello { key_id: key.id(), nonce, proof: hello_proof(&key, &initiator, &responder, &nonce) };
    let request = WireRequest { namespace: ns(), body: RequestBody::Hello(hello) };
    let WireResponse::Welcome(welcome) = runtime.block_on(inbound.handle(initiator, request)) else {
        panic!("genuine hello refused")
    };
    let secret = session_secret(&key, &initiator, &responder, &nonce, &welcome.nonce);
    let channel = Channel::new(&secret, Peers { initiator, responder }, ns(), Lane::Command);
    Fixture { runtime, inbound, handled, initiator, channel, session: welcome.session }
}

fn ns() -> Namespace {
    Namespace::new("default").unwrap()
}

fn read_index() -> Vec<u8> {
    let body =
        RequestBody::Command(CommandEnvelope { hops_left: 1, budget_ms: 1_000, request: CommandRequest::ReadIndex });
    flotilla_core::encode(&body).unwrap()
}

fn sealed_request(f: &Fixture, seq: u64) -> Sealed {
    Sealed {
        session: f.session,
        lane: Lane::Command,
        seq,
        ciphertext: f.channel.seal(Direction::Request, seq, &read_index()),
    }
}

fn send(f: &Fixture, namespace: Namespace, sealed: Sealed) -> WireResponse {
    f.runtime.block_on(f.inbound.handle(f.initiator, WireRequest { namespace, body: RequestBody::Sealed(sealed) }))
}

#[test]
fn a_genuine_request_is_served_once_and_its_replay_refused() {
    let f = fixture();
    let sealed = sealed_request(&f, 1);
    assert!(matches!(send(&f, ns(), sealed.clone()), WireResponse::Sealed(_)));
    assert_eq!(f.handled.0.load(Ordering::Relaxed), 1);
    assert!(matches!(send(&f, ns(), sealed), WireResponse::Error(WireError::Unauthenticated(_))));
    assert_eq!(f.handled.0.load(Ordering::Relaxed), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests_never_reach_the_node(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let f = fixture();
        if let Ok(request) = flotilla_core::decode::<WireRequest>(&bytes, 1 << 20) {
            let _ = f.runtime.block_on(f.inbound.handle(f.initiator, request));
        }
        // Plain bodies are refused (a key is configured), forged hellos and sealed bodies too.
        prop_assert_eq!(f.handled.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_changed_sealed_request_never_reaches_the_node(
        flip in 0usize..64,
        bit in 0u8..8,
        what in 0u8..5,
    ) {
        let f = fixture();
        let mut sealed = sealed_request(&f, 1);
        let mut namespace = ns();
        match what {
            0 => { let i = flip % sealed.ciphertext.len(); sealed.ciphertext[i] ^= 1 << bit; }
            1 => sealed.seq += 1 + flip as u64,
            2 => sealed.lane = if bit % 2 == 0 { Lane::Raft } else { Lane::Snapshot },
            3 => namespace = Namespace::new(format!("other{flip}")).unwrap(),
            _ => sealed.session[flip % 16] ^= 1 << bit,
        }
        let reply = send(&f, namespace, sealed);
        prop_assert!(matches!(reply, WireResponse::Error(_)), "{:?}", reply);
        prop_assert_eq!(f.handled.0.load(Ordering::Relaxed), 0);
    }
}
