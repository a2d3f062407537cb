//! Slow request lines across nodes: a write and a read entering at a follower, with the
//! threshold at 0 so every request is "slow", log one line on the entry node (whose time went
//! to forwarding) and one on the leader that served them (its own stages, `from` the entry).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use flotilla::Consistency;

const NS: &str = "default";

/// Where this test binary's log lines go.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, containing: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        text.lines().filter(|l| l.contains(containing)).map(String::from).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_logs_on_the_entry_node_and_on_the_leader() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Installed before the harness's own subscriber, which then stays out of the way.
    tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).with_env_filter("warn").init();
    let h = Harness::start(3, 5, &[NS], |c| {
        c.slow_request_ms = 0;
        c.quiesce_after_ms = Some(0);
    })
    .await;
    let l = h.leader(NS).await;
    let f = (0..3).find(|i| *i != l).expect("a follower");
    let entry = h.cluster(f, NS);
    let index = entry.set(b"k", b"v").await.expect("write").index;
    entry.get(b"k", Consistency::Linearizable).await.expect("read");

    let at = format!("slow write at index {index}:");
    let writes = captured.lines(&at);
    let from = format!("from={}", h.ids[f]);
    let (served, entered): (Vec<&String>, Vec<&String>) = writes.iter().partition(|l| l.contains(&from));
    // One line on the entry node; the leader logs each attempt it served (one, unless a reply
    // was lost and the entry node retried).
    assert!(entered.len() == 1 && !served.is_empty(), "a line on each node: {writes:#?}");
    assert!(served.iter().all(|l| l.contains("proposal to commit") && l.contains("apply")), "{served:#?}");
    assert!(entered[0].contains("forwarding") && entered[0].contains("attempt(s)"), "{}", entered[0]);

    let reads = captured.lines("slow linearizable read at index");
    assert!(reads.iter().any(|l| l.contains(&from) && l.contains("read index")), "{reads:#?}");
    assert!(reads.iter().any(|l| !l.contains("from=") && l.contains("apply wait")), "{reads:#?}");
    h.shutdown().await;
}
