//! The cluster API of one namespace, callable on any node.

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::types::{LogId, NodeId, TypeConfig};
use flotilla_core::wire::{log_index, CommandRequest, CommandResponse};
use flotilla_core::{ApiError, Command, Consistency, IdempotencyKey, Limit, MemberInfo, Namespace, RequestId};
use openraft::raft::linearizable_read::Linearizer;
use openraft::raft::linearizable_read::ReadLogId;
use tokio::time::Instant;

use crate::group::{Group, GroupSlot};
use crate::node::Node;
use crate::request_trace::{RequestTrace, TraceKind};
use crate::status::{GroupStatus, Member, MemberRole};

/// Operations on one namespace. Every method works on every node: writes and membership
/// changes are forwarded to the leader, reads pick their consistency.
///
/// ```no_run
/// # async fn example(node: std::sync::Arc<flotilla::Node>) -> Result<(), flotilla::ApiError> {
/// let orders = node.cluster("orders")?; // cheap to clone, one per namespace
/// orders.set(b"order/42", b"pending").await?; // forwarded to the leader if need be
/// let read = orders.get(b"order/42", flotilla::Consistency::Linearizable).await?;
/// println!("{:?} at revision {}", read.value, read.revision);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    pub(crate) node: Arc<Node>,
    slot: Arc<GroupSlot>,
    pub(crate) namespace: Namespace,
}

impl Cluster {
    pub(crate) fn new(node: Arc<Node>, slot: Arc<GroupSlot>) -> Self {
        let namespace = slot.get().namespace.clone();
        Self { node, slot, namespace }
    }

    /// The namespace's current Raft group (replaced when the namespace is reset).
    pub(crate) fn group(&self) -> Arc<Group> {
        self.slot.get()
    }

    /// Whether the namespace's group on this node is quiesced: idle, without heartbeats or
    /// election timer (see `DESIGN-namespaces.md`). A fresh group (no Raft state) is, until it
    /// founds a cluster or takes Raft traffic.
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// if cluster.is_quiesced() {
    ///     println!("{} is idle: no heartbeats, no election timer", cluster.namespace());
    /// }
    /// # }
    /// ```
    pub fn is_quiesced(&self) -> bool {
        self.group().is_quiesced()
    }

    /// The Raft instance of the namespace's current group.
    pub(crate) fn group_raft(&self) -> crate::group::GroupRaft {
        self.group().raft.clone()
    }

    /// The namespace.
    ///
    /// ```no_run
    /// # fn example(node: std::sync::Arc<flotilla::Node>) -> Result<(), flotilla::ApiError> {
    /// let cluster = node.cluster("orders")?;
    /// assert_eq!(cluster.namespace().as_str(), "orders");
    /// # Ok(()) }
    /// ```
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.node.config.request_timeout()
    }

    /// Replicate an opaque command for the namespace's state machine; returns the log index and
    /// the state machine's reply (or its deterministic refusal).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let (index, reply) = cluster.propose(b"an encoded command".to_vec()).await?;
    /// match reply {
    ///     Ok(output) => println!("applied at index {index}: {output:?}"),
    ///     Err(refusal) => println!("the state machine refused it (on every replica): {refusal}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn propose(&self, payload: Vec<u8>) -> Result<(u64, Result<Vec<u8>, String>), ApiError> {
        self.propose_as(payload, self.node.request_ids.next()).await
    }

    /// [`Cluster::propose`] as the write named `idempotency`: applied at most once however
    /// often it is sent within the deduplication window.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let key = flotilla::IdempotencyKey::new("order-42/create").expect("visible ASCII");
    /// let command = b"create order 42".to_vec();
    /// if let Err(e) = cluster.propose_idempotent(command.clone(), &key).await {
    ///     // Maybe applied, maybe not: sending it again under the same key applies it at most once.
    ///     if e.is_retryable() {
    ///         cluster.propose_idempotent(command, &key).await?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn propose_idempotent(
        &self,
        payload: Vec<u8>,
        idempotency: &IdempotencyKey,
    ) -> Result<(u64, Result<Vec<u8>, String>), ApiError> {
        self.propose_as(payload, idempotency.request_id(&self.namespace)).await
    }

    pub(crate) async fn propose_as(
        &self,
        payload: Vec<u8>,
        id: RequestId,
    ) -> Result<(u64, Result<Vec<u8>, String>), ApiError> {
        let config = &self.node.config;
        let limit = (config.max_frame_bytes / 2).max(config.max_key_bytes + config.max_value_bytes + 1024);
        if payload.len() > limit {
            return Err(too_large(Limit::Request, payload.len(), limit));
        }
        let command = Command { id: Some(id), payload };
        let mut trace = RequestTrace::start(TraceKind::Write);
        let group = self.group();
        let written =
            self.node.forwarder.submit_traced(&group, CommandRequest::Write(command), self.deadline(), &mut trace);
        let written = written.await;
        if let Ok(CommandResponse::Written { log_id, .. }) = &written {
            // Forwarded, the leader's stages are in its own line; the index ties the two.
            trace.at_index(log_id.index);
        }
        trace.finish(self.namespace.as_str(), None, config.slow_request());
        match written? {
            CommandResponse::Written { log_id, result } => Ok((log_id.index, result.output)),
            other => Err(ApiError::Fatal(format!("unexpected reply to a write: {other:?}"))),
        }
    }

    /// Wait until this replica has applied every write acknowledged before the call; returns
    /// the applied index.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let applied = cluster.barrier().await?;
    /// // Every write acknowledged before the call is in this replica's state now.
    /// println!("applied up to index {applied} here");
    /// # Ok(()) }
    /// ```
    pub async fn barrier(&self) -> Result<u64, ApiError> {
        self.read_barrier(Consistency::Linearizable).await
    }

    pub(crate) async fn read_barrier(&self, consistency: Consistency) -> Result<u64, ApiError> {
        if consistency == Consistency::Stale {
            return Ok(self.applied_index());
        }
        let mut trace = RequestTrace::start(TraceKind::Read);
        let read = self.linearizable_barrier(&mut trace).await;
        trace.finish(self.namespace.as_str(), None, self.node.config.slow_request());
        read
    }

    /// Get a read index from the leader (in a round shared with the reads arriving meanwhile,
    /// `crate::read_index_batch`), then wait until this replica has applied it.
    async fn linearizable_barrier(&self, trace: &mut RequestTrace) -> Result<u64, ApiError> {
        let group = self.group();
        let deadline = self.deadline();
        let asked = Instant::now();
        let mut own_round = None;
        let round = group.read_index.read_index(deadline, || {
            own_round = Some(Instant::now());
            self.ask_read_index(&group, deadline, &mut *trace)
        });
        let read_log_id = round.await;
        trace.shared_rounds_between(asked, own_round.unwrap_or_else(Instant::now));
        let read_log_id = read_log_id?;
        let index = read_log_id.index;
        let waiting = Instant::now();
        // Usually applied already: no need to subscribe to the metrics (a copy of them per read).
        if group.applied_index() >= index {
            trace.applied(waiting, index);
            return Ok(index);
        }
        let leader = group.leader().unwrap_or(self.node.id);
        let linearizer = Linearizer::<TypeConfig>::new(leader, ReadLogId::from_log_id(read_log_id), None);
        let budget = deadline.saturating_duration_since(waiting);
        let ready = linearizer.try_await_ready(&group.raft, Some(budget)).await;
        trace.applied(waiting, index);
        match ready {
            Ok(Ok(_)) => Ok(index),
            Ok(Err(_)) => Err(ApiError::Timeout(format!("replica did not apply index {index} in time"))),
            Err(fatal) => Err(ApiError::Fatal(fatal.to_string())),
        }
    }

    /// One read-index round: the leader's commit index, confirmed with a quorum.
    async fn ask_read_index(
        &self,
        group: &Arc<Group>,
        deadline: Instant,
        trace: &mut RequestTrace,
    ) -> Result<LogId, ApiError> {
        let response = self.node.forwarder.submit_traced(group, CommandRequest::ReadIndex, deadline, trace).await?;
        match response {
            CommandResponse::ReadIndex { read_log_id } => Ok(read_log_id),
            other => Err(ApiError::Fatal(format!("unexpected reply to a read index: {other:?}"))),
        }
    }

    fn applied_index(&self) -> u64 {
        self.group().applied_index()
    }

    pub(crate) fn check_key(&self, key: &[u8]) -> Result<(), ApiError> {
        if key.is_empty() {
            return Err(ApiError::InvalidKey("key is empty".into()));
        }
        let limit = self.node.config.max_key_bytes;
        if key.len() > limit {
            return Err(too_large(Limit::Key, key.len(), limit));
        }
        Ok(())
    }

    pub(crate) fn check_value(&self, value: &[u8]) -> Result<(), ApiError> {
        let limit = self.node.config.max_value_bytes;
        if value.len() > limit {
            return Err(too_large(Limit::Value, value.len(), limit));
        }
        Ok(())
    }

    /// Whether this node leads the namespace.
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// if cluster.is_leader() {
    ///     println!("this node leads {}", cluster.namespace());
    /// }
    /// # }
    /// ```
    pub fn is_leader(&self) -> bool {
        self.group().is_leader()
    }

    /// The leader this node knows of.
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// match cluster.leader() {
    ///     Some(leader) => println!("led by {leader}"),
    ///     None => println!("no leader known: an election may be under way"),
    /// }
    /// # }
    /// ```
    pub fn leader(&self) -> Option<NodeId> {
        self.group().leader()
    }

    /// Wait until a leader is known, up to `timeout`.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use std::time::Duration;
    ///
    /// let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?; // `NoLeader` after 10 s
    /// println!("led by {leader}");
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ApiError> {
        let m = self
            .group()
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|e| ApiError::NoLeader(e.to_string()))?;
        m.current_leader.ok_or_else(|| ApiError::NoLeader("no leader".into()))
    }

    /// The namespace's state as seen from this node, from its Raft metrics alone (cheap: what
    /// metrics, listings and polling loops read). `revision` is `None` here; see
    /// [`Cluster::status`].
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// let state = cluster.state();
    /// println!("{} is {} in term {}", state.namespace, state.role.name(), state.term);
    /// println!("applied {} of {} committed", state.applied_index, state.commit_index);
    /// assert_eq!(state.revision, None); // `status()` reads it
    /// # }
    /// ```
    pub fn state(&self) -> GroupStatus {
        let m = self.group().metrics();
        let membership = m.membership_config.clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, info)| Member {
                id: *id,
                addrs: info.addrs.clone(),
                role: if voters.contains(id) { MemberRole::Voter } else { MemberRole::Learner },
            })
            .collect();
        let group = self.group();
        GroupStatus {
            namespace: group.namespace.to_string(),
            node_id: self.node.id,
            role: crate::status_report::role_of(&m),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: log_index(&m.local_committed),
            applied_index: log_index(&m.last_applied),
            revision: None,
            snapshot_index: log_index(&m.snapshot),
            members,
            membership_changing: membership.membership().get_joint_config().len() > 1
                || membership.log_id() != m.committed_membership_config.log_id(),
            cluster: crate::formation::view::cluster_of(&m),
            quiesced: group.is_quiesced(),
            leadership: group.counters.leader_changes.history(),
            progress: crate::status_report::member_progress(&m),
            formation: self.formation_status(),
        }
    }

    /// Fix an online backup of the namespace at the state this node has applied now (see
    /// [`flotilla_store::Backup`]): write it out with `Backup::write_to`, off the async threads.
    /// Writes go on meanwhile. On a follower it lacks the entries committed but not yet applied
    /// here; its metadata names the index it holds.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), Box<dyn std::error::Error>> {
    /// let backup = cluster.backup()?;
    /// let file = std::fs::File::create("/var/backups/orders.flbk")?;
    /// // Writing reads the whole namespace: keep it off the async threads.
    /// tokio::task::spawn_blocking(move || backup.write_to(file)).await??;
    /// # Ok(()) }
    /// ```
    pub fn backup(&self) -> Result<flotilla_store::Backup, ApiError> {
        let source = flotilla_store::BackupSource {
            cluster_id: crate::formation::view::cluster_of(&self.group().metrics()),
            flotilla_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        self.node.store.backup(&self.namespace, source).map_err(store_read_error)
    }

    /// Operator resolution of a split: dissolve this node's cluster of the namespace, dropping
    /// its data on every member, so they all join the other cluster. Runs on the leader only.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// // After `flotilla ns status` showed a split and the operator chose the other cluster:
    /// match cluster.dissolve().await {
    ///     Ok(()) => println!("dissolved: every member joins the other cluster"),
    ///     Err(flotilla::ApiError::NotLeader { leader }) => println!("run it on the leader, {leader:?}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn dissolve(&self) -> Result<(), ApiError> {
        let group = self.group();
        if !group.is_leader() {
            return Err(ApiError::NotLeader { leader: group.leader() });
        }
        let formation = self
            .node
            .formation(&self.namespace)
            .ok_or_else(|| ApiError::UnknownNamespace(self.namespace.to_string()))?;
        self.node.dissolve_forced(&group, &formation).await.map_err(ApiError::Unavailable)
    }

    /// What formation is doing (or did) for this namespace on this node.
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// if let Some(formation) = cluster.formation_status() {
    ///     println!("{}: {}", formation.phase.name(), formation.reason);
    /// }
    /// # }
    /// ```
    pub fn formation_status(&self) -> Option<crate::formation::FormationStatus> {
        let formation = self.node.formation(&self.namespace)?;
        let config = &self.node.config;
        let mode = match config.expect {
            Some(n) => format!("expect {n}"),
            None => format!("discovery window {} ms", config.discovery_window().as_millis()),
        };
        Some(formation.status(mode, &self.node.peers))
    }

    /// [`Cluster::state`] with the KV revision of the applied state, which takes a read of the
    /// store: what `GET /v1/ns/{ns}/status` answers.
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// let status = cluster.status();
    /// if let Some(revision) = status.revision {
    ///     println!("{} at revision {revision}", status.namespace);
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> GroupStatus {
        GroupStatus { revision: self.revision(), ..self.state() }
    }

    /// The membership configuration.
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// for member in cluster.members() {
    ///     println!("{} ({}) at {:?}", member.id, member.role.name(), member.addrs);
    /// }
    /// # }
    /// ```
    pub fn members(&self) -> Vec<Member> {
        self.state().members
    }

    /// Add `id` as a learner (replicates, does not vote).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, new: flotilla::RunningNode) -> Result<(), flotilla::ApiError> {
    /// // `new` serves the namespace too; it starts replicating without a vote.
    /// let index = cluster.add_learner(new.id(), new.addrs()).await?;
    /// println!("configuration changed at index {index}");
    /// # Ok(()) }
    /// ```
    pub async fn add_learner(&self, id: NodeId, addrs: Vec<String>) -> Result<u64, ApiError> {
        self.membership(CommandRequest::AddLearner(id, MemberInfo::new(addrs))).await
    }

    /// Add `id` as a learner, wait for it to catch up, then promote it to voter.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, new: flotilla::RunningNode) -> Result<(), flotilla::ApiError> {
    /// let index = cluster.add_voter(new.id(), new.addrs()).await?;
    /// println!("{} votes from index {index} on", new.id());
    /// # Ok(()) }
    /// ```
    pub async fn add_voter(&self, id: NodeId, addrs: Vec<String>) -> Result<u64, ApiError> {
        self.membership(CommandRequest::AddVoter(id, MemberInfo::new(addrs))).await
    }

    /// Remove `id` from the configuration.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, gone: flotilla::RunningNode) -> Result<(), flotilla::ApiError> {
    /// let index = cluster.remove(gone.id()).await?;
    /// println!("{} left the configuration at index {index}", gone.id());
    /// # Ok(()) }
    /// ```
    pub async fn remove(&self, id: NodeId) -> Result<u64, ApiError> {
        self.membership(CommandRequest::Remove(id)).await
    }

    /// Move leadership to `to`, or to the most up-to-date other voter.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// // Before maintenance of this node: let the most up-to-date other voter lead.
    /// if cluster.is_leader() {
    ///     cluster.transfer_leadership(None).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn transfer_leadership(&self, to: Option<NodeId>) -> Result<(), ApiError> {
        self.membership(CommandRequest::TransferLeader(to)).await.map(|_| ())
    }

    async fn membership(&self, request: CommandRequest) -> Result<u64, ApiError> {
        match self.node.forwarder.submit(&self.group(), request, self.deadline()).await? {
            CommandResponse::Done { index } => Ok(index.unwrap_or_else(|| self.applied_index())),
            other => Err(ApiError::Fatal(format!("unexpected reply {other:?}"))),
        }
    }

    /// Counters of the group: (proposals, forwards, leader changes).
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// let (proposals, forwards, leader_changes) = cluster.counters();
    /// println!("{proposals} proposed, {forwards} forwarded, {leader_changes} leader changes");
    /// # }
    /// ```
    pub fn counters(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.group().counters;
        (c.proposals.load(Relaxed), c.forwards.load(Relaxed), c.leader_changes.total())
    }
}

/// The error of a key, value or request over its limit.
pub(crate) fn too_large(what: Limit, size: usize, limit: usize) -> ApiError {
    ApiError::TooLarge { what, size: size as u64, limit: limit as u64 }
}

/// Map a failed local read: a namespace that is loading a snapshot answers a retryable error
/// (it serves reads again once the install is done); anything else is a storage failure.
pub(crate) fn store_read_error(e: flotilla_store::StoreError) -> ApiError {
    match e {
        flotilla_store::StoreError::Installing(detail) => {
            ApiError::Unavailable(format!("the namespace is installing a snapshot, retry shortly: {detail}"))
        }
        // The node is stopping: the client should go to another node (503), not give up.
        flotilla_store::StoreError::Closed => ApiError::ShuttingDown,
        other => ApiError::Fatal(other.to_string()),
    }
}
