//! A sealed session between two nodes: the outcome of one handshake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flotilla_core::keyring::KeyId;
use flotilla_core::wire::Lane;
use flotilla_core::Namespace;

use super::channel::{Channel, Peers};
use super::handshake::SessionSecret;

/// Most (namespace, lane) channels one session holds. Past it the responder forgets the whole
/// session (never a single channel: that would forget its replay window) and the initiator
/// opens a new one.
pub const MAX_CHANNELS: usize = 3 * 1024;

/// One session: its id, the key it was opened with, and its channels, created on first use.
pub struct Session {
    /// Shared session id.
    pub id: [u8; 16],
    /// The cluster key the handshake used; the session ends when that key leaves the keyring.
    pub key_id: KeyId,
    /// Initiator and responder.
    pub peers: Peers,
    /// When the handshake completed.
    pub opened: Instant,
    secret: SessionSecret,
    channels: Mutex<HashMap<(Namespace, Lane), Arc<Channel>>>,
}

impl Session {
    /// A session opened with `key_id` and `secret`.
    pub fn new(id: [u8; 16], key_id: KeyId, peers: Peers, secret: SessionSecret) -> Self {
        Self { id, key_id, peers, opened: Instant::now(), secret, channels: Mutex::new(HashMap::new()) }
    }

    /// The channel of `namespace` and `lane`, or `None` once the session holds
    /// [`MAX_CHANNELS`] others.
    pub fn channel(&self, namespace: &Namespace, lane: Lane) -> Option<Arc<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&(namespace.clone(), lane)) {
            return Some(channel.clone());
        }
        if channels.len() >= MAX_CHANNELS {
            return None;
        }
        let channel = Arc::new(Channel::new(&self.secret, self.peers, namespace.clone(), lane));
        channels.insert((namespace.clone(), lane), channel.clone());
        Some(channel)
    }
}
