//! How much work a check may do.

use std::time::{Duration, Instant};

/// Limits on the search for one key. Checking a key may take up to the budget once for the
/// verdict and, when it finds a violation, once more for shrinking it to a minimal history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most search steps (one step tries one operation or backtracks once).
    pub max_steps: u64,
    /// Longest wall-clock time.
    pub max_time: Duration,
}

impl Default for Budget {
    /// Ten million steps or ten seconds, whichever comes first.
    fn default() -> Self {
        Self { max_steps: 10_000_000, max_time: Duration::from_secs(10) }
    }
}

impl Budget {
    /// At most `max_steps` steps (and the default time limit).
    pub fn steps(max_steps: u64) -> Self {
        Self { max_steps, ..Self::default() }
    }

    /// At most `max_time` (and the default step limit).
    pub fn time(max_time: Duration) -> Self {
        Self { max_time, ..Self::default() }
    }

    pub(crate) fn meter(&self) -> Meter {
        Meter {
            steps: 0,
            max_steps: self.max_steps,
            deadline: Instant::now().checked_add(self.max_time),
            max_time: self.max_time,
        }
    }
}

/// Why a search stopped before reaching a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exhausted(pub String);

/// Counts the steps of one or more searches against a [`Budget`].
#[derive(Debug)]
pub(crate) struct Meter {
    pub steps: u64,
    max_steps: u64,
    deadline: Option<Instant>,
    max_time: Duration,
}

impl Meter {
    /// Account for one step.
    #[inline]
    pub fn tick(&mut self) -> Result<(), Exhausted> {
        self.steps += 1;
        if self.steps > self.max_steps {
            return Err(Exhausted(format!("step budget of {} exhausted", self.max_steps)));
        }
        // Reading the clock costs more than a step: look at it now and then.
        if self.steps & 1023 == 0 {
            if let Some(deadline) = self.deadline {
                if Instant::now() >= deadline {
                    return Err(Exhausted(format!("time budget of {:?} exhausted", self.max_time)));
                }
            }
        }
        Ok(())
    }
}
