//! etcd's numeric ids from Flotilla's names: a member id from a PeerId, a cluster id from the
//! founding ballot. etcd's ids are non-zero `u64`s, stable for the life of a member or cluster;
//! hashing the names gives the same id on every node and across restarts.

use flotilla_core::types::NodeId;
use sha2::{Digest, Sha256};

/// The etcd member id of the node `id`: the first 8 bytes of the SHA-256 of its PeerId,
/// never 0 (etcd reads 0 as "no member").
pub fn member_id_of(id: &NodeId) -> u64 {
    hash_id(&id.to_bytes())
}

/// The etcd cluster id of the Flotilla cluster `cluster` (its founding ballot, empty before
/// one is known: then 0).
pub fn cluster_id_of(cluster: &str) -> u64 {
    if cluster.is_empty() {
        return 0;
    }
    hash_id(cluster.as_bytes())
}

fn hash_id(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let peer = || libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let (a, b) = (peer(), peer());
        assert_eq!(member_id_of(&a), member_id_of(&a));
        assert_ne!(member_id_of(&a), member_id_of(&b));
        assert_ne!(member_id_of(&a), 0);
        assert_eq!(cluster_id_of(""), 0);
        assert_eq!(cluster_id_of("x/1"), cluster_id_of("x/1"));
        assert_ne!(cluster_id_of("x/1"), cluster_id_of("x/2"));
    }
}
