//! Client workers: concurrent puts, linearizable gets and compare-and-sets through the HTTP API
//! of random agents, each operation recorded in a [`Recorder`] with the outcome the client can be
//! sure of.
//!
//! # Outcomes
//!
//! A write is [`Outcome::Ok`] once the agent answered 2xx (it answers after the entry
//! committed). It is [`Outcome::Fail`] when it certainly never reached Raft: the TCP
//! connection could not be established (nothing was sent), or the agent answered a status that
//! its API promises means "not applied" (4xx, 502, 507). The agent upgrades any error that
//! follows an attempt which may have been proposed to an unknown outcome (503
//! `outcome_unknown`, or 504), so these statuses are definite. Everything else is
//! [`Outcome::Unknown`]: 500, 503, 504, timeouts and resets.
//!
//! A read is [`Outcome::Ok`] with the value it returned (404 `key_not_found`: absent). A read
//! that timed out or lost its connection is unknown, one the agent refused is failed; the
//! checker ignores both.
//!
//! A compare-and-set is a linearizable `GET` (recorded as a read) that learns the key's value and
//! its `ETag` (mod revision), then a `PUT` of a fresh unique value with `If-Match: "<etag>"`
//! (`If-None-Match: *` when the key was absent), recorded as [`Op::Cas`]. 2xx is
//! [`Outcome::Ok`]; 412 is [`Outcome::Fail`]: the comparison failed, which the checker takes as
//! "the key did not hold the value read". A refusal with another "not applied" answer (the
//! definite statuses above, or no connection) observed nothing, so it is recorded as
//! [`Outcome::Unknown`] (which allows that it never took effect) and counted apart, as in the
//! in-process suite. Everything else is [`Outcome::Unknown`].
//!
//! After an unknown outcome the request may still be in flight, so the worker carries on
//! under a fresh client id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_check::{ClientId, History, Op, Outcome, Recorder, Value};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::blocking::{Client, Response};
use reqwest::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde_json::Value as Json;

/// Longest time to establish a connection: inside the lab a connection takes well under a
/// millisecond, so anything slower is a host cut off at the link.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Client-side timeout of one final read.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two attempts of a final read.
const FINAL_READ_PAUSE: Duration = Duration::from_millis(100);
/// Most examples kept of writes that took effect although their client saw an error.
const EXAMPLES: usize = 5;
/// Share of the operations that are compare-and-sets (the rest: half puts, half gets), as in
/// the in-process suite.
const CAS_SHARE: f64 = 0.2;

/// What the workers share: where to send requests, what to record, when to stop.
#[derive(Debug)]
pub(crate) struct Workload {
    /// The history of every operation.
    pub recorder: Recorder,
    /// Base URL of each agent's HTTP API, by host.
    pub bases: Vec<String>,
    /// The keys operations touch.
    pub keys: Vec<String>,
    /// The namespace.
    pub ns: String,
    /// Set to stop the workers after their current operation.
    pub stop: AtomicBool,
    /// Client-side timeout of one operation.
    pub op_timeout: Duration,
    /// Longest pause between two operations of one worker.
    pub think_max: Duration,
    /// How many operations ended for each reason other than success (`write 503 no_leader`,
    /// `read timeout`, ...).
    pub reasons: Mutex<BTreeMap<String, u64>>,
    /// Why each unsuccessful write ended as it did, by value: the reason and the full answer
    /// (status, code, message) or transport error.
    pub failed_writes: Mutex<HashMap<String, (String, String)>>,
    /// Read with `?consistency=stale` instead of `linearizable`: only to check that the checker
    /// catches what a partition does to stale reads.
    pub stale_reads: bool,
    /// Compare-and-sets refused before they were proposed (recorded as unknown, see [`cas`]).
    pub cas_refused: AtomicU64,
}

impl Workload {
    fn note(&self, reason: String) {
        *self.reasons.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_default() += 1;
    }

    /// Count `reason` and remember it, with `detail`, as why the write (or compare-and-set) of
    /// `value` did not succeed; nothing if it did (`None`).
    fn note_failed_write(&self, value: &str, reason: Option<(String, String)>) {
        if let Some((reason, detail)) = reason {
            let mut failed = self.failed_writes.lock().unwrap_or_else(|p| p.into_inner());
            failed.insert(value.to_string(), (reason.clone(), detail));
            drop(failed);
            self.note(reason);
        }
    }

    /// The reasons operations did not succeed, with counts.
    pub(crate) fn reasons(&self) -> BTreeMap<String, u64> {
        self.reasons.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes whose client saw an error but whose value some read of `history` returned (they
    /// took effect after all), counted by the error (evidence for classifying that error as
    /// unknown rather than failed), and the first [`EXAMPLES`] of them in full for answers
    /// other than timeouts and lost connections (`value: answer`).
    pub(crate) fn observed_despite_error(&self, history: &History) -> (BTreeMap<String, u64>, Vec<String>) {
        let failed = self.failed_writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::new();
        let mut counts = BTreeMap::new();
        let mut examples = Vec::new();
        for e in history.entries() {
            if let (Op::Read(Some(v)), Outcome::Ok) = (&e.op, e.effective_outcome()) {
                if let Some((reason, detail)) = failed.get(&v.0) {
                    if seen.insert(v.0.clone()) {
                        *counts.entry(reason.clone()).or_default() += 1;
                        let answered = !reason.contains("timeout") && !reason.contains("connection error");
                        if answered && examples.len() < EXAMPLES {
                            examples.push(format!("{}={}: {detail}", e.key, v.0));
                        }
                    }
                }
            }
        }
        (counts, examples)
    }
}

/// Sets the flag when dropped, also while unwinding: workers stop even if the driver panics,
/// so the scope joining them cannot hang.
pub(crate) struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A blocking HTTP client whose every request ends within `timeout`.
fn http_client(timeout: Duration) -> Client {
    Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .no_proxy()
        .build()
        .expect("a plain HTTP client builds")
}

/// Run one worker until [`Workload::stop`]: each operation on a random agent and a random key,
/// a fifth compare-and-sets ([`cas`]), of the rest half puts of unique values (`w<worker>.<n>`,
/// compare-and-sets write those too), half linearizable gets. Every choice comes from `seed`.
pub(crate) fn worker(w: &Workload, index: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let http = http_client(w.op_timeout);
    let mut client = w.recorder.new_client();
    let mut seq = 0u64;
    while !w.stop.load(Ordering::SeqCst) {
        let base = &w.bases[rng.gen_range(0..w.bases.len())];
        let key = w.keys.choose(&mut rng).expect("at least one key");
        let outcome = if rng.gen_bool(CAS_SHARE) {
            seq += 1;
            cas(w, &http, client, base, key, &format!("w{index}.{seq}"))
        } else if rng.gen_bool(0.5) {
            seq += 1;
            write(w, &http, client, base, key, &format!("w{index}.{seq}"))
        } else {
            read(w, &http, client, base, key)
        };
        if outcome == Outcome::Unknown {
            // The request may still be in flight: continue as a new client.
            client = w.recorder.new_client();
        }
        // Think time: paces the load (a few hundred operations per key and run), not a wait
        // for anything. A little longer after a failure, so workers do not spin against an
        // unavailable cluster.
        let mut pause = rng.gen_range(Duration::ZERO..=w.think_max);
        if outcome != Outcome::Ok {
            pause += Duration::from_millis(rng.gen_range(10..=40));
        }
        std::thread::sleep(pause);
    }
}

/// `PUT` `value` to `key` through `base`, recorded.
fn write(w: &Workload, http: &Client, client: ClientId, base: &str, key: &str, value: &str) -> Outcome {
    let url = format!("{base}/v1/kv/{}/{key}", w.ns);
    let ticket = w.recorder.invoke(client, key, Op::write(value));
    let answer = put_answer(http.put(&url).body(value.to_string()).send(), base, "write");
    let outcome = match answer.kind {
        PutKind::Applied => Outcome::Ok,
        // A write has no precondition, so a 412 is just another "not applied".
        PutKind::NotApplied | PutKind::ConditionFailed => Outcome::Fail,
        PutKind::Unknown => Outcome::Unknown,
    };
    w.recorder.complete(ticket, outcome).expect("a fresh ticket of this recorder");
    w.note_failed_write(value, answer.reason);
    outcome
}

/// How a `PUT` ended, as far as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PutKind {
    /// 2xx: the entry committed (the body only repeats the index).
    Applied,
    /// 412: the precondition did not hold; nothing was applied.
    ConditionFailed,
    /// Another answer the API promises means "not applied", or no connection (nothing sent).
    NotApplied,
    /// Anything else: it may have been applied, now or later.
    Unknown,
}

/// A classified `PUT` answer, with the reason and full detail when it did not succeed.
struct PutAnswer {
    kind: PutKind,
    /// `(reason, detail)`: the reason for the statistics, the full answer for the examples.
    reason: Option<(String, String)>,
}

/// Classify the answer to a `PUT` sent to `base`; `what` (`write`, `cas`) prefixes the reason.
fn put_answer(sent: reqwest::Result<Response>, base: &str, what: &str) -> PutAnswer {
    match sent {
        Ok(response) if response.status().is_success() => PutAnswer { kind: PutKind::Applied, reason: None },
        Ok(response) => {
            let status = response.status();
            let (code, message) = error_of(response);
            let kind = if status == StatusCode::PRECONDITION_FAILED {
                PutKind::ConditionFailed
            } else if status.is_client_error()
                || status == StatusCode::INSUFFICIENT_STORAGE
                || status == StatusCode::BAD_GATEWAY
            {
                PutKind::NotApplied
            } else {
                PutKind::Unknown
            };
            let detail = format!("{} {code} from {base}: {message}", status.as_u16());
            PutAnswer { kind, reason: Some((format!("{what} {} {code}", status.as_u16()), detail)) }
        }
        // No connection: the request was never sent.
        Err(e) if e.is_connect() => {
            PutAnswer { kind: PutKind::NotApplied, reason: Some((format!("{what} connect"), format!("{e:#}"))) }
        }
        Err(e) => PutAnswer {
            kind: PutKind::Unknown,
            reason: Some((format!("{what} {}", transport_reason(&e)), format!("{e:#}"))),
        },
    }
}

/// Compare-and-set of `key` through `base` to the fresh unique `value`: a read (recorded as
/// one) learns the value and its mod revision (`ETag`), then a `PUT` with `If-Match` (or
/// `If-None-Match: *` if the key was absent), recorded as [`Op::Cas`].
///
/// The checker compares values, the store mod revisions. They agree because every write of a
/// key writes a value never written to it before and the store applies a write at most once:
/// the value read names exactly one revision. A 412 is [`Outcome::Fail`] (the comparison
/// failed, which the checker holds against the history); any other refusal observed nothing
/// and is recorded as [`Outcome::Unknown`] and counted in [`Workload::cas_refused`].
fn cas(w: &Workload, http: &Client, client: ClientId, base: &str, key: &str, value: &str) -> Outcome {
    let (expected, etag) = match read_within(w, http, client, base, key, None) {
        Ok(seen) => seen,
        Err(outcome) => return outcome,
    };
    let request = http.put(format!("{base}/v1/kv/{}/{key}", w.ns)).body(value.to_string());
    let request = match (&expected, etag) {
        (None, _) => request.header(IF_NONE_MATCH, "*"),
        (Some(_), Some(revision)) => request.header(IF_MATCH, format!("\"{revision}\"")),
        // A present value always comes with its ETag; without one there is nothing to
        // compare: the read alone is the operation (noted, as it breaks the API's promise).
        (Some(_), None) => {
            w.note("cas read without ETag".to_string());
            return Outcome::Ok;
        }
    };
    let ticket = w.recorder.invoke(client, key, Op::Cas { expected, new: Value::from(value) });
    let answer = put_answer(request.send(), base, "cas");
    let outcome = match answer.kind {
        PutKind::Applied => Outcome::Ok,
        PutKind::ConditionFailed => Outcome::Fail,
        PutKind::NotApplied => {
            w.cas_refused.fetch_add(1, Ordering::Relaxed);
            Outcome::Unknown
        }
        PutKind::Unknown => Outcome::Unknown,
    };
    w.recorder.complete(ticket, outcome).expect("a fresh ticket of this recorder");
    w.note_failed_write(value, answer.reason);
    outcome
}

/// The mod revision in an `ETag: "<n>"` header, if the answer has a well-formed one.
fn etag_of(response: &Response) -> Option<u64> {
    parse_etag(response.headers().get(ETAG)?.to_str().ok()?)
}

/// The mod revision in an entity tag `"<n>"`; `None` for anything else (weak or malformed
/// tags: the agent sends none of those, and a guess would make the condition meaningless).
fn parse_etag(text: &str) -> Option<u64> {
    text.trim().strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// Linearizable `GET` of `key` through `base`, recorded.
fn read(w: &Workload, http: &Client, client: ClientId, base: &str, key: &str) -> Outcome {
    outcome_of(read_within(w, http, client, base, key, None))
}

/// [`Outcome::Ok`] for a read that returned something, else its outcome.
fn outcome_of(read: Result<Seen, Outcome>) -> Outcome {
    read.err().unwrap_or(Outcome::Ok)
}

/// What a successful read returned: the value (`None`: absent) and its mod revision from the
/// `ETag`, if there was a well-formed one.
type Seen = (Option<Value>, Option<u64>);

/// Like [`read`], returning what it saw (or the outcome of a read that saw nothing); `timeout`
/// overrides the client's.
fn read_within(
    w: &Workload,
    http: &Client,
    client: ClientId,
    base: &str,
    key: &str,
    timeout: Option<Duration>,
) -> Result<Seen, Outcome> {
    let consistency = if w.stale_reads { "stale" } else { "linearizable" };
    let url = format!("{base}/v1/kv/{}/{key}?consistency={consistency}", w.ns);
    let ticket = w.recorder.invoke(client, key, Op::read());
    let mut request = http.get(&url);
    if let Some(t) = timeout {
        request = request.timeout(t);
    }
    let answer = match request.send() {
        Ok(response) if response.status() == StatusCode::OK => {
            let etag = etag_of(&response);
            match response.bytes() {
                Ok(body) => Ok((Some(Value::from(String::from_utf8_lossy(&body).into_owned())), etag)),
                Err(e) => Err((Outcome::Unknown, format!("read body {}", transport_reason(&e)))),
            }
        }
        Ok(response) => {
            let status = response.status();
            let (code, _) = error_of(response);
            if status == StatusCode::NOT_FOUND && code == "key_not_found" {
                Ok((None, None))
            } else {
                // The agent answered with an error: the read returned nothing.
                Err((Outcome::Fail, format!("read {} {code}", status.as_u16())))
            }
        }
        Err(e) if e.is_connect() => Err((Outcome::Fail, "read connect".to_string())),
        Err(e) => Err((Outcome::Unknown, format!("read {}", transport_reason(&e)))),
    };
    match answer {
        Ok((observed, etag)) => {
            w.recorder.complete_read(ticket, observed.clone()).expect("a fresh read ticket of this recorder");
            Ok((observed, etag))
        }
        Err((outcome, reason)) => {
            w.recorder.complete(ticket, outcome).expect("a fresh ticket of this recorder");
            w.note(reason);
            Err(outcome)
        }
    }
}

/// The API's error code and message from a JSON error body
/// (`{"error":{"code":...,"message":...}}`), or `?`.
fn error_of(response: Response) -> (String, String) {
    let body: Json = response.json().unwrap_or(Json::Null);
    let field = |name: &str| body["error"][name].as_str().unwrap_or("?").to_string();
    (field("code"), field("message"))
}

/// A short name for a transport error, for the statistics.
fn transport_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "connection error"
    }
}

/// Read every key linearizably once, through the agents in turn starting at `first`, retrying
/// each key until a read succeeds or `within` has passed; every attempt is recorded. Returns
/// the keys no read succeeded for.
pub(crate) fn final_reads(w: &Workload, first: usize, within: Duration) -> Vec<String> {
    let http = http_client(FINAL_READ_TIMEOUT);
    let deadline = Instant::now() + within;
    let mut client = w.recorder.new_client();
    let mut node = first;
    let mut missing = Vec::new();
    for key in &w.keys {
        loop {
            if Instant::now() >= deadline {
                missing.push(key.clone());
                break;
            }
            let base = &w.bases[node % w.bases.len()];
            match outcome_of(read_within(w, &http, client, base, key, Some(FINAL_READ_TIMEOUT))) {
                Outcome::Ok => break,
                Outcome::Unknown => client = w.recorder.new_client(),
                Outcome::Fail => {}
            }
            // Another agent next time: the one asked may be the one that cannot serve.
            node += 1;
            std::thread::sleep(FINAL_READ_PAUSE);
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::parse_etag;

    #[test]
    fn only_a_quoted_revision_is_an_etag() {
        assert_eq!(parse_etag("\"42\""), Some(42));
        assert_eq!(parse_etag(" \"7\" "), Some(7));
        for bad in ["42", "W/\"42\"", "\"\"", "\"x\"", "\"-1\"", "\"", "*"] {
            assert_eq!(parse_etag(bad), None, "{bad:?}");
        }
    }
}
