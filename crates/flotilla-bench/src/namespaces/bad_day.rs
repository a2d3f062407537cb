//! Bad days at scale (issue 12, points 5 and 6), measured after the `kill -9` failover:
//! restart the killed node and time until it has caught up on every namespace; then SIGTERM
//! the node that leads the most namespaces and time its exit, count its leadership hand-offs
//! (from its log) and time until the namespaces it led accept writes again.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::{progress, Agents, CountReport};

/// Longest wait for the restarted node to catch up, and for a SIGTERMed node to exit.
const PATIENCE: Duration = Duration::from_secs(180);
/// How often the restarted node's status is polled.
const POLL: Duration = Duration::from_millis(250);

/// The restart of the node killed by the failover measurement.
#[derive(Debug, Default, Serialize)]
pub struct Restart {
    /// Seconds from the spawn until `/v1/status` listed every namespace.
    pub serving_s: Option<f64>,
    /// Seconds from the spawn until, in every namespace, its applied index reached the commit
    /// index the namespace's leader had when the node was restarted.
    pub caught_up_s: Option<f64>,
    /// Namespaces still behind when the patience ran out.
    pub behind: usize,
    /// Namespaces whose term on the other nodes rose while it caught up (elections the
    /// restart caused).
    pub elections: usize,
    /// Namespaces it led once caught up.
    pub leads_after: usize,
}

/// SIGTERM of the node leading the most namespaces.
#[derive(Debug, Default, Serialize)]
pub struct Sigterm {
    /// Namespaces it led.
    pub led: usize,
    /// From SIGTERM until the process had exited, ms (`None`: not within the patience).
    pub exit_ms: Option<f64>,
    /// Its exit code (`None`: killed by a signal, or did not exit).
    pub exit_code: Option<i32>,
    /// From its log ("leadership hand-offs done"): moved, had no target, unfinished.
    pub handed_off: Option<(usize, usize, usize)>,
    /// Per namespace it led, the time from SIGTERM until a write through another node was
    /// acknowledged: median and max, ms.
    pub writes_again_ms: Option<(f64, f64)>,
    /// Namespaces that accepted no write within the patience.
    pub never: usize,
}

/// What one node says of one namespace in `/v1/status`.
#[derive(Debug, Clone, Default)]
struct NsState {
    role: String,
    term: u64,
    commit: u64,
    applied: u64,
}

/// Per namespace, what node `i` reports (`None` if it does not answer).
async fn states(agents: &Agents, i: usize) -> Option<BTreeMap<String, NsState>> {
    let s = agents.client(i).get_json("/v1/status").await.ok()?;
    let list = s["namespaces"].as_array()?;
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    Some(
        list.iter()
            .filter_map(|n| {
                let applied = u(&n["applied_index"]);
                // Agents before the commit index was listed: a leader's applied index.
                let commit = n["commit_index"].as_u64().unwrap_or(applied);
                let role = n["role"].as_str().unwrap_or_default().to_string();
                Some((n["namespace"].as_str()?.to_string(), NsState { role, term: u(&n["term"]), commit, applied }))
            })
            .collect(),
    )
}

/// Per namespace, the leader's state among the nodes `among` (the highest commit index
/// reported, should no node lead it).
async fn leader_states(agents: &Agents, among: &[usize]) -> BTreeMap<String, NsState> {
    let mut out: BTreeMap<String, NsState> = BTreeMap::new();
    for &i in among {
        for (ns, s) in states(agents, i).await.unwrap_or_default() {
            let e = out.entry(ns).or_default();
            if s.role == "leader" || (e.role != "leader" && s.commit > e.commit) {
                *e = s;
            }
        }
    }
    out
}

/// Both measurements, after the failover killed `victim`; results go into `report`.
pub(super) async fn run(agents: &mut Agents, victim: usize, report: &mut CountReport) -> anyhow::Result<()> {
    report.restart = Some(restart(agents, victim).await?);
    report.sigterm = Some(sigterm(agents, report.count).await?);
    Ok(())
}

async fn restart(agents: &mut Agents, victim: usize) -> anyhow::Result<Restart> {
    let others: Vec<usize> = (0..agents.procs.len()).filter(|i| *i != victim).collect();
    let before = leader_states(agents, &others).await;
    let started = Instant::now();
    agents.respawn(victim)?;
    let mut r = Restart { behind: before.len(), ..Default::default() };
    while started.elapsed() < PATIENCE {
        if let Some(p) = agents.procs[victim].as_mut() {
            p.check_running()?;
        }
        if let Some(now) = states(agents, victim).await {
            if now.len() >= before.len() && r.serving_s.is_none() {
                r.serving_s = Some(started.elapsed().as_secs_f64());
            }
            r.behind = before.iter().filter(|(ns, l)| now.get(*ns).is_none_or(|s| s.applied < l.commit)).count();
            if r.behind == 0 {
                r.caught_up_s = Some(started.elapsed().as_secs_f64());
                r.leads_after = now.values().filter(|s| s.role == "leader").count();
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let after = leader_states(agents, &others).await;
    r.elections = before.iter().filter(|(ns, l)| after.get(*ns).is_some_and(|a| a.term > l.term)).count();
    progress(format!("restart of node {}: {r:?}", victim + 1));
    Ok(r)
}

async fn sigterm(agents: &mut Agents, count: usize) -> anyhow::Result<Sigterm> {
    // Leaders may still move after the restart (elections, balancing): wait until every node
    // agrees on one per namespace, within bounds.
    let settle = Instant::now();
    let mut agreed = agents.agreed().await;
    while settle.elapsed() < Duration::from_secs(60) && agreed.len() < count {
        tokio::time::sleep(POLL).await;
        agreed = agents.agreed().await;
    }
    let victim = (0..agents.procs.len())
        .max_by_key(|&i| agreed.values().filter(|l| agents.ids.get(i) == Some(*l)).count())
        .context("no node")?;
    let led: Vec<String> =
        agreed.iter().filter(|(_, l)| agents.ids.get(victim) == Some(*l)).map(|(ns, _)| ns.clone()).collect();
    let survivors: Vec<flotilla_http::Client> = (0..agents.procs.len())
        .filter(|&i| i != victim)
        .map(|i| flotilla_http::Client::new(&agents.http[i], Duration::from_millis(500)))
        .collect();
    let mut proc = agents.procs[victim].take().context("victim not running")?;
    let signalled = proc.terminate()?;
    let writes = tokio::spawn(super::writes_again(led.clone(), survivors, signalled, PATIENCE));
    let mut s = Sigterm { led: led.len(), ..Default::default() };
    while signalled.elapsed() < PATIENCE {
        if let Some(status) = proc.try_exit()? {
            s.exit_ms = Some(signalled.elapsed().as_secs_f64() * 1e3);
            s.exit_code = status.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (times, never) = writes.await?;
    s.writes_again_ms = times.get(times.len() / 2).copied().zip(times.last().copied());
    s.never = never;
    s.handed_off = hand_offs(proc.log_path());
    progress(format!("SIGTERM of node {}: {s:?}", victim + 1));
    drop(proc);
    Ok(s)
}

/// Moved, no target, unfinished: from the last "leadership hand-offs done" line of a log.
fn hand_offs(log: &Path) -> Option<(usize, usize, usize)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = strip_ansi(text.lines().rev().find(|l| l.contains("leadership hand-offs done"))?);
    progress(format!("its log: {line}"));
    let field = |name: &str| -> Option<usize> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((field("moved")?, field("no_target")?, field("unfinished")?))
}

/// `line` without terminal colour sequences (`ESC [ ... m`), which the agent writes to its log.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The bad-day table (rows of counts that measured it).
pub(super) fn markdown(reports: &[CountReport]) -> String {
    let mut s = String::from(
        "\n| namespaces | restart: serving / caught up (s) | behind | elections caused | led after | \
         SIGTERM: led | exit ms (code) | moved / no target / unfinished | writes again median / max ms (never) | load |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let t = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
    for r in reports {
        let (Some(re), Some(st)) = (&r.restart, &r.sigterm) else { continue };
        let code = st.exit_code.map_or("signal".into(), |c| c.to_string());
        let exit = st.exit_ms.map_or("did not exit".into(), |ms| format!("{ms:.0} ({code})"));
        let hand = st.handed_off.map_or("-".into(), |(a, b, c)| format!("{a} / {b} / {c}"));
        let again = st.writes_again_ms.map_or("-".into(), |(m, x)| format!("{m:.0} / {x:.0} ({})", st.never));
        s += &format!(
            "| {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} -> {} |\n",
            r.count,
            t(re.serving_s),
            t(re.caught_up_s),
            re.behind,
            re.elections,
            re.leads_after,
            st.led,
            exit,
            hand,
            again,
            r.loadavg.0,
            r.loadavg.1
        );
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours_and_reads_fields() {
        let line = "\u{1b}[2m2026\u{1b}[0m INFO led\u{1b}[2m=\u{1b}[0m12 moved\u{1b}[2m=\u{1b}[0m10";
        assert_eq!(super::strip_ansi(line), "2026 INFO led=12 moved=10");
    }
}
