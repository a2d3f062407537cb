//! [`CrashPoint`]: where an in-process test makes a namespace open or close stop as a crash
//! would (armed with `Node::crash_at`, feature `in-process`); never armed otherwise.

/// A point in opening or closing a namespace where a test can make the node crash: the node
/// halts there (no hand-off, groups and store stopped, as after `kill -9` minus the process
/// exit) and the operation returns [`crate::error::NamespaceError::Crashed`]. Set with
/// [`crate::Node::crash_at`]; production code never sets one.
///
/// ```no_run
/// # async fn example(node: std::sync::Arc<flotilla::Node>) {
/// use flotilla::{in_process::CrashPoint, CloseOptions};
///
/// node.crash_at(Some(CrashPoint::CloseAfterLeave)); // with `orders` open on this node
/// let closed = node.close_namespace("orders", CloseOptions::default()).await;
/// assert!(closed.is_err()); // the node halted after leaving the membership, as a crash would
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Opening: the namespace is in the persisted set, its group not started yet.
    OpenAfterPersist,
    /// Closing: the node's removal from the membership is committed, nothing else done.
    CloseAfterLeave,
    /// Closing: the group is stopped and the namespace is out of the persisted set, its data
    /// not dropped yet.
    CloseAfterUnlist,
}
