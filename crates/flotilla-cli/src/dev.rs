//! `flotilla dev`: a local 3-node cluster in one command.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// Options of `flotilla dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Directory for the three nodes' data (node1, node2, node3 inside).
    #[arg(long, default_value = "./flotilla-dev")]
    dir: PathBuf,
    /// Timing preset.
    #[arg(long, default_value = "local")]
    preset: String,
}

const NODES: u16 = 3;

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the flotilla binary")?;
    std::fs::create_dir_all(&args.dir)?;
    let mut children: Vec<Child> = Vec::new();
    for i in 0..NODES {
        let dir = args.dir.join(format!("node{}", i + 1));
        let mut cmd = Command::new(&exe);
        // Loopback carries no multicast, so mDNS would only chatter on the real interfaces.
        cmd.arg("agent")
            .arg("--no-mdns")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--listen")
            .arg(format!("/ip4/127.0.0.1/tcp/{}", 7000 + i))
            .arg("--http")
            .arg(format!("127.0.0.1:{}", 7070 + i))
            .arg("--etcd-listen")
            .arg(etcd_endpoint(i))
            .arg("--preset")
            .arg(&args.preset);
        if i > 0 {
            cmd.arg("--bootstrap").arg("/ip4/127.0.0.1/tcp/7000");
        }
        let log = std::fs::File::create(args.dir.join(format!("node{}.log", i + 1)))?;
        cmd.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log)).kill_on_drop(true);
        children.push(cmd.spawn().with_context(|| format!("starting node{}", i + 1))?);
        if i == 0 {
            // Node 1 founds the cluster; the others join it once it serves.
            wait_ready("127.0.0.1:7070").await;
        }
    }
    for i in 1..NODES {
        wait_ready(&format!("127.0.0.1:{}", 7070 + i)).await;
    }
    let etcd: Vec<String> = (0..NODES).map(etcd_endpoint).collect();
    print_next_steps(&args.dir, &etcd.join(","));
    tokio::signal::ctrl_c().await?;
    println!("\nstopping the cluster...");
    for child in &mut children {
        if let Some(pid) = child.id() {
            // SIGTERM lets each node hand off leadership and flush before exiting.
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
    }
    for child in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    Ok(())
}

/// The etcd endpoint of node `i` (0-based): etcd's client port 2379 first, then every other
/// port (2380 is etcd's peer port, left free for a real etcd on the same machine).
fn etcd_endpoint(i: u16) -> String {
    format!("127.0.0.1:{}", 2379 + 2 * i)
}

async fn wait_ready(addr: &str) {
    let client = flotilla_http::Client::new(addr, Duration::from_secs(2));
    for _ in 0..300 {
        if client.get_json("/v1/status").await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("warning: node at {addr} did not come up within 30 s; see its log");
}

fn print_next_steps(dir: &std::path::Path, etcd: &str) {
    println!(
        "Flotilla dev cluster running: 3 nodes, HTTP on 127.0.0.1:7070-7072, etcd API on {etcd},\n\
         data and logs in {}\n\n\
         Try:\n  \
         flotilla kv put greeting hello --addr 127.0.0.1:7071   # write through any node\n  \
         flotilla kv get greeting --addr 127.0.0.1:7072         # linearizable read from another\n  \
         flotilla status                                        # node and namespace status\n  \
         flotilla members list                                  # voters and learners\n  \
         flotilla leader transfer                               # move leadership\n  \
         curl -s 127.0.0.1:7070/metrics | head\n  \
         etcdctl --endpoints {etcd} put greeting hello  # etcd's v3 API, namespace default\n\n\
         (with cargo: cargo run --release -- kv get greeting)\n\
         Press Ctrl-C to stop.",
        dir.display()
    );
}
