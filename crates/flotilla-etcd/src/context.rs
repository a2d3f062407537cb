//! What every etcd service shares: the node, the namespace it serves, and the response header.

use std::sync::Arc;

use flotilla::{Cluster, GroupStatus, Node};
use flotilla_core::kv::RangeRequest;
use flotilla_core::{Consistency, Namespace};
use tonic::Status;

use crate::ids::{cluster_id_of, member_id_of};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::status::status_of;

/// The node and the namespace an etcd endpoint serves.
#[derive(Clone)]
pub struct EtcdContext {
    node: Arc<Node>,
    namespace: Namespace,
    client_url: Option<String>,
}

impl EtcdContext {
    /// The endpoint of `namespace` on `node`.
    pub fn new(node: Arc<Node>, namespace: Namespace) -> Self {
        Self { node, namespace, client_url: None }
    }

    /// The same, reporting `url` as this member's client URL (Cluster MemberList).
    pub fn with_client_url(self, url: String) -> Self {
        Self { client_url: Some(url), ..self }
    }

    /// This member's client URL, when known.
    pub(crate) fn client_url(&self) -> Option<&str> {
        self.client_url.as_deref()
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The namespace served.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The namespace's cluster handle, looked up per request: a namespace may be opened or
    /// closed at runtime.
    pub(crate) fn cluster(&self) -> Result<Cluster, Status> {
        self.node.cluster(self.namespace.as_str()).map_err(|e| status_of(&e))
    }

    /// This node's etcd member id.
    pub(crate) fn member_id(&self) -> u64 {
        member_id_of(&self.node.id())
    }

    /// The header etcd puts on every response: cluster and member ids, the namespace's
    /// revision the response reflects, and the Raft term (read without copying the group's
    /// state: this runs on every request).
    pub(crate) fn header(&self, cluster: &Cluster, revision: u64) -> ResponseHeader {
        let (term, id) = cluster.term_and_cluster();
        self.header_from(&id, term, revision)
    }

    /// [`EtcdContext::header`] from a status already taken.
    pub(crate) fn header_of(&self, state: &GroupStatus, revision: u64) -> ResponseHeader {
        self.header_from(&state.cluster, state.term, revision)
    }

    fn header_from(&self, cluster: &str, term: u64, revision: u64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: cluster_id_of(cluster),
            member_id: self.member_id(),
            revision: to_i64(revision),
            raft_term: term,
        }
    }

    /// The namespace's revision as this replica has applied it (a stale read of one key: the
    /// answer carries the revision).
    pub(crate) async fn current_revision(&self, cluster: &Cluster) -> Result<u64, Status> {
        let probe = RangeRequest { keys_only: true, ..RangeRequest::key(vec![0u8]) };
        let read = cluster.range(probe, Consistency::Stale).await.map_err(|e| status_of(&e))?;
        Ok(read.revision)
    }
}

/// etcd's signed revisions and counts from Flotilla's unsigned ones (saturating; a revision
/// never gets near `i64::MAX`).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Flotilla's unsigned revision from an etcd request's signed one: negative values read as 0
/// (etcd's "current"), as etcd treats them.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
