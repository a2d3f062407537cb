//! The named fault scenarios.
//!
//! Each scenario repeats fault rounds for the length of the fault phase (see
//! [`Nemesis::rounds`]): a round injects its fault, holds it for a drawn time (2-4 s unless
//! said otherwise), undoes it, and a quiet gap of 0.5-1.5 s follows. A 10 s phase gives two or
//! three rounds, a 60 s soak about fifteen.

use std::time::Duration;

use anyhow::Result;
use rand::Rng;

use super::nemesis::Nemesis;

/// Bound of the in-phase wait for an amnesiac to be a voter again before the next wipe.
const AMNESIA_RECOVERY: Duration = Duration::from_secs(30);

/// A named fault scenario: how many agents, and what the nemesis does to them.
#[derive(Clone, Copy)]
pub struct Scenario {
    name: &'static str,
    nodes: usize,
    summary: &'static str,
    network: bool,
    plan: fn(&mut Nemesis<'_>) -> Result<()>,
}

impl Scenario {
    /// The scenario's name (`--scenario NAME`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Number of agents (and hosts) it runs.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// One line on what it does.
    pub fn summary(&self) -> &'static str {
        self.summary
    }

    /// Whether it injects network faults with nftables (see [`super::nft_unavailable`]).
    pub fn needs_nft(&self) -> bool {
        self.network
    }

    pub(crate) fn run_plan(&self, nemesis: &mut Nemesis<'_>) -> Result<()> {
        (self.plan)(nemesis)
    }
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario").field("name", &self.name).field("nodes", &self.nodes).finish()
    }
}

/// Every scenario, in the order `--scenario all` runs them.
pub fn scenarios() -> &'static [Scenario] {
    const ALL: &[Scenario] = &[
        Scenario {
            name: "minority-partition",
            nodes: 5,
            summary: "1-2 followers cut off from the other three (both directions)",
            network: true,
            plan: minority_partition,
        },
        Scenario {
            name: "majority-partition",
            nodes: 5,
            summary: "the leader and one follower cut off from the other three: the majority elects a new leader",
            network: true,
            plan: majority_partition,
        },
        Scenario {
            name: "partitioned-leader",
            nodes: 3,
            summary: "the leader cut off from both followers; clients still reach it",
            network: true,
            plan: partitioned_leader,
        },
        Scenario {
            name: "one-way-loss",
            nodes: 3,
            summary: "IP packets dropped in one direction only: leader -> followers, followers -> leader, or one pair",
            network: true,
            plan: one_way_loss,
        },
        Scenario {
            name: "random-loss",
            nodes: 3,
            summary: "10-35% of the frames between hosts dropped at random (nft numgen)",
            network: true,
            plan: random_loss,
        },
        Scenario {
            name: "flapping-link",
            nodes: 3,
            summary: "one host's switch port goes down and up every 0.2-1.2 s (the leader half the time)",
            network: false,
            plan: flapping_link,
        },
        Scenario {
            name: "kill-leader",
            nodes: 3,
            summary: "kill -9 the leader, restart it on its data directory 0.5-3 s later",
            network: false,
            plan: kill_leader,
        },
        Scenario {
            name: "kill-followers",
            nodes: 5,
            summary: "kill -9 one or two followers, restart them 1-4 s later",
            network: false,
            plan: kill_followers,
        },
        Scenario {
            name: "reboot",
            nodes: 3,
            summary: "kill -9 and restart at once on the same data directory: one host, or all of them (power cut)",
            network: false,
            plan: reboot,
        },
        Scenario {
            name: "amnesia",
            nodes: 3,
            summary: "kill -9 a host, delete its data but not its identity, restart it: it must rejoin as an amnesiac",
            network: false,
            plan: amnesia,
        },
        Scenario {
            name: "partition-kill-leader",
            nodes: 5,
            summary: "two followers cut off, then the leader killed (no quorum anywhere), restarted, healed",
            network: true,
            plan: partition_kill_leader,
        },
        Scenario {
            name: "loss-reboot",
            nodes: 3,
            summary: "10-25% random loss while a random host is killed and restarted",
            network: true,
            plan: loss_reboot,
        },
    ];
    ALL
}

/// The scenario called `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    scenarios().iter().find(|s| s.name == name)
}

/// Names of the smoke set: the scenarios the CI test runs, about 15-20 s each with a 10 s fault
/// phase on a loaded 2-core machine.
pub const SMOKE: &[&str] = &["majority-partition", "one-way-loss", "kill-leader", "amnesia", "partition-kill-leader"];

/// The scenarios of [`SMOKE`].
pub fn smoke_scenarios() -> Vec<&'static Scenario> {
    SMOKE.iter().map(|name| scenario(name).expect("smoke scenarios exist")).collect()
}

/// A fault held for 2-4 s (drawn), cut to the fault phase.
fn fault_length(nem: &mut Nemesis<'_>) -> Duration {
    nem.draw(2.0..=4.0)
}

fn minority_partition(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let leader = nem.leader_or_random();
        let followers = nem.others(&[leader]);
        let most = (nem.nodes() - 1) / 2;
        let size = nem.rng().gen_range(1..=most);
        let minority = nem.sample(&followers, size);
        nem.partition(&minority)?;
        let d = fault_length(nem);
        nem.hold(d);
        nem.heal_net()?;
        Ok(true)
    })
}

fn majority_partition(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let leader = nem.leader_or_random();
        let followers = nem.others(&[leader]);
        let companions = nem.sample(&followers, (nem.nodes() - 1) / 2 - 1);
        let mut minority = vec![leader];
        minority.extend(companions);
        minority.sort_unstable();
        nem.partition(&minority)?;
        let d = fault_length(nem);
        nem.hold(d);
        nem.heal_net()?;
        Ok(true)
    })
}

fn partitioned_leader(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let leader = nem.leader_or_random();
        nem.partition(&[leader])?;
        let d = fault_length(nem);
        nem.hold(d);
        nem.heal_net()?;
        Ok(true)
    })
}

fn one_way_loss(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let leader = nem.leader_or_random();
        let followers = nem.others(&[leader]);
        match nem.rng().gen_range(0..3) {
            0 => nem.one_way(&[leader], &followers)?,
            1 => nem.one_way(&followers, &[leader])?,
            _ => {
                let all: Vec<usize> = (0..nem.nodes()).collect();
                let pair = nem.sample(&all, 2);
                let (from, to) = if nem.rng().gen_bool(0.5) { (pair[0], pair[1]) } else { (pair[1], pair[0]) };
                nem.one_way(&[from], &[to])?
            }
        }
        let d = fault_length(nem);
        nem.hold(d);
        nem.heal_net()?;
        Ok(true)
    })
}

fn random_loss(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let percent = nem.rng().gen_range(10..=35);
        nem.loss(percent)?;
        let d = fault_length(nem);
        nem.hold(d);
        nem.heal_net()?;
        Ok(true)
    })
}

fn flapping_link(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let target = if nem.rng().gen_bool(0.5) {
            nem.leader_or_random()
        } else {
            let n = nem.nodes();
            nem.rng().gen_range(0..n)
        };
        let round = fault_length(nem);
        let end = std::time::Instant::now() + round;
        while std::time::Instant::now() < end {
            nem.link_down(target)?;
            let down = nem.draw(0.2..=1.2);
            nem.hold(down);
            nem.link_up(target)?;
            let up = nem.draw(0.2..=1.2);
            nem.hold(up);
        }
        Ok(true)
    })
}

fn kill_leader(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let leader = nem.leader_or_random();
        nem.kill(leader)?;
        let d = nem.draw(0.5..=3.0);
        nem.hold(d);
        nem.restart(leader)?;
        Ok(true)
    })
}

fn kill_followers(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let leader = nem.leader_or_random();
        let followers = nem.others(&[leader]);
        let most = (nem.nodes() - 1) / 2;
        let k = nem.rng().gen_range(1..=most);
        let victims = nem.sample(&followers, k);
        for &v in &victims {
            nem.kill(v)?;
        }
        let d = nem.draw(1.0..=4.0);
        nem.hold(d);
        for &v in &victims {
            nem.restart(v)?;
        }
        Ok(true)
    })
}

fn reboot(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let victims: Vec<usize> = if nem.rng().gen_bool(1.0 / 3.0) {
            nem.note("power cut: every host");
            (0..nem.nodes()).collect()
        } else {
            let n = nem.nodes();
            vec![nem.rng().gen_range(0..n)]
        };
        for &v in &victims {
            nem.kill(v)?;
        }
        for &v in &victims {
            nem.restart(v)?;
        }
        Ok(true)
    })
}

fn amnesia(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let victim = if nem.rng().gen_bool(1.0 / 3.0) {
            nem.leader_or_random()
        } else {
            let leader = nem.leader_or_random();
            let followers = nem.others(&[leader]);
            nem.sample(&followers, 1)[0]
        };
        nem.kill(victim)?;
        nem.wipe(victim)?;
        nem.restart(victim)?;
        // Losing a second disk before the first amnesiac is a voter with a full log again would
        // be two lost replicas out of three, beyond what Raft (or anything) survives: wait,
        // bounded, for the cluster to be whole before the next round.
        let whole = nem.converged(AMNESIA_RECOVERY);
        let detected = nem.formation_counter("amnesia");
        nem.note(format!("amnesia removals counted by the running agents: {detected}"));
        Ok(whole)
    })
}

fn partition_kill_leader(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let leader = nem.leader_or_random();
        let followers = nem.others(&[leader]);
        let cut = nem.sample(&followers, (nem.nodes() - 1) / 2);
        nem.partition(&cut)?;
        let d = nem.draw(1.0..=2.0);
        nem.hold(d);
        nem.kill(leader)?;
        // No side has a quorum now: the cut followers are too few, the rest lost its leader.
        let d = nem.draw(1.0..=3.0);
        nem.hold(d);
        nem.restart(leader)?;
        let d = nem.draw(1.0..=2.0);
        nem.hold(d);
        nem.heal_net()?;
        Ok(true)
    })
}

fn loss_reboot(nem: &mut Nemesis<'_>) -> Result<()> {
    nem.rounds(|nem| {
        let percent = nem.rng().gen_range(10..=25);
        nem.loss(percent)?;
        let d = nem.draw(0.5..=1.5);
        nem.hold(d);
        let n = nem.nodes();
        let victim = nem.rng().gen_range(0..n);
        nem.kill(victim)?;
        nem.restart(victim)?;
        let d = nem.draw(1.0..=3.0);
        nem.hold(d);
        nem.heal_net()?;
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_smoke_set_exists() {
        let mut names: Vec<&str> = scenarios().iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), scenarios().len());
        assert_eq!(smoke_scenarios().len(), SMOKE.len());
        assert!(scenarios().iter().all(|s| s.nodes() == 3 || s.nodes() == 5));
    }
}
