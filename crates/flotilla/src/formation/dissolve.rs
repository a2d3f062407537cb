//! Dissolving a cluster that never acknowledged a write into another cluster of its
//! namespace.
//!
//! The leader fences client writes, waits until everything already proposed is applied, and
//! checks again that its state machine holds nothing. Only then does it tell the other members
//! to reset the namespace, and reset it itself. A reset namespace is empty and fresh: its
//! formation loop sees the surviving cluster and joins it as a learner. A member accepts the
//! order only from its current leader, for its own cluster, and while it holds no data itself.

use std::sync::Arc;

use flotilla_core::formation::{ClusterId, FormationRequest};
use flotilla_core::types::NodeId;
use flotilla_core::Namespace;
use openraft::ReadPolicy;
use tracing::warn;

use super::state::{Formation, FormationCounters};
use super::view::cluster_of;
use crate::group::Group;
use crate::node::{open_group, Node};

/// Poll interval while waiting for in-flight writes to finish.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(10);

impl Node {
    /// As leader of a cluster with no data, dissolve it so its members join the cluster
    /// `via` belongs to.
    pub(crate) async fn dissolve_into(&self, group: &Arc<Group>, formation: &Formation, via: NodeId) {
        let ns = formation.namespace.clone();
        if formation.resetting() {
            return;
        }
        formation.set_fenced(true);
        if let Err(why) = self.drain_writes(group, formation).await {
            formation.set_fenced(false);
            formation.note(format!("dissolve aborted: {why}"));
            return;
        }
        let mine = cluster_of(&group.metrics());
        formation.note(format!("dissolving cluster {mine} (no data) to join the cluster of {via}"));
        self.order_dissolve(group, &ns, &mine, false).await;
        // Checked again: a member may have been elected meanwhile and taken a write.
        if !group.is_leader() || self.store.holds_data(&ns).unwrap_or(true) {
            formation.set_fenced(false);
            formation.note("dissolve of this node aborted: leadership or data changed");
            return;
        }
        if let Err(e) = self.reset_namespace(&ns).await {
            warn!(error = %e, "reset after dissolve failed");
        }
    }

    /// With writes fenced: wait until no write is past the fence, every entry in the log is
    /// applied, leadership is confirmed, and the state machine still holds nothing.
    async fn drain_writes(&self, group: &Arc<Group>, formation: &Formation) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout();
        while formation.writes_in_flight() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err("writes still in flight".into());
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let last = group.metrics().last_log_index;
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        let applied = group
            .raft
            .wait(Some(budget))
            .metrics(|m| m.last_applied.as_ref().map(|l| l.index) >= last, "every logged entry applied")
            .await;
        if applied.is_err() {
            return Err("the log was not applied in time".into());
        }
        if group.raft.ensure_linearizable(ReadPolicy::ReadIndex).await.is_err() {
            return Err("no longer the leader".into());
        }
        if self.store.holds_data(&formation.namespace).unwrap_or(true) {
            return Err("the cluster holds data now".into());
        }
        Ok(())
    }

    /// Operator command, on the leader: dissolve this node's cluster of `ns` even though it
    /// holds data (which is dropped on every member), so its members join the other cluster.
    pub(crate) async fn dissolve_forced(&self, group: &Arc<Group>, formation: &Formation) -> Result<(), String> {
        if !group.is_leader() {
            return Err("run this on the leader of the cluster to dissolve".into());
        }
        let ns = formation.namespace.clone();
        let mine = cluster_of(&group.metrics());
        formation.set_fenced(true);
        warn!(cluster = %mine, "operator ordered this cluster dissolved; its data is dropped");
        formation.note(format!("operator dissolves cluster {mine}"));
        self.order_dissolve(group, &ns, &mine, true).await;
        self.reset_namespace(&ns).await
    }

    async fn order_dissolve(&self, group: &Group, ns: &Namespace, cluster: &ClusterId, force: bool) {
        let membership = group.metrics().membership_config.clone();
        let others: Vec<NodeId> =
            membership.membership().nodes().map(|(id, _)| *id).filter(|id| *id != self.id).collect();
        let orders = others
            .iter()
            .map(|peer| self.formation_call(ns, *peer, FormationRequest::Dissolve { cluster: cluster.clone(), force }));
        for (peer, result) in others.iter().zip(futures::future::join_all(orders).await) {
            if let Err(e) = result {
                warn!(%peer, error = %e, "member did not take the dissolve order; it reports the split until it does");
            }
        }
    }

    /// A member's side of a dissolve order from `from`.
    pub(crate) fn accept_dissolve(
        self: &Arc<Self>,
        from: NodeId,
        ns: &Namespace,
        cluster: &ClusterId,
        force: bool,
    ) -> bool {
        let Some(group) = self.group(ns) else { return false };
        let m = group.metrics();
        let valid = !self.formation(ns).is_some_and(|f| f.resetting())
            && m.current_leader == Some(from)
            && cluster_of(&m) == *cluster
            && (force || !self.store.holds_data(ns).unwrap_or(true));
        if valid {
            let node = self.clone();
            let ns = ns.clone();
            tokio::spawn(async move {
                if let Err(e) = node.reset_namespace(&ns).await {
                    warn!(namespace = %ns, error = %e, "reset after dissolve failed");
                }
            });
        }
        valid
    }

    /// Stop the namespace's group, wipe its state and start it again empty.
    pub(crate) async fn reset_namespace(&self, ns: &Namespace) -> Result<(), String> {
        let Some(entry) = self.namespaces.get(ns) else {
            return Err("unknown namespace".into());
        };
        let (slot, formation) = (&entry.slot, &entry.formation);
        if !formation.begin_reset() {
            return Err("a reset of this namespace is already under way".into());
        }
        let old = slot.get();
        old.raft.shutdown().await.map_err(|e| e.to_string())?;
        self.store.wipe_namespace(ns).await.map_err(|e| e.to_string())?;
        formation.reset()?;
        let group = open_group(&self.config, &self.transport, &self.store, &self.factory, ns)
            .await
            .map_err(|e| e.to_string())?;
        slot.replace(group);
        FormationCounters::bump(&formation.counters.absorbed);
        formation.note("namespace reset: empty, looking for the surviving cluster");
        Ok(())
    }
}
