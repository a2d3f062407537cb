//! The founding decision of one fresh node, free of I/O so it can be explored exhaustively.
//!
//! A node without Raft state is in one [`FreshPhase`]: free, bound to a coordinator's
//! ballot, coordinating a ballot of its own, or founded. The rules:
//!
//! - A free node that sees a formed cluster joins it instead of founding anything.
//! - A free node that sees coordinators promises itself to the best one (most promises, then
//!   lowest id). The promise is persisted *before* it is sent, and kept until the coordinator
//!   answers that the ballot is released.
//! - A free node that sees no coordinator and has the lowest id among the free nodes it sees
//!   starts coordinating a new ballot (a round number it never reuses).
//! - A coordinator founds once it holds enough promises (`--expect N`: N nodes including
//!   itself; otherwise the discovery window has passed and every fresh node in sight has
//!   promised, or a grace period has passed). The founding set is itself plus its promisers;
//!   the decision is persisted before Raft is initialized, and a founded ballot is never
//!   released.
//! - A coordinator that sees a better coordinator or a formed cluster, and has not founded,
//!   abandons its ballot: every promise to it is released.
//! - A node whose identity was ever admitted to the namespace ([`Founder::rejoin_only`]: it
//!   lost its store but kept its key) is [`FreshPhase::Rejoining`]: it never promises,
//!   coordinates or founds, whatever it sees or however long it waits; it only joins. Its
//!   peers do not wait for it either (it is not free, and no coordinator waits for its promise).
//!
//! Safety: a node is bound to at most one ballot at a time and leaves it only when released,
//! and a founded ballot is never released; so every node belongs to at most one founded set,
//! and founding sets are pairwise disjoint. With `--expect N` a founding set has at least N
//! nodes, so fewer than 2N fresh nodes can never found two clusters. An identity that was
//! admitted once is in no later founding set. The exhaustive explorer in
//! `tests/formation_model.rs` checks this over every interleaving of small systems.

use std::collections::BTreeSet;
use std::fmt::Debug;

use flotilla_core::formation::{Ballot, FreshPhase, PromiseState};

/// What a fresh node sees of the world at one tick.
#[derive(Debug, Clone)]
pub struct Observation<Id> {
    /// Fresh peers that answered recently, with the phase they reported.
    pub fresh_peers: Vec<(Id, FreshPhase<Id>)>,
    /// A member of a formed cluster with a leader, through which this node can join.
    pub cluster_contact: Option<Id>,
    /// Without `--expect`: the discovery window has passed.
    pub window_elapsed: bool,
    /// Without `--expect`: the grace period after the window has passed, so a coordinator
    /// founds with the promises it holds even if some fresh peers never promised.
    pub grace_elapsed: bool,
}

/// What the node should do after a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<Id> {
    /// Nothing to do but wait; the reason is shown in status.
    Wait(String),
    /// Persist the binding to `ballot`, then send it a promise.
    Promise(Ballot<Id>),
    /// Ask the coordinator of `ballot` what became of it.
    AskStatus(Ballot<Id>),
    /// Persist the decision, then found the cluster with these voters and learners.
    Found {
        /// The founding ballot (this node coordinates it).
        ballot: Ballot<Id>,
        /// Founding voters, this node included.
        voters: BTreeSet<Id>,
        /// Promisers beyond the voter target, added as learners.
        learners: BTreeSet<Id>,
    },
    /// Join the formed cluster through this member.
    Join(Id),
}

/// The founding state machine of one node.
#[derive(Debug, Clone)]
pub struct Founder<Id> {
    me: Id,
    expect: Option<usize>,
    voter_target: usize,
    phase: FreshPhase<Id>,
    promisers: BTreeSet<Id>,
    founding_set: BTreeSet<Id>,
    founding_voters: BTreeSet<Id>,
}

impl<Id: Ord + Copy + Debug> Founder<Id> {
    /// A node starting from `phase` (free, or a persisted binding or decision).
    pub fn new(me: Id, expect: Option<usize>, voter_target: usize, phase: FreshPhase<Id>) -> Self {
        Self {
            me,
            expect,
            voter_target: voter_target.max(1),
            phase,
            promisers: BTreeSet::new(),
            founding_set: BTreeSet::new(),
            founding_voters: BTreeSet::new(),
        }
    }

    /// The phase this node reports to others (and persists when bound or founded).
    pub fn phase(&self) -> FreshPhase<Id> {
        match &self.phase {
            FreshPhase::Coordinating { round, .. } => {
                FreshPhase::Coordinating { round: *round, promisers: self.promisers.len() as u32 }
            }
            other => other.clone(),
        }
    }

    /// The same node, known to have been admitted to the namespace before (its identity says
    /// so) while it has no Raft state: it only ever joins. Binding or founding records it may
    /// still have are void: the store they were made for is gone, and founding again would
    /// make a second cluster.
    pub fn rejoin_only(mut self) -> Self {
        self.phase = FreshPhase::Rejoining;
        self.promisers.clear();
        self.founding_set.clear();
        self.founding_voters.clear();
        self
    }

    /// This node's id, `--expect` and voter target.
    pub fn identity(&self) -> (Id, Option<usize>, usize) {
        (self.me, self.expect, self.voter_target)
    }

    /// The founding decision, when this node made one: its ballot and founding voters.
    pub fn founding(&self) -> Option<(Ballot<Id>, BTreeSet<Id>)> {
        match self.phase {
            FreshPhase::Founded(b) if b.coordinator == self.me => Some((b, self.founding_voters.clone())),
            _ => None,
        }
    }

    /// Promises held while coordinating.
    #[cfg(any(test, feature = "internals"))]
    pub fn promisers(&self) -> &BTreeSet<Id> {
        &self.promisers
    }

    /// Decide what to do now. `fresh_round` is a round number never used before, taken if
    /// this node starts coordinating.
    pub fn tick(&mut self, obs: &Observation<Id>, fresh_round: u64) -> Step<Id> {
        match self.phase.clone() {
            FreshPhase::Founded(ballot) => Step::Wait(format!("founded ballot {:?}", ballot)),
            FreshPhase::Bound(ballot) => Step::AskStatus(ballot),
            FreshPhase::Coordinating { round, .. } => self.tick_coordinating(obs, round),
            FreshPhase::Free => self.tick_free(obs, fresh_round),
            FreshPhase::Rejoining => match obs.cluster_contact {
                Some(contact) => Step::Join(contact),
                None => Step::Wait("lost its data: waiting for a member of its cluster to rejoin".into()),
            },
        }
    }

    fn tick_free(&mut self, obs: &Observation<Id>, fresh_round: u64) -> Step<Id> {
        if let Some(contact) = obs.cluster_contact {
            return Step::Join(contact);
        }
        if let Some((coordinator, round)) = self.best_coordinator(obs) {
            let ballot = Ballot { coordinator, round };
            self.phase = FreshPhase::Bound(ballot);
            return Step::Promise(ballot);
        }
        let lowest_free = obs
            .fresh_peers
            .iter()
            .filter(|(_, p)| matches!(p, FreshPhase::Free))
            .map(|(id, _)| *id)
            .chain(std::iter::once(self.me))
            .min()
            .unwrap_or(self.me);
        if lowest_free != self.me {
            return Step::Wait(format!("waiting for {lowest_free:?} (lowest free id in sight) to coordinate"));
        }
        self.phase = FreshPhase::Coordinating { round: fresh_round, promisers: 0 };
        self.promisers.clear();
        self.tick_coordinating(obs, fresh_round)
    }

    fn tick_coordinating(&mut self, obs: &Observation<Id>, round: u64) -> Step<Id> {
        if let Some(contact) = obs.cluster_contact {
            self.abandon();
            return Step::Join(contact);
        }
        if let Some((better, _)) = self.best_coordinator(obs) {
            if self.ranks_above_me(obs, better) {
                self.abandon();
                return Step::Wait(format!("yielding to coordinator {better:?}"));
            }
        }
        let have = self.promisers.len() + 1;
        let ready = match self.expect {
            Some(n) => have >= n,
            None => obs.grace_elapsed || (obs.window_elapsed && self.all_in_sight_promised(obs)),
        };
        if !ready {
            return Step::Wait(match self.expect {
                Some(n) => format!("waiting for {n} founders, have {have}"),
                None => format!("{have} founders so far, discovery window open"),
            });
        }
        let ballot = Ballot { coordinator: self.me, round };
        let mut all: BTreeSet<Id> = self.promisers.clone();
        all.insert(self.me);
        // The coordinator always votes; the lowest other ids fill the remaining voter slots.
        let mut voters = BTreeSet::from([self.me]);
        voters.extend(all.iter().filter(|id| **id != self.me).take(self.voter_target - 1).copied());
        let learners: BTreeSet<Id> = all.difference(&voters).copied().collect();
        self.phase = FreshPhase::Founded(ballot);
        self.founding_set = all;
        self.founding_voters = voters.clone();
        Step::Found { ballot, voters, learners }
    }

    /// The coordinator in sight this node would promise to: most promises, then lowest id.
    fn best_coordinator(&self, obs: &Observation<Id>) -> Option<(Id, u64)> {
        obs.fresh_peers
            .iter()
            .filter_map(|(id, p)| match p {
                FreshPhase::Coordinating { round, promisers } => Some((*id, *round, *promisers)),
                _ => None,
            })
            .max_by(|a, b| a.2.cmp(&b.2).then(b.0.cmp(&a.0)))
            .map(|(id, round, _)| (id, round))
    }

    /// Whether coordinator `other` beats this node's own ballot.
    fn ranks_above_me(&self, obs: &Observation<Id>, other: Id) -> bool {
        let theirs = obs
            .fresh_peers
            .iter()
            .find_map(|(id, p)| match p {
                FreshPhase::Coordinating { promisers, .. } if *id == other => Some(*promisers as usize),
                _ => None,
            })
            .unwrap_or(0);
        let mine = self.promisers.len();
        theirs > mine || (theirs == mine && other < self.me)
    }

    /// Every fresh node in sight that could promise has promised (a rejoining node never will).
    fn all_in_sight_promised(&self, obs: &Observation<Id>) -> bool {
        obs.fresh_peers.iter().filter(|(_, p)| *p != FreshPhase::Rejoining).all(|(id, _)| self.promisers.contains(id))
    }

    fn abandon(&mut self) {
        self.phase = FreshPhase::Free;
        self.promisers.clear();
    }

    /// A promise from `from` for `ballot` arrived: count it if `ballot` is the one being
    /// collected. Returns whether it was counted.
    pub fn on_promise(&mut self, from: Id, ballot: Ballot<Id>) -> bool {
        match self.phase {
            FreshPhase::Coordinating { round, .. } if ballot.coordinator == self.me && ballot.round == round => {
                self.promisers.insert(from);
                true
            }
            _ => false,
        }
    }

    /// What became of `ballot`, as far as its coordinator (this node) knows, for promiser
    /// `from`.
    pub fn status_for(&self, from: Id, ballot: Ballot<Id>) -> PromiseState {
        match &self.phase {
            FreshPhase::Founded(b) if *b == ballot && self.founding_set.contains(&from) => {
                PromiseState::Founded { voter: self.founding_voters.contains(&from) }
            }
            // Never part of the founding set: its promise arrived after the decision.
            FreshPhase::Founded(b) if *b == ballot => PromiseState::Released,
            FreshPhase::Coordinating { round, .. }
                if ballot.coordinator == self.me && ballot.round == *round && self.promisers.contains(&from) =>
            {
                PromiseState::Pending
            }
            _ => PromiseState::Released,
        }
    }

    /// Answer `from`'s question about `ballot`. The question proves `from` is bound to
    /// `ballot` (a node asks only about the ballot it persisted), so it is counted as a promise
    /// first: its own `Promise` may still be in flight, and if it were answered `Released` now
    /// and that promise counted later, the coordinator would found with a node that is free.
    /// The exhaustive explorer found that interleaving (`tests/formation_model.rs`).
    pub fn answer_status(&mut self, from: Id, ballot: Ballot<Id>) -> PromiseState {
        self.on_promise(from, ballot);
        self.status_for(from, ballot)
    }

    /// The coordinator answered about the ballot this node is bound to.
    pub fn on_status(&mut self, ballot: Ballot<Id>, state: PromiseState) {
        if self.phase != FreshPhase::Bound(ballot) {
            return;
        }
        match state {
            PromiseState::Pending | PromiseState::Founded { .. } => {}
            PromiseState::Released => self.phase = FreshPhase::Free,
        }
    }

    /// The coordinator refused the promise (the ballot was no longer being collected).
    pub fn on_promise_refused(&mut self, ballot: Ballot<Id>) {
        if self.phase == FreshPhase::Bound(ballot) {
            self.phase = FreshPhase::Free;
        }
    }

    /// Undo a founding decision that could not be persisted: the ballot is void, so its
    /// promisers are released when they ask.
    pub fn revert_found(&mut self) {
        if matches!(self.phase, FreshPhase::Founded(_)) {
            self.phase = FreshPhase::Free;
            self.promisers.clear();
            self.founding_set.clear();
            self.founding_voters.clear();
        }
    }

    /// Restore a decision that was persisted with its founding set.
    pub fn restore_founded(&mut self, ballot: Ballot<Id>, voters: BTreeSet<Id>, all: BTreeSet<Id>) {
        self.phase = FreshPhase::Founded(ballot);
        self.founding_voters = voters;
        self.founding_set = all;
    }
}
