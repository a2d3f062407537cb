//! Scheduled backups: with `Config::backup_dir`, every `Config::backup_every` the node writes a
//! backup of each namespace it serves into that directory and keeps the newest
//! `Config::backup_keep` of each.
//!
//! A file is `<namespace>-<unix ms, 20 digits>.flbk`, so names sort by time, written crash-safely
//! ([`flotilla_store::BackupFile`]: temporary file, fsync, rename), so the directory only ever
//! holds whole backups; a crash can leave a `.<name>.tmp`, removed when the loop starts.
//! A namespace's backups are told from another's by the exact shape of the name (a namespace
//! `a` never prunes the files of `a-b`), and nothing else in the directory is touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use flotilla_store::{BackupFile, BACKUP_TEMP_SUFFIX};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn, Instrument};

use crate::cluster::Cluster;
use crate::node::Node;

/// Extension of backup files.
///
/// ```
/// let name = format!("orders-000042.{}", flotilla::BACKUP_EXTENSION);
/// assert!(name.ends_with(".flbk"));
/// ```
pub const BACKUP_EXTENSION: &str = "flbk";
/// Digits of the time in a scheduled backup's name.
const TIME_DIGITS: usize = 20;
/// Most directory entries read when pruning (the directory is ours; this only bounds the work
/// if something else fills it).
const MAX_LISTED: usize = 100_000;

/// What the loop needs of the configuration.
#[derive(Debug, Clone)]
struct Schedule {
    dir: PathBuf,
    every: Duration,
    keep: usize,
}

pub(crate) fn spawn(node: &Arc<Node>) {
    let Some(dir) = node.config.backup_dir.clone() else {
        return;
    };
    if node.config.encrypt_at_rest {
        warn!(dir = %dir.display(), "scheduled backups are plaintext although the data dir is encrypted at rest: protect the backup directory");
    }
    let schedule = Schedule { dir, every: node.config.backup_every, keep: node.config.backup_keep };
    tokio::spawn(run(Arc::downgrade(node), schedule).instrument(tracing::info_span!("backups")));
}

async fn run(weak: Weak<Node>, schedule: Schedule) {
    if let Err(e) = remove_unfinished(&schedule.dir) {
        warn!(dir = %schedule.dir.display(), error = %e, "cannot clean up unfinished backups");
    }
    let mut ticks = tokio::time::interval(schedule.every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate: the first backups come one interval after the start.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(node) = weak.upgrade() else { return };
        if node.is_closing() {
            return;
        }
        let clusters = node.clusters();
        drop(node);
        for cluster in clusters {
            match backup_one(&cluster, &schedule).await {
                Ok(path) => info!(namespace = %cluster.namespace(), path = %path.display(), "backup written"),
                Err(e) => warn!(namespace = %cluster.namespace(), error = %e, "scheduled backup failed"),
            }
        }
    }
}

/// Write one backup of `cluster`'s namespace and prune its older ones.
async fn backup_one(cluster: &Cluster, schedule: &Schedule) -> Result<PathBuf, String> {
    let backup = cluster.backup().map_err(|e| e.to_string())?;
    let ns = cluster.namespace().as_str().to_string();
    let schedule = schedule.clone();
    tokio::task::spawn_blocking(move || {
        fs::create_dir_all(&schedule.dir).map_err(|e| format!("creating {}: {e}", schedule.dir.display()))?;
        let path = schedule.dir.join(file_name(&ns, backup.meta().taken_at_unix_ms));
        let file = BackupFile::create(&path).map_err(|e| e.to_string())?;
        backup.write_to(file).and_then(BackupFile::commit).map_err(|e| e.to_string())?;
        prune(&schedule.dir, &ns, schedule.keep)?;
        Ok(path)
    })
    .await
    .map_err(|e| format!("backup task failed: {e}"))?
}

/// The name of the scheduled backup of `ns` taken at `unix_ms`.
fn file_name(ns: &str, unix_ms: u64) -> String {
    format!("{ns}-{unix_ms:0width$}.{BACKUP_EXTENSION}", width = TIME_DIGITS)
}

/// Whether `name` is a scheduled backup of `ns`.
fn is_backup_of(name: &str, ns: &str) -> bool {
    let time = name
        .strip_prefix(ns)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix(BACKUP_EXTENSION))
        .and_then(|rest| rest.strip_suffix('.'));
    time.is_some_and(|t| t.len() == TIME_DIGITS && t.bytes().all(|b| b.is_ascii_digit()))
}

/// Of `names`, those to remove so that the newest `keep` backups of `ns` remain.
fn to_prune(mut names: Vec<String>, ns: &str, keep: usize) -> Vec<String> {
    names.retain(|n| is_backup_of(n, ns));
    names.sort();
    let excess = names.len().saturating_sub(keep);
    names.truncate(excess);
    names
}

/// The names of the first [`MAX_LISTED`] entries of `dir`.
fn list(dir: &Path) -> Result<Vec<String>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    Ok(entries.take(MAX_LISTED).flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
}

/// Remove all but the newest `keep` scheduled backups of `ns` in `dir`.
fn prune(dir: &Path, ns: &str, keep: usize) -> Result<(), String> {
    for name in to_prune(list(dir)?, ns, keep) {
        let path = dir.join(&name);
        fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        info!(path = %path.display(), "old backup removed");
    }
    Ok(())
}

/// Remove the temporary files of backups a crash interrupted.
fn remove_unfinished(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    for name in list(dir)? {
        let unfinished = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(BACKUP_TEMP_SUFFIX))
            .is_some_and(|n| n.ends_with(&format!(".{BACKUP_EXTENSION}")));
        if unfinished {
            let path = dir.join(&name);
            fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_belong_to_one_namespace() {
        assert_eq!(file_name("a", 1_700_000_000_000), "a-00000001700000000000.flbk");
        assert!(is_backup_of(&file_name("a", 5), "a"));
        assert!(!is_backup_of(&file_name("a-b", 5), "a"), "another namespace's backup");
        assert!(!is_backup_of("a-123.flbk", "a"), "not the scheduled shape");
        assert!(!is_backup_of(&format!(".{}.tmp", file_name("a", 5)), "a"));
        assert!(!is_backup_of("notes.txt", "a"));
    }

    #[test]
    fn pruning_keeps_the_newest_of_the_namespace_only() {
        let mut names: Vec<String> = [30, 10, 20, 40].iter().map(|t| file_name("a", *t)).collect();
        names.push(file_name("a-b", 1));
        names.push("notes.txt".into());
        assert_eq!(to_prune(names.clone(), "a", 2), vec![file_name("a", 10), file_name("a", 20)]);
        assert!(to_prune(names.clone(), "a", 4).is_empty());
        assert_eq!(to_prune(names, "a-b", 0), vec![file_name("a-b", 1)]);
    }
}
