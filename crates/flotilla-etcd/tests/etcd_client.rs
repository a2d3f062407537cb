//! etcd's own Rust client (`etcd-client`) against a single-node Flotilla cluster's etcd
//! endpoint: KV with its options, transactions (Kubernetes' use: `kubernetes_contract.rs`), compaction and
//! etcd's error strings, Maintenance and Cluster, Lock and Election.

mod support;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use support::{endpoint, grpc_message, keys, Endpoint, PATIENCE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_range_options_and_errors() {
    let Endpoint { mut client, running, _dir, .. } = endpoint().await;
    let first = client.put("a", "1", None).await.unwrap();
    let header = first.header().unwrap();
    let r1 = header.revision();
    assert!(r1 > 0);
    assert_eq!(header.member_id(), flotilla_etcd::member_id_of(&running.id()));
    assert_ne!(header.cluster_id(), 0);
    assert!(header.raft_term() > 0);

    let second = client.put("a", "2", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(second.prev_key().unwrap().value(), b"1");
    let r2 = second.header().unwrap().revision();
    client.put("b", "3", None).await.unwrap();
    client.put("c", "0", None).await.unwrap();

    let a = client.get("a", None).await.unwrap();
    let kv = &a.kvs()[0];
    assert_eq!((kv.value(), kv.version(), kv.create_revision(), kv.mod_revision()), (&b"2"[..], 2, r1, r2));
    assert_eq!(client.get("a", Some(GetOptions::new().with_revision(r1))).await.unwrap().kvs()[0].value(), b"1");
    assert_eq!(client.get("a", Some(GetOptions::new().with_serializable())).await.unwrap().kvs()[0].value(), b"2");

    let all = client.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!((keys(&all), all.count(), all.more()), (vec!["a".into(), "b".into(), "c".into()], 3, false));
    let from_b = client.get("b", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(keys(&from_b), vec!["b", "c"]);
    let before_c = client.get("a", Some(GetOptions::new().with_range("c"))).await.unwrap();
    assert_eq!(keys(&before_c), vec!["a", "b"]);
    let limited = client.get("", Some(GetOptions::new().with_all_keys().with_limit(1))).await.unwrap();
    assert_eq!((keys(&limited), limited.count(), limited.more()), (vec!["a".into()], 3, true));
    let by_mod = GetOptions::new().with_all_keys().with_sort(SortTarget::Mod, SortOrder::Descend);
    assert_eq!(keys(&client.get("", Some(by_mod)).await.unwrap()), vec!["c", "b", "a"]);
    let by_value = GetOptions::new().with_all_keys().with_sort(SortTarget::Value, SortOrder::Ascend).with_limit(2);
    assert_eq!(keys(&client.get("", Some(by_value)).await.unwrap()), vec!["c", "a"]);
    let keys_only = client.get("", Some(GetOptions::new().with_all_keys().with_keys_only())).await.unwrap();
    assert!(keys_only.kvs().iter().all(|kv| kv.value().is_empty()));
    let counted = client.get("", Some(GetOptions::new().with_all_keys().with_count_only())).await.unwrap();
    assert_eq!((counted.count(), counted.kvs().len()), (3, 0));
    let recent = client.get("", Some(GetOptions::new().with_all_keys().with_min_mod_revision(r2 + 1))).await.unwrap();
    assert_eq!(keys(&recent), vec!["b", "c"]);
    let old = client.get("", Some(GetOptions::new().with_all_keys().with_max_create_revision(r1))).await.unwrap();
    assert_eq!(keys(&old), vec!["a"]);

    // ignore_value keeps the value and moves the version on; a missing key is etcd's error.
    client.put("a", "", Some(PutOptions::new().with_ignore_value())).await.unwrap();
    let kept = client.get("a", None).await.unwrap();
    assert_eq!((kept.kvs()[0].value(), kept.kvs()[0].version()), (&b"2"[..], 3));
    let missing = client.put("zz", "", Some(PutOptions::new().with_ignore_value())).await.unwrap_err();
    assert_eq!(grpc_message(missing), (tonic::Code::InvalidArgument, "etcdserver: key not found".into()));

    let deleted = client.delete("b", Some(DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!((deleted.deleted(), deleted.prev_kvs()[0].value()), (1, &b"3"[..]));
    let current = deleted.header().unwrap().revision();

    client.compact(current, None).await.unwrap();
    let compacted = client.get("a", Some(GetOptions::new().with_revision(r1))).await.unwrap_err();
    assert_eq!(
        grpc_message(compacted),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into())
    );
    let again = client.compact(current, None).await.unwrap_err();
    assert_eq!(
        grpc_message(again),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into()),
        "etcd refuses a compaction to the revision already compacted"
    );
    let future = client.get("a", Some(GetOptions::new().with_revision(current + 100))).await.unwrap_err();
    assert_eq!(
        grpc_message(future),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".into())
    );
    let empty = client.put("", "v", None).await.unwrap_err();
    assert_eq!(grpc_message(empty), (tonic::Code::InvalidArgument, "etcdserver: key is not provided".into()));
    let no_lease = client.put("l", "v", Some(PutOptions::new().with_lease(12345))).await.unwrap_err();
    assert_eq!(grpc_message(no_lease), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));
    let all = client.delete("", Some(DeleteOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(all.deleted(), 2);
}

/// Transactions' compares on every target with every operator; what is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_compare_every_target_and_operator() {
    let Endpoint { mut client, _dir, .. } = endpoint().await;
    // Compares on value, version, create revision and lease, with every operator.
    client.put("k", "m", None).await.unwrap();
    let checks = [
        (Compare::value("k", CompareOp::Equal, "m"), true),
        (Compare::value("k", CompareOp::Greater, "a"), true),
        (Compare::value("k", CompareOp::Less, "a"), false),
        (Compare::value("k", CompareOp::NotEqual, "m"), false),
        (Compare::version("k", CompareOp::Equal, 1), true),
        (Compare::create_revision("k", CompareOp::Greater, 0), true),
        (Compare::lease("k", CompareOp::Equal, 0), true),
        (Compare::value("absent", CompareOp::NotEqual, "x"), false),
        (Compare::version("absent", CompareOp::Equal, 0), true),
    ];
    for (compare, expected) in checks {
        let answer = client.txn(Txn::new().when([compare.clone()])).await.unwrap();
        assert_eq!(answer.succeeded(), expected, "{compare:?}");
    }
    // Nested transactions: every compare sees the state before the outer transaction (the
    // outer branch changed "k" first), and the nested answer is etcd's nested TxnResponse.
    let inner = Txn::new()
        .when([Compare::value("k", CompareOp::Equal, "m")])
        .and_then([TxnOp::put("n", "then", None)])
        .or_else([TxnOp::put("n", "else", None)]);
    let outer = Txn::new().and_then([TxnOp::put("k", "changed", None), TxnOp::txn(inner), TxnOp::get("n", None)]);
    let answer = client.txn(outer).await.unwrap();
    let responses = answer.op_responses();
    let [_, TxnOpResponse::Txn(nested), TxnOpResponse::Get(read)] = responses.as_slice() else { panic!("{answer:?}") };
    assert!(nested.succeeded(), "the nested compare saw \"m\", the value before the transaction");
    assert_eq!(read.kvs()[0].value(), b"then", "the outer branch reads the nested write");
    assert_eq!(read.kvs()[0].mod_revision(), answer.header().unwrap().revision(), "one revision for all");
    let both = Txn::new()
        .and_then([TxnOp::txn(Txn::new().and_then([TxnOp::put("d", "1", None)])), TxnOp::put("d", "2", None)]);
    assert_eq!(
        grpc_message(client.txn(both).await.unwrap_err()),
        (tonic::Code::InvalidArgument, "etcdserver: duplicate key given in txn request".into()),
        "a key put by a nested transaction and by the branch around it"
    );
    let twice = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    assert_eq!(
        grpc_message(client.txn(twice).await.unwrap_err()),
        (tonic::Code::InvalidArgument, "etcdserver: duplicate key given in txn request".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_cluster() {
    let Endpoint { mut client, running, addr, _dir } = endpoint().await;
    let member = flotilla_etcd::member_id_of(&running.id());
    // A write answered by the leader is applied there: the status shows it.
    client.put("k", "v", None).await.unwrap();
    let status = client.status().await.unwrap();
    assert!(status.version().starts_with("3.5."), "{}", status.version());
    assert_eq!(status.leader(), member);
    assert!(status.raft_term() > 0 && status.raft_index() > 0 && status.raft_applied_index() > 0, "{status:?}");
    assert!(status.db_size() > 0);
    let alarms = client.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await.unwrap();
    assert!(alarms.alarms().is_empty());
    client.defragment().await.unwrap();
    assert_eq!(grpc_message(client.hash().await.unwrap_err()).0, tonic::Code::Unimplemented);

    let members = client.member_list().await.unwrap();
    let listed = members.members();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id(), listed[0].is_learner()), (member, false));
    assert_eq!(listed[0].client_urls(), [format!("http://{addr}")]);
    assert!(!listed[0].peer_urls().is_empty());
    let refused = client.member_add(["http://127.0.0.1:1"], None).await.unwrap_err();
    assert_eq!(grpc_message(refused).0, tonic::Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_grant_keep_alive_time_to_live_and_revoke() {
    let Endpoint { mut client, _dir, .. } = endpoint().await;
    let granted = client.lease_grant(60, None).await.unwrap();
    let id = granted.id();
    assert!(id > 0);
    assert_eq!(granted.ttl(), 60);
    client.put("owned", "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    assert_eq!(client.get("owned", None).await.unwrap().kvs()[0].lease(), id);

    let with_keys = etcd_client::LeaseTimeToLiveOptions::new().with_keys();
    let live = client.lease_time_to_live(id, Some(with_keys)).await.unwrap();
    assert_eq!((live.id(), live.granted_ttl()), (id, 60));
    assert!(live.ttl() > 0 && live.ttl() <= 60, "{}", live.ttl());
    assert_eq!(live.keys(), [b"owned".to_vec()]);

    let (mut keeper, mut answers) = client.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let renewed = answers.message().await.unwrap().expect("a keep-alive answer");
    assert_eq!((renewed.id(), renewed.ttl()), (id, 60));
    let listed = client.leases().await.unwrap();
    assert!(listed.leases().iter().any(|l| l.id() == id));

    let taken = etcd_client::LeaseGrantOptions::new().with_id(id);
    let exists = client.lease_grant(60, Some(taken)).await.unwrap_err();
    assert_eq!(grpc_message(exists), (tonic::Code::FailedPrecondition, "etcdserver: lease already exists".into()));

    client.lease_revoke(id).await.unwrap();
    assert!(client.get("owned", None).await.unwrap().kvs().is_empty(), "the lease's keys go with it");
    assert_eq!(client.lease_time_to_live(id, None).await.unwrap().ttl(), -1, "etcd's answer for a lease gone");
    keeper.keep_alive().await.unwrap();
    let gone = answers.message().await.unwrap().expect("a keep-alive answer");
    assert_eq!(gone.ttl(), 0, "etcd's keep-alive answer for a lease gone");
    let again = client.lease_revoke(id).await.unwrap_err();
    assert_eq!(grpc_message(again), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));
}

/// The next watch answer, within [`PATIENCE`].
async fn next(stream: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a watch answer in time")
        .expect("the stream works")
        .expect("the stream is open")
}

/// The next answer of watcher `id` that carries events, skipping progress notifications.
async fn next_events(stream: &mut etcd_client::WatchStream, id: i64) -> etcd_client::WatchResponse {
    for _ in 0..100 {
        let answer = next(stream).await;
        if answer.watch_id() == id && !answer.events().is_empty() {
            return answer;
        }
        assert!(!answer.canceled(), "watcher cancelled: {answer:?}");
    }
    panic!("no events for watcher {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_with_history_prev_kv_filters_progress_and_cancel() {
    use etcd_client::{EventType, WatchFilterType, WatchOptions};
    let Endpoint { mut client, _dir, .. } = endpoint().await;
    let first = client.put("w/a", "1", None).await.unwrap().header().unwrap().revision();

    let mut stream = client.watch("w/a", Some(WatchOptions::new().with_prev_key())).await.unwrap();
    let created = next(&mut stream).await;
    assert!(created.created() && !created.canceled());
    let live = created.watch_id();
    client.put("w/a", "2", None).await.unwrap();
    let deleted = client.delete("w/a", None).await.unwrap().header().unwrap().revision();
    let put = next_events(&mut stream, live).await;
    let event = &put.events()[0];
    assert_eq!((event.event_type(), event.kv().unwrap().value()), (EventType::Put, &b"2"[..]));
    assert_eq!(event.prev_kv().unwrap().value(), b"1");
    let delete = next_events(&mut stream, live).await;
    assert_eq!(delete.events()[0].event_type(), EventType::Delete);
    assert_eq!(delete.events()[0].prev_kv().unwrap().value(), b"2");

    // A second watcher on the same stream replays the prefix's history, deletes filtered out.
    let history =
        WatchOptions::new().with_prefix().with_start_revision(first).with_filters([WatchFilterType::NoDelete]);
    stream.watch("w/", Some(history)).await.unwrap();
    let created = next(&mut stream).await;
    assert!(created.created());
    let replay = created.watch_id();
    assert_ne!(replay, live);
    let mut values = Vec::new();
    while values.len() < 2 {
        let answer = next_events(&mut stream, replay).await;
        for event in answer.events() {
            assert_eq!(event.event_type(), EventType::Put, "deletes are filtered out");
            values.push(event.kv().unwrap().value().to_vec());
        }
    }
    assert_eq!(values, vec![b"1".to_vec(), b"2".to_vec()]);

    // A progress request is answered on the stream (watch id -1) at a revision every watcher
    // has reached.
    let current = client.put("other", "x", None).await.unwrap().header().unwrap().revision();
    stream.request_progress().await.unwrap();
    let progress = loop {
        let answer = next(&mut stream).await;
        if answer.watch_id() == -1 && answer.events().is_empty() {
            break answer;
        }
    };
    let revision = progress.header().unwrap().revision();
    assert!((deleted..=current).contains(&revision), "{deleted} <= {revision} <= {current}");

    stream.cancel(live).await.unwrap();
    let canceled = loop {
        let answer = next(&mut stream).await;
        if answer.canceled() {
            break answer;
        }
    };
    assert_eq!(canceled.watch_id(), live);

    // From a compacted revision: created, then cancelled with the compacted revision.
    client.compact(current, None).await.unwrap();
    let mut old = client.watch("w/a", Some(WatchOptions::new().with_start_revision(first))).await.unwrap();
    assert!(next(&mut old).await.created());
    let compacted = next(&mut old).await;
    assert!(compacted.canceled());
    assert_eq!(compacted.compact_revision(), current);
}

/// Wait until `key` exists (`true`) or not (`false`), within [`PATIENCE`].
async fn until_exists(client: &mut Client, key: &[u8], wanted: bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while client.get(key, None).await.unwrap().kvs().is_empty() == wanted {
        assert!(tokio::time::Instant::now() < deadline, "{:?} exists: {}", String::from_utf8_lossy(key), !wanted);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_live_on_the_callers_lease_queue_and_withdraw() {
    use etcd_client::LockOptions;
    let Endpoint { mut client, _dir, .. } = endpoint().await;
    let first = client.lease_grant(60, None).await.unwrap().id();
    let held = client.lock("job", Some(LockOptions::new().with_lease(first))).await.unwrap();
    assert_eq!(held.key(), format!("job/{first:x}").as_bytes(), "etcd's key: name/<lease in hex>");
    let kv = client.get(held.key(), None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.lease(), kv.create_revision()), (first, held.header().unwrap().revision()));

    // A second contender waits behind the first, its key in the queue.
    let second = client.lease_grant(60, None).await.unwrap().id();
    let mut other = client.clone();
    let waiting =
        tokio::spawn(async move { other.lock("job", Some(LockOptions::new().with_lease(second))).await.unwrap() });
    let second_key = format!("job/{second:x}");
    until_exists(&mut client, second_key.as_bytes(), true).await;
    assert!(!waiting.is_finished(), "the lock is held");
    client.unlock(held.key()).await.unwrap();
    let taken = tokio::time::timeout(PATIENCE, waiting).await.expect("the waiter takes the lock").unwrap();
    assert_eq!(taken.key(), second_key.as_bytes());

    // A contender that gives up leaves the queue; the lease's end frees the lock.
    let third = client.lease_grant(60, None).await.unwrap().id();
    let mut other = client.clone();
    let gives_up =
        tokio::spawn(async move { other.lock("job", Some(LockOptions::new().with_lease(third))).await.unwrap() });
    let third_key = format!("job/{third:x}");
    until_exists(&mut client, third_key.as_bytes(), true).await;
    gives_up.abort();
    until_exists(&mut client, third_key.as_bytes(), false).await;
    client.lease_revoke(second).await.unwrap();

    // Without a lease, the lock gets one of etcd's session TTL (60 s).
    let own = client.lock("job", None).await.unwrap();
    let lease = client.get(own.key(), None).await.unwrap().kvs()[0].lease();
    assert_eq!(own.key(), format!("job/{lease:x}").as_bytes());
    assert_eq!(client.lease_time_to_live(lease, None).await.unwrap().granted_ttl(), 60);
    let unknown = client.lock("job", Some(LockOptions::new().with_lease(12345))).await.unwrap_err();
    assert_eq!(grpc_message(unknown), (tonic::Code::NotFound, "etcdserver: requested lease not found".into()));
}

/// The next value an Observe stream reports, within [`PATIENCE`].
async fn observed(stream: &mut etcd_client::ObserveStream) -> Vec<u8> {
    let answer = tokio::time::timeout(PATIENCE, stream.message()).await.expect("an observation in time");
    answer.expect("the stream works").expect("the stream is open").kv().expect("a leader").value().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_campaign_proclaim_observe_and_resign() {
    use etcd_client::{ProclaimOptions, ResignOptions};
    let Endpoint { mut client, _dir, .. } = endpoint().await;
    let nobody = client.leader("svc").await.unwrap_err();
    assert_eq!(grpc_message(nobody), (tonic::Code::Unknown, "election: no leader".into()));
    let mut observer = client.observe("svc").await.unwrap();

    let a = client.lease_grant(60, None).await.unwrap().id();
    let won = client.campaign("svc", "a1", a).await.unwrap();
    let leader = won.leader().unwrap().clone();
    assert_eq!((leader.name(), leader.key(), leader.lease()), (&b"svc"[..], format!("svc/{a:x}").as_bytes(), a));
    assert_eq!(leader.rev(), won.header().unwrap().revision());
    assert_eq!(observed(&mut observer).await, b"a1");
    client.proclaim("a2", Some(ProclaimOptions::new().with_leader(leader.clone()))).await.unwrap();
    assert_eq!(observed(&mut observer).await, b"a2");
    let now = client.leader("svc").await.unwrap();
    assert_eq!((now.kv().unwrap().key(), now.kv().unwrap().value()), (leader.key(), &b"a2"[..]));

    // A second candidate waits until the leader resigns, then leads.
    let b = client.lease_grant(60, None).await.unwrap().id();
    let mut other = client.clone();
    let waiting = tokio::spawn(async move { other.campaign("svc", "b1", b).await.unwrap() });
    until_exists(&mut client, format!("svc/{b:x}").as_bytes(), true).await;
    assert!(!waiting.is_finished(), "a leads");
    client.resign(Some(ResignOptions::new().with_leader(leader.clone()))).await.unwrap();
    let next = tokio::time::timeout(PATIENCE, waiting).await.expect("b is elected").unwrap();
    assert_eq!(next.leader().unwrap().key(), format!("svc/{b:x}").as_bytes());
    assert_eq!(observed(&mut observer).await, b"b1");
    let stale = client.proclaim("a3", Some(ProclaimOptions::new().with_leader(leader))).await.unwrap_err();
    assert_eq!(grpc_message(stale), (tonic::Code::Unknown, "election: not leader".into()));
}
