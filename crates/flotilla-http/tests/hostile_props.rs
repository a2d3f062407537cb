//! Property tests of the HTTP API against hostile requests, sent as raw HTTP/1.1 over TCP to a
//! single in-process node (so no client library normalizes paths or checks anything first).
//!
//! Checked on generated input:
//! - hostile keys (`..`, `../../etc/passwd`, NUL, percent-encoded bytes and slashes, invalid
//!   UTF-8, unicode, keys around and far past `max_key_bytes`, raw bytes HTTP forbids): a
//!   percent-encoded key is stored as exactly its decoded bytes (200, and read back under any
//!   encoding of those bytes), or refused with 400 (not UTF-8) or 413 (too long); anything else
//!   gets a 4xx or is stored and read back as it was;
//! - hostile namespace path segments: an invalid name is refused with 400, a valid name the
//!   node does not serve with 404, on the KV, list and status routes, and no namespace appears;
//! - oversized bodies: a value over `max_value_bytes` is refused with 413, also when the body
//!   announces gigabytes and only a little more than the limit has been sent (the refusal comes
//!   before the body is read);
//! - malformed JSON on the JSON routes (garbage, truncated or mistyped documents, deep
//!   nesting, invalid UTF-8, missing or wrong content type): 400, 413, 415 or 422;
//! - no request is ever answered with a 5xx, and after every case the node still serves a
//!   normal PUT and linearizable GET.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla::in_process::InProcessNetwork;
use flotilla::{Config, Namespace, Node};
use flotilla_store::Store;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 1024;
/// The router's body limit: the largest value plus slack.
const BODY_LIMIT: usize = MAX_VALUE + 1024;
/// Bound on one exchange: generous, so a loaded machine passes; reached only on a bug.
const PATIENCE: Duration = Duration::from_secs(30);
/// Each case is a few HTTP round trips and a Raft commit or two.
const CASES: u32 = 64;

// ---- the node ----

struct Served {
    node: Arc<Node>,
    addr: SocketAddr,
    canary: AtomicU64,
    _dir: tempfile::TempDir,
}

/// A single node that founds its cluster at once, serving HTTP on loopback.
fn serve(rt: &Runtime) -> Served {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            namespaces: vec![Namespace::new("default").unwrap()],
            max_key_bytes: MAX_KEY,
            max_value_bytes: MAX_VALUE,
            force_bootstrap: true,
            no_mdns: true,
            // The cluster plane on loopback: an exposed one needs a cluster key.
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            ..Config::default()
        };
        let store = Store::open(&config.data_dir).expect("store");
        let node = Node::start(config, InProcessNetwork::new(1).transport(id), store).await.expect("node");
        node.cluster("default").unwrap().wait_for_leader(PATIENCE).await.expect("leader");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(flotilla_http::serve(listener, node.clone(), std::future::pending()));
        Served { node, addr, canary: AtomicU64::new(0), _dir: dir }
    })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Run `check` on `CASES` generated inputs, each inside the runtime.
fn run<S: Strategy>(
    rt: &Runtime,
    served: &Served,
    strategy: S,
    check: impl AsyncFn(&Served, S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(CASES));
    let result = runner.run(&strategy, |input| {
        rt.block_on(async {
            check(served, input).await?;
            still_serving(served).await
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---- raw HTTP/1.1 ----

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Vec<u8>,
}

fn request(method: &str, target: &[u8], headers: &[(&str, &str)], body: &[u8], declared: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    out.extend_from_slice(format!("Content-Length: {declared}\r\n").as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Send `bytes` on a fresh connection (without closing our side) and read the reply until the
/// server closes. A reset after the reply arrived (the server dropped a body it did not read)
/// is fine; a reply that never comes is a failure.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Reply, TestCaseError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // The server may answer and close before reading everything (an oversized body).
        let _ = stream.write_all(bytes).await;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        raw
    };
    let raw = tokio::time::timeout(PATIENCE, exchange)
        .await
        .map_err(|_| TestCaseError::fail(format!("no reply within {PATIENCE:?}")))?;
    parse(&raw).ok_or_else(|| TestCaseError::fail(format!("unparsable reply: {:?}", String::from_utf8_lossy(&raw))))
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).ok()?.trim(), 16).ok()?;
            if size == 0 || rest.len() < eol + 2 + size {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Some(Reply { status, body })
}

async fn send(
    served: &Served,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, TestCaseError> {
    let reply = exchange(served.addr, &request(method, target, headers, body, body.len())).await?;
    prop_assert!(reply.status < 500, "{} {} answered {}: {}", method, show(target), reply.status, show(&reply.body));
    Ok(reply)
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() > 200 {
        format!("{}... ({} bytes)", text.chars().take(200).collect::<String>(), bytes.len())
    } else {
        text.into_owned()
    }
}

/// A normal write and linearizable read still work.
async fn still_serving(served: &Served) -> Result<(), TestCaseError> {
    let value = format!("canary {}", served.canary.fetch_add(1, Ordering::Relaxed));
    let put = send(served, "PUT", b"/v1/kv/default/canary", &[], value.as_bytes()).await?;
    prop_assert_eq!(put.status, 200, "canary PUT: {}", show(&put.body));
    let get = send(served, "GET", b"/v1/kv/default/canary?consistency=linearizable", &[], b"").await?;
    prop_assert_eq!(get.status, 200, "canary GET: {}", show(&get.body));
    prop_assert_eq!(get.body, value.into_bytes());
    Ok(())
}

// ---- percent-encoding ----

/// Percent-encode every byte outside the unreserved set, so the result is always a valid path.
fn encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Decode `%XX` escapes, leaving malformed ones as they are (as the server's decoder does).
fn decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// The namespace grammar `[a-z0-9][a-z0-9._-]{0,63}`.
fn valid_namespace(name: &[u8]) -> bool {
    let head = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=64).contains(&name.len()) && head(&name[0]) && name[1..].iter().all(|c| head(c) || b"._-".contains(c))
}

// ---- generators ----

const HOSTILE: &[&str] = &[
    "..",
    ".",
    "../../etc/passwd",
    "a/../b",
    "/",
    "//",
    "%2e%2e",
    "%2F",
    "..%2F..%2Fetc",
    "%00",
    "a%00b",
    "%FF",
    "%C3%A9",
    "%",
    "%zz",
    "%%",
    "\0",
    " ",
    "a b",
    "é",
    "\u{202e}",
    "?",
    "#",
    "~",
    "\\..\\",
    "\r\nX-Injected: 1",
];

/// A key as it appears in the request target.
#[derive(Debug, Clone)]
enum Key {
    /// Bytes sent percent-encoded: the server must store exactly these bytes (or refuse them).
    Encoded(Vec<u8>),
    /// Bytes sent as they are, hostile to the HTTP parser as well.
    Raw(Vec<u8>),
}

fn key() -> impl Strategy<Value = Key> {
    let token = prop::sample::select(HOSTILE).prop_map(|s| s.as_bytes().to_vec());
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 1..=24).prop_map(Key::Encoded),
        2 => proptest::collection::vec(token.clone(), 1..4).prop_map(|t| Key::Encoded(t.concat())),
        1 => (MAX_KEY - 2..=MAX_KEY + 2).prop_map(|n| Key::Encoded(vec![b'k'; n])),
        1 => any::<String>().prop_filter("a key", |s| !s.is_empty()).prop_map(|s| Key::Encoded(s.into_bytes())),
        3 => proptest::collection::vec(token, 1..4).prop_map(|t| Key::Raw(t.concat())),
        1 => any::<String>().prop_filter("a key", |s| !s.is_empty()).prop_map(|s| Key::Raw(s.into_bytes())),
        1 => prop::sample::select(vec![4096usize, 20_000, 70_000]).prop_map(|n| Key::Raw(vec![b'k'; n])),
    ]
}

/// A namespace segment as it appears in the request target.
#[derive(Debug, Clone)]
enum Ns {
    Encoded(Vec<u8>),
    Raw(Vec<u8>),
}

fn namespace() -> impl Strategy<Value = Ns> {
    let token = prop::sample::select(HOSTILE).prop_map(|s| s.as_bytes().to_vec());
    prop_oneof![
        2 => "[a-z0-9][a-z0-9._-]{0,63}".prop_map(|s| Ns::Encoded(s.into_bytes())),
        2 => "[a-zA-Z0-9._/ \0é%-]{0,70}".prop_map(|s| Ns::Encoded(s.into_bytes())),
        1 => "[a-z0-9]{64,66}".prop_map(|s| Ns::Encoded(s.into_bytes())),
        1 => prop::sample::select(vec!["Default", "DEFAULT", "default.", "default/x", "default\0", "%64efault"])
            .prop_map(|s| Ns::Encoded(s.as_bytes().to_vec())),
        2 => proptest::collection::vec(token, 1..3).prop_map(|t| Ns::Raw(t.concat())),
        1 => any::<String>().prop_map(|s| Ns::Raw(s.into_bytes())),
    ]
    .prop_filter("not the served namespace", |ns| ns.name() != b"default")
}

impl Ns {
    /// The name the server sees: the decoded path segment (a raw one ends at `/`, `?` or `#`).
    fn name(&self) -> Vec<u8> {
        match self {
            Ns::Encoded(bytes) => bytes.clone(),
            Ns::Raw(bytes) => decode(bytes.split(|b| b"/?#".contains(b)).next().unwrap_or_default()),
        }
    }
}

/// Bodies that are not a valid request of a JSON route.
fn bad_json() -> impl Strategy<Value = Vec<u8>> {
    let fixed = prop::sample::select(vec![
        "",
        "{",
        "}",
        "[]",
        "null",
        "true",
        "\"x\"",
        "12",
        "{\"peer_id\": 5}",
        "{\"peer_id\": null}",
        "{\"peer_id\": [\"x\"]}",
        "{\"peer_id\": \"12D3KooW\"}",
        "{\"peer_id\": \"\\u0000\"}",
        "{\"peer_id\": \"x\", \"addrs\": \"not a list\"}",
        "{\"peer_id\": \"x\", \"addrs\": [1, 2]}",
        "{\"peer_id\": \"x\", \"role\": \"king\"}",
        "{\"to\": 5}",
        "{\"to\": \"not a peer\"}",
        "{\"to\": \"\"}",
        "{\"to\": [\"\\ud800\"]}",
        "{\"to\": \"x\"} trailing",
        "{\"peer_id\": \"x\",}",
        "{'peer_id': 'x'}",
        "{\"peer_id\": 1e999999}",
        "\u{feff}{}",
    ])
    .prop_map(|s| s.as_bytes().to_vec());
    prop_oneof![
        4 => fixed,
        2 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => (1usize..=BODY_LIMIT / 2).prop_map(|depth| "[".repeat(depth).into_bytes()),
        1 => (1usize..=BODY_LIMIT / 4).prop_map(|depth| {
            let mut s = "{\"to\":".repeat(depth);
            s.push('1');
            s.push_str(&"}".repeat(depth));
            s.into_bytes()
        }),
        1 => (BODY_LIMIT + 1..=BODY_LIMIT * 2).prop_map(|n| {
            let mut s = b"{\"peer_id\": \"".to_vec();
            s.resize(n, b'x');
            s
        }),
    ]
}

/// Whether `body` would be a valid request of a JSON route (a real membership change): those
/// are not hostile input and are left out.
fn acts(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct AddMember {
        peer_id: String,
        #[serde(default)]
        #[allow(dead_code)]
        addrs: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct TransferLeader {
        #[serde(default)]
        to: Option<String>,
    }
    let is_peer = |s: &str| s.parse::<libp2p_identity::PeerId>().is_ok();
    serde_json::from_slice::<AddMember>(body).is_ok_and(|m| is_peer(&m.peer_id))
        || serde_json::from_slice::<TransferLeader>(body).is_ok_and(|t| t.to.as_deref().is_none_or(is_peer))
}

// ---- properties ----

async fn check_key(served: &Served, key: Key, value: Vec<u8>, query: &str) -> Result<(), TestCaseError> {
    let path = match &key {
        Key::Encoded(bytes) => encode(bytes),
        Key::Raw(bytes) => bytes.clone(),
    };
    let mut target = b"/v1/kv/default/".to_vec();
    target.extend_from_slice(&path);
    let put = send(served, "PUT", &target, &[], &value).await?;
    let mut get_target = target.clone();
    get_target.extend_from_slice(query.as_bytes());
    let get = send(served, "GET", &get_target, &[], b"").await?;
    match &key {
        Key::Encoded(bytes) => {
            let expected = match std::str::from_utf8(bytes) {
                Err(_) => 400,
                Ok(_) if bytes.len() > MAX_KEY => 413,
                Ok(_) => 200,
            };
            prop_assert_eq!(put.status, expected, "PUT {}: {}", show(&target), show(&put.body));
            if expected == 200 {
                // Stored as exactly the decoded bytes: readable under another encoding of them.
                let mut other = b"/v1/kv/default/".to_vec();
                for b in bytes {
                    other.extend_from_slice(format!("%{b:02x}").as_bytes());
                }
                let again = send(served, "GET", &other, &[], b"").await?;
                prop_assert_eq!(again.status, 200, "GET {}: {}", show(&other), show(&again.body));
                prop_assert_eq!(&again.body, &value);
            }
        }
        Key::Raw(_) => {
            prop_assert!(
                matches!(put.status, 200 | 400 | 404 | 413 | 414 | 431),
                "PUT {} answered {}: {}",
                show(&target),
                put.status,
                show(&put.body)
            );
        }
    }
    if put.status == 200 && query.is_empty() {
        prop_assert_eq!(get.status, 200, "GET {}: {}", show(&get_target), show(&get.body));
        prop_assert_eq!(&get.body, &value);
    } else {
        prop_assert!(get.status < 500);
    }
    Ok(())
}

/// Hostile keys are stored as opaque bytes or refused with a 4xx.
#[test]
fn hostile_keys_are_opaque_or_refused() {
    let rt = runtime();
    let served = serve(&rt);
    let query =
        prop::sample::select(vec!["", "", "", "?consistency=stale", "?consistency=bogus", "?consistency=%00", "?%%%"]);
    let value = proptest::collection::vec(any::<u8>(), 0..=64);
    run(&rt, &served, (key(), value, query), async |served, (key, value, query)| {
        check_key(served, key, value, query).await
    });
}

/// Hostile namespace segments are refused (400) or unknown (404), and none gets created.
#[test]
fn hostile_namespaces_are_refused() {
    let rt = runtime();
    let served = serve(&rt);
    run(&rt, &served, namespace(), async |served, ns| {
        let decoded = ns.name();
        let (segment, uri_safe) = match &ns {
            Ns::Encoded(bytes) => (encode(bytes), true),
            Ns::Raw(bytes) => (bytes.clone(), false),
        };
        // An encoded name that is valid but not served is unknown (404), an empty one is
        // invalid (400) or matches no route (404), anything else is invalid (400). A raw segment may also break the
        // request line (400), or, holding `/`, `?` or `#`, lead to no route (404) or to a route
        // without that method (405).
        let expected: &[u16] = match (uri_safe, std::str::from_utf8(&decoded).is_ok() && valid_namespace(&decoded)) {
            (true, true) => &[404],
            (true, false) if decoded.is_empty() => &[400, 404],
            (true, false) => &[400],
            (false, _) => &[400, 404, 405],
        };
        let join = |prefix: &str, suffix: &str| [prefix.as_bytes(), &segment, suffix.as_bytes()].concat();
        for (method, target, body) in [
            ("PUT", join("/v1/kv/", "/k"), &b"v"[..]),
            ("GET", join("/v1/kv/", "/k"), b""),
            ("GET", join("/v1/kv/", ""), b""),
            ("GET", join("/v1/ns/", "/status"), b""),
            ("GET", join("/v1/ns/", "/members"), b""),
        ] {
            let reply = send(served, method, &target, &[], body).await?;
            prop_assert!(
                expected.contains(&reply.status),
                "{} {} answered {}, expected one of {:?}: {}",
                method,
                show(&target),
                reply.status,
                expected,
                show(&reply.body)
            );
            if !uri_safe && reply.status == 404 && !decoded.is_empty() && !valid_namespace(&decoded) {
                // Only a missing route may say 404 for an invalid name.
                prop_assert!(!show(&reply.body).contains("unknown_namespace"), "{}", show(&reply.body));
            }
        }
        prop_assert_eq!(served.node.clusters().len(), 1, "a namespace appeared");
        Ok(())
    });
}

/// Values over the limit are refused with 413, before an announced huge body is read.
#[test]
fn oversized_bodies_are_refused_early() {
    let rt = runtime();
    let served = serve(&rt);
    rt.block_on(async {
        let at_limit = send(&served, "PUT", b"/v1/kv/default/edge", &[], &[b'v'; MAX_VALUE]).await.unwrap();
        assert_eq!(at_limit.status, 200, "{}", show(&at_limit.body));
        let over = send(&served, "PUT", b"/v1/kv/default/edge", &[], &[b'v'; MAX_VALUE + 1]).await.unwrap();
        assert_eq!(over.status, 413, "{}", show(&over.body));
    });
    #[derive(Debug, Clone)]
    enum Oversized {
        /// The whole body is sent.
        Whole(usize),
        /// `declared` bytes are announced and only `sent` sent; the connection stays open.
        Announced { declared: usize, sent: usize },
    }
    let strategy = prop_oneof![
        (MAX_VALUE + 1..=BODY_LIMIT * 4).prop_map(Oversized::Whole),
        (BODY_LIMIT + 1..=1 << 30, BODY_LIMIT + 1..=BODY_LIMIT + 4096)
            .prop_map(|(declared, sent)| Oversized::Announced { declared: declared.max(sent + 1), sent }),
    ];
    run(&rt, &served, (strategy, any::<bool>()), async |served, (oversized, json)| {
        let headers: &[(&str, &str)] = if json { &[("Content-Type", "application/json")] } else { &[] };
        let (declared, sent) = match oversized {
            Oversized::Whole(n) => (n, n),
            Oversized::Announced { declared, sent } => (declared, sent),
        };
        let bytes = request("PUT", b"/v1/kv/default/big", headers, &vec![b'x'; sent], declared);
        let reply = exchange(served.addr, &bytes).await?;
        prop_assert_eq!(reply.status, 413, "declared {} sent {}: {}", declared, sent, show(&reply.body));
        Ok(())
    });
}

/// Malformed JSON on the JSON routes is a client error, never a 5xx nor a change.
#[test]
fn malformed_json_is_a_client_error() {
    let rt = runtime();
    let served = serve(&rt);
    let route = prop::sample::select(vec!["/v1/ns/default/members", "/v1/ns/default/transfer-leader"]);
    let content_type = prop::sample::select(vec![
        Some("application/json"),
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        None,
    ]);
    let strategy =
        (route, bad_json(), content_type).prop_filter("not a valid request", |(route, body, content_type)| {
            // transfer-leader with no JSON content type ignores the body and transfers: not hostile.
            let body_ignored = route.ends_with("transfer-leader") && content_type.is_none_or(|c| !c.contains("json"));
            !acts(body) && !body_ignored
        });
    run(&rt, &served, strategy, async |served, (route, body, content_type)| {
        let headers: Vec<(&str, &str)> = content_type.map(|c| ("Content-Type", c)).into_iter().collect();
        let reply = send(served, "POST", route.as_bytes(), &headers, &body).await?;
        prop_assert!(
            matches!(reply.status, 400 | 413 | 415 | 422),
            "POST {} {:?} with {:?} answered {}: {}",
            route,
            content_type,
            show(&body),
            reply.status,
            show(&reply.body)
        );
        let members = send(served, "GET", b"/v1/ns/default/members", &[], b"").await?;
        prop_assert_eq!(members.status, 200);
        let members: serde_json::Value = serde_json::from_slice(&members.body).expect("members are JSON");
        prop_assert_eq!(members.as_array().map(Vec::len), Some(1), "{}", members);
        Ok(())
    });
}
