//! The per-group write gate: the one place that answers "may this group take a client write
//! now, and if not, why".
//!
//! A write passes, in this order:
//!
//! 1. the dissolve fence ([`Formation::begin_write`]): a cluster checking whether it can
//!    dissolve into another refuses new writes (`Unavailable`); a write that passes counts
//!    itself in flight *before* it looks at the fence, so the dissolve can wait for it;
//! 2. disk admission ([`DiskAdmission::write_blocked`]): a store whose disk is full, failing or
//!    below its free-space reserve refuses (`StorageFull`, 507) instead of letting Raft wait for
//!    the disk with the client;
//! 3. quorum contact: a leader no quorum acknowledged for an election timeout (after one more
//!    heartbeat round) refuses (`LostQuorum`, see `quorum.rs`);
//! 4. the caller's deadline: a write whose caller has given up is not proposed (it would be
//!    applied long after its client was told nothing).
//!
//! Every refusal promises "not applied" (nothing was proposed). A write that passes holds a
//! [`WritePass`] until it has its answer; dropping it ends the write's time in flight. The
//! entry node's own early disk check ([`disk_admits`]) is the same rule. Nothing else checks
//! these conditions for client writes.

use std::future::Future;

use flotilla_core::types::NodeId;
use flotilla_core::wire::WireError;
use flotilla_core::ApiError;
use flotilla_store::Store;
use tokio::time::Instant;

use crate::formation::state::WriteGuard;
use crate::formation::Formation;

/// Whether a store takes client writes now (a seam, so the gate is tested without a full disk).
pub(crate) trait DiskAdmission {
    /// Why client writes are refused now, if they are.
    fn write_blocked(&self) -> Option<String>;
}

impl DiskAdmission for Store {
    fn write_blocked(&self) -> Option<String> {
        Store::write_blocked(self)
    }
}

/// Held by a client write from the moment it passed the gate until it has its answer.
pub(crate) struct WritePass<'a> {
    _in_flight: WriteGuard<'a>,
}

impl std::fmt::Debug for WritePass<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WritePass")
    }
}

/// The gate of one group on node `me`.
pub(crate) struct WriteGate<'a, D: DiskAdmission + ?Sized> {
    me: NodeId,
    fence: &'a Formation,
    disk: &'a D,
}

impl<'a, D: DiskAdmission + ?Sized> WriteGate<'a, D> {
    /// The gate of the group whose formation state is `fence`, on a node storing on `disk`.
    pub(crate) fn new(me: NodeId, fence: &'a Formation, disk: &'a D) -> Self {
        Self { me, fence, disk }
    }

    /// Let a write through, or say why not. `quorum` confirms that this leader is still in
    /// contact with a quorum (it is awaited only once the cheaper checks passed).
    pub(crate) async fn admit(
        &self,
        quorum: impl Future<Output = Result<(), ApiError>>,
        deadline: Instant,
    ) -> Result<WritePass<'a>, WireError> {
        let Some(in_flight) = self.fence.begin_write() else {
            return Err(WireError::Unavailable("namespace is dissolving into another cluster".into()));
        };
        disk_admits(self.disk, self.me)?;
        quorum.await?;
        if Instant::now() >= deadline {
            return Err(WireError::Unavailable("the caller's deadline passed before the write was proposed".into()));
        }
        Ok(WritePass { _in_flight: in_flight })
    }
}

/// Disk admission alone: refuse client writes while `disk` cannot take them (Raft's own
/// writes, replication and membership, are never refused; they wait).
pub(crate) fn disk_admits<D: DiskAdmission + ?Sized>(disk: &D, me: NodeId) -> Result<(), ApiError> {
    match disk.write_blocked() {
        Some(detail) => Err(ApiError::StorageFull(format!("node {me}: {detail}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use flotilla_core::Namespace;

    use super::*;
    use crate::formation::ledger::MembershipLedger;
    use crate::formation::record::RecordFile;

    struct Disk(Option<&'static str>);

    impl DiskAdmission for Disk {
        fn write_blocked(&self) -> Option<String> {
            self.0.map(String::from)
        }
    }

    fn formation(dir: &std::path::Path) -> (NodeId, Formation) {
        let me = flotilla_net::load_or_create_keypair(dir).expect("key").public().to_peer_id();
        let ns = Namespace::new("default").expect("ns");
        let ledger = Arc::new(MembershipLedger::open(dir.to_path_buf(), me).expect("ledger"));
        let f = Formation::load(me, ns.clone(), RecordFile::new(dir, &ns), ledger, None, 5, Instant::now()).expect("f");
        (me, f)
    }

    async fn quorum_ok() -> Result<(), ApiError> {
        Ok(())
    }

    #[tokio::test]
    async fn each_check_refuses_with_its_own_error_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (me, f) = formation(dir.path());
        let later = Instant::now() + Duration::from_secs(60);
        let (ok, full) = (Disk(None), Disk(Some("disk full")));
        let lost = || async move { Err(ApiError::LostQuorum { leader: me, silent_ms: 1 }) };
        let code = |r: Result<WritePass<'_>, WireError>| r.err().map(|e| e.code());

        assert_eq!(code(WriteGate::new(me, &f, &ok).admit(quorum_ok(), later).await), None);
        assert_eq!(code(WriteGate::new(me, &f, &full).admit(quorum_ok(), later).await), Some("storage_full"));
        assert_eq!(code(WriteGate::new(me, &f, &ok).admit(lost(), later).await), Some("lost_quorum"));
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(code(WriteGate::new(me, &f, &ok).admit(quorum_ok(), past).await), Some("unavailable"));
        // The fence comes first: a fenced group refuses even with a full disk and no quorum.
        f.set_fenced(true);
        let fenced = WriteGate::new(me, &f, &full).admit(lost(), past).await;
        assert!(matches!(fenced, Err(WireError::Unavailable(ref m)) if m.contains("dissolving")), "{fenced:?}");
        // Every refusal promises that nothing was proposed.
        for r in [fenced, WriteGate::new(me, &f, &ok).admit(lost(), later).await] {
            assert_eq!(r.err().map(|e| e.outcome()), Some(flotilla_core::Outcome::NotApplied));
        }
        assert_eq!(f.writes_in_flight(), 0, "refused writes are not in flight");
    }

    #[tokio::test]
    async fn a_pass_keeps_the_write_in_flight_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (me, f) = formation(dir.path());
        let pass = WriteGate::new(me, &f, &Disk(None))
            .admit(quorum_ok(), Instant::now() + Duration::from_secs(60))
            .await
            .expect("admitted");
        // A dissolve fencing now waits for this write.
        f.set_fenced(true);
        assert_eq!(f.writes_in_flight(), 1);
        drop(pass);
        assert_eq!(f.writes_in_flight(), 0);
    }
}
