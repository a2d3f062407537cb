//! Leader balancing: which namespaces a node hands to which voter so that no node leads most
//! namespaces. Free of I/O, so it is tested table-style; the node-level task that observes and
//! acts is `balance_loop.rs`.
//!
//! The rule, for one node `me` at one round:
//! - `share` = ceil(namespaces with a known leader / candidate nodes), where the candidates are
//!   every node that is a voter of a namespace `me` serves (a node leading nothing counts).
//! - `me` acts only when it leads more than `share + slack` (`slack` = 1 + 5% of `share`), and
//!   then gives away at most `count(me) - share` namespaces: it triggers above the band and
//!   aims at its middle, so a node at the edge of the band is left alone.
//! - Each namespace goes to the ready voter (caught up and recently acknowledged, never `me`)
//!   that leads fewest, counting the moves already decided this round, and only if that voter
//!   then leads at most `share`: a receiver never lands above the band, so it never has a
//!   reason to give the namespace back (no ping-pong between two nodes).
//! - A namespace whose leader changed recently (`cooling`) or whose membership is changing is
//!   not moved; a closing node moves nothing.
//! - At most [`max_moves`] per round, so a skewed node of 1,000 namespaces spreads over a few
//!   rounds instead of triggering every election at once.

use std::collections::BTreeMap;

/// Fewest moves a round may make, whatever the number of namespaces.
pub const MIN_MOVES_PER_ROUND: usize = 8;
/// Share of the led namespaces a round may move, in percent, when that is above the minimum.
pub const MOVES_PERCENT: usize = 5;

/// One namespace the balancing node leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Led<Id, Ns> {
    /// The namespace.
    pub namespace: Ns,
    /// Its voters, other than the balancing node, that are caught up and acknowledged the
    /// leader recently: the only possible targets.
    pub ready: Vec<Id>,
    /// Its membership is changing (joint or not yet committed).
    pub changing: bool,
    /// Its leader changed recently: it stays where it is for now (hysteresis).
    pub cooling: bool,
}

/// What the balancing node sees at one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation<Id, Ns> {
    /// The balancing node.
    pub me: Id,
    /// The node is closing: it moves nothing.
    pub closing: bool,
    /// The namespaces it leads.
    pub led: Vec<Led<Id, Ns>>,
    /// How many of the namespaces it serves each candidate node leads (zero included, `me`
    /// included).
    pub leaders: BTreeMap<Id, usize>,
}

/// Hand the leadership of `namespace` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move<Id, Ns> {
    /// The namespace.
    pub namespace: Ns,
    /// The voter that should lead it.
    pub to: Id,
}

/// The even share of `total` led namespaces over `nodes` candidates (rounded up).
pub fn share(total: usize, nodes: usize) -> usize {
    total.div_ceil(nodes.max(1))
}

/// How far above its share a node may lead before it gives namespaces away.
pub fn slack(share: usize) -> usize {
    1 + share * MOVES_PERCENT / 100
}

/// The most moves one round makes when `total` namespaces have a leader.
pub fn max_moves(total: usize) -> usize {
    MIN_MOVES_PER_ROUND.max(total * MOVES_PERCENT / 100)
}

/// The leadership transfers the balancing node should trigger this round.
pub fn decide<Id: Ord + Clone, Ns: Clone>(o: &Observation<Id, Ns>) -> Vec<Move<Id, Ns>> {
    if o.closing {
        return Vec::new();
    }
    let total: usize = o.leaders.values().sum();
    let share = share(total, o.leaders.len());
    let mine = o.leaders.get(&o.me).copied().unwrap_or(0);
    if mine <= share + slack(share) {
        return Vec::new();
    }
    let budget = (mine - share).min(max_moves(total));
    let mut counts = o.leaders.clone();
    let mut moves = Vec::new();
    for led in o.led.iter().filter(|l| !l.changing && !l.cooling) {
        if moves.len() == budget {
            break;
        }
        let target = led
            .ready
            .iter()
            .filter(|v| **v != o.me)
            .filter_map(|v| counts.get(v).map(|c| (*c, v)))
            .filter(|(c, _)| *c < share)
            .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
            .map(|(_, v)| v.clone());
        if let Some(to) = target {
            *counts.entry(to.clone()).or_default() += 1;
            moves.push(Move { namespace: led.namespace.clone(), to });
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A led namespace `ns` whose ready voters are `ready`.
    fn led(ns: u32, ready: &[u32]) -> Led<u32, u32> {
        Led { namespace: ns, ready: ready.to_vec(), changing: false, cooling: false }
    }

    /// Node 0 leads `led`; the counts are `counts` (node -> namespaces led).
    fn observe(led: Vec<Led<u32, u32>>, counts: &[(u32, usize)]) -> Observation<u32, u32> {
        Observation { me: 0, closing: false, led, leaders: counts.iter().copied().collect() }
    }

    /// Node 0 leads namespaces `0..n`, each with voters 1 and 2 ready.
    fn skewed(n: u32) -> Observation<u32, u32> {
        observe((0..n).map(|ns| led(ns, &[1, 2])).collect(), &[(0, n as usize), (1, 0), (2, 0)])
    }

    fn targets(moves: &[Move<u32, u32>], to: u32) -> usize {
        moves.iter().filter(|m| m.to == to).count()
    }

    #[test]
    fn shares_and_bounds() {
        let table = [
            // (total, nodes, share, slack, max moves)
            (30, 3, 10, 1, 8),
            (1, 3, 1, 1, 8),
            (0, 3, 0, 1, 8),
            (1000, 3, 334, 17, 50),
            (5, 0, 5, 1, 8),
        ];
        for (total, nodes, s, sl, m) in table {
            assert_eq!(share(total, nodes), s, "share of {total} over {nodes}");
            assert_eq!(slack(s), sl, "slack of {s}");
            assert_eq!(max_moves(total), m, "moves of {total}");
        }
    }

    #[test]
    fn a_skewed_node_gives_to_the_voters_that_lead_fewest_bounded_per_round() {
        let moves = decide(&skewed(30));
        assert_eq!(moves.len(), MIN_MOVES_PER_ROUND, "bounded per round");
        assert_eq!((targets(&moves, 1), targets(&moves, 2)), (4, 4), "alternates between the least loaded");
        assert!(moves.iter().all(|m| m.to != 0));
    }

    #[test]
    fn a_node_gives_away_down_to_its_share_not_further() {
        // 14 of 30: above 10 + 1, gives 4 (down to 10) although 8 would be allowed.
        let o = observe((0..14).map(|ns| led(ns, &[1, 2])).collect(), &[(0, 14), (1, 8), (2, 8)]);
        let moves = decide(&o);
        assert_eq!(moves.len(), 4);
        assert_eq!((targets(&moves, 1), targets(&moves, 2)), (2, 2));
    }

    #[test]
    fn nothing_moves_inside_the_band() {
        let table: [&[(u32, usize)]; 4] = [
            &[(0, 10), (1, 10), (2, 10)], // balanced
            &[(0, 11), (1, 10), (2, 9)],  // at share + slack: left alone
            &[(0, 1), (1, 0), (2, 0)],    // one namespace, three nodes
            &[(0, 2), (1, 0), (2, 0)],    // two namespaces: share 1, slack 1
        ];
        for counts in table {
            let mine = counts[0].1 as u32;
            let o = observe((0..mine).map(|ns| led(ns, &[1, 2])).collect(), counts);
            assert_eq!(decide(&o), vec![], "counts {counts:?}");
        }
    }

    #[test]
    fn a_receiver_never_lands_above_its_share() {
        // Node 1 is at its share already: everything goes to node 2, until node 2 is too.
        let o = observe((0..15).map(|ns| led(ns, &[1, 2])).collect(), &[(0, 15), (1, 10), (2, 5)]);
        let moves = decide(&o);
        assert_eq!((targets(&moves, 1), targets(&moves, 2)), (0, 5));
    }

    #[test]
    fn only_ready_voters_are_targets() {
        // Node 2 is behind or silent everywhere: only node 1 receives, and only up to its share.
        let o = observe((0..30).map(|ns| led(ns, &[1])).collect(), &[(0, 30), (1, 0), (2, 0)]);
        let moves = decide(&o);
        assert_eq!((targets(&moves, 1), targets(&moves, 2)), (8, 0));
        // Nobody ready: nothing.
        let o = observe((0..30).map(|ns| led(ns, &[])).collect(), &[(0, 30), (1, 0), (2, 0)]);
        assert_eq!(decide(&o), vec![]);
        // A "ready" node unknown to the counts (not a candidate) is not a target.
        let o = observe((0..30).map(|ns| led(ns, &[7])).collect(), &[(0, 30), (1, 0), (2, 0)]);
        assert_eq!(decide(&o), vec![]);
    }

    #[test]
    fn cooling_and_changing_namespaces_stay() {
        let mut o = skewed(30);
        for l in o.led.iter_mut().take(20) {
            l.cooling = true;
        }
        for l in o.led.iter_mut().skip(20).take(5) {
            l.changing = true;
        }
        let moves = decide(&o);
        let moved: Vec<u32> = moves.iter().map(|m| m.namespace).collect();
        assert_eq!(moved, vec![25, 26, 27, 28, 29]);
    }

    #[test]
    fn a_closing_node_moves_nothing() {
        let mut o = skewed(30);
        o.closing = true;
        assert_eq!(decide(&o), vec![]);
    }

    #[test]
    fn repeated_rounds_converge_and_then_stay_put() {
        // Play rounds on node 0's view, applying its moves, until it stops: it ends within the
        // band, and the receivers are at or below their share (so they never give back).
        let mut counts = BTreeMap::from([(0u32, 30usize), (1, 0), (2, 0)]);
        let mut rounds = 0;
        loop {
            let mine = counts[&0] as u32;
            let o = Observation {
                me: 0,
                closing: false,
                led: (0..mine).map(|ns| led(ns, &[1, 2])).collect(),
                leaders: counts.clone(),
            };
            let moves = decide(&o);
            if moves.is_empty() {
                break;
            }
            for m in moves {
                *counts.get_mut(&0).unwrap() -= 1;
                *counts.get_mut(&m.to).unwrap() += 1;
            }
            rounds += 1;
            assert!(rounds < 10, "does not converge: {counts:?}");
        }
        assert_eq!(counts, BTreeMap::from([(0, 10), (1, 10), (2, 10)]));
        // From every node's point of view, the result is stable.
        for me in 0..3u32 {
            let o = Observation {
                me,
                closing: false,
                led: (0..10).map(|ns| led(ns, &[0, 1, 2])).collect(),
                leaders: counts.clone(),
            };
            assert_eq!(decide(&o), vec![], "node {me} would move");
        }
    }
}
