//! The key/value API of a [`Cluster`]: writes, transactions, conditional writes, reads at any
//! readable revision, ranges and compaction, over the built-in KV state machine
//! (`flotilla_core::kv`).

use flotilla_core::kv::{
    self, decode_reply, encode_command, CompareOp, CompareTarget, KvCommand, KvRefusal, KvReply, OpResult, RangeEnd,
    RangeRequest, RangeResult, Txn, TxnOp, TxnReply,
};
use flotilla_core::{ApiError, Consistency, IdempotencyKey, KvOp, Limit, RequestId};

use crate::cluster::{too_large, Cluster};

/// Outcome of a write.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// let written = cluster.set(b"greeting", b"hello").await?;
/// println!("revision {} at log index {}", written.revision, written.index);
/// if written.existed[0] {
///     println!("replaced an earlier value");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Log index the write was applied at.
    pub index: u64,
    /// The namespace's revision after the write: the one it created if it changed anything.
    pub revision: u64,
    /// For each op of the write, whether its key existed before.
    pub existed: Vec<bool>,
}

/// A key's revisions, as etcd defines them.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// let read = cluster.get(b"greeting", flotilla::Consistency::Linearizable).await?;
/// if let Some(revs) = read.key_revisions {
///     println!("created at {}, changed {} times, last at {}", revs.create_revision, revs.version, revs.mod_revision);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRevisions {
    /// The revision of the write that created the key (since its last deletion).
    pub create_revision: u64,
    /// The revision of the write that last changed it.
    pub mod_revision: u64,
    /// Writes since its creation: 1 after the creation.
    pub version: u64,
    /// The lease it is attached to; 0 for none.
    pub lease: u64,
}

/// Outcome of a point read.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// let read = cluster.get(b"greeting", flotilla::Consistency::Stale).await?;
/// match read.value {
///     Some(value) => println!("{value:?} as of revision {}", read.revision),
///     None => println!("absent as of revision {}", read.revision),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The value, if present.
    pub value: Option<Vec<u8>>,
    /// Its revisions, if present.
    pub key_revisions: Option<KeyRevisions>,
    /// The revision the read reflects: the namespace's current one, or the one asked for.
    pub revision: u64,
    /// Log index the read reflects (this replica's applied index).
    pub index: u64,
}

/// Outcome of a key listing.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// let listed = cluster.keys(b"order/", flotilla::Consistency::Linearizable).await?;
/// println!("{} orders as of log index {}", listed.keys.len(), listed.index);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysOutcome {
    /// Keys in order.
    pub keys: Vec<Vec<u8>>,
    /// Log index the listing reflects.
    pub index: u64,
}

/// Outcome of a range read.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// let request = flotilla::kv::RangeRequest::prefix(b"order/".to_vec());
/// let page = cluster.range(request, flotilla::Consistency::Linearizable).await?;
/// for kv in &page.result.kvs {
///     println!("{:?} = {:?} (changed at {})", kv.key, kv.value, kv.mod_revision);
/// }
/// println!("as of revision {}; more: {}", page.revision, page.result.more);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeOutcome {
    /// The keys and whether more remain.
    pub result: RangeResult,
    /// The revision the read reflects.
    pub revision: u64,
    /// Log index the read reflects.
    pub index: u64,
}

/// Outcome of a transaction.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster, txn: flotilla::kv::Txn) -> Result<(), flotilla::ApiError> {
/// let out = cluster.txn(txn).await?;
/// let branch = if out.reply.succeeded { "success" } else { "failure" };
/// println!("the {branch} branch ran at index {}: {:?}", out.index, out.reply.results);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// What the state machine answered: the branch that ran and each operation's result.
    pub reply: TxnReply,
    /// Log index the transaction was applied at.
    pub index: u64,
}

/// The condition of [`Cluster::put_if`] and [`Cluster::delete_if`] (HTTP's `If-Match` and
/// `If-None-Match: *`).
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// use flotilla::{ApiError, Consistency, Precondition};
///
/// // Read, modify, write back only if nobody wrote in between.
/// let read = cluster.get(b"config", Consistency::Linearizable).await?;
/// let condition = match read.key_revisions {
///     Some(revs) => Precondition::ModRevision(revs.mod_revision),
///     None => Precondition::Absent,
/// };
/// match cluster.put_if(b"config", b"v2", condition, None).await {
///     Ok(written) => println!("written at revision {}", written.revision),
///     Err(ApiError::PreconditionFailed { mod_revision, .. }) => println!("changed meanwhile (at {mod_revision})"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The key exists and was last changed at this revision.
    ModRevision(u64),
    /// The key does not exist.
    Absent,
}

/// Largest number of keys one [`Cluster::keys`] listing returns.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
/// let listed = cluster.keys(b"", flotilla::Consistency::Stale).await?;
/// if listed.keys.len() == flotilla::MAX_LIST_KEYS {
///     println!("maybe more: page through them with `Cluster::range`");
/// }
/// # Ok(()) }
/// ```
pub const MAX_LIST_KEYS: usize = 10_000;

/// Most compaction steps one [`Cluster::compact`] call proposes (each removes up to
/// `kv::MAX_COMPACT_EVENTS` events).
const MAX_COMPACT_STEPS: usize = 100_000;

impl Cluster {
    /// Store `value` under `key`.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let written = cluster.set(b"greeting", b"hello").await?;
    /// println!("created revision {}", written.revision);
    /// # Ok(()) }
    /// ```
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<WriteOutcome, ApiError> {
        self.batch(vec![KvOp::Set { key: key.to_vec(), value: value.to_vec() }]).await
    }

    /// Store `value` under `key` as the write named `idempotency`: the same key sent again
    /// (a retry after an unknown outcome) is applied at most once.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let key = flotilla::IdempotencyKey::new("deposit-7f3a").expect("visible ASCII");
    /// // Sent again after a timeout, under the same key, it is applied once.
    /// let written = cluster.set_idempotent(b"balance", b"120", &key).await?;
    /// println!("revision {}", written.revision);
    /// # Ok(()) }
    /// ```
    pub async fn set_idempotent(
        &self,
        key: &[u8],
        value: &[u8],
        idempotency: &IdempotencyKey,
    ) -> Result<WriteOutcome, ApiError> {
        self.batch_idempotent(vec![KvOp::Set { key: key.to_vec(), value: value.to_vec() }], idempotency).await
    }

    /// Remove `key`; `existed[0]` says whether it was present.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let deleted = cluster.delete(b"greeting").await?;
    /// println!("{}", if deleted.existed[0] { "deleted" } else { "was not there" });
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, key: &[u8]) -> Result<WriteOutcome, ApiError> {
        self.batch(vec![KvOp::Delete { key: key.to_vec() }]).await
    }

    /// Remove `key` as the write named `idempotency` (see [`Cluster::set_idempotent`]).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let key = flotilla::IdempotencyKey::new("cancel-order-42").expect("visible ASCII");
    /// cluster.delete_idempotent(b"order/42", &key).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_idempotent(&self, key: &[u8], idempotency: &IdempotencyKey) -> Result<WriteOutcome, ApiError> {
        self.batch_idempotent(vec![KvOp::Delete { key: key.to_vec() }], idempotency).await
    }

    /// Apply several sets and deletes atomically, as one log entry and one revision. A batch
    /// that writes one key twice is refused (as etcd refuses such a transaction).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use flotilla::KvOp;
    ///
    /// let ops = vec![
    ///     KvOp::Set { key: b"order/42".to_vec(), value: b"shipped".to_vec() },
    ///     KvOp::Delete { key: b"pending/42".to_vec() },
    /// ];
    /// let written = cluster.batch(ops).await?; // both or neither, in one revision
    /// println!("revision {}; existed before: {:?}", written.revision, written.existed);
    /// # Ok(()) }
    /// ```
    pub async fn batch(&self, ops: Vec<KvOp>) -> Result<WriteOutcome, ApiError> {
        self.batch_as(ops, self.node.request_ids.next()).await
    }

    /// Apply a batch as the write named `idempotency`: the same key sent again (a retry after
    /// an unknown outcome) is applied at most once, and answers the first attempt's result.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, ops: Vec<flotilla::KvOp>) -> Result<(), flotilla::ApiError> {
    /// let key = flotilla::IdempotencyKey::new("ship-order-42").expect("visible ASCII");
    /// let first = cluster.batch_idempotent(ops.clone(), &key).await;
    /// // A retry after an unknown outcome answers the first attempt's result.
    /// let again = cluster.batch_idempotent(ops, &key).await?;
    /// println!("{first:?} / revision {}", again.revision);
    /// # Ok(()) }
    /// ```
    pub async fn batch_idempotent(
        &self,
        ops: Vec<KvOp>,
        idempotency: &IdempotencyKey,
    ) -> Result<WriteOutcome, ApiError> {
        self.batch_as(ops, idempotency.request_id(&self.namespace)).await
    }

    async fn batch_as(&self, ops: Vec<KvOp>, id: RequestId) -> Result<WriteOutcome, ApiError> {
        if ops.is_empty() {
            return Err(ApiError::Rejected("empty batch".into()));
        }
        let txn = Txn { success: ops.into_iter().map(TxnOp::from).collect(), ..Txn::default() };
        let out = self.txn_as(txn, id).await?;
        Ok(write_outcome(out))
    }

    /// Run a transaction: its compares decide which branch runs; atomically, as one log entry
    /// creating at most one revision.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use flotilla::kv::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
    ///
    /// // Create `stock` only if it does not exist (version 0: absent).
    /// let absent = Compare { key: b"stock".to_vec(), op: CompareOp::Equal, target: CompareTarget::Version(0) };
    /// let txn = Txn { compares: vec![absent], success: vec![TxnOp::put(b"stock", b"10")], failure: vec![] };
    /// let out = cluster.txn(txn).await?;
    /// println!("{}", if out.reply.succeeded { "created" } else { "already there" });
    /// # Ok(()) }
    /// ```
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, ApiError> {
        self.txn_as(txn, self.node.request_ids.next()).await
    }

    /// [`Cluster::txn`] as the write named `idempotency`: applied at most once, however often
    /// it is sent within the deduplication window, answering the first attempt's result.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, txn: flotilla::kv::Txn) -> Result<(), flotilla::ApiError> {
    /// let key = flotilla::IdempotencyKey::new("restock-2024-06-01").expect("visible ASCII");
    /// let out = cluster.txn_idempotent(txn, &key).await?; // a retry answers this same reply
    /// println!("succeeded: {}", out.reply.succeeded);
    /// # Ok(()) }
    /// ```
    pub async fn txn_idempotent(&self, txn: Txn, idempotency: &IdempotencyKey) -> Result<TxnOutcome, ApiError> {
        self.txn_as(txn, idempotency.request_id(&self.namespace)).await
    }

    async fn txn_as(&self, txn: Txn, id: RequestId) -> Result<TxnOutcome, ApiError> {
        self.check_txn(&txn)?;
        let (index, output) = self.propose_as(encode_command(&KvCommand::Txn(txn)), id).await?;
        match decode_kv_reply(output)? {
            KvReply::Txn(reply) => Ok(TxnOutcome { reply, index }),
            KvReply::Refused(refusal) => Err(refusal_error(refusal)),
            other => Err(ApiError::Fatal(format!("unexpected reply to a transaction: {other:?}"))),
        }
    }

    /// Store `value` under `key` only if `condition` holds; otherwise nothing is written and
    /// the answer is [`ApiError::PreconditionFailed`] with the key's current mod revision.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use flotilla::{ApiError, Precondition};
    ///
    /// // Create the key only if nobody has yet (HTTP's `If-None-Match: *`).
    /// match cluster.put_if(b"leader-info", b"node-a", Precondition::Absent, None).await {
    ///     Ok(written) => println!("created at revision {}", written.revision),
    ///     Err(ApiError::PreconditionFailed { mod_revision, .. }) => println!("exists (changed at {mod_revision})"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn put_if(
        &self,
        key: &[u8],
        value: &[u8],
        condition: Precondition,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<WriteOutcome, ApiError> {
        self.conditional(key, TxnOp::put(key, value), condition, idempotency).await
    }

    /// Remove `key` only if `condition` holds (see [`Cluster::put_if`]).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster, seen_at: u64) -> Result<(), flotilla::ApiError> {
    /// use flotilla::Precondition;
    ///
    /// // Delete the key only if it is still the version read at revision `seen_at`.
    /// let deleted = cluster.delete_if(b"config", Precondition::ModRevision(seen_at), None).await?;
    /// println!("deleted at revision {}", deleted.revision);
    /// # Ok(()) }
    /// ```
    pub async fn delete_if(
        &self,
        key: &[u8],
        condition: Precondition,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<WriteOutcome, ApiError> {
        self.conditional(key, TxnOp::delete(key), condition, idempotency).await
    }

    async fn conditional(
        &self,
        key: &[u8],
        op: TxnOp,
        condition: Precondition,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<WriteOutcome, ApiError> {
        let compare = match condition {
            Precondition::ModRevision(rev) => {
                kv::Compare { key: key.to_vec(), op: CompareOp::Equal, target: CompareTarget::ModRevision(rev) }
            }
            Precondition::Absent => {
                kv::Compare { key: key.to_vec(), op: CompareOp::Equal, target: CompareTarget::Version(0) }
            }
        };
        let found = RangeRequest { keys_only: true, ..RangeRequest::key(key) };
        let txn = Txn { compares: vec![compare], success: vec![op], failure: vec![TxnOp::Range(found)] };
        let out = match idempotency {
            Some(id) => self.txn_idempotent(txn, id).await?,
            None => self.txn(txn).await?,
        };
        if out.reply.succeeded {
            return Ok(write_outcome(out));
        }
        let mod_revision = match out.reply.results.first() {
            Some(OpResult::Range(r)) => r.kvs.first().map_or(0, |kv| kv.mod_revision),
            _ => 0,
        };
        Err(ApiError::PreconditionFailed { mod_revision, revision: out.reply.revision })
    }

    /// Read `key` with the requested consistency, at the current revision.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use flotilla::Consistency;
    ///
    /// // Linearizable: sees every write acknowledged before the call (asks the leader).
    /// let fresh = cluster.get(b"greeting", Consistency::Linearizable).await?;
    /// // Stale: this replica as it is, without a round trip.
    /// let local = cluster.get(b"greeting", Consistency::Stale).await?;
    /// println!("{:?} / {:?}", fresh.value, local.value);
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, key: &[u8], consistency: Consistency) -> Result<ReadOutcome, ApiError> {
        self.get_at(key, 0, consistency).await
    }

    /// Read `key` as of `revision` (0: the current one). A compacted revision answers
    /// [`ApiError::Compacted`], one not reached yet [`ApiError::FutureRevision`].
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use flotilla::{ApiError, Consistency};
    ///
    /// match cluster.get_at(b"greeting", 12, Consistency::Linearizable).await {
    ///     Ok(read) => println!("at revision 12: {:?}", read.value),
    ///     Err(ApiError::Compacted { compacted, .. }) => println!("history before {compacted} is gone"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_at(&self, key: &[u8], revision: u64, consistency: Consistency) -> Result<ReadOutcome, ApiError> {
        self.check_key(key)?;
        let out = self.range(RangeRequest { revision, ..RangeRequest::key(key) }, consistency).await?;
        let found = out.result.kvs.into_iter().next();
        let key_revisions = found.as_ref().map(|kv| KeyRevisions {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        });
        Ok(ReadOutcome { value: found.map(|kv| kv.value), key_revisions, revision: out.revision, index: out.index })
    }

    /// Read a range of keys with their values and revisions (a page of at most
    /// `kv::MAX_RANGE_LIMIT` keys; `more` says whether to go on with `after`).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// use flotilla::kv::RangeRequest;
    ///
    /// // Every key under `order/`, page by page, all pages at the first page's revision.
    /// let mut request = RangeRequest::prefix(b"order/".to_vec());
    /// loop {
    ///     let page = cluster.range(request.clone(), flotilla::Consistency::Linearizable).await?;
    ///     for kv in &page.result.kvs {
    ///         println!("{:?}", kv.key);
    ///     }
    ///     if !page.result.more {
    ///         break;
    ///     }
    ///     request.revision = page.revision;
    ///     request.after = page.result.kvs.last().map(|kv| kv.key.clone());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn range(&self, request: RangeRequest, consistency: Consistency) -> Result<RangeOutcome, ApiError> {
        self.check_range(&request)?;
        let (view, index) = self.read_view(consistency).await?;
        let revs = kv::revisions(&view).map_err(read_error)?;
        let result = kv::range(&view, &request).map_err(read_error)?.map_err(refusal_error)?;
        let revision = if request.revision == 0 { revs.current } else { request.revision };
        Ok(RangeOutcome { result, revision, index })
    }

    /// List keys starting with `prefix` (at most [`MAX_LIST_KEYS`]; [`Cluster::range`] pages
    /// through any number).
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// let listed = cluster.keys(b"order/", flotilla::Consistency::Linearizable).await?;
    /// for key in &listed.keys {
    ///     println!("{}", String::from_utf8_lossy(key));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn keys(&self, prefix: &[u8], consistency: Consistency) -> Result<KeysOutcome, ApiError> {
        let request = RangeRequest { keys_only: true, limit: MAX_LIST_KEYS as u64, ..RangeRequest::prefix(prefix) };
        let out = self.range(request, consistency).await?;
        Ok(KeysOutcome { keys: out.result.kvs.into_iter().map(|kv| kv.key).collect(), index: out.index })
    }

    /// Forget the history before `revision`: reads and watches below it fail from then on.
    /// Proposes compaction steps until the history below it is gone; returns the compacted
    /// revision. Compacting again to the same revision is harmless.
    ///
    /// ```no_run
    /// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::ApiError> {
    /// // Keep only the last 1000 revisions of history.
    /// let current = cluster.status().revision.unwrap_or(0);
    /// if current > 1_000 {
    ///     let compacted = cluster.compact(current - 1_000).await?;
    ///     println!("reads and watches before revision {compacted} now fail");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn compact(&self, revision: u64) -> Result<u64, ApiError> {
        for _ in 0..MAX_COMPACT_STEPS {
            let (_, output) = self.propose(encode_command(&KvCommand::Compact { revision })).await?;
            match decode_kv_reply(output)? {
                KvReply::Compact(step) if step.done => return Ok(step.compacted),
                KvReply::Compact(_) => continue,
                KvReply::Refused(refusal) => return Err(refusal_error(refusal)),
                other => return Err(ApiError::Fatal(format!("unexpected reply to a compaction: {other:?}"))),
            }
        }
        Err(ApiError::Timeout(format!("compaction to {revision} did not finish in {MAX_COMPACT_STEPS} steps")))
    }

    /// Refuse, before proposing, what the state machine would refuse anyway or what exceeds
    /// this node's limits.
    fn check_txn(&self, txn: &Txn) -> Result<(), ApiError> {
        if txn.compares.len() > kv::MAX_TXN_OPS || txn.success.len() + txn.failure.len() > kv::MAX_TXN_OPS {
            return Err(ApiError::Rejected(format!("a transaction holds at most {} operations", kv::MAX_TXN_OPS)));
        }
        self.check_txn_keys(txn, 1)
    }

    /// Check the keys and values of `txn`, nested at `depth`, and of the transactions nested
    /// in it (the state machine bounds their number and depth; the depth is bounded here
    /// too, so that the recursion is).
    fn check_txn_keys(&self, txn: &Txn, depth: usize) -> Result<(), ApiError> {
        if depth > kv::MAX_TXN_DEPTH {
            return Err(ApiError::Rejected(format!("transactions nest at most {} levels deep", kv::MAX_TXN_DEPTH)));
        }
        for compare in &txn.compares {
            self.check_key(&compare.key)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                TxnOp::Put { key, value, .. } => {
                    self.check_key(key)?;
                    self.check_value(value)?;
                }
                TxnOp::Delete { key, end, .. } => self.check_range_key(key, end)?,
                TxnOp::Range(request) => self.check_range(request)?,
                TxnOp::Txn(inner) => self.check_txn_keys(inner, depth + 1)?,
            }
        }
        Ok(())
    }

    fn check_range(&self, request: &RangeRequest) -> Result<(), ApiError> {
        self.check_range_key(&request.key, &request.end)?;
        if let RangeEnd::Before(end) = &request.end {
            self.check_range_key(end, &RangeEnd::All)?;
        }
        if let Some(after) = &request.after {
            self.check_range_key(after, &RangeEnd::All)?;
        }
        Ok(())
    }

    /// A single key must be a valid key; the start of a range may be empty.
    fn check_range_key(&self, key: &[u8], end: &RangeEnd) -> Result<(), ApiError> {
        if *end == RangeEnd::Key {
            return self.check_key(key);
        }
        let limit = self.node.config.max_key_bytes;
        if key.len() > limit {
            return Err(too_large(Limit::Key, key.len(), limit));
        }
        Ok(())
    }
}

/// A write's outcome from its transaction's.
pub(crate) fn write_outcome(out: TxnOutcome) -> WriteOutcome {
    let existed = out
        .reply
        .results
        .iter()
        .map(|r| match r {
            OpResult::Put { existed, .. } => *existed,
            OpResult::Delete { deleted, .. } => *deleted > 0,
            OpResult::Range(r) => !r.kvs.is_empty(),
            OpResult::Txn { succeeded, .. } => *succeeded,
        })
        .collect();
    WriteOutcome { index: out.index, revision: out.reply.revision, existed }
}

/// The KV reply of a state machine output.
pub(crate) fn decode_kv_reply(output: Result<Vec<u8>, String>) -> Result<KvReply, ApiError> {
    let bytes = output.map_err(ApiError::Rejected)?;
    decode_reply(&bytes).ok_or_else(|| ApiError::Fatal("undecodable KV reply".into()))
}

/// The API error of a refusal by the KV state machine.
pub(crate) fn refusal_error(refusal: KvRefusal) -> ApiError {
    match refusal {
        KvRefusal::Compacted { requested, compacted } => ApiError::Compacted { requested, compacted },
        KvRefusal::FutureRevision { requested, current } => ApiError::FutureRevision { requested, current },
        KvRefusal::LeaseNotFound(id) => ApiError::LeaseNotFound(id),
        KvRefusal::Restoring(_) => ApiError::Unavailable(refusal.to_string()),
        other => ApiError::Rejected(other.to_string()),
    }
}

/// A failed read of the local state (a damaged or unreadable store).
fn read_error(e: std::io::Error) -> ApiError {
    ApiError::Fatal(format!("reading the namespace's state: {e}"))
}
