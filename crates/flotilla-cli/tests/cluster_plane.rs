//! `flotilla agent` refuses to run its cluster plane on an address other than loopback without
//! a cluster key, says how to make one, and starts with a key or with the explicit
//! `--insecure-no-cluster-key`, which it logs as a WARN line and shows in `GET /v1/status`.

mod support;

use std::path::Path;
use std::time::Duration;

use flotilla_http::Client;
use serde_json::Value;
use support::{flotilla, free_port, refused_start, until_or_log, LocalAgent};

/// Run an agent with `args` on a loopback HTTP port and expect it to refuse to start.
fn refusal(data: &Path, args: &[&str]) -> String {
    let http = format!("127.0.0.1:{}", free_port());
    refused_start(data, &[&["--http", http.as_str()][..], args].concat())
}

#[test]
fn an_exposed_cluster_plane_without_a_key_is_refused_with_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The default listen address is every interface.
    for args in
        [&[][..], &["--listen", "/ip4/0.0.0.0/tcp/0"][..], &["--listen", "/ip4/127.0.0.1/tcp/0", "/ip6/::/tcp/0"]]
    {
        let err = refusal(&data, args);
        assert!(err.contains("not a loopback address") && err.contains("without a cluster key"), "{err}");
        assert!(err.contains("flotilla keygen") && err.contains("--cluster-key-file"), "how to make a key: {err}");
        assert!(err.contains("--insecure-no-cluster-key"), "the opt-out is named: {err}");
    }
    assert!(!data.join("node.key").exists(), "refused before anything was created");
}

/// Start an agent listening on every interface with `args`; returns once it leads.
async fn exposed_agent(dir: &Path, args: &[&str]) -> (LocalAgent, Value) {
    let agent = LocalAgent::start_listening(dir, "/ip4/0.0.0.0/tcp/0", args).await;
    let client = Client::new(&agent.http, Duration::from_secs(2));
    let led = until_or_log("the agent to lead", &agent.log, || async {
        let s = client.get_json("/v1/ns/default/status").await.ok()?;
        (s["role"] == "leader").then_some(())
    });
    led.await;
    let status = client.get_json("/v1/status").await.expect("status");
    (agent, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opt_out_starts_with_a_warning_and_shows_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, status) = exposed_agent(dir.path(), &["--insecure-no-cluster-key"]).await;
    assert_eq!(status["insecure_no_cluster_key"], true, "{status}");
    assert_eq!(status["sealing"]["enabled"], false, "{status}");
    let log = std::fs::read_to_string(&agent.log).expect("log");
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains("--insecure-no-cluster-key")),
        "a WARN line at start: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_cluster_plane_starts_with_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let out = flotilla().arg("keygen").arg(&key).output().expect("keygen runs");
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let (agent, status) = exposed_agent(dir.path(), &["--cluster-key-file", key.to_str().unwrap()]).await;
    assert_eq!(status["insecure_no_cluster_key"], false, "{status}");
    assert_eq!(status["sealing"]["enabled"], true, "{status}");
    let log = std::fs::read_to_string(&agent.log).expect("log");
    assert!(!log.contains("--insecure-no-cluster-key"), "no warning with a key: {log}");
    // The opt-out and a key contradict each other.
    let err =
        refusal(&dir.path().join("other"), &["--cluster-key-file", key.to_str().unwrap(), "--insecure-no-cluster-key"]);
    assert!(err.contains("contradict"), "{err}");
}
