//! The verdict on one key.

use std::fmt;

use crate::history::History;
use crate::op::Key;

/// What the checker concluded about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, each placed between its invocation and its completion,
    /// explains every read.
    Linearizable,
    /// No such order exists.
    NotLinearizable {
        /// The key.
        key: Key,
        /// A small sub-history of the key that is already not linearizable.
        minimal: History,
        /// Whether shrinking finished (`false`: the budget ran out, `minimal` may shrink more).
        shrunk: bool,
    },
    /// The budget ran out before a verdict.
    Undetermined {
        /// Which budget ran out.
        reason: String,
    },
}

impl Verdict {
    /// Whether this is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// Whether this is [`Verdict::NotLinearizable`].
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::NotLinearizable { .. })
    }

    /// Whether this is [`Verdict::Undetermined`].
    pub fn is_undetermined(&self) -> bool {
        matches!(self, Verdict::Undetermined { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::Undetermined { reason } => write!(f, "undetermined: {reason}"),
            Verdict::NotLinearizable { key, minimal, shrunk } => {
                let how = if *shrunk { "minimal" } else { "partly shrunk (budget ran out)" };
                writeln!(f, "NOT LINEARIZABLE on key {key:?}; {how} history of {} ops:", minimal.len())?;
                for line in minimal.to_string().lines() {
                    writeln!(f, "  {line}")?;
                }
                Ok(())
            }
        }
    }
}
