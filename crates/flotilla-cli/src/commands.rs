//! CLI commands that talk to a node's HTTP API.

use std::io::{Read, Write};

use clap::Subcommand;
use serde_json::json;

use crate::Target;

/// `flotilla kv ...`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Store a value (from the argument, or stdin when omitted).
    Put { key: String, value: Option<String> },
    /// Print a value.
    Get {
        key: String,
        /// Read the local replica without contacting the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Delete a key.
    Del { key: String },
    /// List keys with a prefix.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
    },
}

/// `flotilla members ...`
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// List members and their roles.
    List,
    /// Add a member (as a voter unless --learner).
    Add {
        peer_id: String,
        /// Multiaddresses where it listens.
        #[arg(long = "addr")]
        addrs: Vec<String>,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member.
    Remove { peer_id: String },
}

/// `flotilla leader ...`
#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand leadership to another voter (the most up-to-date one unless --to).
    Transfer {
        #[arg(long)]
        to: Option<String>,
    },
}

pub async fn kv(target: &Target, op: KvCommand) -> anyhow::Result<()> {
    let client = target.client();
    let ns = &target.namespace;
    match op {
        KvCommand::Put { key, value } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf)?;
                    buf
                }
            };
            let index = client.put(ns, &key, value).await?;
            println!("OK (index {index})");
        }
        KvCommand::Get { key, stale } => {
            let read = client.get(ns, &key, if stale { "stale" } else { "linearizable" }).await?;
            match read.value {
                Some(v) => {
                    std::io::stdout().write_all(&v)?;
                    if !v.ends_with(b"\n") {
                        println!();
                    }
                }
                None => anyhow::bail!("key {key:?} not found (index {})", read.index),
            }
        }
        KvCommand::Del { key } => {
            let index = client.delete(ns, &key).await?;
            println!("OK (index {index})");
        }
        KvCommand::Ls { prefix } => {
            for key in client.list(ns, &prefix).await? {
                println!("{key}");
            }
        }
    }
    Ok(())
}

pub async fn status(target: &Target) -> anyhow::Result<()> {
    let client = target.client();
    let node = client.get_json("/v1/status").await?;
    println!("{}", serde_json::to_string_pretty(&node)?);
    Ok(())
}

pub async fn members(target: &Target, op: MembersCommand) -> anyhow::Result<()> {
    let client = target.client();
    let ns = &target.namespace;
    let reply = match op {
        MembersCommand::List => client.get_json(&format!("/v1/ns/{ns}/members")).await?,
        MembersCommand::Add { peer_id, addrs, learner } => {
            let role = if learner { "learner" } else { "voter" };
            let body = json!({ "peer_id": peer_id, "addrs": addrs, "role": role });
            client.post_json(&format!("/v1/ns/{ns}/members"), &body).await?
        }
        MembersCommand::Remove { peer_id } => client.delete_json(&format!("/v1/ns/{ns}/members/{peer_id}")).await?,
    };
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

pub async fn leader(target: &Target, op: LeaderCommand) -> anyhow::Result<()> {
    let client = target.client();
    let ns = &target.namespace;
    let LeaderCommand::Transfer { to } = op;
    let reply = client.post_json(&format!("/v1/ns/{ns}/transfer-leader"), &json!({ "to": to })).await?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum NsCommand {
    /// Show the namespace's status on this node: role, leader, members, and formation
    /// (phase, reason, peers, timeline, splits).
    Status,
    /// On the leader of one side of a split: drop that side's data and join the other side.
    Dissolve,
}

pub async fn ns(target: &Target, op: NsCommand) -> anyhow::Result<()> {
    let client = target.client();
    let ns = &target.namespace;
    let reply = match op {
        NsCommand::Status => client.get_json(&format!("/v1/ns/{ns}/status")).await?,
        NsCommand::Dissolve => client.post_json(&format!("/v1/ns/{ns}/dissolve"), &json!({})).await?,
    };
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}
