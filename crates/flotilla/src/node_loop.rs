//! The shape every node-level background loop shares (liveness, the transfer watch): a task
//! of its own that holds the node only while a round runs, and ends when the node closes or
//! is dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::node::Node;

/// Run `round` on `node` every `every`, in its own task within `span`, until the node is
/// closing or gone. The node is held only during a round, so the loop never keeps it alive.
pub(crate) fn spawn<F, Fut>(node: &Arc<Node>, span: tracing::Span, every: Duration, round: F)
where
    F: Fn(Arc<Node>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(node);
    let run = async move {
        loop {
            let Some(node) = weak.upgrade() else { return };
            if node.is_closing() {
                return;
            }
            round(node).await;
            tokio::time::sleep(every).await;
        }
    };
    tokio::spawn(run.instrument(span));
}
