//! Translate Flotilla's [`Config`] into openraft's.

use std::sync::Arc;

use flotilla_core::{Config, Namespace};
use openraft::SnapshotPolicy;

/// Entries of openraft's per-stage latency buffers (see `log_stage_capacity` below).
const LOG_STAGE_CAPACITY: u64 = 8;

/// Build the openraft configuration of one namespace's group.
pub fn raft_config(config: &Config, namespace: &Namespace) -> Result<Arc<openraft::Config>, openraft::ConfigError> {
    let timing = config.timing();
    // The lease must stay below the election timeout so a deposed leader stops serving lease
    // reads before anyone else can be elected.
    let probe = timing.election_max_ms * 2;
    let raft = openraft::Config {
        cluster_name: format!("flotilla/{namespace}"),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_min_ms,
        election_timeout_max: timing.election_max_ms,
        // Pre-vote stops an isolated node that rejoins from deposing a healthy leader.
        enable_pre_vote: Some(true),
        // openraft#2080: under a partial partition an old leader's heartbeats can block a
        // connected quorum; the probe makes such a leader step down.
        quorum_loss_probe_interval: Some(probe),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: config.keep_logs_behind_snapshot,
        install_snapshot_timeout: (timing.election_max_ms * 4).max(2_000),
        max_payload_entries: 512,
        // Latency ring buffers per log stage, allocated per group even without openraft's
        // `runtime-stats` feature (which Flotilla does not enable, so nothing reads them):
        // 1,024 entries by default, about 140 KiB per group, 140 MiB at 1,000 namespaces.
        log_stage_capacity: Some(LOG_STAGE_CAPACITY),
        // The store makes applied state and the committed index visible before they are
        // durable, and a leader's appended entries before they are flushed (see
        // flotilla-store's writer). A leader restarted after a crash may therefore hold less
        // than it had before; restoring its leadership without an election could let it serve
        // a stale state or reuse log indexes of its term. It stands for election instead.
        enable_leader_restore: Some(false),
        ..Default::default()
    };
    Ok(Arc::new(raft.validate()?))
}
