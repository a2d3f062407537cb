//! The lease API of a [`Cluster`]: grant, keep alive, revoke, time to live, list, and writes
//! attached to a lease. A lease's keys are deleted when it is revoked or when the leader's
//! clock finds it expired (`lease_clock.rs`, `lease_expiry.rs`).

use std::time::Duration;

use flotilla_core::kv::{self, encode_command, KvCommand, KvReply, LeaseReply, Txn, TxnOp};
use flotilla_core::wire::{CommandRequest, CommandResponse};
use flotilla_core::{ApiError, Consistency};

use crate::cluster::{store_read_error, Cluster};
use crate::cluster_kv::{decode_kv_reply, refusal_error, WriteOutcome};

/// Most keys a time-to-live answer lists.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster, lease: u64) -> Result<(), flotilla::ApiError> {
/// let status = cluster.lease_time_to_live(lease, true).await?;
/// if status.keys.len() == flotilla::MAX_LEASE_KEYS_LISTED {
///     println!("the lease may hold more keys than listed");
/// }
/// # Ok(()) }
/// ```
pub const MAX_LEASE_KEYS_LISTED: usize = 10_000;

/// Most leases one listing answers.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// let leases = cluster.leases().await?;
/// assert!(leases.len() <= flotilla::MAX_LEASES_LISTED);
/// # Ok(()) }
/// ```
pub const MAX_LEASES_LISTED: usize = 100_000;

/// What a lease has left.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster, lease: u64) -> Result<(), flotilla::ApiError> {
/// let status = cluster.lease_time_to_live(lease, true).await?;
/// println!("lease {}: {:?} of {:?} left, {} keys", status.id, status.remaining, status.ttl, status.keys.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease.
    pub id: u64,
    /// Its time to live.
    pub ttl: Duration,
    /// What is left of it on the leader's clock.
    pub remaining: Duration,
    /// Its keys (at most [`MAX_LEASE_KEYS_LISTED`]), when asked for.
    pub keys: Vec<Vec<u8>>,
}

impl Cluster {
    /// The shortest time to live a lease gets: three election timeouts (etcd's rule), so a
    /// leader change alone cannot expire it.
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// // A shorter TTL asked of `lease_grant` is raised to this.
    /// println!("leases live at least {:?}", cluster.min_lease_ttl());
    /// # }
    /// ```
    pub fn min_lease_ttl(&self) -> Duration {
        let election = Duration::from_millis(self.node.config.timing().election_max_ms);
        Duration::from_secs((election * 3).as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Grant a lease of `ttl` (raised to [`Cluster::min_lease_ttl`], rounded up to seconds);
    /// `id` 0 takes the next free id. The lease starts on the leader's clock at once.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use std::time::Duration;
    ///
    /// let lease = cluster.lease_grant(0, Duration::from_secs(30)).await?; // 0: the next free id
    /// cluster.set_with_lease(b"workers/a", b"alive", lease.id).await?;
    /// println!("lease {} for {} s", lease.id, lease.ttl_secs);
    /// # Ok(()) }
    /// ```
    pub async fn lease_grant(&self, id: u64, ttl: Duration) -> Result<LeaseReply, ApiError> {
        let ttl_secs = ttl.max(self.min_lease_ttl()).as_secs_f64().ceil() as u64;
        let reply = self.lease_command(KvCommand::LeaseGrant { id, ttl_secs }).await?;
        self.lease_keep_alive(reply.id).await?;
        Ok(reply)
    }

    /// Renew lease `id` for its whole time to live (from any node: the leader keeps the
    /// clock); [`ApiError::LeaseNotFound`] once it is revoked or expired.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, lease: u64) -> Result<(), flotilla::ApiError> {
    /// match cluster.lease_keep_alive(lease).await {
    ///     Ok(ttl) => println!("renewed for {ttl:?}"),
    ///     Err(flotilla::ApiError::LeaseNotFound(_)) => println!("expired or revoked: its keys are gone"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lease_keep_alive(&self, id: u64) -> Result<Duration, ApiError> {
        let (ttl, _) = self.lease_request(CommandRequest::LeaseKeepAlive(id)).await?;
        Ok(ttl)
    }

    /// Revoke lease `id` now: its keys are deleted in one revision.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, lease: u64) -> Result<(), flotilla::ApiError> {
    /// let revoked = cluster.lease_revoke(lease).await?;
    /// println!("{} keys deleted at revision {}", revoked.deleted, revoked.revision);
    /// # Ok(()) }
    /// ```
    pub async fn lease_revoke(&self, id: u64) -> Result<LeaseReply, ApiError> {
        self.lease_command(KvCommand::LeaseRevoke { id }).await
    }

    /// What lease `id` has left, and its keys when `with_keys`.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, lease: u64) -> Result<(), flotilla::ApiError> {
    /// let status = cluster.lease_time_to_live(lease, false).await?; // no keys: no read of the table
    /// println!("{:?} left", status.remaining);
    /// # Ok(()) }
    /// ```
    pub async fn lease_time_to_live(&self, id: u64, with_keys: bool) -> Result<LeaseStatus, ApiError> {
        let (ttl, remaining) = self.lease_request(CommandRequest::LeaseTimeToLive(id)).await?;
        let keys = match with_keys {
            true => {
                self.read_barrier(Consistency::Linearizable).await?;
                let view = self.node.store.view(&self.namespace).map_err(store_read_error)?;
                kv::attached_keys(&view, id, MAX_LEASE_KEYS_LISTED)
                    .map_err(|e| ApiError::Fatal(format!("reading lease {id}: {e}")))?
            }
            false => Vec::new(),
        };
        Ok(LeaseStatus { id, ttl, remaining, keys })
    }

    /// The leases, `(id, time to live)` in id order (at most [`MAX_LEASES_LISTED`]), as of a
    /// linearizable read.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// for (id, ttl) in cluster.leases().await? {
    ///     println!("lease {id}: time to live {ttl:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn leases(&self) -> Result<Vec<(u64, Duration)>, ApiError> {
        self.read_barrier(Consistency::Linearizable).await?;
        let view = self.node.store.view(&self.namespace).map_err(store_read_error)?;
        let leases =
            kv::leases(&view, MAX_LEASES_LISTED).map_err(|e| ApiError::Fatal(format!("reading leases: {e}")))?;
        Ok(leases.into_iter().map(|(id, ttl)| (id, Duration::from_secs(ttl))).collect())
    }

    /// Store `value` under `key`, attached to `lease` (deleted with it).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, lease: u64) -> Result<(), flotilla::ApiError> {
    /// // Registered while this worker keeps its lease alive; deleted when the lease goes.
    /// cluster.set_with_lease(b"workers/a", b"10.0.0.7:8080", lease).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_with_lease(&self, key: &[u8], value: &[u8], lease: u64) -> Result<WriteOutcome, ApiError> {
        let put = TxnOp::Put { key: key.to_vec(), value: value.to_vec(), lease, prev_kv: false };
        let out = self.txn(Txn { success: vec![put], ..Txn::default() }).await?;
        Ok(crate::cluster_kv::write_outcome(out))
    }

    async fn lease_command(&self, command: KvCommand) -> Result<LeaseReply, ApiError> {
        let (_, output) = self.propose(encode_command(&command)).await?;
        match decode_kv_reply(output)? {
            KvReply::Lease(reply) => Ok(reply),
            KvReply::Refused(refusal) => Err(refusal_error(refusal)),
            other => Err(ApiError::Fatal(format!("unexpected reply to a lease command: {other:?}"))),
        }
    }

    /// Ask the leader's lease clock; `(time to live, remaining)`.
    async fn lease_request(&self, request: CommandRequest) -> Result<(Duration, Duration), ApiError> {
        match self.node.forwarder.submit(&self.group(), request, self.deadline()).await? {
            CommandResponse::Lease { ttl_secs, remaining_ms } => {
                Ok((Duration::from_secs(ttl_secs), Duration::from_millis(remaining_ms)))
            }
            other => Err(ApiError::Fatal(format!("unexpected reply to a lease request: {other:?}"))),
        }
    }
}
