//! The per-node registry of open namespaces: namespace -> its group slot, formation state and
//! background tasks, plus the durable set of namespaces the node serves.
//!
//! `Node` is the composition root and delegates here: every lookup of a namespace's group or
//! formation goes through `NamespaceRegistry::get`, so a namespace opened or closed at
//! runtime is seen by inbound traffic, commands and status at once. Opening and closing take
//! the namespace's operation lock (`NamespaceRegistry::lock_op`): one operation per
//! namespace at a time, operations on different namespaces run in parallel. The procedures
//! themselves are in `namespace_lifecycle.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use flotilla_core::Namespace;
use tokio::task::JoinHandle;

use crate::formation::ledger::MembershipLedger;
use crate::formation::Formation;
use crate::group::{Group, GroupSlot};
use crate::namespace_set::{NamespaceSet, NamespaceSetFile};

/// How a namespace is closed on this node.
///
/// ```no_run
/// # async fn example(node: std::sync::Arc<flotilla::Node>) -> Result<(), flotilla::NamespaceError> {
/// // Leave the membership but keep the data: a later open rejoins with it.
/// node.close_namespace("tenant-4711", flotilla::CloseOptions { keep_data: true }).await?;
/// node.open_namespace("tenant-4711").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseOptions {
    /// Keep the namespace's local data (tables, snapshot, formation record, the membership in
    /// `node.key`): the node still leaves the membership, and a later open rejoins with it.
    pub keep_data: bool,
}

/// One open namespace on this node.
pub struct OpenNamespace {
    /// The namespace's current Raft group (replaced in place by a dissolve).
    pub(crate) slot: Arc<GroupSlot>,
    /// Its formation state.
    pub(crate) formation: Arc<Formation>,
    /// Its formation loop, stopped when the namespace closes (the autopilot is one task per
    /// node, `formation/autopilot_loop.rs`).
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl OpenNamespace {
    /// A namespace entry without tasks yet.
    pub(crate) fn new(slot: Arc<GroupSlot>, formation: Arc<Formation>) -> Self {
        Self { slot, formation, tasks: Mutex::new(Vec::new()) }
    }

    /// The current group.
    pub(crate) fn group(&self) -> Arc<Group> {
        self.slot.get()
    }

    /// Keep `tasks` as the namespace's background tasks.
    pub(crate) fn set_tasks(&self, tasks: Vec<JoinHandle<()>>) {
        let mut held = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        held.extend(tasks);
    }

    /// Stop the namespace's background tasks and wait until they are gone. A task stops at its
    /// next await point; what it already did stays done (every formation step persists before
    /// it acts, so a step cut short is taken again or never matters once the namespace closes).
    pub(crate) async fn stop_tasks(&self) {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// The namespaces a node serves, and the durable set behind them.
pub(crate) struct NamespaceRegistry {
    open: RwLock<BTreeMap<Namespace, Arc<OpenNamespace>>>,
    /// One lock per namespace with an operation under way (entries go when unused).
    ops: Mutex<HashMap<Namespace, Arc<tokio::sync::Mutex<()>>>>,
    /// The persisted set, as last written.
    set: Mutex<NamespaceSet>,
    file: NamespaceSetFile,
    /// The memberships kept with the node's identity.
    pub(crate) ledger: Arc<MembershipLedger>,
}

/// Held while an open or close of one namespace runs.
pub(crate) struct OpGuard<'a> {
    registry: &'a NamespaceRegistry,
    ns: Namespace,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        let mut ops = self.registry.ops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(guard) = self.guard.take() {
            let lock = tokio::sync::OwnedMutexGuard::mutex(&guard).clone();
            drop(guard);
            // Only the map and `lock` hold it: nobody waits, the entry can go (waiters clone
            // it under the map's lock, so none can appear meanwhile).
            if Arc::strong_count(&lock) == 2 {
                ops.remove(&self.ns);
            }
        }
    }
}

impl NamespaceRegistry {
    /// An empty registry whose set lives in `data_dir`, starting from `set`.
    pub(crate) fn new(data_dir: &Path, set: NamespaceSet, ledger: Arc<MembershipLedger>) -> Self {
        Self {
            open: RwLock::new(BTreeMap::new()),
            ops: Mutex::new(HashMap::new()),
            set: Mutex::new(set),
            file: NamespaceSetFile::new(data_dir),
            ledger,
        }
    }

    /// Wait for the operation lock of `ns`.
    pub(crate) async fn lock_op(&self, ns: &Namespace) -> OpGuard<'_> {
        let lock = {
            let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
            ops.entry(ns.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        OpGuard { registry: self, ns: ns.clone(), guard: Some(guard) }
    }

    /// Whether an open or close of `ns` is under way (its operation lock is held or awaited).
    pub(crate) fn busy(&self, ns: &Namespace) -> bool {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).contains_key(ns)
    }

    /// The open namespace `ns`.
    pub(crate) fn get(&self, ns: &Namespace) -> Option<Arc<OpenNamespace>> {
        self.read().get(ns).cloned()
    }

    /// Every open namespace, in name order.
    pub(crate) fn all(&self) -> Vec<(Namespace, Arc<OpenNamespace>)> {
        self.read().iter().map(|(ns, e)| (ns.clone(), e.clone())).collect()
    }

    /// The names of the open namespaces.
    pub(crate) fn names(&self) -> Vec<Namespace> {
        self.read().keys().cloned().collect()
    }

    /// Serve `ns` through `entry`.
    pub(crate) fn insert(&self, ns: Namespace, entry: Arc<OpenNamespace>) {
        self.open.write().unwrap_or_else(|p| p.into_inner()).insert(ns, entry);
    }

    /// Stop serving `ns`: from now on its traffic gets the unknown-namespace refusal.
    pub(crate) fn remove(&self, ns: &Namespace) -> Option<Arc<OpenNamespace>> {
        self.open.write().unwrap_or_else(|p| p.into_inner()).remove(ns)
    }

    /// The persisted set, as last written.
    pub(crate) fn set(&self) -> NamespaceSet {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Change the persisted set with `change` and write it durably; the set in memory changes
    /// only once the file says so.
    pub(crate) fn persist(&self, change: impl FnOnce(&mut NamespaceSet)) -> Result<(), String> {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = set.clone();
        change(&mut next);
        if next == *set {
            return Ok(());
        }
        self.file.save(&next)?;
        *set = next;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Namespace, Arc<OpenNamespace>>> {
        self.open.read().unwrap_or_else(|p| p.into_inner())
    }
}
