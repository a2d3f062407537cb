//! Leadership transfers that do not finish: the leader asks again, of another voter.
//!
//! Once a leader asks openraft to transfer its leadership (`transfer_leader`), it stops
//! sending heartbeats and refuses writes until another voter leads, and openraft never lifts
//! that by itself (openraft 0.10: the leader's `transfer_to` lasts as long as its term). When
//! the target never takes over (it stopped or closed the namespace right then, or the request
//! was lost), the group kept a leader that neither heartbeats nor writes: its followers, quiet
//! or refused a pre-vote by that same leader (`crate::liveness::refuses_pre_vote`), never
//! elected another, and the namespace refused every write for good (a node leaving right after
//! leader balancing picked it as a target).
//!
//! So every transfer this node asks for is recorded ([`Group::hand_leadership_to`]), and one
//! node-level loop looks at them: a group this node still leads [`RETRY_AFTER`] election
//! timeouts after asking hands off again, to the voter that answered recently with the longest
//! log, another one than the last target when there is one ([`step`], a pure decision).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_core::types::NodeId;
use tokio::time::Instant;
use tracing::info;

use crate::group::Group;
use crate::node::Node;

/// Election timeouts (the maximum) after which an unfinished transfer is asked again.
pub(crate) const RETRY_AFTER: u32 = 2;

/// A transfer this node asked for: to whom, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked {
    pub(crate) to: NodeId,
    pub(crate) at: Instant,
}

/// The transfer a group's leader asked for last, if it is still pending.
#[derive(Debug, Default)]
pub(crate) struct PendingTransfer(Mutex<Option<Asked>>);

impl PendingTransfer {
    fn get(&self) -> Option<Asked> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, asked: Option<Asked>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = asked;
    }
}

impl Group {
    /// Ask openraft to hand this group's leadership to `to`, and record it so that a
    /// transfer that does not finish is asked again (see the module documentation).
    pub(crate) async fn hand_leadership_to(
        &self,
        to: NodeId,
    ) -> Result<(), openraft::error::Fatal<flotilla_core::TypeConfig>> {
        self.transfer.set(Some(Asked { to, at: Instant::now() }));
        self.raft.trigger().transfer_leader(to).await
    }
}

/// What to do about a group's recorded transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing: no transfer pending, or it is young.
    Wait,
    /// This node leads no more (the transfer or an election moved leadership): forget it.
    Forget,
    /// Still leading long after asking: ask `to` now.
    Retry { to: NodeId },
}

/// The step for a group whose leader asked for `asked`, given whether this node still
/// `leads` it, `now`, the `bound` after which a transfer counts as stuck, and the candidate
/// targets (voters other than this node, `(id, matched index, answered recently)`).
pub(crate) fn step(
    asked: Option<Asked>,
    leads: bool,
    now: Instant,
    bound: Duration,
    candidates: &[(NodeId, u64, bool)],
) -> Step {
    let Some(asked) = asked else { return Step::Wait };
    if !leads {
        return Step::Forget;
    }
    if now.saturating_duration_since(asked.at) < bound {
        return Step::Wait;
    }
    // Another voter than the one that did not take over, if one exists: answering first,
    // then the longest log. The same target again only when it is the only other voter.
    let best = candidates
        .iter()
        .filter(|(id, _, _)| *id != asked.to)
        .max_by_key(|(id, matched, answered)| (*answered, *matched, *id))
        .map(|(id, _, _)| *id);
    Step::Retry { to: best.unwrap_or(asked.to) }
}

/// Run the node's transfer watch until the node closes.
pub(crate) fn spawn(node: &Arc<Node>) {
    let every = Duration::from_millis((node.config.timing().heartbeat_ms * 4).max(100));
    crate::node_loop::spawn(
        node,
        tracing::info_span!("transfer_watch"),
        every,
        |node| async move { round(&node).await },
    );
}

/// One round over the groups with a recorded transfer.
async fn round(node: &Arc<Node>) {
    let timing = node.config.timing();
    let election_max = Duration::from_millis(timing.election_max_ms);
    let bound = election_max * RETRY_AFTER;
    for group in node.all_groups() {
        let Some(asked) = group.transfer.get() else { continue };
        let leads = group.is_leader();
        let candidates = candidates(&group, node.id, election_max, &node.liveness);
        match step(Some(asked), leads, Instant::now(), bound, &candidates) {
            Step::Wait => {}
            Step::Forget => group.transfer.set(None),
            Step::Retry { to } => {
                info!(namespace = %group.namespace, from = %asked.to, %to, "leadership transfer did not finish: asking again");
                if group.hand_leadership_to(to).await.is_err() {
                    group.transfer.set(None);
                }
            }
        }
    }
}

/// The voters other than `me`, with their matched log index and whether they answered
/// within `silence`.
fn candidates(
    group: &Group,
    me: NodeId,
    silence: Duration,
    liveness: &crate::liveness::Liveness,
) -> Vec<(NodeId, u64, bool)> {
    let m = group.metrics();
    let matched =
        |id: &NodeId| m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map_or(0, |l| l.index);
    m.membership_config
        .voter_ids()
        .filter(|v| *v != me)
        .map(|v| (v, matched(&v), crate::handoff_targets::answered_within(group, v, silence, liveness)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_millis(1_200);

    fn node() -> NodeId {
        libp2p_identity::Keypair::generate_ed25519().public().to_peer_id()
    }

    #[test]
    fn a_stuck_transfer_is_asked_again_of_another_voter_and_a_finished_one_forgotten() {
        let (gone, live, behind) = (node(), node(), node());
        let now = Instant::now();
        let asked = Asked { to: gone, at: now - BOUND };
        let young = Asked { to: gone, at: now };
        let voters = [(gone, 10, true), (live, 9, true), (behind, 10, false)];
        assert_eq!(step(None, true, now, BOUND, &voters), Step::Wait, "nothing asked");
        assert_eq!(step(Some(young), true, now, BOUND, &voters), Step::Wait, "give it time");
        assert_eq!(step(Some(asked), false, now, BOUND, &voters), Step::Forget, "leadership moved");
        assert_eq!(step(Some(young), false, now, BOUND, &voters), Step::Forget);
        // Answering beats a longer log; the target that did not take over comes last.
        assert_eq!(step(Some(asked), true, now, BOUND, &voters), Step::Retry { to: live });
        let silent = [(gone, 10, true), (behind, 10, false)];
        assert_eq!(step(Some(asked), true, now, BOUND, &silent), Step::Retry { to: behind });
        assert_eq!(step(Some(asked), true, now, BOUND, &[(gone, 10, false)]), Step::Retry { to: gone });
    }
}
