//! CLI commands that talk to a node's HTTP API.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use flotilla_core::AdminToken;
use flotilla_http::Condition;
use serde_json::json;

use crate::status_table::{self, Output};
use crate::Target;

/// The admin token of commands that use the membership and admin routes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminArgs {
    /// File holding the node's admin token (mode 0600), sent as `Authorization: Bearer`;
    /// needed when the node was started with `--admin-token-file`.
    #[arg(long, env = "FLOTILLA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
}

impl AdminArgs {
    /// A client of `target`, carrying the admin token when a file is given.
    pub(crate) fn client(&self, target: &Target) -> anyhow::Result<flotilla_http::Client> {
        let client = target.client();
        Ok(match &self.admin_token_file {
            Some(path) => client.with_admin_token(&AdminToken::load(path).context("reading --admin-token-file")?),
            None => client,
        })
    }
}

/// `flotilla kv ...`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Store a value (from the argument, or stdin when omitted).
    Put {
        key: String,
        value: Option<String>,
        /// Name the write (`Idempotency-Key`): repeating the command with the same key after
        /// an unknown outcome applies it at most once.
        #[arg(long, conflicts_with_all = ["if_match", "if_absent"])]
        idempotency_key: Option<String>,
        /// Write only if the key was last changed at this revision (its ETag).
        #[arg(long, value_name = "MOD_REVISION", conflicts_with = "if_absent")]
        if_match: Option<u64>,
        /// Write only if the key does not exist.
        #[arg(long)]
        if_absent: bool,
        /// Attach the key to this lease: it is deleted when the lease ends.
        #[arg(long, conflicts_with_all = ["if_match", "if_absent", "idempotency_key"])]
        lease: Option<u64>,
    },
    /// Print a value (its revisions go to stderr).
    Get {
        key: String,
        /// Read the local replica without contacting the leader.
        #[arg(long)]
        stale: bool,
        /// Read the value as of this revision (until it is compacted).
        #[arg(long, default_value_t = 0)]
        revision: u64,
    },
    /// Delete a key.
    Del {
        key: String,
        /// Delete only if the key was last changed at this revision.
        #[arg(long, value_name = "MOD_REVISION")]
        if_match: Option<u64>,
    },
    /// List every key with a prefix (page by page), with `--values` as JSON lines.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        /// Print each key with its value and revisions, one JSON object per line.
        #[arg(long)]
        values: bool,
    },
    /// Run a transaction given as JSON (see the README), from a file or stdin.
    Txn {
        /// The JSON file; stdin when omitted.
        file: Option<PathBuf>,
    },
    /// Forget the history before a revision (an admin operation).
    Compact {
        revision: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `flotilla lease ...`
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds; prints its id.
    Grant { ttl: u64 },
    /// Renew a lease once, or every third of its TTL until Ctrl-C with --forever.
    Keepalive {
        id: u64,
        #[arg(long)]
        forever: bool,
    },
    /// Revoke a lease: its keys are deleted.
    Revoke { id: u64 },
    /// Show what a lease has left, and its keys.
    Ttl { id: u64 },
    /// List the leases of the namespace.
    List,
}

pub async fn lease(target: &Target, op: LeaseCommand) -> anyhow::Result<()> {
    let client = target.client();
    let ns = &target.namespace;
    let reply = match op {
        LeaseCommand::Grant { ttl } => client.post_json(&format!("/v1/lease/{ns}"), &json!({ "ttl": ttl })).await?,
        LeaseCommand::Keepalive { id, forever } => loop {
            let reply = client.post_json(&format!("/v1/lease/{ns}/{id}/keepalive"), &json!({})).await?;
            if !forever {
                break reply;
            }
            let ttl = reply["ttl"].as_u64().unwrap_or(3).max(1);
            tokio::time::sleep(std::time::Duration::from_millis(ttl * 1000 / 3)).await;
        },
        LeaseCommand::Revoke { id } => client.delete_json(&format!("/v1/lease/{ns}/{id}")).await?,
        LeaseCommand::Ttl { id } => client.get_json(&format!("/v1/lease/{ns}/{id}?keys=true")).await?,
        LeaseCommand::List => client.get_json(&format!("/v1/lease/{ns}")).await?,
    };
    println!("{reply}");
    Ok(())
}

/// `flotilla queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Append an item (from the argument, or stdin when omitted).
    Push { name: String, value: Option<String> },
    /// Take the first item (prints it as JSON; exits 1 when the queue is empty).
    Pop {
        name: String,
        /// Keep the item hidden this many seconds; it comes back unless acknowledged.
        #[arg(long)]
        visibility: Option<u64>,
    },
    /// Acknowledge an item taken with --visibility.
    Ack {
        name: String,
        id: u64,
        #[arg(long)]
        lease: u64,
    },
    /// Print the first item without taking it.
    Peek { name: String },
    /// Print how many items wait and how many are in flight.
    Len { name: String },
}

/// The value given as an argument, or stdin read to the end when it is omitted.
fn value_or_stdin(value: Option<String>) -> std::io::Result<Vec<u8>> {
    match value {
        Some(v) => Ok(v.into_bytes()),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            Ok(buf)
        }
    }
}

pub async fn queue(target: &Target, op: QueueCommand) -> anyhow::Result<()> {
    let client = target.client();
    let base = format!("/v1/queue/{}", target.namespace);
    let reply = match op {
        QueueCommand::Push { name, value } => {
            let value = value_or_stdin(value)?;
            client.post_bytes(&format!("{base}/{name}"), value).await?
        }
        QueueCommand::Pop { name, visibility } => {
            let ms = visibility.unwrap_or(0) * 1000;
            client.post_empty(&format!("{base}/{name}/pop?visibility_ms={ms}")).await?
        }
        QueueCommand::Ack { name, id, lease } => {
            client.post_empty(&format!("{base}/{name}/ack/{id}?lease={lease}")).await?
        }
        QueueCommand::Peek { name } => client.get_json(&format!("{base}/{name}/peek")).await?,
        QueueCommand::Len { name } => client.get_json(&format!("{base}/{name}")).await?,
    };
    println!("{reply}");
    Ok(())
}

/// `flotilla watch ...`
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The key (the prefix with `--prefix`).
    key: String,
    /// Watch every key starting with KEY.
    #[arg(long)]
    prefix: bool,
    /// Start at this revision (until it is compacted); from now on when omitted.
    #[arg(long, default_value_t = 0)]
    from_revision: u64,
    /// Print each key's previous state too.
    #[arg(long)]
    prev: bool,
}

/// Print each change as a JSON line; progress notifications are skipped.
pub async fn watch(target: &Target, args: WatchArgs) -> anyhow::Result<()> {
    let client = target.client();
    let mut cancelled = None;
    client
        .watch(&target.namespace, &args.key, args.prefix, args.from_revision, args.prev, |event| {
            match event.event.as_str() {
                "progress" => {}
                "cancelled" => {
                    cancelled = Some(event.data);
                    return false;
                }
                _ => println!("{}", event.data),
            }
            true
        })
        .await?;
    match cancelled {
        Some(reason) => anyhow::bail!("the watch was cancelled: {reason}"),
        None => Ok(()),
    }
}

/// `flotilla members ...`
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// List members and their roles.
    List,
    /// Add a member (as a voter unless --learner).
    Add {
        peer_id: String,
        /// Multiaddresses where it listens (repeatable). (`--addr` is the HTTP address of the
        /// node to talk to.)
        #[arg(long = "peer-addr", value_name = "MULTIADDR")]
        addrs: Vec<String>,
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a member.
    Remove {
        peer_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `flotilla leader ...`
#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand leadership to another voter (the most up-to-date one unless --to).
    Transfer {
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub async fn kv(target: &Target, op: KvCommand) -> anyhow::Result<()> {
    let client = target.client();
    let ns = &target.namespace;
    match op {
        KvCommand::Put { key, value, idempotency_key, if_match, if_absent, lease } => {
            let value = value_or_stdin(value)?;
            let condition = match (if_match, if_absent) {
                (Some(rev), _) => Some(Condition::ModRevision(rev)),
                (None, true) => Some(Condition::Absent),
                (None, false) => None,
            };
            if let Some(lease) = lease {
                println!("OK (revision {})", client.put_with_lease(ns, &key, value, lease).await?);
                return Ok(());
            }
            match (condition, idempotency_key) {
                (Some(c), _) => println!("OK (revision {})", client.put_if(ns, &key, value, c).await?),
                (None, Some(id)) => println!("OK (index {})", client.put_idempotent(ns, &key, value, &id).await?),
                (None, None) => println!("OK (index {})", client.put(ns, &key, value).await?),
            }
        }
        KvCommand::Get { key, stale, revision } => {
            let read = client.get_at(ns, &key, revision, if stale { "stale" } else { "linearizable" }).await?;
            match read.value {
                Some(v) => {
                    std::io::stdout().write_all(&v)?;
                    if !v.ends_with(b"\n") {
                        println!();
                    }
                    let mod_revision = read.mod_revision.unwrap_or(0);
                    eprintln!("(mod revision {mod_revision}, revision {}, index {})", read.revision, read.index);
                }
                None => anyhow::bail!("key {key:?} not found (revision {}, index {})", read.revision, read.index),
            }
        }
        KvCommand::Del { key, if_match } => match if_match {
            Some(rev) => println!("OK (revision {})", client.delete_if(ns, &key, Condition::ModRevision(rev)).await?),
            None => println!("OK (index {})", client.delete(ns, &key).await?),
        },
        KvCommand::Ls { prefix, values } => {
            let mut after: Option<String> = None;
            loop {
                let page = client.list_page(ns, &prefix, after.as_deref(), values).await?;
                for item in &page.items {
                    match item.as_str() {
                        Some(key) => println!("{key}"),
                        None => println!("{item}"),
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        KvCommand::Txn { file } => {
            let text = match file {
                Some(path) => std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                None => std::io::read_to_string(std::io::stdin())?,
            };
            let body: serde_json::Value = serde_json::from_str(&text).context("the transaction is not JSON")?;
            let reply = client.post_json(&format!("/v1/txn/{ns}"), &body).await?;
            println!("{}", serde_json::to_string_pretty(&reply)?);
        }
        KvCommand::Compact { revision, admin } => {
            let body = json!({ "revision": revision });
            let reply = admin.client(target)?.post_json(&format!("/v1/ns/{ns}/compact"), &body).await?;
            println!("{reply}");
        }
    }
    Ok(())
}

pub async fn status(target: &Target, output: Output) -> anyhow::Result<()> {
    let body = target.client().get_json("/v1/status").await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&body)?),
        Output::Table => {
            let status: flotilla::NodeStatus =
                serde_json::from_value(body).context("the node's status is not what this CLI reads")?;
            print!("{}", status_table::node_table(&status));
        }
    }
    Ok(())
}

pub async fn members(target: &Target, op: MembersCommand) -> anyhow::Result<()> {
    let ns = &target.namespace;
    let reply = match op {
        MembersCommand::List => target.client().get_json(&format!("/v1/ns/{ns}/members")).await?,
        MembersCommand::Add { peer_id, addrs, learner, admin } => {
            let role = if learner { "learner" } else { "voter" };
            let body = json!({ "peer_id": peer_id, "addrs": addrs, "role": role });
            admin.client(target)?.post_json(&format!("/v1/ns/{ns}/members"), &body).await?
        }
        MembersCommand::Remove { peer_id, admin } => {
            admin.client(target)?.delete_json(&format!("/v1/ns/{ns}/members/{peer_id}")).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

pub async fn leader(target: &Target, op: LeaderCommand) -> anyhow::Result<()> {
    let ns = &target.namespace;
    let LeaderCommand::Transfer { to, admin } = op;
    let reply = admin.client(target)?.post_json(&format!("/v1/ns/{ns}/transfer-leader"), &json!({ "to": to })).await?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum NsCommand {
    /// Show the namespace's status on this node: role, leader, members (with their lag, on
    /// the leader), and formation (phase, reason, splits, timeline).
    Status {
        /// Print a table (default) or the node's JSON (with formation peers and counters).
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// On the leader of one side of a split: drop that side's data and join the other side.
    Dissolve {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Open namespace NAME on this node: it forms or joins a cluster of NAME, and stays open
    /// across restarts.
    Open {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Close namespace NAME on this node: hand leadership off, leave the membership, stop the
    /// group and drop its local data (unless --keep-data).
    Close {
        name: String,
        /// Keep the namespace's local data (a later open rejoins with it).
        #[arg(long)]
        keep_data: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the namespaces this node serves, with role and leader.
    List,
}

pub async fn ns(target: &Target, op: NsCommand) -> anyhow::Result<()> {
    let ns = &target.namespace;
    let reply = match op {
        NsCommand::Status { output } => {
            let status = target.client().get_json(&format!("/v1/ns/{ns}/status")).await?;
            if output == Output::Table {
                print!("{}", status_table::namespace_table(&status));
                return Ok(());
            }
            status
        }
        NsCommand::Dissolve { admin } => {
            admin.client(target)?.post_json(&format!("/v1/ns/{ns}/dissolve"), &json!({})).await?
        }
        NsCommand::Open { name, admin } => admin.client(target)?.put_json(&format!("/v1/ns/{name}")).await?,
        NsCommand::Close { name, keep_data, admin } => {
            let query = if keep_data { "?keep_data=true" } else { "" };
            admin.client(target)?.delete_json(&format!("/v1/ns/{name}{query}")).await?
        }
        NsCommand::List => target.client().get_json("/v1/ns").await?,
    };
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}
