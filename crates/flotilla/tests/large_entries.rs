//! Entries as large as the value limit replicate, and a follower that lags by many of them
//! catches up through appends whatever the frame limit: openraft bounds an append by entry
//! count and the log reader by a fixed byte cap, so the network layer cuts appends to the
//! node's frame budget (crates/flotilla/src/wire_budget.rs).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Harness;
use flotilla_core::types::NodeId;
use flotilla_core::wire::{WireRequest, WireResponse};
use flotilla_core::{InboundHandler, Transport, TransportError};
use tokio::time::Instant;

const NS: &str = "big";
/// Forty values of the default value limit: 40 MiB.
const VALUES: usize = 40;
const VALUE_BYTES: usize = 1 << 20;
/// The smallest frame the configuration allows for such values, plus a little: smaller than the
/// log reader's 4 MiB batches, so an append cut only by them does not fit.
const FRAME_BYTES: usize = 3 << 20;
/// Bound of the catch-up on a loaded 2-core CI machine (debug build); it takes seconds.
const CATCH_UP: Duration = Duration::from_secs(120);

fn tweak(c: &mut flotilla::Config) {
    // No snapshot while the follower is away: it can only catch up through appends.
    c.snapshot_every = 10_000;
    c.max_frame_bytes = FRAME_BYTES;
}

/// The in-process transport, refusing any request larger than the frame limit as libp2p does.
struct Framed(Arc<dyn Transport>);

#[async_trait::async_trait]
impl Transport for Framed {
    fn local_id(&self) -> NodeId {
        self.0.local_id()
    }

    fn local_addrs(&self) -> Vec<String> {
        self.0.local_addrs()
    }

    async fn call(&self, to: NodeId, request: WireRequest, timeout: Duration) -> Result<WireResponse, TransportError> {
        let size = flotilla_core::encoded_len(&request).expect("encodable") as usize;
        if size > FRAME_BYTES {
            return Err(TransportError::TooLarge { size, limit: FRAME_BYTES });
        }
        self.0.call(to, request, timeout).await
    }

    fn set_handler(&self, handler: Arc<dyn InboundHandler>) {
        self.0.set_handler(handler)
    }

    fn add_peer_addrs(&self, peer: NodeId, addrs: &[String]) {
        self.0.add_peer_addrs(peer, addrs)
    }

    async fn connect(&self, addr: &str, timeout: Duration) -> Result<NodeId, TransportError> {
        self.0.connect(addr, timeout).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_lagging_by_40_entries_of_1_mib_catches_up_by_appends() {
    let mut h = Harness::new(3, 41, &[NS], tweak);
    for i in 0..3 {
        h.boot_wrapped(i, |t| Arc::new(Framed(t)) as Arc<dyn Transport>).await;
    }
    h.wait_voters(NS, 3).await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).unwrap();
    h.crash(f).await;

    let mut last = 0;
    for i in 0..VALUES {
        let key = format!("v{i:03}");
        let mut attempts = 0;
        // Set-to-a-constant is idempotent: a write whose outcome is unknown is simply retried.
        loop {
            let l = h.leader_among(NS, &h.live()).await;
            match h.cluster(l, NS).set(key.as_bytes(), &vec![i as u8; VALUE_BYTES]).await {
                Ok(w) => {
                    last = last.max(w.index);
                    break;
                }
                Err(e) => {
                    attempts += 1;
                    assert!(attempts < 5, "writing {key} keeps failing: {e}");
                }
            }
        }
    }

    h.reboot(f).await;
    let started = Instant::now();
    let deadline = started + CATCH_UP;
    while h.cluster(f, NS).state().applied_index < last {
        assert!(
            Instant::now() < deadline,
            "the follower never caught up: applied {} of {last}",
            h.cluster(f, NS).state().applied_index
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("caught up on {VALUES} x {VALUE_BYTES} bytes in {:?}", started.elapsed());
    let state = h.cluster(f, NS).state();
    assert_eq!(state.snapshot_index, 0, "the follower caught up through appends, not a snapshot");
    let key = format!("v{:03}", VALUES - 1);
    let value = h.cluster(f, NS).get(key.as_bytes(), flotilla::Consistency::Stale).await.unwrap().value;
    assert_eq!(value, Some(vec![(VALUES - 1) as u8; VALUE_BYTES]));
    h.shutdown().await;
}
