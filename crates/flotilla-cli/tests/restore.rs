//! Issue 15, point 2, with real agents on loopback: a backup taken from a running agent is
//! restored into a new data directory; the agent started there leads a NEW cluster of the
//! namespace (a new cluster id), serves exactly the backup's keys, continues the revisions
//! upward from the backup's, and a fresh agent joins it.

mod support;

use std::path::Path;
use std::process::Output;

use support::agent::{json_of, run_cli, voters, Agent, NS};
use support::until_or_log;

const KEYS: usize = 10;

fn restore(file: &Path, data: &Path) -> Output {
    run_cli(&["backup", "restore", &file.display().to_string(), "--data-dir", &data.display().to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_starts_a_new_cluster_that_others_join() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut original = Agent::start(&root.path().join("original"), &["--force-bootstrap"]).await;
    let led = until_or_log("the original agent to lead", &original.log, || async {
        original.status().await.filter(|s| s["role"] == "leader")
    })
    .await;
    let old_cluster = led["cluster"].as_str().expect("cluster").to_string();
    for i in 0..KEYS {
        original.client().put(NS, &format!("k/{i}"), format!("v{i}").into_bytes()).await.expect("write");
    }
    let revision = original.client().get(NS, "k/0", "linearizable").await.expect("read").revision;
    let file = root.path().join("default.flbk");
    let saved = json_of(&run_cli(&["backup", "save", &file.display().to_string(), "--addr", &original.http]));
    assert_eq!(saved["revision"].as_u64(), Some(revision), "{saved}");
    original.client().put(NS, "after-the-backup", b"x".to_vec()).await.expect("write");
    original.kill_9();

    let data = root.path().join("restored");
    let done = json_of(&restore(&file, &data));
    let new_cluster = done["new_cluster"].as_str().expect("new cluster").to_string();
    assert_ne!(new_cluster, old_cluster, "{done}");
    assert_eq!(done["namespace"], NS, "{done}");
    let again = restore(&file, &data);
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && why.contains("already holds namespace default"), "{why}");

    let restored = Agent::start(&data, &[]).await;
    let s = until_or_log("the restored agent to lead alone", &restored.log, || async {
        restored.status().await.filter(|s| s["role"] == "leader" && voters(s) == 1)
    })
    .await;
    assert_eq!(s["cluster"], new_cluster.as_str(), "{s}");
    let timeline = s["formation"]["timeline"].to_string();
    assert!(timeline.contains("restored from a backup of cluster"), "{timeline}");
    for i in 0..KEYS {
        let read = restored.client().get(NS, &format!("k/{i}"), "linearizable").await.expect("read");
        assert_eq!(read.value, Some(format!("v{i}").into_bytes()), "k/{i}");
    }
    let read = restored.client().get(NS, "after-the-backup", "linearizable").await.expect("read");
    assert_eq!(read.value, None, "a write after the backup is not in it");
    restored.client().put(NS, "new", b"n".to_vec()).await.expect("a write after the restore");
    let next = restored.client().get(NS, "new", "linearizable").await.expect("read").mod_revision;
    assert_eq!(next, Some(revision + 1), "revisions continue upward from the backup's {revision}");

    let joiner = Agent::start(&root.path().join("joiner"), &["--bootstrap", &restored.p2p()]).await;
    until_or_log("two voters", &restored.log, || async { restored.status().await.filter(|s| voters(s) == 2) }).await;
    for (k, v) in [("new", "n"), ("k/0", "v0")] {
        let read = joiner.client().get(NS, k, "linearizable").await.expect("read through the joiner");
        assert_eq!(read.value, Some(v.as_bytes().to_vec()), "{k}");
    }
    let s = joiner.status().await.expect("status");
    assert_eq!(s["cluster"], new_cluster.as_str(), "{s}");
}

/// Issue 15, point 2, second half: a backup replaces the state of a running namespace through
/// the log, from any node, after a confirmation; every member then serves the backup's keys at
/// a revision above every earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_replaces_a_running_namespace_through_the_log() {
    let root = tempfile::tempdir().expect("tempdir");
    let leader = Agent::start(&root.path().join("a"), &["--force-bootstrap"]).await;
    until_or_log("the agent to lead", &leader.log, || async {
        leader.status().await.filter(|s| s["role"] == "leader")
    })
    .await;
    for i in 0..KEYS {
        leader.client().put(NS, &format!("k/{i}"), format!("v{i}").into_bytes()).await.expect("write");
    }
    let file = root.path().join("default.flbk");
    json_of(&run_cli(&["backup", "save", &file.display().to_string(), "--addr", &leader.http]));
    // The state moves on past the backup: a changed key, a new one, and more revisions.
    for i in 0..2 * KEYS {
        leader.client().put(NS, "k/0", format!("changed {i}").into_bytes()).await.expect("write");
    }
    leader.client().put(NS, "after-the-backup", b"x".to_vec()).await.expect("write");
    let old = leader.client().get(NS, "after-the-backup", "linearizable").await.expect("read").revision;
    let follower = Agent::start(&root.path().join("b"), &["--bootstrap", &leader.p2p()]).await;
    until_or_log("two voters", &leader.log, || async { leader.status().await.filter(|s| voters(s) == 2) }).await;

    let file_arg = file.display().to_string();
    let unconfirmed = run_cli(&["backup", "restore", &file_arg, "--into-running", "--addr", &follower.http]);
    let why = String::from_utf8_lossy(&unconfirmed.stderr);
    assert!(!unconfirmed.status.success() && why.contains("--confirm default"), "{why}");
    let read = leader.client().get(NS, "k/0", "linearizable").await.expect("an unconfirmed restore changes nothing");
    assert_eq!(read.value, Some(b"changed 19".to_vec()));

    let args = ["backup", "restore", &file_arg, "--into-running", "--confirm", NS, "--addr", &follower.http];
    let done = json_of(&run_cli(&args));
    let revision = done["revision"].as_u64().expect("revision");
    assert_eq!(done["old_revision"].as_u64(), Some(old), "{done}");
    assert!(revision > old, "the revision moves past the old one: {done}");
    for agent in [&leader, &follower] {
        for i in 0..KEYS {
            let read = agent.client().get(NS, &format!("k/{i}"), "linearizable").await.expect("read");
            assert_eq!(read.value, Some(format!("v{i}").into_bytes()), "k/{i} on {}", agent.http);
            assert!(read.revision >= revision, "read at {} after the restore at {revision}", read.revision);
        }
        let read = agent.client().get(NS, "after-the-backup", "linearizable").await.expect("read");
        assert_eq!(read.value, None, "a key written after the backup is gone");
    }
    follower.client().put(NS, "new", b"n".to_vec()).await.expect("a write after the restore");
    let next = leader.client().get(NS, "new", "linearizable").await.expect("read").mod_revision;
    assert_eq!(next, Some(revision + 1), "revisions continue above the restore's");
}
