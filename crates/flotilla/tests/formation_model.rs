//! Model checking of the founding state machine ([`flotilla::formation::founding::Founder`]).
//!
//! # The model
//!
//! `K` fresh nodes with ids `0..K`, each running a `Founder<u8>` exactly as the driver
//! (`src/formation/driver.rs`) runs it, over a static *visibility graph* (who can see and talk
//! to whom: a full mesh, a path `0-1-2`, ...). A state holds, per node:
//!
//! - its `Founder` (encoded by its reported phase and its promisers);
//! - the *history* of every phase it ever reported: another node may observe any of them, so
//!   stale views are part of the model;
//! - whether it is a *member* (it founded, learned from its coordinator that it is a founder,
//!   or joined a formed cluster; members stop ticking and can be a cluster contact) and whether
//!   it *joined* an existing cluster through a contact;
//! - its *call*: the driver awaits each formation call within the tick, so a node has at most one
//!   call outstanding, whose request is on its way to the coordinator;
//! - how many ballots it has coordinated (its k-th ballot has round k, so state stays finite);
//! - the founding it committed (ballot, voters, founding set), which is what it persisted.
//!
//! plus the *orphaned promises*: `Promise` requests whose caller gave up waiting (timeout or
//! crash) but which the network may still deliver to the coordinator, where they are counted.
//! (An orphaned `PromiseStatus` request has no effect, since `status_for` only reads, so it is
//! dropped at once.)
//!
//! The actions of a state are:
//!
//! - **tick** a node that is not a member and awaits no reply, with *any* observation it could
//!   have made: every subset of the peers it sees, each with any phase that peer ever had;
//!   any combination of `window_elapsed`/`grace_elapsed` when `expect` is `None`; a
//!   `cluster_contact` only among visible members. The step is executed as the driver does:
//!   `Promise(b)` persists the binding and sends `Promise(b)` to `b.coordinator`; `AskStatus(b)`
//!   sends `PromiseStatus(b)`; `Found` persists the decision and makes the node a member (or the
//!   persist fails and `revert_found` runs: both outcomes are explored); `Join(c)` joins (or
//!   fails to and the node stays as the tick left it);
//! - **deliver** the request of an outstanding call to the coordinator, which answers with
//!   `on_promise` (`Promised(bool)`) or `status_for` (`Status(..)`), and the reply is applied
//!   or lost: `Promised(false)` runs `on_promise_refused`, `Status(Released)` runs `on_status`,
//!   `Status(Founded{..})` makes the node a member (founding voter, or learner that joins). The
//!   caller is bound and waits, frozen, for the reply, so applying the reply together with the
//!   delivery loses no behaviour (see [`Call`]);
//! - **time out** an outstanding call (the request or reply was lost or is late): the node
//!   stays as it is (a bound node stays bound), an undelivered `Promise` becomes orphaned;
//! - **deliver** or **lose** an orphaned promise;
//! - **crash-restart** a node (a bounded number of times per run): it comes back with what it
//!   persisted only, a binding (`Founder::new(.., FreshPhase::Bound(b))`) or a founding decision
//!   (`restore_founded`); a coordinator comes back free without promisers; its outstanding
//!   `Promise` request, if any, becomes orphaned;
//! - **amnesia** of a member (a bounded number of times per run): it loses its store and its
//!   founding record but keeps its key, which remembers that the identity was admitted
//!   (`node.key`, see `src/formation/ledger.rs`); it comes back fresh as
//!   `Founder::new(..).rejoin_only()`, no longer a member, and may see no member at all (the
//!   rest of its cluster is down).
//!
//! Two networks are modelled. [`Net::Fifo`]: requests from one node to another are processed
//! in the order they were sent (each may be lost). [`Net::Reorder`]: a late request may be
//! processed after a later one from the same node (the inbound side serves each request in a
//! task of its own, so a slow `Promise` can be overtaken by the `PromiseStatus` sent after its
//! caller timed out).
//!
//! # Finding: reordered requests (fixed)
//!
//! Over [`Net::Reorder`], with `PromiseStatus` answered by `status_for` alone (the first
//! version, kept as [`Serve::ReadOnlyStatus`]), the invariants do not hold: node 1 promises to
//! coordinator 0, times out, asks for the status; the status query overtakes the promise and
//! is answered `Released` (1 is not a promiser yet); 1 is free, then the late promise is
//! counted and 0 founds with 1 in its set (invariant 4) while 1 is free to found or join
//! elsewhere, up to two clusters `{0, 2}` and `{1, 2}` from three nodes with `--expect 2`.
//! The coordinator now answers with `Founder::answer_status` ([`Serve::AsDriver`]): the sender
//! of `PromiseStatus(b)` is bound to `b`, so it is counted before the answer, and every
//! invariant holds over [`Net::Reorder`] too. `reordered_requests_break_a_read_only_status_query`
//! keeps the old behaviour as proof that the explorer catches it.
//!
//! # Invariants, checked in every reachable state
//!
//! 1. *Disjoint founding sets*: the founding sets (voters ∪ learners of every committed
//!    `Step::Found`) are pairwise disjoint: no node is a founder of two clusters.
//! 2. *One cluster under `--expect N`*: with `expect = Some(n)` and `K < 2n`, at most one
//!    founding ever happens.
//! 3. *Quorum of founders*: with `expect = Some(n)`, every founding set has at least `n` nodes.
//! 4. *Founders are bound*: every member of a founding set other than its coordinator is
//!    bound to that ballot, at the moment of founding and ever after (it promised, its promise
//!    was counted, and it was never released).
//! 5. *Joiners are not founders*: a node that joined a formed cluster through a contact is in
//!    no founding set.
//! 6. *An admitted identity never founds again*: a node that lost its store after being a
//!    member is in no founding set decided after that (issue 11: it would be a second cluster
//!    of the namespace). [`Mutation::ForgetAdmission`] restarts it free instead, as the first
//!    version did, and `amnesia_without_the_identity_record_founds_a_second_cluster` shows the
//!    explorer finds the second cluster.
//!
//! Invariants 4 and 5 speak of a node's founding and binding; a node that lost its store lost
//! those, so they are checked for the others only. A founding whose coordinator lost its store
//! is left out of invariants 1, 4 and 5: its decision is gone, so its promisers that have not
//! heard of it yet are released (they hold no Raft state of that cluster, so nothing of it is
//! lost with them; what the cluster committed lives on its members with state, and the
//! coordinator rejoins them). The explorer found this case; it is not a second founding of
//! any identity (invariant 6).
//!
//! # Bounds
//!
//! Each node coordinates at most `max_rounds` ballots and all nodes together at most
//! `round_budget` (a tick that would start one more is not taken), at most `crashes`
//! crash-restarts happen per run (a crash that loses nothing is not taken), a node has at most
//! `max_orphans` orphaned promises in flight (a timeout that would orphan one more is not
//! taken), and failed persists of a founding decision are explored only where
//! `persist_failures` is set. Each test states its bounds. Within those bounds the search is complete: breadth-first over every interleaving,
//! with a visited set keyed by a canonical encoding of the state.
//!
//! To keep the product of observations small, a peer's phases are grouped where the tick
//! cannot tell them apart: for a free node, `Bound(_)` and `Founded(_)` peers only count as
//! "fresh, neither free nor coordinating"; for a coordinating node, only a peer's promise count
//! matters if it coordinates, and any other fresh phase only counts as "in sight". A bound node's
//! tick does not look at the observation, and a cluster contact is checked before anything else.
//! With `expect = Some(_)` the window flags are ignored by the tick and left false.
//!
//! Beyond the exhaustive sizes, seeded random runs (5 to 9 nodes, random visibility graphs,
//! loss, crashes, stale views, long runs) check the same invariants, and a fair schedule on a
//! full mesh checks that founding happens at all.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Instant;

use flotilla::formation::founding::{Founder, Observation, Step};
use flotilla_core::formation::{Ballot, FreshPhase, PromiseState};

type Id = u8;
type B = Ballot<Id>;

/// How the network orders requests from one node to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    /// In the order sent (each may be lost).
    Fifo,
    /// In any order.
    Reorder,
}

/// A deliberate bug in the *model*, to check that the explorer notices broken protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    /// The model as the driver runs it.
    None,
    /// A bound node whose call times out forgets its promise (as if it unbound on timeout).
    UnbindOnTimeout,
    /// A member that lost its store comes back free, as if its identity had never been
    /// admitted (the behaviour before issue 11).
    ForgetAdmission,
}

/// How a coordinator serves `PromiseStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serve {
    /// As `serve.rs` does: `answer_status`, which counts the asker as a promiser (it is bound
    /// to the ballot) before answering.
    AsDriver,
    /// The first version: `status_for` only. Broken under reordering; kept to show that the
    /// explorer finds it.
    ReadOnlyStatus,
}

/// The system explored.
#[derive(Clone, Debug)]
struct Model {
    name: String,
    k: usize,
    expect: Option<usize>,
    voter_target: usize,
    /// `sees[a]` has bit `b` set when `a` and `b` can see and talk to each other.
    sees: Vec<u16>,
    net: Net,
    serve: Serve,
    max_rounds: u64,
    /// Ballots coordinated by all nodes together.
    round_budget: u64,
    /// Whether persisting a founding decision may fail (and `revert_found` run).
    persist_failures: bool,
    crashes: u8,
    /// Members that may lose their store, in all.
    amnesia: u8,
    max_orphans: usize,
    mutation: Mutation,
}

impl Model {
    fn new(name: &str, k: usize, expect: Option<usize>, sees: Vec<u16>) -> Self {
        Self {
            name: name.to_string(),
            k,
            expect,
            voter_target: 3,
            sees,
            net: Net::Fifo,
            serve: Serve::AsDriver,
            max_rounds: 2,
            round_budget: u64::MAX,
            persist_failures: true,
            crashes: 1,
            amnesia: 0,
            max_orphans: 1,
            mutation: Mutation::None,
        }
    }

    fn visible(&self, a: usize, b: usize) -> bool {
        a != b && self.sees[a] & (1 << b) != 0
    }
}

fn full_mesh(k: usize) -> Vec<u16> {
    (0..k).map(|a| ((1u16 << k) - 1) & !(1 << a)).collect()
}

fn graph(k: usize, edges: &[(usize, usize)]) -> Vec<u16> {
    let mut sees = vec![0u16; k];
    for &(a, b) in edges {
        sees[a] |= 1 << b;
        sees[b] |= 1 << a;
    }
    sees
}

/// A path `0 - 1 - ... - k-1`.
fn path(k: usize) -> Vec<u16> {
    let edges: Vec<(usize, usize)> = (1..k).map(|i| (i - 1, i)).collect();
    graph(k, &edges)
}

/// A node's outstanding formation call: its request on its way to the coordinator. The reply
/// is applied when the request is delivered, or lost: the caller is bound and frozen while it
/// waits (it neither ticks nor counts promises, and answers status queries `Released` in any
/// phase but founded or coordinating), so a reply applied later is the same as one applied at
/// once, with peers still able to observe the caller's earlier phase as a stale view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Idle,
    /// `Promise(b)` on its way to `b.coordinator`.
    Promise(B),
    /// `PromiseStatus(b)` on its way to `b.coordinator`.
    Ask(B),
}

#[derive(Clone, Debug)]
struct Node {
    f: Founder<Id>,
    member: bool,
    joined: bool,
    rounds: u64,
    /// Every phase it reported, sorted by encoding; shared until it grows.
    history: Rc<Vec<([u8; 3], FreshPhase<Id>)>>,
    call: Call,
    /// The committed founding: ballot, voters, founding set.
    founded: Option<(B, BTreeSet<Id>, BTreeSet<Id>)>,
}

#[derive(Clone, Debug)]
struct World {
    nodes: Vec<Node>,
    /// Orphaned promises `(from, ballot)`, in the order sent; they go to `ballot.coordinator`.
    orphans: Vec<(Id, B)>,
    crashes_left: u8,
    amnesia_left: u8,
    /// Nodes that lost their store after being members.
    amnesiac: u16,
    /// Amnesiac nodes that were put in a founding set after they lost their store.
    refounded: u16,
}

/// A coordinator's answer to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Promised(bool),
    Status(PromiseState),
}

/// How a state was reached from its parent.
#[derive(Clone, Debug)]
enum Label {
    Tick { node: Id, obs: Observation<Id>, step: Step<Id>, outcome: &'static str },
    Deliver { node: Id, call: Call, reply: Reply, reply_lost: bool },
    Timeout { node: Id, call: Call },
    OrphanDelivered { from: Id, ballot: B },
    OrphanLost { from: Id, ballot: B },
    Crash { node: Id },
    Amnesia { node: Id },
}

fn enc_ballot(b: &B, out: &mut Vec<u8>) {
    out.push(b.coordinator);
    out.push(b.round as u8);
}

fn code(p: &FreshPhase<Id>) -> [u8; 3] {
    match p {
        FreshPhase::Free => [0, 0, 0],
        FreshPhase::Bound(b) => [1, b.coordinator, b.round as u8],
        FreshPhase::Coordinating { round, promisers } => [2, *round as u8, *promisers as u8],
        FreshPhase::Founded(b) => [3, b.coordinator, b.round as u8],
        FreshPhase::Rejoining => [4, 0, 0],
    }
}

fn enc_phase(p: &FreshPhase<Id>, out: &mut Vec<u8>) {
    out.extend(code(p));
}

fn mask(s: &BTreeSet<Id>) -> u16 {
    s.iter().fold(0, |m, i| m | 1 << i)
}

fn enc_founder(f: &Founder<Id>, out: &mut Vec<u8>) {
    enc_phase(&f.phase(), out);
    out.extend(mask(f.promisers()).to_le_bytes());
}

fn enc_step(s: &Step<Id>, out: &mut Vec<u8>) {
    match s {
        Step::Wait(_) => out.push(0),
        Step::Promise(b) => {
            out.push(1);
            enc_ballot(b, out);
        }
        Step::AskStatus(b) => {
            out.push(2);
            enc_ballot(b, out);
        }
        Step::Found { ballot, voters, learners } => {
            out.push(3);
            enc_ballot(ballot, out);
            out.extend(mask(voters).to_le_bytes());
            out.extend(mask(learners).to_le_bytes());
        }
        Step::Join(c) => out.extend([4, *c]),
    }
}

fn enc_call(c: &Call, out: &mut Vec<u8>) {
    match c {
        Call::Idle => out.push(0),
        Call::Promise(b) => {
            out.push(1);
            enc_ballot(b, out);
        }
        Call::Ask(b) => {
            out.push(2);
            enc_ballot(b, out);
        }
    }
}

/// Successful tick results for one node, with the first observation that produced each.
type Outcomes = Rc<Vec<(Founder<Id>, Step<Id>, bool, Observation<Id>)>>;

impl World {
    fn new(m: &Model) -> Self {
        let nodes = (0..m.k)
            .map(|i| Node {
                f: Founder::new(i as Id, m.expect, m.voter_target, FreshPhase::Free),
                member: false,
                joined: false,
                rounds: 0,
                history: Rc::new(vec![(code(&FreshPhase::Free), FreshPhase::Free)]),
                call: Call::Idle,
                founded: None,
            })
            .collect();
        Self { nodes, orphans: Vec::new(), crashes_left: m.crashes, amnesia_left: m.amnesia, amnesiac: 0, refounded: 0 }
    }

    /// Record node `i`'s current phase in its history.
    fn note(&mut self, i: usize) {
        let p = self.nodes[i].f.phase();
        let c = code(&p);
        if let Err(at) = self.nodes[i].history.binary_search_by_key(&c, |(c, _)| *c) {
            Rc::make_mut(&mut self.nodes[i].history).insert(at, (c, p));
        }
    }

    fn key(&self, m: &Model) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for n in &self.nodes {
            enc_founder(&n.f, &mut out);
            out.extend([n.member as u8, n.joined as u8, n.rounds as u8]);
            enc_call(&n.call, &mut out);
            match &n.founded {
                Some((b, v, all)) => {
                    out.push(1);
                    enc_ballot(b, &mut out);
                    out.extend(mask(v).to_le_bytes());
                    out.extend(mask(all).to_le_bytes());
                }
                None => out.push(0),
            }
            out.push(n.history.len() as u8);
            n.history.iter().for_each(|(c, _)| out.extend(c));
        }
        let mut orphans: Vec<[u8; 3]> = self.orphans.iter().map(|(x, b)| [*x, b.coordinator, b.round as u8]).collect();
        match m.net {
            // Only the order within one channel (sender, coordinator) matters.
            Net::Fifo => orphans.sort_by_key(|o| (o[0], o[1])),
            // A multiset; delivering a promise twice counts it once, so a set.
            Net::Reorder => {
                orphans.sort_unstable();
                orphans.dedup();
            }
        }
        out.push(orphans.len() as u8);
        orphans.iter().for_each(|o| out.extend(o));
        out.push(self.crashes_left);
        out.push(self.amnesia_left);
        out.extend(self.amnesiac.to_le_bytes());
        out.extend(self.refounded.to_le_bytes());
        out
    }

    fn orphans_from(&self, i: usize) -> usize {
        self.orphans.iter().filter(|(x, _)| *x as usize == i).count()
    }

    /// Carry out the step of node `i`'s tick, as the driver does. `f` is the founder after the
    /// tick; `used` says whether the tick took the fresh round.
    fn after_tick(
        &self,
        m: &Model,
        i: usize,
        f: &Founder<Id>,
        step: &Step<Id>,
        used: bool,
        obs: &Observation<Id>,
    ) -> Vec<(World, Label)> {
        let total: u64 = self.nodes.iter().map(|n| n.rounds).sum();
        if used && (self.nodes[i].rounds >= m.max_rounds || total >= m.round_budget) {
            return Vec::new();
        }
        let mut w = self.clone();
        w.nodes[i].f = f.clone();
        if used {
            w.nodes[i].rounds += 1;
        }
        let label = |outcome| Label::Tick { node: i as Id, obs: obs.clone(), step: step.clone(), outcome };
        let mut out = Vec::new();
        match step {
            Step::Wait(_) => {
                w.note(i);
                out.push((w, label("wait")));
            }
            Step::Promise(b) => {
                w.nodes[i].call = Call::Promise(*b);
                w.note(i);
                out.push((w, label("promise sent")));
            }
            Step::AskStatus(b) => {
                w.nodes[i].call = Call::Ask(*b);
                w.note(i);
                out.push((w, label("status asked")));
            }
            Step::Found { ballot, voters, learners } => {
                let mut reverted = w.clone();
                reverted.nodes[i].f.revert_found();
                reverted.note(i);
                let all: BTreeSet<Id> = voters.union(learners).copied().collect();
                w.refounded |= mask(&all) & w.amnesiac;
                w.nodes[i].founded = Some((*ballot, voters.clone(), all));
                w.nodes[i].member = true;
                w.note(i);
                out.push((w, label("founded")));
                if m.persist_failures {
                    out.push((reverted, label("decision not persisted; reverted")));
                }
            }
            Step::Join(_) => {
                let mut failed = w.clone();
                failed.note(i);
                w.nodes[i].member = true;
                w.nodes[i].joined = true;
                w.note(i);
                out.push((w, label("joined")));
                out.push((failed, label("join failed")));
            }
        }
        out
    }

    /// Tick node `i` with `obs`.
    fn tick(&self, m: &Model, i: usize, obs: &Observation<Id>) -> Vec<(World, Label)> {
        let (f, step, used) = run_tick(&self.nodes[i], i, obs);
        self.after_tick(m, i, &f, &step, used, obs)
    }

    /// Every distinct result of ticking node `i` with any observation it could have made.
    fn tick_outcomes(&self, m: &Model, i: usize, memo: &mut HashMap<Vec<u8>, Outcomes>) -> Outcomes {
        let me = &self.nodes[i];
        let phase = me.f.phase();
        if matches!(phase, FreshPhase::Bound(_) | FreshPhase::Founded(_)) {
            let obs =
                Observation { fresh_peers: vec![], cluster_contact: None, window_elapsed: false, grace_elapsed: false };
            let (f, step, used) = run_tick(me, i, &obs);
            return Rc::new(vec![(f, step, used, obs)]);
        }
        let coordinating = matches!(phase, FreshPhase::Coordinating { .. });
        let mut key = vec![i as u8, me.rounds as u8];
        enc_founder(&me.f, &mut key);
        let mut peers: Vec<(Id, Vec<Option<FreshPhase<Id>>>)> = Vec::new();
        let mut contacts = Vec::new();
        for j in (0..m.k).filter(|j| m.visible(i, *j)) {
            let peer = &self.nodes[j];
            if peer.member {
                contacts.push(j as Id);
            }
            let mut classes: Vec<(u8, u64, u32)> = Vec::new();
            let mut opts = vec![None];
            for (_, p) in peer.history.iter() {
                let class = match (coordinating, p) {
                    (true, FreshPhase::Coordinating { promisers, .. }) => (2, 0, *promisers),
                    // A coordinator does not wait for a rejoining node's promise.
                    (true, FreshPhase::Rejoining) => (3, 0, 0),
                    (true, _) => (1, 0, 0),
                    (false, FreshPhase::Free) => (0, 0, 0),
                    (false, FreshPhase::Coordinating { round, promisers }) => (2, *round, *promisers),
                    (false, _) => (1, 0, 0),
                };
                if !classes.contains(&class) {
                    classes.push(class);
                    opts.push(Some(p.clone()));
                }
            }
            key.push(j as u8);
            for p in opts.iter().flatten() {
                enc_phase(p, &mut key);
            }
            key.push(0xff);
            peers.push((j as Id, opts));
        }
        key.push(0xfe);
        key.extend(&contacts);
        if let Some(hit) = memo.get(&key) {
            return hit.clone();
        }
        let flags: &[(bool, bool)] =
            if m.expect.is_some() { &[(false, false)] } else { &[(false, false), (true, false), (true, true)] };
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut outcomes = Vec::new();
        let mut consider = |obs: Observation<Id>| {
            let (f, step, used) = run_tick(me, i, &obs);
            let mut k = Vec::new();
            enc_founder(&f, &mut k);
            enc_step(&step, &mut k);
            k.push(used as u8);
            if !seen.contains(&k) {
                seen.push(k);
                outcomes.push((f, step, used, obs));
            }
        };
        for c in &contacts {
            consider(Observation {
                fresh_peers: vec![],
                cluster_contact: Some(*c),
                window_elapsed: false,
                grace_elapsed: false,
            });
        }
        // An odometer over each peer's options.
        let mut digits = vec![0usize; peers.len()];
        loop {
            let fresh_peers: Vec<(Id, FreshPhase<Id>)> =
                peers.iter().zip(&digits).filter_map(|((j, opts), d)| opts[*d].clone().map(|p| (*j, p))).collect();
            for &(window_elapsed, grace_elapsed) in flags {
                consider(Observation {
                    fresh_peers: fresh_peers.clone(),
                    cluster_contact: None,
                    window_elapsed,
                    grace_elapsed,
                });
            }
            let mut pos = 0;
            while pos < digits.len() {
                digits[pos] += 1;
                if digits[pos] < peers[pos].1.len() {
                    break;
                }
                digits[pos] = 0;
                pos += 1;
            }
            if pos == digits.len() {
                break;
            }
        }
        let outcomes = Rc::new(outcomes);
        memo.insert(key, outcomes.clone());
        outcomes
    }

    /// Deliver node `i`'s outstanding request to its coordinator, which answers; the reply
    /// is applied, or lost when losing it makes a difference.
    fn deliver(&self, m: &Model, i: usize) -> Vec<(World, Label)> {
        let call = self.nodes[i].call;
        let (Call::Promise(b) | Call::Ask(b)) = call else { return Vec::new() };
        let c = b.coordinator as usize;
        assert!(m.visible(i, c), "{i} calls {c}, which it cannot see");
        if m.net == Net::Fifo && self.orphans.iter().any(|(x, ob)| *x as usize == i && ob.coordinator == b.coordinator)
        {
            return Vec::new();
        }
        let mut w = self.clone();
        w.nodes[i].call = Call::Idle;
        let reply = match call {
            Call::Promise(_) => Reply::Promised(w.nodes[c].f.on_promise(i as Id, b)),
            _ => Reply::Status(match m.serve {
                Serve::AsDriver => w.nodes[c].f.answer_status(i as Id, b),
                Serve::ReadOnlyStatus => w.nodes[c].f.status_for(i as Id, b),
            }),
        };
        w.note(c);
        let mut out = Vec::new();
        if !matches!(reply, Reply::Promised(true) | Reply::Status(PromiseState::Pending)) {
            out.push((w.clone(), Label::Deliver { node: i as Id, call, reply, reply_lost: true }));
        }
        match reply {
            Reply::Promised(true) => {}
            Reply::Promised(false) => w.nodes[i].f.on_promise_refused(b),
            Reply::Status(state) => {
                w.nodes[i].f.on_status(b, state);
                if matches!(state, PromiseState::Founded { .. }) {
                    w.nodes[i].member = true;
                }
            }
        }
        w.note(i);
        out.push((w, Label::Deliver { node: i as Id, call, reply, reply_lost: false }));
        out
    }

    /// Node `i` gives up waiting for its call.
    fn timeout(&self, m: &Model, i: usize) -> Option<(World, Label)> {
        let call = self.nodes[i].call;
        let mut w = self.clone();
        match call {
            Call::Idle => return None,
            Call::Promise(b) => {
                if self.orphans_from(i) >= m.max_orphans {
                    return None;
                }
                w.orphans.push((i as Id, b));
            }
            _ => {}
        }
        if m.mutation == Mutation::UnbindOnTimeout {
            if let Call::Promise(b) | Call::Ask(b) = call {
                w.nodes[i].f.on_promise_refused(b);
            }
        }
        w.nodes[i].call = Call::Idle;
        w.note(i);
        Some((w, Label::Timeout { node: i as Id, call }))
    }

    /// Whether orphan `k` may be delivered now.
    fn orphan_deliverable(&self, m: &Model, k: usize) -> bool {
        let (x, b) = self.orphans[k];
        m.net == Net::Reorder || !self.orphans[..k].iter().any(|(y, ob)| *y == x && ob.coordinator == b.coordinator)
    }

    fn deliver_orphan(&self, k: usize) -> (World, Label) {
        let mut w = self.clone();
        let (x, b) = w.orphans.remove(k);
        w.nodes[b.coordinator as usize].f.on_promise(x, b);
        w.note(b.coordinator as usize);
        (w, Label::OrphanDelivered { from: x, ballot: b })
    }

    fn lose_orphan(&self, k: usize) -> (World, Label) {
        let mut w = self.clone();
        let (x, b) = w.orphans.remove(k);
        (w, Label::OrphanLost { from: x, ballot: b })
    }

    /// Node `i` crashes and restarts with what it persisted.
    fn crash(&self, m: &Model, i: usize) -> Option<(World, Label)> {
        if self.crashes_left == 0 {
            return None;
        }
        let mut w = self.clone();
        w.crashes_left -= 1;
        let n = &mut w.nodes[i];
        let me = i as Id;
        n.f = match n.f.phase() {
            FreshPhase::Bound(b) => Founder::new(me, m.expect, m.voter_target, FreshPhase::Bound(b)),
            FreshPhase::Founded(_) => {
                let (b, voters, all) = n.founded.clone().expect("a founded node persisted its decision");
                let mut f = Founder::new(me, m.expect, m.voter_target, FreshPhase::Free);
                f.restore_founded(b, voters, all);
                f
            }
            FreshPhase::Free | FreshPhase::Coordinating { .. } => {
                Founder::new(me, m.expect, m.voter_target, FreshPhase::Free)
            }
            // The key remembers the admission.
            FreshPhase::Rejoining => Founder::new(me, m.expect, m.voter_target, FreshPhase::Free).rejoin_only(),
        };
        let mut before = Vec::new();
        enc_founder(&self.nodes[i].f, &mut before);
        let mut after = Vec::new();
        enc_founder(&n.f, &mut after);
        if before == after && n.call == Call::Idle {
            // Nothing volatile to lose: the same state with less crash budget.
            return None;
        }
        if let Call::Promise(b) = n.call {
            w.orphans.push((me, b));
        }
        w.nodes[i].call = Call::Idle;
        w.note(i);
        Some((w, Label::Crash { node: me }))
    }

    /// Member `i` loses its store and founding record, keeps its key, and restarts.
    fn amnesia(&self, m: &Model, i: usize) -> Option<(World, Label)> {
        if self.amnesia_left == 0 || !self.nodes[i].member {
            return None;
        }
        let mut w = self.clone();
        w.amnesia_left -= 1;
        w.amnesiac |= 1 << i;
        let me = i as Id;
        let free = Founder::new(me, m.expect, m.voter_target, FreshPhase::Free);
        let n = &mut w.nodes[i];
        n.f = if m.mutation == Mutation::ForgetAdmission { free } else { free.rejoin_only() };
        n.member = false;
        n.joined = false;
        n.call = Call::Idle;
        w.note(i);
        Some((w, Label::Amnesia { node: me }))
    }

    /// Every successor state.
    fn successors(&self, m: &Model, memo: &mut HashMap<Vec<u8>, Outcomes>) -> Vec<(World, Label)> {
        let mut out = Vec::new();
        for i in 0..m.k {
            let n = &self.nodes[i];
            if !n.member && n.call == Call::Idle {
                for (f, step, used, obs) in self.tick_outcomes(m, i, memo).iter() {
                    out.extend(self.after_tick(m, i, f, step, *used, obs));
                }
            }
            out.extend(self.deliver(m, i));
            // A timed-out status query leaves the state as it was before the tick that asked.
            if !matches!(n.call, Call::Ask(_)) {
                out.extend(self.timeout(m, i));
            }
            out.extend(self.crash(m, i));
            out.extend(self.amnesia(m, i));
        }
        for k in 0..self.orphans.len() {
            if self.orphan_deliverable(m, k) {
                out.push(self.deliver_orphan(k));
            }
            out.push(self.lose_orphan(k));
        }
        out
    }

    /// The committed foundings whose coordinator still has its store: ballot and founding set.
    fn foundings(&self) -> Vec<(B, BTreeSet<Id>)> {
        self.nodes
            .iter()
            .filter_map(|n| n.founded.as_ref().map(|(b, _, all)| (*b, all.clone())))
            .filter(|(b, _)| self.amnesiac & (1 << b.coordinator) == 0)
            .collect()
    }

    /// Check invariants 1 to 5.
    fn check(&self, m: &Model) -> Result<(), String> {
        let forgot = |x: Id| self.amnesiac & (1 << x) != 0;
        let sets = self.foundings();
        for (a, (ba, sa)) in sets.iter().enumerate() {
            for (bb, sb) in &sets[a + 1..] {
                if !sa.is_disjoint(sb) {
                    return Err(format!(
                        "invariant 1 (disjoint founding sets): {ba:?} founded {sa:?}, {bb:?} founded {sb:?}"
                    ));
                }
            }
        }
        if let Some(n) = m.expect {
            if m.k < 2 * n && sets.len() > 1 {
                return Err(format!("invariant 2 (one cluster): {} nodes, expect {n}, foundings {sets:?}", m.k));
            }
            if let Some((b, s)) = sets.iter().find(|(_, s)| s.len() < n) {
                return Err(format!("invariant 3 (quorum of founders): {b:?} founded {s:?} with expect {n}"));
            }
        }
        if self.refounded != 0 {
            return Err(format!(
                "invariant 6 (an admitted identity never founds again): nodes {:#b} lost their store after \
                 being members and are in a new founding set; foundings {sets:?}",
                self.refounded
            ));
        }
        for (b, s) in &sets {
            if self.nodes[b.coordinator as usize].f.phase() != FreshPhase::Founded(*b) {
                return Err(format!("coordinator of {b:?} is no longer founded"));
            }
            for x in s.iter().filter(|x| **x != b.coordinator && !forgot(**x)) {
                let phase = self.nodes[*x as usize].f.phase();
                if phase != FreshPhase::Bound(*b) {
                    return Err(format!("invariant 4 (founders are bound): {x} is in {b:?}'s set {s:?} but {phase:?}"));
                }
            }
        }
        for (x, n) in self.nodes.iter().enumerate() {
            if n.joined && !forgot(x as Id) {
                if let Some((b, s)) = sets.iter().find(|(_, s)| s.contains(&(x as Id))) {
                    return Err(format!("invariant 5 (joiners are not founders): {x} joined, yet founded {b:?} {s:?}"));
                }
            }
        }
        Ok(())
    }

    /// A one-line summary, for traces.
    fn summary(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = write!(s, "{i}:{}", phase_str(&n.f.phase()));
            if !n.f.promisers().is_empty() && matches!(n.f.phase(), FreshPhase::Coordinating { .. }) {
                let _ = write!(s, "{:?}", n.f.promisers());
            }
            if n.joined {
                s.push_str("+joined");
            } else if n.member {
                s.push_str("+member");
            }
            if n.call != Call::Idle {
                let _ = write!(s, " call {:?}", n.call);
            }
            s.push_str("  ");
        }
        if !self.orphans.is_empty() {
            let _ = write!(s, "orphaned promises {:?}", self.orphans);
        }
        s
    }
}

fn phase_str(p: &FreshPhase<Id>) -> String {
    match p {
        FreshPhase::Free => "Free".into(),
        FreshPhase::Bound(b) => format!("Bound({}/{})", b.coordinator, b.round),
        FreshPhase::Coordinating { round, promisers } => format!("Coord(r{round},{promisers})"),
        FreshPhase::Founded(b) => format!("Founded({}/{})", b.coordinator, b.round),
        FreshPhase::Rejoining => "Rejoining".into(),
    }
}

/// Tick a clone of node `i`'s founder: the founder after, the step, whether it took the fresh
/// round.
fn run_tick(n: &Node, i: usize, obs: &Observation<Id>) -> (Founder<Id>, Step<Id>, bool) {
    let mut f = n.f.clone();
    let fresh = n.rounds + 1;
    let step = f.tick(obs, fresh);
    let used = match f.phase() {
        FreshPhase::Coordinating { round, .. } => round == fresh,
        FreshPhase::Founded(b) => b.coordinator as usize == i && b.round == fresh,
        _ => false,
    };
    (f, step, used)
}

/// What an exhaustive search saw.
#[derive(Debug)]
struct Report {
    states: usize,
    transitions: usize,
    max_depth: usize,
    complete: bool,
    /// States with at least one founding, and with two or more.
    with_founding: usize,
    with_two: usize,
    millis: u128,
}

/// Breadth-first search over every state reachable within the model's bounds. On a violation,
/// the error is the shortest trace to it.
fn explore(m: &Model, max_states: usize) -> Result<Report, String> {
    let start = Instant::now();
    let init = World::new(m);
    init.check(m)?;
    let mut memo = HashMap::new();
    let mut visited: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut parents: Vec<(u32, Option<Label>)> = vec![(0, None)];
    visited.insert(init.key(m), 0);
    let mut queue = VecDeque::from([(init, 0u32, 0usize)]);
    let mut report =
        Report { states: 1, transitions: 0, max_depth: 0, complete: true, with_founding: 0, with_two: 0, millis: 0 };
    while let Some((w, idx, depth)) = queue.pop_front() {
        report.max_depth = report.max_depth.max(depth);
        for (s, label) in w.successors(m, &mut memo) {
            report.transitions += 1;
            let key = s.key(m);
            if visited.contains_key(&key) {
                continue;
            }
            let id = parents.len() as u32;
            parents.push((idx, Some(label)));
            visited.insert(key, id);
            if let Err(violation) = s.check(m) {
                return Err(trace(m, &parents, id, &violation));
            }
            let n = s.foundings().len();
            report.with_founding += (n >= 1) as usize;
            report.with_two += (n >= 2) as usize;
            if parents.len() >= max_states {
                report.complete = false;
                queue.clear();
                break;
            }
            queue.push_back((s, id, depth + 1));
        }
    }
    report.states = parents.len();
    report.millis = start.elapsed().as_millis();
    Ok(report)
}

/// The path from the initial state to state `id`, replayed to show each state.
fn trace(m: &Model, parents: &[(u32, Option<Label>)], id: u32, violation: &str) -> String {
    let mut labels = Vec::new();
    let mut at = id;
    while at != 0 {
        let (parent, label) = &parents[at as usize];
        labels.push(label.clone().expect("only the root has no label"));
        at = *parent;
    }
    labels.reverse();
    let mut out = format!("{}: VIOLATION of {violation}\ntrace ({} steps):\n", m.name, labels.len());
    let mut w = World::new(m);
    let mut memo = HashMap::new();
    let _ = writeln!(out, "  start    {}", w.summary());
    for (n, label) in labels.iter().enumerate() {
        let want = format!("{label:?}");
        let next = w.successors(m, &mut memo).into_iter().find(|(_, l)| format!("{l:?}") == want);
        let Some((next, _)) = next else {
            let _ = writeln!(out, "  (cannot replay step {n}: {want})");
            break;
        };
        w = next;
        let _ = writeln!(out, "  {:>3}. {}\n       -> {}", n + 1, describe(label), w.summary());
    }
    out
}

fn describe(label: &Label) -> String {
    match label {
        Label::Tick { node, obs, step, outcome } => {
            let peers: Vec<String> = obs.fresh_peers.iter().map(|(j, p)| format!("{j}:{}", phase_str(p))).collect();
            let mut s = format!("node {node} ticks seeing [{}]", peers.join(", "));
            if let Some(c) = obs.cluster_contact {
                let _ = write!(s, " contact {c}");
            }
            if obs.window_elapsed || obs.grace_elapsed {
                let _ = write!(s, " window {} grace {}", obs.window_elapsed, obs.grace_elapsed);
            }
            let step = match step {
                Step::Wait(reason) => format!("Wait({reason})"),
                other => format!("{other:?}"),
            };
            let _ = write!(s, ": {step}; {outcome}");
            s
        }
        Label::Deliver { node, call, reply, reply_lost } => {
            let fate = if *reply_lost { "lost" } else { "delivered" };
            format!("request of node {node} delivered: {call:?}, answered {reply:?}, reply {fate}")
        }
        Label::Timeout { node, call } => format!("node {node} times out on {call:?}"),
        Label::OrphanDelivered { from, ballot } => {
            format!("late promise of node {from} to {}/{} delivered", ballot.coordinator, ballot.round)
        }
        Label::OrphanLost { from, ballot } => {
            format!("late promise of node {from} to {}/{} lost", ballot.coordinator, ballot.round)
        }
        Label::Crash { node } => format!("node {node} crashes and restarts"),
        Label::Amnesia { node } => format!("node {node} loses its store (keeps its key) and restarts"),
    }
}

/// Explore `m` and fail with the counter-example on a violation.
fn must_hold(m: &Model, max_states: usize) -> Report {
    match explore(m, max_states) {
        Ok(r) => {
            println!(
                "{:<44} {:>8} states {:>9} transitions depth {:>3} {} founded in {} states (2+ in {}) {:>6} ms",
                m.name,
                r.states,
                r.transitions,
                r.max_depth,
                if r.complete { "complete " } else { "TRUNCATED" },
                r.with_founding,
                r.with_two,
                r.millis
            );
            r
        }
        Err(trace) => panic!("{trace}"),
    }
}

/// A model with bounds: `rounds` ballots per node, `budget` ballots in all, `crashes`
/// crash-restarts, `orphans` late promises per node, and whether founding decisions may fail
/// to persist.
fn bounded(
    name: &str,
    k: usize,
    expect: Option<usize>,
    sees: Vec<u16>,
    (rounds, budget, crashes, orphans, persist_failures): (u64, u64, u8, usize, bool),
) -> Model {
    let mut m = Model::new(name, k, expect, sees);
    m.max_rounds = rounds;
    m.round_budget = budget;
    m.crashes = crashes;
    m.max_orphans = orphans;
    m.persist_failures = persist_failures;
    m
}

/// Explore, and check that the configuration is not vacuous: the search completed, some
/// founding happened, and two foundings happened where the invariants allow them.
fn exhaustive(m: &Model) {
    let r = must_hold(m, 1_000_000);
    assert!(r.complete, "{}: the search did not complete", m.name);
    assert!(r.with_founding > 0, "{}: no founding is reachable", m.name);
    if m.expect.is_some_and(|n| m.k < 2 * n) {
        assert_eq!(r.with_two, 0);
    }
}

#[test]
fn exhaustive_two_nodes() {
    // Two ballots per node, a crash, a late promise per node, failed persists.
    let bounds = (2, u64::MAX, 1, 1, true);
    for expect in [None, Some(1), Some(2)] {
        let m = bounded(&format!("K=2 mesh expect {expect:?}"), 2, expect, full_mesh(2), bounds);
        exhaustive(&m);
    }
}

#[test]
fn exhaustive_three_nodes_full_mesh() {
    // One ballot per node and two in all, a late promise per node; a crash with expect Some(_),
    // failed persists with expect Some(3) (both multiply the states).
    for (expect, crashes, persist_failures) in [(None, 0, false), (Some(2), 1, false), (Some(3), 1, true)] {
        let name = format!("K=3 mesh expect {expect:?}");
        let mut m = bounded(&name, 3, expect, full_mesh(3), (1, 2, crashes, 1, persist_failures));
        m.voter_target = 2;
        exhaustive(&m);
    }
}

#[test]
fn exhaustive_three_nodes_partial_views() {
    // The ends of a path cannot see each other; the middle node has the lowest or the
    // highest id.
    for (shape, sees) in [("path 0-1-2", path(3)), ("path 1-0-2", graph(3, &[(1, 0), (0, 2)]))] {
        for expect in [None, Some(2), Some(3)] {
            let name = format!("K=3 {shape} expect {expect:?}");
            let mut m = bounded(&name, 3, expect, sees.clone(), (1, 2, 1, 1, true));
            m.voter_target = 2;
            exhaustive(&m);
        }
    }
}

#[test]
fn exhaustive_four_nodes() {
    // Smaller bounds: one ballot per node; no crash on the full mesh.
    let star = graph(4, &[(0, 1), (0, 2), (0, 3)]);
    let configs = [
        ("K=4 mesh expect Some(3)", Some(3), full_mesh(4), (1, 2, 0, 0, false)),
        ("K=4 mesh expect None", None, full_mesh(4), (1, 1, 0, 0, false)),
        ("K=4 star around 0 expect Some(3)", Some(3), star, (1, 2, 0, 1, false)),
        ("K=4 path 0-1-2-3 expect Some(3)", Some(3), path(4), (1, 2, 1, 0, false)),
        ("K=4 path 0-1-2-3 expect Some(2)", Some(2), path(4), (1, 2, 0, 1, false)),
    ];
    for (name, expect, sees, bounds) in configs {
        exhaustive(&bounded(name, 4, expect, sees, bounds));
    }
}

#[test]
fn exhaustive_five_nodes() {
    // The state space explodes with five nodes: only expect Some(3) (5 < 2 * 3, so one
    // cluster at most), a single ballot in all on the full mesh, no crash, no late promise.
    exhaustive(&bounded("K=5 mesh expect Some(3)", 5, Some(3), full_mesh(5), (1, 1, 0, 0, false)));
    exhaustive(&bounded("K=5 path expect Some(3)", 5, Some(3), path(5), (1, 2, 0, 0, false)));
}

/// Reordered requests with the first version of the status query (`status_for` alone): a
/// `Promise` whose caller timed out is processed after the caller's later `PromiseStatus`,
/// which was answered `Released`; the promise is then counted and the coordinator founds with
/// a node that is free. The explorer must find this.
#[test]
fn reordered_requests_break_a_read_only_status_query() {
    let found = random_runs_with(Net::Reorder, Serve::ReadOnlyStatus, 300);
    assert!(found.is_err(), "the explorer no longer finds the reordering bug of a read-only status query");
}

/// The same reordering as the driver serves it: a `PromiseStatus(b)` proves its sender is bound
/// to `b` (the binding is persisted before the promise is sent), so the coordinator counts it
/// before answering. Then `Released` is only ever answered for a ballot no longer collected,
/// and a late promise is refused.
#[test]
fn reordered_requests_with_status_counting_as_promise() {
    let configs = [
        ("reorder+fix K=2 mesh expect None", 2, None, full_mesh(2), (2, 99, 1, 1, false)),
        ("reorder+fix K=2 mesh expect Some(2)", 2, Some(2), full_mesh(2), (2, 99, 1, 1, true)),
        ("reorder+fix K=3 path expect Some(2)", 3, Some(2), path(3), (1, 2, 1, 1, true)),
    ];
    for (name, k, expect, sees, bounds) in configs {
        let mut m = bounded(name, k, expect, sees, bounds);
        m.net = Net::Reorder;
        m.serve = Serve::AsDriver;
        exhaustive(&m);
    }
    random_runs_with(Net::Reorder, Serve::AsDriver, 300).unwrap_or_else(|e| panic!("{e}"));
}

/// A member loses its store but keeps its key, and may restart where no member is in sight
/// (the rest of its cluster is down). Alone, or beside fresh nodes, it must never found the
/// namespace again; it only joins a cluster it sees. One to three nodes, with and without
/// `--expect`, full mesh and a path.
#[test]
fn exhaustive_amnesia() {
    let configs = [
        ("amnesia K=1 expect None", 1, None, full_mesh(1), (2, 99, 1, 0, true)),
        ("amnesia K=1 expect Some(1)", 1, Some(1), full_mesh(1), (2, 99, 1, 0, true)),
        ("amnesia K=2 mesh expect None", 2, None, full_mesh(2), (2, 99, 1, 1, true)),
        ("amnesia K=2 mesh expect Some(2)", 2, Some(2), full_mesh(2), (2, 99, 1, 1, true)),
        ("amnesia K=3 mesh expect None", 3, None, full_mesh(3), (1, 2, 0, 0, false)),
        ("amnesia K=3 path expect Some(2)", 3, Some(2), path(3), (1, 3, 0, 1, false)),
    ];
    for (name, k, expect, sees, bounds) in configs {
        let mut m = bounded(name, k, expect, sees, bounds);
        m.voter_target = 2;
        m.amnesia = 2;
        exhaustive(&m);
    }
}

/// Before issue 11, a node that lost its store but kept its key came back free: alone after
/// the discovery window it founded a second cluster of its namespace. The explorer must find
/// that.
#[test]
fn amnesia_without_the_identity_record_founds_a_second_cluster() {
    for (k, expect) in [(1, None), (2, None), (2, Some(1))] {
        let mut m = bounded(&format!("forget K={k} expect {expect:?}"), k, expect, full_mesh(k), (2, 99, 0, 0, false));
        m.amnesia = 1;
        m.mutation = Mutation::ForgetAdmission;
        let found = explore(&m, 1_000_000);
        match found {
            Err(trace) => assert!(trace.contains("invariant 6"), "{trace}"),
            Ok(r) => panic!("{}: the explorer missed the second founding ({} states)", m.name, r.states),
        }
    }
}

/// Run `runs` seeded random runs; returns (runs that founded, foundings, steps) or the first
/// violation.
fn random_runs_with(net: Net, serve: Serve, runs: u64) -> Result<(usize, usize, usize), String> {
    let start = Instant::now();
    let (mut runs_founded, mut foundings, mut steps) = (0, 0, 0);
    for seed in 0..runs {
        let (f, s) = random_run(seed, net, serve, 6000)?;
        runs_founded += (f > 0) as usize;
        foundings += f;
        steps += s;
    }
    println!(
        "random runs {net:?} {serve:?}: {runs} runs, {steps} steps, {foundings} foundings, {runs_founded} runs \
         founded, {} ms",
        start.elapsed().as_millis()
    );
    Ok((runs_founded, foundings, steps))
}

/// Seeded random runs beyond the exhaustive sizes.
#[test]
fn random_runs() {
    let (runs_founded, _, _) = random_runs_with(Net::Fifo, Serve::AsDriver, 300).unwrap_or_else(|e| panic!("{e}"));
    assert!(runs_founded > 150, "random runs rarely found; the model is not exercising founding");
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// One random run; returns the number of foundings and steps, or the violation with the run's
/// trace.
fn random_run(seed: u64, net: Net, serve: Serve, steps: usize) -> Result<(usize, usize), String> {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x1234_5678);
    let k = 5 + rng.below(5);
    let expect = if rng.chance(0.2) { None } else { Some(2 + rng.below(k - 1)) };
    let density = [1.0, 0.8, 0.5][rng.below(3)];
    let mut sees = vec![0u16; k];
    for a in 0..k {
        for b in a + 1..k {
            if rng.chance(density) {
                sees[a] |= 1 << b;
                sees[b] |= 1 << a;
            }
        }
    }
    let loss = [0.0, 0.1, 0.3][rng.below(3)];
    let stale = [0.0, 0.2, 0.5][rng.below(3)];
    let mut m = Model::new(&format!("random seed {seed}"), k, expect, sees);
    m.voter_target = 1 + rng.below(5);
    m.net = net;
    m.serve = serve;
    m.max_rounds = u64::MAX;
    m.crashes = 3;
    m.max_orphans = 3;
    let mut w = World::new(&m);
    let mut labels: Vec<Label> = Vec::new();
    for step in 0..steps {
        let i = rng.below(k);
        let roll = rng.below(100);
        let mut next: Option<(World, Label)> = None;
        let n = &w.nodes[i];
        if roll < 45 {
            if n.member || n.call != Call::Idle {
                continue;
            }
            let obs = random_obs(&m, &w, i, stale, &mut rng);
            let mut results = w.tick(&m, i, &obs);
            if results.len() == 2
                && rng.chance(if matches!(results[0].1, Label::Tick { step: Step::Join(_), .. }) { 0.3 } else { 0.1 })
            {
                next = results.pop();
            } else if !results.is_empty() {
                next = Some(results.swap_remove(0));
            }
        } else if roll < 90 {
            let blocked = m.net == Net::Fifo
                && matches!(n.call, Call::Promise(b) | Call::Ask(b)
                    if w.orphans.iter().any(|(x, ob)| *x as usize == i && ob.coordinator == b.coordinator));
            next = if n.call == Call::Idle {
                None
            } else if rng.chance(loss) || blocked {
                w.timeout(&m, i)
            } else {
                let mut results = w.deliver(&m, i);
                if results.len() == 2 && !rng.chance(loss) {
                    results.pop()
                } else {
                    results.into_iter().next()
                }
            };
        } else if roll < 99 {
            if !w.orphans.is_empty() {
                let o = rng.below(w.orphans.len());
                next = Some(if rng.chance(0.5) && w.orphan_deliverable(&m, o) {
                    w.deliver_orphan(o)
                } else {
                    w.lose_orphan(o)
                });
            }
        } else {
            next = w.crash(&m, i);
        }
        if let Some((s, label)) = next {
            w = s;
            labels.push(label);
            if let Err(violation) = w.check(&m) {
                let tail: Vec<String> = labels.iter().rev().take(40).rev().map(describe).collect();
                return Err(format!(
                    "{}: {k} nodes, expect {expect:?}, sees {:?}: VIOLATION of {violation} at step {step}\n\
                     last steps:\n  {}\nfinal state: {}",
                    m.name,
                    m.sees,
                    tail.join("\n  "),
                    w.summary()
                ));
            }
        }
    }
    Ok((w.foundings().len(), labels.len()))
}

/// A random observation of node `i`: each visible peer with probability 0.8, with its current
/// phase or (with probability `stale`) any phase it had before.
fn random_obs(m: &Model, w: &World, i: usize, stale: f64, rng: &mut Rng) -> Observation<Id> {
    let mut fresh_peers = Vec::new();
    let mut contacts = Vec::new();
    for j in (0..m.k).filter(|j| m.visible(i, *j)) {
        let peer = &w.nodes[j];
        if peer.member {
            contacts.push(j as Id);
        }
        if !rng.chance(0.8) {
            continue;
        }
        if rng.chance(stale) {
            fresh_peers.push((j as Id, peer.history[rng.below(peer.history.len())].1.clone()));
        } else if !peer.member {
            fresh_peers.push((j as Id, peer.f.phase()));
        }
    }
    let cluster_contact =
        if !contacts.is_empty() && rng.chance(0.7) { Some(contacts[rng.below(contacts.len())]) } else { None };
    let window_elapsed = rng.chance(0.5);
    let grace_elapsed = window_elapsed && rng.chance(0.3);
    Observation { fresh_peers, cluster_contact, window_elapsed, grace_elapsed }
}

/// A fair schedule on a full mesh without loss or crashes: nodes tick round-robin with fresh
/// views and every call completes at once. Returns the founding ballot and the rounds taken.
fn fair_run(k: usize, expect: Option<usize>) -> (B, usize) {
    let m = Model::new(&format!("fair K={k} expect {expect:?}"), k, expect, full_mesh(k));
    let mut w = World::new(&m);
    for round in 1..=20 {
        for i in 0..k {
            let n = &w.nodes[i];
            if n.member {
                continue;
            }
            let fresh_peers =
                (0..k).filter(|j| *j != i && !w.nodes[*j].member).map(|j| (j as Id, w.nodes[j].f.phase())).collect();
            let contact = (0..k).find(|j| *j != i && w.nodes[*j].member).map(|j| j as Id);
            let obs = Observation { fresh_peers, cluster_contact: contact, window_elapsed: true, grace_elapsed: false };
            let (s, _) = w.tick(&m, i, &obs).swap_remove(0);
            w = s;
            if let Some((s, _)) = w.deliver(&m, i).pop() {
                w = s;
            }
            w.check(&m).unwrap_or_else(|e| panic!("fair run K={k} expect {expect:?}: {e}"));
        }
        if w.nodes.iter().all(|n| n.member) {
            let sets = w.foundings();
            assert_eq!(sets.len(), 1, "fair run K={k} expect {expect:?}: {sets:?}");
            let (b, set) = &sets[0];
            for (x, n) in w.nodes.iter().enumerate() {
                let bound = n.f.phase() == FreshPhase::Bound(*b) && set.contains(&(x as Id));
                assert!(x == b.coordinator as usize || bound || n.joined, "fair run: node {x} is {:?}", n.f.phase());
            }
            return (*b, round);
        }
    }
    panic!("fair run K={k} expect {expect:?} did not converge: {}", w.summary());
}

#[test]
fn fair_schedule_founds_one_cluster() {
    for k in 2..=7 {
        for (nodes, expect) in [(k, Some(k)), (k + 1, Some(k)), (k, None)] {
            let (b, rounds) = fair_run(nodes, expect);
            println!("fair run: {nodes} nodes, expect {expect:?}: founded {b:?} after {rounds} rounds");
            assert!(rounds <= 4);
        }
    }
}

/// The explorer finds a violation when the protocol is broken: a bound node that unbinds on
/// a timeout can be counted by one coordinator and found with another.
#[test]
fn explorer_catches_a_broken_model() {
    let mut m = Model::new("broken: unbind on timeout, K=3 expect None", 3, None, full_mesh(3));
    m.mutation = Mutation::UnbindOnTimeout;
    let trace = explore(&m, 400_000).expect_err("the explorer must find the double founding");
    println!("{trace}");
    assert!(trace.contains("VIOLATION"));
    let mut m = Model::new("broken: unbind on timeout, K=3 expect Some(2)", 3, Some(2), full_mesh(3));
    m.mutation = Mutation::UnbindOnTimeout;
    assert!(explore(&m, 400_000).is_err());
}
