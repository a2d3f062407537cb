//! Coordination over HTTP on a single-node cluster: ETags and revision headers, conditional
//! writes answering 412, transactions, reads at past revisions, paged ranges, compaction,
//! watches as Server-Sent Events and leases.

use std::sync::Arc;
use std::time::Duration;

use flotilla::in_process::InProcessNetwork;
use flotilla::{Config, Namespace, Node};
use flotilla_http::{Client, ClientError, Condition};
use flotilla_store::Store;
use serde_json::{json, Value};

async fn single_node() -> (Arc<Node>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        namespaces: vec![Namespace::new("default").unwrap()],
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        ..Config::default()
    };
    let store = Store::open(&config.data_dir).expect("store");
    let node = Node::start(config, InProcessNetwork::new(1).transport(id), store).await.expect("node");
    node.cluster("default").unwrap().wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(flotilla_http::serve(listener, node.clone(), std::future::pending()));
    (node, addr, dir)
}

fn status_and_code(err: &ClientError) -> (u16, String) {
    match err {
        ClientError::Api { status, code, .. } => (*status, code.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn get_answers_etag_and_revisions_and_writes_answer_their_revision() {
    let (_node, addr, _dir) = single_node().await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v1/kv/default/cfg");
    let first: Value = http.put(&url).body("a").send().await.unwrap().json().await.unwrap();
    let second = http.put(&url).body("b").send().await.unwrap();
    assert_eq!(second.status(), 200);
    let rev2 = second.headers()["x-flotilla-revision"].to_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(second.headers()["etag"], format!("\"{rev2}\"").as_str());
    let rev1 = first["revision"].as_u64().unwrap();
    assert_eq!(rev2, rev1 + 1);

    let got = http.get(&url).send().await.unwrap();
    let h = got.headers().clone();
    assert_eq!(h["etag"], format!("\"{rev2}\"").as_str());
    assert_eq!(h["x-flotilla-mod-revision"], rev2.to_string().as_str());
    assert_eq!(h["x-flotilla-create-revision"], rev1.to_string().as_str());
    assert_eq!(h["x-flotilla-version"], "2");
    assert_eq!(h["x-flotilla-revision"], rev2.to_string().as_str());
    assert_eq!(got.text().await.unwrap(), "b");

    // A past revision reads what was there then; a future one is refused.
    let old = http.get(format!("{url}?revision={rev1}")).send().await.unwrap();
    assert_eq!(old.text().await.unwrap(), "a");
    let future = http.get(format!("{url}?revision={}", rev2 + 5)).send().await.unwrap();
    assert_eq!(future.status(), 400);
    let body: Value = future.json().await.unwrap();
    assert_eq!(body["error"]["code"], "future_revision");
    assert_eq!(body["error"]["revision"], rev2);
}

#[tokio::test]
async fn conditional_writes_apply_only_when_the_condition_holds() {
    let (_node, addr, _dir) = single_node().await;
    let c = Client::new(&addr, Duration::from_secs(10));
    let created = c.put_if("default", "lock", b"me".to_vec(), Condition::Absent).await.unwrap();
    let err = c.put_if("default", "lock", b"you".to_vec(), Condition::Absent).await.unwrap_err();
    assert_eq!(status_and_code(&err), (412, "precondition_failed".into()));
    let err = c.put_if("default", "lock", b"you".to_vec(), Condition::ModRevision(created + 9)).await.unwrap_err();
    assert_eq!(status_and_code(&err), (412, "precondition_failed".into()));
    assert_eq!(c.get("default", "lock", "linearizable").await.unwrap().value.as_deref(), Some(&b"me"[..]));
    let updated = c.put_if("default", "lock", b"me2".to_vec(), Condition::ModRevision(created)).await.unwrap();
    assert!(updated > created);

    // The 412 names the current revisions, in the body and as headers.
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v1/kv/default/lock");
    let refused = http.delete(&url).header("if-match", format!("\"{created}\"")).send().await.unwrap();
    assert_eq!(refused.status(), 412);
    assert_eq!(refused.headers()["x-flotilla-mod-revision"], updated.to_string().as_str());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["mod_revision"], updated);
    let bad = http.put(&url).header("if-match", "yesterday").body("x").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    c.delete_if("default", "lock", Condition::ModRevision(updated)).await.unwrap();
    assert_eq!(c.get("default", "lock", "linearizable").await.unwrap().value, None);
}

#[tokio::test]
async fn a_transaction_runs_one_branch_atomically() {
    let (_node, addr, _dir) = single_node().await;
    let c = Client::new(&addr, Duration::from_secs(10));
    c.put("default", "stock", b"1".to_vec()).await.unwrap();
    let buy = json!({
        "compare": [{ "key": "stock", "target": "value", "value": "1" }, { "key": "order", "target": "exists", "value": false }],
        "success": [{ "put": { "key": "stock", "value": "0" } }, { "put": { "key": "order", "value": "placed" } }, { "get": { "key": "stock" } }],
        "failure": [{ "range": { "key": "", "from_key": true } }]
    });
    let won = c.post_json("/v1/txn/default", &buy).await.unwrap();
    assert_eq!(won["succeeded"], true, "{won}");
    assert_eq!(won["results"][2]["range"]["kvs"][0]["value"], "0");
    let revision = won["revision"].as_u64().unwrap();
    let lost = c.post_json("/v1/txn/default", &buy).await.unwrap();
    assert_eq!(lost["succeeded"], false);
    assert_eq!(lost["revision"], revision, "the failure branch only read");
    assert_eq!(lost["results"][0]["range"]["kvs"].as_array().unwrap().len(), 2);
    // Malformed and self-contradicting transactions are refused (400; 422 for a body that is
    // not a transaction at all, as on every JSON route).
    for bad in [
        json!({ "success": [{ "put": { "key": "k" } }] }),
        json!({ "success": [{ "put": { "key": "k", "value": "1" }, "get": { "key": "k" } }] }),
        json!({ "compare": [{ "key": "k", "target": "color", "value": 1 }] }),
        json!({ "success": [{ "put": { "key": "k", "value": "1" } }, { "put": { "key": "k", "value": "2" } }] }),
        json!({ "unknown": [] }),
    ] {
        let err = c.post_json("/v1/txn/default", &bad).await.unwrap_err();
        assert!([400, 422].contains(&status_and_code(&err).0), "{bad}: {err}");
    }
}

#[tokio::test]
async fn ranges_page_through_any_number_of_keys_and_compaction_forgets_the_past() {
    let (_node, addr, _dir) = single_node().await;
    let c = Client::new(&addr, Duration::from_secs(30));
    let mut batch = Vec::new();
    for i in 0..250 {
        batch.push(json!({ "put": { "key": format!("job/{i:03}"), "value": format!("v{i}") } }));
    }
    let first = c.post_json("/v1/txn/default", &json!({ "success": batch })).await.unwrap();
    let at_first = first["revision"].as_u64().unwrap();
    c.put("default", "job/000", b"changed".to_vec()).await.unwrap();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/kv/default?prefix=job/&values=true&limit=100&revision={at_first}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = c.get_json(&path).await.unwrap();
        for kv in page["kvs"].as_array().unwrap() {
            seen.push((kv["key"].as_str().unwrap().to_string(), kv["value"].as_str().unwrap().to_string()));
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    assert_eq!(seen[0], ("job/000".to_string(), "v0".to_string()), "read as of the first revision");

    let compacted = c.post_json("/v1/ns/default/compact", &json!({ "revision": at_first + 1 })).await.unwrap();
    assert_eq!(compacted["compacted"], at_first + 1);
    let gone = reqwest::get(format!("http://{addr}/v1/kv/default/job/001?revision={at_first}")).await.unwrap();
    assert_eq!(gone.status(), 410);
    assert_eq!(gone.headers()["x-flotilla-compacted-revision"], (at_first + 1).to_string().as_str());
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["error"]["code"], "compacted");
    let still = c.get_at("default", "job/001", at_first + 1, "linearizable").await.unwrap();
    assert_eq!(still.value.as_deref(), Some(&b"v1"[..]));
}

#[tokio::test]
async fn a_watch_streams_server_sent_events_and_resumes_from_last_event_id() {
    let (_node, addr, _dir) = single_node().await;
    let c = Client::new(&addr, Duration::from_secs(10));
    let first = c.put_if("default", "w/a", b"1".to_vec(), Condition::Absent).await.unwrap();
    let txn =
        json!({ "success": [{ "put": { "key": "w/a", "value": "2" } }, { "put": { "key": "w/b", "value": "3" } }] });
    let second = c.post_json("/v1/txn/default", &txn).await.unwrap()["revision"].as_u64().unwrap();
    c.delete("default", "w/b").await.unwrap();

    // From the first revision: every change, the id only on the last event of a revision.
    let mut seen = Vec::new();
    let watching = c.watch("default", "w/", true, first, true, |event| {
        seen.push(event);
        seen.len() < 4
    });
    tokio::time::timeout(Duration::from_secs(20), watching).await.expect("four events in time").unwrap();
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["put", "put", "put", "delete"]);
    let ids: Vec<Option<String>> = seen.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, [Some(first.to_string()), None, Some(second.to_string()), Some((second + 1).to_string())]);
    let change: Value = serde_json::from_str(&seen[1].data).unwrap();
    assert_eq!((change["kv"]["value"].as_str(), change["prev"]["value"].as_str()), (Some("2"), Some("1")));

    // Last-Event-ID resumes after that revision, as EventSource does on a reconnect.
    let http = reqwest::Client::new();
    let mut response = http
        .get(format!("http://{addr}/v1/watch/default/w/?prefix=true"))
        .header("last-event-id", second.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk()).await.unwrap().unwrap().unwrap();
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.contains("event: delete") && text.contains(&format!("id: {}", second + 1)), "{text}");

    // A compacted start is refused before the stream starts.
    c.post_json("/v1/ns/default/compact", &json!({ "revision": second + 1 })).await.unwrap();
    let refused = reqwest::get(format!("http://{addr}/v1/watch/default/w/a?from_revision={first}")).await.unwrap();
    assert_eq!(refused.status(), 410);
}

#[tokio::test]
async fn leases_are_granted_kept_alive_listed_and_revoked_with_their_keys() {
    let (_node, addr, _dir) = single_node().await;
    let c = Client::new(&addr, Duration::from_secs(10));
    let granted = c.post_json("/v1/lease/default", &json!({ "ttl": 60 })).await.unwrap();
    let id = granted["id"].as_u64().unwrap();
    assert_eq!(granted["ttl"], 60);
    c.put_with_lease("default", "svc/node-1", b"10.0.0.1".to_vec(), id).await.unwrap();
    let read = reqwest::get(format!("http://{addr}/v1/kv/default?prefix=svc/&values=true")).await.unwrap();
    let body: Value = read.json().await.unwrap();
    assert_eq!(body["kvs"][0]["lease"], id);
    let kept = c.post_json(&format!("/v1/lease/default/{id}/keepalive"), &json!({})).await.unwrap();
    assert_eq!(kept["ttl"], 60);
    let ttl = c.get_json(&format!("/v1/lease/default/{id}?keys=true")).await.unwrap();
    assert_eq!(ttl["keys"][0]["key"], "svc/node-1");
    assert!(ttl["remaining_ms"].as_u64().unwrap() <= 60_000);
    assert_eq!(c.get_json("/v1/lease/default").await.unwrap()["leases"][0]["id"], id);
    let revoked = c.delete_json(&format!("/v1/lease/default/{id}")).await.unwrap();
    assert_eq!(revoked["deleted"], 1);
    assert_eq!(c.get("default", "svc/node-1", "linearizable").await.unwrap().value, None);
    let err = c.post_json(&format!("/v1/lease/default/{id}/keepalive"), &json!({})).await.unwrap_err();
    assert_eq!(status_and_code(&err), (404, "lease_not_found".into()));
    let err = c.put_with_lease("default", "svc/late", b"x".to_vec(), id).await.unwrap_err();
    assert_eq!(status_and_code(&err), (404, "lease_not_found".into()));
}

#[tokio::test]
async fn queues_and_locks_over_http() {
    let (_node, addr, _dir) = single_node().await;
    let c = Client::new(&addr, Duration::from_secs(10));
    for item in ["one", "two"] {
        c.post_bytes("/v1/queue/default/jobs", item.as_bytes().to_vec()).await.unwrap();
    }
    assert_eq!(c.get_json("/v1/queue/default/jobs").await.unwrap()["waiting"], 2);
    assert_eq!(c.get_json("/v1/queue/default/jobs/peek").await.unwrap()["value"], "one");
    let taken = c.post_empty("/v1/queue/default/jobs/pop?visibility_ms=30000").await.unwrap();
    assert_eq!(taken["value"], "one");
    let (id, lease) = (taken["id"].as_u64().unwrap(), taken["lease"].as_u64().unwrap());
    assert_eq!(c.get_json("/v1/queue/default/jobs").await.unwrap()["in_flight"], 1);
    let acked = c.post_empty(&format!("/v1/queue/default/jobs/ack/{id}?lease={lease}")).await.unwrap();
    assert_eq!(acked["acked"], true);
    assert_eq!(c.post_empty("/v1/queue/default/jobs/pop").await.unwrap()["value"], "two");
    let err = c.post_empty("/v1/queue/default/jobs/pop").await.unwrap_err();
    assert_eq!(status_and_code(&err), (404, "queue_empty".into()));

    let held = c.post_empty("/v1/lock/default/db?ttl=30").await.unwrap();
    let token = held["fencing_token"].as_u64().unwrap();
    assert_eq!(c.get_json("/v1/lock/default/db").await.unwrap()["fencing_token"], token);
    let err = c.post_empty("/v1/lock/default/db?ttl=30&wait_ms=0").await.unwrap_err();
    assert_eq!(status_and_code(&err), (504, "timeout".into()));
    c.delete_json(&format!("/v1/lease/default/{}", held["lease"])).await.unwrap();
    let next = c.post_empty("/v1/lock/default/db?ttl=30").await.unwrap();
    assert!(next["fencing_token"].as_u64().unwrap() > token);
    let err = c.post_empty("/v1/lock/default/a%2Fb").await.unwrap_err();
    assert_eq!(status_and_code(&err).0, 400, "a name with '/' is refused");

    let leader = c.post_json("/v1/election/default/sched?ttl=30", &json!({ "value": "node-a" })).await.unwrap();
    assert!(leader["fencing_token"].as_u64().is_some());
    assert_eq!(c.get_json("/v1/election/default/sched").await.unwrap()["value"], "node-a");
}
