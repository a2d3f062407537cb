//! Which voters may take over leadership of a group this node leads: the one rule shared by
//! the shutdown hand-off (`shutdown.rs`) and leader balancing (`formation/balance_loop.rs`).

use std::time::Duration;

use flotilla_core::types::NodeId;
use openraft::Instant as _;

use crate::group::Group;
use crate::liveness::Liveness;

/// How far behind the leader's log a voter may be and still take leadership at once.
const CAUGHT_UP_ENTRIES: u64 = 256;

/// The voters of `group` other than `me` that answered within `silence`, are not declared
/// down (a node that said goodbye is, at once: its last acknowledgements are still recent), and
/// whose log is within [`CAUGHT_UP_ENTRIES`] of the leader's, with the index each has matched. A
/// transfer to any other voter would wait for it to catch up, or for a node that may be gone.
pub(crate) fn ready_voters(group: &Group, me: NodeId, silence: Duration, liveness: &Liveness) -> Vec<(NodeId, u64)> {
    let m = group.metrics();
    let last = m.last_log_index.unwrap_or(0);
    let matched = |id: &NodeId| m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index);
    m.membership_config
        .voter_ids()
        .filter(|v| *v != me && !liveness.is_down(v) && answered_within(group, *v, silence, liveness))
        .filter_map(|v| matched(&v).filter(|i| i + CAUGHT_UP_ENTRIES >= last).map(|i| (v, i)))
        .collect()
}

/// Whether `peer` acknowledged this leader of `group` within `silence`, or the node-level
/// liveness probe heard from it within `silence`. A quiesced group has no heartbeat
/// acknowledgements by design; and on a saturated node (a thousand groups waking at once)
/// acknowledgements of an awake group come late while the peer itself is plainly alive.
pub(crate) fn answered_within(group: &Group, peer: NodeId, silence: Duration, liveness: &Liveness) -> bool {
    use openraft::async_runtime::watch::WatchReceiver;
    let last_ack =
        group.raft.metrics().borrow_watched().heartbeat.as_ref().and_then(|h| h.get(&peer).cloned().flatten());
    last_ack.is_some_and(|at| at.elapsed() <= silence) || liveness.heard_within(&peer, silence)
}
