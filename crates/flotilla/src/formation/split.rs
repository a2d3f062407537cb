//! Detecting another cluster of the same namespace.
//!
//! Two clusters of one namespace can exist when formation ran on both sides of a partition
//! (or with `--expect` set too low for the nodes started). When a member hears from a member
//! of another cluster, the split is recorded in status, counted in metrics and logged loudly
//! once per cluster met. What happens next is decided by [`absorbable`]: a side that never
//! acknowledged a write can dissolve into the other; otherwise both keep serving and an
//! operator chooses (see docs/OPERATIONS.md, "Two clusters of one namespace").

use std::sync::Arc;

use flotilla_core::formation::{ClusterId, PeerPhase};
use tracing::warn;

use super::driver::Views;
use super::state::{Formation, FormationCounters, SplitReport};
use crate::group::Group;
use crate::node::Node;

/// Most other clusters remembered per namespace (a hostile peer could invent any number).
const MAX_SPLITS: usize = 16;

/// Which of two clusters should survive a merge: the one holding data, then the larger, then
/// the lower id. Both sides compute the same answer from the same facts.
pub fn survivor_is_other(mine: (&ClusterId, bool, u32), other: (&ClusterId, bool, u32)) -> bool {
    let key = |c: (&ClusterId, bool, u32)| (c.1, c.2, std::cmp::Reverse(c.0.clone()));
    key(other) > key(mine)
}

/// Whether a cluster may dissolve into another without losing an acknowledged write: it holds
/// no client data at all.
pub fn absorbable(holds_data: bool) -> bool {
    !holds_data
}

impl Node {
    pub(crate) async fn watch_for_splits(
        &self,
        group: &Arc<Group>,
        formation: &Formation,
        mine: &ClusterId,
        views: &Views,
    ) {
        let foreign = |v: &&(flotilla_core::types::NodeId, flotilla_core::formation::PeerView)| matches!(&v.1.phase, PeerPhase::Member(o) if !o.cluster.is_empty() && o.cluster != *mine);
        // The store is read only when another cluster is actually in view: this runs every tick.
        if mine.is_empty() || !views.iter().any(|v| foreign(&v)) {
            return;
        }
        let my_data = self.store.holds_data(&formation.namespace).unwrap_or(true);
        let my_voters = group.raft.voter_ids().count() as u32;
        for (peer, view) in views {
            let PeerPhase::Member(other) = &view.phase else { continue };
            if other.cluster.is_empty() || other.cluster == *mine {
                continue;
            }
            let other_wins =
                survivor_is_other((mine, my_data, my_voters), (&other.cluster, other.holds_data, other.voters));
            let resolution = match (other_wins, absorbable(my_data), absorbable(other.holds_data)) {
                (true, true, _) => "this cluster holds no data and will dissolve into the other".to_string(),
                (false, _, true) => "the other cluster holds no data and will dissolve into this one".to_string(),
                _ => "both clusters hold data: both keep serving; an operator must choose \
                      (flotilla ns dissolve on the losing side, see docs/OPERATIONS.md)"
                    .to_string(),
            };
            let new = {
                let mut inner = formation.lock();
                let new = !inner.splits.contains_key(&other.cluster);
                if new && inner.splits.len() >= MAX_SPLITS {
                    continue;
                }
                inner.splits.insert(
                    other.cluster.clone(),
                    SplitReport {
                        cluster: other.cluster.clone(),
                        seen_via: *peer,
                        voters: other.voters,
                        holds_data: other.holds_data,
                        resolution: resolution.clone(),
                    },
                );
                new
            };
            if new {
                FormationCounters::bump(&formation.counters.splits);
                warn!(
                    other_cluster = %other.cluster, via = %peer, other_voters = other.voters,
                    "SPLIT: another cluster of this namespace exists; {resolution}"
                );
                formation.note(format!("split detected: cluster {} via {peer}; {resolution}", other.cluster));
            }
            if other_wins && absorbable(my_data) && group.is_leader() {
                self.dissolve_into(group, formation, *peer).await;
            }
        }
    }
}
