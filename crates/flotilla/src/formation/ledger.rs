//! The namespaces this node's identity was ever admitted to, kept in its key file.
//!
//! The founding record (`record.rs`) lives in the data directory, next to the store: an
//! operator who wipes the directory but keeps `node.key` loses both. The identity then looks
//! fresh, and alone it would found the namespace again: a second cluster (issue 11). So the
//! fact "admitted to namespace N by cluster X" is written into `node.key` itself
//! (`flotilla_net::record_membership`), before the node takes part in the cluster (founding,
//! founding voter, admitted joiner) and again whenever a member finds its cluster id changed.
//! A node whose identity holds the fact but whose store is empty only rejoins
//! (`Founder::rejoin_only`). A new key is a new node, with no memberships.
//!
//! When the node's key is not in its data directory (an embedder that keeps its own key, or
//! the in-process test router), the ledger is off and only the founding record remains.

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_core::formation::ClusterId;
use flotilla_core::types::NodeId;
use flotilla_core::Namespace;
use flotilla_net::{AppliedMemberships, MembershipChange};

use super::ledger_commit::{GroupCommit, MembershipSink};

/// The memberships of this node's identity.
pub struct MembershipLedger {
    /// The group-commit writer of the key file; `None` when the key is not in the data directory.
    commit: Option<GroupCommit>,
}

/// The key file in a data directory, as the group commit's sink.
struct KeyFileSink {
    data_dir: PathBuf,
    me: NodeId,
}

impl MembershipSink for KeyFileSink {
    fn apply(&self, changes: &[MembershipChange]) -> Result<AppliedMemberships, String> {
        flotilla_net::apply_memberships(&self.data_dir, &self.me, changes).map_err(|e| e.to_string())
    }
}

impl MembershipLedger {
    /// Read the memberships of identity `me` from `<data_dir>/node.key`. A key file that
    /// cannot be read is an error (the node must not start without knowing what it was).
    pub fn open(data_dir: PathBuf, me: NodeId) -> Result<Self, String> {
        let known = flotilla_net::load_memberships(&data_dir, &me).map_err(|e| e.to_string())?;
        if known.is_none() {
            tracing::info!(
                data_dir = %data_dir.display(),
                "the node key is not in the data directory: namespace memberships are not kept with the identity"
            );
        }
        let commit = known.map(|known| GroupCommit::new(Arc::new(KeyFileSink { data_dir, me }), known));
        Ok(Self { commit })
    }

    /// The cluster that last admitted this identity to `ns`, if any ever did (as on disk).
    pub fn cluster(&self, ns: &Namespace) -> Option<ClusterId> {
        self.commit.as_ref()?.known(ns.as_str())
    }

    /// The namespaces this identity is recorded as admitted to.
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.commit
            .as_ref()
            .map(|c| c.namespaces().into_iter().filter_map(|n| Namespace::new(n).ok()).collect())
            .unwrap_or_default()
    }

    /// Record durably that `cluster` admitted this identity to `ns` (nothing to do when the
    /// ledger is off or already says so). Returns once the key file on disk says it: the
    /// rewrite is shared with every namespace recording at the same time (see
    /// `formation/ledger_commit.rs`).
    pub async fn record(&self, ns: &Namespace, cluster: &str) -> Result<(), String> {
        let Some(commit) = &self.commit else { return Ok(()) };
        let change = MembershipChange::Record { namespace: ns.as_str().to_string(), cluster: cluster.to_string() };
        if commit.commit(change, Some(kept_form(cluster))).await? {
            tracing::debug!(namespace = %ns, %cluster, "recorded in node.key: this identity is a member of the namespace");
        }
        Ok(())
    }

    /// Forget durably that this identity was admitted to `ns`: it left the namespace and its
    /// removal is committed, so a later open may found or join like a new node. Returns once
    /// the key file on disk no longer says it (nothing to do when the ledger is off).
    pub async fn forget(&self, ns: &Namespace) -> Result<(), String> {
        let Some(commit) = &self.commit else { return Ok(()) };
        if commit.commit(MembershipChange::Forget { namespace: ns.as_str().to_string() }, None).await? {
            tracing::info!(namespace = %ns, "forgotten in node.key: this identity left the namespace");
        }
        Ok(())
    }
}

/// `cluster` as the key file keeps it (cut to `flotilla_net::MAX_CLUSTER_BYTES`).
fn kept_form(cluster: &str) -> &str {
    let mut end = cluster.len().min(flotilla_net::MAX_CLUSTER_BYTES);
    while !cluster.is_char_boundary(end) {
        end -= 1;
    }
    &cluster[..end]
}
