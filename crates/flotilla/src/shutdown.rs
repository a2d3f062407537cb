//! Graceful shutdown of a node's Raft groups, bounded whatever the number of namespaces.
//!
//! A node that leaves hands leadership of each group it leads to another voter, so the group
//! does not wait an election timeout for a new leader. Hand-offs used to run one namespace
//! after another, each waiting up to a full request timeout: with many namespaces, or when the
//! whole cluster stops at once (the targets are stopping too), SIGTERM took minutes. Now:
//! - every hand-off runs at once (at most [`CONCURRENCY`] at a time) under ONE deadline for
//!   all of them ([`HANDOFF_BUDGET`]);
//! - a group hands off only to a voter that answered recently and has the log nearly up to
//!   the leader's; with none, it does not try;
//! - a hand-off stops waiting when its target goes silent (it is stopping too): no
//!   acknowledgement while this node leads; once it stepped down, no new leader after one
//!   election timeout with nothing heard from the target, or after three in any case;
//! - then every group stops at once, and the caller flushes the store.
//!
//! A hand-off that does not finish in time costs the group one election, nothing more.

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::types::NodeId;
use futures::stream::{self, StreamExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::group::Group;
use crate::liveness::Liveness;

/// Longest a graceful shutdown waits for leadership hand-offs, all namespaces together.
pub const HANDOFF_BUDGET: Duration = Duration::from_secs(3);
/// Hand-offs (and group stops) in flight at once. A hand-off is one message and a wait, so
/// many can run together: at 64, a node leading 500 namespaces on a saturated machine ran out
/// of its budget with most hand-offs not even started.
const CONCURRENCY: usize = 256;
/// Election timeouts a stepped-down leader waits for its target to win while the target is
/// still heard (one when it is not).
const STEPPED_DOWN_PATIENCE: u32 = 3;
/// How often a hand-off checks whether leadership moved or its target went silent.
const POLL: Duration = Duration::from_millis(20);

/// What a graceful shutdown did with the leaderships the node held ([`crate::Node::close`]).
///
/// ```no_run
/// # async fn example(node: flotilla::RunningNode) {
/// let report = node.shutdown().await;
/// assert_eq!(report.led, report.moved + report.no_target + report.unfinished);
/// println!("{} namespaces left to an election", report.no_target + report.unfinished);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandOffReport {
    /// Namespaces this node led when the shutdown began.
    pub led: usize,
    /// Handed off: another voter led before the deadline.
    pub moved: usize,
    /// Not tried: no other voter answered recently with a log nearly as long.
    pub no_target: usize,
    /// Tried, unfinished at the deadline or when the target went silent: left to an election.
    pub unfinished: usize,
    /// Time the hand-offs took together.
    pub elapsed: Duration,
}

/// How a group's hand-off ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandOff {
    /// Another voter leads now.
    Moved,
    /// No other voter answered recently with a log nearly as long: not tried.
    NoTarget,
    /// Tried, but leadership had not moved when the target went silent or time ran out.
    Unfinished,
}

/// Hand leadership of every group in `groups` that `me` leads to another voter, all at once,
/// giving up at `deadline`. A voter counts as reachable if it acknowledged the leader within
/// `silence`, or, for a quiesced group (which has no acknowledgements by design), if the
/// node-level liveness probe heard from it within `silence`.
pub(crate) async fn hand_off_all(
    groups: &[Arc<Group>],
    me: NodeId,
    silence: Duration,
    deadline: Instant,
    liveness: &Liveness,
) -> HandOffReport {
    let led: Vec<Arc<Group>> = groups.iter().filter(|g| g.is_leader()).cloned().collect();
    if led.is_empty() {
        return HandOffReport::default();
    }
    let (started, count_led) = (Instant::now(), led.len());
    let outcomes: Vec<HandOff> = stream::iter(led)
        .map(|group: Arc<Group>| async move { hand_off(&group, me, silence, deadline, liveness).await })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let count = |o: HandOff| outcomes.iter().filter(|x| **x == o).count();
    let report = HandOffReport {
        led: count_led,
        moved: count(HandOff::Moved),
        no_target: count(HandOff::NoTarget),
        unfinished: count(HandOff::Unfinished),
        elapsed: started.elapsed(),
    };
    info!(
        led = report.led,
        moved = report.moved,
        no_target = report.no_target,
        unfinished = report.unfinished,
        elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
        "leadership hand-offs done"
    );
    let left = report.no_target + report.unfinished;
    if left > 0 {
        info!(namespaces = left, "left to elections among the other voters (an election timeout each)");
    }
    report
}

/// Longest a shutdown waits, after the groups stopped, for their state machine workers to
/// drain what they had queued before the store closes.
pub(crate) const DRAIN_BUDGET: Duration = Duration::from_secs(5);

/// Stop every group in `groups`, at most [`CONCURRENCY`] at a time.
pub(crate) async fn stop_all(groups: &[Arc<Group>]) {
    stream::iter(groups.to_vec())
        .map(|group: Arc<Group>| async move {
            if let Err(e) = group.raft.shutdown().await {
                warn!(namespace = %group.namespace, error = %e, "raft shutdown failed");
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

/// Hand leadership of `group` off, if `me` still leads it and a voter can take it.
async fn hand_off(group: &Group, me: NodeId, silence: Duration, deadline: Instant, liveness: &Liveness) -> HandOff {
    let Some(target) = successor(group, me, silence, liveness) else {
        debug!(namespace = %group.namespace, "no other voter reachable and caught up: leaving without a hand-off");
        return HandOff::NoTarget;
    };
    debug!(namespace = %group.namespace, peer = %target, "handing leadership off before shutdown");
    if let Err(e) = group.hand_leadership_to(target).await {
        debug!(namespace = %group.namespace, peer = %target, error = %e, "leadership hand-off failed");
        return HandOff::Unfinished;
    }
    // Wait until another voter leads (this node's vote may be needed for that), the target
    // goes silent, or time runs out. openraft sends the transfer request once, with the
    // minimum election timeout as its deadline: on a saturated node (hundreds of hand-offs at
    // once) it can time out, and the hand-off would wait for nothing. So while this node
    // still leads, the request is sent again every `silence`.
    let mut stepped_down: Option<Instant> = None;
    let mut sent = Instant::now();
    loop {
        let m = group.metrics();
        if m.current_leader.is_some() && m.current_leader != Some(me) {
            return HandOff::Moved;
        }
        if m.state == openraft::ServerState::Leader && sent.elapsed() >= silence {
            sent = Instant::now();
            let _ = group.hand_leadership_to(target).await;
        }
        // Only a leader tracks acknowledgements. Once stepped down, give the target one
        // election timeout to win, and up to [`STEPPED_DOWN_PATIENCE`] of them while the
        // node-level liveness probe still hears it: on a saturated node, with many hand-offs
        // at once, an election can take longer than one timeout. Not longer: a target that is
        // stopping too is heard until it stops, and waiting for it would only delay a whole
        // cluster's shutdown.
        let silent = match m.heartbeat {
            Some(_) => !crate::handoff_targets::answered_within(group, target, silence, liveness),
            None => {
                let waited = stepped_down.get_or_insert_with(Instant::now).elapsed();
                waited > silence * STEPPED_DOWN_PATIENCE
                    || (waited > silence && !liveness.heard_within(&target, silence))
            }
        };
        if silent || Instant::now() + POLL > deadline {
            debug!(namespace = %group.namespace, peer = %target, silent, "leadership did not move before shutdown");
            return HandOff::Unfinished;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The voter (other than `me`) to hand `group` to: among the ready ones
/// ([`crate::handoff_targets::ready_voters`]), the one with the longest log.
fn successor(group: &Group, me: NodeId, silence: Duration, liveness: &Liveness) -> Option<NodeId> {
    let ready = crate::handoff_targets::ready_voters(group, me, silence, liveness);
    ready.into_iter().max_by_key(|(_, matched)| *matched).map(|(v, _)| v)
}
