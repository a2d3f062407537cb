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
    /// Compare-and-set: set the key to `new` if it holds `expected` (`None`: if it is absent),
    /// else leave it as it is. Its outcome says which happened: [`Outcome::Ok`], it held
    /// `expected` and now holds `new`; [`Outcome::Fail`], the comparison failed: at some instant
    /// between invocation and completion the key did not hold `expected`, and nothing changed;
    /// [`Outcome::Unknown`], either may have happened, at any time after the invocation.
    ///
    /// So, unlike other operations, a failed compare-and-set is not ignored: it observed the
    /// key. One refused for another reason (before it was proposed) observed nothing: record it
    /// as [`Outcome::Unknown`], which also allows that it never takes effect.
    Cas {
        /// The value the key must hold for the write to happen (`None`: absent).
        expected: Option<Value>,
        /// The value written if it does.
        new: Value,
    },
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

    /// A compare-and-set of `expected` (`None`: absent) to `new`.
    pub fn cas(expected: Option<impl Into<Value>>, new: impl Into<Value>) -> Op {
        Op::Cas { expected: expected.map(Into::into), new: new.into() }
    }

    /// A create-only write: a compare-and-set from absent to `new`.
    pub fn create(new: impl Into<Value>) -> Op {
        Op::Cas { expected: None, new: new.into() }
    }

    /// Whether this is a read.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Read(_))
    }

    /// Whether this is a compare-and-set.
    pub fn is_cas(&self) -> bool {
        matches!(self, Op::Cas { .. })
    }
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The operation took effect (a read returned its value).
    Ok,
    /// The operation definitely did not take effect; the checker ignores it, except a
    /// compare-and-set, for which it means the comparison failed (see [`Op::Cas`]).
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
