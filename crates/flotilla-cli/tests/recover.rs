//! Issue 15, point 3, with real agents on loopback: five agents form namespace `default`, take
//! writes, and three of them (the leader among them) are killed for good. `flotilla recover`
//! first refuses while a quorum answers and while an agent holds the data directory; on the
//! survivor with the longest log it makes that node the only voter of a new cluster. Started
//! again, it leads alone, serves every acknowledged write, says so in its status timeline, and
//! two fresh agents join it; new writes work. The other survivor, started with its old data,
//! stays in the old cluster: the new one refuses its traffic and never lets it in.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::agent::{json_of, run_cli, voters, Agent, NS};
use support::{until, until_or_log};

const KEYS: usize = 20;

/// Run `flotilla recover --data-dir DIR -n default ARGS`.
fn recover(dir: &Path, args: &[&str]) -> Output {
    let dir = dir.display().to_string();
    run_cli(&[&["recover", "-n", NS, "--data-dir", dir.as_str()], args].concat())
}

/// `(last log term, last log index)` of a dry run: the longer log wins.
fn log_end(report: &Value) -> (u64, u64) {
    (report["last_log_term"].as_u64().unwrap_or(0), report["last_log_index"].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_recovers_a_namespace_whose_quorum_is_lost_for_good() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = |i: usize| root.path().join(format!("node{i}"));
    let mut agents = vec![Agent::start(&dir(0), &["--expect", "5"]).await];
    let bootstrap = agents[0].p2p();
    for i in 1..5 {
        agents.push(Agent::start(&dir(i), &["--expect", "5", "--bootstrap", &bootstrap]).await);
    }
    let formed = until_or_log("five voters with a leader", &agents[0].log, || async {
        agents[0].status().await.filter(|s| voters(s) == 5 && s["leader"].is_string())
    })
    .await;
    let leader_id = formed["leader"].as_str().expect("leader").to_string();
    let old_cluster = formed["cluster"].as_str().expect("cluster").to_string();

    let mut acknowledged = Vec::new();
    for i in 0..KEYS {
        let (k, v) = (format!("k/{i}"), format!("v{i}"));
        agents[i % 5].client().put(NS, &k, v.clone().into_bytes()).await.expect("write acknowledged");
        acknowledged.push((k, v));
    }
    // Every node has applied every acknowledged write before the loss, so whichever survivor
    // holds the longest log holds them all.
    let mut leader = 0;
    for (i, a) in agents.iter().enumerate() {
        leader = if a.status().await.expect("status")["node_id"] == leader_id.as_str() { i } else { leader };
    }
    let committed = agents[leader].status().await.expect("status")["commit_index"].as_u64().expect("commit");
    for a in &agents {
        until("every node to apply the writes", || async {
            a.status().await.filter(|s| s["applied_index"].as_u64() >= Some(committed))
        })
        .await;
    }
    let survivors: Vec<usize> = (0..5).filter(|i| *i != leader).take(2).collect();
    let lost: Vec<usize> = (0..5).filter(|i| !survivors.contains(i)).collect();

    // Guards: an agent running on the directory; a quorum of the old configuration answers.
    let busy = recover(&agents[survivors[1]].dir, &["--force-new-cluster"]);
    let why = String::from_utf8_lossy(&busy.stderr);
    assert!(!busy.status.success() && why.contains("is in use by another process"), "{why}");
    agents[survivors[0]].stop();
    // A generous probe bound: the four running members must answer even on a loaded machine.
    let reachable = recover(&agents[survivors[0]].dir, &["--force-new-cluster", "--probe-timeout-ms", "15000"]);
    let why = String::from_utf8_lossy(&reachable.stderr);
    assert!(!reachable.status.success() && why.contains("a quorum of the old configuration is reachable"), "{why}");

    // Three nodes, the leader among them, are lost for good; the other survivor stops too.
    for i in &lost {
        agents[*i].kill_9();
    }
    agents[survivors[1]].stop();

    // Dry runs print each survivor's log end; recover the one with the longest log.
    let dry: Vec<Value> = survivors.iter().map(|i| json_of(&recover(&agents[*i].dir, &[]))).collect();
    for r in &dry {
        assert_eq!(r["voters"].as_array().map(Vec::len), Some(5), "{r}");
        assert_eq!(r["reachable_members"].as_array().map(Vec::len), Some(0), "{r}");
        assert_eq!(r["verdict"], "recovery allowed", "{r}");
        assert_eq!(r["cluster"], old_cluster.as_str(), "{r}");
    }
    let chosen = if log_end(&dry[0]) >= log_end(&dry[1]) { survivors[0] } else { survivors[1] };
    let before = &dry[if chosen == survivors[0] { 0 } else { 1 }];
    let done = json_of(&recover(&agents[chosen].dir, &["--force-new-cluster"]));
    let action = done["action"].as_str().unwrap_or("");
    let forced_index = before["last_log_index"].as_u64().expect("index") + 1;
    assert!(
        action.starts_with(&format!(
            "recovered from a lost quorum: membership forced to this node at index {forced_index}, term"
        )),
        "{done}"
    );
    let new_cluster = done["new_cluster"].as_str().expect("new cluster").to_string();
    assert_ne!(new_cluster, old_cluster);

    // Started again, it leads the namespace alone, in the new cluster, and says why.
    let dir_chosen = agents[chosen].dir.clone();
    agents[chosen] = Agent::start(&dir_chosen, &[]).await;
    let survivor = &agents[chosen];
    let s = until_or_log("the survivor to lead alone", &survivor.log, || async {
        survivor.status().await.filter(|s| s["role"] == "leader" && voters(s) == 1)
    })
    .await;
    assert_eq!(s["cluster"], new_cluster.as_str(), "{s}");
    let timeline = s["formation"]["timeline"].to_string();
    assert!(timeline.contains(action), "the recovery is not in the timeline: {timeline}");
    for (k, v) in &acknowledged {
        let read = survivor.client().get(NS, k, "linearizable").await.expect("linearizable read");
        assert_eq!(read.value.as_deref(), Some(v.as_bytes()), "{k}");
    }

    // Two fresh agents join it through formation; new writes work everywhere.
    let bootstrap = survivor.p2p();
    let fresh = [
        Agent::start(&root.path().join("fresh0"), &["--bootstrap", &bootstrap]).await,
        Agent::start(&root.path().join("fresh1"), &["--bootstrap", &bootstrap]).await,
    ];
    until_or_log("three voters in the recovered cluster", &survivor.log, || async {
        survivor.status().await.filter(|s| voters(s) == 3)
    })
    .await;
    for (i, a) in fresh.iter().enumerate() {
        let (k, v) = (format!("after/{i}"), format!("w{i}"));
        a.client().put(NS, &k, v.clone().into_bytes()).await.expect("a write after the recovery");
        for reader in fresh.iter().chain([survivor]) {
            let read = reader.client().get(NS, &k, "linearizable").await.expect("read");
            assert_eq!(read.value.as_deref(), Some(v.as_bytes()), "{k} on {}", reader.http);
        }
        let (k0, v0) = &acknowledged[0];
        let read = a.client().get(NS, k0, "linearizable").await.expect("read an old key");
        assert_eq!(read.value.as_deref(), Some(v0.as_bytes()));
        let s = a.status().await.expect("status");
        assert_eq!(s["cluster"], new_cluster.as_str(), "{s}");
    }

    // The other survivor, started again with its old data, stays in the old cluster: its Raft
    // traffic (pre-votes to its old peers) names the old cluster and the new one refuses it.
    let other = *survivors.iter().find(|i| **i != chosen).expect("the other survivor");
    let returned = Agent::start(&dir(other), &["--bootstrap", &bootstrap]).await;
    let refusal = format!("this node in cluster \"{new_cluster}\"");
    until_or_log("the new cluster to refuse the old survivor", &returned.log, || async {
        std::fs::read_to_string(&returned.log).ok().filter(|log| log.contains(&refusal)).map(|_| ())
    })
    .await;
    let s = returned.status().await.expect("status");
    assert_eq!(s["cluster"], old_cluster.as_str(), "the old survivor moved: {s}");
    assert_ne!(s["role"], "leader", "{s}");
    let s = survivor.status().await.expect("status");
    let returned_id = returned.status().await.expect("status")["node_id"].clone();
    let members = s["members"].as_array().expect("members");
    assert!(members.iter().all(|m| m["id"] != returned_id), "the old survivor was let in: {s}");
    assert_eq!(voters(&s), 3, "{s}");
    survivor.client().put(NS, "last", b"l".to_vec()).await.expect("the new cluster still takes writes");
}
