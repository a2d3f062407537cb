//! Group commit of the membership ledger (`ledger.rs`) into the key file.
//!
//! Every change rewrites the whole key file with two fsyncs (file and directory). Written one
//! namespace at a time under a lock, as before, 1,000 namespaces forming at once were 1,000
//! whole-file rewrites and 2,000 fsyncs in a row, each holding a runtime thread (and every
//! other caller waiting on the lock another). Here callers queue their change and wait; one
//! writer at a time, on a blocking thread, takes *every* change queued so far, applies them to
//! the file with one rewrite, and only then releases their callers. What a caller is promised
//! is unchanged: when its call returns `Ok`, the file on disk says its change (so the amnesia
//! guard holds exactly as before); when the write fails, every caller of that batch gets the
//! error and nothing it asked for is believed.

use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_net::{AppliedMemberships, MembershipChange, Memberships};
use tokio::sync::oneshot;

/// Most changes waiting for the writer; past it, callers are refused at once (they retry on
/// their next formation tick or Raft message).
pub(crate) const MAX_PENDING: usize = flotilla_net::MAX_MEMBERSHIPS;

/// Where the ledger's changes go: the key file, or a fake in tests.
pub(crate) trait MembershipSink: Send + Sync + 'static {
    /// Apply `changes` in order, durably, with one write; returns what is on disk afterwards
    /// and which changes were refused. An `Err` means nothing is known to be on disk.
    fn apply(&self, changes: &[MembershipChange]) -> Result<AppliedMemberships, String>;
}

type Waiter = oneshot::Sender<Result<(), String>>;

struct State {
    /// What the file on disk says (updated only after a successful write).
    known: Memberships,
    /// Changes waiting for the next write, in arrival order.
    pending: Vec<(MembershipChange, Waiter)>,
    /// A writer is running; it drains `pending` until it is empty.
    writing: bool,
}

/// The group-commit writer of one key file.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    sink: Arc<dyn MembershipSink>,
    state: Arc<Mutex<State>>,
}

impl GroupCommit {
    /// A writer to `sink`, which holds `known` now.
    pub(crate) fn new(sink: Arc<dyn MembershipSink>, known: Memberships) -> Self {
        Self { sink, state: Arc::new(Mutex::new(State { known, pending: Vec::new(), writing: false })) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster the file says admitted the identity to `namespace`.
    pub(crate) fn known(&self, namespace: &str) -> Option<String> {
        self.lock().known.get(namespace).cloned()
    }

    /// The namespaces the file lists.
    pub(crate) fn namespaces(&self) -> Vec<String> {
        self.lock().known.keys().cloned().collect()
    }

    /// Make `change` durable. `kept` is the cluster as the file keeps it for a record (`None`
    /// for a forget): when the file already says so and no change of that namespace is queued,
    /// nothing is written and this returns `Ok(false)` at once. Otherwise it returns `Ok(true)`
    /// once a write that includes the change has reached the disk.
    pub(crate) async fn commit(&self, change: MembershipChange, kept: Option<&str>) -> Result<bool, String> {
        let rx = {
            let mut state = self.lock();
            let ns = namespace_of(&change);
            let queued = state.pending.iter().any(|(c, _)| namespace_of(c) == ns);
            if !queued && state.known.get(ns).map(String::as_str) == kept {
                return Ok(false);
            }
            if state.pending.len() >= MAX_PENDING {
                return Err(format!("{MAX_PENDING} membership changes already wait for the key file"));
            }
            let (tx, rx) = oneshot::channel();
            state.pending.push((change, tx));
            if !std::mem::replace(&mut state.writing, true) {
                let me = self.clone();
                tokio::task::spawn_blocking(move || me.drain());
            }
            rx
        };
        rx.await.map_err(|_| "the key file writer stopped".to_string())??;
        Ok(true)
    }

    /// Write batches until nothing is queued. Runs on a blocking thread.
    fn drain(&self) {
        // If the sink panics, the guard lets the next caller start a writer again; the
        // waiters of the lost batch see their sender dropped, an error.
        let _writing = WritingGuard(self);
        loop {
            let batch = std::mem::take(&mut self.lock().pending);
            if batch.is_empty() {
                return;
            }
            let changes: Vec<MembershipChange> = batch.iter().map(|(c, _)| c.clone()).collect();
            match self.sink.apply(&changes) {
                Ok(applied) => {
                    tracing::info!(changes = changes.len(), "membership changes written to node.key in one write");
                    self.lock().known = applied.memberships;
                    for (i, (_, waiter)) in batch.into_iter().enumerate() {
                        let outcome = match applied.refused.get(i) {
                            Some(Some(reason)) => Err(reason.clone()),
                            _ => Ok(()),
                        };
                        let _ = waiter.send(outcome);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, changes = changes.len(), "cannot write membership changes to node.key");
                    for (_, waiter) in batch {
                        let _ = waiter.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// Clears `writing` when the writer ends (normally, with nothing queued, or by a panic).
struct WritingGuard<'a>(&'a GroupCommit);

impl Drop for WritingGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.writing = false;
        if std::thread::panicking() {
            state.pending.clear();
        }
    }
}

fn namespace_of(change: &MembershipChange) -> &str {
    match change {
        MembershipChange::Record { namespace, .. } | MembershipChange::Forget { namespace } => namespace,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A sink that applies changes to a map, optionally held at a gate or failing.
    #[derive(Default)]
    struct FakeSink {
        on_disk: Mutex<Memberships>,
        /// Batch sizes seen, in order.
        batches: Mutex<Vec<usize>>,
        /// While set, `apply` waits (polling) before writing.
        hold: AtomicBool,
        /// Set while `apply` is inside its (fake) write.
        inside: AtomicBool,
        /// Fail the write of this batch number (1-based); 0: never.
        fail_batch: AtomicUsize,
    }

    impl MembershipSink for FakeSink {
        fn apply(&self, changes: &[MembershipChange]) -> Result<AppliedMemberships, String> {
            self.inside.store(true, Ordering::SeqCst);
            let n = {
                let mut b = self.batches.lock().unwrap();
                b.push(changes.len());
                b.len()
            };
            while self.hold.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let result = if self.fail_batch.load(Ordering::SeqCst) == n {
                Err("disk full".to_string())
            } else {
                let mut disk = self.on_disk.lock().unwrap();
                let mut refused = Vec::new();
                for c in changes {
                    refused.push(match c {
                        MembershipChange::Record { namespace, .. } if namespace == "refused" => {
                            Some("too many".to_string())
                        }
                        MembershipChange::Record { namespace, cluster } => {
                            disk.insert(namespace.clone(), cluster.clone());
                            None
                        }
                        MembershipChange::Forget { namespace } => {
                            disk.remove(namespace);
                            None
                        }
                    });
                }
                Ok(AppliedMemberships { memberships: disk.clone(), refused })
            };
            self.inside.store(false, Ordering::SeqCst);
            result
        }
    }

    fn record(ns: &str, cluster: &str) -> MembershipChange {
        MembershipChange::Record { namespace: ns.into(), cluster: cluster.into() }
    }

    /// Poll `cond` for up to 10 s.
    async fn eventually(cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "condition not met within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_is_released_only_after_the_write_and_queued_changes_share_one_write() {
        let sink = Arc::new(FakeSink::default());
        let commit = GroupCommit::new(sink.clone(), Memberships::new());
        sink.hold.store(true, Ordering::SeqCst);
        let first = tokio::spawn({
            let c = commit.clone();
            async move { c.commit(record("a", "x"), Some("x")).await }
        });
        eventually(|| sink.inside.load(Ordering::SeqCst)).await;
        // 20 more namespaces arrive while the first write is on its way to disk.
        let rest: Vec<_> = (0..20)
            .map(|i| {
                let c = commit.clone();
                tokio::spawn(async move { c.commit(record(&format!("n{i}"), "y"), Some("y")).await })
            })
            .collect();
        eventually(|| commit.lock().pending.len() == 20).await;
        assert!(!first.is_finished(), "released before its write finished");
        assert_eq!(commit.known("a"), None, "believed before it is on disk");
        sink.hold.store(false, Ordering::SeqCst);
        assert_eq!(first.await.unwrap(), Ok(true));
        for r in rest {
            assert_eq!(r.await.unwrap(), Ok(true));
        }
        assert_eq!(*sink.batches.lock().unwrap(), vec![1, 20], "one write for everything queued meanwhile");
        assert_eq!(commit.known("n7").as_deref(), Some("y"));
        // Already on disk: nothing to write.
        assert_eq!(commit.commit(record("a", "x"), Some("x")).await, Ok(false));
        assert_eq!(sink.batches.lock().unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_fails_every_waiter_of_its_batch_and_nothing_is_believed() {
        let sink = Arc::new(FakeSink::default());
        let commit = GroupCommit::new(sink.clone(), Memberships::new());
        sink.hold.store(true, Ordering::SeqCst);
        sink.fail_batch.store(2, Ordering::SeqCst);
        let first = tokio::spawn({
            let c = commit.clone();
            async move { c.commit(record("a", "x"), Some("x")).await }
        });
        eventually(|| sink.inside.load(Ordering::SeqCst)).await;
        let doomed: Vec<_> = (0..5)
            .map(|i| {
                let c = commit.clone();
                tokio::spawn(async move { c.commit(record(&format!("n{i}"), "y"), Some("y")).await })
            })
            .collect();
        eventually(|| commit.lock().pending.len() == 5).await;
        sink.hold.store(false, Ordering::SeqCst);
        assert_eq!(first.await.unwrap(), Ok(true));
        for r in doomed {
            assert_eq!(r.await.unwrap(), Err("disk full".to_string()));
        }
        assert_eq!(commit.known("n0"), None);
        // The writer is not stuck: the next change is written.
        assert_eq!(commit.commit(record("n0", "y"), Some("y")).await, Ok(true));
        assert_eq!(commit.known("n0").as_deref(), Some("y"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_change_fails_alone_and_a_forget_is_ordered_after_a_queued_record() {
        let sink = Arc::new(FakeSink::default());
        let commit = GroupCommit::new(sink.clone(), Memberships::new());
        sink.hold.store(true, Ordering::SeqCst);
        let first = tokio::spawn({
            let c = commit.clone();
            async move { c.commit(record("a", "x"), Some("x")).await }
        });
        eventually(|| sink.inside.load(Ordering::SeqCst)).await;
        let refused = tokio::spawn({
            let c = commit.clone();
            async move { c.commit(record("refused", "x"), Some("x")).await }
        });
        let fine = tokio::spawn({
            let c = commit.clone();
            async move { c.commit(record("b", "x"), Some("x")).await }
        });
        eventually(|| commit.lock().pending.len() == 2).await;
        // "b" is not on disk yet but queued: its forget must be written after it, not skipped.
        let forget = tokio::spawn({
            let c = commit.clone();
            async move { c.commit(MembershipChange::Forget { namespace: "b".into() }, None).await }
        });
        eventually(|| commit.lock().pending.len() == 3).await;
        sink.hold.store(false, Ordering::SeqCst);
        assert_eq!(first.await.unwrap(), Ok(true));
        assert_eq!(refused.await.unwrap(), Err("too many".to_string()));
        assert_eq!(fine.await.unwrap(), Ok(true));
        assert_eq!(forget.await.unwrap(), Ok(true));
        assert_eq!(commit.known("b"), None);
        assert!(!sink.on_disk.lock().unwrap().contains_key("b"));
    }
}
