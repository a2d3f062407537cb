//! `flotilla`: the node daemon, a CLI for its HTTP API, and a one-command local cluster.

mod agent;
mod backup;
mod bench;
mod commands;
mod dev;
mod doctor;
mod etcd_endpoint;
mod keys;
mod lock;
mod recover;
mod restore;
mod status_table;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flotilla_core::Config;

/// Flotilla: operable Raft.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the CLI finds a node.
#[derive(Debug, clap::Args)]
struct Target {
    /// HTTP address of any node.
    #[arg(long, env = "FLOTILLA_ADDR", default_value = flotilla_core::config::DEFAULT_HTTP, global = true)]
    addr: String,
    /// Namespace to act on.
    #[arg(long, short = 'n', default_value = flotilla_core::config::DEFAULT_NAMESPACE, global = true)]
    namespace: String,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 10, global = true)]
    timeout_secs: u64,
}

impl Target {
    fn client(&self) -> flotilla_http::Client {
        flotilla_http::Client::new(&self.addr, Duration::from_secs(self.timeout_secs))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Agent(Box<Config>),
    /// Read and write keys.
    Kv {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: commands::KvCommand,
    },
    /// Print the changes of a key (or of every key with a prefix) as they happen, one JSON
    /// object per line; ends on Ctrl-C or when the node cancels the watch.
    Watch {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        args: commands::WatchArgs,
    },
    /// Run a command while holding a lock (its fencing token in FLOTILLA_FENCING_TOKEN).
    Lock {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        args: lock::LockArgs,
    },
    /// Leader election: campaign (running a command while leader) or show the leader.
    Election {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: lock::ElectionCommand,
    },
    /// Push, pop, acknowledge and inspect queue items.
    Queue {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: commands::QueueCommand,
    },
    /// Grant, keep alive, revoke and inspect leases.
    Lease {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: commands::LeaseCommand,
    },
    /// Show the node's status: identity, storage, peers, and one row per namespace.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print a table (default) or the node's JSON.
        #[arg(long, short = 'o', value_enum, default_value_t = status_table::Output::Table)]
        output: status_table::Output,
    },
    /// Check the node (--addr) and its namespaces: storage, disk, fsync latency, peers,
    /// leaders, leader changes, splits, lagging members. Exits non-zero when a check fails.
    Doctor {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        args: doctor::DoctorArgs,
    },
    /// List, add or remove members of a namespace.
    Members {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: commands::MembersCommand,
    },
    /// Leadership operations.
    Leader {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: commands::LeaderCommand,
    },
    /// Open, close and list namespaces; formation status of a namespace, and split resolution.
    Ns {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: commands::NsCommand,
    },
    /// Online backups: save one over HTTP (admin), inspect and verify a file, restore one into a
    /// data directory as a new cluster.
    Backup {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: backup::BackupCommand,
    },
    /// Recovery from a lost quorum, run on a survivor with its agent stopped: print what it
    /// holds of the namespace; with --force-new-cluster, make it the only voter of a new cluster
    /// of the namespace, keeping its log and data.
    Recover(recover::RecoverArgs),
    /// Write a new cluster key file (mode 0600) for `--cluster-key-file`.
    Keygen(keys::KeygenArgs),
    /// Inspect a keyring file, or make a node reload its own (key rotation).
    Keyring {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: keys::KeyringCommand,
    },
    /// Start a local 3-node cluster (loopback, HTTP on 7070-7072).
    Dev(dev::DevArgs),
    /// Drive put or get load over HTTP and print throughput and latency.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let done = match cli.command {
            // These return the exit status of the command they ran (or of the checks).
            Command::Lock { target, args } => return lock::lock(&target, args).await,
            Command::Election { target, op } => return lock::election(&target, op).await,
            Command::Doctor { target, args } => return doctor::run(&target, args).await,
            Command::Agent(config) => agent::run(*config).await,
            Command::Kv { target, op } => commands::kv(&target, op).await,
            Command::Watch { target, args } => commands::watch(&target, args).await,
            Command::Lease { target, op } => commands::lease(&target, op).await,
            Command::Queue { target, op } => commands::queue(&target, op).await,
            Command::Status { target, output } => commands::status(&target, output).await,
            Command::Members { target, op } => commands::members(&target, op).await,
            Command::Leader { target, op } => commands::leader(&target, op).await,
            Command::Ns { target, op } => commands::ns(&target, op).await,
            Command::Backup { target, op } => backup::backup(&target, op).await,
            Command::Recover(args) => recover::run(args).await,
            Command::Keygen(args) => keys::keygen(args),
            Command::Keyring { target, op } => keys::keyring(&target, op).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        };
        done.map(|()| ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's flags are consistent (no flag defined twice, e.g. a subcommand's own
    /// `--addr` clashing with the global one).
    #[test]
    fn the_cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// Leader balancing is on by default and `--no-leader-balance` turns it off.
    #[test]
    fn leader_balance_defaults_on_and_the_flag_turns_it_off() {
        use clap::Parser;
        let agent = |args: &[&str]| match super::Cli::parse_from([&["flotilla", "agent"], args].concat()).command {
            super::Command::Agent(config) => config.leader_balance,
            other => panic!("not the agent: {other:?}"),
        };
        assert!(agent(&[]));
        assert!(!agent(&["--no-leader-balance"]));
    }
}
