//! etcd's Lease service over the namespace's leases (`Cluster::lease_*`): Grant, Revoke,
//! KeepAlive (a stream), TimeToLive (with keys) and Leases. The leader's lease clock keeps
//! time, so any node answers; a lease's keys are deleted when it is revoked or expires.

use std::pin::Pin;
use std::time::Duration;

use flotilla_core::ApiError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::context::{to_i64, to_u64, EtcdContext};
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use crate::status::{refused, status_of, LEASE_TTL_TOO_LARGE};

/// etcd's largest lease time to live, in seconds (`lease.MaxLeaseTTL`).
const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

/// Keep-alive answers waiting to be sent on one stream; the stream reads no further request
/// while they are full, so a client that does not read cannot grow a queue.
const KEEP_ALIVE_BUFFER: usize = 16;

/// etcd's Lease service for one namespace.
#[derive(Clone)]
pub(crate) struct LeaseService {
    context: EtcdContext,
}

impl LeaseService {
    pub(crate) fn new(context: EtcdContext) -> Self {
        Self { context }
    }

    /// Renew lease `id`: etcd's answer, whose TTL is 0 when the lease is gone (etcd answers a
    /// keep-alive of an unknown lease so, rather than fail the stream).
    async fn keep_alive_once(&self, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        let cluster = self.context.cluster()?;
        let ttl = match cluster.lease_keep_alive(to_u64(id)).await {
            Ok(ttl) => to_i64(ttl.as_secs()),
            Err(ApiError::LeaseNotFound(_)) => 0,
            Err(e) => return Err(status_of(&e)),
        };
        let revision = self.context.current_revision(&cluster).await?;
        Ok(LeaseKeepAliveResponse { header: Some(self.context.header(&cluster, revision)), id, ttl })
    }
}

/// The time to live a grant asks for: etcd's bound, and negative read as "the shortest" (the
/// node raises it to its minimum).
fn grant_ttl(ttl: i64) -> Result<Duration, Status> {
    if ttl > MAX_LEASE_TTL_SECS {
        return Err(refused(Code::OutOfRange, LEASE_TTL_TOO_LARGE));
    }
    Ok(Duration::from_secs(to_u64(ttl)))
}

/// The stream of keep-alive answers.
type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let cluster = self.context.cluster()?;
        let ask = request.get_ref();
        let ttl = grant_ttl(ask.ttl)?;
        let granted = cluster.lease_grant(to_u64(ask.id), ttl).await.map_err(|e| status_of(&e))?;
        Ok(Response::new(LeaseGrantResponse {
            header: Some(self.context.header(&cluster, granted.revision)),
            id: to_i64(granted.id),
            ttl: to_i64(granted.ttl_secs),
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let cluster = self.context.cluster()?;
        let revoked = cluster.lease_revoke(to_u64(request.get_ref().id)).await.map_err(|e| status_of(&e))?;
        Ok(Response::new(LeaseRevokeResponse { header: Some(self.context.header(&cluster, revoked.revision)) }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (answers, stream) = mpsc::channel(KEEP_ALIVE_BUFFER);
        let service = self.clone();
        // One request at a time, in order; the task ends when the client closes its side, sends
        // something undecodable, or stops listening.
        tokio::spawn(async move {
            while let Some(Ok(ask)) = inbound.next().await {
                let answer = service.keep_alive_once(ask.id).await;
                let failed = answer.is_err();
                if answers.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let cluster = self.context.cluster()?;
        let ask = request.get_ref();
        let answer = match cluster.lease_time_to_live(to_u64(ask.id), ask.keys).await {
            Ok(status) => LeaseTimeToLiveResponse {
                header: None,
                id: ask.id,
                ttl: to_i64(status.remaining.as_secs()),
                granted_ttl: to_i64(status.ttl.as_secs()),
                keys: status.keys,
            },
            // etcd answers an unknown lease with a TTL of -1, not an error.
            Err(ApiError::LeaseNotFound(_)) => LeaseTimeToLiveResponse { id: ask.id, ttl: -1, ..Default::default() },
            Err(e) => return Err(status_of(&e)),
        };
        let revision = self.context.current_revision(&cluster).await?;
        Ok(Response::new(LeaseTimeToLiveResponse { header: Some(self.context.header(&cluster, revision)), ..answer }))
    }

    async fn lease_leases(&self, _: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        let cluster = self.context.cluster()?;
        let leases = cluster.leases().await.map_err(|e| status_of(&e))?;
        let revision = self.context.current_revision(&cluster).await?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.context.header(&cluster, revision)),
            leases: leases.into_iter().map(|(id, _)| LeaseStatus { id: to_i64(id) }).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_ttls() {
        assert_eq!(grant_ttl(60).unwrap(), Duration::from_secs(60));
        assert_eq!(grant_ttl(-5).unwrap(), Duration::ZERO, "the node raises it to its minimum");
        assert_eq!(grant_ttl(MAX_LEASE_TTL_SECS).unwrap(), Duration::from_secs(9_000_000_000));
        let too_large = grant_ttl(MAX_LEASE_TTL_SECS + 1).unwrap_err();
        assert_eq!((too_large.code(), too_large.message()), (Code::OutOfRange, LEASE_TTL_TOO_LARGE));
    }
}
