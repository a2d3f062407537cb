//! [`InUse`]: counts the state machine handles and snapshot builders of a store while they
//! live, so that a node's shutdown can wait for them before closing the store.
//!
//! Why: openraft's `Raft::shutdown` joins the Raft core task, not its state machine worker.
//! The worker owns the group's `StateMachineStore` and drains the commands already queued
//! (applies, snapshot builds) after the core is gone; closing the store under it fails those
//! applies ("store is closed") and openraft reports each as an error. The worker drops the
//! state machine when it ends, so the count reaching zero means every group's worker is done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One live handle of the count; cloning it counts another.
#[derive(Debug)]
pub(crate) struct InUse(Arc<AtomicUsize>);

impl InUse {
    /// Count one more handle in `count`.
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Clone for InUse {
    fn clone(&self) -> Self {
        Self::new(&self.0)
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often [`wait_unused`] looks again.
const POLL: Duration = Duration::from_millis(5);

/// Wait until no handle of `count` is alive, at most `within`; returns whether none is.
pub(crate) async fn wait_unused(count: &AtomicUsize, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while count.load(Ordering::Acquire) > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_count_follows_clones_and_drops() {
        let count = Arc::new(AtomicUsize::new(0));
        let first = InUse::new(&count);
        let second = first.clone();
        assert_eq!(count.load(Ordering::Acquire), 2);
        drop(first);
        assert!(!wait_unused(&count, Duration::from_millis(20)).await, "one handle is still alive");
        let released = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(second);
        });
        assert!(wait_unused(&count, Duration::from_secs(10)).await);
        released.await.unwrap();
    }
}

#[cfg(test)]
mod store_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use flotilla_core::{KvStateMachine, Namespace};

    use crate::{Store, StoreError};

    /// A state machine handle still alive (openraft's worker draining its queue) holds the
    /// store open until it goes; one that never goes holds it only for the bound.
    #[tokio::test]
    async fn a_shutdown_waits_for_the_state_machines_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ns = Namespace::new("default").unwrap();
        let sm = store.state_machine(&ns, Arc::new(KvStateMachine)).unwrap();
        let released = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(sm);
        });
        assert!(store.shutdown_when_unused(Duration::from_secs(30)).await, "the handle was dropped in time");
        released.await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let _held = store.state_machine(&ns, Arc::new(KvStateMachine)).unwrap();
        assert!(!store.shutdown_when_unused(Duration::from_millis(50)).await, "held past the bound");
        assert!(matches!(store.view(&ns), Err(StoreError::Closed)), "closed after the bound all the same");
    }
}
