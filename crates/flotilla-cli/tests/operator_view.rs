//! The operator's view against a real agent: `flotilla status` and `flotilla ns status` as
//! tables and JSON, `flotilla doctor`, and the slow request lines in the agent's log.

mod support;

use std::time::Duration;

use flotilla_http::Client;
use serde_json::Value;
use support::{cli, until_or_log, LocalAgent};

/// One write and one linearizable read, once the agent takes writes.
async fn write_and_read(agent: &LocalAgent) {
    let client = Client::new(&agent.http, Duration::from_secs(10));
    until_or_log("the agent to take writes", &agent.log, || async {
        client.put("default", "k", b"v".to_vec()).await.ok()
    })
    .await;
    client.put("default", "k", b"w".to_vec()).await.expect("put");
    let read = client.get("default", "k", "linearizable").await.expect("get");
    assert_eq!(read.value.as_deref(), Some(&b"w"[..]));
}

fn log_lines(agent: &LocalAgent, containing: &str) -> Vec<String> {
    let text = std::fs::read_to_string(&agent.log).unwrap_or_default();
    text.lines().filter(|l| l.contains(containing)).map(String::from).collect()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tables_doctor_and_slow_request_lines() {
    let dir = tempfile::tempdir().unwrap();
    let agent = LocalAgent::start(dir.path(), &["--slow-request-ms", "0"]).await;
    write_and_read(&agent).await;

    // With a threshold of 0 every write and read logs where its time went (the line is
    // written before the reply, so it is there now).
    let writes = log_lines(&agent, "slow write at index");
    let write = writes.last().unwrap_or_else(|| panic!("no slow write line in the log"));
    for stage in ["waking", "admission", "proposal to commit", "apply", "forwarding", "other", "namespace"] {
        assert!(write.contains(stage), "{stage} missing: {write}");
    }
    assert!(write.contains("WARN"), "{write}");
    let reads = log_lines(&agent, "slow linearizable read at index");
    let read = reads.last().unwrap_or_else(|| panic!("no slow read line in the log"));
    for stage in ["read index", "apply wait"] {
        assert!(read.contains(stage), "{stage} missing: {read}");
    }

    let (ok, out, err) = cli(&agent.http, &["status"], None);
    assert!(ok, "{err}");
    for text in ["node ", "client writes taken", "NAMESPACE", "default", "leader", "self", "1/0"] {
        assert!(out.contains(text), "{text} missing:\n{out}");
    }
    let (ok, out, err) = cli(&agent.http, &["status", "-o", "json"], None);
    assert!(ok, "{err}");
    let status = json(&out);
    assert_eq!(status["namespaces"][0]["role"], "leader", "{status}");
    assert!(status["namespaces"][0]["revision"].as_u64() >= Some(2), "two writes: {status}");
    assert!(status["storage"]["fsync"]["count"].as_u64().unwrap_or(0) > 0, "{status}");
    assert!(status["election_timeout_ms"].as_u64().unwrap_or(0) > 0, "{status}");

    let (ok, out, err) = cli(&agent.http, &["ns", "status", "-n", "default"], None);
    assert!(ok, "{err}");
    for text in ["namespace  default", "MEMBER", "self", "formation  "] {
        assert!(out.contains(text), "{text} missing:\n{out}");
    }
    let (ok, out, err) = cli(&agent.http, &["ns", "status", "-o", "json"], None);
    assert!(ok, "{err}");
    assert!(json(&out)["leadership"]["changes"].as_u64().unwrap_or(0) >= 1, "{out}");

    // The doctor's verdicts; the exit status follows from them (fsync latency depends on the
    // machine, so the test does not insist on every check passing).
    let (ok, out, err) = cli(&agent.http, &["doctor", "-o", "json"], None);
    let findings = json(&out);
    let findings = findings.as_array().unwrap_or_else(|| panic!("a list: {out} {err}"));
    let verdict = |check: &str| {
        findings.iter().find(|f| f["check"] == check).map(|f| f["verdict"].as_str().unwrap_or("").to_string())
    };
    for check in ["storage", "leaders", "splits", "leader-changes", "peers", "lag"] {
        assert_eq!(verdict(check).as_deref(), Some("ok"), "{check}: {out}");
    }
    assert!(verdict("disk").is_some() && verdict("fsync").is_some(), "{out}");
    assert_eq!(ok, findings.iter().all(|f| f["verdict"] != "fail"), "exit status and verdicts: {out}");
    let (_, out, _) = cli(&agent.http, &["doctor"], None);
    assert!(out.contains("VERDICT") && out.contains("leaders") && out.contains(" ok, "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_requests_log_nothing_under_a_large_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let agent = LocalAgent::start(dir.path(), &["--slow-request-ms", "60000"]).await;
    write_and_read(&agent).await;
    assert_eq!(log_lines(&agent, "slow "), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_against_no_node() {
    // Nothing listens there: the doctor cannot judge and says so with a non-zero exit.
    let port = support::free_port();
    let (ok, _, err) = cli(&format!("127.0.0.1:{port}"), &["doctor", "--timeout-secs", "2"], None);
    assert!(!ok, "{err}");
}
