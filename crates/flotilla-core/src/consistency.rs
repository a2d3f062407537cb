//! Read consistency levels.

use serde::{Deserialize, Serialize};

/// How fresh a read must be.
///
/// ```
/// use flotilla_core::Consistency;
///
/// assert_eq!(Consistency::default(), Consistency::Linearizable);
/// assert_eq!("stale".parse::<Consistency>(), Ok(Consistency::Stale)); // as in `?consistency=stale`
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Read the local replica as it is: fastest, may lag the leader.
    Stale,
    /// Read a state at least as new as every write acknowledged before the read began, from
    /// any node: the leader confirms its leadership (ReadIndex) and the local replica waits
    /// until it has applied that index.
    #[default]
    Linearizable,
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stale" => Ok(Consistency::Stale),
            "linearizable" => Ok(Consistency::Linearizable),
            other => Err(format!("unknown consistency {other:?}; use stale or linearizable")),
        }
    }
}
