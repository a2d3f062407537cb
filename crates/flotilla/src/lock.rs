//! Locks and leader election with fencing tokens, built on leases, transactions and watches
//! (etcd's concurrency recipe).
//!
//! A contender takes a lease, then creates `<prefix><lease id>` with it in a transaction that
//! only creates (so a retry does not move its place). The contender whose key has the lowest
//! create revision holds the lock; every other one watches the key just before its own and
//! checks again when that key is deleted (released, or its lease expired). A holder that
//! crashes stops renewing its lease, the lease expires and its key goes: the lock frees itself.
//!
//! **Fencing token.** The holder's token is its key's create revision. Revisions only grow, and
//! a later holder's key is created after the earlier holder's key was deleted, so tokens strictly
//! increase across holders. A protected resource remembers the highest token it has accepted
//! and refuses a request that carries a lower one: a holder that stalled past its lease (a
//! long GC pause) and comes back cannot overwrite the work of the holder after it. Inside
//! Flotilla a write can also be made conditional on still holding the lock
//! ([`Held::still_held`], a compare for a [`Txn`](flotilla_core::kv::Txn)).

use std::time::Duration;

use flotilla_core::kv::{Compare, CompareOp, CompareTarget, EventKind, KeyValue, OpResult, RangeRequest, Txn, TxnOp};
use flotilla_core::{ApiError, Consistency};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

use crate::cluster::Cluster;
use crate::watch::{WatchMessage, WatchRequest};

/// Prefix of lock keys: `__lock/<name>/<lease id, 16 hex digits>`.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// // Every contender of lock `reports` has a key under `__lock/reports/`.
/// let prefix = format!("{}reports/", flotilla::LOCK_PREFIX);
/// let contenders = cluster.keys(prefix.as_bytes(), flotilla::Consistency::Linearizable).await?;
/// println!("{} contenders", contenders.keys.len());
/// # Ok(()) }
/// ```
pub const LOCK_PREFIX: &str = "__lock/";
/// Prefix of election keys: `__election/<name>/<lease id, 16 hex digits>`.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// // Every candidate of election `scheduler` has a key under `__election/scheduler/`.
/// let prefix = format!("{}scheduler/", flotilla::ELECTION_PREFIX);
/// let candidates = cluster.keys(prefix.as_bytes(), flotilla::Consistency::Linearizable).await?;
/// println!("{} candidates", candidates.keys.len());
/// # Ok(()) }
/// ```
pub const ELECTION_PREFIX: &str = "__election/";

/// Most contenders one lock or election considers (a page of its prefix).
const MAX_CONTENDERS: u64 = 10_000;

/// A lock held, or a leadership won, until [`Held::release`] (or until its lease is lost).
/// Dropping it without releasing stops renewing the lease: the lock frees itself once the
/// lease runs out.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// use std::time::Duration;
///
/// let held = cluster.lock("reports", Duration::from_secs(15), Duration::from_secs(5)).await?;
/// // Send the token with every request to the protected resource: it refuses lower ones.
/// println!("holding with fencing token {}", held.fencing_token());
/// held.release().await?;
/// # Ok(()) }
/// ```
pub struct Held {
    cluster: Cluster,
    key: Vec<u8>,
    lease: u64,
    token: u64,
    lost: watch::Receiver<bool>,
    renewer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("lease", &self.lease)
            .field("fencing_token", &self.token)
            .finish()
    }
}

/// The current holder of an election (or lock).
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// if let Some(leader) = cluster.election_leader("scheduler").await? {
///     let value = String::from_utf8_lossy(&leader.value);
///     println!("{value} leads (token {}, lease {})", leader.fencing_token, leader.lease);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its key.
    pub key: Vec<u8>,
    /// The value it campaigned with (empty for a lock).
    pub value: Vec<u8>,
    /// Its fencing token (the key's create revision).
    pub fencing_token: u64,
    /// Its lease.
    pub lease: u64,
}

impl Held {
    /// The fencing token: strictly greater than every earlier holder's.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, previous_token: u64) -> Result<(), flotilla::ApiError> {
    /// # use std::time::Duration;
    /// let held = cluster.lock("reports", Duration::from_secs(15), Duration::from_secs(5)).await?;
    /// assert!(held.fencing_token() > previous_token); // any earlier holder's token
    /// # Ok(()) }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// The key that holds the place.
    ///
    /// ```no_run
    /// # fn example(held: flotilla::Held) {
    /// // `__lock/<name>/<lease id>` for a lock, `__election/<name>/<lease id>` for an election.
    /// println!("holding through {}", String::from_utf8_lossy(held.key()));
    /// # }
    /// ```
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The lease the key lives on.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, held: flotilla::Held) -> Result<(), flotilla::ApiError> {
    /// let left = cluster.lease_time_to_live(held.lease(), false).await?;
    /// println!("the lock's lease has {:?} left (renewed by this node)", left.remaining);
    /// # Ok(()) }
    /// ```
    pub fn lease(&self) -> u64 {
        self.lease
    }

    /// A compare that holds only while this holder still holds (its key exists with its
    /// create revision): put it in a transaction to write only as the holder.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, held: flotilla::Held) -> Result<(), flotilla::ApiError> {
    /// use flotilla::kv::{Txn, TxnOp};
    ///
    /// // Write only while still holding the lock: a holder that lost it changes nothing.
    /// let txn = Txn { compares: vec![held.still_held()], success: vec![TxnOp::put(b"report", b"done")], failure: vec![] };
    /// if !cluster.txn(txn).await?.reply.succeeded {
    ///     println!("the lock was lost: nothing written");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn still_held(&self) -> Compare {
        Compare { key: self.key.clone(), op: CompareOp::Equal, target: CompareTarget::CreateRevision(self.token) }
    }

    /// Resolves when the lease was lost (expired or revoked elsewhere): the lock is no longer
    /// held and the protected work must stop.
    ///
    /// ```no_run
    /// # async fn work() {}
    /// # async fn example(mut held: flotilla::Held) {
    /// tokio::select! {
    ///     _ = held.lost() => println!("the lease is gone: stop, another holder may take over"),
    ///     _ = work() => println!("done while holding the lock"),
    /// }
    /// # }
    /// ```
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Whether the lease is known to be lost.
    ///
    /// ```no_run
    /// # fn example(held: flotilla::Held) {
    /// if held.is_lost() {
    ///     println!("no longer held: stop the protected work");
    /// }
    /// # }
    /// ```
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Stop renewing the lease and hand it to the caller, who keeps it alive from now on (an
    /// HTTP client through `POST /v1/lease/{ns}/{id}/keepalive`).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, held: flotilla::Held) -> Result<(), flotilla::ApiError> {
    /// let (key, lease, token) = held.detach();
    /// // From now on the caller keeps the lease alive, or the lock frees itself.
    /// cluster.lease_keep_alive(lease).await?;
    /// println!("{} held with token {token}", String::from_utf8_lossy(&key));
    /// # Ok(()) }
    /// ```
    pub fn detach(mut self) -> (Vec<u8>, u64, u64) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        (std::mem::take(&mut self.key), self.lease, self.token)
    }

    /// Let go: revoke the lease, which deletes the key (the next contender takes over).
    ///
    /// ```no_run
    /// # async fn example(held: flotilla::Held) -> Result<(), flotilla::ApiError> {
    /// held.release().await?; // the key is deleted: the next contender takes over
    /// # Ok(()) }
    /// ```
    pub async fn release(mut self) -> Result<(), ApiError> {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        match self.cluster.lease_revoke(self.lease).await {
            Ok(_) | Err(ApiError::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

impl Cluster {
    /// Take lock `name`, waiting at most `wait` for it; the lock lives on a lease of `ttl`
    /// that this node renews until [`Held::release`]. [`ApiError::Timeout`] when it was not
    /// free in time (this contender withdraws).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use std::time::Duration;
    ///
    /// match cluster.lock("reports", Duration::from_secs(15), Duration::from_secs(5)).await {
    ///     Ok(held) => held.release().await?,
    ///     Err(flotilla::ApiError::Timeout(_)) => println!("held by another for more than 5 s"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self, name: &str, ttl: Duration, wait: Duration) -> Result<Held, ApiError> {
        self.contend(&place_prefix(LOCK_PREFIX, name)?, b"", ttl, wait).await
    }

    /// Take lock `name` only if it is free now.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// match cluster.try_lock("reports", std::time::Duration::from_secs(15)).await? {
    ///     Some(held) => held.release().await?,
    ///     None => println!("someone else holds it: skip this round"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Held>, ApiError> {
        match self.lock(name, ttl, Duration::ZERO).await {
            Ok(held) => Ok(Some(held)),
            Err(ApiError::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Campaign in election `name` with `value`, waiting at most `wait` to become the leader.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use std::time::Duration;
    ///
    /// // Wait up to a minute to lead the schedulers; the value tells followers who leads.
    /// let mut leading = cluster.campaign("scheduler", b"10.0.0.7:9000", Duration::from_secs(10), Duration::from_secs(60)).await?;
    /// leading.lost().await; // lead until the lease is lost
    /// # Ok(()) }
    /// ```
    pub async fn campaign(&self, name: &str, value: &[u8], ttl: Duration, wait: Duration) -> Result<Held, ApiError> {
        self.contend(&place_prefix(ELECTION_PREFIX, name)?, value, ttl, wait).await
    }

    /// The current leader of election `name`, if any (a linearizable read).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// match cluster.election_leader("scheduler").await? {
    ///     Some(leader) => println!("send work to {}", String::from_utf8_lossy(&leader.value)),
    ///     None => println!("no scheduler leads right now"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn election_leader(&self, name: &str) -> Result<Option<Holder>, ApiError> {
        let (holders, _) = self.contenders(&place_prefix(ELECTION_PREFIX, name)?).await?;
        Ok(holders.into_iter().next().map(holder))
    }

    /// The current holder of lock `name`, if any.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// if let Some(holder) = cluster.lock_holder("reports").await? {
    ///     println!("held on lease {} with token {}", holder.lease, holder.fencing_token);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lock_holder(&self, name: &str) -> Result<Option<Holder>, ApiError> {
        let (holders, _) = self.contenders(&place_prefix(LOCK_PREFIX, name)?).await?;
        Ok(holders.into_iter().next().map(holder))
    }

    async fn contend(&self, prefix: &[u8], value: &[u8], ttl: Duration, wait: Duration) -> Result<Held, ApiError> {
        let give_up = Instant::now() + wait;
        let lease = self.lease_grant(0, ttl).await?;
        let mut key = prefix.to_vec();
        key.extend_from_slice(format!("{:016x}", lease.id).as_bytes());
        let outcome = self.wait_turn(&key, value, lease.id, give_up).await;
        match outcome {
            Ok(token) => {
                let (lost_tx, lost) = watch::channel(false);
                let renewer = tokio::spawn(renew(self.clone(), lease.id, Duration::from_secs(lease.ttl_secs), lost_tx));
                Ok(Held { cluster: self.clone(), key, lease: lease.id, token, lost, renewer: Some(renewer) })
            }
            Err(e) => {
                // Withdraw: the lease takes the key with it.
                if let Err(revoke) = self.lease_revoke(lease.id).await {
                    warn!(namespace = %self.namespace, lease = lease.id, error = %revoke, "withdrawing from a lock failed; the lease will expire");
                }
                Err(e)
            }
        }
    }

    /// Create `key` on `lease` and wait until it is the oldest of its prefix; its token.
    async fn wait_turn(&self, key: &[u8], value: &[u8], lease: u64, give_up: Instant) -> Result<u64, ApiError> {
        let prefix = &key[..key.len() - 16];
        let token = self.take_place(key, value, lease).await?;
        loop {
            // Renew while waiting: a long wait must not let the lease run out.
            self.lease_keep_alive(lease).await?;
            let (contenders, revision) = self.contenders(prefix).await?;
            // The contender's own key must still be there: a lease that ran out while this
            // contender waited (a slow read under faults) took the key, and with it the place.
            if !contenders.iter().any(|kv| kv.key == key && kv.create_revision == token) {
                return Err(ApiError::LeaseNotFound(lease));
            }
            let Some(ahead) = contenders.iter().rfind(|kv| kv.create_revision < token) else {
                return Ok(token);
            };
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::Timeout(format!("{} is held by another", String::from_utf8_lossy(prefix))));
            }
            let ttl = self.min_lease_ttl();
            let slice = left.min(ttl / 2);
            self.wait_deleted(&ahead.key, revision + 1, slice).await?;
        }
    }

    /// Create the contender's key (only if absent); its create revision.
    async fn take_place(&self, key: &[u8], value: &[u8], lease: u64) -> Result<u64, ApiError> {
        let txn = Txn {
            compares: vec![Compare {
                key: key.to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::CreateRevision(0),
            }],
            success: vec![TxnOp::Put { key: key.to_vec(), value: value.to_vec(), lease, prev_kv: false }],
            failure: vec![TxnOp::Range(RangeRequest::key(key))],
        };
        let out = self.txn(txn).await?;
        if out.reply.succeeded {
            return Ok(out.reply.revision);
        }
        match out.reply.results.first() {
            Some(OpResult::Range(found)) => found.kvs.first().map(|kv| kv.create_revision),
            _ => None,
        }
        .ok_or_else(|| ApiError::Fatal("a contender's key vanished while it was being created".into()))
    }

    /// Every contender of `prefix`, oldest first, and the revision of the read.
    async fn contenders(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, u64), ApiError> {
        let request = RangeRequest { limit: MAX_CONTENDERS, ..RangeRequest::prefix(prefix) };
        let out = self.range(request, Consistency::Linearizable).await?;
        let mut kvs = out.result.kvs;
        kvs.sort_by_key(|kv| kv.create_revision);
        Ok((kvs, out.revision))
    }

    /// Wait until `key` is deleted after revision `from - 1`, or `slice` passes.
    async fn wait_deleted(&self, key: &[u8], from: u64, slice: Duration) -> Result<(), ApiError> {
        let request = WatchRequest { from_revision: from, ..WatchRequest::key(key.to_vec()) };
        let mut watch = self.watch(request).await?;
        let deadline = Instant::now() + slice;
        loop {
            let next = tokio::time::timeout_at(deadline, watch.next()).await;
            match next {
                Err(_) | Ok(None) | Ok(Some(Err(_))) => return Ok(()),
                Ok(Some(Ok(WatchMessage::Changes { events, .. }))) => {
                    if events.iter().any(|e| e.kind == EventKind::Delete) {
                        return Ok(());
                    }
                }
                Ok(Some(Ok(WatchMessage::Progress { .. }))) => {}
            }
        }
    }
}

/// `<prefix><name>/`, refusing names that would reach into another lock's keys.
fn place_prefix(kind: &str, name: &str) -> Result<Vec<u8>, ApiError> {
    if name.is_empty() || name.contains('/') || name.len() > 256 {
        return Err(ApiError::InvalidKey(format!("a lock or election name is 1 to 256 bytes without '/': {name:?}")));
    }
    Ok(format!("{kind}{name}/").into_bytes())
}

fn holder(kv: KeyValue) -> Holder {
    Holder { key: kv.key, value: kv.value, fencing_token: kv.create_revision, lease: kv.lease }
}

/// Renew `lease` every third of its TTL until the task is aborted; tell `lost` when it is gone.
async fn renew(cluster: Cluster, lease: u64, ttl: Duration, lost: watch::Sender<bool>) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        match cluster.lease_keep_alive(lease).await {
            Ok(_) => {}
            Err(ApiError::LeaseNotFound(_)) => {
                let _ = lost.send(true);
                return;
            }
            // A leader change or a slow quorum: try again next round (the TTL covers it).
            Err(e) => warn!(namespace = %cluster.namespace, lease, error = %e, "renewing a lock's lease failed"),
        }
    }
}
