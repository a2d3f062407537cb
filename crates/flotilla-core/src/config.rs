//! The one configuration struct, shared by the library and the CLI.
//!
//! Defaults live here only: the CLI derives its flags from [`Config`] (feature `clap`) and the
//! library uses [`Config::default`]. [`Config::validate`] refuses inconsistent values before
//! anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin_token::AdminToken;
use crate::keyring::Keyring;
use crate::namespace::Namespace;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./flotilla-data";
/// Default libp2p listen address.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/7000";
/// Default HTTP listen address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7070";
/// Default namespace.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default cap on concurrent HTTP connections.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 1024;
/// Default time a client has to send a request's headers (ms).
pub const DEFAULT_HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;

/// Revisions of history kept behind the current one by automatic compaction.
pub const DEFAULT_COMPACT_KEEP_REVISIONS: u64 = 100_000;
/// Default interval between scheduled backups (`--backup-every`).
pub const DEFAULT_BACKUP_EVERY: &str = "1h";
/// Default number of scheduled backups kept per namespace (`--backup-keep`).
pub const DEFAULT_BACKUP_KEEP: usize = 24;
/// Largest accepted `backup_keep` (pruning lists the directory; keep it bounded).
pub const MAX_BACKUP_KEEP: usize = 10_000;
/// Default of `slow_request_ms`: requests slower than this log where their time went.
pub const DEFAULT_SLOW_REQUEST_MS: u64 = 500;

/// Default size of the store's page cache, MiB (`--store-cache-mib`).
pub const DEFAULT_STORE_CACHE_MIB: usize = 1024;
/// Default `wal_segment_mib`.
pub const DEFAULT_WAL_SEGMENT_MIB: u64 = 64;
/// Largest accepted `wal_segment_mib`.
pub const MAX_WAL_SEGMENT_MIB: u64 = 1024;
/// Largest accepted `store_cache_mib` (1 TiB).
pub const MAX_STORE_CACHE_MIB: usize = 1 << 20;

/// Shortest accepted `backup_every`.
pub const MIN_BACKUP_EVERY: Duration = Duration::from_secs(1);
/// Largest accepted `http_max_connections`.
pub const MAX_HTTP_MAX_CONNECTIONS: usize = 1 << 20;

/// Named timing profiles.
///
/// ```
/// use flotilla_core::{Config, Preset};
///
/// let config = Config { preset: Preset::Regional, ..Config::default() };
/// assert_eq!(config.timing(), Preset::Regional.timing()); // no override
/// assert!(Preset::Regional.timing().election_max_ms > Preset::Local.timing().election_max_ms);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// One LAN or one machine: sub-second elections.
    #[default]
    Local,
    /// One region, several zones (RTT up to ~10 ms).
    Regional,
    /// Across continents (RTT up to ~300 ms).
    Global,
}

/// Raft timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Interval between leader heartbeats.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_max_ms: u64,
}

impl Preset {
    /// The timing this preset stands for.
    ///
    /// ```
    /// let timing = flotilla_core::Preset::Local.timing();
    /// assert!(timing.heartbeat_ms < timing.election_min_ms && timing.election_min_ms < timing.election_max_ms);
    /// ```
    pub fn timing(self) -> Timing {
        match self {
            // openraft's leader lease is the maximum election timeout, and failover takes
            // about two election timeouts after it (the first candidate is refused while the
            // lease runs): 600 ms keeps a failover under etcd's default ~1.2 s, and 300 ms is
            // still six missed heartbeats.
            Preset::Local => Timing { heartbeat_ms: 50, election_min_ms: 300, election_max_ms: 600 },
            Preset::Regional => Timing { heartbeat_ms: 250, election_min_ms: 1000, election_max_ms: 2000 },
            Preset::Global => Timing { heartbeat_ms: 1000, election_min_ms: 4000, election_max_ms: 8000 },
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Configuration of a Flotilla node.
///
/// ```
/// use flotilla_core::Config;
///
/// let config = Config {
///     listen: vec!["/ip4/127.0.0.1/tcp/7000".into()], // loopback: no cluster key needed
///     expect: Some(3),
///     ..Config::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Config {
    /// Directory holding the node key, the store and snapshots.
    #[cfg_attr(feature = "clap", arg(long, env = "FLOTILLA_DATA_DIR", default_value = DEFAULT_DATA_DIR))]
    pub data_dir: PathBuf,

    /// libp2p multiaddresses to listen on (repeatable). An address other than loopback requires
    /// `--cluster-key-file` (or the explicit `--insecure-no-cluster-key`).
    #[cfg_attr(feature = "clap", arg(long = "listen", default_value = DEFAULT_LISTEN, num_args = 1..))]
    pub listen: Vec<String>,

    /// HTTP API address. An address other than loopback requires `--admin-token-file`.
    #[cfg_attr(feature = "clap", arg(long = "http", env = "FLOTILLA_HTTP", default_value = DEFAULT_HTTP))]
    pub http: SocketAddr,

    /// File holding the admin token (whitespace trimmed, at least 16 bytes, mode 0600 or
    /// stricter). When set, the membership and admin routes (add/remove member, transfer
    /// leadership, dissolve) require `Authorization: Bearer <token>`; key/value routes stay
    /// open. Required when `--http` is not a loopback address.
    #[cfg_attr(feature = "clap", arg(long, env = "FLOTILLA_ADMIN_TOKEN_FILE"))]
    pub admin_token_file: Option<PathBuf>,

    /// Keyring file of the cluster key (see [`crate::keyring`]; mode 0600, one key per line,
    /// the first seals; `flotilla keygen` writes one). When set, all node-to-node traffic is
    /// sealed with AES-256-GCM and peers without a key of the keyring are refused. Every node of
    /// a cluster needs a key in common.
    #[cfg_attr(feature = "clap", arg(long, env = "FLOTILLA_CLUSTER_KEY_FILE"))]
    pub cluster_key_file: Option<PathBuf>,

    /// Run the cluster plane on a non-loopback listen address without a cluster key: any host
    /// that reaches the port can then join, receive every value and, once promoted, vote.
    /// Logged as a WARN line at start and shown in `GET /v1/status`. Only for trusted, isolated
    /// networks; see docs/SECURITY.md.
    #[cfg_attr(feature = "clap", arg(long))]
    pub insecure_no_cluster_key: bool,

    /// Also seal the values, log entries and snapshots in the data directory with keys derived
    /// from the keyring, so a copied data directory reveals no values. Needs
    /// `--cluster-key-file`; the node then cannot start without its keyring.
    #[cfg_attr(feature = "clap", arg(long))]
    pub encrypt_at_rest: bool,

    /// Memory for the store's page cache, MiB: the pages of `flotilla.redb` it keeps after
    /// reading or writing them. Pages beyond it are read again from the file (usually from
    /// the kernel's page cache). Bounds most of a node's memory under a large data set.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "FLOTILLA_STORE_CACHE_MIB", default_value_t = DEFAULT_STORE_CACHE_MIB)
    )]
    pub store_cache_mib: usize,

    /// Keep the Raft logs in a write-ahead log of segment files (one `fdatasync` per group
    /// commit) rather than in the store's tables; on by default (`--write-ahead-log=false`
    /// for tables). An existing data directory with log tables is converted at start (once;
    /// a data directory with a write-ahead log keeps it whatever this says). With
    /// `--encrypt-at-rest`, its entries are sealed like every other record. See
    /// crates/flotilla-store/DESIGN-log.md.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "FLOTILLA_WRITE_AHEAD_LOG",
            default_value_t = true,
            action = clap::ArgAction::Set,
            num_args = 0..=1,
            default_missing_value = "true",
        )
    )]
    pub write_ahead_log: bool,

    /// Largest size of a write-ahead log segment, MiB (`--write-ahead-log`; a new log's first
    /// segment is 1 MiB and each next one doubles up to this). Two exist at any time (the one
    /// in use and the next, made ahead), plus those still holding entries not yet covered by a
    /// snapshot.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_WAL_SEGMENT_MIB))]
    pub wal_segment_mib: u64,

    /// Most HTTP connections served at once; further connections wait in the listen backlog
    /// until one closes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_HTTP_MAX_CONNECTIONS))]
    pub http_max_connections: usize,

    /// Time an HTTP client has to send a request's headers, and the longest a connection may
    /// sit idle between requests or leave a response unread (ms). A request's body and answer
    /// must then be complete within this plus the request timeout.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_HTTP_HEADER_TIMEOUT_MS))]
    pub http_header_timeout_ms: u64,

    /// Serve etcd's v3 gRPC API (cleartext HTTP/2) on this address, for the namespace
    /// `--etcd-namespace` (see docs/ETCD.md); off when unset. It changes no membership, so
    /// unlike `--http` it needs no admin token off loopback; its KV access is as open as the
    /// HTTP API's key/value routes.
    #[cfg_attr(feature = "clap", arg(long, env = "FLOTILLA_ETCD_LISTEN"))]
    pub etcd_listen: Option<SocketAddr>,

    /// The namespace the etcd endpoint serves.
    #[cfg_attr(feature = "clap", arg(long, env = "FLOTILLA_ETCD_NAMESPACE", default_value = DEFAULT_NAMESPACE))]
    pub etcd_namespace: Namespace,

    /// Multiaddress of any existing member to join through (repeatable). Without it, a node with
    /// no state founds each namespace as a single-node cluster.
    #[cfg_attr(feature = "clap", arg(long = "bootstrap", num_args = 1..))]
    pub bootstrap: Vec<String>,

    /// Namespaces (independent Raft groups) to serve (repeatable).
    #[cfg_attr(feature = "clap", arg(long = "namespace", default_value = DEFAULT_NAMESPACE, num_args = 1..))]
    pub namespaces: Vec<Namespace>,

    /// Timing preset.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "local"))]
    pub preset: Preset,

    /// Override the preset's heartbeat interval (ms).
    #[cfg_attr(feature = "clap", arg(long))]
    pub heartbeat_ms: Option<u64>,

    /// Override the preset's minimum election timeout (ms).
    #[cfg_attr(feature = "clap", arg(long))]
    pub election_min_ms: Option<u64>,

    /// Override the preset's maximum election timeout (ms).
    #[cfg_attr(feature = "clap", arg(long))]
    pub election_max_ms: Option<u64>,

    /// Quiesce a namespace's Raft group after this long without writes, reads or membership
    /// changes (ms): its leader stops heartbeats and its followers their election timers, and
    /// one node-level liveness probe per peer replaces them (see
    /// `crates/flotilla/DESIGN-namespaces.md`). Followers quiesce after two election timeouts
    /// (at most this), and a leader that never served a client soon after them. Default: 20
    /// maximum election timeouts; 0 never quiesces.
    #[cfg_attr(feature = "clap", arg(long))]
    pub quiesce_after_ms: Option<u64>,

    /// Largest accepted key, in bytes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 4096))]
    pub max_key_bytes: usize,

    /// Largest accepted value, in bytes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1024 * 1024))]
    pub max_value_bytes: usize,

    /// Largest frame accepted on the wire, in bytes.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 16 * 1024 * 1024))]
    pub max_frame_bytes: usize,

    /// Take a snapshot after this many applied entries since the last one. A snapshot copies
    /// the whole state, so taking one too often costs more than the log it lets go; the default
    /// is etcd's (`--snapshot-count`).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 100_000))]
    pub snapshot_every: u64,

    /// Entries kept in the log behind a snapshot, so lagging followers can catch up without one.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1_000))]
    pub keep_logs_behind_snapshot: u64,

    /// Deadline of a client request, including forwarding and retries (ms).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 5_000))]
    pub request_timeout_ms: u64,

    /// Safe formation: found nothing until this many founders see each other and agree on the
    /// founder set. Without it, a bounded discovery window decides founders and late joiners.
    #[cfg_attr(feature = "clap", arg(long))]
    pub expect: Option<usize>,

    /// Found a single-node cluster at once, without discovery. Only acts on empty state; a
    /// restart with it set rejoins as usual.
    #[cfg_attr(feature = "clap", arg(long))]
    pub force_bootstrap: bool,

    /// Length of the discovery window before founding without `--expect` (ms); default from
    /// the preset.
    #[cfg_attr(feature = "clap", arg(long))]
    pub discovery_window_ms: Option<u64>,

    /// Disable mDNS discovery on the local network.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_mdns: bool,

    /// Interval between mDNS queries (ms).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2_000))]
    pub mdns_query_interval_ms: u64,

    /// Voters a namespace aims for; further members stay learners (read replicas) and are
    /// promoted when a voter is lost.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 5))]
    pub voter_target: usize,

    /// Dead voters are never removed below this many voters.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 3))]
    pub min_quorum: usize,

    /// A member unreachable from the leader for this long is replaced or removed (ms); 0
    /// disables automatic removal.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 30_000))]
    pub dead_member_timeout_ms: u64,

    /// Automatic compaction: the leader of each namespace keeps this many revisions of history
    /// behind the current one and compacts the rest (0: no compaction by count).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_COMPACT_KEEP_REVISIONS))]
    pub compact_keep_revisions: u64,

    /// Automatic compaction: keep the history of at least this many seconds (0: no compaction
    /// by age). With both settings, the history either one keeps is kept.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub compact_keep_secs: u64,

    /// Leader balancing: a node that leads clearly more than its share of the namespaces
    /// hands some to voters that lead fewer (`--no-leader-balance` turns it off).
    #[cfg_attr(feature = "clap", arg(long = "no-leader-balance", action = clap::ArgAction::SetFalse))]
    pub leader_balance: bool,

    /// Scheduled backups: write a backup of every namespace this node serves into this
    /// directory every `--backup-every` (files `<namespace>-<unix ms>.flbk`, written atomically),
    /// keeping the newest `--backup-keep` of each namespace. Backups are plaintext, even with
    /// `--encrypt-at-rest`. Off when unset.
    #[cfg_attr(feature = "clap", arg(long, env = "FLOTILLA_BACKUP_DIR"))]
    pub backup_dir: Option<PathBuf>,

    /// Interval between scheduled backups: a number with a unit, `ms`, `s`, `m` or `h`
    /// (`90s`, `15m`, `1h`); at least 1 s.
    #[cfg_attr(feature = "clap", arg(long, value_parser = parse_duration, default_value = DEFAULT_BACKUP_EVERY))]
    pub backup_every: Duration,

    /// Scheduled backups kept per namespace (the oldest beyond it are removed).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_BACKUP_KEEP))]
    pub backup_keep: usize,

    /// A client write or linearizable read that takes longer than this (ms) logs one warning
    /// with where its time went: waking, admission, forwarding, proposal to commit, apply, read
    /// index, waiting for the apply (0 logs every request).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = DEFAULT_SLOW_REQUEST_MS))]
    pub slow_request_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: vec![DEFAULT_LISTEN.to_string()],
            http: DEFAULT_HTTP.parse().expect("default HTTP address parses"),
            admin_token_file: None,
            cluster_key_file: None,
            insecure_no_cluster_key: false,
            encrypt_at_rest: false,
            store_cache_mib: DEFAULT_STORE_CACHE_MIB,
            write_ahead_log: true,
            wal_segment_mib: DEFAULT_WAL_SEGMENT_MIB,
            http_max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            http_header_timeout_ms: DEFAULT_HTTP_HEADER_TIMEOUT_MS,
            etcd_listen: None,
            etcd_namespace: Namespace::new(DEFAULT_NAMESPACE).expect("default namespace is valid"),
            bootstrap: Vec::new(),
            namespaces: vec![Namespace::new(DEFAULT_NAMESPACE).expect("default namespace is valid")],
            preset: Preset::Local,
            heartbeat_ms: None,
            election_min_ms: None,
            election_max_ms: None,
            quiesce_after_ms: None,
            max_key_bytes: 4096,
            max_value_bytes: 1024 * 1024,
            max_frame_bytes: 16 * 1024 * 1024,
            snapshot_every: 100_000,
            keep_logs_behind_snapshot: 1_000,
            request_timeout_ms: 5_000,
            expect: None,
            force_bootstrap: false,
            discovery_window_ms: None,
            no_mdns: false,
            mdns_query_interval_ms: 2_000,
            voter_target: 5,
            min_quorum: 3,
            dead_member_timeout_ms: 30_000,
            leader_balance: true,
            compact_keep_revisions: DEFAULT_COMPACT_KEEP_REVISIONS,
            compact_keep_secs: 0,
            backup_dir: None,
            backup_every: parse_duration(DEFAULT_BACKUP_EVERY).expect("the default backup interval parses"),
            backup_keep: DEFAULT_BACKUP_KEEP,
            slow_request_ms: DEFAULT_SLOW_REQUEST_MS,
        }
    }
}

impl Config {
    /// The effective timing: the preset with any overrides applied.
    ///
    /// ```
    /// use flotilla_core::Config;
    ///
    /// let config = Config { election_max_ms: Some(900), ..Config::default() };
    /// assert_eq!(config.timing().election_max_ms, 900);
    /// assert_eq!(config.timing().heartbeat_ms, config.preset.timing().heartbeat_ms); // not overridden
    /// ```
    pub fn timing(&self) -> Timing {
        let base = self.preset.timing();
        Timing {
            heartbeat_ms: self.heartbeat_ms.unwrap_or(base.heartbeat_ms),
            election_min_ms: self.election_min_ms.unwrap_or(base.election_min_ms),
            election_max_ms: self.election_max_ms.unwrap_or(base.election_max_ms),
        }
    }

    /// How long an idle namespace waits before it quiesces; `None` when quiescing is off.
    ///
    /// ```
    /// use flotilla_core::Config;
    ///
    /// assert_eq!(Config { quiesce_after_ms: Some(0), ..Config::default() }.quiesce_after(), None); // off
    /// assert!(Config::default().quiesce_after().is_some());
    /// ```
    pub fn quiesce_after(&self) -> Option<Duration> {
        match self.quiesce_after_ms {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => Some(Duration::from_millis(self.timing().election_max_ms * 20)),
        }
    }

    /// How long a fresh node without `--expect` looks for peers before founding.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flotilla_core::Config;
    ///
    /// let config = Config { discovery_window_ms: Some(3_000), ..Config::default() };
    /// assert_eq!(config.discovery_window(), Duration::from_secs(3));
    /// ```
    pub fn discovery_window(&self) -> Duration {
        let default = match self.preset {
            Preset::Local => 1_500,
            Preset::Regional => 5_000,
            Preset::Global => 15_000,
        };
        Duration::from_millis(self.discovery_window_ms.unwrap_or(default))
    }

    /// Time after which an unreachable member is replaced or removed, if enabled.
    ///
    /// ```
    /// use flotilla_core::Config;
    ///
    /// let config = Config { dead_member_timeout_ms: 0, ..Config::default() };
    /// assert_eq!(config.dead_member_timeout(), None); // dead members are never replaced
    /// ```
    pub fn dead_member_timeout(&self) -> Option<Duration> {
        (self.dead_member_timeout_ms > 0).then(|| Duration::from_millis(self.dead_member_timeout_ms))
    }

    /// How long a client request may take before it logs where its time went.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flotilla_core::Config;
    ///
    /// let config = Config { slow_request_ms: 250, ..Config::default() };
    /// assert_eq!(config.slow_request(), Duration::from_millis(250));
    /// ```
    pub fn slow_request(&self) -> Duration {
        Duration::from_millis(self.slow_request_ms)
    }

    /// The request deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flotilla_core::Config;
    ///
    /// let config = Config { request_timeout_ms: 10_000, ..Config::default() };
    /// assert_eq!(config.request_timeout(), Duration::from_secs(10));
    /// ```
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long an HTTP client has to send a request's headers; also the longest an HTTP
    /// connection may sit idle or leave a response unread.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flotilla_core::Config;
    ///
    /// let config = Config { http_header_timeout_ms: 2_000, ..Config::default() };
    /// assert_eq!(config.http_header_timeout(), Duration::from_secs(2));
    /// ```
    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_timeout_ms)
    }

    /// Deadline of an HTTP request once its headers are in: reading the body and answering
    /// (the request timeout plus the header timeout as slack).
    ///
    /// ```
    /// let config = flotilla_core::Config::default();
    /// assert_eq!(config.http_request_deadline(), config.request_timeout() + config.http_header_timeout());
    /// ```
    pub fn http_request_deadline(&self) -> Duration {
        self.request_timeout() + self.http_header_timeout()
    }

    /// The admin token, read from [`Config::admin_token_file`] (see [`AdminToken::load`]);
    /// `None` when no file is configured.
    ///
    /// ```
    /// let config = flotilla_core::Config { admin_token_file: None, ..Default::default() };
    /// assert!(config.admin_token().expect("nothing to read").is_none());
    /// ```
    pub fn admin_token(&self) -> Result<Option<AdminToken>, ConfigError> {
        self.admin_token_file.as_deref().map(AdminToken::load).transpose()
    }

    /// The cluster keyring, read from [`Config::cluster_key_file`] (see [`Keyring::load`]);
    /// `None` when no file is configured.
    ///
    /// ```
    /// let config = flotilla_core::Config { cluster_key_file: None, ..Default::default() };
    /// assert!(config.keyring().expect("nothing to read").is_none()); // traffic is not sealed
    /// ```
    pub fn keyring(&self) -> Result<Option<Keyring>, ConfigError> {
        self.cluster_key_file.as_deref().map(Keyring::load).transpose()
    }

    /// Check the configuration for values that cannot work together. This reads the admin
    /// token file and the keyring file, if configured, and refuses them when they are
    /// unreadable, malformed or accessible by group or others.
    ///
    /// ```
    /// use flotilla_core::Config;
    ///
    /// let config = Config { listen: vec!["/ip4/127.0.0.1/tcp/0".into()], ..Config::default() };
    /// assert!(config.validate().is_ok());
    /// assert!(Config { force_bootstrap: true, expect: Some(3), ..config }.validate().is_err()); // contradict each other
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = self.timing();
        let err = |m: String| Err(ConfigError(m));
        if t.heartbeat_ms == 0 {
            return err("heartbeat must be at least 1 ms".into());
        }
        if t.election_min_ms <= t.heartbeat_ms * 2 {
            return err(format!(
                "election timeout min ({} ms) must exceed twice the heartbeat ({} ms)",
                t.election_min_ms, t.heartbeat_ms
            ));
        }
        if t.election_max_ms <= t.election_min_ms {
            return err(format!(
                "election timeout max ({} ms) must exceed min ({} ms)",
                t.election_max_ms, t.election_min_ms
            ));
        }
        if self.namespaces.is_empty() {
            return err("at least one namespace is required".into());
        }
        let mut names: Vec<_> = self.namespaces.iter().collect();
        names.sort();
        names.dedup();
        if names.len() != self.namespaces.len() {
            return err("namespaces are listed more than once".into());
        }
        if self.listen.is_empty() {
            return err("at least one listen address is required".into());
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return err("key and value limits must be positive".into());
        }
        let needed = self.max_key_bytes + self.max_value_bytes + 64 * 1024;
        if self.max_frame_bytes < needed {
            return err(format!(
                "max frame ({} bytes) must hold the largest key and value plus overhead ({needed} bytes)",
                self.max_frame_bytes
            ));
        }
        if self.snapshot_every == 0 {
            return err("snapshot_every must be positive".into());
        }
        if self.expect == Some(0) {
            return err("--expect must be at least 1".into());
        }
        if self.force_bootstrap && self.expect.is_some() {
            return err("--force-bootstrap and --expect contradict each other".into());
        }
        if self.voter_target == 0 {
            return err("voter_target must be at least 1".into());
        }
        if self.min_quorum == 0 || self.min_quorum > self.voter_target {
            return err(format!(
                "min_quorum ({}) must be between 1 and voter_target ({})",
                self.min_quorum, self.voter_target
            ));
        }
        if self.mdns_query_interval_ms == 0 {
            return err("mdns_query_interval_ms must be positive".into());
        }
        if let Some(timeout) = self.dead_member_timeout() {
            if timeout.as_millis() < u128::from(t.election_max_ms) * 2 {
                return err(format!(
                    "dead_member_timeout ({} ms) must be at least twice the election timeout max",
                    self.dead_member_timeout_ms
                ));
            }
        }
        if self.request_timeout_ms < t.election_max_ms {
            return err(format!(
                "request timeout ({} ms) must be at least the election timeout max ({} ms)",
                self.request_timeout_ms, t.election_max_ms
            ));
        }
        if self.http_max_connections == 0 || self.http_max_connections > MAX_HTTP_MAX_CONNECTIONS {
            return err(format!(
                "http_max_connections ({}) must be between 1 and {MAX_HTTP_MAX_CONNECTIONS}",
                self.http_max_connections
            ));
        }
        if self.http_header_timeout_ms == 0 {
            return err("http_header_timeout_ms must be positive".into());
        }
        if self.store_cache_mib == 0 || self.store_cache_mib > MAX_STORE_CACHE_MIB {
            return err(format!(
                "store_cache_mib ({}) must be between 1 and {MAX_STORE_CACHE_MIB}",
                self.store_cache_mib
            ));
        }
        if self.admin_token_file.is_none() && !self.http.ip().is_loopback() {
            return err(format!(
                "the HTTP API would listen on {}, which is not a loopback address, without an admin token: \
                 anyone who reaches it could change membership. Pass --admin-token-file FILE \
                 (create one with: head -c 32 /dev/urandom | base64 > FILE && chmod 600 FILE), \
                 or listen on loopback (--http 127.0.0.1:PORT)",
                self.http
            ));
        }
        self.check_cluster_plane()?;
        self.check_backups()?;
        self.check_etcd()?;
        if self.encrypt_at_rest && self.cluster_key_file.is_none() {
            return err("--encrypt-at-rest needs --cluster-key-file".into());
        }
        if self.wal_segment_mib == 0 || self.wal_segment_mib > MAX_WAL_SEGMENT_MIB {
            return err(format!(
                "wal_segment_mib ({}) must be between 1 and {MAX_WAL_SEGMENT_MIB}",
                self.wal_segment_mib
            ));
        }
        let segment = self.wal_segment_mib.saturating_mul(1 << 20);
        if self.write_ahead_log && segment < (self.max_frame_bytes as u64).saturating_add(64 * 1024) {
            return err(format!(
                "a write-ahead log segment ({} MiB) must hold the largest entry, a frame of {} bytes plus 64 KiB: \
                 raise --wal-segment-mib or lower max_frame_bytes",
                self.wal_segment_mib, self.max_frame_bytes
            ));
        }
        self.admin_token()?;
        self.keyring()?;
        Ok(())
    }

    /// The etcd endpoint does not claim the HTTP API's address.
    fn check_etcd(&self) -> Result<(), ConfigError> {
        match self.etcd_listen {
            Some(addr) if addr.port() != 0 && addr == self.http => Err(ConfigError(format!(
                "--etcd-listen and --http both name {addr}: give the etcd endpoint its own port"
            ))),
            _ => Ok(()),
        }
    }

    /// The scheduled-backup settings are in range (checked whether or not a directory is set, so
    /// a typo shows before it matters).
    fn check_backups(&self) -> Result<(), ConfigError> {
        if self.backup_every < MIN_BACKUP_EVERY {
            return Err(ConfigError(format!(
                "--backup-every ({} ms) must be at least {} ms",
                self.backup_every.as_millis(),
                MIN_BACKUP_EVERY.as_millis()
            )));
        }
        if self.backup_keep == 0 || self.backup_keep > MAX_BACKUP_KEEP {
            return Err(ConfigError(format!(
                "--backup-keep ({}) must be between 1 and {MAX_BACKUP_KEEP}",
                self.backup_keep
            )));
        }
        Ok(())
    }

    /// The listen addresses that are not loopback: the cluster plane is reachable from other
    /// hosts through them.
    ///
    /// ```
    /// use flotilla_core::Config;
    ///
    /// let config = Config { listen: vec!["/ip4/127.0.0.1/tcp/7000".into(), "/ip4/0.0.0.0/tcp/7001".into()], ..Config::default() };
    /// assert_eq!(config.exposed_listen_addrs(), ["/ip4/0.0.0.0/tcp/7001"]);
    /// ```
    pub fn exposed_listen_addrs(&self) -> Vec<&str> {
        self.listen.iter().map(String::as_str).filter(|a| !is_loopback_multiaddr(a)).collect()
    }

    /// The cluster plane is at least as strict as the HTTP one: reachable from other hosts, it
    /// needs a cluster key, or the operator's explicit opt-out.
    fn check_cluster_plane(&self) -> Result<(), ConfigError> {
        if self.insecure_no_cluster_key && self.cluster_key_file.is_some() {
            return Err(ConfigError("--insecure-no-cluster-key and --cluster-key-file contradict each other".into()));
        }
        let exposed = self.exposed_listen_addrs();
        if exposed.is_empty() || self.cluster_key_file.is_some() || self.insecure_no_cluster_key {
            return Ok(());
        }
        Err(ConfigError(format!(
            "the cluster plane would listen on {}, which is not a loopback address, without a cluster key: \
             any host that reaches it could join, receive every value and vote. Create a key once with \
             `flotilla keygen /etc/flotilla/cluster.key`, copy that file (mode 0600) to every node and pass \
             --cluster-key-file /etc/flotilla/cluster.key (or FLOTILLA_CLUSTER_KEY_FILE); or listen on \
             loopback (--listen /ip4/127.0.0.1/tcp/7000); or, on a network you trust, accept an open \
             cluster plane with --insecure-no-cluster-key",
            exposed.join(", ")
        )))
    }
}

/// Whether a libp2p multiaddress (`/ip4/127.0.0.1/tcp/7000`, `/ip6/::1/tcp/7000`) listens on
/// loopback only. Anything that is not a loopback IP address (a wildcard, a LAN address, a DNS
/// name, an unparsable string) counts as exposed: the check errs on the safe side.
pub fn is_loopback_multiaddr(addr: &str) -> bool {
    let mut parts = addr.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(""), Some("ip4"), Some(ip)) => ip.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()),
        (Some(""), Some("ip6"), Some(ip)) => ip.parse::<std::net::Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
        _ => false,
    }
}

/// Parse a duration written as a whole number and a unit: `ms`, `s`, `m` or `h` (`500ms`,
/// `90s`, `15m`, `1h`). Used by `--backup-every`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration: it must start with a whole number"))?;
    let ms_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("{text:?}: unknown unit {other:?} (use ms, s, m or h)")),
    };
    n.checked_mul(ms_per_unit).map(Duration::from_millis).ok_or_else(|| format!("{text:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults with the cluster plane on loopback (the default listens on every interface,
    /// which needs a cluster key).
    fn local() -> Config {
        Config { listen: vec!["/ip4/127.0.0.1/tcp/7000".into()], ..Config::default() }
    }

    #[test]
    fn defaults_validate() {
        local().validate().unwrap();
        for preset in [Preset::Local, Preset::Regional, Preset::Global] {
            let c = Config { preset, request_timeout_ms: 20_000, ..local() };
            c.validate().unwrap();
        }
    }

    #[test]
    fn non_loopback_listen_needs_a_cluster_key_or_the_opt_out() {
        let e = Config::default().validate().unwrap_err().to_string();
        assert!(e.contains("/ip4/0.0.0.0/tcp/7000"), "{e}");
        assert!(e.contains("flotilla keygen") && e.contains("--cluster-key-file"), "{e}");
        assert!(e.contains("--insecure-no-cluster-key"), "{e}");
        let lan = Config { listen: vec!["/ip4/127.0.0.1/tcp/1".into(), "/ip4/10.0.0.5/tcp/7000".into()], ..local() };
        assert!(lan.validate().unwrap_err().to_string().contains("10.0.0.5"));
        Config { insecure_no_cluster_key: true, ..Config::default() }.validate().unwrap();
        Config { listen: vec!["/ip6/::1/tcp/7000".into()], ..Config::default() }.validate().unwrap();
        let both = Config { insecure_no_cluster_key: true, cluster_key_file: Some("k".into()), ..Config::default() };
        assert!(both.validate().unwrap_err().to_string().contains("contradict"));
    }

    #[test]
    fn loopback_multiaddrs() {
        for a in
            ["/ip4/127.0.0.1/tcp/7000", "/ip4/127.1.2.3/tcp/0", "/ip6/::1/tcp/7000", "/ip4/127.0.0.1/udp/1/quic-v1"]
        {
            assert!(is_loopback_multiaddr(a), "{a}");
        }
        for a in [
            "/ip4/0.0.0.0/tcp/7000",
            "/ip6/::/tcp/7000",
            "/ip4/10.1.2.3/tcp/1",
            "/dns4/localhost/tcp/1",
            "",
            "ip4/127.0.0.1",
            "/ip4/x",
        ] {
            assert!(!is_loopback_multiaddr(a), "{a}");
        }
    }

    #[test]
    fn bad_timing_is_refused() {
        let c = Config { heartbeat_ms: Some(300), ..local() };
        assert!(c.validate().is_err());
        // A maximum election timeout that does not exceed the minimum.
        let min = Config::default().timing().election_min_ms;
        let c = Config { election_max_ms: Some(min), ..local() };
        assert!(c.validate().is_err());
    }

    #[test]
    fn non_loopback_http_needs_an_admin_token() {
        let c = Config { http: "0.0.0.0:7070".parse().unwrap(), ..local() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--admin-token-file"), "{e}");
        let c = Config { http: "[::1]:7070".parse().unwrap(), ..local() };
        c.validate().unwrap();
        let c = Config { http: "127.0.0.2:7070".parse().unwrap(), ..local() };
        c.validate().unwrap();
    }

    #[test]
    fn etcd_endpoint_needs_its_own_address() {
        assert_eq!(Config::default().etcd_listen, None, "off by default");
        assert_eq!(Config::default().etcd_namespace.as_str(), DEFAULT_NAMESPACE);
        let same = Config { etcd_listen: Some(local().http), ..local() };
        assert!(same.validate().unwrap_err().to_string().contains("--etcd-listen"));
        Config { etcd_listen: Some("127.0.0.1:2379".parse().unwrap()), ..local() }.validate().unwrap();
        // Port 0 (the OS picks) for both is no clash; off loopback needs no token.
        let picked = "127.0.0.1:0".parse().unwrap();
        Config { http: picked, etcd_listen: Some(picked), ..local() }.validate().unwrap();
        Config { etcd_listen: Some("0.0.0.0:2379".parse().unwrap()), ..local() }.validate().unwrap();
    }

    #[test]
    fn http_limits_must_be_positive() {
        assert!(Config { http_max_connections: 0, ..Config::default() }.validate().is_err());
        assert!(Config { http_header_timeout_ms: 0, ..Config::default() }.validate().is_err());
    }

    #[test]
    fn the_store_cache_must_be_between_one_mib_and_the_limit() {
        let local = || Config { listen: vec!["/ip4/127.0.0.1/tcp/0".into()], ..Config::default() };
        assert!(Config { store_cache_mib: 0, ..local() }.validate().is_err());
        assert!(Config { store_cache_mib: MAX_STORE_CACHE_MIB + 1, ..local() }.validate().is_err());
        assert!(Config { wal_segment_mib: 0, ..local() }.validate().is_err());
        assert!(Config { wal_segment_mib: MAX_WAL_SEGMENT_MIB + 1, ..local() }.validate().is_err());
        assert!(Config { write_ahead_log: true, ..local() }.validate().is_ok());
        let small = Config { write_ahead_log: true, wal_segment_mib: 16, ..local() };
        assert!(small.validate().is_err(), "a segment that cannot hold a whole frame");
        assert!(Config { max_frame_bytes: 2 << 20, ..small }.validate().is_ok());
        Config { store_cache_mib: 1, ..local() }.validate().unwrap();
        Config { store_cache_mib: MAX_STORE_CACHE_MIB, ..local() }.validate().unwrap();
    }

    #[test]
    fn frame_must_hold_values() {
        let c = Config { max_frame_bytes: 1024, ..Config::default() };
        assert!(c.validate().is_err());
    }

    #[test]
    fn backup_settings_are_bounded() {
        assert_eq!(Config::default().backup_every, Duration::from_secs(3600));
        let e = Config { backup_every: Duration::from_millis(999), ..local() }.validate().unwrap_err();
        assert!(e.to_string().contains("--backup-every"), "{e}");
        assert!(Config { backup_keep: 0, ..local() }.validate().is_err());
        assert!(Config { backup_keep: MAX_BACKUP_KEEP + 1, ..local() }.validate().is_err());
        Config { backup_every: Duration::from_secs(1), backup_keep: 1, ..local() }.validate().unwrap();
    }

    #[test]
    fn durations_parse_with_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration(" 2h "), Ok(Duration::from_secs(7200)));
        for bad in ["", "h", "10", "10d", "-1s", "1.5h", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
