//! `flotilla agent --etcd-listen` against etcd's own command-line client, `etcdctl` (Debian's
//! `etcd-client` package): put, get, del, txn, watch, leases, compaction and its error,
//! endpoint status, member list, lock and elect. Skipped, saying why, when `etcdctl` is not
//! installed (and failed instead when running as root, as CI does, which installs it).

mod support;

use support::etcdctl::{etcdctl, installed_or_skip, ok, watched_lines};
use support::{running_field, LocalAgent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_drives_the_agents_etcd_endpoint() {
    if !installed_or_skip(&[("etcdctl", "version")], "etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = LocalAgent::start(dir.path(), &["--etcd-listen", "127.0.0.1:0"]).await;
    let text = std::fs::read_to_string(&agent.log).expect("log");
    let endpoint = running_field(&text, "etcd").expect("the etcd endpoint is logged");
    assert_ne!(endpoint, "off");

    assert_eq!(ok(&endpoint, &["put", "greeting", "hello"]), "OK\n");
    assert_eq!(ok(&endpoint, &["get", "greeting"]), "greeting\nhello\n");
    ok(&endpoint, &["put", "greeting2", "hi"]);
    assert_eq!(ok(&endpoint, &["get", "greet", "--prefix", "--keys-only"]), "greeting\n\ngreeting2\n\n");
    let limited = ok(&endpoint, &["get", "greet", "--prefix", "--limit", "1", "-w", "fields"]);
    assert!(limited.contains("\"Count\" : 2") && limited.contains("\"More\" : true"), "{limited}");

    // A create on mod revision 0 (Kubernetes' create), then the same again failing.
    let create = "mod(\"pod\") = \"0\"\n\nput pod v1\n\nget pod\n\n";
    let (success, out, err) = etcdctl(&endpoint, &["txn"], Some(create));
    assert!(success, "{err}");
    assert_eq!(out, "SUCCESS\n\nOK\n");
    let (success, out, err) = etcdctl(&endpoint, &["txn"], Some(create));
    assert!(success, "{err}");
    assert_eq!(out, "FAILURE\n\npod\nv1\n");

    // etcd's Go client watches the history from revision 1: the create above, as a put.
    assert_eq!(watched_lines(&endpoint, &["watch", "pod", "--rev", "1"], 3), ["PUT", "pod", "v1"]);

    assert_eq!(ok(&endpoint, &["del", "greeting"]), "1\n");
    assert_eq!(ok(&endpoint, &["get", "greeting"]), "");

    let status = ok(&endpoint, &["endpoint", "status", "-w", "json"]);
    assert!(status.contains("\"version\":\"3.5."), "{status}");
    let members = ok(&endpoint, &["member", "list"]);
    assert!(members.contains(&format!("http://{endpoint}")), "{members}");

    // etcdctl prints lease ids in hex: "lease 694d... granted with TTL(60s)".
    let granted = ok(&endpoint, &["lease", "grant", "60"]);
    let lease = granted.split_whitespace().nth(1).unwrap_or_else(|| panic!("a lease id in {granted}")).to_string();
    assert!(granted.contains("TTL(60s)"), "{granted}");
    ok(&endpoint, &["put", "owned", "v", "--lease", &lease]);
    let live = ok(&endpoint, &["lease", "timetolive", &lease, "--keys"]);
    assert!(live.contains("granted with TTL(60s)") && live.contains("attached keys([owned])"), "{live}");
    assert!(ok(&endpoint, &["lease", "list"]).contains(&lease));
    ok(&endpoint, &["lease", "revoke", &lease]);
    assert_eq!(ok(&endpoint, &["get", "owned"]), "", "the lease's keys go with it");

    // etcdctl runs etcd's lock and election recipes in the client, over KV, leases and watches.
    let held = ok(&endpoint, &["lock", "job", "--", "sh", "-c", "echo \"$ETCD_LOCK_KEY\""]);
    assert!(held.starts_with("job/") && held.ends_with('\n'), "the lock's key: {held}");
    let elected = watched_lines(&endpoint, &["elect", "svc", "v1"], 2);
    assert!(elected.len() == 2 && elected[0].starts_with("svc/") && elected[1] == "v1", "{elected:?}");
    // Killed, the candidate did not resign: its key leads until its lease ends.
    assert_eq!(watched_lines(&endpoint, &["elect", "-l", "svc"], 2), elected);

    let revision = ok(&endpoint, &["put", "last", "x", "-w", "json"]);
    let revision: u64 = revision
        .split("\"revision\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a revision in {revision}"));
    ok(&endpoint, &["compact", &revision.to_string()]);
    let (success, _, err) = etcdctl(&endpoint, &["get", "pod", "--rev", "1"], None);
    assert!(!success);
    assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
}

/// etcd's election and lock recipes wait for the keys created before their own
/// (`create_revision - 1`): when the candidate's key was a namespace's first write, that bound
/// was 0, which etcd's client reads as "no bound", and it waited for its own key forever. A
/// namespace never written is at revision 1, as in etcd, so its first write is revision 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_or_a_lock_as_the_namespaces_first_write_wins_at_once() {
    if !installed_or_skip(&[("etcdctl", "version")], "etcd-client") {
        return;
    }
    for first in ["elect", "lock"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = LocalAgent::start(dir.path(), &["--etcd-listen", "127.0.0.1:0"]).await;
        let text = std::fs::read_to_string(&agent.log).expect("log");
        let endpoint = running_field(&text, "etcd").expect("the etcd endpoint is logged");
        let status = ok(&endpoint, &["endpoint", "status", "-w", "json"]);
        let parsed: serde_json::Value = serde_json::from_str(&status).expect("etcdctl prints JSON");
        let revision = parsed[0]["Status"]["header"]["revision"].as_u64();
        assert_eq!(revision, Some(1), "a namespace never written is at revision 1: {status}");
        if first == "elect" {
            let elected = watched_lines(&endpoint, &["elect", "svc", "v1"], 2);
            assert!(elected.len() == 2 && elected[1] == "v1", "the first candidate leads: {elected:?}");
        } else {
            let held = watched_lines(&endpoint, &["lock", "job", "--", "sh", "-c", "echo held"], 1);
            assert_eq!(held, ["held"], "the first lock is held at once");
        }
    }
}
