//! The two facts a response header of a protocol front end needs on every request (the etcd
//! endpoint's, for one): the Raft term and the cluster id, read without copying the rest of
//! the group's state.

use openraft::async_runtime::watch::WatchReceiver;

use crate::cluster::Cluster;

impl Cluster {
    /// The namespace's current Raft term on this node and the id of the cluster this node
    /// belongs to (its founding ballot; empty before it has one): what [`Cluster::state`]
    /// reports as `term` and `cluster`, without copying the membership, the leadership history
    /// and the formation status that it also reports. Cheap enough for every request.
    ///
    /// ```no_run
    /// # fn example(cluster: flotilla::Cluster) {
    /// let (term, cluster_id) = cluster.term_and_cluster();
    /// println!("term {term} of cluster {cluster_id:?}");
    /// # }
    /// ```
    pub fn term_and_cluster(&self) -> (u64, String) {
        let group = self.group();
        let metrics = group.raft.metrics();
        let m = metrics.borrow_watched();
        (m.current_term, crate::formation::view::cluster_of(&m))
    }
}
