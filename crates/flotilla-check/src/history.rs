//! A recorded history of operations on many keys.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::entry::Entry;
use crate::op::{ClientId, Key, Op, Outcome};

/// The operations of a test run, in any order. Build one by hand with [`History::push`] /
/// [`History::record`], or concurrently with a [`Recorder`](crate::Recorder).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    entries: Vec<Entry>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// A history of these entries.
    pub fn from_entries(entries: Vec<Entry>) -> Self {
        Self { entries }
    }

    /// Add one entry.
    pub fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// Add a completed operation from `invoked` to `completed`.
    pub fn record(
        &mut self,
        client: ClientId,
        key: impl Into<Key>,
        op: Op,
        invoked: Duration,
        completed: Duration,
        outcome: Outcome,
    ) -> &mut Self {
        self.push(Entry { client, key: key.into(), op, invoked, completed: Some(completed), outcome });
        self
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The distinct keys, sorted.
    pub fn keys(&self) -> Vec<Key> {
        let keys: BTreeSet<&Key> = self.entries.iter().map(|e| &e.key).collect();
        keys.into_iter().cloned().collect()
    }

    /// The entries of one key, as a history of their own.
    pub fn for_key(&self, key: &str) -> History {
        History { entries: self.entries.iter().filter(|e| e.key == key).cloned().collect() }
    }
}

impl fmt::Display for History {
    /// One line per entry, ordered by invocation time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted: Vec<&Entry> = self.entries.iter().collect();
        sorted.sort_by_key(|e| (e.invoked, e.client));
        for e in sorted {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}
