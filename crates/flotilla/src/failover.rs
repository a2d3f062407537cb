//! Who stands for election when a quiet group's leader dies: a pure decision.
//!
//! When the node-level liveness probe (`crate::liveness`) declares a peer down, every quiesced
//! group that peer led needs a new leader. Waking every surviving follower of every such group
//! at once made them all run for election together: at 1,000 namespaces a dead node had led
//! about 340 groups, so about 680 candidacies at once on two survivors, many splitting votes or
//! timing out on a saturated machine (median failover 3.7 s, goal 3 s). Instead, the survivors
//! agree, without a message, on ONE candidate per group: the surviving voter with the highest
//! rendezvous hash of (namespace, node id). It wakes and stands at once; the others stay quiet
//! and vote for it (a quiesced follower whose leader is declared down grants a pre-vote). The
//! hash spreads the new leaderships evenly over the survivors, so the failover leaves no node
//! leading most namespaces.
//!
//! If the designated candidate cannot win (its log is shorter than another survivor's, it is
//! slow, or the survivors disagree about who is down), the other survivors wake after
//! [`grace`] and elect as before, with their own election timers. Agreement is an
//! optimisation, never needed for safety: votes decide, as always.

use std::time::Duration;

use flotilla_core::types::NodeId;
use flotilla_core::Namespace;

/// What a follower does about a group whose leader was declared down some time ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// This node is the designated candidate: wake and stand now.
    Stand,
    /// Another survivor is designated and the grace has not run out: stay quiet.
    Wait,
    /// The designated candidate had its chance (or none can be found): wake and let the
    /// election timer decide, as any follower of a dead leader.
    Wake,
}

/// How long the survivors that are not designated wait before waking: two maximum election
/// timeouts, which covers the candidate's first pre-vote round and a retry.
pub(crate) fn grace(election_max: Duration) -> Duration {
    election_max * 2
}

/// The step for `me`, a follower of a group of `namespace` whose `voters` include `leader`,
/// declared down `down_for` ago. `down` tells which other peers this node believes down too.
/// A learner never stands (it cannot be elected): it waits for the new leader's first message.
pub(crate) fn step(
    me: NodeId,
    namespace: &Namespace,
    voters: &[NodeId],
    leader: NodeId,
    down: &dyn Fn(&NodeId) -> bool,
    down_for: Duration,
    grace: Duration,
) -> Step {
    if !voters.contains(&me) {
        return Step::Wait;
    }
    let survivors = voters.iter().copied().filter(|v| *v != leader && (*v == me || !down(v)));
    match designated(namespace, survivors) {
        Some(candidate) if candidate == me => Step::Stand,
        Some(_) if down_for < grace => Step::Wait,
        _ => Step::Wake,
    }
}

/// The designated candidate among `survivors` for `namespace`: highest rendezvous hash.
pub(crate) fn designated(namespace: &Namespace, survivors: impl Iterator<Item = NodeId>) -> Option<NodeId> {
    survivors.max_by_key(|id| (rendezvous(namespace, id), *id))
}

/// FNV-1a over the namespace and the node id: stable across processes, versions and
/// platforms (unlike std's hasher, whose algorithm may change), which all survivors need to
/// agree on the candidate.
fn rendezvous(namespace: &Namespace, id: &NodeId) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = namespace.as_str().bytes().chain([0u8]).chain(id.to_bytes());
    bytes.fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(1_200);

    fn node() -> NodeId {
        libp2p_identity::Keypair::generate_ed25519().public().to_peer_id()
    }

    fn ns(name: &str) -> Namespace {
        Namespace::new(name).expect("valid")
    }

    #[test]
    fn exactly_one_survivor_stands_and_the_others_wait_out_the_grace() {
        let (dead, a, b, c, d) = (node(), node(), node(), node(), node());
        for voters in [vec![dead, a, b], vec![dead, a, b, c, d]] {
            for i in 0..50 {
                let n = ns(&format!("ns{i}"));
                let steps: Vec<Step> = voters
                    .iter()
                    .filter(|v| **v != dead)
                    .map(|me| step(*me, &n, &voters, dead, &|p| *p == dead, Duration::ZERO, GRACE))
                    .collect();
                assert_eq!(steps.iter().filter(|s| **s == Step::Stand).count(), 1, "{n}: {steps:?}");
                assert_eq!(steps.iter().filter(|s| **s == Step::Wait).count(), voters.len() - 2, "{n}");
                let late: Vec<Step> = voters
                    .iter()
                    .filter(|v| **v != dead)
                    .map(|me| step(*me, &n, &voters, dead, &|p| *p == dead, GRACE, GRACE))
                    .collect();
                assert!(late.iter().all(|s| *s != Step::Wait), "after the grace nobody waits: {late:?}");
            }
        }
    }

    #[test]
    fn the_candidates_spread_over_the_survivors() {
        let (dead, a, b) = (node(), node(), node());
        let voters = [dead, a, b];
        let mut stood = [0usize; 2];
        for i in 0..1_000 {
            let n = ns(&format!("ns{i}"));
            if step(a, &n, &voters, dead, &|p| *p == dead, Duration::ZERO, GRACE) == Step::Stand {
                stood[0] += 1;
            }
            if step(b, &n, &voters, dead, &|p| *p == dead, Duration::ZERO, GRACE) == Step::Stand {
                stood[1] += 1;
            }
        }
        assert_eq!(stood[0] + stood[1], 1_000);
        assert!(stood.iter().all(|s| (400..=600).contains(s)), "uneven: {stood:?}");
    }

    #[test]
    fn a_survivor_believed_down_is_passed_over_and_learners_never_stand() {
        let (dead, a, b, learner) = (node(), node(), node(), node());
        let voters = [dead, a, b];
        for i in 0..20 {
            let n = ns(&format!("ns{i}"));
            // `a` believes `b` down too: it is the only survivor it knows of.
            let both_down = |p: &NodeId| *p == dead || *p == b;
            assert_eq!(step(a, &n, &voters, dead, &both_down, Duration::ZERO, GRACE), Step::Stand);
            assert_eq!(step(learner, &n, &voters, dead, &|p| *p == dead, GRACE * 10, GRACE), Step::Wait);
        }
    }

    #[test]
    fn the_hash_is_stable() {
        // All survivors must compute the same candidate, whatever their build: pin the value.
        let id: NodeId = "12D3KooWEK2tYRVWQr2VPVAer2dkhnXe5PoLGLY4HrGgX2WZCvWf".parse().expect("peer id");
        assert_eq!(rendezvous(&ns("default"), &id), rendezvous(&ns("default"), &id));
        assert_ne!(rendezvous(&ns("default"), &id), rendezvous(&ns("other"), &id));
        assert_eq!(rendezvous(&ns("default"), &id), PINNED);
    }

    /// FNV-1a of "default\0" followed by the peer id's bytes, computed once; a change of the
    /// hash would let survivors of different builds disagree on the candidate.
    const PINNED: u64 = 13_743_971_785_983_986_742;
}
