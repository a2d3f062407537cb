//! [`SealingInbound`]: answers handshakes and opens sealed requests before the node's handler
//! sees them; refuses plain traffic when a cluster key is configured, and sealed traffic when
//! none is.

use std::sync::Arc;

use flotilla_core::keyring::Keyring;
use flotilla_core::types::NodeId;
use flotilla_core::wire::{Hello, RequestBody, Sealed, WireError, WireRequest, WireResponse};
use flotilla_core::{InboundHandler, Namespace};

use super::channel::{Direction, Peers};
use super::handshake::{fresh_nonce, hello_proof, proof_matches, session_id, session_secret, welcome_proof};
use super::refusals::Side;
use super::session::Session;
use super::state::Sealing;

/// The inbound side of sealing, wrapping the node's handler.
pub struct SealingInbound {
    sealing: Arc<Sealing>,
    handler: Arc<dyn InboundHandler>,
}

impl SealingInbound {
    /// Wrap `handler`.
    pub fn new(sealing: Arc<Sealing>, handler: Arc<dyn InboundHandler>) -> Self {
        Self { sealing, handler }
    }

    fn refuse(&self, from: NodeId, why: String) -> WireResponse {
        self.sealing.refusals.record(from, Side::WeRefused, why.clone());
        WireResponse::Error(WireError::Unauthenticated(why))
    }

    fn accept_hello(&self, from: NodeId, keyring: &Keyring, hello: Hello) -> WireResponse {
        let local = self.sealing.local;
        let Some(key) = keyring.get(hello.key_id) else {
            let ours: Vec<String> = keyring.ids().iter().map(|id| id.to_string()).collect();
            return self.refuse(
                from,
                format!(
                    "cluster key mismatch: key {} is not in the keyring of {local} (it accepts {})",
                    hello.key_id,
                    ours.join(", ")
                ),
            );
        };
        if !proof_matches(&hello_proof(key, &from, &local, &hello.nonce), &hello.proof) {
            return self.refuse(from, format!("cluster key mismatch: the proof for key {} did not verify", key.id()));
        }
        let nonce_b = fresh_nonce();
        let sid = session_id(key, &hello.nonce, &nonce_b);
        let peers = Peers { initiator: from, responder: local };
        let secret = session_secret(key, &from, &local, &hello.nonce, &nonce_b);
        self.sealing.add_inbound(from, Arc::new(Session::new(sid, key.id(), peers, secret)));
        self.sealing.refusals.clear(&from);
        Sealing::count(&self.sealing.handshakes);
        let proof = welcome_proof(key, &from, &local, (&hello.nonce, &nonce_b), &sid);
        WireResponse::Welcome(flotilla_core::wire::Welcome { session: sid, nonce: nonce_b, proof })
    }

    async fn open_sealed(&self, from: NodeId, namespace: Namespace, sealed: Sealed) -> WireResponse {
        let Some(session) = self.sealing.inbound(from, sealed.session) else {
            return WireResponse::Error(WireError::UnknownSession);
        };
        let Some(channel) = session.channel(&namespace, sealed.lane) else {
            self.sealing.drop_inbound(from, sealed.session);
            return WireResponse::Error(WireError::UnknownSession);
        };
        let plain = match channel.open_request(sealed.seq, &sealed.ciphertext) {
            Ok(plain) => plain,
            Err(e) => return self.refuse(from, format!("sealed request refused: {e}")),
        };
        let body: RequestBody = match flotilla_core::decode(&plain, self.sealing.max_message) {
            Ok(body) => body,
            Err(e) => return WireResponse::Error(WireError::Malformed(e.to_string())),
        };
        if matches!(body, RequestBody::Hello(_) | RequestBody::Sealed(_)) || body.lane() != sealed.lane {
            return WireResponse::Error(WireError::Malformed("nested or misplaced sealed request".into()));
        }
        Sealing::count(&self.sealing.opened);
        let reply = self.handler.handle(from, WireRequest { namespace, body }).await;
        let plain = match flotilla_core::encode(&reply) {
            Ok(plain) => plain,
            Err(e) => return WireResponse::Error(WireError::Fatal(format!("cannot encode a reply: {e}"))),
        };
        let ciphertext = channel.seal(Direction::Reply, sealed.seq, &plain);
        WireResponse::Sealed(Sealed { session: sealed.session, lane: sealed.lane, seq: sealed.seq, ciphertext })
    }
}

#[async_trait::async_trait]
impl InboundHandler for SealingInbound {
    async fn handle(&self, from: NodeId, request: WireRequest) -> WireResponse {
        let WireRequest { namespace, body } = request;
        match (self.sealing.keyring(), body) {
            (None, RequestBody::Hello(_) | RequestBody::Sealed(_)) => {
                self.refuse(from, "cluster key mismatch: this node has no cluster key".into())
            }
            (None, body) => self.handler.handle(from, WireRequest { namespace, body }).await,
            (Some(keyring), RequestBody::Hello(hello)) => self.accept_hello(from, &keyring, hello),
            (Some(_), RequestBody::Sealed(sealed)) => self.open_sealed(from, namespace, sealed).await,
            (Some(_), _) => {
                self.refuse(from, "cluster key required: the peer sent plain traffic (it has no cluster key)".into())
            }
        }
    }
}
