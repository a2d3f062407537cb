//! A leader cut off from its followers refuses at once instead of holding clients.
//!
//! openraft keeps a leader in office until its quorum-loss probe (two election timeouts) and
//! lets its reads and writes wait for acknowledgements that cannot come. Once a quorum of
//! voters has not acknowledged the leader for one election timeout, the followers are
//! electing someone else, so the leader answers [`ApiError::LostQuorum`]: new calls at once,
//! calls in flight as soon as it notices. Clients then try another node.

use std::time::Duration;

use flotilla_core::ApiError;
use openraft::async_runtime::Instant as _;
use openraft::ServerState;

use crate::group::Group;
use crate::node::Node;

impl Node {
    /// Fail with [`ApiError::LostQuorum`] when this node leads `group` but a quorum of voters
    /// has not acknowledged it for longer than the election timeout.
    pub(crate) fn confirm_quorum_contact(&self, group: &Group) -> Result<(), ApiError> {
        let m = group.metrics();
        if m.state != ServerState::Leader {
            return Ok(());
        }
        // A single voter is its own quorum; before the first acknowledgement openraft itself
        // decides (a leader just elected has just heard from a quorum).
        if m.membership_config.voter_ids().all(|v| v == self.id) {
            return Ok(());
        }
        let Some(acked) = m.last_quorum_acked.as_ref() else {
            return Ok(());
        };
        let silent = acked.elapsed();
        if silent <= self.quorum_silence_limit() {
            return Ok(());
        }
        let silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(namespace = %group.namespace, silent_ms, "leader lost contact with a quorum: refusing");
        Err(ApiError::LostQuorum { leader: self.id, silent_ms })
    }

    /// Resolve once this node, leading `group`, has lost contact with a quorum (see
    /// [`Node::confirm_quorum_contact`]); pending otherwise. Races a call in flight.
    pub(crate) async fn quorum_lost(&self, group: &Group) -> ApiError {
        let every = Duration::from_millis(self.config.timing().heartbeat_ms.max(10));
        loop {
            tokio::time::sleep(every).await;
            if let Err(lost) = self.confirm_quorum_contact(group) {
                return lost;
            }
        }
    }

    /// How long a leader may go without a quorum's acknowledgement: one (maximal) election
    /// timeout, after which its followers stand for election.
    fn quorum_silence_limit(&self) -> Duration {
        Duration::from_millis(self.config.timing().election_max_ms)
    }
}
