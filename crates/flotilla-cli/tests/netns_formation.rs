//! Real `flotilla agent` processes on separate hosts (Linux network namespaces joined by a
//! bridge, see `flotilla-lab`): clusters formed through `--bootstrap` and through mDNS alone,
//! and a node that comes back on a new address. Needs root; skipped with a message otherwise.

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_lab::wait::{self, wait_cluster, wait_for, wait_one_cluster};
use flotilla_lab::{Agent, Consistency, Lab};

const NS: &str = "default";

fn flotilla() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_flotilla"))
}

fn skip(test: &str) -> bool {
    match Lab::unavailable_reason() {
        Some(reason) => {
            eprintln!("SKIPPED {test}: needs Linux network namespaces: {reason}");
            true
        }
        None => false,
    }
}

/// Poll `agent` until a linearizable read of `key` returns a value.
fn read_through(agent: &Agent, key: &str, within: Duration) -> Vec<u8> {
    wait_for(
        &format!("a linearizable read of {key} through host {}", agent.host()),
        within,
        wait::POLL_INTERVAL,
        || agent.get(NS, key, Consistency::Linearizable)?.ok_or_else(|| anyhow::anyhow!("{key} absent")),
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Poll until a write of `key` through `agent` is acknowledged (the same value each time).
fn write_through(agent: &Agent, key: &str, value: &[u8], within: Duration) {
    wait_for(&format!("a write of {key} through host {}", agent.host()), within, wait::POLL_INTERVAL, || {
        agent.put(NS, key, value)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// What works without autonomous formation: one founder, two nodes joining it by
/// `--bootstrap /ip4/<ip>/tcp/7000/p2p/<peer id>` across namespaces, no mDNS. Also exercises the
/// lab's isolate/heal and restart-on-a-new-address against a live cluster.
#[test]
fn three_agents_join_via_bootstrap_across_namespaces() {
    if skip("three_agents_join_via_bootstrap_across_namespaces") {
        return;
    }
    let started = Instant::now();
    let lab = Lab::new(3).expect("lab");
    let mut agents = vec![lab.spawn(0, flotilla(), &["--no-mdns", "--force-bootstrap"]).expect("founder starts")];
    // `ip netns exec` execs the agent: the pid to kill -9 is the agent's own.
    let pid = agents[0].pid().expect("running");
    let binary = flotilla().canonicalize().expect("binary path");
    wait_for("the agent to be exec'd", Duration::from_secs(10), Duration::from_millis(10), || {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
        anyhow::ensure!(exe == binary, "pid {pid} runs {}", exe.display());
        Ok(())
    })
    .expect("the pid is the agent's");
    let entry = wait_for("the founder to serve", Duration::from_secs(30), wait::POLL_INTERVAL, || agents[0].p2p_addr())
        .expect("founder's address");
    for host in 1..3 {
        agents.push(lab.spawn(host, flotilla(), &["--no-mdns", "--bootstrap", &entry]).expect("joiner starts"));
    }
    let view = wait_cluster(&agents, NS, "three voters", Duration::from_secs(60), |v| {
        anyhow::ensure!(v.members.len() == 3 && v.voters() == 3, "members {:?}", v.members);
        Ok(())
    })
    .expect("one cluster of three voters");
    let leader = view.leader_index.expect("the leader is one of the agents");
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // A write through one follower is read linearizably through the other.
    agents[followers[0]].put(NS, "lab/joined", b"bootstrap").expect("write through a follower");
    assert_eq!(read_through(&agents[followers[1]], "lab/joined", Duration::from_secs(30)), b"bootstrap");

    // Cut a follower off: the other two keep a quorum and accept writes; once healed, the
    // follower catches up and the cluster is whole again.
    let cut = followers[1];
    lab.isolate(cut).expect("isolate");
    agents[leader].put(NS, "lab/while-cut", b"quorum of two").expect("write with one follower cut off");
    lab.heal(cut).expect("heal");
    wait_for("the healed follower to catch up", Duration::from_secs(30), wait::POLL_INTERVAL, || {
        agents[cut].get(NS, "lab/while-cut", Consistency::Stale)?.ok_or_else(|| anyhow::anyhow!("not replicated yet"))
    })
    .expect("caught up after heal");
    let after = wait_one_cluster(&agents, NS, 3, Duration::from_secs(30)).expect("one cluster after heal");
    assert_eq!(after.members.keys().collect::<Vec<_>>(), view.members.keys().collect::<Vec<_>>());

    // The same follower killed, moved to a new address and restarted on its data directory
    // (with its --bootstrap flag, as a supervisor would) is the same member again and serves.
    let (old_id, args) = (after.node_ids[cut].clone(), agents[cut].args().to_vec());
    agents[cut].kill9().expect("kill -9");
    let new_ip = lab.set_address(cut, 150).expect("new address");
    agents[cut].restart(&args).expect("restart");
    assert_eq!(agents[cut].ip(), new_ip);
    let back = wait_one_cluster(&agents, NS, 3, Duration::from_secs(60)).expect("one cluster after the move");
    assert_eq!(back.node_ids[cut], old_id, "same identity after the restart");
    // The leader still holds its connection to the old address: nothing answers there (the
    // address is gone, so no reset either). It closes it as soon as the moved node connects
    // from its new address (flotilla-net `swarm_task::moved_away`); without that, only the
    // liveness ping would, after up to 30 s, and the read below took 30-80 s. The bound is
    // generous for a loaded machine.
    let moved_patience = Duration::from_secs(30);
    assert_eq!(read_through(&agents[cut], "lab/while-cut", moved_patience), b"quorum of two");
    write_through(&agents[cut], "lab/moved", b"new address", Duration::from_secs(30));
    assert_eq!(read_through(&agents[leader], "lab/moved", Duration::from_secs(30)), b"new address");

    // The agents listen on LAN addresses, so their admin routes need their admin token: refused
    // without it or with another agent's, accepted with it (a no-op transfer to the leader
    // itself).
    let now = back.leader_index.expect("the leader is one of the agents");
    let (path, body) = (format!("/v1/ns/{NS}/transfer-leader"), serde_json::json!({ "to": back.node_ids[now] }));
    let base = agents[now].http_base();
    let other_token = agents[(now + 1) % 3].admin_token().expect("token");
    for token in [None, Some(other_token.as_str())] {
        let refused = flotilla_lab::http::post_json(&base, &path, &body, token, Duration::from_secs(10))
            .expect_err("an admin route without the right token");
        assert!(format!("{refused:#}").contains("401"), "{refused:#}");
    }
    agents[now].admin_post_json(&path, &body).expect("an admin route with the agent's token");
    eprintln!("bootstrap test done in {:?}", started.elapsed());
}

/// Autonomous formation: five agents started in a random order, mDNS only, no `--bootstrap`,
/// converge to one cluster with one leader. A follower killed with SIGKILL and restarted on a
/// new address from its data directory is again a member under its old node id, and serves a
/// linearizable read of a value written before.
#[test]
fn five_agents_mdns_only_converge_and_rejoin_on_new_address() {
    if skip("five_agents_mdns_only_converge_and_rejoin_on_new_address") {
        return;
    }
    let started = Instant::now();
    let args = ["--mdns-query-interval-ms", "500"];
    let lab = Lab::new(5).expect("lab");
    let run = lab.spawn_all_shuffled(flotilla(), &args, Duration::from_millis(300)).expect("agents start");
    eprintln!("start order (hosts): {:?}", run.order);
    let mut agents = run.agents;

    let view = wait_one_cluster(&agents, NS, 5, Duration::from_secs(30)).expect("one cluster of five");
    eprintln!("formed after {:?}: {} voters, {} learners", run.last_started.elapsed(), view.voters(), view.learners());
    let leader = view.leader_index.expect("the leader is one of the agents");
    // The lab's agents listen beyond loopback, so they run with the lab's cluster key: mDNS
    // formation works sealed exactly as it did unsealed.
    for agent in &agents {
        let status = agent.node_status().expect("status");
        assert_eq!(status["sealing"]["enabled"], true, "{status}");
        assert_eq!(status["insecure_no_cluster_key"], false, "{status}");
    }
    let ids_before: Vec<&String> = view.members.keys().collect();
    write_through(&agents[(leader + 1) % 5], "lab/formed", b"five by mdns", Duration::from_secs(30));

    // Kill a follower, move its host to a new address, restart it on the same data directory.
    let victim = (leader + 2) % 5;
    let (old_id, old_ip) = (view.node_ids[victim].clone(), agents[victim].ip());
    agents[victim].kill9().expect("kill -9");
    let new_ip = lab.set_address(victim, 100 + victim as u8).expect("new address");
    assert_ne!(new_ip, old_ip);
    agents[victim].restart(&args).expect("restart");
    assert_eq!(agents[victim].ip(), new_ip);

    let after = wait_one_cluster(&agents, NS, 5, Duration::from_secs(60)).expect("one cluster again");
    assert_eq!(after.node_ids[victim], old_id, "the restarted node kept its identity");
    assert_eq!(after.members.keys().collect::<Vec<_>>(), ids_before, "same members, no stray identity");
    assert_eq!(read_through(&agents[victim], "lab/formed", Duration::from_secs(30)), b"five by mdns");
    write_through(&agents[victim], "lab/moved", b"new address", Duration::from_secs(30));
    assert_eq!(read_through(&agents[leader], "lab/moved", Duration::from_secs(30)), b"new address");
    eprintln!("mDNS test done in {:?}", started.elapsed());
}

/// Two agents that only know a third one's address (no mDNS) find each other through its
/// rendezvous record and peer exchange, over the wire, and `--expect 3` founds one cluster.
#[test]
fn contacts_of_one_node_find_each_other_through_its_rendezvous_record() {
    if skip("contacts_of_one_node_find_each_other_through_its_rendezvous_record") {
        return;
    }
    let lab = Lab::new(3).expect("lab");
    let mut agents = vec![lab.spawn(0, flotilla(), &["--no-mdns", "--expect", "3"]).expect("contact starts")];
    let contact =
        wait_for("the contact to serve", Duration::from_secs(30), wait::POLL_INTERVAL, || agents[0].p2p_addr())
            .expect("contact's address");
    for host in 1..3 {
        let args = ["--no-mdns", "--expect", "3", "--bootstrap", contact.as_str()];
        agents.push(lab.spawn(host, flotilla(), &args).expect("agent starts"));
    }
    wait_one_cluster(&agents, NS, 3, Duration::from_secs(60)).expect("one cluster of three");
    let other = agents[2].peer_id().expect("peer id");
    let status = agents[1].status(NS).expect("status");
    let peers = status["formation"]["peers"].as_array().cloned().unwrap_or_default();
    let entry = peers.iter().find(|p| p["id"].as_str() == Some(other.as_str()));
    let sources: Vec<String> = entry
        .and_then(|p| p["sources"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    assert!(
        sources.iter().any(|s| s == "rendezvous" || s == "peer-exchange" || s == "inbound"),
        "agent 1 should know agent 2 through the contact, not a bootstrap address: {sources:?} in {peers:?}"
    );
    assert!(!sources.iter().any(|s| s == "bootstrap"), "agent 2 was never given to agent 1 directly: {sources:?}");
}
