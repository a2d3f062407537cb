//! Checks of watch streams against a namespace's history, after the run.
//!
//! The reference is etcd's robustness-test watch validation (`tests/robustness/validate/
//! watch.go`), adapted to what a Flotilla watcher sees. A run records, per watcher, every
//! message it received over its whole lifetime (across reconnects, the way a client resumes
//! with the revision after the last one it received), and the acknowledged writes with the
//! revision each was answered with. Once the cluster has healed, one whole-namespace watch
//! from revision 1, with previous states, read through one healthy node, is the reference
//! history ([`Reference::build`] checks that it is itself consistent). Then, per watcher
//! ([`check_watcher`]):
//!
//! - revisions strictly increase over the watcher's lifetime: no duplicate, no reordering, and
//!   the events of one revision arrive in one message (a split revision shows up as a
//!   duplicate revision);
//! - no gap: every revision of the reference that changed a watched key, from the watcher's
//!   start to its last message, was delivered;
//! - every delivered revision carries exactly the reference's events for the watched keys
//!   (kind, key, value, create and mod revision, version, lease), and, with previous states
//!   asked for, each event's previous state is the key's state just before that revision as
//!   derived from the reference (not as the server computed it);
//! - a progress notification at revision `p` comes after every watched change up to `p`;
//! - the watcher covered the final revision it was given (it caught up after the heal).
//!
//! And [`check_acknowledged`]: each acknowledged write is in the reference at the revision
//! its client was told, with its value.
//!
//! This file is a module of the chaos tests only (included with `#[path]`: `chaos.rs` here,
//! and `crates/flotilla-etcd/tests/etcd_chaos.rs` through the etcd API), so that the other
//! test crates sharing `common` do not compile it.

use std::collections::{BTreeMap, HashMap};

use flotilla::kv::{EventKind, KeyValue, RangeEnd, WatchEvent};
use flotilla::WatchMessage;

/// Violations listed per watcher before the rest are only counted, so one broken stream does
/// not bury the report.
const MAX_LISTED: usize = 5;

/// What a watcher watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// The first key of the range.
    pub key: Vec<u8>,
    /// Where the range ends.
    pub end: RangeEnd,
    /// Whether events carry the key's previous state.
    pub prev_kv: bool,
}

impl WatchSpec {
    /// Every key of the namespace, with previous states: what the reference reads.
    pub fn everything() -> Self {
        Self { key: Vec::new(), end: RangeEnd::All, prev_kv: true }
    }

    fn covers(&self, key: &[u8]) -> bool {
        self.end.contains(&self.key, key)
    }
}

/// Everything one watcher received over its lifetime, across reconnects, in order.
#[derive(Debug, Clone)]
pub struct WatcherLog {
    /// How reports name the watcher (namespace, range, node choices).
    pub name: String,
    /// What it watches.
    pub spec: WatchSpec,
    /// The first revision it asked for: 0 ("from now") until its first watch resolves it.
    pub start: u64,
    /// Every message, changes and progress, in the order received.
    pub messages: Vec<WatchMessage>,
    /// How many watches it opened (so `connects - 1` reconnects).
    pub connects: usize,
    /// Why each of its watches ended, in order (the error's kind, or the watcher's reason).
    pub ends: Vec<String>,
}

impl WatcherLog {
    /// A watcher of `spec` that has received nothing yet, starting at `start` (0: from now).
    pub fn new(name: impl Into<String>, spec: WatchSpec, start: u64) -> Self {
        Self { name: name.into(), spec, start, messages: Vec::new(), connects: 0, ends: Vec::new() }
    }

    /// The last revision received in a changes message.
    pub fn last_changes(&self) -> Option<u64> {
        self.messages.iter().rev().find_map(|m| match m {
            WatchMessage::Changes { revision, .. } => Some(*revision),
            WatchMessage::Progress { .. } => None,
        })
    }

    /// Where a new watch resumes: after the last revision received whole, else at the start.
    pub fn resume_from(&self) -> u64 {
        self.last_changes().map_or(self.start, |r| r + 1)
    }

    /// The highest revision up to which the watcher has heard everything (changes or progress).
    pub fn covered(&self) -> u64 {
        let revision = |m: &WatchMessage| match m {
            WatchMessage::Changes { revision, .. } | WatchMessage::Progress { revision } => *revision,
        };
        self.messages.iter().map(revision).max().unwrap_or(0)
    }

    /// Watches reopened after the first.
    pub fn reconnects(&self) -> usize {
        self.connects.saturating_sub(1)
    }
}

/// A write a client saw acknowledged: it must be in the history at that revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The key written.
    pub key: Vec<u8>,
    /// The value written.
    pub value: Vec<u8>,
    /// The revision the write was answered with.
    pub revision: u64,
}

/// A namespace's whole history, from its first revision, checked for internal consistency.
#[derive(Debug, Default)]
pub struct Reference {
    /// The revision before the history's first: that of a namespace never written.
    base: u64,
    /// Every revision's events, as the reference watch delivered them.
    revisions: BTreeMap<u64, Vec<WatchEvent>>,
    /// For each `(revision, key)` changed, the key's state just before that revision, derived
    /// by replaying the history (independent of the server's previous-state lookup).
    before: HashMap<(u64, Vec<u8>), Option<KeyValue>>,
}

impl Reference {
    /// The reference from the messages of a whole-namespace watch from revision 1 with
    /// previous states ([`WatchSpec::everything`]). Refused when those messages are not a
    /// consistent history: revisions 2, 3, ... without a hole (every revision changes at least
    /// one key), create and mod revisions and versions that follow from the earlier events,
    /// and previous states that match the replayed ones.
    pub fn build(messages: &[WatchMessage]) -> Result<Self, Vec<String>> {
        Self::build_after(messages, flotilla::kv::FIRST_REVISION)
    }

    /// [`Reference::build`] for a history whose first revision is `base + 1`.
    pub fn build_after(messages: &[WatchMessage], base: u64) -> Result<Self, Vec<String>> {
        let mut reference = Reference { base, ..Reference::default() };
        let mut state: HashMap<Vec<u8>, KeyValue> = HashMap::new();
        let mut problems = Vec::new();
        for (revision, events) in changes(messages) {
            let expected = reference.last() + 1;
            if revision != expected {
                problems.push(format!("reference: revision {revision} where {expected} was due"));
                continue;
            }
            for event in events {
                let before = state.get(&event.kv.key).cloned();
                if reference.before.contains_key(&(revision, event.kv.key.clone())) {
                    problems.push(format!("reference: revision {revision} changes {} twice", show_key(&event.kv.key)));
                }
                problems.extend(consistency(revision, event, before.as_ref()));
                match event.kind {
                    EventKind::Put => state.insert(event.kv.key.clone(), event.kv.clone()),
                    EventKind::Delete => state.remove(&event.kv.key),
                };
                reference.before.insert((revision, event.kv.key.clone()), before);
            }
            reference.revisions.insert(revision, events.clone());
        }
        problems.is_empty().then_some(reference).ok_or(problems)
    }

    /// The last revision of the history (its base when empty).
    pub fn last(&self) -> u64 {
        self.revisions.keys().next_back().copied().unwrap_or(self.base)
    }

    /// What a watcher of `spec` must receive for `revision`: the watched keys' events, with
    /// the replayed previous states when asked for; empty when it changed no watched key.
    fn expected(&self, spec: &WatchSpec, revision: u64) -> Vec<WatchEvent> {
        let events = self.revisions.get(&revision).map(Vec::as_slice).unwrap_or_default();
        let watched = events.iter().filter(|e| spec.covers(&e.kv.key));
        let prev = |e: &WatchEvent| match spec.prev_kv {
            true => self.before.get(&(revision, e.kv.key.clone())).cloned().flatten(),
            false => None,
        };
        watched.map(|e| WatchEvent { prev: prev(e), ..e.clone() }).collect()
    }

    /// Revisions in `from..=to` that changed a key `spec` watches.
    fn watched_in(&self, spec: &WatchSpec, from: u64, to: u64) -> Vec<u64> {
        if from > to {
            return Vec::new();
        }
        let changed =
            |(r, events): (&u64, &Vec<WatchEvent>)| events.iter().any(|e| spec.covers(&e.kv.key)).then_some(*r);
        self.revisions.range(from..=to).filter_map(changed).collect()
    }
}

/// The changes messages among `messages`.
fn changes(messages: &[WatchMessage]) -> impl Iterator<Item = (u64, &Vec<WatchEvent>)> {
    messages.iter().filter_map(|m| match m {
        WatchMessage::Changes { revision, events } => Some((*revision, events)),
        WatchMessage::Progress { .. } => None,
    })
}

/// What is wrong with `event` of `revision`, given the key's state `before` it.
fn consistency(revision: u64, event: &WatchEvent, before: Option<&KeyValue>) -> Vec<String> {
    let key = show_key(&event.kv.key);
    let mut problems = Vec::new();
    if event.prev.as_ref() != before {
        problems.push(format!(
            "reference: revision {revision} {key}: previous state {:?}, replayed {before:?}",
            event.prev
        ));
    }
    let kv = &event.kv;
    let ok = match event.kind {
        EventKind::Put => {
            let (create, version) = before.map_or((revision, 1), |b| (b.create_revision, b.version + 1));
            kv.mod_revision == revision && kv.create_revision == create && kv.version == version
        }
        EventKind::Delete => before.is_some() && kv.mod_revision == revision && kv.version == 0,
    };
    if !ok {
        problems
            .push(format!("reference: revision {revision} {key}: {:?} {kv:?} does not follow {before:?}", event.kind));
    }
    problems
}

/// What one watcher's check found.
#[derive(Debug, Default)]
pub struct WatcherCheck {
    /// Events compared with the reference.
    pub events: usize,
    /// What is wrong, each naming the watcher and the revision.
    pub violations: Vec<String>,
}

/// Check everything `log` received against `reference`; `until` is the revision the watcher
/// had to cover once the run healed (None when it was not asked to catch up).
pub fn check_watcher(reference: &Reference, log: &WatcherLog, until: Option<u64>) -> WatcherCheck {
    let mut found = Vec::new();
    let mut last: Option<u64> = None;
    let mut events = 0;
    for message in &log.messages {
        // Every revision before `next` is settled: delivered or checked as not watched.
        let next = last.map_or(log.start, |l| l + 1);
        match message {
            WatchMessage::Changes { revision, events: got } => {
                let r = *revision;
                if r < next {
                    found.push(out_of_order(r, last, log.start));
                    continue;
                }
                found.extend(gaps(reference, log, next, r - 1, &format!("before revision {r}")));
                let expected = reference.expected(&log.spec, r);
                if *got != expected {
                    found.push(format!("revision {r}: received {got:?}, the history has {expected:?}"));
                }
                events += got.len();
                last = Some(r);
            }
            WatchMessage::Progress { revision } => {
                found.extend(gaps(reference, log, next, *revision, &format!("before progress at {revision}")));
            }
        }
    }
    if let Some(until) = until.filter(|u| log.covered() < *u) {
        found.push(format!("covered revisions up to {} only, not the final revision {until}", log.covered()));
    }
    WatcherCheck { events, violations: listed(&log.name, found) }
}

/// A revision at or below the last one delivered (or below the start).
fn out_of_order(revision: u64, last: Option<u64>, start: u64) -> String {
    match last {
        Some(l) if l == revision => format!("revision {revision} delivered twice (a duplicate, or a split revision)"),
        Some(l) => format!("revision {revision} delivered after revision {l} (out of order)"),
        None => format!("revision {revision} delivered, before the start revision {start}"),
    }
}

/// Watched revisions in `from..=to` that were never delivered.
fn gaps(reference: &Reference, log: &WatcherLog, from: u64, to: u64, context: &str) -> Vec<String> {
    let missed = reference.watched_in(&log.spec, from, to);
    missed.into_iter().map(|r| format!("revision {r} was never delivered ({context}): a gap")).collect()
}

/// Prefix each violation with the watcher's name, listing at most [`MAX_LISTED`].
fn listed(name: &str, mut found: Vec<String>) -> Vec<String> {
    let more = found.len().saturating_sub(MAX_LISTED);
    found.truncate(MAX_LISTED);
    let mut out: Vec<String> = found.into_iter().map(|v| format!("watcher {name}: {v}")).collect();
    if more > 0 {
        out.push(format!("watcher {name}: and {more} more violations"));
    }
    out
}

/// Each acknowledged write that the reference does not hold at its revision, with its value.
pub fn check_acknowledged(reference: &Reference, acks: &[Ack]) -> Vec<String> {
    let everything = WatchSpec::everything();
    let mut found = Vec::new();
    for ack in acks {
        let events = reference.expected(&everything, ack.revision);
        let put = events.iter().find(|e| e.kind == EventKind::Put && e.kv.key == ack.key);
        if put.is_none_or(|p| p.kv.value != ack.value || p.kv.mod_revision != ack.revision) {
            found.push(format!(
                "acknowledged write {}={} at revision {}: the history has {events:?} there",
                show_key(&ack.key),
                String::from_utf8_lossy(&ack.value),
                ack.revision
            ));
        }
    }
    listed("(acknowledged writes)", found)
}

fn show_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}
