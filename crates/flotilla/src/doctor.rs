//! `flotilla doctor`: what is wrong with a node, judged from its status alone.
//!
//! [`diagnose`] is a pure function from a [`NodeStatus`] (as `GET /v1/status` returns it) and
//! [`Thresholds`] to a list of [`Finding`]s, each with a [`Verdict`]; the CLI fetches the
//! status, calls it and prints. Each check yields one summary finding when all is well and
//! one finding per namespace or peer that is not, so the output stays short on a healthy
//! node with many namespaces. The rules, in order:
//!
//! - `storage`: client writes refused (disk full or failing, store stopped) fails;
//! - `disk`: free space below the reserve fails, below twice the reserve warns;
//! - `fsync`: a p99 fsync latency above [`Thresholds::fsync_fail_us`] fails, above
//!   [`Thresholds::fsync_warn_us`] warns (etcd's guidance is a p99 under 10 ms);
//! - `peers`: a member declared down, or silent for longer than [`Thresholds::peer_silence_ms`],
//!   warns (a quorum may still hold; the `leaders` check says whether it does);
//! - `leaders`: a namespace without a known leader fails, and so does a namespace led here
//!   whose voters did not acknowledge it, quorum counted, within the peer silence;
//! - `leader-changes`: [`Thresholds::leader_changes_warn`] or more changes within
//!   [`Thresholds::leader_change_window_ms`] warn, [`Thresholds::leader_changes_fail`] fail;
//! - `splits`: another cluster of a namespace met (a split) fails;
//! - `lag`: on a leader, a member more than [`Thresholds::lag_warn`] entries behind warns.

use serde::Serialize;

use crate::node_status::{NamespaceSummary, NodeStatus};
use crate::status::{MemberRole, Role};

/// How bad a finding is.
///
/// ```
/// use flotilla::doctor::Verdict;
///
/// assert!(Verdict::Ok < Verdict::Warn && Verdict::Warn < Verdict::Fail); // `worst` takes the max
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing to do.
    Ok,
    /// Worth a look; the node still serves.
    Warn,
    /// Something is broken or about to be: `flotilla doctor` exits non-zero.
    Fail,
}

impl Verdict {
    /// The verdict as printed.
    ///
    /// ```
    /// assert_eq!(flotilla::doctor::Verdict::Warn.name(), "warn");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One thing `flotilla doctor` found.
///
/// ```
/// use flotilla::doctor::{diagnose, Thresholds};
///
/// let status = flotilla::NodeStatus::default(); // free space unknown
/// for finding in diagnose(&status, &Thresholds::for_status(&status)) {
///     println!("{:<14} {:<10} {:<4} {}", finding.check, finding.subject, finding.verdict.name(), finding.detail);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check: `storage`, `disk`, `fsync`, `peers`, `leaders`, `leader-changes`, `splits`,
    /// `lag`.
    pub check: &'static str,
    /// What it is about: `node`, a namespace or a peer.
    pub subject: String,
    /// How bad.
    pub verdict: Verdict,
    /// What was seen, with the numbers.
    pub detail: String,
}

/// The limits the checks judge against.
///
/// ```
/// use flotilla::doctor::Thresholds;
///
/// let status = flotilla::NodeStatus::default();
/// let strict = Thresholds { fsync_warn_us: 5_000, ..Thresholds::for_status(&status) };
/// assert!(strict.fsync_warn_us < strict.fsync_fail_us);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// p99 fsync latency above which `fsync` warns, in microseconds.
    pub fsync_warn_us: u64,
    /// p99 fsync latency above which `fsync` fails, in microseconds.
    pub fsync_fail_us: u64,
    /// Silence after which a peer counts as unreachable, in milliseconds.
    pub peer_silence_ms: u64,
    /// The window leader changes are counted in, in milliseconds.
    pub leader_change_window_ms: u64,
    /// Changes within the window that warn.
    pub leader_changes_warn: usize,
    /// Changes within the window that fail.
    pub leader_changes_fail: usize,
    /// Entries a member may be behind its leader before `lag` warns.
    pub lag_warn: u64,
}

impl Thresholds {
    /// The defaults for a node with `status`: peers may be silent for two election timeouts
    /// (at least a second; five seconds when an older node does not report its timing).
    ///
    /// ```
    /// use flotilla::{doctor::Thresholds, NodeStatus};
    ///
    /// let status = NodeStatus { election_timeout_ms: 1_500, ..Default::default() };
    /// assert_eq!(Thresholds::for_status(&status).peer_silence_ms, 3_000); // two election timeouts
    /// ```
    pub fn for_status(status: &NodeStatus) -> Self {
        let peer_silence_ms = match status.election_timeout_ms {
            0 => 5_000,
            election => (election * 2).max(1_000),
        };
        Self {
            fsync_warn_us: 10_000,
            fsync_fail_us: 100_000,
            peer_silence_ms,
            leader_change_window_ms: 5 * 60 * 1000,
            leader_changes_warn: 3,
            leader_changes_fail: 10,
            lag_warn: 10_000,
        }
    }
}

/// Every finding about the node whose status is `status`.
///
/// ```
/// use flotilla::doctor::{diagnose, Thresholds, Verdict};
///
/// let status = flotilla::NodeStatus::default(); // the file system reports no free space figure
/// let findings = diagnose(&status, &Thresholds::for_status(&status));
/// let disk = findings.iter().find(|f| f.check == "disk").expect("always checked");
/// assert_eq!(disk.verdict, Verdict::Warn);
/// ```
pub fn diagnose(status: &NodeStatus, t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    storage(status, &mut out);
    disk(status, &mut out);
    fsync(status, t, &mut out);
    peers(status, t, &mut out);
    per_namespace(status, "leaders", "every namespace has a leader", |ns| leader(ns, t), &mut out);
    per_namespace(status, "leader-changes", "leadership is stable", |ns| leader_changes(ns, t), &mut out);
    per_namespace(status, "splits", "no namespace met another cluster of itself", splits, &mut out);
    per_namespace(status, "lag", "no member is far behind its leader", |ns| lag(ns, t), &mut out);
    out
}

/// The worst verdict among `findings` (`Ok` for none).
///
/// ```
/// use flotilla::doctor::{worst, Verdict};
///
/// assert_eq!(worst(&[]), Verdict::Ok);
/// ```
pub fn worst(findings: &[Finding]) -> Verdict {
    findings.iter().map(|f| f.verdict).max().unwrap_or(Verdict::Ok)
}

fn finding(check: &'static str, subject: &str, verdict: Verdict, detail: String) -> Finding {
    Finding { check, subject: subject.to_string(), verdict, detail }
}

fn storage(status: &NodeStatus, out: &mut Vec<Finding>) {
    out.push(match &status.storage.write_blocked {
        Some(why) => finding("storage", "node", Verdict::Fail, format!("client writes are refused: {why}")),
        None => finding("storage", "node", Verdict::Ok, "client writes are taken".into()),
    });
}

fn disk(status: &NodeStatus, out: &mut Vec<Finding>) {
    let reserve = status.storage.reserve_bytes;
    let (verdict, detail) = match status.storage.free_bytes {
        None => (Verdict::Warn, "free space cannot be measured on this file system".to_string()),
        Some(free) => {
            let verdict = if free < reserve {
                Verdict::Fail
            } else if free < reserve.saturating_mul(2) {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            (verdict, format!("{} free, reserve {}", bytes(free), bytes(reserve)))
        }
    };
    out.push(finding("disk", "node", verdict, detail));
}

fn fsync(status: &NodeStatus, t: &Thresholds, out: &mut Vec<Finding>) {
    let f = &status.storage.fsync;
    let Some(p99) = f.p99_le_us else {
        out.push(finding("fsync", "node", Verdict::Ok, "no fsync measured yet".into()));
        return;
    };
    let verdict = if p99 > t.fsync_fail_us {
        Verdict::Fail
    } else if p99 > t.fsync_warn_us {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    let p99_text = if p99 == u64::MAX { "over 1 s".to_string() } else { format!("at most {}", micros(p99)) };
    let detail = format!("p99 {p99_text}, mean {} over {} fsyncs since start", micros(f.mean_us), f.count);
    out.push(finding("fsync", "node", verdict, detail));
}

fn peers(status: &NodeStatus, t: &Thresholds, out: &mut Vec<Finding>) {
    let (mut heard, mut unobserved, mut bad) = (0, 0, 0);
    for peer in &status.peers {
        let subject = format!("peer {}", peer.id);
        match peer.last_heard_ms_ago {
            _ if peer.down => {
                bad += 1;
                let detail = format!("declared down (shares {} namespaces)", peer.namespaces);
                out.push(finding("peers", &subject, Verdict::Warn, detail));
            }
            Some(ms) if ms > t.peer_silence_ms => {
                bad += 1;
                let detail = format!("silent for {} (shares {} namespaces)", millis(ms), peer.namespaces);
                out.push(finding("peers", &subject, Verdict::Warn, detail));
            }
            Some(_) => heard += 1,
            None => unobserved += 1,
        }
    }
    if bad == 0 {
        let detail = format!(
            "{heard} heard within {}, {unobserved} not observed from this node (it leads nothing with them)",
            millis(t.peer_silence_ms)
        );
        out.push(finding("peers", "node", Verdict::Ok, detail));
    }
}

/// Run `check` on every namespace: its non-ok findings, or one `ok` summary when there are none.
fn per_namespace(
    status: &NodeStatus,
    check: &'static str,
    all_well: &str,
    judge: impl Fn(&NamespaceSummary) -> Option<(Verdict, String)>,
    out: &mut Vec<Finding>,
) {
    let before = out.len();
    for ns in &status.namespaces {
        if let Some((verdict, detail)) = judge(ns) {
            out.push(finding(check, &format!("namespace {}", ns.namespace), verdict, detail));
        }
    }
    if out.len() == before {
        let detail = format!("{all_well} ({} namespaces)", status.namespaces.len());
        out.push(finding(check, "node", Verdict::Ok, detail));
    }
}

fn leader(ns: &NamespaceSummary, t: &Thresholds) -> Option<(Verdict, String)> {
    let Some(leader) = ns.leader else {
        return Some((Verdict::Fail, format!("no leader known (this node is {}, term {})", ns.role.name(), ns.term)));
    };
    if ns.role != Role::Leader || ns.quiesced {
        // Only a leader knows its followers' acknowledgements, and a quiesced one has none by
        // design (the liveness probe stands in; see the `peers` check).
        return None;
    }
    let voters = ns.voters.max(1) as usize;
    let acked = 1 + ns
        .progress
        .iter()
        .filter(|p| p.role == MemberRole::Voter && p.last_ack_ms_ago.is_some_and(|ms| ms <= t.peer_silence_ms))
        .count();
    (acked <= voters / 2).then(|| {
        let detail = format!(
            "leader {leader} heard from {acked} of {voters} voters within {}: no quorum",
            millis(t.peer_silence_ms)
        );
        (Verdict::Fail, detail)
    })
}

fn leader_changes(ns: &NamespaceSummary, t: &Thresholds) -> Option<(Verdict, String)> {
    let recent = ns.leadership.recent_ms_ago.iter().filter(|ms| **ms <= t.leader_change_window_ms).count();
    let verdict = if recent >= t.leader_changes_fail {
        Verdict::Fail
    } else if recent >= t.leader_changes_warn {
        Verdict::Warn
    } else {
        return None;
    };
    let detail = format!(
        "{recent} leader changes in the last {} ({} since start): check disk latency, load and links",
        millis(t.leader_change_window_ms),
        ns.leadership.changes
    );
    Some((verdict, detail))
}

fn splits(ns: &NamespaceSummary) -> Option<(Verdict, String)> {
    (ns.splits > 0).then(|| {
        let detail = format!(
            "met {} other cluster(s) of this namespace: see `flotilla ns status -n {}`",
            ns.splits, ns.namespace
        );
        (Verdict::Fail, detail)
    })
}

fn lag(ns: &NamespaceSummary, t: &Thresholds) -> Option<(Verdict, String)> {
    let behind: Vec<String> = ns
        .progress
        .iter()
        .filter(|p| p.lag > t.lag_warn)
        .map(|p| format!("{} ({}) {} entries behind", p.id, p.role.name(), p.lag))
        .collect();
    (!behind.is_empty()).then(|| (Verdict::Warn, behind.join(", ")))
}

/// Bytes in a unit a person reads at a glance.
///
/// ```
/// use flotilla::doctor::bytes;
///
/// assert_eq!(bytes(512), "512 B");
/// assert_eq!(bytes(64 << 20), "64.0 MiB");
/// ```
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in milliseconds, as a person reads it.
///
/// ```
/// use flotilla::doctor::millis;
///
/// assert_eq!(millis(250), "250 ms");
/// assert_eq!(millis(1_500), "1.5 s");
/// assert_eq!(millis(300_000), "5 min");
/// ```
pub fn millis(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{:.1} s", ms as f64 / 1e3),
        _ => format!("{} min", ms / 60_000),
    }
}

/// A duration in microseconds, as a person reads it.
///
/// ```
/// use flotilla::doctor::micros;
///
/// assert_eq!(micros(800), "800 µs");
/// assert_eq!(micros(12_500), "12.5 ms");
/// ```
pub fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => millis(us / 1_000),
    }
}

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
