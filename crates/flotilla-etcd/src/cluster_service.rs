//! etcd's Cluster service: MemberList from the namespace's membership; MemberAdd, MemberRemove,
//! MemberUpdate and MemberPromote refused (Flotilla's formation and autopilot manage the
//! membership; an operator uses `flotilla members`).

use flotilla::{Member, MemberRole};
use flotilla_core::types::NodeId;
use tonic::{Request, Response, Status};

use crate::context::EtcdContext;
use crate::ids::member_id_of;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    Member as EtcdMember, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use crate::status::unsupported;

/// etcd's Cluster service for one namespace.
#[derive(Clone)]
pub(crate) struct ClusterService {
    context: EtcdContext,
}

impl ClusterService {
    pub(crate) fn new(context: EtcdContext) -> Self {
        Self { context }
    }
}

/// etcd's members from Flotilla's: the id hashed from the PeerId, the PeerId as the name, the
/// libp2p addresses as peer URLs, and a client URL only for this node (`own`), the one whose
/// etcd endpoint is known here.
fn etcd_members(members: &[Member], own: &NodeId, own_url: Option<&str>) -> Vec<EtcdMember> {
    members
        .iter()
        .map(|m| EtcdMember {
            id: member_id_of(&m.id),
            name: m.id.to_string(),
            peer_ur_ls: m.addrs.clone(),
            client_ur_ls: if m.id == *own { own_url.map(str::to_string).into_iter().collect() } else { Vec::new() },
            is_learner: m.role == MemberRole::Learner,
        })
        .collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, _: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        Err(unsupported("MemberAdd (nodes join by themselves; see `flotilla members`)"))
    }

    async fn member_remove(&self, _: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(unsupported("MemberRemove (use `flotilla members remove`)"))
    }

    async fn member_update(&self, _: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(unsupported("MemberUpdate"))
    }

    async fn member_list(&self, _: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        let cluster = self.context.cluster()?;
        let state = cluster.state();
        let members = etcd_members(&state.members, &self.context.node().id(), self.context.client_url());
        // etcd's Cluster service answers a header without a revision (membership is not MVCC).
        Ok(Response::new(MemberListResponse { header: Some(self.context.header_of(&state, 0)), members }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(unsupported("MemberPromote (Flotilla's autopilot promotes learners)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_carry_stable_ids_urls_and_roles() {
        let peer = || libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let (own, other) = (peer(), peer());
        let members = vec![
            Member { id: own, addrs: vec!["/ip4/127.0.0.1/tcp/7000".into()], role: MemberRole::Voter },
            Member { id: other, addrs: vec!["/ip4/127.0.0.1/tcp/7001".into()], role: MemberRole::Learner },
        ];
        let etcd = etcd_members(&members, &own, Some("http://127.0.0.1:2379"));
        assert_eq!(etcd[0].id, member_id_of(&own));
        assert_eq!(etcd[0].name, own.to_string());
        assert_eq!(etcd[0].client_ur_ls, vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!(etcd[0].peer_ur_ls, vec!["/ip4/127.0.0.1/tcp/7000".to_string()]);
        assert!(!etcd[0].is_learner);
        assert!(etcd[1].client_ur_ls.is_empty(), "another node's etcd endpoint is not known here");
        assert!(etcd[1].is_learner);
    }
}
