//! Property tests of the wire codec (`flotilla_core::encode` / `decode` of `WireRequest` and
//! `WireResponse`) against hostile input.
//!
//! Checked on generated input:
//! - decoding arbitrary bytes, and valid encodings with bytes flipped, cut, inserted, removed,
//!   appended or overwritten by hostile lengths, never panics; whatever decodes re-encodes to a
//!   stable form and carries a valid namespace;
//! - no allocation made while decoding exceeds a fixed bound (serde preallocates at most 1 MiB
//!   for a sequence, whatever length it announces; strings and byte buffers are checked against
//!   the input and the limit first), so a huge announced length costs nothing;
//! - the limit holds: nothing decodes from more bytes than the limit, and an encoding of `n`
//!   bytes decodes under a limit of `n` but not `n - 1`;
//! - an invalid namespace ("", "..", "../x", uppercase, NUL, 65+ bytes, any string outside
//!   `[a-z0-9][a-z0-9._-]{0,63}`) spliced into an otherwise valid request is refused at decode;
//! - `PeerView::bounded`, applied to every view a peer sends, never panics (strings of
//!   multi-byte characters straddling `MAX_ADDR_BYTES` included), yields a view within the
//!   protocol bounds, is idempotent and leaves a view already within bounds as it was;
//! - generated requests (command writes with arbitrary payloads, read index, join, membership
//!   commands, Raft votes, appends and snapshot chunks, formation hellos with lists up to their
//!   bounds) and responses round-trip to the same bytes.

mod support;

use flotilla_core::command::{CommandResult, RequestId};
use flotilla_core::formation::{
    Ballot, FormationRequest, FormationResponse, FreshPhase, MemberView, PeerAddrs, PeerPhase, PeerView, PromiseState,
    MAX_ADDR_BYTES, MAX_PEER_ADDRS, MAX_VIEW_PEERS,
};
use flotilla_core::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};
use flotilla_core::wire::{
    CommandEnvelope, CommandRequest, CommandResponse, RaftEnvelope, RaftRequest, RaftResponse, RequestBody,
    SnapshotChunk, WireError, WireRequest, WireResponse,
};
use flotilla_core::{decode, encode, Command, MemberInfo, Namespace, NodeId, TypeConfig};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, VoteRequest, VoteResponse,
};
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, Membership, RaftTypeConfig};
use proptest::prelude::*;
use proptest::sample::Index;

#[global_allocator]
static ALLOCATOR: support::Recording = support::Recording;

/// The node's default frame limit, the limit the network decodes requests under.
const FRAME_LIMIT: u64 = 16 * 1024 * 1024;
/// serde's cap on preallocating a sequence of announced length (`size_hint::cautious`).
const PREALLOC_CAP: usize = 1024 * 1024;

// ---- generators of valid values ----

/// Peer ids of both shapes a multihash can take: an inlined key (identity hash, up to 42
/// bytes, as ed25519 keys are) or a SHA-256 digest.
fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..=42).prop_map(|digest| {
            let mut bytes = vec![0x00, digest.len() as u8];
            bytes.extend_from_slice(&digest);
            NodeId::from_bytes(&bytes).expect("identity multihash of at most 42 bytes")
        }),
        any::<[u8; 32]>().prop_map(|digest| {
            let mut bytes = vec![0x12, 0x20];
            bytes.extend_from_slice(&digest);
            NodeId::from_bytes(&bytes).expect("sha2-256 multihash")
        }),
    ]
}

fn namespace() -> impl Strategy<Value = Namespace> {
    "[a-z0-9][a-z0-9._-]{0,63}".prop_map(|name| Namespace::new(name).expect("matches the namespace pattern"))
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn log_id() -> impl Strategy<Value = LogId> {
    (any::<u64>(), node_id(), any::<u64>()).prop_map(|(term, node, index)| {
        LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(term, node), index)
    })
}

fn vote() -> impl Strategy<Value = Vote> {
    (any::<u64>(), node_id(), any::<bool>()).prop_map(|(term, node, committed)| {
        if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        }
    })
}

fn member_info() -> impl Strategy<Value = MemberInfo> {
    (proptest::collection::vec(text(), 0..=MAX_PEER_ADDRS), text())
        .prop_map(|(addrs, cluster)| MemberInfo { addrs, cluster })
}

fn membership() -> impl Strategy<Value = Membership<NodeId, MemberInfo>> {
    (proptest::collection::btree_set(node_id(), 1..4), proptest::collection::vec(node_id(), 0..3))
        .prop_map(|(voters, learners)| Membership::new_with_defaults(vec![voters], learners))
}

fn command() -> impl Strategy<Value = Command> {
    (any::<Option<(u64, u64)>>(), bytes(1024))
        .prop_map(|(id, payload)| Command { id: id.map(|(client, seq)| RequestId { client, seq }), payload })
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Blank),
        command().prop_map(EntryPayload::Normal),
        membership().prop_map(EntryPayload::Membership),
    ];
    (log_id(), payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
}

fn vote_request() -> impl Strategy<Value = VoteRequest<TypeConfig>> {
    (vote(), proptest::option::of(log_id()), any::<bool>()).prop_map(|(vote, last, transfer)| {
        let mut request = VoteRequest::new(vote, last);
        request.leadership_transfer = transfer;
        request
    })
}

fn raft_request() -> impl Strategy<Value = RaftRequest> {
    prop_oneof![
        (
            vote(),
            proptest::option::of(log_id()),
            proptest::collection::vec(entry(), 0..4),
            proptest::option::of(log_id())
        )
            .prop_map(|(vote, prev_log_id, entries, leader_commit)| RaftRequest::Append(
                AppendEntriesRequest { vote, prev_log_id, entries, leader_commit }
            )),
        vote_request().prop_map(RaftRequest::Vote),
        vote_request().prop_map(RaftRequest::PreVote),
        (
            vote(),
            proptest::option::of(log_id()),
            proptest::option::of(log_id()),
            membership(),
            any::<(u64, u64)>(),
            bytes(512),
            any::<bool>()
        )
            .prop_map(|(vote, last_log_id, membership_log_id, membership, (offset, total), data, done)| {
                let meta =
                    SnapshotMeta { last_log_id, last_membership: StoredMembership::new(membership_log_id, membership) };
                RaftRequest::SnapshotChunk(SnapshotChunk { vote, meta, offset, total, data, done })
            }),
        (vote(), node_id(), proptest::option::of(log_id()))
            .prop_map(|(vote, to, last)| RaftRequest::TransferLeader(TransferLeaderRequest::new(vote, to, last))),
    ]
}

fn command_request() -> impl Strategy<Value = CommandRequest> {
    prop_oneof![
        command().prop_map(CommandRequest::Write),
        Just(CommandRequest::ReadIndex),
        (member_info(), any::<bool>()).prop_map(|(info, fresh)| CommandRequest::Join { info, fresh }),
        (node_id(), member_info()).prop_map(|(id, info)| CommandRequest::AddVoter(id, info)),
        (node_id(), member_info()).prop_map(|(id, info)| CommandRequest::AddLearner(id, info)),
        node_id().prop_map(CommandRequest::Remove),
        proptest::option::of(node_id()).prop_map(CommandRequest::TransferLeader),
    ]
}

fn ballot() -> impl Strategy<Value = Ballot> {
    (node_id(), any::<u64>()).prop_map(|(coordinator, round)| Ballot { coordinator, round })
}

fn peer_phase() -> impl Strategy<Value = PeerPhase> {
    let fresh = prop_oneof![
        Just(FreshPhase::Free),
        ballot().prop_map(FreshPhase::Bound),
        any::<(u64, u32)>().prop_map(|(round, promisers)| FreshPhase::Coordinating { round, promisers }),
        ballot().prop_map(FreshPhase::Founded),
        Just(FreshPhase::Rejoining),
    ];
    let member = (text(), proptest::option::of(node_id()), any::<(u32, u32, u64)>(), any::<(bool, bool)>()).prop_map(
        |(cluster, leader, (voters, members, config_index), (includes_you, holds_data))| MemberView {
            cluster,
            leader,
            voters,
            members,
            config_index,
            includes_you,
            holds_data,
        },
    );
    prop_oneof![
        Just(PeerPhase::NotServed),
        (any::<Option<u32>>(), fresh).prop_map(|(expect, phase)| PeerPhase::Fresh { expect, phase }),
        member.prop_map(PeerPhase::Member),
    ]
}

/// Peer lists up to the formation bounds (`MAX_VIEW_PEERS` peers of `MAX_PEER_ADDRS` addresses).
fn peer_addrs() -> impl Strategy<Value = PeerAddrs> {
    (node_id(), proptest::collection::vec("/ip4/[0-9.]{1,15}/tcp/[0-9]{1,5}", 0..=MAX_PEER_ADDRS))
        .prop_map(|(peer, addrs)| PeerAddrs { peer, addrs })
}

fn peer_list() -> impl Strategy<Value = Vec<PeerAddrs>> {
    prop_oneof![
        3 => proptest::collection::vec(peer_addrs(), 0..4),
        1 => proptest::collection::vec(peer_addrs(), 0..=MAX_VIEW_PEERS),
    ]
}

fn peer_view() -> impl Strategy<Value = PeerView> {
    (peer_phase(), proptest::collection::vec(text(), 0..=MAX_PEER_ADDRS), peer_list(), peer_list())
        .prop_map(|(phase, addrs, members, known)| PeerView { phase, addrs, members, known })
}

/// Strings around `MAX_ADDR_BYTES` bytes, of characters 1 to 4 bytes long, so that a cut at
/// the bound may fall inside a character.
fn long_text() -> impl Strategy<Value = String> {
    let near = MAX_ADDR_BYTES - 8..=MAX_ADDR_BYTES + 8;
    prop_oneof![
        text(),
        (near.clone(), "[aé€😀]{0,4}").prop_map(|(n, tail)| {
            let mut s = "a".repeat(n.saturating_sub(tail.len()));
            s.push_str(&tail);
            s
        }),
        near.prop_map(|n| "é".repeat(n / 2 + 1)),
        "[aé€😀]{60,70}",
    ]
}

fn hostile_addrs() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        3 => proptest::collection::vec(text(), 0..=MAX_PEER_ADDRS * 2),
        1 => proptest::collection::vec(long_text(), 0..=MAX_PEER_ADDRS * 2),
    ]
}

fn hostile_list() -> impl Strategy<Value = Vec<PeerAddrs>> {
    prop_oneof![
        3 => proptest::collection::vec((node_id(), hostile_addrs()), 0..4),
        1 => proptest::collection::vec((node_id(), proptest::collection::vec(text(), 0..2)), 0..=MAX_VIEW_PEERS * 2),
    ]
    .prop_map(|l| l.into_iter().map(|(peer, addrs)| PeerAddrs { peer, addrs }).collect())
}

/// Views as a hostile peer may send them: lists over their bounds, long and multi-byte strings.
fn hostile_view() -> impl Strategy<Value = PeerView> {
    let phase = prop_oneof![
        peer_phase(),
        (long_text(), proptest::option::of(node_id())).prop_map(|(cluster, leader)| PeerPhase::Member(MemberView {
            cluster,
            leader,
            voters: 1,
            members: 1,
            config_index: 1,
            includes_you: false,
            holds_data: true,
        })),
    ];
    (phase, hostile_addrs(), hostile_list(), hostile_list()).prop_map(|(phase, addrs, members, known)| PeerView {
        phase,
        addrs,
        members,
        known,
    })
}

fn within_bounds(view: &PeerView) -> bool {
    let addrs_ok = |addrs: &[String]| addrs.len() <= MAX_PEER_ADDRS && addrs.iter().all(|a| a.len() <= MAX_ADDR_BYTES);
    let list_ok = |list: &[PeerAddrs]| list.len() <= MAX_VIEW_PEERS && list.iter().all(|p| addrs_ok(&p.addrs));
    let cluster_ok = match &view.phase {
        PeerPhase::Member(m) => m.cluster.len() <= MAX_ADDR_BYTES,
        _ => true,
    };
    addrs_ok(&view.addrs) && list_ok(&view.members) && list_ok(&view.known) && cluster_ok
}

fn formation_request() -> impl Strategy<Value = FormationRequest> {
    prop_oneof![
        peer_view().prop_map(FormationRequest::Hello),
        ballot().prop_map(FormationRequest::Promise),
        ballot().prop_map(FormationRequest::PromiseStatus),
        (text(), any::<bool>()).prop_map(|(cluster, force)| FormationRequest::Dissolve { cluster, force }),
    ]
}

fn request_body() -> impl Strategy<Value = RequestBody> {
    prop_oneof![
        (raft_request(), "[a-zA-Z0-9/]{0,72}")
            .prop_map(|(rpc, cluster)| RequestBody::Raft(RaftEnvelope { cluster, rpc })),
        (any::<u8>(), command_request()).prop_map(|(hops_left, request)| RequestBody::Command(CommandEnvelope {
            hops_left,
            budget_ms: 1_000,
            request
        })),
        formation_request().prop_map(RequestBody::Formation),
    ]
}

fn wire_request() -> impl Strategy<Value = WireRequest> {
    (namespace(), request_body()).prop_map(|(namespace, body)| WireRequest { namespace, body })
}

fn wire_error() -> impl Strategy<Value = WireError> {
    prop_oneof![
        proptest::option::of(node_id()).prop_map(|leader| WireError::NotLeader { leader }),
        text().prop_map(WireError::NoLeader),
        Just(WireError::HopLimit),
        text().prop_map(WireError::UnknownNamespace),
        text().prop_map(WireError::Timeout),
        text().prop_map(WireError::OutcomeUnknown),
        (node_id(), any::<u64>()).prop_map(|(leader, silent_ms)| WireError::LostQuorum { leader, silent_ms }),
        Just(WireError::StorageFull("disk".into())),
        text().prop_map(WireError::Rejected),
        text().prop_map(WireError::Unavailable),
        text().prop_map(WireError::Fatal),
        text().prop_map(WireError::Malformed),
    ]
}

fn wire_response() -> impl Strategy<Value = WireResponse> {
    let raft = prop_oneof![
        Just(AppendEntriesResponse::Success),
        proptest::option::of(log_id()).prop_map(AppendEntriesResponse::PartialSuccess),
        Just(AppendEntriesResponse::Conflict),
        vote().prop_map(AppendEntriesResponse::HigherVote),
    ]
    .prop_map(RaftResponse::Append);
    let raft = prop_oneof![
        raft,
        (vote(), proptest::option::of(log_id()), any::<bool>())
            .prop_map(|(vote, last, granted)| RaftResponse::Vote(VoteResponse::new(vote, last, granted))),
        proptest::option::of(vote().prop_map(SnapshotResponse::new)).prop_map(RaftResponse::SnapshotChunk),
    ];
    let output = prop_oneof![bytes(256).prop_map(Ok), text().prop_map(Err)];
    let command = prop_oneof![
        (log_id(), output)
            .prop_map(|(log_id, output)| CommandResponse::Written { log_id, result: CommandResult { output } }),
        log_id().prop_map(|read_log_id| CommandResponse::ReadIndex { read_log_id }),
        (node_id(), text(), any::<Option<u64>>()).prop_map(|(leader, cluster, index)| CommandResponse::Joined {
            leader,
            cluster,
            index
        }),
        any::<Option<u64>>().prop_map(|index| CommandResponse::Done { index }),
    ];
    let formation = prop_oneof![
        peer_view().prop_map(FormationResponse::View),
        any::<bool>().prop_map(FormationResponse::Promised),
        prop_oneof![
            Just(PromiseState::Pending),
            any::<bool>().prop_map(|voter| PromiseState::Founded { voter }),
            Just(PromiseState::Released),
        ]
        .prop_map(FormationResponse::Status),
        any::<bool>().prop_map(FormationResponse::Dissolving),
    ];
    prop_oneof![
        raft.prop_map(WireResponse::Raft),
        command.prop_map(WireResponse::Command),
        formation.prop_map(WireResponse::Formation),
        wire_error().prop_map(WireResponse::Error),
    ]
}

// ---- hostile edits of valid encodings ----

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace one byte.
    Set(Index, u8),
    /// Cut the encoding short.
    Truncate(Index),
    /// Drop one byte.
    Remove(Index),
    /// Insert one byte.
    Insert(Index, u8),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Overwrite 8 bytes with a little-endian length (where a length field may sit).
    Length(Index, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let length =
        prop_oneof![0u64..=64, any::<u64>(), Just(u64::MAX), (1u64 << 20)..(1u64 << 40), Just(u32::MAX as u64)];
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        1 => bytes(32).prop_map(Mutation::Extend),
        3 => (any::<Index>(), length).prop_map(|(at, n)| Mutation::Length(at, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Set(at, b) if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
            Mutation::Remove(at) if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            Mutation::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), *b),
            Mutation::Extend(more) => bytes.extend_from_slice(more),
            Mutation::Length(at, n) if bytes.len() >= 8 => {
                let i = at.index(bytes.len() - 7);
                bytes[i..i + 8].copy_from_slice(&n.to_le_bytes());
            }
            _ => {}
        }
    }
    bytes
}

/// Arbitrary bytes, half of them behind a prefix that gets the decoder past the first field (a
/// valid namespace for requests, a small variant index for responses) so the rest is hostile
/// to the message bodies rather than refused at once.
fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(512),
        (namespace(), 0u32..4, bytes(512)).prop_map(|(ns, variant, rest)| {
            let mut out = encode(&ns).unwrap();
            out.extend_from_slice(&variant.to_le_bytes());
            out.extend_from_slice(&rest);
            out
        }),
        (0u32..5, 0u32..9, bytes(512)).prop_map(|(variant, inner, rest)| {
            let mut out = variant.to_le_bytes().to_vec();
            out.extend_from_slice(&inner.to_le_bytes());
            out.extend_from_slice(&rest);
            out
        }),
    ]
}

fn limit() -> impl Strategy<Value = u64> {
    prop_oneof![Just(FRAME_LIMIT), 0u64..=64, 0u64..=4096, Just(u64::MAX)]
}

/// Decode `bytes` both as a request and as a response under `limit`, checking what decodes
/// and how much was allocated.
fn decode_hostile(bytes: &[u8], limit: u64) -> Result<(), TestCaseError> {
    let (request, largest) = support::largest_allocation(|| decode::<WireRequest>(bytes, limit));
    prop_assert!(largest <= PREALLOC_CAP, "decoding {} bytes as a request allocated {} bytes", bytes.len(), largest);
    if let Ok(request) = request {
        prop_assert!(bytes.len() as u64 <= limit, "decoded {} bytes under a limit of {}", bytes.len(), limit);
        prop_assert_eq!(Namespace::new(request.namespace.as_str()), Ok(request.namespace.clone()));
        let again = encode(&request).unwrap();
        prop_assert!(again.len() as u64 <= limit);
        let reread: WireRequest = decode(&again, limit).expect("a decoded request re-encodes decodably");
        prop_assert_eq!(encode(&reread).unwrap(), again);
    }
    let (response, largest) = support::largest_allocation(|| decode::<WireResponse>(bytes, limit));
    prop_assert!(largest <= PREALLOC_CAP, "decoding {} bytes as a response allocated {} bytes", bytes.len(), largest);
    if let Ok(response) = response {
        prop_assert!(bytes.len() as u64 <= limit, "decoded {} bytes under a limit of {}", bytes.len(), limit);
        let again = encode(&response).unwrap();
        let reread: WireResponse = decode(&again, limit).expect("a decoded response re-encodes decodably");
        prop_assert_eq!(encode(&reread).unwrap(), again);
    }
    Ok(())
}

// ---- invalid namespace names ----

/// The namespace grammar, written independently of `Namespace::new`.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let class = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=64).contains(&b.len()) && class(&b[0]) && b[1..].iter().all(|c| class(c) || b"._-".contains(c))
}

fn invalid_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "", "..", ".", "../x", "a/b", "A", "Default", "a\0", "\0", "-a", "_a", ".a", "é", "a b"
        ])
        .prop_map(str::to_string),
        "[a-z0-9]{65,80}",
        "[a-z0-9][a-z0-9._-]{0,62}[A-Z/\\\\\0 %:]",
        any::<String>(),
    ]
    .prop_filter("not a valid name", |name| !valid_name(name))
}

/// `body` of a request under a namespace given as a raw string: a `WireRequest` is its fields
/// in order, so this is the encoding a peer could send.
fn splice(namespace: &str, body: &RequestBody) -> Vec<u8> {
    let mut bytes = encode(&namespace.to_string()).unwrap();
    bytes.extend_from_slice(&encode(body).unwrap());
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes under any limit: no panic, bounded allocation.
    #[test]
    fn arbitrary_bytes_are_refused_or_decoded_safely(bytes in arbitrary_bytes(), limit in limit()) {
        decode_hostile(&bytes, limit)?;
    }

    /// Valid encodings of requests and responses with hostile edits: no panic, bounded
    /// allocation, and whatever still decodes is a well-formed message.
    #[test]
    fn mutated_encodings_are_refused_or_decoded_safely(
        request in wire_request(),
        response in wire_response(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        limit in limit(),
    ) {
        decode_hostile(&mutate(encode(&request).unwrap(), &mutations), limit)?;
        decode_hostile(&mutate(encode(&response).unwrap(), &mutations), limit)?;
    }

    /// Valid requests and responses come back byte for byte, and the limit is exact.
    #[test]
    fn valid_messages_round_trip_and_the_limit_is_exact(request in wire_request(), response in wire_response()) {
        let bytes = encode(&request).unwrap();
        let n = bytes.len() as u64;
        let decoded: WireRequest = decode(&bytes, n).expect("decodes under a limit of its own size");
        prop_assert_eq!(&decoded.namespace, &request.namespace);
        prop_assert_eq!(encode(&decoded).unwrap(), bytes.clone());
        prop_assert!(decode::<WireRequest>(&bytes, n - 1).is_err(), "decoded {} bytes under a limit of {}", n, n - 1);

        let bytes = encode(&response).unwrap();
        let n = bytes.len() as u64;
        let decoded: WireResponse = decode(&bytes, n).expect("decodes under a limit of its own size");
        prop_assert_eq!(encode(&decoded).unwrap(), bytes.clone());
        prop_assert!(decode::<WireResponse>(&bytes, n - 1).is_err(), "decoded {} bytes under a limit of {}", n, n - 1);
    }

    /// A namespace outside the grammar, smuggled into an otherwise valid request, is refused
    /// at decode; the same splice with a valid name decodes to that name.
    #[test]
    fn invalid_namespaces_are_refused_at_decode(name in invalid_name(), good in namespace(), body in request_body()) {
        let hostile = splice(&name, &body);
        prop_assert!(decode::<WireRequest>(&hostile, FRAME_LIMIT).is_err(), "namespace {:?} was accepted", name);

        let fine = splice(good.as_str(), &body);
        let decoded: WireRequest = decode(&fine, FRAME_LIMIT).expect("the splice of a valid name decodes");
        prop_assert_eq!(decoded.namespace, good);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `PeerView::bounded` never panics, cuts any view to the bounds, is idempotent, and keeps
    /// a view that is already within them.
    #[test]
    fn received_views_are_cut_to_the_bounds(view in hostile_view()) {
        let was_within = within_bounds(&view);
        let bounded = view.clone().bounded();
        prop_assert!(within_bounds(&bounded), "{:?}", bounded);
        prop_assert_eq!(bounded.clone().bounded(), bounded.clone());
        if was_within {
            prop_assert_eq!(bounded, view);
        }
    }
}

/// Requests as big as their bounds allow still fit a frame: a hello with full peer lists.
#[test]
fn full_hello_fits_the_frame_limit() {
    let peer = |i: u8| {
        let mut bytes = vec![0x12, 0x20];
        bytes.extend_from_slice(&[i; 32]);
        NodeId::from_bytes(&bytes).unwrap()
    };
    let addrs: Vec<String> = (0..MAX_PEER_ADDRS).map(|i| format!("/ip4/255.255.255.{i}/tcp/65535")).collect();
    let list: Vec<PeerAddrs> =
        (0..MAX_VIEW_PEERS as u8).map(|i| PeerAddrs { peer: peer(i), addrs: addrs.clone() }).collect();
    let view = PeerView { phase: PeerPhase::NotServed, addrs: addrs.clone(), members: list.clone(), known: list };
    let request = WireRequest {
        namespace: Namespace::new("x".repeat(64)).unwrap(),
        body: RequestBody::Formation(FormationRequest::Hello(view)),
    };
    let bytes = encode(&request).unwrap();
    assert!((bytes.len() as u64) < FRAME_LIMIT / 64, "{} bytes", bytes.len());
    let decoded: WireRequest = decode(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(encode(&decoded).unwrap(), bytes);
}

/// The limit applies to the input even though bincode ignores its own limit on slices.
#[test]
fn inputs_over_the_limit_are_refused() {
    let request = WireRequest {
        namespace: Namespace::new("default").unwrap(),
        body: RequestBody::Command(CommandEnvelope {
            hops_left: 3,
            budget_ms: 1_000,
            request: CommandRequest::Write(Command { id: None, payload: vec![7; 1000] }),
        }),
    };
    let bytes = encode(&request).unwrap();
    let error = decode::<WireRequest>(&bytes, 100).unwrap_err();
    assert!(matches!(*error, bincode::ErrorKind::SizeLimit), "{error}");
    assert!(decode::<WireRequest>(&bytes, bytes.len() as u64).is_ok());
    // Trailing bytes count as input.
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(decode::<WireRequest>(&padded, bytes.len() as u64).is_err());
    assert!(decode::<WireRequest>(&padded, padded.len() as u64).is_ok());
}
