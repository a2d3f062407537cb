//! The sealed-session handshake, as pure functions.
//!
//! ```text
//! initiator A                                         responder B
//!   Hello { key_id, nA, proof = MAC(A, B, key_id, nA) }  ->
//!                                                      checks key_id is in its keyring and the proof
//!   <- Welcome { session, nB, proof = MAC(A, B, key_id, nA, nB, session) }
//! checks the proof
//! ```
//!
//! MAC is HMAC-SHA256 under a key derived from the cluster key, so each side proves it holds
//! the key before any Raft or command traffic is accepted. Both peer ids are in every proof,
//! and the libp2p connection authenticates the sender's id (Noise), so a Hello captured from A
//! is useless to anyone else. B's proof covers A's fresh nonce, so it cannot be replayed either.
//! Both sides then derive the session secret from the key and both nonces: a session is fresh
//! even if one side's nonce repeats, and no key is ever used for two sessions.

use flotilla_core::keyring::ClusterKey;
use flotilla_core::types::NodeId;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// A session's shared secret, from which every channel key is derived.
pub type SessionSecret = [u8; 32];

/// The initiator's proof in a Hello.
pub fn hello_proof(key: &ClusterKey, initiator: &NodeId, responder: &NodeId, nonce_a: &[u8; 16]) -> [u8; 32] {
    mac(key, &[b"hello", &initiator.to_bytes(), &responder.to_bytes(), &key.id().0, nonce_a])
}

/// The responder's proof in a Welcome.
pub fn welcome_proof(
    key: &ClusterKey,
    initiator: &NodeId,
    responder: &NodeId,
    nonces: (&[u8; 16], &[u8; 16]),
    session: &[u8; 16],
) -> [u8; 32] {
    let (a, b) = nonces;
    mac(key, &[b"welcome", &initiator.to_bytes(), &responder.to_bytes(), &key.id().0, a, b, session])
}

/// Whether `proof` equals `expected`, in constant time.
pub fn proof_matches(expected: &[u8; 32], proof: &[u8; 32]) -> bool {
    flotilla_core::admin_token::constant_time_eq(expected, proof)
}

/// The session id both sides use: derived from both nonces, so neither side picks it alone.
pub fn session_id(key: &ClusterKey, nonce_a: &[u8; 16], nonce_b: &[u8; 16]) -> [u8; 16] {
    let mut id = [0u8; 16];
    key.derive_salted(&[&nonce_a[..], &nonce_b[..]].concat(), b"flotilla session id v1", &mut id);
    id
}

/// The session secret of the session between `initiator` and `responder`.
pub fn session_secret(
    key: &ClusterKey,
    initiator: &NodeId,
    responder: &NodeId,
    nonce_a: &[u8; 16],
    nonce_b: &[u8; 16],
) -> SessionSecret {
    let label = [&b"flotilla session v1"[..], &initiator.to_bytes(), &responder.to_bytes()].concat();
    let mut secret = [0u8; 32];
    key.derive_salted(&[&nonce_a[..], &nonce_b[..]].concat(), &label, &mut secret);
    secret
}

/// Fresh random bytes for a nonce.
pub fn fresh_nonce() -> [u8; 16] {
    use rand::RngCore;
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

fn mac(key: &ClusterKey, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac_key = [0u8; 32];
    key.derive(b"flotilla handshake v1", &mut mac_key);
    let Ok(mut mac) = HmacSha256::new_from_slice(&mac_key) else { unreachable!("HMAC takes keys of any length") };
    for part in parts {
        // Length-prefixed, so the concatenation of the parts is unambiguous.
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_key_peers_and_nonces() {
        let (k1, k2) = (ClusterKey::generate(), ClusterKey::generate());
        let (a, b) = (NodeId::random(), NodeId::random());
        let (na, nb) = (fresh_nonce(), fresh_nonce());
        let p = hello_proof(&k1, &a, &b, &na);
        assert!(proof_matches(&hello_proof(&k1, &a, &b, &na), &p));
        assert!(!proof_matches(&hello_proof(&k2, &a, &b, &na), &p), "another key");
        assert!(!proof_matches(&hello_proof(&k1, &b, &a, &na), &p), "swapped peers");
        assert!(!proof_matches(&hello_proof(&k1, &a, &b, &nb), &p), "another nonce");
        let sid = session_id(&k1, &na, &nb);
        let w = welcome_proof(&k1, &a, &b, (&na, &nb), &sid);
        assert!(!proof_matches(&welcome_proof(&k1, &a, &b, (&nb, &na), &sid), &w));
        assert_ne!(session_secret(&k1, &a, &b, &na, &nb), session_secret(&k1, &a, &b, &nb, &na));
        assert_ne!(session_secret(&k1, &a, &b, &na, &nb), session_secret(&k2, &a, &b, &na, &nb));
        assert_eq!(session_secret(&k1, &a, &b, &na, &nb), session_secret(&k1, &a, &b, &na, &nb));
    }
}
