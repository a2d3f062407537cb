//! mDNS between two hosts in two Linux network namespaces joined by a veth pair.
//!
//! mDNS ignores loopback, and multicast must not leave the machine, so the hosts need
//! interfaces of their own: the test creates two namespaces (root only; it skips otherwise).
//! A process's sockets live in the namespace it runs in, so each host runs in a child process:
//! this test binary again, started under `ip netns exec` with only this test selected and the
//! child's role given in environment variables.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{echo, echoed, eventually, request, CALL_TIMEOUT, DEADLINE};
use flotilla_core::{Discovery, DiscoverySource, NodeId, Transport};
use flotilla_net::{load_or_create_keypair, Host, NetConfig};

/// Data directory (holding the node key) of the child's host.
const ENV_DIR: &str = "FLOTILLA_MDNS_CHILD_DIR";
/// Peer id the child must find.
const ENV_PEER: &str = "FLOTILLA_MDNS_CHILD_PEER";
/// Directory where children tell each other they are done.
const ENV_MEET: &str = "FLOTILLA_MDNS_CHILD_MEET";
/// Subnet of the veth pair; the namespaces are private, so it cannot clash with anything.
const SUBNET: &str = "10.98.1";
/// Bound on one child's whole run.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            // Real, effective, saved, filesystem; the effective one decides.
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Two namespaces joined by a veth pair, each end addressed and routing multicast; deleted on
/// drop (deleting a namespace deletes its veth end, and with it the pair).
struct Lab {
    namespaces: [String; 2],
    veths: [String; 2],
}

impl Lab {
    fn create() -> Result<Lab, String> {
        let pid = std::process::id();
        let lab = Lab {
            namespaces: [format!("flmdns-{pid}-a"), format!("flmdns-{pid}-b")],
            // Interface names are limited to 15 bytes.
            veths: [format!("fm{pid}a"), format!("fm{pid}b")],
        };
        for ns in &lab.namespaces {
            ip(&["netns", "add", ns])?;
        }
        ip(&["link", "add", &lab.veths[0], "type", "veth", "peer", "name", &lab.veths[1]])?;
        for (i, (ns, veth)) in lab.namespaces.iter().zip(&lab.veths).enumerate() {
            ip(&["link", "set", veth, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &format!("{SUBNET}.{}/24", i + 1), "dev", veth])?;
            ip(&["-n", ns, "link", "set", veth, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // Without a route covering 224.0.0.251, multicast sends fail with ENETUNREACH.
            ip(&["-n", ns, "route", "add", "default", "dev", veth])?;
        }
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The pair only exists outside the namespaces if creation failed halfway.
        let _ = ip(&["link", "del", &self.veths[0]]);
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn wait_with_deadline(child: &mut std::process::Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mdns_finds_peers_across_network_namespaces() {
    // Started again by itself under `ip netns exec`: play one host.
    if std::env::var(ENV_DIR).is_ok() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(child_host());
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED mdns_finds_peers_across_network_namespaces: needs root to create network namespaces");
        return;
    }
    let lab = match Lab::create() {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("SKIPPED mdns_finds_peers_across_network_namespaces: cannot create network namespaces: {e}");
            return;
        }
    };
    let work = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|name| work.path().join(name)).collect();
    let peers: Vec<NodeId> = dirs
        .iter()
        .map(|dir| {
            std::fs::create_dir_all(dir).unwrap();
            load_or_create_keypair(dir).unwrap().public().to_peer_id()
        })
        .collect();
    let exe = std::env::current_exe().unwrap();

    let mut children = Vec::new();
    for i in 0..2 {
        let log = work.path().join(format!("child-{i}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.namespaces[i]])
            .arg(&exe)
            .args(["--exact", "mdns_finds_peers_across_network_namespaces", "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, &dirs[i])
            .env(ENV_PEER, peers[1 - i].to_string())
            .env(ENV_MEET, work.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        children.push((child, log));
    }

    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut failures = Vec::new();
    for (i, (child, log)) in children.iter_mut().enumerate() {
        let status = wait_with_deadline(child, deadline);
        if !status.is_some_and(|s| s.success()) {
            let output = std::fs::read_to_string(&*log).unwrap_or_default();
            failures.push(format!("child {i} ({:?}): {status:?}\n{output}", lab.namespaces[i]));
        }
    }
    drop(lab);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A child that selected no test would also exit successfully.
    for peer in &peers {
        assert!(work.path().join(format!("{peer}.done")).exists(), "the child of {peer} did not run");
    }
}

/// One side of [`mdns_finds_peers_across_network_namespaces`], run by the test binary started
/// again inside a namespace: finds the other host over mDNS alone (it is given no address),
/// calls it, and waits until the other side has done the same.
async fn child_host() {
    let (Ok(dir), Ok(other), Ok(meet)) = (std::env::var(ENV_DIR), std::env::var(ENV_PEER), std::env::var(ENV_MEET))
    else {
        panic!("a child host needs {ENV_DIR}, {ENV_PEER} and {ENV_MEET}");
    };
    let other: NodeId = other.parse().unwrap();
    let key = load_or_create_keypair(Path::new(&dir)).unwrap();
    let config = NetConfig { mdns_query_interval: Some(Duration::from_millis(200)), ..NetConfig::default() };
    common::init_tracing();
    let host = Host::start(key, &["/ip4/0.0.0.0/tcp/0".to_string()], config).await.expect("host starts");
    echo(&host);
    let mdns = host.mdns_discovery().expect("mDNS is enabled and starts in a namespace");
    assert_eq!(mdns.name(), "mdns");

    let sighting = eventually("the other host is seen over mDNS", || async {
        mdns.discover().await.into_iter().find(|s| s.peer == other)
    })
    .await;
    assert_eq!(sighting.source, DiscoverySource::Mdns);
    assert!(mdns.discover().await.iter().all(|s| s.peer != host.local_id()), "never sees itself");
    assert!(
        sighting
            .addrs
            .iter()
            .any(|a| a.starts_with(&format!("/ip4/{SUBNET}.")) && a.ends_with(&format!("/p2p/{other}"))),
        "addresses on the veth subnet, naming the peer: {:?}",
        sighting.addrs
    );

    // The address book learned the addresses: a call by peer id reaches the other host.
    // Retried because the other side may announce itself before installing its handler.
    eventually("a call reaches the host found over mDNS", || async {
        let response = host.call(other, request(7), CALL_TIMEOUT).await.ok()?;
        (echoed(&response) == Some(7)).then_some(())
    })
    .await;
    let connected = host.connect(&sighting.addrs[0], CALL_TIMEOUT).await.expect("sighting address is dialable");
    assert_eq!(connected, other);

    // Stay up (answering mDNS and calls) until the other side has finished too.
    let meet = Path::new(&meet);
    std::fs::write(meet.join(format!("{}.done", host.local_id())), b"").unwrap();
    let other_done = meet.join(format!("{other}.done"));
    eventually("the other host finishes", || async { other_done.exists().then_some(()) }).await;
    host.shutdown().await;
    // `eventually` shares this bound; the parent's is longer, so a stuck child reports itself.
    assert!(DEADLINE < CHILD_DEADLINE);
}
