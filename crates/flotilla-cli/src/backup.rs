//! `flotilla backup save`, `inspect` and `restore`: online backups taken over HTTP (the admin
//! route `GET /v1/ns/{ns}/backup`), written crash-safely, checked offline, and restored into a
//! data directory as a new cluster (`crate::restore`) or into a running namespace (the admin
//! route `POST /v1/ns/{ns}/restore`).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use flotilla_store::{verify_backup, BackupFile, BackupSummary};
use serde_json::{json, Value};

use crate::commands::AdminArgs;
use crate::Target;

/// `flotilla backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take an online backup of the namespace (-n) on the node (--addr) and write it to FILE,
    /// crash-safely; with --all, back up every namespace the node serves into the directory
    /// FILE, one `<namespace>.flbk` each. Prints what each file holds.
    Save {
        /// The backup file (with --all: the directory).
        file: PathBuf,
        /// Every namespace the node serves (-n is then ignored).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print a backup file's metadata and verify it whole (structure and checksums); exits
    /// non-zero when the file is damaged or not a backup.
    Inspect {
        /// The backup file.
        file: PathBuf,
    },
    /// With --data-dir: prepare the data directory DIR (new, or without the namespace) from
    /// which an agent starts a NEW cluster of the namespace with the backup's data: a new
    /// cluster id, this directory's identity as the only voter. Start the agent on DIR
    /// afterwards; other fresh nodes join it.
    ///
    /// With --into-running: replace the whole state of the namespace served by the node
    /// (--addr) with the backup's, through the log (admin). Reads and writes of the namespace
    /// are refused while it runs, its watches are cancelled, and its revision ends above every
    /// earlier one with all history compacted. Needs --confirm NAME.
    ///
    /// The namespace is the backup's, unless -n names another one.
    #[command(group = clap::ArgGroup::new("into").required(true).args(["data_dir", "into_running"]))]
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data directory to prepare (created if missing).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Replace the state of the running namespace on the cluster of --addr.
        #[arg(long)]
        into_running: bool,
        /// The namespace's name again, to confirm that every key of it is replaced.
        #[arg(long, requires = "into_running")]
        confirm: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub async fn backup(target: &Target, op: BackupCommand) -> anyhow::Result<()> {
    match op {
        BackupCommand::Save { file, all: false, admin } => {
            let client = admin.client(target)?;
            let summary = save(&client, &target.namespace, &file).await?;
            print(&describe(&file, &summary))
        }
        BackupCommand::Save { file, all: true, admin } => {
            let client = admin.client(target)?;
            std::fs::create_dir_all(&file).with_context(|| format!("creating {}", file.display()))?;
            let mut saved = Vec::new();
            for ns in namespaces(&client).await? {
                let path = file.join(format!("{ns}.{}", flotilla::BACKUP_EXTENSION));
                saved.push(describe(&path, &save(&client, &ns, &path).await?));
            }
            print(&Value::Array(saved))
        }
        BackupCommand::Inspect { file } => print(&describe(&file, &inspect(&file)?)),
        BackupCommand::Restore { file, data_dir, into_running: _, confirm, admin } => {
            let backup = inspect(&file)?;
            // `-n` defaults to `default`: then the backup's own namespace is meant.
            let name = match target.namespace.as_str() {
                flotilla_core::config::DEFAULT_NAMESPACE => backup.meta.namespace.clone(),
                other => other.to_string(),
            };
            match data_dir {
                Some(dir) => print(&crate::restore::restore(&file, &dir, &name, &describe(&file, &backup)).await?),
                None => print(&restore_into_running(&admin.client(target)?, &file, &name, confirm).await?),
            }
        }
    }
}

/// Replace the state of the running namespace `name` with the backup `file`, once the
/// operator confirmed with its name.
async fn restore_into_running(
    client: &flotilla_http::Client,
    file: &Path,
    name: &str,
    confirm: Option<String>,
) -> anyhow::Result<Value> {
    if confirm.as_deref() != Some(name) {
        bail!(
            "restoring into the running namespace {name} replaces every key, lease and queue item it holds and \
             cancels its watches: add --confirm {name}"
        );
    }
    client.restore_from(name, file, name).await.with_context(|| format!("restoring {} into {name}", file.display()))
}

/// Stream the backup of `ns` into `path`, make it durable there, and check what landed.
async fn save(client: &flotilla_http::Client, ns: &str, path: &Path) -> anyhow::Result<BackupSummary> {
    let mut file = BackupFile::create(path).with_context(|| format!("creating {}", path.display()))?;
    client.backup_into(ns, &mut file).await.with_context(|| format!("backing up namespace {ns}"))?;
    file.commit()?;
    inspect(path).inspect_err(|_| {
        // Never leave a file that looks like a backup but is not one.
        let _ = std::fs::remove_file(path);
    })
}

/// Verify the backup file at `path`.
fn inspect(path: &Path) -> anyhow::Result<BackupSummary> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    match verify_backup(BufReader::with_capacity(256 << 10, file), len) {
        Ok(summary) => Ok(summary),
        Err(e) => bail!("{} is damaged or not a flotilla backup: {e}", path.display()),
    }
}

/// The namespaces the node serves (`GET /v1/ns`).
async fn namespaces(client: &flotilla_http::Client) -> anyhow::Result<Vec<String>> {
    let reply = client.get_json("/v1/ns").await?;
    let listed = reply["namespaces"].as_array().context("GET /v1/ns: no namespace list")?;
    listed
        .iter()
        .map(|n| n["namespace"].as_str().map(str::to_string).context("GET /v1/ns: a namespace without a name"))
        .collect()
}

fn describe(path: &Path, s: &BackupSummary) -> Value {
    json!({
        "file": path.display().to_string(),
        "verified": true,
        "format_version": s.meta.format_version,
        "store_format": s.meta.store_format,
        "namespace": s.meta.namespace,
        "cluster_id": s.meta.cluster_id,
        "index": s.meta.index,
        "term": s.meta.term,
        "revision": s.meta.revision,
        "taken_at_unix_ms": s.meta.taken_at_unix_ms,
        "flotilla_version": s.meta.flotilla_version,
        "rows": s.rows,
        "dedup_records": s.dedup_records,
        "body_bytes": s.body_bytes,
        "sha256": s.sha256,
    })
}

pub(crate) fn print(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
