//! `flotilla keygen` and `flotilla keyring ...`: cluster key files and their rotation.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use flotilla_core::keyring::{ClusterKey, Keyring};
use serde_json::json;

use crate::commands::AdminArgs;
use crate::Target;

/// `flotilla keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the new keyring file (created with mode 0600; never overwritten).
    pub path: PathBuf,
}

/// `flotilla keyring ...`
#[derive(Debug, Subcommand)]
pub enum KeyringCommand {
    /// Print the id of every key in a keyring file, the sealing key first (no secret shown).
    Show {
        /// The keyring file.
        path: PathBuf,
    },
    /// Make the node re-read its `--cluster-key-file` (a step of a key rotation).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Write a fresh random key to a new file, readable by its owner only.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let key = ClusterKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let shown = args.path.display();
    let mut file = options.open(&args.path).with_context(|| format!("creating {shown} (it must not exist yet)"))?;
    writeln!(file, "# flotilla cluster key {}; the first key of a keyring seals, the others are accepted", key.id())?;
    writeln!(file, "{}", key.to_hex())?;
    file.sync_all().with_context(|| format!("syncing {shown}"))?;
    println!("wrote key {} to {shown}", key.id());
    Ok(())
}

/// Run a `flotilla keyring` command.
pub async fn keyring(target: &Target, op: KeyringCommand) -> anyhow::Result<()> {
    let reply = match op {
        KeyringCommand::Show { path } => {
            let ring = Keyring::load(&path)?;
            let ids: Vec<String> = ring.ids().iter().map(|id| id.to_string()).collect();
            json!({ "sealing_key": ids[0], "accepted_keys": ids })
        }
        KeyringCommand::Reload { admin } => {
            admin.client(target)?.post_json("/v1/admin/keyring/reload", &json!({})).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}
