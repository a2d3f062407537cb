//! openraft's storage conformance suite, run against the real redb store in a temp dir.
//!
//! The suite needs integer node ids (`NodeId: From<u64>`), which Flotilla's own `TypeConfig`
//! cannot offer (its node id is a libp2p `PeerId`), so it runs with a test configuration that
//! differs only in the node id type; the store is generic over such configurations
//! (`StoreConfig`) and runs the same code for both. Every case of the suite runs on a
//! plaintext store, on a store encrypted at rest (every log entry, value, dedup record and
//! snapshot file the suite writes is then sealed and opened again), and on a store whose logs
//! are in the write-ahead log.

use std::sync::Arc;

use flotilla_core::{Command, CommandResult, KvStateMachine, MemberInfo, Namespace};
use flotilla_store::{AtRestCipher, AtRestKey, LogKind, LogStore, StateMachineStore, Store, StoreConfig, StoreOptions};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, StorageError};
use tempfile::TempDir;

openraft::declare_raft_types!(
    /// Flotilla's type configuration with integer node ids.
    pub SuiteConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = MemberInfo,
);

impl StoreConfig for SuiteConfig {
    fn command(entry: &Self::Entry) -> Option<&Command> {
        match &entry.payload {
            EntryPayload::Normal(command) => Some(command),
            _ => None,
        }
    }
}

/// Each build opens a fresh store in a fresh temp dir (the dir is the guard), sealed at rest
/// when `sealed`, with its logs where `log` says.
struct RedbBuilder {
    sealed: bool,
    log: LogKind,
}

impl RedbBuilder {
    fn options(&self) -> Result<StoreOptions, StorageError<SuiteConfig>> {
        if !self.sealed {
            // Small segments: the suite opens a store per case, and each makes two.
            return Ok(StoreOptions { log: self.log, wal_segment_bytes: Some(256 * 1024), ..StoreOptions::default() });
        }
        let keys = [AtRestKey { id: *b"suite-k1", key: [0x11; 32] }, AtRestKey { id: *b"suite-k2", key: [0x22; 32] }];
        let cipher = AtRestCipher::new(keys, *b"suite-k2").map_err(storage_error)?;
        Ok(StoreOptions { at_rest: Some(Arc::new(cipher)), ..StoreOptions::default() })
    }
}

fn storage_error(e: impl std::fmt::Display) -> StorageError<SuiteConfig> {
    StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, std::io::Error::other(e.to_string()))
}

impl StoreBuilder<SuiteConfig, LogStore<SuiteConfig>, StateMachineStore<SuiteConfig>, TempDir> for RedbBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<SuiteConfig>, StateMachineStore<SuiteConfig>), StorageError<SuiteConfig>> {
        let dir = tempfile::tempdir().map_err(storage_error)?;
        let store = Store::open_with(dir.path(), self.options()?).map_err(storage_error)?;
        let ns = Namespace::new("suite").map_err(storage_error)?;
        let log = store.typed_log_store::<SuiteConfig>(&ns).map_err(storage_error)?;
        let sm = store.typed_state_machine::<SuiteConfig>(&ns, Arc::new(KvStateMachine)).map_err(storage_error)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(RedbBuilder { sealed: false, log: LogKind::Tables }).await.expect("openraft storage suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_write_ahead_log() {
    Suite::test_all(RedbBuilder { sealed: false, log: LogKind::Wal })
        .await
        .expect("openraft storage suite, logs in the write-ahead log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_sealed_at_rest() {
    Suite::test_all(RedbBuilder { sealed: true, log: LogKind::Tables })
        .await
        .expect("openraft storage suite, sealed at rest");
}
