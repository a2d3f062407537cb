//! Kubernetes' storage contract, as the apiserver's etcd3 store and kine use etcd, driven
//! through etcd's Rust client against Flotilla's etcd endpoint: create on
//! `mod_revision == 0`, update on `mod_revision == N` reading the current object when it fails,
//! delete on the revision read, paged lists at one revision, watches from `rv + 1` with
//! previous values and progress notifications, the compactor's transaction on the version of
//! `compact_rev_key` then Compact, and the health key.

mod support;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
    WatchResponse, WatchStream,
};
use support::{endpoint, grpc_message, keys, Endpoint, PATIENCE};

/// The apiserver's create: the object is written only if its key does not exist; otherwise the
/// current object is read.
fn create(key: &str, value: &str) -> Txn {
    update(key, 0, value)
}

/// The apiserver's update (a guaranteed update): written only if the key's last change is
/// revision `expected`; otherwise the current object is read, to retry on it.
fn update(key: &str, expected: i64, value: &str) -> Txn {
    Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
        .and_then([TxnOp::put(key, value, None)])
        .or_else([TxnOp::get(key, None)])
}

/// The object a failed create or update read: (value, mod revision).
fn current(answer: &etcd_client::TxnResponse) -> (Vec<u8>, i64) {
    let TxnOpResponse::Get(found) = &answer.op_responses()[0] else { panic!("a range in the failure branch") };
    let kv = &found.kvs()[0];
    (kv.value().to_vec(), kv.mod_revision())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_delete_as_the_apiserver_does() {
    let Endpoint { mut client, _dir, .. } = endpoint().await;
    let key = "/registry/pods/default/web";
    let created = client.txn(create(key, "v1")).await.unwrap();
    assert!(created.succeeded());
    let rev = created.header().unwrap().revision();
    let again = client.txn(create(key, "v1b")).await.unwrap();
    assert!(!again.succeeded(), "a second create fails");
    assert_eq!(current(&again), (b"v1".to_vec(), rev));

    let updated = client.txn(update(key, rev, "v2")).await.unwrap();
    assert!(updated.succeeded());
    let rev2 = updated.header().unwrap().revision();
    let stale = client.txn(update(key, rev, "v3")).await.unwrap();
    assert!(!stale.succeeded(), "an update at an old revision fails");
    assert_eq!(current(&stale), (b"v2".to_vec(), rev2));

    let delete = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, rev2)])
        .and_then([TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()))])
        .or_else([TxnOp::get(key, None)]);
    let deleted = client.txn(delete).await.unwrap();
    assert!(deleted.succeeded());
    let TxnOpResponse::Delete(gone) = &deleted.op_responses()[0] else { panic!("a delete") };
    assert_eq!((gone.deleted(), gone.prev_kvs()[0].value()), (1, &b"v2"[..]));
    assert!(client.get(key, None).await.unwrap().kvs().is_empty());

    // The apiserver's health check reads the health key (absent: an empty answer, no error).
    for options in [None, Some(GetOptions::new().with_serializable())] {
        assert!(client.get("/registry/health", options).await.unwrap().kvs().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_lists_stay_at_the_first_pages_revision() {
    let Endpoint { mut client, _dir, .. } = endpoint().await;
    for n in 0..5 {
        client.put(format!("/registry/pods/ns/p{n}"), "v", None).await.unwrap();
    }
    client.put("/registry/pods/other", "x", None).await.unwrap();
    let prefix = "/registry/pods/ns/";
    let end = "/registry/pods/ns0"; // the prefix's range end, as the apiserver computes it
    let first = client.get(prefix, Some(GetOptions::new().with_range(end).with_limit(2))).await.unwrap();
    assert_eq!(
        (keys(&first), first.more(), first.count()),
        (vec![format!("{prefix}p0"), format!("{prefix}p1")], true, 5)
    );
    let rv = first.header().unwrap().revision();

    // Changes after the first page do not show in the next ones: the list is at `rv`.
    client.put(format!("{prefix}p1a"), "new", None).await.unwrap();
    client.delete(format!("{prefix}p3"), None).await.unwrap();
    let mut listed = keys(&first);
    let mut next = format!("{}\0", listed.last().unwrap());
    loop {
        let options = GetOptions::new().with_range(end).with_limit(2).with_revision(rv);
        let page = client.get(next.as_str(), Some(options)).await.unwrap();
        assert_eq!(
            page.header().unwrap().revision(),
            client.get("x", None).await.unwrap().header().unwrap().revision()
        );
        // The apiserver's remaining item count: the keys after this page at `rv`.
        let remaining = page.count() - page.kvs().len() as i64;
        listed.extend(keys(&page));
        assert_eq!(remaining > 0, page.more());
        if !page.more() {
            break;
        }
        next = format!("{}\0", listed.last().unwrap());
    }
    let expected: Vec<String> = (0..5).map(|n| format!("{prefix}p{n}")).collect();
    assert_eq!(listed, expected, "the list as it was at revision {rv}");

    // The apiserver counts objects with a count-only read.
    let counted = client.get(prefix, Some(GetOptions::new().with_range(end).with_count_only())).await.unwrap();
    assert_eq!((counted.count(), counted.kvs().len()), (5, 0), "p0..p4 less p3, plus p1a");
}

/// The next answer of `stream` within [`PATIENCE`].
async fn next(stream: &mut WatchStream) -> WatchResponse {
    let answer = tokio::time::timeout(PATIENCE, stream.message()).await.expect("a watch answer in time");
    answer.expect("the stream works").expect("the stream is open")
}

/// The revision the endpoint is at.
async fn revision(client: &mut Client) -> i64 {
    client.get("/registry/health", None).await.unwrap().header().unwrap().revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_from_rv_plus_one_with_prev_kv_and_progress() {
    let Endpoint { mut client, _dir, .. } = endpoint().await;
    let prefix = "/registry/configmaps/";
    client.put(format!("{prefix}a"), "1", None).await.unwrap();
    let listed = client.get(prefix, Some(GetOptions::new().with_prefix())).await.unwrap();
    let rv = listed.header().unwrap().revision();
    client.put(format!("{prefix}a"), "2", None).await.unwrap();
    client.delete(format!("{prefix}a"), None).await.unwrap();

    // The apiserver's watch after a list at `rv`: from rv + 1, with previous values and
    // progress notifications, so the events after the list arrive, and none before.
    let options = WatchOptions::new().with_prefix().with_start_revision(rv + 1).with_prev_key().with_progress_notify();
    let mut stream = client.watch(prefix, Some(options)).await.unwrap();
    assert!(next(&mut stream).await.created());
    let mut events = Vec::new();
    while events.len() < 2 {
        for event in next(&mut stream).await.events() {
            let prev = event.prev_kv().map(|kv| kv.value().to_vec());
            events.push((event.event_type(), event.kv().unwrap().mod_revision() > rv, prev));
        }
    }
    assert_eq!(
        events,
        vec![(EventType::Put, true, Some(b"1".to_vec())), (EventType::Delete, true, Some(b"2".to_vec()))]
    );

    // Without changes, a progress notification (no events) tells the revision reached.
    let now = revision(&mut client).await;
    let progress = loop {
        let answer = next(&mut stream).await;
        if answer.events().is_empty() && !answer.canceled() {
            break answer;
        }
    };
    assert!(progress.header().unwrap().revision() >= now, "progress up to the current revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compactor_compacts_through_compact_rev_key() {
    let Endpoint { mut client, _dir, .. } = endpoint().await;
    let key = "/registry/secrets/s";
    let old = client.put(key, "1", None).await.unwrap().header().unwrap().revision();
    client.put(key, "2", None).await.unwrap();
    let target = revision(&mut client).await;

    // The apiserver's compactor: whoever sees `compact_rev_key` at the version it last saw
    // records the revision (moving the version on) and compacts; another compactor that saw an
    // older version learns the current one instead.
    let compactor = |seen: i64, rev: i64| {
        Txn::new()
            .when([Compare::version("compact_rev_key", CompareOp::Equal, seen)])
            .and_then([TxnOp::put("compact_rev_key", rev.to_string(), None)])
            .or_else([TxnOp::get("compact_rev_key", None)])
    };
    let won = client.txn(compactor(0, target)).await.unwrap();
    assert!(won.succeeded());
    client.compact(target, None).await.unwrap();
    let lost = client.txn(compactor(0, target)).await.unwrap();
    assert!(!lost.succeeded());
    let TxnOpResponse::Get(seen) = &lost.op_responses()[0] else { panic!("a range in the failure branch") };
    assert_eq!((seen.kvs()[0].version(), seen.kvs()[0].value()), (1, target.to_string().as_bytes()));

    // Reads and watches below the compacted revision get etcd's compacted error, which the
    // apiserver turns into "410 Gone" (relist).
    let compacted = client.get(key, Some(GetOptions::new().with_revision(old))).await.unwrap_err();
    assert_eq!(
        grpc_message(compacted),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into())
    );
    let options = WatchOptions::new().with_start_revision(old).with_prev_key();
    let mut stream = client.watch(key, Some(options)).await.unwrap();
    let cancelled = loop {
        let answer = next(&mut stream).await;
        if answer.canceled() {
            break answer;
        }
    };
    assert_eq!(cancelled.compact_revision(), target);
    let at = client.get(key, Some(GetOptions::new().with_revision(target))).await.unwrap();
    assert_eq!(at.kvs()[0].value(), b"2", "the compacted revision itself is still readable");
}
