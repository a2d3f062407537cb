//! Quiescing idle groups: an idle namespace costs almost nothing.
//!
//! openraft ticks every group every `heartbeat * 13 / 64` (10 ms with the local preset), and a
//! leader sends a heartbeat to each follower every heartbeat interval: per group and node, a
//! hundred timer wake-ups and tens of RPCs a second, idle or not. A group that has seen no
//! activity stops its ticker (`runtime_config().tick(false)`): no heartbeats, no election
//! timer. Followers quiesce first, after two election timeouts (at most
//! `Config::quiesce_after`): the node-level liveness probe watches their leader instead. The
//! leader only after every follower has acknowledged it recently and holds its whole log, two
//! election timeouts after its followers, so an awake follower never times out on a leader that
//! went quiet on purpose: after `Config::quiesce_after` if it served clients (a namespace with
//! intermittent clients then does not pay for waking each time), else right after its
//! followers (a namespace just formed and not used yet). A fresh group, without Raft state,
//! starts with its ticker off (`Group::start`).
//!
//! Waking (see `DESIGN-namespaces.md`):
//! - a command the leader executes (write, read index, membership, transfer) wakes it and
//!   first waits for a heartbeat round a quorum acknowledges ([`Group::wake_leader`]; a single
//!   voter is its own quorum and does not wait): a leader
//!   quiet for longer than its lease would otherwise be refused by openraft (`LeaseExpired`) and
//!   by `crate::quorum` (`lost_quorum`); a blank entry does not help, openraft refuses it too;
//! - a Raft message other than a heartbeat (entries, votes, transfer, snapshot) wakes the
//!   receiver after it is handled, so a follower's election timer restarts from a fresh lease;
//! - the node-level liveness probe (`crate::liveness`) wakes the quiesced groups a peer led
//!   when it stops answering (their followers then elect at once), and the groups this node
//!   leads with a peer that comes back (until it is caught up); it also refuses pre-votes
//!   against a quiet leader that is alive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::wire::log_index;
use flotilla_core::TypeConfig;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::async_runtime::Instant as _;
use openraft::{RaftMetrics, ServerState};
use tokio::time::Instant;
use tracing::{debug, Instrument};

use crate::group::Group;
use crate::node::Node;

/// Whether a group is quiesced, and when it was last active.
///
/// The flag and the group's ticker change together, under `switch`: changed apart, a quiesce
/// and a wake racing on two threads could leave the flag saying "awake" with the ticker off
/// (quiesce sets the flag, wake clears it and starts the ticker, quiesce stops the ticker).
/// Nothing wakes such a group again, and a leader in that state sends no heartbeats: its
/// quorum acknowledgement ages, and every write is refused for good (seen after a node left
/// while leading a hundred namespaces on a saturated machine).
#[derive(Debug)]
pub struct Quiet {
    quiesced: AtomicBool,
    /// Held while the flag and the ticker change.
    switch: Mutex<()>,
    /// Whether the group, as leader, executed a client write or read since it started.
    used: AtomicBool,
    last_active: Mutex<Instant>,
    /// When the group last woke from quiescence.
    woke_at: Mutex<Option<Instant>>,
}

impl Default for Quiet {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Quiet {
    /// The state of a group whose ticker is stopped (`quiesced`) or running.
    pub(crate) fn new(quiesced: bool) -> Self {
        Self {
            quiesced: AtomicBool::new(quiesced),
            switch: Mutex::new(()),
            used: AtomicBool::new(false),
            last_active: Mutex::new(Instant::now()),
            woke_at: Mutex::new(None),
        }
    }

    /// Whether the group's ticker is stopped.
    pub fn is_quiesced(&self) -> bool {
        self.quiesced.load(Ordering::Acquire)
    }

    /// Record activity now: the group stays awake for another quiet period.
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Record that the group served a client (a write or a read as leader): from now on its
    /// leader keeps the long quiet period, which spares a namespace with intermittent clients
    /// the cost of waking.
    pub(crate) fn mark_used(&self) {
        self.used.store(true, Ordering::Relaxed);
    }

    fn is_used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    fn idle_for(&self) -> Duration {
        self.last_active.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    /// Quiesce if still idle for at least `idle` (activity may have come since the caller
    /// looked), stopping the ticker with `set_tick(false)`. Returns whether it quiesced now.
    fn quiesce_if_idle(&self, idle: Duration, set_tick: impl FnOnce(bool)) -> bool {
        let _switch = self.switch.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_quiesced() || self.idle_for() < idle {
            return false;
        }
        self.quiesced.store(true, Ordering::Release);
        set_tick(false);
        true
    }

    /// Resume if quiesced, starting the ticker with `set_tick(true)`. Returns whether it
    /// resumed now.
    fn resume_with(&self, set_tick: impl FnOnce(bool)) -> bool {
        let _switch = self.switch.lock().unwrap_or_else(|p| p.into_inner());
        if !self.is_quiesced() {
            return false;
        }
        self.quiesced.store(false, Ordering::Release);
        set_tick(true);
        true
    }
}

impl Group {
    /// Whether this group is quiesced (no ticks, heartbeats or election timer).
    pub fn is_quiesced(&self) -> bool {
        self.quiet.is_quiesced()
    }

    /// Stop the group's ticker, unless it was active within the last `idle` (touched since the
    /// caller saw it idle that long).
    fn quiesce(&self, role: &'static str, idle: Duration) {
        if self.quiet.quiesce_if_idle(idle, |on| self.raft.runtime_config().tick(on)) {
            debug!(namespace = %self.namespace, role, "group quiesced");
        }
    }

    /// Restart the group's ticker (if stopped) and count this as activity.
    pub(crate) fn wake(&self, reason: &'static str) {
        self.quiet.touch();
        self.resume(reason);
    }

    /// Restart the group's ticker (if stopped) without counting it as activity: the group
    /// quiesces again as soon as the quiescing rules allow (for a leader woken to bring a
    /// returning member up to date: once that member holds the whole log and answers).
    pub(crate) fn resume(&self, reason: &'static str) {
        if self.quiet.resume_with(|on| self.raft.runtime_config().tick(on)) {
            debug!(namespace = %self.namespace, reason, "group woken");
        }
    }

    /// Wake a group this node leads before it executes a command, and give it back its
    /// lease. A leader quiet for longer than its lease has no recent quorum acknowledgement:
    /// openraft refuses its writes (`LeaseExpired`) and [`crate::quorum`] its commands until a
    /// heartbeat round is acknowledged, and openraft's quorum-loss probe lets heartbeats out
    /// only in every other probe interval of silence. So a leader woken within `patience`
    /// triggers a heartbeat and waits, at most `patience`, until a quorum acknowledges it
    /// (one round trip, or until the probe lets heartbeats out). Cut off from its quorum, it
    /// then refuses as any leader cut off does.
    pub(crate) async fn wake_leader(&self, fresh: Duration, patience: Duration) {
        if self.is_quiesced() {
            *self.quiet.woke_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        self.wake("command");
        let woke_at = *self.quiet.woke_at.lock().unwrap_or_else(|p| p.into_inner());
        let Some(left) = woke_at.and_then(|at| patience.checked_sub(at.elapsed())) else { return };
        // A single voter has no acknowledgement to wait for (`crate::quorum::is_own_quorum`).
        let acked = |m: &RaftMetrics<TypeConfig>| {
            m.state != ServerState::Leader
                || crate::quorum::is_own_quorum(m)
                || m.last_quorum_acked.as_ref().is_some_and(|t| t.elapsed() < fresh)
        };
        if acked(&self.raft.metrics().borrow_watched()) {
            return;
        }
        let _ = self.raft.trigger().heartbeat().await;
        let waited = self.raft.wait(Some(left)).metrics(acked, "leader acknowledged after waking").await;
        debug!(namespace = %self.namespace, acknowledged = waited.is_ok(), "leader woken");
    }
}

/// Timing of quiescence, derived from the configuration.
#[derive(Debug, Clone, Copy)]
struct Periods {
    /// Idle time after which a follower quiesces: short (two election timeouts, at most
    /// `quiesce_after`), since the node-level liveness probe watches its leader instead.
    follower: Duration,
    /// Idle time after which a leader that served clients quiesces: `quiesce_after`, plus two
    /// election timeouts so its followers are quiet first.
    leader: Duration,
    /// Idle time after which a leader that never served a client (a namespace just formed,
    /// or never used) quiesces: the follower period plus two election timeouts.
    unused_leader: Duration,
    /// An acknowledgement older than this means the follower may be gone.
    fresh_ack: Duration,
    /// How often groups are looked at.
    every: Duration,
}

/// Run the node's quiescing loop (one task for all groups) until the node closes.
pub(crate) fn spawn(node: &Arc<Node>) {
    let Some(after) = node.config.quiesce_after() else { return };
    let timing = node.config.timing();
    let election_max = Duration::from_millis(timing.election_max_ms);
    let follower = after.min(election_max * 2);
    let periods = Periods {
        follower,
        leader: after + election_max * 2,
        unused_leader: follower + election_max * 2,
        fresh_ack: election_max,
        every: Duration::from_millis((timing.heartbeat_ms * 4).max(100)),
    };
    let weak = Arc::downgrade(node);
    tokio::spawn(run(weak, periods).instrument(tracing::info_span!("quiesce")));
}

async fn run(weak: Weak<Node>, periods: Periods) {
    loop {
        tokio::time::sleep(periods.every).await;
        let Some(node) = weak.upgrade() else { return };
        if node.is_closing() {
            return;
        }
        for group in node.all_groups() {
            if group.is_quiesced() {
                continue;
            }
            let idle = group.quiet.idle_for();
            if idle < periods.follower {
                continue;
            }
            let used = group.quiet.is_used();
            let role = {
                let m = group.raft.metrics();
                let m = m.borrow_watched();
                let down = |peer: &NodeId| node.liveness.is_down(peer);
                may_quiesce(&m, node.id, idle, used, &periods, &down)
            };
            // Unless it was touched since `idle` was read: then it is not idle any more.
            if let Some(role) = role {
                group.quiesce(role, idle);
            }
        }
    }
}

/// Whether a group idle for `idle` may quiesce, and in which role; `used`: it served a client
/// as leader; `down`: whether the node-level liveness probe declared a peer down.
///
/// A leader quiesces once every follower holds its whole log and acknowledged it recently,
/// except followers declared down, as long as the others make a quorum with it: otherwise
/// every namespace whose member died (all of them, when a node of the cluster dies) would keep
/// heartbeating the dead node until it returns. The returning node wakes them
/// (`crate::liveness`), and a client wakes them for the autopilot to replace the member.
fn may_quiesce(
    m: &RaftMetrics<TypeConfig>,
    me: NodeId,
    idle: Duration,
    used: bool,
    periods: &Periods,
    down: &dyn Fn(&NodeId) -> bool,
) -> Option<&'static str> {
    // A configuration change in flight needs its timers, and a replica that has not applied
    // all it holds still has work.
    let applied_all = m.last_applied.as_ref().map(|l| l.index) == m.last_log_index;
    if m.membership_config != m.committed_membership_config || !applied_all {
        return None;
    }
    match m.state {
        // Only a follower that knows a leader other than itself, and not one declared down: a
        // follower woken because its leader died must keep its election timer until a new
        // leader is elected. Quiet again with the dead leader, it would never be woken again
        // (the probe wakes on the change to down only), and the namespace stayed leaderless.
        ServerState::Follower | ServerState::Learner => {
            m.current_leader.filter(|l| *l != me && !down(l)).map(|_| "follower")
        }
        ServerState::Leader if idle >= if used { periods.leader } else { periods.unused_leader } => {
            let last = m.last_log_index.unwrap_or(0);
            let (replication, heartbeat) = (m.replication.as_ref()?, m.heartbeat.as_ref()?);
            let in_step = |id: &NodeId| {
                *id == me
                    || (replication.get(id).is_some_and(|matched| log_index(matched) == last)
                        && heartbeat.get(id).and_then(Option::as_ref).is_some_and(|t| t.elapsed() < periods.fresh_ack))
            };
            let members: Vec<NodeId> = replication.keys().copied().collect();
            let all_in_step_or_down = members.iter().all(|id| in_step(id) || down(id));
            let voters: Vec<NodeId> = m.membership_config.voter_ids().collect();
            let quorum = voters.iter().filter(|id| in_step(id)).count() * 2 > voters.len();
            (all_in_step_or_down && quorum).then_some("leader")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use flotilla_core::types::LogId;
    use openraft::alias::{InstantOf, SerdeInstantOf};
    use openraft::vote::RaftLeaderIdExt;
    use openraft::RaftTypeConfig;

    use super::*;

    const PERIODS: Periods = Periods {
        follower: Duration::from_millis(1_200),
        leader: Duration::from_millis(13_200),
        unused_leader: Duration::from_millis(2_400),
        fresh_ack: Duration::from_millis(600),
        every: Duration::from_millis(200),
    };

    fn node() -> NodeId {
        libp2p_identity::Keypair::generate_ed25519().public().to_peer_id()
    }

    fn log_id(leader: NodeId, index: u64) -> LogId {
        LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(1, leader), index)
    }

    fn ack(ago: Duration) -> Option<SerdeInstantOf<TypeConfig>> {
        Some(SerdeInstantOf::<TypeConfig>::new(<InstantOf<TypeConfig> as openraft::Instant>::now() - ago))
    }

    /// Metrics of `me` in `state`, having applied everything up to `index`.
    fn metrics(me: NodeId, leader: NodeId, state: ServerState, index: u64) -> RaftMetrics<TypeConfig> {
        let mut m = RaftMetrics::new_initial(me);
        m.state = state;
        m.current_leader = Some(leader);
        m.last_log_index = Some(index);
        m.last_applied = Some(log_id(leader, index));
        m
    }

    /// A leader's metrics with followers at `matched` indexes, acknowledged `ago`.
    fn leader(me: NodeId, followers: &[(NodeId, u64, Duration)]) -> RaftMetrics<TypeConfig> {
        let mut m = metrics(me, me, ServerState::Leader, 10);
        m.replication = Some(followers.iter().map(|(id, i, _)| (*id, Some(log_id(me, *i)))).collect());
        m.heartbeat = Some(followers.iter().map(|(id, _, ago)| (*id, ack(*ago))).collect());
        let voters = std::iter::once(me).chain(followers.iter().map(|(id, _, _)| *id)).collect();
        let membership = openraft::Membership::new_with_defaults(vec![voters], []);
        m.membership_config = Arc::new(openraft::StoredMembership::new(Some(log_id(me, 1)), membership));
        m.committed_membership_config = m.membership_config.clone();
        m
    }

    #[test]
    fn followers_quiesce_once_idle_with_a_leader_and_everything_applied() {
        let (me, other) = (node(), node());
        let idle = PERIODS.follower;
        assert_eq!(
            may_quiesce(&metrics(me, other, ServerState::Follower, 5), me, idle, true, &PERIODS, &|_| false),
            Some("follower")
        );
        assert_eq!(
            may_quiesce(&metrics(me, other, ServerState::Learner, 5), me, idle, true, &PERIODS, &|_| false),
            Some("follower")
        );
        let leader_down = |id: &NodeId| *id == other;
        let follower = metrics(me, other, ServerState::Follower, 5);
        assert_eq!(may_quiesce(&follower, me, idle, true, &PERIODS, &leader_down), None, "its leader is down");
        let mut no_leader = metrics(me, other, ServerState::Follower, 5);
        no_leader.current_leader = None;
        assert_eq!(may_quiesce(&no_leader, me, idle, true, &PERIODS, &|_| false), None);
        let mut behind = metrics(me, other, ServerState::Follower, 5);
        behind.last_log_index = Some(6);
        assert_eq!(may_quiesce(&behind, me, idle, true, &PERIODS, &|_| false), None, "has entries left to apply");
        assert_eq!(
            may_quiesce(&metrics(me, other, ServerState::Candidate, 5), me, idle, true, &PERIODS, &|_| false),
            None
        );
    }

    #[test]
    fn a_leader_quiesces_later_and_only_with_every_follower_caught_up_and_answering() {
        let (me, a, b) = (node(), node(), node());
        let fresh = Duration::from_millis(50);
        let all_in = leader(me, &[(a, 10, fresh), (b, 10, fresh)]);
        assert_eq!(may_quiesce(&all_in, me, PERIODS.follower, true, &PERIODS, &|_| false), None, "followers go first");
        assert_eq!(may_quiesce(&all_in, me, PERIODS.leader, true, &PERIODS, &|_| false), Some("leader"));
        let lagging = leader(me, &[(a, 10, fresh), (b, 9, fresh)]);
        assert_eq!(
            may_quiesce(&lagging, me, PERIODS.leader, true, &PERIODS, &|_| false),
            None,
            "a follower lacks an entry"
        );
        let silent = leader(me, &[(a, 10, fresh), (b, 10, Duration::from_secs(1))]);
        assert_eq!(
            may_quiesce(&silent, me, PERIODS.leader, true, &PERIODS, &|_| false),
            None,
            "a follower stopped answering"
        );
        let mut changing = all_in.clone();
        changing.membership_config = Arc::new(openraft::StoredMembership::new(
            Some(log_id(me, 10)),
            openraft::Membership::new_with_defaults(vec![[me, a, b].into_iter().collect()], []),
        ));
        assert_eq!(
            may_quiesce(&changing, me, PERIODS.leader, true, &PERIODS, &|_| false),
            None,
            "membership change in flight"
        );
    }

    #[test]
    fn a_leader_quiesces_without_a_follower_declared_down_if_the_rest_make_a_quorum() {
        let (me, a, b) = (node(), node(), node());
        let fresh = Duration::from_millis(50);
        let one_dead = leader(me, &[(a, 10, fresh), (b, 3, Duration::from_secs(5))]);
        let idle = PERIODS.leader;
        assert_eq!(may_quiesce(&one_dead, me, idle, true, &PERIODS, &|_| false), None, "b is silent, not down");
        let b_down = |id: &NodeId| *id == b;
        assert_eq!(may_quiesce(&one_dead, me, idle, true, &PERIODS, &b_down), Some("leader"), "b is down");
        let two_dead = leader(me, &[(a, 3, Duration::from_secs(5)), (b, 3, Duration::from_secs(5))]);
        assert_eq!(may_quiesce(&two_dead, me, idle, true, &PERIODS, &|_| true), None, "no quorum left");
    }

    #[test]
    fn a_leader_that_never_served_a_client_quiesces_soon_after_its_followers() {
        let (me, a, b) = (node(), node(), node());
        let fresh = Duration::from_millis(50);
        let mut formed = leader(me, &[(a, 1, fresh), (b, 1, fresh)]);
        formed.last_log_index = Some(1);
        formed.last_applied = Some(log_id(me, 1));
        assert_eq!(may_quiesce(&formed, me, PERIODS.follower, false, &PERIODS, &|_| false), None, "followers go first");
        assert_eq!(may_quiesce(&formed, me, PERIODS.unused_leader, false, &PERIODS, &|_| false), Some("leader"));
        assert_eq!(
            may_quiesce(&formed, me, PERIODS.unused_leader, true, &PERIODS, &|_| false),
            None,
            "a used leader waits"
        );
        let silent = leader(me, &[(a, 10, fresh), (b, 10, Duration::from_secs(1))]);
        assert_eq!(
            may_quiesce(&silent, me, PERIODS.unused_leader, false, &PERIODS, &|_| false),
            None,
            "a follower is silent"
        );
    }

    /// Quiesces and wakes racing on several threads leave the flag and the ticker agreeing.
    /// Changed apart, they disagreed within a few hundred rounds: a group flagged awake with
    /// its ticker off, which nothing wakes again.
    #[test]
    fn racing_quiesces_and_wakes_leave_the_flag_and_the_ticker_agreeing() {
        use std::sync::atomic::AtomicBool;
        let quiet = Arc::new(Quiet::new(false));
        let ticking = Arc::new(AtomicBool::new(true));
        for round in 0..2_000 {
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let (quiet, ticking) = (quiet.clone(), ticking.clone());
                    std::thread::spawn(move || {
                        // A ticker that is slow to switch widens the window a race needs.
                        let set_tick = |on: bool| {
                            std::thread::yield_now();
                            ticking.store(on, Ordering::SeqCst);
                        };
                        if (t + round) % 2 == 0 {
                            quiet.quiesce_if_idle(Duration::ZERO, set_tick);
                        } else {
                            quiet.resume_with(set_tick);
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().expect("no panic");
            }
            assert_eq!(quiet.is_quiesced(), !ticking.load(Ordering::SeqCst), "round {round}");
        }
    }

    #[test]
    fn a_quiesce_gives_way_to_activity_since_the_group_was_seen_idle() {
        let quiet = Quiet::new(false);
        let mut ticks = Vec::new();
        quiet.touch();
        assert!(!quiet.quiesce_if_idle(Duration::from_secs(60), |on| ticks.push(on)), "active just now");
        assert!(quiet.quiesce_if_idle(Duration::ZERO, |on| ticks.push(on)));
        assert!(!quiet.quiesce_if_idle(Duration::ZERO, |on| ticks.push(on)), "already quiesced");
        assert!(quiet.resume_with(|on| ticks.push(on)));
        assert!(!quiet.resume_with(|on| ticks.push(on)), "already awake");
        assert_eq!(ticks, [false, true]);
    }
}
