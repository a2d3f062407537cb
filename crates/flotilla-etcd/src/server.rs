//! The gRPC server of the etcd endpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flotilla::Node;
use flotilla_core::Namespace;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::Server;

use crate::cluster_service::ClusterService;
use crate::context::EtcdContext;
use crate::election_service::ElectionService;
use crate::error::EtcdError;
use crate::kv_service::KvService;
use crate::lease_service::LeaseService;
use crate::lock_service::LockService;
use crate::maintenance_service::MaintenanceService;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::pb::v3lockpb::lock_server::LockServer;
use crate::watch_service::WatchService;

/// The etcd version the endpoint reports (Maintenance Status): the 3.5 API it follows. Clients
/// that check a version (etcdctl, Kubernetes) accept it.
pub const ETCD_VERSION: &str = "3.5.17";

/// Requests one connection may have under way at once; more wait for one to finish.
const MAX_REQUESTS_PER_CONNECTION: usize = 256;

/// HTTP/2 streams one connection may open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 1_024;

/// How often an idle connection is pinged, so a vanished client's connection is closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Serve etcd's v3 API for `namespace` of `node` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    namespace: Namespace,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), EtcdError> {
    let addr = listener.local_addr().map_err(EtcdError::Listener)?;
    let context = EtcdContext::new(node, namespace).with_client_url(format!("http://{addr}"));
    tracing::debug!(%addr, namespace = %context.namespace(), "serving the etcd API");
    // Small requests and answers: without TCP_NODELAY, Nagle's algorithm and delayed
    // acknowledgements add tens of milliseconds to a request.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    Server::builder()
        .concurrency_limit_per_connection(MAX_REQUESTS_PER_CONNECTION)
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .add_service(KvServer::new(KvService::new(context.clone())))
        .add_service(WatchServer::new(WatchService::new(context.clone())))
        .add_service(LeaseServer::new(LeaseService::new(context.clone())))
        .add_service(MaintenanceServer::new(MaintenanceService::new(context.clone())))
        .add_service(ClusterServer::new(ClusterService::new(context.clone())))
        .add_service(LockServer::new(LockService::new(context.clone())))
        .add_service(ElectionServer::new(ElectionService::new(context)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(EtcdError::Serve)
}
