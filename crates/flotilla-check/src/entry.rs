//! One recorded operation.

use std::fmt;
use std::time::Duration;

use crate::op::{ClientId, Key, Op, Outcome};

/// One operation of a history: who did what to which key, when, and how it ended.
///
/// Times are offsets from one monotonic clock (the [`Recorder`](crate::Recorder)'s start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The client that issued the operation.
    pub client: ClientId,
    /// The key it touched.
    pub key: Key,
    /// The operation (a read holds the value it observed).
    pub op: Op,
    /// When the client invoked it.
    pub invoked: Duration,
    /// When the client saw it end; `None` while pending (treated as [`Outcome::Unknown`]).
    pub completed: Option<Duration>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Entry {
    /// The outcome the checker uses: a pending operation counts as unknown.
    pub fn effective_outcome(&self) -> Outcome {
        if self.completed.is_none() {
            Outcome::Unknown
        } else {
            self.outcome
        }
    }
}

/// Milliseconds with three decimals.
pub(crate) struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}ms", self.0.as_secs_f64() * 1000.0)
    }
}

impl fmt::Display for Entry {
    /// One readable line: `client 3  write k=v17  [12.301ms, 14.002ms] ok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.op {
            Op::Write(v) => format!("write {}={}", self.key, v),
            Op::Read(Some(v)) => format!("read {}={}", self.key, v),
            Op::Read(None) => format!("read {}=<absent>", self.key),
            Op::Delete => format!("delete {}", self.key),
            Op::Cas { expected: Some(old), new } => format!("cas {}={}->{}", self.key, old, new),
            Op::Cas { expected: None, new } => format!("cas {}=<absent>->{}", self.key, new),
        };
        let end = match self.completed {
            Some(t) => format!("{}]", Millis(t)),
            None => "...)".to_string(),
        };
        write!(f, "client {}  {}  [{}, {} {}", self.client, what, Millis(self.invoked), end, self.effective_outcome())?;
        if self.effective_outcome() == Outcome::Unknown && !self.op.is_read() {
            f.write_str(" (may take effect until the end)")?;
        }
        Ok(())
    }
}
