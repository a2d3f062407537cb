//! Helpers shared by the integration tests: hosts on loopback, an echoing handler, and
//! polling with explicit deadlines (never fixed sleeps).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_core::wire::{CommandEnvelope, CommandRequest, CommandResponse, RequestBody, WireRequest, WireResponse};
use flotilla_core::{Command, InboundHandler, Namespace, NodeId};
use flotilla_net::{Host, NetConfig};
use libp2p::identity::Keypair;

/// Generous bound for anything that should happen "soon" on loopback.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Timeout of individual calls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Loopback with an OS-chosen port.
pub const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// Log to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A fresh host listening on loopback.
pub async fn host() -> Arc<Host> {
    host_with(Keypair::generate_ed25519(), NetConfig::default()).await
}

/// A host with the given key and configuration, listening on loopback.
pub async fn host_with(key: Keypair, config: NetConfig) -> Arc<Host> {
    init_tracing();
    Host::start(key, &[LOOPBACK.to_string()], config).await.expect("host starts")
}

/// A command request whose payload is `n`; [`Echo`] answers it with `Done { index: Some(n) }`.
pub fn request(n: u64) -> WireRequest {
    WireRequest {
        namespace: Namespace::new("default").unwrap(),
        body: RequestBody::Command(CommandEnvelope {
            hops_left: 3,
            budget_ms: 1_000,
            request: CommandRequest::Write(Command { id: None, payload: n.to_be_bytes().to_vec() }),
        }),
    }
}

/// The number [`Echo`] put in its answer, if the answer is one of its echoes.
pub fn echoed(response: &WireResponse) -> Option<u64> {
    match response {
        WireResponse::Command(CommandResponse::Done { index }) => *index,
        _ => None,
    }
}

/// Answers [`request`]s with their number (other payloads with their length) and records who
/// asked. Larger numbers take a
/// little longer, so pipelined responses come back out of order.
#[derive(Default)]
pub struct Echo {
    pub callers: Mutex<Vec<NodeId>>,
    /// Requests being handled right now, and the most there ever were at once.
    inflight: AtomicUsize,
    pub max_inflight: AtomicUsize,
}

#[async_trait::async_trait]
impl InboundHandler for Echo {
    async fn handle(&self, from: NodeId, request: WireRequest) -> WireResponse {
        self.callers.lock().unwrap().push(from);
        let now = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_inflight.fetch_max(now, Ordering::SeqCst);
        let n = match request.body {
            RequestBody::Command(CommandEnvelope { request: CommandRequest::Write(command), .. }) => {
                // Payloads of other sizes are answered with their length.
                let len = command.payload.len() as u64;
                command.payload.try_into().map(u64::from_be_bytes).unwrap_or(len)
            }
            other => panic!("unexpected request {other:?}"),
        };
        if n % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(n % 11)).await;
        }
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        WireResponse::Command(CommandResponse::Done { index: Some(n) })
    }
}

/// Register a fresh [`Echo`] on `host` and return it.
pub fn echo(host: &Host) -> Arc<Echo> {
    use flotilla_core::Transport;
    let echo = Arc::new(Echo::default());
    host.set_handler(echo.clone());
    echo
}

/// Run `attempt` until it yields `Some`, or panic with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
