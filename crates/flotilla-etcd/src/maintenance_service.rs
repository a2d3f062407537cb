//! etcd's Maintenance service: Status and the alarm list answered from the node's state;
//! Defragment a harmless no-op (redb reuses freed pages itself); Hash, HashKV, Snapshot,
//! MoveLeader and Downgrade refused (see `docs/ETCD.md` for Flotilla's counterparts).

use flotilla::{Cluster, GroupStatus, Role};
use tonic::{Code, Request, Response, Status};

use crate::context::{to_i64, EtcdContext};
use crate::ids::member_id_of;
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::server::ETCD_VERSION;
use crate::status::unsupported;

/// etcd's Maintenance service for one namespace.
#[derive(Clone)]
pub(crate) struct MaintenanceService {
    context: EtcdContext,
}

impl MaintenanceService {
    pub(crate) fn new(context: EtcdContext) -> Self {
        Self { context }
    }

    /// Size of the node's store file (every namespace's: they share it), 0 if unreadable.
    fn db_size(&self) -> i64 {
        let store = self.context.node().store();
        let path = store.data_dir().join(flotilla_store::DB_FILE);
        std::fs::metadata(path).map_or(0, |m| to_i64(m.len()))
    }

    /// The alarms raised on this node: NOSPACE while its store refuses client writes.
    fn alarms(&self) -> Vec<AlarmMember> {
        match self.context.node().store().write_blocked() {
            Some(_) => vec![AlarmMember { member_id: self.context.member_id(), alarm: AlarmType::Nospace as i32 }],
            None => Vec::new(),
        }
    }

    async fn header_now(&self, cluster: &Cluster) -> Result<crate::pb::etcdserverpb::ResponseHeader, Status> {
        let revision = self.context.current_revision(cluster).await?;
        Ok(self.context.header(cluster, revision))
    }
}

/// etcd's Status fields from the namespace's status on this node.
fn status_response(state: &GroupStatus, db_size: i64, errors: Vec<String>) -> StatusResponse {
    StatusResponse {
        header: None,
        version: ETCD_VERSION.to_string(),
        db_size,
        leader: state.leader.as_ref().map_or(0, member_id_of),
        raft_index: state.last_log_index,
        raft_term: state.term,
        raft_applied_index: state.applied_index,
        errors,
        db_size_in_use: db_size,
        is_learner: state.role == Role::Learner,
        ..StatusResponse::default()
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let cluster = self.context.cluster()?;
        match AlarmAction::try_from(request.get_ref().action) {
            // Flotilla's NOSPACE clears itself once space is freed: disarming has nothing to do.
            Ok(AlarmAction::Get) | Ok(AlarmAction::Deactivate) => {}
            Ok(AlarmAction::Activate) => {
                return Err(Status::new(Code::FailedPrecondition, "flotilla: alarms are raised by the node itself"))
            }
            Err(_) => return Err(Status::invalid_argument("flotilla: unknown alarm action")),
        }
        Ok(Response::new(AlarmResponse { header: Some(self.header_now(&cluster).await?), alarms: self.alarms() }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let cluster = self.context.cluster()?;
        let revision = self.context.current_revision(&cluster).await?;
        let state = cluster.state();
        let errors = self.context.node().store().write_blocked().into_iter().collect();
        let response = StatusResponse {
            header: Some(self.context.header_of(&state, revision)),
            ..status_response(&state, self.db_size(), errors)
        };
        Ok(Response::new(response))
    }

    async fn defragment(&self, _: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        let cluster = self.context.cluster()?;
        Ok(Response::new(DefragmentResponse { header: Some(self.header_now(&cluster).await?) }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(unsupported("Hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Err(unsupported("HashKV"))
    }

    type SnapshotStream = tokio_stream::Empty<Result<SnapshotResponse, Status>>;

    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unsupported("Snapshot (use `flotilla backup`)"))
    }

    async fn move_leader(&self, _: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(unsupported("MoveLeader (use `flotilla leader transfer`)"))
    }

    async fn downgrade(&self, _: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(unsupported("Downgrade"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reports_raft_state() {
        let leader = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let state = GroupStatus {
            namespace: "default".into(),
            node_id: leader,
            role: Role::Leader,
            leader: Some(leader),
            term: 3,
            last_log_index: 42,
            commit_index: 42,
            applied_index: 41,
            revision: None,
            snapshot_index: 0,
            members: Vec::new(),
            membership_changing: false,
            cluster: "c/1".into(),
            quiesced: false,
            leadership: Default::default(),
            progress: Vec::new(),
            formation: None,
        };
        let status = status_response(&state, 4096, vec!["disk full".into()]);
        assert_eq!(status.version, ETCD_VERSION);
        assert!(status.version.starts_with("3.5."));
        assert_eq!(
            (status.leader, status.raft_term, status.raft_index, status.raft_applied_index),
            (member_id_of(&leader), 3, 42, 41)
        );
        assert_eq!((status.db_size, status.is_learner, status.errors.len()), (4096, false, 1));
        let learner = status_response(&GroupStatus { role: Role::Learner, leader: None, ..state }, 0, Vec::new());
        assert_eq!((learner.is_learner, learner.leader), (true, 0));
    }
}
