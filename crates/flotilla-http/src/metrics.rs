//! Prometheus text exposition.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use flotilla::{Node, Role};

/// `GET /metrics`.
pub async fn render(State(node): State<Arc<Node>>) -> Response {
    let body = exposition(&node);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn exposition(node: &Arc<Node>) -> String {
    let mut out = String::new();
    let gauges = [
        ("flotilla_is_leader", "1 if this node leads the namespace"),
        ("flotilla_term", "current Raft term"),
        ("flotilla_commit_index", "highest committed log index"),
        ("flotilla_applied_index", "highest applied log index"),
        ("flotilla_members", "members in the configuration"),
    ];
    let counters = [
        ("flotilla_leader_changes_total", "times the known leader changed"),
        ("flotilla_proposals_total", "writes proposed as leader"),
        ("flotilla_forwards_total", "requests forwarded to the leader"),
    ];
    let mut rows: Vec<(String, [u64; 8])> = Vec::new();
    for c in node.clusters() {
        let s = c.state();
        let (proposals, forwards, changes) = c.counters();
        let values = [
            u64::from(s.role == Role::Leader),
            s.term,
            s.commit_index,
            s.applied_index,
            s.members.len() as u64,
            changes,
            proposals,
            forwards,
        ];
        rows.push((s.namespace, values));
    }
    for (i, (name, help)) in gauges.iter().chain(counters.iter()).enumerate() {
        let kind = if i < gauges.len() { "gauge" } else { "counter" };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (ns, values) in &rows {
            let _ = writeln!(out, "{name}{{namespace=\"{ns}\"}} {}", values[i]);
        }
    }
    write_formation_metrics(node, &mut out);
    write_store_metrics(node, &mut out);
    write_watch_metrics(node, &mut out);
    write_subscription_metrics(node, &mut out);
    out
}

/// Formation counters per namespace, and the phase as a labelled gauge.
fn write_formation_metrics(node: &Arc<Node>, out: &mut String) {
    let statuses: Vec<_> = node
        .clusters()
        .into_iter()
        .filter_map(|c| c.formation_status().map(|f| (c.namespace().to_string(), f)))
        .collect();
    let counters = [
        ("joins", "join requests admitted as leader"),
        ("promotions", "learners promoted to voter by the autopilot"),
        ("removals", "unreachable members removed by the autopilot"),
        ("amnesia", "members that came back without their data and were re-added"),
        ("splits", "other clusters of the namespace detected"),
        ("absorbed", "times this node's cluster dissolved into another"),
    ];
    for (key, help) in counters {
        let name = format!("flotilla_formation_{key}_total");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (ns, f) in &statuses {
            let _ = writeln!(out, "{name}{{namespace=\"{ns}\"}} {}", f.counters.get(key).copied().unwrap_or(0));
        }
    }
    let _ = writeln!(out, "# HELP flotilla_formation_phase 1 for the namespace's current formation phase");
    let _ = writeln!(out, "# TYPE flotilla_formation_phase gauge");
    for (ns, f) in &statuses {
        let _ = writeln!(out, "flotilla_formation_phase{{namespace=\"{ns}\",phase=\"{}\"}} 1", f.phase.name());
    }
    let _ = writeln!(out, "# HELP flotilla_split_clusters other clusters of the namespace currently known");
    let _ = writeln!(out, "# TYPE flotilla_split_clusters gauge");
    for (ns, f) in &statuses {
        let _ = writeln!(out, "flotilla_split_clusters{{namespace=\"{ns}\"}} {}", f.splits.len());
    }
}

fn write_watch_metrics(node: &Arc<Node>, out: &mut String) {
    let (active, slow, compacted) = node.watch_counters().get();
    let _ = writeln!(out, "# HELP flotilla_watchers watches this node serves (at most {})", flotilla::MAX_WATCHERS);
    let _ = writeln!(out, "# TYPE flotilla_watchers gauge");
    let _ = writeln!(out, "flotilla_watchers {active}");
    let _ = writeln!(out, "# HELP flotilla_watches_cancelled_total watches ended by the server, by reason");
    let _ = writeln!(out, "# TYPE flotilla_watches_cancelled_total counter");
    let _ = writeln!(out, "flotilla_watches_cancelled_total{{reason=\"slow\"}} {slow}");
    let _ = writeln!(out, "flotilla_watches_cancelled_total{{reason=\"compacted\"}} {compacted}");
}

/// Change subscriptions of embedders (`Cluster::subscribe`), over every namespace.
fn write_subscription_metrics(node: &Arc<Node>, out: &mut String) {
    let counts = node.store().subscription_counts();
    let _ = writeln!(
        out,
        "# HELP flotilla_subscriptions change subscriptions on this node (at most {} per namespace)",
        flotilla::MAX_SUBSCRIBERS
    );
    let _ = writeln!(out, "# TYPE flotilla_subscriptions gauge");
    let _ = writeln!(out, "flotilla_subscriptions {}", counts.active);
    let _ = writeln!(
        out,
        "# HELP flotilla_subscriptions_fell_behind_total change subscriptions ended because entries were missed"
    );
    let _ = writeln!(out, "# TYPE flotilla_subscriptions_fell_behind_total counter");
    let _ = writeln!(out, "flotilla_subscriptions_fell_behind_total {}", counts.fell_behind);
}

fn write_store_metrics(node: &Arc<Node>, out: &mut String) {
    let m = node.store().metrics();
    write_histogram_us(
        out,
        "flotilla_fsync_seconds",
        "latency of store group commits (a durable one includes its fsync)",
        &m.commit_latency_us,
    );
    write_histogram_us(
        out,
        "flotilla_store_fsync_duration_seconds",
        "latency of durable store commits and flushes alone (each one fsync)",
        &m.fsync_latency_us,
    );
    let _ = writeln!(out, "# HELP flotilla_store_fsyncs_total durable store commits (fsyncs), flushes included");
    let _ = writeln!(out, "# TYPE flotilla_store_fsyncs_total counter");
    let _ = writeln!(out, "flotilla_store_fsyncs_total {}", m.fsyncs);
    let blocked = node.store().write_blocked().is_some();
    let _ = writeln!(
        out,
        "# HELP flotilla_store_write_blocked 1 while client writes are refused: disk full or failing, or free space below the reserve"
    );
    let _ = writeln!(out, "# TYPE flotilla_store_write_blocked gauge");
    let _ = writeln!(out, "flotilla_store_write_blocked {}", u8::from(blocked));
}

/// A histogram observed in microseconds, exposed in seconds.
fn write_histogram_us(out: &mut String, name: &str, help: &str, h: &flotilla_store::Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound_us, cumulative) in h.cumulative() {
        let le = match bound_us {
            Some(us) => format!("{}", us as f64 / 1e6),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum {}", h.sum as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", h.count);
}
