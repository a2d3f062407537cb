//! One sealed channel: the traffic of one session, namespace and lane, in both directions.
//!
//! Each direction has its own AES-256-GCM key, derived with HKDF from the session secret, the
//! namespace and the lane, so no key is shared between namespaces, lanes or directions. The
//! nonce is the request's sequence number: the initiator numbers its requests from 1 with a
//! counter that never repeats, and the responder answers each number at most once (the replay
//! window refuses a second copy), so neither key ever sees a nonce twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use flotilla_core::types::NodeId;
use flotilla_core::wire::Lane;
use flotilla_core::Namespace;
use hkdf::Hkdf;
use sha2::Sha256;

use super::handshake::SessionSecret;
use super::replay::{Replay, ReplayWindow};

/// Which way a sealed message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Initiator to responder.
    Request,
    /// Responder to initiator.
    Reply,
}

/// Why a sealed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The tag did not verify: wrong key, tampered or moved message.
    #[error("sealed message failed authentication")]
    Forged,
    /// A replayed or too old request.
    #[error(transparent)]
    Replayed(#[from] Replay),
}

/// The two peers of a session, in handshake roles.
#[derive(Debug, Clone, Copy)]
pub struct Peers {
    /// Who sent the Hello.
    pub initiator: NodeId,
    /// Who answered it.
    pub responder: NodeId,
}

/// Sealing state of one (session, namespace, lane).
pub struct Channel {
    namespace: Namespace,
    lane: Lane,
    peers: Peers,
    request_key: Aes256Gcm,
    reply_key: Aes256Gcm,
    /// The initiator's next request number.
    next_seq: AtomicU64,
    /// The responder's record of request numbers seen.
    window: Mutex<ReplayWindow>,
}

impl Channel {
    /// The channel of `namespace` and `lane` in the session with `secret`.
    pub fn new(secret: &SessionSecret, peers: Peers, namespace: Namespace, lane: Lane) -> Self {
        let key = |direction: &[u8]| {
            let label = [b"flotilla channel v1 ", direction, &[lane as u8], namespace.as_str().as_bytes()].concat();
            let mut key = [0u8; 32];
            // 32 bytes is always a valid HKDF-SHA256 output length.
            let _ = Hkdf::<Sha256>::new(None, secret).expand(&label, &mut key);
            Aes256Gcm::new(&key.into())
        };
        Self {
            request_key: key(b"request"),
            reply_key: key(b"reply"),
            namespace,
            lane,
            peers,
            next_seq: AtomicU64::new(1),
            window: Mutex::new(ReplayWindow::default()),
        }
    }

    /// The next request number (initiator side).
    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Seal `plain` travelling in `direction` with number `seq`.
    pub fn seal(&self, direction: Direction, seq: u64, plain: &[u8]) -> Vec<u8> {
        let aad = self.aad(direction, seq);
        let payload = Payload { msg: plain, aad: &aad };
        // Encryption fails only for messages over 64 GiB; frames are bounded far below that.
        self.key(direction).encrypt(&nonce(seq), payload).unwrap_or_default()
    }

    /// Open a request (responder side): refuses replays before decrypting, and records the
    /// number only once the tag verified.
    pub fn open_request(&self, seq: u64, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.lock_window().check(seq)?;
        let plain = self.open(Direction::Request, seq, sealed)?;
        let mut window = self.lock_window();
        // Checked again: a concurrent copy of the same request may have won the race.
        window.check(seq)?;
        window.record(seq);
        Ok(plain)
    }

    /// Open the reply to request `seq` (initiator side). The caller waits for one reply per
    /// request, so no window is needed: a replayed reply to another number fails the tag.
    pub fn open_reply(&self, seq: u64, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.open(Direction::Reply, seq, sealed)
    }

    fn open(&self, direction: Direction, seq: u64, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let aad = self.aad(direction, seq);
        let payload = Payload { msg: sealed, aad: &aad };
        self.key(direction).decrypt(&nonce(seq), payload).map_err(|_| OpenError::Forged)
    }

    fn key(&self, direction: Direction) -> &Aes256Gcm {
        match direction {
            Direction::Request => &self.request_key,
            Direction::Reply => &self.reply_key,
        }
    }

    fn lock_window(&self) -> std::sync::MutexGuard<'_, ReplayWindow> {
        // The window is a plain value; a panic elsewhere cannot leave it half-updated.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Associated data: everything that places a message, so it cannot be moved.
    fn aad(&self, direction: Direction, seq: u64) -> Vec<u8> {
        let (sender, receiver) = match direction {
            Direction::Request => (self.peers.initiator, self.peers.responder),
            Direction::Reply => (self.peers.responder, self.peers.initiator),
        };
        let ns = self.namespace.as_str().as_bytes();
        let mut aad = Vec::with_capacity(128);
        aad.extend_from_slice(b"flotilla sealed v1");
        aad.push(direction as u8);
        aad.push(self.lane as u8);
        aad.extend_from_slice(&seq.to_be_bytes());
        for part in [ns, &sender.to_bytes(), &receiver.to_bytes()] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad
    }
}

/// The 96-bit GCM nonce of message `seq`.
fn nonce(seq: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&seq.to_be_bytes());
    bytes.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Channel, Channel, Peers) {
        let peers = Peers { initiator: NodeId::random(), responder: NodeId::random() };
        let ns = Namespace::new("default").unwrap();
        let secret = [7u8; 32];
        (Channel::new(&secret, peers, ns.clone(), Lane::Raft), Channel::new(&secret, peers, ns, Lane::Raft), peers)
    }

    #[test]
    fn requests_and_replies_round_trip_once() {
        let (a, b, _) = pair();
        let seq = a.next_seq();
        let sealed = a.seal(Direction::Request, seq, b"append");
        assert_ne!(&sealed[..6], b"append");
        assert_eq!(b.open_request(seq, &sealed).unwrap(), b"append");
        assert_eq!(b.open_request(seq, &sealed), Err(OpenError::Replayed(Replay::Duplicate(seq))));
        let reply = b.seal(Direction::Reply, seq, b"ok");
        assert_eq!(a.open_reply(seq, &reply).unwrap(), b"ok");
        assert_eq!(a.open_reply(seq + 1, &reply), Err(OpenError::Forged), "reply moved to another request");
    }

    #[test]
    fn messages_cannot_move_between_namespaces_lanes_directions_or_peers() {
        let (a, _, peers) = pair();
        let secret = [7u8; 32];
        let sealed = a.seal(Direction::Request, 1, b"x");
        let other_ns = Channel::new(&secret, peers, Namespace::new("other").unwrap(), Lane::Raft);
        let other_lane = Channel::new(&secret, peers, Namespace::new("default").unwrap(), Lane::Command);
        let swapped = Peers { initiator: peers.responder, responder: peers.initiator };
        let other_peers = Channel::new(&secret, swapped, Namespace::new("default").unwrap(), Lane::Raft);
        let other_secret = Channel::new(&[8u8; 32], peers, Namespace::new("default").unwrap(), Lane::Raft);
        for ch in [&other_ns, &other_lane, &other_peers, &other_secret] {
            assert_eq!(ch.open_request(1, &sealed), Err(OpenError::Forged));
        }
        assert_eq!(a.open_reply(1, &sealed), Err(OpenError::Forged), "request replayed as a reply");
        // A forgery does not burn the number: the genuine message still opens.
        let (a2, b2, _) = pair();
        let good = a2.seal(Direction::Request, 1, b"y");
        let mut forged = good.clone();
        forged[0] ^= 1;
        assert_eq!(b2.open_request(1, &forged), Err(OpenError::Forged));
        assert_eq!(b2.open_request(1, &good).unwrap(), b"y");
    }
}
