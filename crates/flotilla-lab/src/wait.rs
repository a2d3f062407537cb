//! Polling with explicit deadlines: wait for a condition instead of sleeping.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::Agent;

/// Interval between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Call `attempt` every `interval` until it returns `Ok`, for at most `within`. On timeout the
/// error names `what` and carries the last attempt's error.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    interval: Duration,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let started = Instant::now();
    let deadline = started + within;
    loop {
        let error = match attempt() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(anyhow!("timed out after {:?} waiting for {what}; last attempt: {error:#}", started.elapsed()));
        }
        std::thread::sleep(interval);
    }
}

/// One cluster as every agent of a set sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The leader every agent reports.
    pub leader: String,
    /// Index (in the agents passed in) of the leader, if it is one of them.
    pub leader_index: Option<usize>,
    /// The members every agent reports: node id to role (`voter` or `learner`).
    pub members: BTreeMap<String, String>,
    /// Each agent's node id, in the order the agents were passed in.
    pub node_ids: Vec<String>,
    /// The highest term reported.
    pub term: u64,
}

impl ClusterView {
    /// Number of voters.
    pub fn voters(&self) -> usize {
        self.members.values().filter(|r| *r == "voter").count()
    }

    /// Number of learners.
    pub fn learners(&self) -> usize {
        self.members.values().filter(|r| *r == "learner").count()
    }
}

/// Query every agent's status of `ns` once and check they form one cluster: the same leader
/// (known to all), the same member set, containing every agent, and no membership change
/// under way anywhere. `Err` says what differs.
pub fn observe_cluster<'a>(agents: impl IntoIterator<Item = &'a Agent>, ns: &str) -> Result<ClusterView> {
    let agents: Vec<&Agent> = agents.into_iter().collect();
    anyhow::ensure!(!agents.is_empty(), "no agents to observe");
    let mut statuses = Vec::with_capacity(agents.len());
    for a in &agents {
        let s = a.status(ns).map_err(|e| anyhow!("host {} ({}): {e:#}", a.host(), a.ip()))?;
        statuses.push(s);
    }
    let leader_of = |s: &Value| s["leader"].as_str().map(str::to_string);
    let Some(leader) = leader_of(&statuses[0]) else {
        return Err(anyhow!("host {} knows no leader", agents[0].host()));
    };
    let members = |s: &Value| -> BTreeMap<String, String> {
        s["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|x| {
                        Some((x["id"].as_str()?.to_string(), x["role"].as_str().unwrap_or("?").to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let first_members = members(&statuses[0]);
    let mut node_ids = Vec::with_capacity(agents.len());
    let mut leader_index = None;
    let mut term = 0;
    for (i, (a, s)) in agents.iter().zip(&statuses).enumerate() {
        let id = s["node_id"].as_str().unwrap_or("").to_string();
        term = term.max(s["term"].as_u64().unwrap_or(0));
        match leader_of(s) {
            Some(l) if l == leader => {}
            other => {
                return Err(anyhow!("host {} sees leader {other:?}, host {} sees {leader}", a.host(), agents[0].host()))
            }
        }
        let m = members(s);
        if m.keys().ne(first_members.keys()) {
            return Err(anyhow!(
                "host {} has members {:?}, host {} has {:?}",
                a.host(),
                m.keys().collect::<Vec<_>>(),
                agents[0].host(),
                first_members.keys().collect::<Vec<_>>()
            ));
        }
        if !m.contains_key(&id) {
            return Err(anyhow!("host {} ({id}) is not a member", a.host()));
        }
        if s["membership_changing"].as_bool() != Some(false) {
            return Err(anyhow!("host {}: membership change under way", a.host()));
        }
        if id == leader {
            if s["role"] != "leader" {
                return Err(anyhow!(
                    "host {} is the leader by everyone's account but says it is {}",
                    a.host(),
                    s["role"]
                ));
            }
            leader_index = Some(i);
        }
        node_ids.push(id);
    }
    let mut seen = node_ids.clone();
    seen.sort();
    seen.dedup();
    anyhow::ensure!(seen.len() == node_ids.len(), "two agents report the same node id: {node_ids:?}");
    // Roles may differ for a moment while a promotion commits; report the leader's view.
    let members = leader_index.map(|i| members(&statuses[i])).unwrap_or(first_members);
    Ok(ClusterView { leader, leader_index, members, node_ids, term })
}

/// Wait up to `within` until the agents form one cluster of exactly `expected_members`
/// members (voters and learners), by [`observe_cluster`]. The error carries the last reason and
/// every agent's status.
pub fn wait_one_cluster<'a>(
    agents: impl IntoIterator<Item = &'a Agent>,
    ns: &str,
    expected_members: usize,
    within: Duration,
) -> Result<ClusterView> {
    wait_cluster(agents, ns, &format!("one cluster of {expected_members} members"), within, |view| {
        anyhow::ensure!(
            view.members.len() == expected_members,
            "{} members, expected {expected_members}",
            view.members.len()
        );
        Ok(())
    })
}

/// Wait up to `within` until the agents form one cluster (by [`observe_cluster`]) that also
/// passes `check`, e.g. a number of voters. `what` names the condition in the error, which also
/// carries the last reason and every agent's status.
pub fn wait_cluster<'a>(
    agents: impl IntoIterator<Item = &'a Agent>,
    ns: &str,
    what: &str,
    within: Duration,
    mut check: impl FnMut(&ClusterView) -> Result<()>,
) -> Result<ClusterView> {
    let agents: Vec<&Agent> = agents.into_iter().collect();
    let outcome = wait_for(what, within, POLL_INTERVAL, || {
        let view = observe_cluster(agents.iter().copied(), ns)?;
        check(&view)?;
        Ok(view)
    });
    outcome.map_err(|e| anyhow!("{e:#}\n{}", summary(agents.iter().copied(), ns)))
}

/// One line per agent with its view of `ns` (or the error reaching it), for failure messages.
pub fn summary<'a>(agents: impl IntoIterator<Item = &'a Agent>, ns: &str) -> String {
    let mut out = String::new();
    for a in agents {
        let line = match a.status(ns) {
            Ok(s) => format!(
                "node {} role {} leader {} term {} members {} changing {}",
                s["node_id"].as_str().unwrap_or("?"),
                s["role"],
                s["leader"],
                s["term"],
                s["members"]
                    .as_array()
                    .map(|m| m
                        .iter()
                        .map(|x| format!(
                            "{}:{}",
                            short(x["id"].as_str().unwrap_or("?")),
                            x["role"].as_str().unwrap_or("?")
                        ))
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default(),
                s["membership_changing"]
            ),
            Err(e) => format!("unreachable: {e:#}"),
        };
        out.push_str(&format!("  host {} ({}): {line}\n", a.host(), a.ip()));
    }
    out
}

/// The last 6 characters of a PeerId, enough to tell nodes apart in a log line.
fn short(id: &str) -> &str {
    &id[id.len().saturating_sub(6)..]
}
