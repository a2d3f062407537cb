use super::*;

fn ns() -> Namespace {
    Namespace::new("feed").expect("valid namespace")
}

fn entry(index: u64) -> Arc<AppliedEntry> {
    Arc::new(AppliedEntry { index, command: vec![index as u8], reply: Ok(vec![]) })
}

fn subscribe_at(feed: &Arc<AppliedFeed>, applied: u64) -> AppliedReceiver {
    feed.subscribe(&ns(), || Ok(applied)).expect("subscribed")
}

/// What the receiver holds now, up to and including its end.
fn received(rx: &mut AppliedReceiver) -> Vec<Result<u64, SubscriptionEnded>> {
    let mut out = Vec::new();
    while let Some(next) = rx.try_recv() {
        let end = next.is_err();
        out.push(next.map(|a| a.index));
        if end || out.len() > SUBSCRIPTION_BUFFER + 10 {
            break;
        }
    }
    out
}

#[test]
fn delivery_decisions() {
    let budget = SUBSCRIPTION_BUFFER_BYTES;
    // (free slots, queued bytes, cost, decision)
    let table = [
        (10, 0, 100, Delivery::Deliver),
        (2, 0, 100, Delivery::Deliver),
        // The last slot is kept for the end signal.
        (1, 0, 100, Delivery::FallBehind),
        (0, 0, 100, Delivery::FallBehind),
        (10, budget - 100, 100, Delivery::Deliver),
        (10, budget - 99, 100, Delivery::FallBehind),
        // Nothing waiting: even an entry above the budget goes.
        (10, 0, budget * 2, Delivery::Deliver),
        (10, 1, budget, Delivery::FallBehind),
        (10, usize::MAX, 1, Delivery::FallBehind),
    ];
    for (room, queued, cost, expected) in table {
        assert_eq!(delivery(room, queued, cost), expected, "room {room}, queued {queued}, cost {cost}");
    }
}

#[test]
fn delivers_entries_after_the_start_in_order_once() {
    let feed = Arc::new(AppliedFeed::default());
    let mut rx = subscribe_at(&feed, 5);
    assert_eq!(rx.start_index(), 5);
    // A batch made visible before the subscription's read is already reflected: filtered out.
    feed.publish(&[entry(4), entry(5), entry(6)]);
    feed.publish(&[entry(7), entry(9)]);
    assert_eq!(received(&mut rx), vec![Ok(6), Ok(7), Ok(9)]);
    assert!(feed.has_subscribers());
}

#[test]
fn a_full_buffer_ends_the_subscription_without_blocking() {
    let feed = Arc::new(AppliedFeed::default());
    let mut slow = subscribe_at(&feed, 0);
    let mut fast = subscribe_at(&feed, 0);
    let total = SUBSCRIPTION_BUFFER as u64 + 5;
    for index in 1..=total {
        feed.publish(&[entry(index)]);
        // The fast one keeps up and is never dropped.
        assert_eq!(fast.try_recv().map(|r| r.map(|a| a.index)), Some(Ok(index)));
    }
    let got = received(&mut slow);
    let expected: Vec<_> = (1..=SUBSCRIPTION_BUFFER as u64)
        .map(Ok)
        .chain([Err(SubscriptionEnded::FellBehind { next_index: SUBSCRIPTION_BUFFER as u64 + 1 })])
        .collect();
    assert_eq!(got, expected);
    // The end is sticky.
    assert_eq!(
        slow.try_recv(),
        Some(Err(SubscriptionEnded::FellBehind { next_index: SUBSCRIPTION_BUFFER as u64 + 1 }))
    );
    assert_eq!(feed.lock().subscribers.len(), 1, "the slow subscriber is unregistered");
}

#[test]
fn the_byte_budget_ends_a_subscription_too() {
    let feed = Arc::new(AppliedFeed::default());
    let mut rx = subscribe_at(&feed, 0);
    let big =
        |index| Arc::new(AppliedEntry { index, command: vec![0; SUBSCRIPTION_BUFFER_BYTES / 2], reply: Ok(vec![]) });
    feed.publish(&[big(1), big(2)]);
    let got = received(&mut rx);
    assert_eq!(got, vec![Ok(1), Err(SubscriptionEnded::FellBehind { next_index: 2 })]);
}

#[test]
fn an_install_ends_only_subscribers_it_skips() {
    let feed = Arc::new(AppliedFeed::default());
    let mut before = subscribe_at(&feed, 3);
    let mut after = subscribe_at(&feed, 10);
    feed.installed(10);
    assert_eq!(received(&mut before), vec![Err(SubscriptionEnded::FellBehind { next_index: 4 })]);
    feed.publish(&[entry(11)]);
    assert_eq!(received(&mut after), vec![Ok(11)]);
}

#[test]
fn reset_and_close_end_every_subscription() {
    let feed = Arc::new(AppliedFeed::default());
    let mut reset = subscribe_at(&feed, 2);
    feed.reset();
    assert_eq!(received(&mut reset), vec![Err(SubscriptionEnded::FellBehind { next_index: 3 })]);
    let mut closed = subscribe_at(&feed, 2);
    feed.close();
    assert_eq!(received(&mut closed), vec![Err(SubscriptionEnded::Closed)]);
    let mut orphan = subscribe_at(&feed, 2);
    drop(feed);
    assert_eq!(received(&mut orphan), vec![Err(SubscriptionEnded::Closed)]);
}

#[test]
fn dropping_unregisters_and_the_limit_holds() {
    let feed = Arc::new(AppliedFeed::default());
    let mut all: Vec<_> = (0..MAX_SUBSCRIBERS).map(|_| subscribe_at(&feed, 0)).collect();
    let refused = feed.subscribe(&ns(), || Ok(0));
    assert!(matches!(refused, Err(SubscribeError::TooManySubscribers { limit: MAX_SUBSCRIBERS, .. })));
    all.pop();
    assert_eq!(feed.lock().subscribers.len(), MAX_SUBSCRIBERS - 1);
    let again = subscribe_at(&feed, 0);
    drop(all);
    drop(again);
    assert!(!feed.has_subscribers());
}

#[test]
fn a_failed_read_registers_nothing() {
    let feed = Arc::new(AppliedFeed::default());
    let failed = feed.subscribe(&ns(), || Err(StoreError::Closed));
    assert!(matches!(failed, Err(SubscribeError::Store(StoreError::Closed))));
    assert!(!feed.has_subscribers());
}

#[test]
fn the_counts_cover_every_namespace_and_every_way_of_falling_behind() {
    let feeds = Feeds::default();
    let (a, b) = (feeds.get(&ns()), feeds.get(&Namespace::new("other").unwrap()));
    let mut reader = subscribe_at(&a, 0);
    let _idle = subscribe_at(&a, 0);
    let _reset = subscribe_at(&b, 0);
    let _also_reset = subscribe_at(&b, 0);
    assert_eq!(feeds.counts(), SubscriptionCounts { active: 4, fell_behind: 0 });
    // One more entry than the buffer: the idle one falls behind, the reader keeps up.
    for index in 1..=SUBSCRIPTION_BUFFER as u64 + 1 {
        a.publish(&[entry(index)]);
        assert!(matches!(reader.try_recv(), Some(Ok(_))));
    }
    assert_eq!(feeds.counts(), SubscriptionCounts { active: 3, fell_behind: 1 });
    a.installed(10_000);
    assert_eq!(feeds.counts(), SubscriptionCounts { active: 2, fell_behind: 2 });
    b.reset();
    assert_eq!(feeds.counts(), SubscriptionCounts { active: 0, fell_behind: 4 });
    let _closed = subscribe_at(&a, 0);
    assert_eq!(feeds.counts().active, 1);
    feeds.close_all();
    assert_eq!(feeds.counts(), SubscriptionCounts { active: 0, fell_behind: 4 }, "closing is not falling behind");
}
