//! The responder of client writes: openraft's one-shot reply, plus the moment the entry was
//! committed, so a slow write can say how its time split between reaching a quorum and being
//! applied (`flotilla`'s slow request traces).
//!
//! openraft calls [`Responder::on_commit`] when the entry is committed (durable on a quorum)
//! and about to be applied, and [`Responder::on_complete`] with the applied result. Recording
//! the first is one clock read into this value: no allocation, no lock, so every write carries
//! it and only a slow one is ever looked at.

use openraft::alias::{InstantOf, LogIdOf, OneshotReceiverOf, OneshotSenderOf};
use openraft::async_runtime::OneshotSender;
use openraft::raft::responder::Responder;
use openraft::type_config::TypeConfigExt;
use openraft::{OptionalSend, RaftTypeConfig};

/// A write's result and when its entry was committed.
#[derive(Debug)]
pub struct Timed<C: RaftTypeConfig, T> {
    /// What openraft answered.
    pub result: T,
    /// When the entry was committed; `None` when the write ended before (refused, leader lost).
    pub committed_at: Option<InstantOf<C>>,
}

/// A one-shot responder that also notes when the entry was committed.
pub struct TimedResponder<C: RaftTypeConfig, T: OptionalSend> {
    tx: OneshotSenderOf<C, Timed<C, T>>,
    committed_at: Option<InstantOf<C>>,
}

impl<C: RaftTypeConfig, T: OptionalSend> TimedResponder<C, T> {
    /// A responder and the receiver of its [`Timed`] result.
    pub fn new() -> (Self, OneshotReceiverOf<C, Timed<C, T>>) {
        let (tx, rx) = C::oneshot();
        (Self { tx, committed_at: None }, rx)
    }
}

impl<C, T> Responder<C, T> for TimedResponder<C, T>
where
    C: RaftTypeConfig,
    T: OptionalSend + 'static,
{
    fn on_commit(&mut self, _log_id: LogIdOf<C>) {
        self.committed_at = Some(C::now());
    }

    fn on_complete(self, result: T) {
        // The caller may have given up (deadline); the write is applied all the same.
        let _ = self.tx.send(Timed { result, committed_at: self.committed_at });
    }
}
