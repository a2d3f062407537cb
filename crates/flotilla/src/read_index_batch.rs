//! [`ReadIndexBatcher`]: the linearizable reads of one namespace on this node share read-index
//! rounds, as etcd's read loop does.
//!
//! A linearizable read needs a read index obtained *after* it arrived: the leader's commit
//! index, confirmed by a heartbeat round to a quorum. Asked once per read, that is one
//! forwarded request from a follower (a libp2p round trip) and one leadership confirmation at
//! the leader for every read. Every read that arrives while a round is in flight waits instead
//! for the next round, which one of them starts as soon as the current one ends; that round
//! answers all of them. Under load a round serves every read that arrived during the one
//! before; an idle namespace's lone read runs its round at once, as before.
//!
//! Why this is linearizable: a read joins the pending batch, and a round takes the batch only
//! after that, so the round's read index was asked for after every read it answers had
//! arrived. Each read then waits, on its own, until this replica has applied that index.
//!
//! Bounds: one round in flight per namespace; a batch holds the reads in flight on this node,
//! which the HTTP and etcd endpoints already bound. A reader whose round's driver is cancelled
//! (its client went away) runs the round itself; one whose deadline passes leaves with a
//! timeout, the others keep waiting. A round runs within the deadline of the read that started
//! it, and its error (a timeout included) answers every read of its batch: all of them are
//! retryable or definite in the same way, since none of them changed anything.

use std::future::Future;
use std::sync::{Arc, Mutex};

use flotilla_core::types::LogId;
use flotilla_core::ApiError;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a round answers its batch.
type RoundResult = Result<LogId, ApiError>;

/// The reads that will share one round, and where its result is published.
struct Batch {
    result: watch::Sender<Option<RoundResult>>,
}

impl Batch {
    fn new() -> Arc<Self> {
        Arc::new(Self { result: watch::Sender::new(None) })
    }

    fn finished(&self) -> Option<RoundResult> {
        self.result.borrow().clone()
    }
}

/// Shares read-index rounds between the concurrent linearizable reads of one namespace.
#[derive(Default)]
pub(crate) struct ReadIndexBatcher {
    /// The batch that arriving reads join, until a round takes it.
    pending: Mutex<Option<Arc<Batch>>>,
    /// Held by the one round in flight.
    round: tokio::sync::Mutex<()>,
}

impl ReadIndexBatcher {
    /// The read index for a read arriving now: from the next round to start, which `fetch`
    /// runs if this read is the one to start it. Gives up at `deadline` with a timeout.
    pub(crate) async fn read_index<F, Fut>(&self, deadline: Instant, fetch: F) -> RoundResult
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = RoundResult>,
    {
        let batch = self.join();
        match tokio::time::timeout_at(deadline, self.share_round(&batch, fetch)).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout("no read index before the request's deadline".into())),
        }
    }

    /// The pending batch, created if none is.
    fn join(&self) -> Arc<Batch> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.get_or_insert_with(Batch::new).clone()
    }

    /// Wait for `batch`'s round, or run it once no other round is in flight.
    async fn share_round<F, Fut>(&self, batch: &Arc<Batch>, fetch: F) -> RoundResult
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = RoundResult>,
    {
        let mut finished = batch.result.subscribe();
        let _round = tokio::select! {
            biased;
            done = finished.wait_for(Option::is_some) => {
                // The sender lives in `batch`, which this read holds: it cannot be dropped.
                return done.ok().and_then(|r| r.clone()).unwrap_or_else(|| Err(ApiError::Fatal("a read-index batch ended without a result".into())));
            }
            guard = self.round.lock() => guard,
        };
        // Another member of the batch may have run its round while this one waited for the lock.
        if let Some(result) = batch.finished() {
            return result;
        }
        // Later reads must join a new batch: this round may have been asked for before them.
        // (When the batch is no longer pending, a driver took it and was cancelled: its reads
        // arrived before now, so a round started now still serves them.)
        self.take_if_pending(batch);
        let result = fetch().await;
        batch.result.send_replace(Some(result.clone()));
        result
    }

    fn take_if_pending(&self, batch: &Arc<Batch>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, batch)) {
            *pending = None;
        }
    }
}

impl std::fmt::Debug for ReadIndexBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.pending.lock().map(|p| p.is_some()).unwrap_or(false);
        f.debug_struct("ReadIndexBatcher").field("pending", &pending).finish()
    }
}

#[cfg(test)]
#[path = "read_index_batch_tests.rs"]
mod tests;
