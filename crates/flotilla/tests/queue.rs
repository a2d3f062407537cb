//! Queues over a three-node cluster: consumers on every node take each item exactly once, in
//! order; an item popped with a visibility timeout and not acknowledged comes back.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::Harness;
use flotilla::Consistency;

const NS: &str = "default";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_on_every_node_take_each_item_exactly_once() {
    let h = Arc::new(Harness::start(3, 51, &[NS], |_| {}).await);
    let l = h.leader(NS).await;
    for i in 0..60u32 {
        h.cluster(i as usize % 3, NS).queue_push("work", format!("item-{i:02}").as_bytes()).await.unwrap();
    }
    assert_eq!(h.cluster(l, NS).queue_len("work", Consistency::Linearizable).await.unwrap(), (60, 0));
    let mut consumers = Vec::new();
    for c in 0..6usize {
        let h = h.clone();
        consumers.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            while let Some(item) = h.cluster(c % 3, NS).queue_pop("work").await.expect("pop") {
                taken.push((item.id, String::from_utf8(item.value).unwrap()));
            }
            taken
        }));
    }
    let mut all = Vec::new();
    for consumer in consumers {
        let taken = tokio::time::timeout(Duration::from_secs(60), consumer).await.unwrap().unwrap();
        assert!(taken.windows(2).all(|w| w[0].0 < w[1].0), "one consumer sees items in queue order");
        all.extend(taken);
    }
    let values: BTreeSet<String> = all.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(all.len(), 60, "no item popped twice");
    assert_eq!(values.len(), 60, "no item lost");
    assert_eq!(h.cluster(l, NS).queue_peek("work", Consistency::Linearizable).await.unwrap(), None);
    Arc::try_unwrap(h).ok().expect("no other handle").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_item_not_acknowledged_in_time_comes_back_at_its_place() {
    let h = Harness::start(3, 52, &[NS], |_| {}).await;
    let l = h.leader(NS).await;
    let c = h.cluster((l + 1) % 3, NS);
    c.queue_push("mail", b"first").await.unwrap();
    c.queue_push("mail", b"second").await.unwrap();
    let visibility = c.min_lease_ttl();
    let dropped = c.queue_pop_for("mail", visibility).await.unwrap().expect("an item");
    assert_eq!(dropped.value, b"first");
    assert_eq!(c.queue_len("mail", Consistency::Linearizable).await.unwrap(), (1, 1));
    // The consumer "crashes": no ack. Within a few visibility periods the item is back, first.
    let deadline = tokio::time::Instant::now() + visibility * 5;
    loop {
        let first = c.queue_peek("mail", Consistency::Linearizable).await.unwrap();
        if first.as_ref().map(|(id, _)| *id) == Some(dropped.id) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the item did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = h.cluster(l, NS).queue_pop_for("mail", visibility).await.unwrap().expect("the item again");
    assert_eq!((again.id, again.value.as_slice()), (dropped.id, &b"first"[..]));
    assert!(h.cluster(l, NS).queue_ack("mail", &again).await.unwrap());
    assert_eq!(c.queue_len("mail", Consistency::Linearizable).await.unwrap(), (1, 0), "acknowledged: gone for good");
    assert!(!c.queue_ack("mail", &dropped).await.unwrap(), "the first consumer's late ack finds nothing");
    h.shutdown().await;
}
