//! The HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use flotilla::Node;
use tokio::net::TcpListener;

use crate::{kv_routes, membership_routes, metrics, node_routes};

/// Build the router serving `node`.
pub fn router(node: Arc<Node>) -> Router {
    // The body limit covers the largest value plus slack; larger bodies get 413 before they
    // are read into memory.
    let body_limit = node.config().max_value_bytes + 1024;
    Router::new()
        .route(
            "/v1/kv/{ns}/{*key}",
            get(kv_routes::get_value).put(kv_routes::put_value).delete(kv_routes::delete_value),
        )
        .route("/v1/kv/{ns}", get(kv_routes::list_keys))
        .route("/v1/ns/{ns}/status", get(node_routes::namespace_status))
        .route("/v1/status", get(node_routes::node_status))
        .route("/v1/ns/{ns}/members", post(membership_routes::add_member).get(membership_routes::list_members))
        .route("/v1/ns/{ns}/members/{peer_id}", delete(membership_routes::remove_member))
        .route("/v1/ns/{ns}/transfer-leader", post(membership_routes::transfer_leader))
        .route("/v1/ns/{ns}/dissolve", post(membership_routes::dissolve))
        .route("/health", get(node_routes::health))
        .route("/ready", get(node_routes::ready))
        .route("/metrics", get(metrics::render))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(node).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
