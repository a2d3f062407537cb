//! Record histories of a key-value store and check them for linearizability.
//!
//! # Recording
//!
//! A test driver shares one [`Recorder`] between its clients. Each client calls
//! [`Recorder::invoke`] just before sending a request and [`Recorder::complete`] (or
//! [`Recorder::complete_read`]) as soon as the answer arrives, with an [`Outcome`]:
//!
//! - [`Outcome::Ok`]: the operation took effect (a read returned a value);
//! - [`Outcome::Fail`]: it definitely did not take effect (refused before it was proposed): the
//!   checker ignores it;
//! - [`Outcome::Unknown`]: the client cannot tell (timeout, reset). A write or delete may take
//!   effect at any time after its invocation, even after the end of the run, so its completion is
//!   treated as +infinity; a read tells nothing and is ignored. The client may still have that
//!   request in flight, so the driver continues under a fresh [`ClientId`].
//!
//! A compare-and-set ([`Op::Cas`]) is the exception to "failed means ignored": its
//! [`Outcome::Fail`] says the comparison failed, which observed the key (it did not hold the
//! expected value); record a compare-and-set refused for another reason as
//! [`Outcome::Unknown`].
//!
//! Times come from one monotonic clock (the recorder's), never from the nodes. Give every write
//! a unique [`Value`]. After the faults heal, read every key once more and record those reads: a
//! write that was acknowledged and then lost makes those final reads impossible.
//!
//! # Checking one key at a time
//!
//! Every operation touches a single key, and a key-value store is the composition of
//! independent registers, one per key. Linearizability is *local* (Herlihy and Wing, 1990): a
//! history is linearizable if and only if, for every object, its restriction to that object
//! is linearizable. So [`check_all`] splits the history by key and checks each key separately
//! (in parallel, up to [`MAX_THREADS`] threads), which turns one search over all operations
//! into several much smaller ones. This does not hold for multi-key operations (batches,
//! listings): record only single-key operations.
//!
//! # The search
//!
//! Each key is a register that starts absent (a compare-and-set register: reads, writes,
//! deletes, and compare-and-sets that either set a new value where the register held the
//! expected one or, failing, observed that it did not). The checker runs the algorithm of Wing and Gong
//! with the memoization of Lowe ("Testing for linearizability", 2017): calls and returns are
//! events in a linked list ordered by time. Walking from the front, the search tries to
//! linearize the operation of each call it meets: the operation must be legal in the current
//! register state (a read must observe the current value), and the pair (set of operations
//! linearized so far, resulting state) must not have been explored before — two paths that
//! linearized the same operations into the same state have the same future, so the cache
//! prunes all but one. A linearized operation leaves the list and the walk restarts. Meeting a
//! return means its operation should already have been linearized: backtrack. An empty list is
//! a linearization; backtracking past the first choice proves there is none.
//!
//! The search is exponential in the worst case (many mutually concurrent operations), so every
//! check takes a [`Budget`] (steps and wall-clock time) and may end
//! [`Verdict::Undetermined`]. Before searching, operations that cannot matter are dropped
//! (failed ones, reads with unknown outcome, unknown writes nobody could have observed), and
//! the open-ended interval of each remaining unknown write is narrowed to where it can still
//! be observed: a unique write must take effect before the first read of its value returns.
//! One more reduction keeps concurrent reads cheap: a legal read the search can reach is
//! linearized at once without trying alternatives (it changes no state, and everything that
//! must precede it already has).
//!
//! # Minimal histories
//!
//! A violation is shrunk greedily, within the budget once more: chunks of operations, then
//! single ones, are removed while what remains is still not linearizable. Only *closed*
//! sub-histories are tried (a kept read keeps every write of the value it observed), because a
//! linearization of the whole history restricted to a closed sub-history is still a
//! linearization: a closed sub-history that is not linearizable is a genuine witness.
//!
//! ```
//! use std::time::Duration;
//! use flotilla_check::{check_all, Budget, History, Op, Outcome};
//!
//! let ms = Duration::from_millis;
//! let mut h = History::new();
//! h.record(1, "k", Op::write(1u64), ms(0), ms(10), Outcome::Ok);
//! h.record(2, "k", Op::read_of(Some(1u64)), ms(5), ms(6), Outcome::Ok);
//! h.record(2, "k", Op::read_of(None::<u64>), ms(20), ms(30), Outcome::Ok); // stale
//! let report = check_all(&h, Budget::default());
//! assert!(!report.is_linearizable());
//! println!("{report}");
//! ```

#![deny(missing_docs)]

mod bound;
mod budget;
mod entry;
mod history;
mod key_check;
mod op;
mod prepare;
mod recorder;
mod report;
mod shrink;
mod verdict;
mod wgl;

pub use budget::Budget;
pub use entry::Entry;
pub use history::History;
pub use key_check::{check_key, KeyReport};
pub use op::{ClientId, Key, Op, Outcome, Value};
pub use recorder::{RecordError, Recorder, Ticket};
pub use report::{check_all, Counts, Report, MAX_THREADS};
pub use verdict::Verdict;
