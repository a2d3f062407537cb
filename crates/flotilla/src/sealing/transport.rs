//! [`SealingTransport`]: a [`Transport`] decorator that seals every message when a cluster key
//! is configured, over any inner transport (libp2p in production, the fault router in tests).

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::keyring::Keyring;
use flotilla_core::types::NodeId;
use flotilla_core::wire::{Hello, RequestBody, Sealed, WireError, WireRequest, WireResponse};
use flotilla_core::{InboundHandler, Namespace, Transport, TransportError};
use tokio::time::Instant;

use super::channel::{Direction, Peers};
use super::handshake::{fresh_nonce, hello_proof, proof_matches, session_id, session_secret, welcome_proof};
use super::inbound::SealingInbound;
use super::refusals::Side;
use super::session::Session;
use super::state::Sealing;

/// How long a refusal by a peer is returned without asking again.
const REFUSAL_MEMORY: Duration = Duration::from_secs(1);
/// Attempts per call: a peer that restarted forgets our session once, and we open a new one.
const ATTEMPTS: usize = 2;

/// Seals outbound calls and wraps the inbound handler so it opens inbound ones.
pub struct SealingTransport {
    inner: Arc<dyn Transport>,
    sealing: Arc<Sealing>,
}

impl SealingTransport {
    /// Decorate `inner` with `sealing`.
    pub fn new(inner: Arc<dyn Transport>, sealing: Arc<Sealing>) -> Self {
        Self { inner, sealing }
    }

    async fn sealed_call(
        &self,
        keyring: &Keyring,
        to: NodeId,
        request: WireRequest,
        deadline: Instant,
    ) -> Result<WireResponse, TransportError> {
        let plain = flotilla_core::encode(&request.body).map_err(|e| TransportError::Protocol(e.to_string()))?;
        let lane = request.body.lane();
        let ns = request.namespace;
        for _ in 0..ATTEMPTS {
            let session = match self.session_to(keyring, to, &ns, deadline).await? {
                Ok(session) => session,
                Err(refused) => return Ok(WireResponse::Error(refused)),
            };
            let Some(channel) = session.channel(&ns, lane) else {
                self.forget(to, &session).await;
                continue;
            };
            let seq = channel.next_seq();
            let ciphertext = channel.seal(Direction::Request, seq, &plain);
            let body = RequestBody::Sealed(Sealed { session: session.id, lane, seq, ciphertext });
            let wire = WireRequest { namespace: ns.clone(), body };
            Sealing::count(&self.sealing.sealed_sent);
            match self.inner.call(to, wire, remaining(deadline)?).await? {
                WireResponse::Sealed(reply) if reply.seq == seq && reply.session == session.id => {
                    return self.open_reply(to, &channel, seq, &reply.ciphertext);
                }
                WireResponse::Error(WireError::UnknownSession) => self.forget(to, &session).await,
                WireResponse::Error(WireError::Unauthenticated(why)) => {
                    self.sealing.refusals.record(to, Side::PeerRefused, why.clone());
                    self.forget(to, &session).await;
                    return Ok(WireResponse::Error(WireError::Unauthenticated(why)));
                }
                WireResponse::Error(other) => return Ok(WireResponse::Error(other)),
                _ => return Err(TransportError::Protocol("plain or misplaced reply to a sealed request".into())),
            }
        }
        Err(TransportError::Unreachable(to, "the peer keeps forgetting sealed sessions".into()))
    }

    fn open_reply(
        &self,
        to: NodeId,
        channel: &super::channel::Channel,
        seq: u64,
        sealed: &[u8],
    ) -> Result<WireResponse, TransportError> {
        let plain = channel.open_reply(seq, sealed).map_err(|e| {
            self.sealing.refusals.record(to, Side::WeRefused, format!("sealed reply: {e}"));
            TransportError::Protocol(e.to_string())
        })?;
        let reply: WireResponse = flotilla_core::decode(&plain, self.sealing.max_message)
            .map_err(|e| TransportError::Protocol(format!("sealed reply: {e}")))?;
        if matches!(reply, WireResponse::Sealed(_) | WireResponse::Welcome(_)) {
            return Err(TransportError::Protocol("nested sealing in a reply".into()));
        }
        Ok(reply)
    }

    /// This node's session to `to`, opened with the current sealing key; handshakes when there
    /// is none. The inner `Err` is a refusal to hand back to the caller as a reply.
    async fn session_to(
        &self,
        keyring: &Keyring,
        to: NodeId,
        ns: &Namespace,
        deadline: Instant,
    ) -> Result<Result<Arc<Session>, WireError>, TransportError> {
        let slot = self.sealing.out_slot(to);
        let timeout = TransportError::Timeout(remaining(deadline)?);
        let mut slot = tokio::time::timeout_at(deadline, slot.lock()).await.map_err(|_| timeout)?;
        let current = keyring.current().id();
        if let Some(session) = slot.session.as_ref().filter(|s| s.key_id == current) {
            return Ok(Ok(session.clone()));
        }
        if let Some((until, refused)) = &slot.refused {
            if Instant::now().into_std() < *until {
                return Ok(Err(refused.clone()));
            }
        }
        let outcome = self.handshake(keyring, to, ns, deadline).await?;
        match &outcome {
            Ok(session) => {
                slot.session = Some(session.clone());
                slot.refused = None;
                self.sealing.refusals.clear(&to);
            }
            Err(refused) => {
                slot.session = None;
                slot.refused = Some((std::time::Instant::now() + REFUSAL_MEMORY, refused.clone()));
            }
        }
        Ok(outcome)
    }

    async fn handshake(
        &self,
        keyring: &Keyring,
        to: NodeId,
        ns: &Namespace,
        deadline: Instant,
    ) -> Result<Result<Arc<Session>, WireError>, TransportError> {
        let key = keyring.current();
        let local = self.sealing.local;
        let nonce_a = fresh_nonce();
        let hello = Hello { key_id: key.id(), nonce: nonce_a, proof: hello_proof(key, &local, &to, &nonce_a) };
        let request = WireRequest { namespace: ns.clone(), body: RequestBody::Hello(hello) };
        let welcome = match self.inner.call(to, request, remaining(deadline)?).await? {
            WireResponse::Welcome(welcome) => welcome,
            WireResponse::Error(e) => {
                let why = e.to_string();
                self.sealing.refusals.record(to, Side::PeerRefused, why);
                return Ok(Err(e));
            }
            _ => return Err(TransportError::Protocol("unexpected reply to a sealed-session hello".into())),
        };
        let sid = session_id(key, &nonce_a, &welcome.nonce);
        let expected = welcome_proof(key, &local, &to, (&nonce_a, &welcome.nonce), &sid);
        if welcome.session != sid || !proof_matches(&expected, &welcome.proof) {
            let why = format!("cluster key mismatch: the peer's proof for key {} did not verify", key.id());
            self.sealing.refusals.record(to, Side::WeRefused, why.clone());
            return Ok(Err(WireError::Unauthenticated(why)));
        }
        let peers = Peers { initiator: local, responder: to };
        let secret = session_secret(key, &local, &to, &nonce_a, &welcome.nonce);
        Sealing::count(&self.sealing.handshakes);
        Ok(Ok(Arc::new(Session::new(sid, key.id(), peers, secret))))
    }

    /// Drop `session` from `to`'s slot (if it is still the current one).
    async fn forget(&self, to: NodeId, session: &Arc<Session>) {
        let slot = self.sealing.out_slot(to);
        let mut slot = slot.lock().await;
        if slot.session.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            slot.session = None;
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration, TransportError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(TransportError::Timeout(Duration::ZERO));
    }
    Ok(left)
}

#[async_trait::async_trait]
impl Transport for SealingTransport {
    fn local_id(&self) -> NodeId {
        self.inner.local_id()
    }

    fn local_addrs(&self) -> Vec<String> {
        self.inner.local_addrs()
    }

    async fn call(&self, to: NodeId, request: WireRequest, timeout: Duration) -> Result<WireResponse, TransportError> {
        match self.sealing.keyring() {
            None => self.inner.call(to, request, timeout).await,
            Some(keyring) => self.sealed_call(&keyring, to, request, Instant::now() + timeout).await,
        }
    }

    fn set_handler(&self, handler: Arc<dyn InboundHandler>) {
        self.inner.set_handler(Arc::new(SealingInbound::new(self.sealing.clone(), handler)));
    }

    fn add_peer_addrs(&self, peer: NodeId, addrs: &[String]) {
        self.inner.add_peer_addrs(peer, addrs)
    }

    async fn connect(&self, addr: &str, timeout: Duration) -> Result<NodeId, TransportError> {
        self.inner.connect(addr, timeout).await
    }
}
