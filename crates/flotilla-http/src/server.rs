//! The HTTP server: the routes, and connection handling that keeps slow or idle clients from
//! holding the node's connections.
//!
//! [`serve`] runs its own accept loop over hyper's HTTP/1 connection driver:
//!
//! - at most [`Config::http_max_connections`](flotilla_core::Config::http_max_connections)
//!   connections are served at once; further ones wait in the listen backlog until one closes;
//! - a client has [`Config::http_header_timeout`](flotilla_core::Config::http_header_timeout)
//!   to send a request's headers (from the moment it connects, and again between requests on a
//!   kept-alive connection), after which the connection is closed (slow-loris);
//! - once the headers are in, reading the body and answering must finish within
//!   [`Config::http_request_deadline`](flotilla_core::Config::http_request_deadline), or the
//!   request is answered 504 `timeout` (a client trickling its body holds nothing for long);
//! - a client that leaves a response unread for the header timeout is disconnected.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use flotilla::Node;
use flotilla_core::AdminToken;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;
use tracing::{debug, error, warn};

use crate::auth::AppState;
use crate::error::HttpError;
use crate::{
    backup_routes, kv_routes, lease_routes, lock_routes, membership_routes, metrics, namespace_routes, node_routes,
    queue_routes, restore_routes, txn_routes, watch_routes,
};

/// Build the router serving `node`. With `admin_token`, the membership and admin routes
/// (add/remove member, transfer leadership, dissolve, open/close a namespace, compact, keyring
/// reload, backup, restore) require `Authorization: Bearer <token>`;
/// without it they are open (fit for a loopback listener only). Every request must be complete
/// within the node's [`http_request_deadline`](flotilla_core::Config::http_request_deadline),
/// except a restore (`POST /v1/ns/{ns}/restore`), which takes as long as its backup needs.
pub fn router(node: Arc<Node>, admin_token: Option<AdminToken>) -> Router {
    // The body limit covers the largest value plus slack; larger bodies get 413 before they
    // are read into memory.
    let body_limit = node.config().max_value_bytes + 1024;
    let deadline = node.config().http_request_deadline();
    let state = AppState { node, admin_token: admin_token.map(Arc::new) };
    Router::new()
        .route(
            "/v1/kv/{ns}/{*key}",
            get(kv_routes::get_value).put(kv_routes::put_value).delete(kv_routes::delete_value),
        )
        .route("/v1/kv/{ns}", get(kv_routes::list_keys))
        .route("/v1/txn/{ns}", post(txn_routes::txn))
        .route("/v1/lease/{ns}", post(lease_routes::grant).get(lease_routes::list))
        .route("/v1/lease/{ns}/{id}", get(lease_routes::time_to_live).delete(lease_routes::revoke))
        .route("/v1/lease/{ns}/{id}/keepalive", post(lease_routes::keep_alive))
        .route("/v1/lock/{ns}/{name}", post(lock_routes::lock).get(lock_routes::lock_holder))
        .route("/v1/election/{ns}/{name}", post(lock_routes::campaign).get(lock_routes::election_leader))
        .route("/v1/queue/{ns}/{name}", post(queue_routes::push).get(queue_routes::len))
        .route("/v1/queue/{ns}/{name}/pop", post(queue_routes::pop))
        .route("/v1/queue/{ns}/{name}/peek", get(queue_routes::peek))
        .route("/v1/queue/{ns}/{name}/ack/{id}", post(queue_routes::ack))
        .route("/v1/watch/{ns}", get(watch_routes::watch_all))
        .route("/v1/watch/{ns}/{*key}", get(watch_routes::watch_key))
        .route("/v1/ns/{ns}/compact", post(txn_routes::compact))
        .route("/v1/ns", get(namespace_routes::list))
        .route("/v1/ns/{ns}", put(namespace_routes::open).delete(namespace_routes::close))
        .route("/v1/ns/{ns}/status", get(node_routes::namespace_status))
        .route("/v1/ns/{ns}/backup", get(backup_routes::backup))
        .route("/v1/status", get(node_routes::node_status))
        .route("/v1/ns/{ns}/members", post(membership_routes::add_member).get(membership_routes::list_members))
        .route("/v1/ns/{ns}/members/{peer_id}", delete(membership_routes::remove_member))
        .route("/v1/ns/{ns}/transfer-leader", post(membership_routes::transfer_leader))
        .route("/v1/ns/{ns}/dissolve", post(membership_routes::dissolve))
        .route("/v1/admin/keyring/reload", post(node_routes::reload_keyring))
        .route("/health", get(node_routes::health))
        .route("/ready", get(node_routes::ready))
        .route("/metrics", get(metrics::render))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(crate::json_errors::json_errors))
        .layer(middleware::from_fn_with_state(deadline, request_deadline))
        // Outside the deadline: a restore streams a whole backup in and then replays it through
        // the log, which takes as long as the backup is large. It is admin-only and reads its
        // body itself, within its own bound (`MAX_RESTORE_BYTES`).
        .merge(
            Router::new()
                .route("/v1/ns/{ns}/restore", post(restore_routes::restore))
                .layer(middleware::from_fn(crate::json_errors::json_errors)),
        )
        .with_state(state)
}

/// Answer 504 `timeout` when a request (reading its body included) is not done by `deadline`.
async fn request_deadline(State(deadline): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => HttpError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "request not complete within {} ms (body too slow, or no answer in time): outcome unknown",
                deadline.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Connection handling limits, from the node's configuration.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    /// Longest a connection may have a response waiting on an unreading client.
    write_stall: Duration,
    /// How long shutdown waits for connections to finish their requests.
    drain: Duration,
}

/// Serve the API on `listener` until `shutdown` resolves, then let the requests under way
/// finish (for at most the request deadline plus the header timeout) and return.
///
/// The admin token, connection cap and timeouts come from the node's configuration. Fails at
/// once, serving nothing, when the admin token file cannot be used or when `listener` is not
/// on a loopback address and no admin token is configured.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let config = node.config();
    let admin_token = config.admin_token().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let local = listener.local_addr()?;
    if admin_token.is_none() && !local.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to serve the HTTP API on {local} (not loopback) without an admin token: \
                 pass --admin-token-file"
            ),
        ));
    }
    let limits = Limits {
        max_connections: config.http_max_connections.clamp(1, flotilla_core::config::MAX_HTTP_MAX_CONNECTIONS),
        header_timeout: config.http_header_timeout(),
        write_stall: config.http_header_timeout(),
        drain: config.http_request_deadline() + config.http_header_timeout(),
    };
    let app = router(node, admin_token);
    serve_app(listener, app, limits, shutdown).await
}

async fn serve_app(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A connection slot first: beyond the cap, new connections wait in the backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then try again.
                    error!(error = %e, "accepting an HTTP connection failed; retrying in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(StallGuard::new(stream, limits.write_stall));
        let app = app.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            app.clone().oneshot(request)
        });
        let connection = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(client = %remote, error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        warn!(waited = ?limits.drain, "HTTP connections still open at shutdown; not waiting longer");
    }
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// A connection that fails its writes once they have made no progress for `limit`: a client
/// that stops reading its responses cannot hold the connection (and its slot) forever.
struct StallGuard<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit, stalled: None }
    }

    /// Pass `poll` through, arming the stall timer while it is pending and failing once the
    /// timer fires.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing of its response for too long",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_write_fails_after_the_limit() {
        // A duplex pipe with a 16-byte buffer and a reader that never reads.
        let (writer, _reader) = tokio::io::duplex(16);
        let mut guarded = StallGuard::new(writer, Duration::from_millis(100));
        let started = std::time::Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(10), async {
            use tokio::io::AsyncWriteExt;
            loop {
                if let Err(e) = guarded.write_all(&[0; 64]).await {
                    return e;
                }
            }
        })
        .await
        .expect("the guard fails the write well before 10 s");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
