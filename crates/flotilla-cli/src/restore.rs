//! `flotilla backup restore FILE --data-dir DIR`: prepare a data directory from which an agent
//! starts a new cluster of the namespace with a backup's data (`flotilla::recovery::restore`).

use std::path::Path;

use anyhow::{bail, Context};
use flotilla::namespace_set::{NamespaceSet, NamespaceSetFile};
use flotilla_core::Namespace;
use flotilla_store::{Store, DB_FILE};
use serde_json::{json, Value};

/// Restore the verified backup `file` (described by `backup`) into namespace `name` of the data
/// directory `data_dir`; returns what to print.
pub async fn restore(file: &Path, data_dir: &Path, name: &str, backup: &Value) -> anyhow::Result<Value> {
    let ns = Namespace::new(name.to_string()).context("the namespace name")?;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let set_file = NamespaceSetFile::new(data_dir);
    let mut set = served_set(&set_file, data_dir, &ns)?;
    let me = flotilla_net::load_or_create_keypair(data_dir)?.public().to_peer_id();
    let store = Store::open(data_dir).with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let (restored, forced) = flotilla::recovery::restore(&store, &ns, file, me)
        .await
        .with_context(|| format!("restoring {} into {}", file.display(), data_dir.display()))?;
    store.shutdown();
    // Last: until the namespace is listed, an agent would not serve (or would drop) a partial
    // restore; a failed restore is retried into an emptied directory.
    set.open.insert(ns.clone());
    set_file.save(&set).map_err(anyhow::Error::msg)?;
    Ok(json!({
        "data_dir": data_dir.display().to_string(),
        "namespace": ns.as_str(),
        "node_id": me.to_string(),
        "backup": backup,
        "applied_index": restored.applied.index,
        "new_cluster": forced.cluster,
        "action": flotilla::recovery::describe(&forced),
        "next": "start the agent on this data directory: it leads the namespace alone; start fresh nodes to join it",
    }))
}

/// The data directory's set of namespaces, refusing one that already holds `ns`, and a store
/// without a set (made by a version before sets, whose namespaces a new set would drop).
fn served_set(file: &NamespaceSetFile, data_dir: &Path, ns: &Namespace) -> anyhow::Result<NamespaceSet> {
    match file.load().map_err(anyhow::Error::msg)? {
        Some(set) if set.holds(ns) => {
            bail!("{} already holds namespace {ns}: restore into a new data directory", data_dir.display())
        }
        Some(set) => Ok(set),
        None if data_dir.join(DB_FILE).exists() => {
            bail!("{} holds a store but no namespace set: restore into a new data directory", data_dir.display())
        }
        None => Ok(NamespaceSet::default()),
    }
}
