//! The nemesis: injects the faults of a scenario into a running lab and undoes them.
//!
//! Every random choice (which node, how long, which direction) comes from the scenario's seeded
//! generator. Choices relative to the leader ("kill the leader") ask the agents who leads at
//! that moment, so the same seed picks the same *role*, not necessarily the same host.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flotilla_check::Recorder;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::firewall::{Firewall, Rule};
use crate::{http, wait, Agent, Lab};

/// Longest wait for some agent to claim leadership before a leader-relative choice falls back
/// to a random host.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Client-side timeout of one status query of the nemesis.
const STATUS_TIMEOUT: Duration = Duration::from_millis(700);
/// Files of a data directory that survive a wipe: the node's identity (so it comes back as the
/// same member, without its log: an amnesiac), and the lab's own admin token and log.
const WIPE_KEEPS: [&str; 3] = ["node.key", "admin.token", "agent.log"];
/// Shortest fault round worth starting: below it the remaining fault phase is left idle.
const MIN_ROUND: Duration = Duration::from_secs(1);

/// What happened when, on the driver's clock (the recorder's), for the report.
#[derive(Debug)]
pub(crate) struct Timeline {
    clock: Recorder,
    scenario: &'static str,
    echo: bool,
    events: Mutex<Vec<(Duration, String)>>,
}

impl Timeline {
    /// A timeline on `clock`'s time; with `echo`, each event is also printed to stderr.
    pub(crate) fn new(clock: Recorder, scenario: &'static str, echo: bool) -> Timeline {
        Timeline { clock, scenario, echo, events: Mutex::new(Vec::new()) }
    }

    /// Record `event` now.
    pub(crate) fn note(&self, event: impl Into<String>) {
        let (at, event) = (self.clock.elapsed(), event.into());
        if self.echo {
            eprintln!("[chaos {} t={:>7.3}s] {event}", self.scenario, at.as_secs_f64());
        }
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push((at, event));
    }

    /// Every event so far.
    pub(crate) fn events(&self) -> Vec<(Duration, String)> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Faults on one lab: nft rules on its bridge, switch ports taken down, agents killed,
/// restarted and wiped. [`Nemesis::heal_all`] undoes all of it.
pub(crate) struct Nemesis<'a> {
    lab: &'a Lab,
    agents: &'a mut [Agent],
    ns: &'a str,
    rng: StdRng,
    firewall: Firewall,
    timeline: &'a Timeline,
    /// End of the fault phase.
    until: Instant,
    /// Hosts whose agent is killed.
    down: BTreeSet<usize>,
    /// Hosts whose switch port is down.
    cut_off: BTreeSet<usize>,
}

impl<'a> Nemesis<'a> {
    /// A nemesis for `agents` in `lab`, drawing from `rng`, with a fault phase of `phase`
    /// starting now.
    pub(crate) fn new(
        lab: &'a Lab,
        agents: &'a mut [Agent],
        ns: &'a str,
        rng: StdRng,
        timeline: &'a Timeline,
        phase: Duration,
    ) -> Nemesis<'a> {
        let firewall = Firewall::new(lab.switch_netns());
        Nemesis {
            lab,
            agents,
            ns,
            rng,
            firewall,
            timeline,
            until: Instant::now() + phase,
            down: BTreeSet::new(),
            cut_off: BTreeSet::new(),
        }
    }

    /// Number of hosts.
    pub(crate) fn nodes(&self) -> usize {
        self.agents.len()
    }

    /// The seeded generator.
    pub(crate) fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Record an event in the timeline.
    pub(crate) fn note(&self, event: impl Into<String>) {
        self.timeline.note(event);
    }

    /// Time left in the fault phase.
    pub(crate) fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// A duration drawn from `secs`, cut to what is left of the fault phase.
    pub(crate) fn draw(&mut self, secs: RangeInclusive<f64>) -> Duration {
        Duration::from_secs_f64(self.rng.gen_range(secs)).min(self.remaining())
    }

    /// Leave the faults as they are for `d`: this sleep *is* the fault (its length is part of
    /// the scenario), nothing waits on it.
    pub(crate) fn hold(&self, d: Duration) {
        std::thread::sleep(d);
    }

    /// Run `round` again and again while at least [`MIN_ROUND`] of the fault phase is left,
    /// with a quiet gap of 0.5-1.5 s (drawn) after each. `round` returns whether to go on.
    pub(crate) fn rounds(&mut self, mut round: impl FnMut(&mut Nemesis<'a>) -> Result<bool>) -> Result<()> {
        let mut n = 0;
        while self.remaining() >= MIN_ROUND {
            n += 1;
            self.note(format!("round {n}"));
            if !round(self)? {
                break;
            }
            let gap = self.draw(0.5..=1.5);
            self.hold(gap);
        }
        Ok(())
    }

    /// `k` distinct hosts drawn from `from`.
    pub(crate) fn sample(&mut self, from: &[usize], k: usize) -> Vec<usize> {
        let mut picked: Vec<usize> = from.choose_multiple(&mut self.rng, k.min(from.len())).copied().collect();
        picked.sort_unstable();
        picked
    }

    /// Every host not in `of`.
    pub(crate) fn others(&self, of: &[usize]) -> Vec<usize> {
        (0..self.nodes()).filter(|h| !of.contains(h)).collect()
    }

    /// The host that leads now: among the agents that answer, the one that says it leads with
    /// the highest term. Polls for up to [`LEADER_WAIT`].
    pub(crate) fn leader(&self) -> Option<usize> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            if let Some(h) = self.probe_leader() {
                return Some(h);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(wait::POLL_INTERVAL);
        }
    }

    /// The leader by [`Nemesis::leader`], or a random host (noted) if none is found.
    pub(crate) fn leader_or_random(&mut self) -> usize {
        match self.leader() {
            Some(h) => h,
            None => {
                let h = self.rng.gen_range(0..self.nodes());
                self.note(format!("no leader found within {LEADER_WAIT:?}; picking host {h} instead"));
                h
            }
        }
    }

    /// One round of status queries, in parallel.
    fn probe_leader(&self) -> Option<usize> {
        let bases: Vec<(usize, String)> =
            self.agents.iter().filter(|a| !self.down.contains(&a.host())).map(|a| (a.host(), a.http_base())).collect();
        let path = format!("/v1/ns/{}/status", self.ns);
        let claims: Vec<(u64, usize)> = std::thread::scope(|s| {
            let asks: Vec<_> = bases
                .iter()
                .map(|(h, base)| {
                    let path = &path;
                    s.spawn(move || {
                        let status = http::get_json(base, path, STATUS_TIMEOUT).ok()?;
                        (status["role"] == "leader").then(|| (status["term"].as_u64().unwrap_or(0), *h))
                    })
                })
                .collect();
            asks.into_iter().filter_map(|a| a.join().ok().flatten()).collect()
        });
        claims.into_iter().max().map(|(_, h)| h)
    }

    /// Cut `side` off from every other host (both directions).
    pub(crate) fn partition(&mut self, side: &[usize]) -> Result<()> {
        let rest = self.others(side);
        self.note(format!("partition {} | {}", hosts(side), hosts(&rest)));
        self.firewall.add(Rule::Drop { from: side.to_vec(), to: rest.clone(), ip_only: false })?;
        self.firewall.add(Rule::Drop { from: rest, to: side.to_vec(), ip_only: false })
    }

    /// Drop IPv4 packets from `from` to `to` only.
    pub(crate) fn one_way(&mut self, from: &[usize], to: &[usize]) -> Result<()> {
        self.note(format!("one-way loss: IP packets {} -> {} dropped", hosts(from), hosts(to)));
        self.firewall.add(Rule::Drop { from: from.to_vec(), to: to.to_vec(), ip_only: true })
    }

    /// Drop `percent` % of the frames between hosts, at random.
    pub(crate) fn loss(&mut self, percent: u32) -> Result<()> {
        self.note(format!("random loss: {percent}% of the frames between hosts dropped"));
        let all: Vec<usize> = (0..self.nodes()).collect();
        self.firewall.add(Rule::Loss { hosts: all, percent })
    }

    /// Remove every nft rule.
    pub(crate) fn heal_net(&mut self) -> Result<()> {
        if !self.firewall.rules().is_empty() {
            self.note("heal: nft rules removed");
        }
        self.firewall.clear()
    }

    /// Take `host`'s switch port down: it reaches nothing, the driver included.
    pub(crate) fn link_down(&mut self, host: usize) -> Result<()> {
        self.note(format!("link of h{host} down"));
        self.lab.isolate(host)?;
        self.cut_off.insert(host);
        Ok(())
    }

    /// Bring `host`'s switch port back up.
    pub(crate) fn link_up(&mut self, host: usize) -> Result<()> {
        self.note(format!("link of h{host} up"));
        self.lab.heal(host)?;
        self.cut_off.remove(&host);
        Ok(())
    }

    /// `kill -9` the agent of `host`.
    pub(crate) fn kill(&mut self, host: usize) -> Result<()> {
        self.note(format!("kill -9 h{host}"));
        self.agents[host].kill9()?;
        self.down.insert(host);
        Ok(())
    }

    /// Start the agent of `host` again on its data directory, with its previous arguments.
    pub(crate) fn restart(&mut self, host: usize) -> Result<()> {
        self.note(format!("restart h{host}"));
        let args = self.agents[host].args().to_vec();
        self.agents[host].restart(&args)?;
        self.down.remove(&host);
        Ok(())
    }

    /// Delete the data directory of the (killed) agent of `host`, all but its identity: it comes
    /// back as the same node without its log and vote.
    pub(crate) fn wipe(&mut self, host: usize) -> Result<()> {
        anyhow::ensure!(self.down.contains(&host), "wiping h{host}, whose agent runs");
        self.note(format!("wipe the data of h{host} (keeping node.key)"));
        let dir = self.agents[host].data_dir().to_path_buf();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if WIPE_KEEPS.iter().any(|k| entry.file_name() == *k) {
                continue;
            }
            let path = entry.path();
            let removed =
                if entry.file_type()?.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }

    /// Wait up to `within` until every agent is in one cluster of all hosts, all voters (a
    /// bounded wait for recovery, not a fixed sleep). Returns whether it happened.
    pub(crate) fn converged(&self, within: Duration) -> bool {
        let n = self.nodes();
        let started = Instant::now();
        let ok = wait::wait_cluster(self.agents.iter(), self.ns, "all voters in one cluster", within, |v| {
            anyhow::ensure!(v.members.len() == n && v.voters() == n, "members {:?}", v.members);
            Ok(())
        })
        .is_ok();
        self.note(if ok {
            format!("one cluster of {n} voters after {:.1}s", started.elapsed().as_secs_f64())
        } else {
            format!("not one cluster of {n} voters within {within:?}")
        });
        ok
    }

    /// The sum over the running agents of the formation counter `name` (`amnesia`, `joins`,
    /// ...) of the namespace. Counters live in memory, so a restart resets that agent's.
    pub(crate) fn formation_counter(&self, name: &str) -> u64 {
        let path = format!("/v1/ns/{}/status", self.ns);
        self.agents
            .iter()
            .filter(|a| !self.down.contains(&a.host()))
            .filter_map(|a| http::get_json(&a.http_base(), &path, STATUS_TIMEOUT).ok())
            .map(|s| s["formation"]["counters"][name].as_u64().unwrap_or(0))
            .sum()
    }

    /// Undo every fault: remove the nft rules, bring every port up, restart every killed agent.
    /// Tries everything even if one step fails; returns the first error.
    pub(crate) fn heal_all(&mut self) -> Result<()> {
        let mut first_error = self.heal_net().err();
        for host in self.cut_off.clone() {
            if let Err(e) = self.link_up(host) {
                first_error.get_or_insert(e);
            }
        }
        for host in self.down.clone() {
            if let Err(e) = self.restart(host) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `{h0,h3}`.
fn hosts(set: &[usize]) -> String {
    let names: Vec<String> = set.iter().map(|h| format!("h{h}")).collect();
    format!("{{{}}}", names.join(","))
}
