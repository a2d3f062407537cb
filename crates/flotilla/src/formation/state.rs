//! The formation state of one namespace on this node: the founding state machine, the views
//! peers reported, admission, and what status shows (phase, reason, timeline, splits).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_core::formation::{ClusterId, FreshPhase, PeerPhase, PeerView};
use flotilla_core::types::NodeId;
use flotilla_core::Namespace;
use serde::Serialize;
use tokio::time::Instant;
use tracing::info;

use super::admission;
use super::founding::Founder;
use super::ledger::MembershipLedger;
use super::record::{FoundingRecord, RecordFile};
use super::rejoin::{identity_standing, RecordFacts, Standing};
use super::view::cluster_id;

/// Entries kept in the timeline.
const TIMELINE_LEN: usize = 32;
/// Most peers' views kept per namespace.
pub const MAX_VIEWS: usize = 1024;
/// A view older than this is not used for decisions.
pub const VIEW_FRESHNESS: Duration = Duration::from_secs(3);

/// Where a namespace is in its life on this node.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// use flotilla::FormationPhase;
///
/// match cluster.formation_status().map(|f| f.phase) {
///     Some(FormationPhase::Member) => println!("in a cluster"),
///     Some(phase) => println!("forming: {}", phase.name()),
///     None => println!("no formation state"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormationPhase {
    /// Looking for peers; nothing decided.
    Discovering,
    /// Collecting promises to found a cluster.
    Coordinating,
    /// Promised to another node's founding ballot.
    Bound,
    /// Founded (or about to): waiting for Raft to take over.
    Founding,
    /// Asking a formed cluster to admit this node.
    Joining,
    /// A member of a cluster.
    Member,
}

impl FormationPhase {
    /// The phase's name as shown in status.
    ///
    /// ```
    /// assert_eq!(flotilla::FormationPhase::Joining.name(), "joining");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            FormationPhase::Discovering => "discovering",
            FormationPhase::Coordinating => "coordinating",
            FormationPhase::Bound => "bound",
            FormationPhase::Founding => "founding",
            FormationPhase::Joining => "joining",
            FormationPhase::Member => "member",
        }
    }
}

/// One decision or event, for the status timeline.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// for event in cluster.formation_status().map(|f| f.timeline).unwrap_or_default() {
///     println!("+{} ms: {}", event.at_ms, event.event);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEvent {
    /// Milliseconds since the namespace opened on this node (the node's start for the
    /// namespaces it opens then).
    pub at_ms: u64,
    /// What happened.
    pub event: String,
}

/// Another cluster of the same namespace, met through a peer.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// for split in cluster.formation_status().map(|f| f.splits).unwrap_or_default() {
///     println!("another cluster {} ({} voters) via {}: {}", split.cluster, split.voters, split.seen_via, split.resolution);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    /// The other cluster's id.
    pub cluster: ClusterId,
    /// A member of it.
    pub seen_via: NodeId,
    /// Its voter count.
    pub voters: u32,
    /// Whether it holds client data.
    pub holds_data: bool,
    /// What this node does about it.
    pub resolution: String,
}

/// A peer as shown in status.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// for peer in cluster.formation_status().map(|f| f.peers).unwrap_or_default() {
///     println!("{} is {} (found by {:?})", peer.id, peer.phase, peer.sources);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct KnownPeer {
    /// The peer.
    pub id: NodeId,
    /// What it last reported for this namespace.
    pub phase: String,
    /// Where it was found.
    pub sources: Vec<flotilla_core::DiscoverySource>,
}

/// What status shows about formation.
///
/// ```no_run
/// # fn example(cluster: flotilla::Cluster) {
/// if let Some(formation) = cluster.formation_status() {
///     println!("{} ({}): {}", formation.phase.name(), formation.mode, formation.reason);
///     println!("joins: {}", formation.counters.get("joins").unwrap_or(&0));
/// }
/// # }
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct FormationStatus {
    /// The phase.
    pub phase: FormationPhase,
    /// Why the node is in it, or what it waits for.
    pub reason: String,
    /// `expect N` or `window <ms>`.
    pub mode: String,
    /// Peers that answered recently, with their phase.
    pub peers: Vec<KnownPeer>,
    /// Recent decisions, oldest first.
    pub timeline: Vec<TimelineEvent>,
    /// Other clusters of this namespace met so far.
    pub splits: Vec<SplitReport>,
    /// Joins, promotions, removals, amnesia, splits, absorptions.
    pub counters: BTreeMap<&'static str, u64>,
}

/// Counters of membership events, exported as metrics.
#[derive(Debug, Default, Serialize)]
pub struct FormationCounters {
    /// Join requests this node admitted as leader.
    pub joins: AtomicU64,
    /// Learners promoted to voter by this node as leader.
    pub promotions: AtomicU64,
    /// Members removed automatically by this node as leader.
    pub removals: AtomicU64,
    /// Members found to have lost their data and re-added as learners.
    pub amnesia: AtomicU64,
    /// Other clusters of this namespace detected.
    pub splits: AtomicU64,
    /// Times this node's cluster dissolved into another.
    pub absorbed: AtomicU64,
}

impl FormationCounters {
    /// Add one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Inner {
    pub(crate) founder: Founder<NodeId>,
    /// Views by peer: when received, the view, and whether it answered our own hello (only
    /// then does `includes_you` describe this node).
    pub(crate) views: HashMap<NodeId, (Instant, PeerView, bool)>,
    /// Since when the namespace is fresh on this node (start, or the last reset): the
    /// discovery window runs from here.
    pub(crate) fresh_since: Instant,
    /// A fresh node may take Raft traffic: it is a founder or was admitted by a join.
    pub(crate) admitted: bool,
    /// The leader that admitted this node (its traffic is accepted before the new
    /// configuration arrives).
    pub(crate) admitted_by: Option<NodeId>,
    /// The cluster the join that admitted this node named.
    pub(crate) joined_cluster: Option<ClusterId>,
    pub(crate) phase: FormationPhase,
    pub(crate) reason: String,
    pub(crate) timeline: VecDeque<TimelineEvent>,
    pub(crate) splits: BTreeMap<ClusterId, SplitReport>,
    pub(crate) last_join: Option<Instant>,
    /// The record already says `Member`.
    pub(crate) recorded_member: bool,
    /// A reset of the namespace is under way.
    pub(crate) resetting: bool,
    /// Why this node may only rejoin (its identity was admitted before), shown in status.
    pub(crate) rejoin_reason: String,
}

/// Formation state of one namespace.
pub struct Formation {
    /// The namespace.
    pub namespace: Namespace,
    /// Exported counters.
    pub counters: FormationCounters,
    record: RecordFile,
    ledger: std::sync::Arc<MembershipLedger>,
    started: Instant,
    fenced: std::sync::atomic::AtomicBool,
    writes_in_flight: AtomicU64,
    inner: Mutex<Inner>,
    /// Asks the formation loop to tick soon instead of after its paced pause (see
    /// [`Formation::nudge`]).
    nudge: tokio::sync::Notify,
}

/// A client write in flight past the dissolve fence (see [`Formation::begin_write`]).
pub struct WriteGuard<'a> {
    formation: &'a Formation,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.formation.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Formation {
    /// Load the persisted record of `ns` and set up its state. If the identity was admitted to
    /// `ns` before (`ledger`, or a `Member` record) and what is on disk is not a founding step
    /// of that very cluster, the founder may only rejoin: should the store turn out empty, the
    /// node lost its data and must not found the namespace again.
    pub fn load(
        me: NodeId,
        namespace: Namespace,
        record: RecordFile,
        ledger: std::sync::Arc<MembershipLedger>,
        expect: Option<usize>,
        voter_target: usize,
        started: Instant,
    ) -> Result<Formation, String> {
        let saved = record.load()?;
        let mut founder = Founder::new(me, expect, voter_target, FreshPhase::Free);
        match &saved {
            FoundingRecord::Free | FoundingRecord::Member => {}
            FoundingRecord::Bound(ballot) => {
                founder = Founder::new(me, expect, voter_target, FreshPhase::Bound(*ballot))
            }
            FoundingRecord::Founded { ballot, voters, all } => {
                founder.restore_founded(*ballot, voters.clone(), all.clone())
            }
        }
        let admitted_to = ledger.cluster(&namespace);
        let founding = match &saved {
            FoundingRecord::Bound(b) | FoundingRecord::Founded { ballot: b, .. } => cluster_id(b.coordinator, b.round),
            FoundingRecord::Free | FoundingRecord::Member => String::new(),
        };
        let facts = match &saved {
            FoundingRecord::Free => RecordFacts::Free,
            FoundingRecord::Member => RecordFacts::Member,
            FoundingRecord::Bound(_) | FoundingRecord::Founded { .. } => RecordFacts::Founding { cluster: &founding },
        };
        let rejoin = identity_standing(facts, admitted_to.as_deref()) == Standing::RejoinOnly;
        if rejoin {
            founder = founder.rejoin_only();
        }
        let rejoin_reason = format!(
            "lost its data: waiting to rejoin cluster {}",
            admitted_to.as_deref().unwrap_or("(unknown: only the founding record says it was a member)")
        );
        let inner = Inner {
            founder,
            views: HashMap::new(),
            fresh_since: started,
            admitted: !rejoin && matches!(saved, FoundingRecord::Founded { .. }),
            admitted_by: None,
            joined_cluster: None,
            phase: FormationPhase::Discovering,
            reason: "starting".into(),
            timeline: VecDeque::new(),
            splits: BTreeMap::new(),
            last_join: None,
            recorded_member: matches!(saved, FoundingRecord::Member),
            resetting: false,
            rejoin_reason,
        };
        Ok(Formation {
            namespace,
            counters: FormationCounters::default(),
            record,
            ledger,
            started,
            fenced: std::sync::atomic::AtomicBool::new(false),
            writes_in_flight: AtomicU64::new(0),
            inner: Mutex::new(inner),
            nudge: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persist a founding record.
    pub(crate) fn save(&self, record: &FoundingRecord) -> Result<(), String> {
        self.record.save(record)
    }

    /// Record an event in the timeline (and the log).
    pub fn note(&self, event: impl Into<String>) {
        let event = event.into();
        info!(namespace = %self.namespace, "{event}");
        let at_ms = self.started.elapsed().as_millis() as u64;
        let mut inner = self.lock();
        if inner.timeline.len() >= TIMELINE_LEN {
            inner.timeline.pop_front();
        }
        inner.timeline.push_back(TimelineEvent { at_ms, event });
    }

    /// Set the phase and the reason shown in status; a phase change is noted in the timeline.
    pub fn set_phase(&self, phase: FormationPhase, reason: impl Into<String>) {
        let reason = reason.into();
        let changed = {
            let mut inner = self.lock();
            let changed = inner.phase != phase;
            inner.phase = phase;
            inner.reason = reason.clone();
            changed
        };
        if changed {
            self.note(format!("{}: {reason}", phase.name()));
        }
    }

    /// Whether a Raft message may be handled (the rule: [`admission::admit`]). `has_state`,
    /// `in_config` and `config_empty` describe the replica's Raft state; `state_cluster` is the
    /// cluster its configuration names (empty when none). Without one, the replica's cluster is
    /// the one a join admitted it to, else the one of the ballot it is bound to or founded with.
    pub fn admits(
        &self,
        message: &admission::Incoming<'_, NodeId>,
        has_state: bool,
        in_config: bool,
        config_empty: bool,
        state_cluster: &str,
    ) -> Result<(), admission::Refusal> {
        let inner = self.lock();
        let ballot = match inner.founder.phase() {
            FreshPhase::Bound(b) | FreshPhase::Founded(b) => Some(b),
            _ => None,
        };
        let cluster = match (state_cluster, &inner.joined_cluster, ballot) {
            (known, _, _) if !known.is_empty() => known.to_string(),
            (_, Some(joined), _) => joined.clone(),
            (_, None, Some(b)) => cluster_id(b.coordinator, b.round),
            _ => ClusterId::new(),
        };
        let receiver = admission::Receiver {
            has_state,
            in_config,
            config_empty,
            admitted: inner.admitted,
            admitted_by: inner.admitted_by,
            coordinator: ballot.map(|b| b.coordinator),
            cluster: &cluster,
        };
        admission::admit(&receiver, message)
    }

    /// Mark the node admitted by `leader` into `cluster` (the `Joined` answer to a join): from
    /// then on, without Raft state, it takes Raft traffic only from that cluster.
    pub fn admit_joined(&self, leader: NodeId, cluster: ClusterId) {
        self.admit(Some(leader));
        self.lock().joined_cluster = Some(cluster);
    }

    /// Forget an admission (the ballot that granted it was released).
    pub(crate) fn unadmit(&self) {
        let mut inner = self.lock();
        inner.admitted = false;
        inner.admitted_by = None;
        inner.joined_cluster = None;
    }

    /// Mark the node admitted by `leader`.
    pub fn admit(&self, leader: Option<NodeId>) {
        let mut inner = self.lock();
        inner.admitted = true;
        if leader.is_some() {
            inner.admitted_by = leader;
        }
    }

    /// Start proposing a client write, unless writes are fenced (the cluster is checking
    /// whether it can dissolve). The write counts as in flight until the guard drops, so the
    /// dissolve can wait for every write that got past the fence.
    pub fn begin_write(&self) -> Option<WriteGuard<'_>> {
        self.writes_in_flight.fetch_add(1, Ordering::SeqCst);
        if self.fenced.load(Ordering::SeqCst) {
            self.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(WriteGuard { formation: self })
    }

    /// Refuse new client writes (or accept them again).
    pub(crate) fn set_fenced(&self, fenced: bool) {
        self.fenced.store(fenced, Ordering::SeqCst);
    }

    /// Client writes that got past the fence and have not finished.
    pub(crate) fn writes_in_flight(&self) -> u64 {
        self.writes_in_flight.load(Ordering::SeqCst)
    }

    /// Claim the namespace for a reset; `false` if one is already under way.
    pub(crate) fn begin_reset(&self) -> bool {
        let mut inner = self.lock();
        !std::mem::replace(&mut inner.resetting, true)
    }

    /// A reset is under way.
    pub(crate) fn resetting(&self) -> bool {
        self.lock().resetting
    }

    /// Record durably, with the identity, that `cluster` admitted this node (see
    /// [`MembershipLedger`]). Done before the node takes part in the cluster.
    pub(crate) async fn remember_admission(&self, cluster: &str) -> Result<(), String> {
        self.ledger.record(&self.namespace, cluster).await
    }

    /// Record the membership before a replica without Raft state takes Raft traffic that
    /// admission accepted from `cluster`. A founding voter gets its coordinator's first entries
    /// before it next asks the coordinator's status (where it would otherwise record it): losing
    /// the store in between and starting alone must not let it found. Cheap once recorded.
    pub(crate) async fn remember_before_state(&self, has_state: bool, cluster: &str) -> Result<(), String> {
        if has_state || cluster.is_empty() {
            return Ok(());
        }
        self.remember_admission(cluster).await
    }

    /// Whether this node may only rejoin, and why.
    pub(crate) fn rejoin_only(&self) -> Option<String> {
        let inner = self.lock();
        (inner.founder.phase() == FreshPhase::Rejoining).then(|| inner.rejoin_reason.clone())
    }

    /// Record that the namespace has Raft state here, in cluster `cluster`: once in the
    /// founding record (see [`FoundingRecord::Member`]), and with the identity whenever the
    /// cluster id changes.
    pub(crate) async fn record_member(&self, cluster: &str) {
        if !cluster.is_empty() {
            if let Err(e) = self.remember_admission(cluster).await {
                tracing::warn!(namespace = %self.namespace, error = %e, "cannot record membership in the node key");
            }
        }
        if self.lock().recorded_member {
            return;
        }
        match self.record.save(&FoundingRecord::Member) {
            Ok(()) => self.lock().recorded_member = true,
            Err(e) => tracing::warn!(namespace = %self.namespace, error = %e, "cannot record membership"),
        }
    }

    /// Forget everything about founding and admission: the namespace starts over, empty. The
    /// record is cleared first, so a crash during the wipe that follows leaves no admission.
    pub(crate) fn reset(&self) -> Result<(), String> {
        self.record.save(&FoundingRecord::Free)?;
        self.lock().recorded_member = false;
        let mut inner = self.lock();
        let (me, expect, target) = inner.founder.identity();
        inner.founder = Founder::new(me, expect, target, FreshPhase::Free);
        // The identity was admitted to the namespace: even reset, it only joins (the reset
        // is a dissolve into another cluster, which it joins).
        if self.ledger.cluster(&self.namespace).is_some() {
            inner.founder = inner.founder.clone().rejoin_only();
            inner.rejoin_reason = "dissolved: waiting to join the surviving cluster".into();
        }
        inner.views.clear();
        inner.admitted = false;
        inner.admitted_by = None;
        inner.joined_cluster = None;
        inner.splits.clear();
        inner.last_join = None;
        inner.fresh_since = Instant::now();
        inner.resetting = false;
        drop(inner);
        self.set_fenced(false);
        Ok(())
    }

    /// The status of formation, with `peers` describing where each peer was found.
    pub fn status(&self, mode: String, peers: &super::peers::PeerTable) -> FormationStatus {
        let views = self.fresh_views();
        let inner = self.lock();
        let known = views
            .iter()
            .map(|(id, v)| KnownPeer {
                id: *id,
                phase: describe(&v.phase),
                sources: peers.get(id).map(|e| e.sources.into_iter().collect()).unwrap_or_default(),
            })
            .collect();
        let c = &self.counters;
        let counters = BTreeMap::from([
            ("joins", c.joins.load(Ordering::Relaxed)),
            ("promotions", c.promotions.load(Ordering::Relaxed)),
            ("removals", c.removals.load(Ordering::Relaxed)),
            ("amnesia", c.amnesia.load(Ordering::Relaxed)),
            ("splits", c.splits.load(Ordering::Relaxed)),
            ("absorbed", c.absorbed.load(Ordering::Relaxed)),
        ]);
        FormationStatus {
            phase: inner.phase,
            reason: inner.reason.clone(),
            mode,
            peers: known,
            timeline: inner.timeline.iter().cloned().collect(),
            splits: inner.splits.values().cloned().collect(),
            counters,
        }
    }

    /// Ask the formation loop to tick soon: something it could act on changed (a peer's phase
    /// that enables a founding step, a promise counted, its own phase). At 1,000 namespaces
    /// the loops are paced to one tick every few seconds (`driver::TickLoad`); a founding
    /// takes several steps on different nodes, and each waiting for a paced tick made it
    /// take tens of seconds. Nudges come only from such changes, so the extra ticks are
    /// bounded by the steps themselves; several nudges before a tick make one tick.
    pub(crate) fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Resolves once [`Formation::nudge`] was called (since the last time this resolved).
    pub(crate) async fn nudged(&self) {
        self.nudge.notified().await
    }

    /// Store a view reported by `peer` (at most [`MAX_VIEWS`] peers' views are kept; the
    /// oldest goes first).
    /// Returns whether the view is news a fresh node may act on at once (a peer phase that
    /// changed to one a founding step can act on).
    pub fn record_view(&self, peer: NodeId, view: PeerView, reply: bool) -> bool {
        let mut inner = self.lock();
        let news = is_news(inner.views.get(&peer).map(|(_, v, _)| &v.phase), &view.phase);
        if !inner.views.contains_key(&peer) && inner.views.len() >= MAX_VIEWS {
            if let Some(oldest) = inner.views.iter().min_by_key(|(_, (at, _, _))| *at).map(|(id, _)| *id) {
                inner.views.remove(&oldest);
            }
        }
        inner.views.insert(peer, (Instant::now(), view, reply));
        news
    }

    /// Time since the namespace became fresh on this node (start or last reset).
    pub fn fresh_for(&self) -> Duration {
        self.lock().fresh_since.elapsed()
    }

    /// Fresh views that answered this node's own hellos.
    pub fn reply_views(&self) -> Vec<(NodeId, PeerView)> {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .views
            .iter()
            .filter(|(_, (at, _, reply))| *reply && now.duration_since(*at) < VIEW_FRESHNESS)
            .map(|(id, (_, v, _))| (*id, v.clone()))
            .collect()
    }

    /// Views received within [`VIEW_FRESHNESS`].
    pub fn fresh_views(&self) -> Vec<(NodeId, PeerView)> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.views.retain(|_, (at, _, _)| now.duration_since(*at) < VIEW_FRESHNESS * 20);
        inner
            .views
            .iter()
            .filter(|(_, (at, _, _))| now.duration_since(*at) < VIEW_FRESHNESS)
            .map(|(id, (_, v, _))| (*id, v.clone()))
            .collect()
    }
}

fn describe(phase: &flotilla_core::formation::PeerPhase) -> String {
    use flotilla_core::formation::PeerPhase;
    match phase {
        PeerPhase::NotServed => "does not serve this namespace".into(),
        PeerPhase::Fresh { phase: FreshPhase::Free, .. } => "fresh, free".into(),
        PeerPhase::Fresh { phase: FreshPhase::Bound(b), .. } => format!("fresh, promised to {}", b.coordinator),
        PeerPhase::Fresh { phase: FreshPhase::Coordinating { promisers, .. }, .. } => {
            format!("fresh, coordinating with {promisers} promises")
        }
        PeerPhase::Fresh { phase: FreshPhase::Founded(_), .. } => "founded, starting".into(),
        PeerPhase::Fresh { phase: FreshPhase::Rejoining, .. } => "lost its data, rejoining".into(),
        PeerPhase::Member(m) => format!(
            "member of {} ({} voters, {} members, leader {})",
            m.cluster,
            m.voters,
            m.members,
            m.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into())
        ),
    }
}

/// Whether a peer that reported `old` (or nothing) and now reports `new` offers a fresh node a
/// founding step it could not take before: a coordinator to promise (or yield) to, a founded
/// ballot, or a cluster with a leader to join. Only a change counts, so a peer repeating its
/// phase in every hello nudges nobody.
pub(crate) fn is_news(old: Option<&PeerPhase>, new: &PeerPhase) -> bool {
    let actionable = match new {
        PeerPhase::Fresh { phase, .. } => matches!(phase, FreshPhase::Coordinating { .. } | FreshPhase::Founded(_)),
        PeerPhase::Member(m) => m.leader.is_some(),
        PeerPhase::NotServed => false,
    };
    actionable && old.map(phase_kind) != Some(phase_kind(new))
}

/// A peer phase without its details (promise counts, rounds, indexes).
fn phase_kind(phase: &PeerPhase) -> (u8, u8) {
    match phase {
        PeerPhase::NotServed => (0, 0),
        PeerPhase::Fresh { phase, .. } => (
            1,
            match phase {
                FreshPhase::Free => 0,
                FreshPhase::Bound(_) => 1,
                FreshPhase::Coordinating { .. } => 2,
                FreshPhase::Founded(_) => 3,
                FreshPhase::Rejoining => 4,
            },
        ),
        PeerPhase::Member(m) => (2, u8::from(m.leader.is_some())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::formation::Ballot;
    use std::sync::Arc;

    fn load(dir: &std::path::Path, me: NodeId, ns: &Namespace) -> Formation {
        let ledger = Arc::new(MembershipLedger::open(dir.to_path_buf(), me).expect("ledger"));
        Formation::load(me, ns.clone(), RecordFile::new(dir, ns), ledger, None, 5, Instant::now()).expect("load")
    }

    #[tokio::test]
    async fn an_identity_admitted_before_only_rejoins_whatever_else_was_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = flotilla_net::load_or_create_keypair(dir.path()).expect("key").public().to_peer_id();
        let ns = Namespace::new("default").expect("ns");
        let other = Namespace::new("other").expect("ns");
        assert_eq!(load(dir.path(), me, &ns).rejoin_only(), None, "a new identity may found");

        let round = 7;
        let cluster = cluster_id(me, round);
        let formation = load(dir.path(), me, &ns);
        formation.remember_admission(&cluster).await.expect("remember");
        formation
            .save(&FoundingRecord::Founded {
                ballot: Ballot { coordinator: me, round },
                voters: Default::default(),
                all: Default::default(),
            })
            .expect("save");
        // The founding of that very cluster, interrupted before Raft state: it goes on.
        assert_eq!(load(dir.path(), me, &ns).rejoin_only(), None);
        // Everything but the key is lost: only rejoin, and say which cluster.
        std::fs::remove_dir_all(dir.path().join("formation")).expect("wipe records");
        let reason = load(dir.path(), me, &ns).rejoin_only().expect("rejoin only");
        assert!(reason.contains("lost its data") && reason.contains(&cluster), "{reason}");
        // Other namespaces are not affected.
        assert_eq!(load(dir.path(), me, &other).rejoin_only(), None);
        // A binding to some other ballot does not make it free either.
        let formation = load(dir.path(), me, &ns);
        formation.save(&FoundingRecord::Bound(Ballot { coordinator: me, round: 8 })).expect("save");
        assert!(load(dir.path(), me, &ns).rejoin_only().is_some());
        // A new key is a new node.
        std::fs::remove_file(dir.path().join(flotilla_net::KEY_FILE)).expect("remove key");
        std::fs::remove_dir_all(dir.path().join("formation")).expect("wipe records");
        let new = flotilla_net::load_or_create_keypair(dir.path()).expect("key").public().to_peer_id();
        assert_eq!(load(dir.path(), new, &ns).rejoin_only(), None);
    }

    #[tokio::test]
    async fn raft_traffic_taken_without_state_is_remembered_with_the_identity_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = flotilla_net::load_or_create_keypair(dir.path()).expect("key").public().to_peer_id();
        let ns = Namespace::new("default").expect("ns");
        let coordinator = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let cluster = cluster_id(coordinator, 3);
        let formation = load(dir.path(), me, &ns);
        // A replica that has state records through record_member; an unnamed cluster is no fact.
        formation.remember_before_state(true, &cluster).await.expect("nothing to do");
        formation.remember_before_state(false, "").await.expect("nothing to do");
        assert_eq!(load(dir.path(), me, &ns).rejoin_only(), None);
        // The first entries from the coordinator: the fact is in node.key before Raft sees them,
        // so a wipe of everything but the key leaves a node that only rejoins.
        formation.remember_before_state(false, &cluster).await.expect("recorded");
        std::fs::remove_dir_all(dir.path().join("formation")).ok();
        let reason = load(dir.path(), me, &ns).rejoin_only().expect("rejoin only");
        assert!(reason.contains(&cluster), "{reason}");
    }

    #[test]
    fn only_a_change_to_a_phase_a_founding_step_can_act_on_is_news() {
        use flotilla_core::formation::MemberView;
        let peer = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let fresh = |phase| PeerPhase::Fresh { expect: Some(3), phase };
        let coordinating = |promisers| fresh(FreshPhase::Coordinating { round: 1, promisers });
        let member = |leader: Option<NodeId>| {
            PeerPhase::Member(MemberView {
                cluster: "c".into(),
                leader,
                voters: 3,
                members: 3,
                config_index: 1,
                includes_you: false,
                holds_data: false,
            })
        };
        let founded = fresh(FreshPhase::Founded(Ballot { coordinator: peer, round: 1 }));
        let table: Vec<(Option<PeerPhase>, PeerPhase, bool)> = vec![
            (None, coordinating(0), true),
            (Some(fresh(FreshPhase::Free)), coordinating(0), true),
            // Repeated in every hello, or only its promise count changed: not news.
            (Some(coordinating(0)), coordinating(1), false),
            (Some(coordinating(2)), founded.clone(), true),
            (Some(founded.clone()), founded, false),
            (Some(fresh(FreshPhase::Free)), member(Some(peer)), true),
            (Some(member(None)), member(Some(peer)), true),
            (Some(member(Some(peer))), member(Some(peer)), false),
            // Nothing a fresh node could act on.
            (None, fresh(FreshPhase::Free), false),
            (None, member(None), false),
            (None, PeerPhase::NotServed, false),
            (Some(coordinating(0)), fresh(FreshPhase::Rejoining), false),
        ];
        for (old, new, news) in table {
            assert_eq!(is_news(old.as_ref(), &new), news, "{old:?} -> {new:?}");
        }
    }

    #[tokio::test]
    async fn a_member_record_without_the_key_file_still_only_rejoins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let ns = Namespace::new("default").expect("ns");
        let formation = load(dir.path(), me, &ns);
        formation.record_member("some/cluster").await;
        assert!(load(dir.path(), me, &ns).rejoin_only().is_some());
    }
}
