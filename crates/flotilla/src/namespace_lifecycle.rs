//! Opening and closing namespaces: at start (the persisted set) and at runtime.
//!
//! Open: add the namespace to the persisted set, then load its formation state, start its
//! group and its formation loop, exactly as at start (the node-level autopilot picks it up). A crash after the set is
//! written reopens it at the next start (formation resumes); a crash before leaves it absent.
//!
//! Close: stop the formation loop (so the node does not ask back in; the node-level autopilot
//! skips a namespace while its open or close runs), hand
//! leadership off, remove this node from the membership through the leader and wait for the
//! commit, stop the group, take the namespace out of the persisted set, then (unless
//! `keep_data`) drop its tables, snapshot, formation record and its entry in `node.key`. A crash
//! before the set is written leaves an open namespace with its data (a member, or a removed
//! node that rejoins); a crash after leaves leftovers that the next start cleans: the node never
//! runs a group of the namespace without its data.
//!
//! The namespace's only voter closes it alone: the cluster ends with it (its data is dropped
//! unless `keep_data`). With other members left it refuses ([`NamespaceError::LastVoter`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla_core::formation::{FormationRequest, FormationResponse, PeerPhase};
use flotilla_core::wire::CommandRequest;
use flotilla_core::Namespace;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::crash_point::CrashPoint;
use crate::error::{NamespaceError, StartError};
use crate::formation::record::RecordFile;
use crate::formation::view::cluster_of;
use crate::formation::{driver, Formation};
use crate::group::{Group, GroupSlot};
use crate::namespace_set::{NamespaceSet, NamespaceSetFile};
use crate::namespaces::{CloseOptions, OpenNamespace};
use crate::node::{open_group, Node};

/// Most namespaces a node serves at once: as many as its identity can remember memberships of
/// (`flotilla_net::MAX_MEMBERSHIPS`).
///
/// ```no_run
/// # async fn example(node: std::sync::Arc<flotilla::Node>) -> Result<(), flotilla::NamespaceError> {
/// match node.open_namespace("tenant-4711").await {
///     Err(flotilla::NamespaceError::TooMany { limit }) => assert_eq!(limit, flotilla::MAX_OPEN_NAMESPACES),
///     other => other?,
/// }
/// # Ok(()) }
/// ```
pub const MAX_OPEN_NAMESPACES: usize = flotilla_net::MAX_MEMBERSHIPS;

/// How a node left a namespace's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// It never had Raft state there: nothing to leave.
    NeverMember,
    /// Its removal is committed (or it was not in the configuration any more).
    Removed,
    /// It was the only member: the cluster ends here.
    Ended,
}

impl Node {
    /// Open `name` on this node: it takes part in the namespace's formation as at start
    /// (discovery, founding or joining, autopilot, amnesia guard, split detection). Returns
    /// once the namespace is served and recorded in the set of open namespaces; that it forms
    /// or joins a cluster shows in its status. Opening an open namespace does nothing.
    ///
    /// ```no_run
    /// # async fn example(node: std::sync::Arc<flotilla::Node>) -> Result<(), Box<dyn std::error::Error>> {
    /// node.open_namespace("tenant-4711").await?; // served, and reopened at every start
    /// let tenant = node.cluster("tenant-4711")?;
    /// tenant.wait_for_leader(std::time::Duration::from_secs(30)).await?; // formed or joined
    /// # Ok(()) }
    /// ```
    pub async fn open_namespace(self: &Arc<Self>, name: &str) -> Result<(), NamespaceError> {
        let ns = Namespace::new(name)?;
        let _op = self.namespaces.lock_op(&ns).await;
        if self.is_closing() {
            return Err(NamespaceError::NodeClosing);
        }
        if self.namespaces.get(&ns).is_some() {
            return Ok(());
        }
        if self.namespaces.set().open.len() >= MAX_OPEN_NAMESPACES {
            return Err(NamespaceError::TooMany { limit: MAX_OPEN_NAMESPACES });
        }
        // Listed first: a crash from here on reopens it at the next start.
        let was_kept = self.namespaces.set().kept.contains(&ns);
        self.namespaces
            .persist(|set| {
                set.kept.remove(&ns);
                set.open.insert(ns.clone());
            })
            .map_err(NamespaceError::Storage)?;
        self.crash_point(CrashPoint::OpenAfterPersist).await?;
        if let Err(e) = self.open_listed(&ns, Instant::now(), false).await {
            warn!(namespace = %ns, error = %e, "opening failed; taking the namespace out of the set again");
            // The group did not start; data kept from an earlier close stays kept, anything else
            // it may have written is cleaned at the next start.
            if let Err(e) = self.namespaces.persist(|set| {
                set.open.remove(&ns);
                if was_kept {
                    set.kept.insert(ns.clone());
                }
            }) {
                warn!(namespace = %ns, error = %e, "cannot take the namespace out of the set");
            }
            return Err(e.into());
        }
        info!(namespace = %ns, "namespace opened");
        Ok(())
    }

    /// Close `name` on this node: leave its membership (handing leadership off first), stop its
    /// group and tasks, and drop its local data unless `options.keep_data`. Closing a namespace
    /// that is not open does nothing. On [`NamespaceError::Leave`] and
    /// [`NamespaceError::LastVoter`] the namespace stays open and untouched.
    ///
    /// ```no_run
    /// # async fn example(node: std::sync::Arc<flotilla::Node>) -> Result<(), flotilla::NamespaceError> {
    /// use flotilla::{CloseOptions, NamespaceError};
    ///
    /// match node.close_namespace("tenant-4711", CloseOptions::default()).await {
    ///     Ok(()) => println!("left the membership, data dropped"),
    ///     Err(NamespaceError::Leave { source, .. }) => println!("still open, retry later: {source}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn close_namespace(self: &Arc<Self>, name: &str, options: CloseOptions) -> Result<(), NamespaceError> {
        let ns = Namespace::new(name)?;
        let _op = self.namespaces.lock_op(&ns).await;
        if self.is_closing() {
            return Err(NamespaceError::NodeClosing);
        }
        let Some(entry) = self.namespaces.get(&ns) else {
            return Ok(());
        };
        // First: a formation loop that saw the removal would ask the node back in.
        entry.stop_tasks().await;
        let group = entry.group();
        let left = match self.leave(&group).await {
            Ok(left) => left,
            Err(e) => {
                self.spawn_tasks(&ns, &entry);
                return Err(e);
            }
        };
        self.crash_point(CrashPoint::CloseAfterLeave).await?;
        self.namespaces.remove(&ns);
        if let Err(e) = group.raft.shutdown().await {
            warn!(namespace = %ns, error = %e, "raft shutdown failed");
        }
        self.namespaces
            .persist(|set| {
                set.open.remove(&ns);
                if options.keep_data {
                    set.kept.insert(ns.clone());
                }
            })
            .map_err(NamespaceError::Storage)?;
        self.crash_point(CrashPoint::CloseAfterUnlist).await?;
        if !options.keep_data {
            self.drop_data(&ns).await.map_err(NamespaceError::Storage)?;
        }
        info!(namespace = %ns, ?left, keep_data = options.keep_data, "namespace closed");
        Ok(())
    }

    /// Leave the membership of `group`'s namespace: hand leadership off if this node leads,
    /// then have the leader remove this node and wait for the commit.
    async fn leave(&self, group: &Arc<Group>) -> Result<Left, NamespaceError> {
        let ns = group.namespace.to_string();
        let m = group.metrics();
        if m.last_log_index.is_none() {
            return Ok(Left::NeverMember);
        }
        let membership = m.membership_config.membership();
        if membership.get_node(&self.id).is_none() {
            return Ok(Left::Removed);
        }
        let voters: BTreeSet<_> = membership.voter_ids().collect();
        if voters.len() == 1 && voters.contains(&self.id) {
            let others = membership.nodes().filter(|(id, _)| **id != self.id).count();
            if others > 0 {
                return Err(NamespaceError::LastVoter { namespace: ns, others });
            }
            return Ok(Left::Ended);
        }
        if group.is_leader() {
            let budget = crate::shutdown::HANDOFF_BUDGET.min(self.config.request_timeout());
            let silence = std::time::Duration::from_millis(self.config.timing().election_max_ms);
            crate::shutdown::hand_off_all(
                std::slice::from_ref(group),
                self.id,
                silence,
                Instant::now() + budget,
                &self.liveness,
            )
            .await;
        }
        let deadline = Instant::now() + self.config.request_timeout();
        match self.forwarder.submit(group, CommandRequest::Remove(self.id), deadline).await {
            Ok(_) => Ok(Left::Removed),
            // An earlier attempt may have been committed (a timeout, then "not a member").
            Err(e) if self.removed_per_leader(group).await => {
                info!(namespace = %ns, error = %e, "the leader no longer counts this node: already removed");
                Ok(Left::Removed)
            }
            Err(source) => Err(NamespaceError::Leave { namespace: ns, source }),
        }
    }

    /// Whether the leader this node knows of reports, for its own cluster, that this node is
    /// not in its configuration.
    async fn removed_per_leader(&self, group: &Group) -> bool {
        let Some(leader) = group.leader().filter(|l| *l != self.id) else { return false };
        let mine = cluster_of(&group.metrics());
        let hello = FormationRequest::Hello(self.local_view(&group.namespace, None));
        match self.formation_call(&group.namespace, leader, hello).await {
            Ok(FormationResponse::View(view)) => {
                matches!(view.phase, PeerPhase::Member(m) if m.cluster == mine && !m.includes_you)
            }
            _ => false,
        }
    }

    /// Drop everything this node holds of `ns`, durably: tables and snapshot, then the
    /// formation record, then the membership in `node.key` (last: while any of the rest is
    /// left, the next start cleans it and forgets the membership then).
    async fn drop_data(&self, ns: &Namespace) -> Result<(), String> {
        self.store.wipe_namespace(ns).await.map_err(|e| e.to_string())?;
        RecordFile::new(&self.config.data_dir, ns).remove()?;
        self.namespaces.ledger.forget(ns).await?;
        info!(namespace = %ns, "local data of the namespace dropped");
        Ok(())
    }

    /// Set up a namespace that is in the persisted set: formation state, group, tasks. At
    /// start (`at_start`), `--force-bootstrap` applies as before.
    pub(crate) async fn open_listed(
        self: &Arc<Self>,
        ns: &Namespace,
        started: Instant,
        at_start: bool,
    ) -> Result<(), StartError> {
        let record = RecordFile::new(&self.config.data_dir, ns);
        let ledger = self.namespaces.ledger.clone();
        let config = &self.config;
        let formation =
            Formation::load(self.id, ns.clone(), record, ledger, config.expect, config.voter_target, started)
                .map_err(StartError::Storage)?;
        // An operator's recovery stays in the timeline: the event happened with the agent stopped.
        if let Some(forced) = self.store.forced_membership(ns).map_err(|e| StartError::Storage(e.to_string()))? {
            formation.note(crate::recovery::describe(&forced));
        }
        // Decided before Raft opens the store: a node that was ever a member never founds.
        let fresh = !self.store.has_state(ns).map_err(|e| StartError::Storage(e.to_string()))?;
        let force = at_start && fresh && config.force_bootstrap;
        if let (true, Some(reason)) = (force, formation.rejoin_only()) {
            return Err(StartError::ForceBootstrapAfterDataLoss { namespace: ns.to_string(), reason });
        }
        let group = open_group(config, &self.transport, &self.store, &self.factory, ns).await?;
        let entry = Arc::new(OpenNamespace::new(Arc::new(GroupSlot::new(group)), Arc::new(formation)));
        self.namespaces.insert(ns.clone(), entry.clone());
        // `--force-bootstrap` only on a clean slate: never over a promise or a decision.
        let clean = entry.formation.lock().founder.phase() == flotilla_core::formation::FreshPhase::Free;
        if force && clean {
            self.force_found(ns).await?;
        }
        self.spawn_tasks(ns, &entry);
        Ok(())
    }

    fn spawn_tasks(self: &Arc<Self>, ns: &Namespace, entry: &OpenNamespace) {
        entry.set_tasks(vec![driver::spawn(self, ns.clone())]);
    }

    /// Halt here if a test asked for a crash at `point`.
    async fn crash_point(&self, point: CrashPoint) -> Result<(), NamespaceError> {
        let armed = *self.crash_at.lock().unwrap_or_else(|p| p.into_inner()) == Some(point);
        if armed {
            warn!(?point, "test crash point reached: halting");
            self.halt().await;
            return Err(NamespaceError::Crashed(point));
        }
        Ok(())
    }

    /// Make the node crash (halt) when an open or close reaches `point` (in-process tests of
    /// crash safety; `None` disarms it).
    ///
    /// ```no_run
    /// # async fn example(node: std::sync::Arc<flotilla::Node>) {
    /// use flotilla::{in_process::CrashPoint, NamespaceError};
    ///
    /// node.crash_at(Some(CrashPoint::OpenAfterPersist));
    /// let opened = node.open_namespace("tenant-4711").await; // a namespace not open yet
    /// assert!(matches!(opened, Err(NamespaceError::Crashed(CrashPoint::OpenAfterPersist)))); // the node halted
    /// # }
    /// ```
    #[cfg(feature = "in-process")]
    pub fn crash_at(&self, point: Option<CrashPoint>) {
        *self.crash_at.lock().unwrap_or_else(|p| p.into_inner()) = point;
    }
}

/// The set of namespaces to serve at start: the persisted one, or (no file yet) the
/// `--namespace` flags, with the namespaces the node holds anything of (`stored`: data, a
/// formation record, a membership in `node.key`) but no flag for kept (not served, not
/// cleaned), so a node upgraded from a version without the file loses nothing, not even the
/// memberships that keep it from founding a namespace it lost its data of.
pub(crate) fn initial_set(
    file: &NamespaceSetFile,
    flags: &[Namespace],
    stored: &BTreeSet<Namespace>,
) -> Result<(NamespaceSet, bool), String> {
    let flags: BTreeSet<Namespace> = flags.iter().cloned().collect();
    if let Some(set) = file.load()? {
        if set.open != flags {
            let names = |s: &BTreeSet<Namespace>| s.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(",");
            warn!(
                persisted = %names(&set.open),
                flags = %names(&flags),
                "the --namespace flags differ from the persisted set of open namespaces: serving the persisted \
                 set (flags only seed a fresh node; open or close namespaces with `flotilla ns open|close`)"
            );
        }
        return Ok((set, true));
    }
    let kept: BTreeSet<Namespace> = stored.difference(&flags).cloned().collect();
    for ns in &kept {
        warn!(namespace = %ns, "data of a namespace without --namespace flag kept (not served): open it to serve it");
    }
    let set = NamespaceSet { open: flags, kept };
    file.save(&set)?;
    Ok((set, false))
}

impl Node {
    /// Drop what this node holds (`stored`: data, formation records, memberships in
    /// `node.key`) of namespaces outside the persisted set: an interrupted close (its removal
    /// was committed before the namespace left the set), or a failed open.
    pub(crate) async fn clean_leftovers(&self, stored: &BTreeSet<Namespace>) -> Result<(), StartError> {
        let set = self.namespaces.set();
        for ns in stored.iter().filter(|ns| !set.holds(ns)) {
            warn!(namespace = %ns, "dropping the leftovers of a namespace that is not in the set of open namespaces");
            self.drop_data(ns).await.map_err(StartError::Storage)?;
        }
        Ok(())
    }
}
