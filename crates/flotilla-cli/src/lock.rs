//! `flotilla lock NAME -- COMMAND` and `flotilla election ...`: hold a lock (or a leadership)
//! while a command runs.
//!
//! The lock lives on a lease this process renews every third of its TTL. The command gets the
//! fencing token in `FLOTILLA_FENCING_TOKEN` (and the key in `FLOTILLA_LOCK_KEY`) to hand to
//! the resources it writes to. If the lease is lost (this process was paused past the TTL, or
//! cut off from the cluster), the command is killed and `flotilla` exits with status 3; when
//! the command ends, the lock is released and its exit status is returned.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use flotilla_http::{Client, ClientError};
use serde_json::{json, Value};
use tokio::process::Command;
use tokio::time::Instant;

use crate::Target;

/// How long one acquire request may wait on the server (below its request deadline).
const WAIT_PER_REQUEST: Duration = Duration::from_secs(3);

/// Exit status when the lock was lost while the command ran.
const LOST: u8 = 3;

/// Arguments of `flotilla lock`.
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// The lock's name (no '/').
    name: String,
    /// TTL of the lock's lease, in seconds: how long a crashed holder keeps the lock.
    #[arg(long, default_value_t = 10)]
    ttl: u64,
    /// How long to wait for the lock, in seconds.
    #[arg(long, default_value_t = 60)]
    wait: u64,
    /// The command to run while holding the lock.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `flotilla election ...`
#[derive(Debug, Subcommand)]
pub enum ElectionCommand {
    /// Print the current leader of an election.
    Leader { name: String },
    /// Campaign with VALUE; once leader, run the command (as `flotilla lock` does).
    Campaign {
        name: String,
        value: String,
        #[arg(long, default_value_t = 10)]
        ttl: u64,
        #[arg(long, default_value_t = 60)]
        wait: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

pub async fn lock(target: &Target, args: LockArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/lock/{}/{}", target.namespace, args.name);
    let held = acquire(&target.client(), &path, &json!(null), args.ttl, args.wait).await?;
    run_while_held(&target.client(), &target.namespace, &held, args.ttl, &args.command).await
}

pub async fn election(target: &Target, op: ElectionCommand) -> anyhow::Result<ExitCode> {
    let client = target.client();
    match op {
        ElectionCommand::Leader { name } => {
            println!("{}", client.get_json(&format!("/v1/election/{}/{name}", target.namespace)).await?);
            Ok(ExitCode::SUCCESS)
        }
        ElectionCommand::Campaign { name, value, ttl, wait, command } => {
            let path = format!("/v1/election/{}/{name}", target.namespace);
            let held = acquire(&client, &path, &json!({ "value": value }), ttl, wait).await?;
            run_while_held(&client, &target.namespace, &held, ttl, &command).await
        }
    }
}

/// POST to `path` until the place is ours or `wait` seconds pass.
async fn acquire(client: &Client, path: &str, body: &Value, ttl: u64, wait: u64) -> anyhow::Result<Value> {
    let give_up = Instant::now() + Duration::from_secs(wait);
    loop {
        let left = give_up.saturating_duration_since(Instant::now()).min(WAIT_PER_REQUEST);
        let url = format!("{path}?ttl={ttl}&wait_ms={}", left.as_millis());
        let body = if body.is_null() { json!({}) } else { body.clone() };
        let attempt = if path.starts_with("/v1/lock/") {
            client.post_empty(&url).await
        } else {
            client.post_json(&url, &body).await
        };
        match attempt {
            Ok(held) => return Ok(held),
            Err(ClientError::Api { code, .. }) if code == "timeout" && Instant::now() < give_up => continue,
            Err(e) => return Err(e).context(format!("acquiring {path}")),
        }
    }
}

/// Renew the lease while `command` runs; release afterwards.
async fn run_while_held(
    client: &Client,
    ns: &str,
    held: &Value,
    ttl: u64,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let lease = held["lease"].as_u64().context("no lease in the answer")?;
    let token = held["fencing_token"].as_u64().context("no fencing token in the answer")?;
    let key = held["key"].as_str().unwrap_or_default().to_string();
    eprintln!("holding {key} (fencing token {token}, lease {lease})");
    let (program, args) = command.split_first().context("no command")?;
    let mut child = Command::new(program)
        .args(args)
        .env("FLOTILLA_FENCING_TOKEN", token.to_string())
        .env("FLOTILLA_LOCK_KEY", &key)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let every = Duration::from_millis(ttl * 1000 / 3).max(Duration::from_millis(100));
    let keepalive = format!("/v1/lease/{ns}/{lease}/keepalive");
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(every) => {
                match client.post_empty(&keepalive).await {
                    Ok(_) => {}
                    Err(ClientError::Api { code, .. }) if code == "lease_not_found" => {
                        eprintln!("the lock was lost (its lease expired); stopping the command");
                        let _ = child.kill().await;
                        return Ok(ExitCode::from(LOST));
                    }
                    Err(e) => eprintln!("renewing the lock's lease failed (retrying): {e}"),
                }
            }
        }
    };
    if let Err(e) = client.delete_json(&format!("/v1/lease/{ns}/{lease}")).await {
        eprintln!("releasing the lock failed (it frees itself when its lease runs out): {e}");
    }
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}
