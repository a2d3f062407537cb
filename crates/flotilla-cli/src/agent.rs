//! `flotilla agent`: run a node until SIGTERM or Ctrl-C.

use anyhow::Context;
use std::sync::Arc;

use flotilla::{Node, NodeBuilder};
use flotilla_core::Config;
use tokio::net::TcpListener;
use tracing::info;

use crate::etcd_endpoint::EtcdListener;

pub async fn run(config: Config) -> anyhow::Result<()> {
    init_tracing();
    config.validate()?;
    // First: a busy HTTP port fails the start before identity, host and store are set up.
    let listener = TcpListener::bind(config.http).await.with_context(|| format!("binding HTTP on {}", config.http))?;
    let etcd_listener = EtcdListener::bind(&config).await?;
    let etcd_addr = etcd_listener.as_ref().map(EtcdListener::local_addr).transpose()?;
    let admin_token = config.admin_token_file.is_some();
    let running = NodeBuilder::from_config(config).start().await?;
    let node = running.node().clone();
    info!(
        peer_id = %node.id(),
        addrs = ?node.addrs(),
        http = %listener.local_addr()?,
        etcd = %etcd_addr.map_or_else(|| "off".to_string(), |a| a.to_string()),
        admin_token,
        "flotilla agent running"
    );
    if node.config().cluster_key_file.is_some() {
        tokio::spawn(reload_keyring_on_sighup(node.clone()));
    }
    let mut etcd = etcd_listener.map(|l| l.serve(node.clone())).unwrap_or_default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(flotilla_http::serve(listener, node.clone(), async move {
        let _ = stop_rx.await;
    }));
    // The HTTP server only returns early on an error (e.g. an admin token file that became
    // unusable after validation); the node then stops too rather than run without its API.
    let failed = tokio::select! {
        () = wait_for_signal() => None,
        ended = &mut server => Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("the HTTP server stopped unexpectedly"),
            Ok(Err(e)) => anyhow::Error::new(e).context("serving HTTP"),
            Err(e) => anyhow::Error::new(e).context("the HTTP server task failed"),
        }),
        e = etcd.failed() => Some(e),
    };
    info!("shutting down: handing off leadership");
    let stopping = std::time::Instant::now();
    node.close().await;
    let _ = stop_tx.send(());
    etcd.stop(HTTP_DRAIN_AT_EXIT).await;
    // The Raft groups are stopped, so requests still under way fail fast; a client that keeps
    // its connection busy must not hold the exit up for long.
    if failed.is_none() && tokio::time::timeout(HTTP_DRAIN_AT_EXIT, &mut server).await.is_err() {
        tracing::warn!(waited = ?HTTP_DRAIN_AT_EXIT, "HTTP requests still under way at exit; not waiting longer");
        server.abort();
    }
    // The node is closed already; this closes the host's connections.
    running.shutdown().await;
    match failed {
        Some(e) => Err(e),
        None => {
            info!(elapsed_ms = u64::try_from(stopping.elapsed().as_millis()).unwrap_or(u64::MAX), "stopped");
            Ok(())
        }
    }
}

/// Longest the HTTP server (and the etcd endpoint) may take to finish its requests once the node has stopped.
const HTTP_DRAIN_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `kill -HUP` re-reads the cluster key file: a rotation step (see docs/SECURITY.md).
async fn reload_keyring_on_sighup(node: Arc<Node>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload the keyring with `flotilla keyring reload`");
        return;
    };
    while hup.recv().await.is_some() {
        if let Err(e) = node.reload_keyring() {
            tracing::error!(error = %e, "SIGHUP: keyring not reloaded; the previous keyring stays in use");
        }
    }
}

/// The log filter without `RUST_LOG`.
const DEFAULT_LOG_FILTER: &str =
    "info,openraft=warn,openraft::core::heartbeat=error,openraft::replication=error,openraft::engine::handler::replication_handler=error";

fn init_tracing() {
    // openraft warns of every failed heartbeat and replication message, per group: with a
    // peer down and hundreds of namespaces that is thousands of lines a second, a real CPU
    // cost. Flotilla reports an unreachable peer once, at node level (liveness, links).
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}
