//! The agent's etcd endpoint (`--etcd-listen`): bound before the node starts, so a busy port
//! fails the start early, served by `flotilla_etcd::serve` until the agent stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flotilla::Node;
use flotilla_core::{Config, Namespace};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A bound etcd listener, not serving yet.
pub struct EtcdListener {
    listener: TcpListener,
    namespace: Namespace,
}

impl EtcdListener {
    /// Bind `--etcd-listen`, if set.
    pub async fn bind(config: &Config) -> anyhow::Result<Option<EtcdListener>> {
        let Some(addr) = config.etcd_listen else { return Ok(None) };
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the etcd endpoint on {addr}"))?;
        Ok(Some(EtcdListener { listener, namespace: config.etcd_namespace.clone() }))
    }

    /// The address bound (the OS's pick for port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve etcd's API over `node` until [`EtcdEndpoint::stop`].
    pub fn serve(self, node: Arc<Node>) -> EtcdEndpoint {
        if !node.namespaces().contains(&self.namespace) {
            tracing::warn!(namespace = %self.namespace, "the etcd endpoint's namespace is not open on this node: its requests fail until it is");
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(flotilla_etcd::serve(self.listener, node, self.namespace, async move {
            let _ = stopped.await;
        }));
        EtcdEndpoint { task: Some(task), stop: Some(stop) }
    }
}

/// The etcd endpoint being served (or none: every method then waits forever or does nothing).
#[derive(Default)]
pub struct EtcdEndpoint {
    task: Option<JoinHandle<Result<(), flotilla_etcd::EtcdError>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl EtcdEndpoint {
    /// Completes only if the server stopped by itself, with why: the agent then stops too,
    /// rather than run without the endpoint it was asked for.
    pub async fn failed(&mut self) -> anyhow::Error {
        let Some(task) = self.task.as_mut() else { return std::future::pending().await };
        let ended = task.await;
        self.task = None;
        match ended {
            Ok(Ok(())) => anyhow::anyhow!("the etcd endpoint stopped unexpectedly"),
            Ok(Err(e)) => anyhow::Error::new(e).context("serving the etcd endpoint"),
            Err(e) => anyhow::Error::new(e).context("the etcd endpoint's task failed"),
        }
    }

    /// Stop serving; wait at most `drain` for requests under way.
    pub async fn stop(&mut self, drain: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(drain, &mut task).await.is_err() {
                tracing::warn!(waited = ?drain, "etcd requests still under way at exit; not waiting longer");
                task.abort();
            }
        }
    }
}
