//! The same script of `etcdctl` commands against a real etcd (Debian's `etcd-server`, started
//! here on loopback with a temporary data directory) and against `flotilla agent
//! --etcd-listen`, outputs compared after normalising what legitimately varies: cluster and
//! member ids, Raft terms, lease ids, times, and absolute revisions (compared relative to the
//! script's first write). Where Flotilla differs on purpose (docs/ETCD.md), the step says so and
//! checks the documented difference instead. Fails as root without etcd and etcdctl installed
//! (CI installs them), skips saying why otherwise.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::Value;
use support::etcdctl::{etcdctl, installed_or_skip, watched_lines};
use support::{free_port, running_field, LocalAgent, PATIENCE};

/// How a step's output is compared.
#[derive(Clone, Copy)]
enum Compare {
    /// Exactly, after lease ids are replaced by placeholders.
    Text,
    /// As JSON, with ids and terms zeroed and revisions made relative.
    Json,
    /// As JSON, only its shape (field names and value kinds).
    Shape,
    /// Text with every number made relative to the first write's revision.
    Revisions,
    /// Text with what lies between each pair of markers masked.
    Masked(&'static [(&'static str, &'static str)]),
    /// A watch or an election: the first `n` lines it prints, masked as [`Compare::Masked`].
    Watch(usize, &'static [(&'static str, &'static str)]),
    /// A documented difference: etcd's and Flotilla's success, and the reason.
    Differs(bool, bool, &'static str),
}

/// One etcdctl command. `{rev+N}` in an argument is the script's first revision plus N;
/// `{lease}` the lease granted last; `{tmp}` a temporary directory.
struct Step {
    args: &'static [&'static str],
    stdin: Option<&'static str>,
    compare: Compare,
}

const fn step(args: &'static [&'static str], compare: Compare) -> Step {
    Step { args, stdin: None, compare }
}

/// A transaction read from stdin, as `etcdctl txn` (interactive) takes it: compares, a blank
/// line, the success operations, a blank line, the failure operations.
const TXN: &str =
    "value(\"a\") = \"11\"\nmod(\"c\") > \"0\"\nversion(\"a\") = \"2\"\n\nput t yes\nget a\n\nput t no\n\n";
const TXN_FAILING: &str = "create(\"a\") = \"0\"\n\nput t yes\n\nget t\ndel c --prev-kv\n\n";

/// The script. Revision `{rev+0}` is the first put; each later write adds one.
const SCRIPT: &[Step] = &[
    step(&["put", "base", "0", "-w", "json"], Compare::Json),
    step(&["put", "a", "1"], Compare::Text),               // rev+1
    step(&["put", "b", "2"], Compare::Text),               // rev+2
    step(&["put", "c", "3"], Compare::Text),               // rev+3
    step(&["put", "a", "11", "--prev-kv"], Compare::Text), // rev+4
    step(&["get", "a"], Compare::Text),
    step(&["get", "a", "-w", "json"], Compare::Json),
    step(&["get", "a", "--rev", "{rev+1}"], Compare::Text),
    step(&["get", "a", "--rev", "{rev+1}", "-w", "json"], Compare::Json),
    step(&["get", "a", "--prefix"], Compare::Text),
    step(&["get", "b", "--from-key"], Compare::Text),
    step(&["get", "a", "--from-key", "--limit", "2", "-w", "json"], Compare::Json),
    step(&["get", "a", "--from-key", "--keys-only"], Compare::Text),
    step(&["get", "a", "--from-key", "--print-value-only"], Compare::Text),
    step(&["get", "a", "--from-key", "--sort-by", "MODIFY", "--order", "DESCEND"], Compare::Text),
    step(&["get", "a", "--from-key", "--sort-by", "VALUE", "--order", "ASCEND"], Compare::Text),
    step(&["get", "a", "--from-key", "--sort-by", "CREATE", "--order", "DESCEND"], Compare::Text),
    step(&["get", "a", "--from-key", "--sort-by", "VERSION", "--order", "DESCEND", "--limit", "1"], Compare::Text),
    step(&["get", "a", "--from-key", "--sort-by", "KEY", "--order", "DESCEND", "-w", "json"], Compare::Json),
    step(&["get", "zzz"], Compare::Text),
    Step { args: &["txn", "-w", "json"], stdin: Some(TXN), compare: Compare::Json }, // rev+5
    Step { args: &["txn"], stdin: Some(TXN_FAILING), compare: Compare::Text },
    step(&["put", "p/1", "x"], Compare::Text),                     // rev+6
    step(&["put", "p/2", "y"], Compare::Text),                     // rev+7
    step(&["put", "p/1", "z"], Compare::Text),                     // rev+8
    step(&["del", "b", "--prev-kv"], Compare::Text),               // rev+9
    step(&["del", "p/", "--prefix", "-w", "json"], Compare::Json), // rev+10
    step(&["watch", "p/", "--prefix", "--rev", "{rev+6}", "--prev-kv"], Compare::Watch(14, &[])),
    // A history answer may hold several revisions (etcd) or one (Flotilla): lines, not JSON.
    step(&["watch", "a", "--rev", "{rev+1}"], Compare::Watch(6, &[])),
    step(&["lease", "grant", "60"], Compare::Text),
    step(&["put", "leased", "v", "--lease", "{lease}"], Compare::Text), // rev+11
    step(&["lease", "keep-alive", "--once", "{lease}"], Compare::Text),
    step(&["lease", "timetolive", "{lease}", "--keys"], Compare::Masked(&[("remaining(", "s)")])),
    step(&["lease", "revoke", "{lease}"], Compare::Text), // rev+12
    step(&["get", "leased"], Compare::Text),
    step(&["lease", "timetolive", "{lease}"], Compare::Text),
    step(&["lock", "job", "--", "sh", "-c", "echo $ETCD_LOCK_REV"], Compare::Revisions), // rev+13, +14
    step(&["get", "job/", "--prefix", "-w", "json"], Compare::Json),
    // The candidate's key holds its session's lease id.
    step(&["elect", "svc", "v1"], Compare::Watch(2, &[("svc/", "\n")])), // rev+15
    step(&["elect", "--listen", "svc"], Compare::Watch(2, &[("svc/", "\n")])),
    step(&["compact", "{rev+5}"], Compare::Revisions),
    step(&["get", "a", "--rev", "{rev+1}"], Compare::Text),
    step(&["get", "a", "--rev", "{rev+5}"], Compare::Text),
    step(&["get", "a", "--rev", "{rev+100}"], Compare::Text),
    step(&["compact", "{rev+5}"], Compare::Text),
    step(&["compact", "{rev+3}"], Compare::Text),
    step(&["watch", "a", "--rev", "{rev+1}"], Compare::Watch(1, &[])),
    step(&["alarm", "list"], Compare::Text),
    step(&["defrag"], Compare::Text),
    step(
        &["snapshot", "save", "{tmp}/snapshot.db"],
        Compare::Differs(true, false, "Snapshot is refused: use flotilla backup (docs/ETCD.md, Maintenance)"),
    ),
    step(&["member", "list", "-w", "json"], Compare::Shape),
    step(&["endpoint", "status", "-w", "json"], Compare::Shape),
    step(&["endpoint", "health", "-w", "json"], Compare::Shape),
];

/// What one system answered to one step, normalised.
#[derive(Debug, PartialEq)]
struct Answer {
    success: bool,
    out: String,
    err: String,
}

/// A script's run against one endpoint: the revision of its first write and the last lease.
struct Run {
    endpoint: String,
    tmp: tempfile::TempDir,
    first: i64,
    leases: Vec<String>,
}

impl Run {
    fn new(endpoint: String) -> Self {
        Self { endpoint, tmp: tempfile::tempdir().expect("tempdir"), first: 0, leases: Vec::new() }
    }

    fn arg(&self, arg: &str) -> String {
        if let Some(n) = arg.strip_prefix("{rev+").and_then(|r| r.strip_suffix('}')) {
            return (self.first + n.parse::<i64>().expect("a revision offset")).to_string();
        }
        if let Some(rest) = arg.strip_prefix("{tmp}") {
            return format!("{}{rest}", self.tmp.path().display());
        }
        match (arg, self.leases.last()) {
            ("{lease}", Some(lease)) => lease.clone(),
            _ => arg.to_string(),
        }
    }

    fn run(&mut self, step: &Step) -> Answer {
        let args: Vec<String> = step.args.iter().map(|a| self.arg(a)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (success, out, err) = match step.compare {
            Compare::Watch(n, _) => (true, watched_lines(&self.endpoint, &args, n).join("\n"), String::new()),
            _ => etcdctl(&self.endpoint, &args, step.stdin),
        };
        if self.first == 0 {
            self.first = header_revision(&out);
        }
        if let Some(lease) = out.strip_prefix("lease ").and_then(|rest| rest.split_whitespace().next()) {
            if out.contains("granted") && !self.leases.iter().any(|l| l == lease) {
                self.leases.push(lease.to_string());
            }
        }
        let out = self.normalise(&out, step.compare);
        // Only a failure's message is compared (etcdctl's own log lines carry times and ids).
        let err = if success { String::new() } else { err.lines().filter(|l| l.starts_with("Error:")).collect() };
        Answer { success, out, err }
    }

    fn normalise(&self, text: &str, compare: Compare) -> String {
        let mut text = text.replace(&self.endpoint, "ENDPOINT");
        // etcdctl prints lease ids in hex (its JSON in decimal: see `relative`).
        for (n, lease) in self.leases.iter().enumerate() {
            text = replace_word(&text, lease, &format!("LEASE{n}"));
        }
        match compare {
            Compare::Json => json_lines(&text, |v| relative(v, self.first, &self.leases)),
            Compare::Shape => json_lines(&text, shape),
            Compare::Revisions => relative_numbers(&text, self.first),
            Compare::Masked(markers) | Compare::Watch(_, markers) => {
                markers.iter().fold(text, |t, (open, close)| mask(&t, open, close))
            }
            Compare::Text | Compare::Differs(..) => text,
        }
    }
}

/// `text` with each whole word (between characters that are not alphanumeric) `word`
/// replaced by `by`.
fn replace_word(text: &str, word: &str, by: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        out.push_str(&rest[..at]);
        let before = out.chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let whole = !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
        out.push_str(if whole { by } else { word });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// The header revision of a JSON answer (0 if none).
fn header_revision(out: &str) -> i64 {
    let value: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    value["header"]["revision"].as_i64().unwrap_or(0)
}

/// Each line of `text` that is JSON, transformed by `f`; other lines as they are.
fn json_lines(text: &str, f: impl Fn(&mut Value)) -> String {
    text.lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(mut value) if value.is_object() || value.is_array() => {
                f(&mut value);
                value.to_string()
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Ids and terms zeroed, revisions made relative to `first`, the ids of `leases` (hex) named
/// by their rank.
fn relative(value: &mut Value, first: i64, leases: &[String]) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                match name.as_str() {
                    "cluster_id" | "member_id" | "raft_term" => *field = Value::from(0),
                    "lease" | "ID" => {
                        let hex = field.as_i64().map(|id| format!("{id:x}"));
                        if let Some(n) = leases.iter().position(|l| Some(l) == hex.as_ref()) {
                            *field = Value::from(format!("LEASE{n}"));
                        }
                    }
                    "revision" | "create_revision" | "mod_revision" | "compact_revision" => {
                        if let Some(r) = field.as_i64().filter(|r| *r > 0) {
                            *field = Value::from(r - first);
                        }
                    }
                    _ => relative(field, first, leases),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| relative(i, first, leases)),
        _ => {}
    }
}

/// The shape of a JSON value: field names and kinds of values.
fn shape(value: &mut Value) {
    *value = match value {
        Value::Object(fields) => {
            fields.values_mut().for_each(shape);
            return;
        }
        Value::Array(items) => {
            items.truncate(1);
            items.iter_mut().for_each(shape);
            return;
        }
        Value::Null => Value::from("null"),
        Value::Bool(_) => Value::from("bool"),
        Value::Number(_) => Value::from("number"),
        Value::String(_) => Value::from("string"),
    };
}

/// Every number of `text` made relative to `first`.
fn relative_numbers(text: &str, first: i64) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in text.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            let n: i64 = digits.parse().unwrap_or(0);
            out.push_str(&format!("rev+{}", n - first));
            digits.clear();
        }
        out.push(c);
    }
    out.pop();
    out
}

/// `text` with what lies between `open` and the next `close` replaced by `*`.
fn mask(text: &str, open: &str, close: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        let after = &rest[at + open.len()..];
        let Some(end) = after.find(close) else { break };
        out.push_str(&rest[..at + open.len()]);
        out.push('*');
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A real etcd on loopback, killed when dropped.
struct RealEtcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl RealEtcd {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log");
        let child = Command::new("etcd")
            .args(["--name", "reference", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("reference={peer_url}")])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("etcd starts");
        let etcd = Self { child, endpoint: format!("127.0.0.1:{client}"), _dir: dir };
        let deadline = Instant::now() + PATIENCE;
        while !etcdctl(&etcd.endpoint, &["endpoint", "health"], None).0 {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            // The pause between two polls of its health, under an explicit deadline (this
            // constructor is synchronous, so no async sleep).
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        etcd
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_answers_as_etcd_does() {
    let tools = [("etcd", "--version"), ("etcdctl", "version")];
    if !installed_or_skip(&tools, "etcd-server etcd-client") {
        return;
    }
    let etcd = RealEtcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = LocalAgent::start(dir.path(), &["--etcd-listen", "127.0.0.1:0"]).await;
    let text = std::fs::read_to_string(&agent.log).expect("log");
    let endpoint = running_field(&text, "etcd").expect("the etcd endpoint is logged");
    let mut reference = Run::new(etcd.endpoint.clone());
    let mut flotilla = Run::new(endpoint);
    let mut differences = Vec::new();
    for step in SCRIPT {
        let (expected, got) = (reference.run(step), flotilla.run(step));
        match step.compare {
            Compare::Differs(etcd_ok, flotilla_ok, why) => {
                eprintln!("{:?}: Flotilla differs on purpose: {why}", step.args);
                assert_eq!(
                    (expected.success, got.success),
                    (etcd_ok, flotilla_ok),
                    "{:?}: {expected:?} {got:?}",
                    step.args
                );
            }
            _ if expected != got => {
                differences.push(format!("{:?}\n  etcd:     {expected:?}\n  flotilla: {got:?}", step.args))
            }
            _ => {}
        }
    }
    assert!(differences.is_empty(), "{} steps differ:\n{}", differences.len(), differences.join("\n"));
}
