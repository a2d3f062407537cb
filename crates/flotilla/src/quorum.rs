//! A leader cut off from its followers refuses at once instead of holding clients.
//!
//! openraft keeps a leader in office until its quorum-loss probe (two election timeouts) and
//! lets its reads and writes wait for acknowledgements that cannot come. Once a quorum of
//! voters has not acknowledged the leader for one election timeout, the followers are
//! electing someone else, so the leader answers [`ApiError::LostQuorum`]: new calls after one
//! more heartbeat round (which settles a partition that has just healed: the leader hears it
//! was deposed, or is acknowledged again), calls in flight as soon as it notices. Clients then
//! try another node.

use std::time::Duration;

use flotilla_core::ApiError;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::async_runtime::Instant as _;
use openraft::{RaftMetrics, ServerState};

use flotilla_core::types::NodeId;
use flotilla_core::{Timing, TypeConfig};

use crate::group::Group;

/// The quorum-contact check of one node: who it is and its timing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quorum {
    me: NodeId,
    /// The maximal election timeout: silence longer than this means the followers elect.
    election_max: Duration,
    /// The heartbeat interval.
    heartbeat: Duration,
}

impl Quorum {
    /// The check of node `me` with `timing`.
    pub(crate) fn new(me: NodeId, timing: Timing) -> Self {
        Self {
            me,
            election_max: Duration::from_millis(timing.election_max_ms),
            heartbeat: Duration::from_millis(timing.heartbeat_ms),
        }
    }

    /// Fail with [`ApiError::LostQuorum`] when this node leads `group` but a quorum of voters
    /// has not acknowledged it for longer than the election timeout, even after one more
    /// heartbeat round.
    pub(crate) async fn confirm_contact(&self, group: &Group) -> Result<(), ApiError> {
        if self.current_silence(group).is_none() {
            return Ok(());
        }
        // Silent for long: cut off, or a partition that just healed. One heartbeat round tells
        // (acknowledged again, or deposed by a higher term).
        if group.raft.trigger().heartbeat().await.is_ok() {
            let grace = (self.heartbeat * 4).max(Duration::from_millis(100));
            let _ = group
                .raft
                .wait(Some(grace))
                .metrics(|m| self.quorum_silence(m).is_none(), "leader acknowledged again or deposed")
                .await;
        }
        self.check_quorum_contact(group)
    }

    /// Resolve once this node, leading `group`, has lost contact with a quorum (see
    /// [`Quorum::confirm_contact`]); pending otherwise. Races a call in flight.
    pub(crate) async fn lost(&self, group: &Group) -> ApiError {
        let every = self.heartbeat.max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            if let Err(lost) = self.check_quorum_contact(group) {
                return lost;
            }
        }
    }

    /// [`ApiError::LostQuorum`] if this node leads `group` and a quorum has been silent too long.
    fn check_quorum_contact(&self, group: &Group) -> Result<(), ApiError> {
        let Some(silent) = self.current_silence(group) else {
            return Ok(());
        };
        let silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(namespace = %group.namespace, silent_ms, "leader lost contact with a quorum: refusing");
        Err(ApiError::LostQuorum { leader: self.me, silent_ms })
    }

    /// [`Quorum::quorum_silence`] of the group's current metrics, read in place: this runs on
    /// every read and write, and cloning the metrics would copy the membership and the
    /// replication map each time.
    fn current_silence(&self, group: &Group) -> Option<Duration> {
        let metrics = group.raft.metrics();
        let m = metrics.borrow_watched();
        self.quorum_silence(&m)
    }

    /// How long a quorum has not acknowledged this node, when it leads and that is longer
    /// than one (maximal) election timeout, after which its followers stand for election.
    fn quorum_silence(&self, m: &RaftMetrics<TypeConfig>) -> Option<Duration> {
        if m.state != ServerState::Leader {
            return None;
        }
        // A single voter is its own quorum; before the first acknowledgement openraft itself
        // decides (a leader just elected has just heard from a quorum).
        if is_own_quorum(m) {
            return None;
        }
        let silent = m.last_quorum_acked.as_ref()?.elapsed();
        (silent > self.election_max).then_some(silent)
    }
}

/// Whether the node `m` describes is the only voter of its group, and so its own quorum.
/// openraft records no quorum acknowledgement for such a leader (only a follower's answer
/// does), so nothing may wait for one.
pub(crate) fn is_own_quorum(m: &RaftMetrics<TypeConfig>) -> bool {
    m.membership_config.voter_ids().all(|v| v == m.id)
}
