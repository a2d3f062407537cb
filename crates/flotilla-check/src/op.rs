//! Operations, values and outcomes: the vocabulary of a history.

use std::fmt;

/// Identifies a client: a sequential process that issues one operation at a time.
///
/// After an operation with an [`Outcome::Unknown`] outcome the client may still have that
/// operation in flight, so a driver retires the id and continues under a fresh one (see
/// [`Recorder::new_client`](crate::Recorder::new_client)).
pub type ClientId = u64;

/// A key of the store. Keys are checked independently of each other.
pub type Key = String;

/// A value written to a key.
///
/// Give every write its own value (a counter is enough): the checker then knows exactly which
/// write a read observed, which keeps the search small and the verdicts meaningful.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub String);

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value(v.to_string())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value(v)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a client asked the store to do with one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set the key to this value.
    Write(Value),
    /// Read the key. Holds the value observed, `None` when the key was absent; when recording
    /// with a [`Recorder`](crate::Recorder), invoke with [`Op::read`] and pass the observed value
    /// on completion.
    Read(Option<Value>),
    /// Remove the key.
    Delete,
}

impl Op {
    /// A write of `value`.
    pub fn write(value: impl Into<Value>) -> Op {
        Op::Write(value.into())
    }

    /// A read whose observed value is not known yet.
    pub fn read() -> Op {
        Op::Read(None)
    }

    /// A read that observed `value` (`None`: the key was absent).
    pub fn read_of(value: Option<impl Into<Value>>) -> Op {
        Op::Read(value.map(Into::into))
    }

    /// Whether this is a read.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Read(_))
    }
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The operation took effect (a read returned its value).
    Ok,
    /// The operation definitely did not take effect; the checker ignores it.
    Fail,
    /// The client cannot tell (timeout, connection reset). A write or delete may take effect at
    /// any time after its invocation, even after the end of the history; a read is ignored.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        })
    }
}
