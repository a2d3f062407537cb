//! `flotilla status` and `flotilla ns status` as readable tables: pure functions from the status
//! a node returns to text (no terminal width involved; columns fit their content). `-o json`
//! prints the status as the node sent it instead.

use flotilla::doctor::{bytes, micros, millis};
use flotilla::NodeStatus;
use serde_json::Value;

/// How a command prints what it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned text for people.
    Table,
    /// The node's JSON, pretty-printed.
    Json,
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { c.to_string() } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A peer id short enough for a column: its last 8 characters (every ed25519 PeerId starts
/// alike), or `self` for the node itself.
pub fn short_id(id: &str, me: &str) -> String {
    if id == me {
        return "self".into();
    }
    let chars: Vec<char> = id.chars().collect();
    match chars.len() {
        0..=10 => id.to_string(),
        n => format!("…{}", chars[n - 8..].iter().collect::<String>()),
    }
}

/// `flotilla status`: the node's facts, its peers, and one row per namespace.
pub fn node_table(s: &NodeStatus) -> String {
    let me = s.peer_id.as_str();
    let mut out = String::new();
    let storage = match &s.storage.write_blocked {
        Some(why) => format!("CLIENT WRITES REFUSED: {why}"),
        None => "client writes taken".into(),
    };
    let disk = match s.storage.free_bytes {
        Some(free) => format!("{} free, reserve {}", bytes(free), bytes(s.storage.reserve_bytes)),
        None => "free space not measurable".into(),
    };
    let f = &s.storage.fsync;
    let fsync = match f.p99_le_us {
        None => "no fsync yet".into(),
        Some(u64::MAX) => format!("p99 over 1 s, mean {} ({} fsyncs)", micros(f.mean_us), f.count),
        Some(p99) => format!("p99 ≤ {}, mean {} ({} fsyncs)", micros(p99), micros(f.mean_us), f.count),
    };
    let facts = [
        ("node", me.to_string()),
        ("addrs", s.addrs.join(", ")),
        ("storage", storage),
        ("disk", disk),
        ("fsync", fsync),
    ];
    for (key, value) in facts {
        out += &format!("{key:<8} {value}\n");
    }
    if !s.peers.is_empty() {
        out += "\n";
        out += &peer_rows(s, me);
    }
    out += "\n";
    out += &namespace_rows(s, me);
    out
}

fn peer_rows(s: &NodeStatus, me: &str) -> String {
    let rows: Vec<Vec<String>> = s
        .peers
        .iter()
        .map(|p| {
            let heard = p.last_heard_ms_ago.map_or("-".into(), |ms| format!("{} ago", millis(ms)));
            let state = if p.down { "down" } else { "up" };
            vec![short_id(&p.id.to_string(), me), p.namespaces.to_string(), heard, state.into()]
        })
        .collect();
    table(&["PEER", "NAMESPACES", "LAST HEARD", "STATE"], &rows)
}

fn namespace_rows(s: &NodeStatus, me: &str) -> String {
    if s.namespaces.is_empty() {
        return "no namespaces\n".into();
    }
    let rows: Vec<Vec<String>> = s
        .namespaces
        .iter()
        .map(|ns| {
            let leader = ns.leader.map_or("none".into(), |l| short_id(&l.to_string(), me));
            let changed = ns.leadership.last_change_ms_ago.map_or("-".into(), |ms| format!("{} ago", millis(ms)));
            let role = if ns.quiesced { format!("{} (quiet)", ns.role.name()) } else { ns.role.name().into() };
            vec![
                ns.namespace.clone(),
                role,
                leader,
                ns.term.to_string(),
                ns.commit_index.to_string(),
                ns.applied_index.to_string(),
                ns.revision.map_or("-".into(), |r| r.to_string()),
                format!("{}/{}", ns.voters, ns.learners),
                changed,
            ]
        })
        .collect();
    let headers =
        ["NAMESPACE", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "REVISION", "VOTERS/LEARNERS", "LEADER CHANGED"];
    table(&headers, &rows)
}

/// `flotilla ns status`: one namespace on this node, from `GET /v1/ns/{ns}/status`, read
/// leniently (a field an older node lacks shows as `-`).
pub fn namespace_table(v: &Value) -> String {
    let text = |key: &str| match &v[key] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let me = text("node_id");
    let leader = v["leader"].as_str().map_or("none".into(), |l| short_id(l, &me));
    let history = &v["leadership"];
    let changed = history["last_change_ms_ago"].as_u64().map_or("-".into(), |ms| format!("{} ago", millis(ms)));
    let members = v["members"].as_array().map(Vec::as_slice).unwrap_or_default();
    let voters = members.iter().filter(|m| m["role"] == "voter").count();
    let facts = [
        ("namespace", text("namespace")),
        ("cluster", text("cluster")),
        ("role", format!("{}, term {}, leader {leader}", text("role"), text("term"))),
        (
            "log",
            format!(
                "last {}, commit {}, applied {}, snapshot {}; revision {}",
                text("last_log_index"),
                text("commit_index"),
                text("applied_index"),
                text("snapshot_index"),
                text("revision")
            ),
        ),
        ("members", format!("{voters} voters, {} learners", members.len() - voters)),
        ("leader", format!("{} changes, last {changed}", history["changes"].as_u64().unwrap_or(0))),
    ];
    let mut out = String::new();
    for (key, value) in facts {
        out += &format!("{key:<10} {value}\n");
    }
    out += "\n";
    out += &member_rows(v, members, &me);
    out += &formation_text(&v["formation"]);
    out
}

/// Members with, on the leader, how far each matches.
fn member_rows(v: &Value, members: &[Value], me: &str) -> String {
    let progress = v["progress"].as_array().map(Vec::as_slice).unwrap_or_default();
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let id = m["id"].as_str().unwrap_or("?");
            let p = progress.iter().find(|p| p["id"].as_str() == Some(id));
            let field = |key: &str| p.and_then(|p| p[key].as_u64()).map_or("-".into(), |n| n.to_string());
            let ack =
                p.and_then(|p| p["last_ack_ms_ago"].as_u64()).map_or("-".into(), |ms| format!("{} ago", millis(ms)));
            vec![short_id(id, me), m["role"].as_str().unwrap_or("?").into(), field("matched_index"), field("lag"), ack]
        })
        .collect();
    table(&["MEMBER", "ROLE", "MATCHED", "LAG", "LAST ACK"], &rows)
}

/// Formation phase and reason, splits, and the last timeline entries.
fn formation_text(f: &Value) -> String {
    if f.is_null() {
        return String::new();
    }
    let mut out =
        format!("\nformation  {}: {}\n", f["phase"].as_str().unwrap_or("-"), f["reason"].as_str().unwrap_or("-"));
    for split in f["splits"].as_array().map(Vec::as_slice).unwrap_or_default() {
        out += &format!(
            "split      cluster {} via {}: {}\n",
            split["cluster"].as_str().unwrap_or("?"),
            split["seen_via"].as_str().unwrap_or("?"),
            split["resolution"].as_str().unwrap_or("?")
        );
    }
    let timeline = f["timeline"].as_array().map(Vec::as_slice).unwrap_or_default();
    // The last few decisions; `-o json` has them all.
    for event in &timeline[timeline.len().saturating_sub(TIMELINE_SHOWN)..] {
        let at = event["at_ms"].as_u64().map_or("?".into(), millis);
        out += &format!("  at {at}: {}\n", event["event"].as_str().unwrap_or("?"));
    }
    out
}

/// Timeline entries the table shows.
const TIMELINE_SHOWN: usize = 8;

#[cfg(test)]
#[path = "status_table_tests.rs"]
mod tests;
