//! Read-only queries of a namespace's state machine table at a chosen [`Consistency`]
//! ([`Cluster::query`]): what an embedder with its own state machine reads its rows with.

use flotilla_core::{ApiError, Consistency, StateView};
use flotilla_store::NamespaceView;

use crate::cluster::{store_read_error, Cluster};

/// A query's answer with the log index of the state it read.
///
/// ```no_run
/// # async fn example(cluster: flotilla::Cluster) -> Result<(), flotilla::QueryError<std::io::Error>> {
/// let queried = cluster.query(flotilla::Consistency::Stale, |view| view.get(b"n")).await?;
/// println!("{:?} as of log index {}", queried.value, queried.index);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queried<T> {
    /// The log index the answer reflects: every entry up to it was applied to the state read.
    /// For a linearizable query it is at least the read index the leader gave.
    pub index: u64,
    /// What the query function returned.
    pub value: T,
}

/// Why a query failed: the read could not reach its consistency (or the store could not be
/// read), or the query function itself failed.
///
/// ```
/// use flotilla::{ApiError, QueryError};
///
/// let error: QueryError<std::io::Error> = QueryError::Api(ApiError::NoLeader("electing".into()));
/// // Only the API side may clear by itself; the query's own error would come again.
/// assert!(matches!(&error, QueryError::Api(e) if e.is_retryable()));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum QueryError<E> {
    /// The consistency could not be reached, or the local state could not be read (for
    /// example while the namespace installs a snapshot: retryable, see
    /// [`ApiError::is_retryable`]).
    #[error(transparent)]
    Api(ApiError),
    /// The query function returned this error.
    #[error("query failed: {0}")]
    Query(E),
}

impl Cluster {
    /// Run `query` against the namespace's table once `consistency` is reached on this node,
    /// and return its answer with the log index it reflects.
    ///
    /// The view holds exactly the rows the namespace's state machine wrote (the same keys its
    /// `apply` used, point reads and range scans), as of one applied index: writes applied
    /// meanwhile are not seen. [`Consistency::Stale`] reads this replica as it is;
    /// [`Consistency::Linearizable`] first gets a read index from the leader (from any node)
    /// and waits until this replica has applied it. The query runs on the calling task, so
    /// keep its work bounded (a page of a range rather than the whole table).
    ///
    /// ```no_run
    /// use std::ops::Bound;
    /// use flotilla::{Cluster, Consistency};
    /// use flotilla_core::Scan;
    ///
    /// /// The keys under `prefix/`, at most 100, as of a linearizable point.
    /// async fn names(cluster: &Cluster) -> Result<Vec<Vec<u8>>, flotilla::QueryError<std::io::Error>> {
    ///     let queried = cluster
    ///         .query(Consistency::Linearizable, |view| {
    ///             let mut keys = Vec::new();
    ///             view.scan(Bound::Included(&b"prefix/"[..]), Bound::Excluded(&b"prefix0"[..]), &mut |key, _| {
    ///                 keys.push(key.to_vec());
    ///                 Ok(if keys.len() < 100 { Scan::Continue } else { Scan::Stop })
    ///             })?;
    ///             Ok(keys)
    ///         })
    ///         .await?;
    ///     println!("as of index {}", queried.index);
    ///     Ok(queried.value)
    /// }
    /// ```
    pub async fn query<T, E>(
        &self,
        consistency: Consistency,
        query: impl FnOnce(&dyn StateView) -> Result<T, E>,
    ) -> Result<Queried<T>, QueryError<E>> {
        let (view, index) = self.read_view(consistency).await.map_err(QueryError::Api)?;
        let value = query(&view).map_err(QueryError::Query)?;
        Ok(Queried { index, value })
    }

    /// A view of the namespace's applied state once `consistency` is reached, with the log
    /// index it reflects (the view's applied index, and at least the read index).
    pub(crate) async fn read_view(&self, consistency: Consistency) -> Result<(NamespaceView, u64), ApiError> {
        let barrier = self.read_barrier(consistency).await?;
        let view = self.node.store.view(&self.namespace).map_err(store_read_error)?;
        let index = view.applied().map_or(0, |l| l.index).max(barrier);
        Ok((view, index))
    }
}
