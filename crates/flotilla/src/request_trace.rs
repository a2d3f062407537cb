//! Slow request traces: a client write or linearizable read slower than
//! `Config::slow_request_ms` logs one warning saying where its time went, like etcd's "apply
//! request took too long".
//!
//! A [`RequestTrace`] rides along the request's path on the stack: the entry node's
//! [`Cluster`](crate::Cluster) starts it, the forwarding layer (`command.rs`) adds the time spent
//! waiting on other nodes, the [`Executor`](crate::execute::Executor) on the leader adds waking a
//! quiesced group, the write gate, proposal to commit (append, replication, fsync on a quorum)
//! and apply, and the entry node adds the wait for its own apply of a read index. Each stage is
//! two clock reads at its boundaries, nothing else: nothing is allocated or formatted unless
//! the request turns out slow. A node that serves a request forwarded to it traces its own part
//! and logs it under the same rule, so a slow forwarded write shows on the entry node (with the
//! forwarding time) and on the leader (with the stages there).

use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::wire::CommandRequest;
use tokio::time::Instant;
use tracing::warn;

/// What is traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TraceKind {
    /// A client write.
    Write,
    /// A linearizable read (its read index).
    Read,
    /// Anything else (membership, leases, joins): timed, never logged.
    Other,
}

impl TraceKind {
    /// The kind of `request`.
    pub(crate) fn of(request: &CommandRequest) -> Self {
        match request {
            CommandRequest::Write(_) => TraceKind::Write,
            CommandRequest::ReadIndex => TraceKind::Read,
            _ => TraceKind::Other,
        }
    }
}

/// Where one request's time went so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestTrace {
    kind: TraceKind,
    started: Instant,
    /// Attempts the forwarding layer made (each after a leader change, or a pause).
    attempts: u32,
    /// Time waiting on other nodes (network, and their own work on the request).
    forwarding: Duration,
    /// A quiesced leader renewing its lease before it executes.
    waking: Duration,
    /// The write gate: dissolve fence, disk, quorum contact.
    admission: Duration,
    /// From proposal to commit: append, replication, fsync on a quorum.
    commit: Duration,
    /// From commit to the applied result.
    apply: Duration,
    /// The leader confirming it leads (a heartbeat round to a quorum).
    read_index: Duration,
    /// A read waiting on read-index rounds other reads ran (`crate::read_index_batch`).
    shared_rounds: Duration,
    /// The entry node waiting until it has applied the read index.
    apply_wait: Duration,
    /// The log index written, or read at.
    index: Option<u64>,
}

impl RequestTrace {
    /// A trace of a request of `kind` starting now.
    pub(crate) fn start(kind: TraceKind) -> Self {
        Self::started_at(kind, Instant::now())
    }

    fn started_at(kind: TraceKind, started: Instant) -> Self {
        let zero = Duration::ZERO;
        Self {
            kind,
            started,
            attempts: 0,
            forwarding: zero,
            waking: zero,
            admission: zero,
            commit: zero,
            apply: zero,
            read_index: zero,
            shared_rounds: zero,
            apply_wait: zero,
            index: None,
        }
    }

    /// The forwarding layer starts an attempt.
    pub(crate) fn attempt(&mut self) {
        self.attempts += 1;
    }

    /// Time spent waiting on another node, since `since`.
    pub(crate) fn forwarded(&mut self, since: Instant) {
        self.forwarding += since.elapsed();
    }

    /// A quiesced leader's wake-up took since `since`.
    pub(crate) fn woke(&mut self, since: Instant) {
        self.waking += since.elapsed();
    }

    /// The write gate took since `since`.
    pub(crate) fn admitted(&mut self, since: Instant) {
        self.admission += since.elapsed();
    }

    /// A write proposed at `proposed`, committed `committed_ago` before now (when known),
    /// answered now at `index`.
    pub(crate) fn written(&mut self, proposed: Instant, committed_ago: Option<Duration>, index: Option<u64>) {
        let now = Instant::now();
        let committed = committed_ago.and_then(|ago| now.checked_sub(ago)).unwrap_or(now).clamp(proposed, now);
        self.commit += committed - proposed;
        self.apply += now - committed;
        self.index = index.or(self.index);
    }

    /// The request's reply names log index `index`.
    pub(crate) fn at_index(&mut self, index: u64) {
        self.index = Some(index);
    }

    /// The leader confirmed its leadership, which took since `since`.
    pub(crate) fn confirmed(&mut self, since: Instant) {
        self.read_index += since.elapsed();
    }

    /// This read waited from `from` to `to` on read-index rounds that other reads ran.
    pub(crate) fn shared_rounds_between(&mut self, from: Instant, to: Instant) {
        self.shared_rounds += to.saturating_duration_since(from);
    }

    /// This replica applied read index `index`, waiting since `since`.
    pub(crate) fn applied(&mut self, since: Instant, index: u64) {
        self.apply_wait += since.elapsed();
        self.index = Some(index);
    }

    /// Log one warning if the request took longer than `threshold` (on `namespace`, served for
    /// `served_for` when it came from another node).
    pub(crate) fn finish(&self, namespace: &str, served_for: Option<NodeId>, threshold: Duration) {
        let total = self.started.elapsed();
        if self.kind == TraceKind::Other || total <= threshold {
            return;
        }
        let line = self.describe(total, threshold);
        match served_for {
            Some(from) => warn!(namespace, %from, total_ms = total.as_millis() as u64, "{line}"),
            None => warn!(namespace, total_ms = total.as_millis() as u64, "{line}"),
        }
    }

    /// The stages of the request's kind with their durations; `other` is what no stage
    /// accounts for (pauses between attempts, queueing, scheduling).
    pub(crate) fn stages(&self, total: Duration) -> Vec<(&'static str, Duration)> {
        let mut stages = vec![("waking", self.waking)];
        match self.kind {
            TraceKind::Read => stages.extend([
                ("shared rounds", self.shared_rounds),
                ("read index", self.read_index),
                ("forwarding", self.forwarding),
            ]),
            _ => stages.extend([
                ("admission", self.admission),
                ("proposal to commit", self.commit),
                ("apply", self.apply),
                ("forwarding", self.forwarding),
            ]),
        }
        if self.kind == TraceKind::Read {
            stages.push(("apply wait", self.apply_wait));
        }
        let known: Duration = stages.iter().map(|(_, d)| *d).sum();
        stages.push(("other", total.saturating_sub(known)));
        stages
    }

    /// The log line: the request, its total, and each stage.
    pub(crate) fn describe(&self, total: Duration, threshold: Duration) -> String {
        let what = match self.kind {
            TraceKind::Write => "write",
            TraceKind::Read => "linearizable read",
            TraceKind::Other => "request",
        };
        let index = self.index.map_or(String::new(), |i| format!(" at index {i}"));
        let stages: Vec<String> = self.stages(total).iter().map(|(name, d)| format!("{name} {}", ms(*d))).collect();
        format!(
            "slow {what}{index}: {} (over {}), {} attempt(s): {}",
            ms(total),
            ms(threshold),
            self.attempts.max(1),
            stages.join(", ")
        )
    }
}

/// A duration in milliseconds with one decimal.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(kind: TraceKind) -> RequestTrace {
        RequestTrace::started_at(kind, Instant::now())
    }

    #[test]
    fn a_write_line_names_every_stage_and_what_is_left() {
        let mut t = trace(TraceKind::Write);
        t.attempts = 2;
        (t.waking, t.admission, t.commit, t.apply) = (ms_(1), ms_(3), ms_(700), ms_(40));
        t.forwarding = ms_(0);
        t.index = Some(42);
        let line = t.describe(ms_(750), ms_(500));
        assert_eq!(
            line,
            "slow write at index 42: 750.0 ms (over 500.0 ms), 2 attempt(s): waking 1.0 ms, admission 3.0 ms, \
             proposal to commit 700.0 ms, apply 40.0 ms, forwarding 0.0 ms, other 6.0 ms"
        );
    }

    #[test]
    fn a_read_line_names_the_read_index_and_the_apply_wait() {
        let mut t = trace(TraceKind::Read);
        (t.read_index, t.forwarding, t.apply_wait) = (ms_(0), ms_(300), ms_(250));
        let asked = Instant::now();
        t.shared_rounds_between(asked, asked + ms_(5));
        t.index = Some(7);
        let line = t.describe(ms_(560), Duration::ZERO);
        assert_eq!(
            line,
            "slow linearizable read at index 7: 560.0 ms (over 0.0 ms), 1 attempt(s): waking 0.0 ms, \
             shared rounds 5.0 ms, read index 0.0 ms, forwarding 300.0 ms, apply wait 250.0 ms, other 5.0 ms"
        );
    }

    #[test]
    fn stages_never_exceed_the_total() {
        let mut t = trace(TraceKind::Write);
        t.commit = ms_(900);
        let stages = t.stages(ms_(800));
        assert_eq!(stages.last(), Some(&("other", Duration::ZERO)));
    }

    #[test]
    fn a_commit_time_outside_the_write_is_clamped() {
        let mut t = trace(TraceKind::Write);
        let proposed = Instant::now();
        t.written(proposed, Some(Duration::from_secs(3600)), Some(3));
        assert_eq!(t.commit, Duration::ZERO, "committed before proposed counts as at once");
        t.written(proposed, None, None);
        assert_eq!(t.index, Some(3), "an unknown index keeps the one known");
    }

    fn ms_(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}
