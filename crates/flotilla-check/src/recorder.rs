//! Recording a history from many concurrent clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::entry::Entry;
use crate::history::History;
use crate::op::{ClientId, Key, Op, Outcome, Value};

/// Records operations from many threads or tasks, timing them on one monotonic clock.
///
/// Cheap to clone: clones share the history. Call [`Recorder::invoke`] just before sending a
/// request and [`Recorder::complete`] (or [`Recorder::complete_read`]) just after its answer
/// arrives, so the recorded interval contains the operation's real effect.
#[derive(Clone, Debug)]
pub struct Recorder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    next_client: AtomicU64,
    entries: Mutex<Vec<Entry>>,
}

/// Names one invoked operation, to complete it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(usize);

/// Misuse of a [`Recorder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The ticket does not come from this recorder.
    UnknownTicket,
    /// The operation was already completed.
    AlreadyCompleted,
    /// [`Recorder::complete_read`] on an operation that is not a read.
    NotARead,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordError::UnknownTicket => "ticket does not belong to this recorder",
            RecordError::AlreadyCompleted => "operation already completed",
            RecordError::NotARead => "complete_read on an operation that is not a read",
        })
    }
}

impl std::error::Error for RecordError {}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                start: Instant::now(),
                next_client: AtomicU64::new(0),
                entries: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Time since the recorder started.
    pub fn elapsed(&self) -> Duration {
        self.shared.start.elapsed()
    }

    /// A client id never handed out before by this recorder.
    pub fn new_client(&self) -> ClientId {
        self.shared.next_client.fetch_add(1, Ordering::Relaxed)
    }

    fn entries(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A panicking client cannot leave an entry half-written: recover the data.
        self.shared.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Record that `client` invokes `op` on `key` now. For a read, pass [`Op::read`].
    pub fn invoke(&self, client: ClientId, key: impl Into<Key>, op: Op) -> Ticket {
        let key = key.into();
        let mut entries = self.entries();
        let invoked = self.elapsed();
        entries.push(Entry { client, key, op, invoked, completed: None, outcome: Outcome::Unknown });
        Ticket(entries.len() - 1)
    }

    /// Record that the operation of `ticket` ended now with `outcome`. A read completed with
    /// [`Outcome::Ok`] keeps the value given at invocation; use [`Recorder::complete_read`].
    pub fn complete(&self, ticket: Ticket, outcome: Outcome) -> Result<(), RecordError> {
        let completed = self.elapsed();
        let mut entries = self.entries();
        let entry = entries.get_mut(ticket.0).ok_or(RecordError::UnknownTicket)?;
        if entry.completed.is_some() {
            return Err(RecordError::AlreadyCompleted);
        }
        entry.completed = Some(completed);
        entry.outcome = outcome;
        Ok(())
    }

    /// Record that the read of `ticket` returned `observed` (`None`: the key was absent).
    pub fn complete_read(&self, ticket: Ticket, observed: Option<Value>) -> Result<(), RecordError> {
        let completed = self.elapsed();
        let mut entries = self.entries();
        let entry = entries.get_mut(ticket.0).ok_or(RecordError::UnknownTicket)?;
        if entry.completed.is_some() {
            return Err(RecordError::AlreadyCompleted);
        }
        if !entry.op.is_read() {
            return Err(RecordError::NotARead);
        }
        entry.op = Op::Read(observed);
        entry.completed = Some(completed);
        entry.outcome = Outcome::Ok;
        Ok(())
    }

    /// A copy of everything recorded so far. Operations still pending count as unknown.
    pub fn history(&self) -> History {
        History::from_entries(self.entries().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_intervals_in_order_and_refuses_misuse() {
        let r = Recorder::new();
        let c = r.new_client();
        assert_ne!(c, r.new_client());
        let w = r.invoke(c, "k", Op::write(1u64));
        let rd = r.invoke(c, "k", Op::read());
        r.complete(w, Outcome::Ok).unwrap();
        assert_eq!(r.complete(w, Outcome::Ok), Err(RecordError::AlreadyCompleted));
        assert_eq!(r.complete_read(w, None), Err(RecordError::AlreadyCompleted));
        r.complete_read(rd, Some(1u64.into())).unwrap();
        assert_eq!(r.complete(Ticket(99), Outcome::Ok), Err(RecordError::UnknownTicket));
        let pending = r.invoke(c, "k", Op::write(2u64));
        assert_eq!(r.complete_read(r.invoke(c, "k", Op::Delete), None), Err(RecordError::NotARead));
        let h = r.history();
        assert_eq!(h.len(), 4);
        let e = &h.entries()[0];
        assert!(e.invoked <= e.completed.unwrap());
        assert_eq!(h.entries()[1].op, Op::Read(Some(1u64.into())));
        assert_eq!(h.entries()[2].effective_outcome(), Outcome::Unknown);
        let _ = pending;
    }
}
