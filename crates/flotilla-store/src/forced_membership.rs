//! [`ForcedMembership`]: a membership an operator forced onto a namespace's log (recovery from
//! a lost quorum), written with its vote and a record of the event in one durable commit.
//!
//! Raft cannot change the membership of a group that lost its quorum: the change itself needs
//! a quorum. The one way out is to rewrite a survivor's own log offline (the agent stopped):
//! append a membership entry with the new voters, as if a leader had proposed it. On start the
//! node takes that configuration as effective (openraft reads the last membership entry of the
//! log) and, as its only voter, elects itself and commits it with everything before it.
//!
//! What keeps this within Raft's rules on this node:
//! - the entry goes right after the last entry (or the purged id) of the log, never over one;
//! - its log id names a leader no node ever was: this node at a term above any vote it cast
//!   (`LeaderId` is `(term, node)`), and the vote is raised to that term in the same commit, so
//!   the node never votes below it again and the entry's id stays unique;
//! - the vote is not committed: the node starts as a follower and wins a real election (of
//!   itself) at the next term, whose first entry commits the forced one.
//!
//! In a store whose logs are in the write-ahead log, the vote and the record are committed
//! first and the entry is appended after: a crash between them leaves the vote raised and the
//! log as it was, and the same command can be run again.
//!
//! The record ([`Store::forced_membership`]) is kept in the namespace's meta table, so it goes
//! when the namespace's data goes, and lets the node tell its status timeline what happened.

use flotilla_core::types::{Entry, LogId, Vote};
use flotilla_core::Namespace;
use openraft::entry::RaftEntry;
use openraft::EntryPayload;
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::codec::{decode_sealed, encode_sealed};
use crate::error::StoreError;
use crate::store::{read_meta, Store};
use crate::tables::{NsTables, META_FORCED, META_PURGED, META_VOTE};
use crate::wal_record::RecordKind;
use crate::writer::{clean, dirty, JobFailure, Wait};
use crate::writer_wal::{WalOp, WalWrite};

/// The record of a membership forced onto a namespace's log by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForcedMembership {
    /// The log id of the forced membership entry.
    pub log_id: LogId,
    /// The cluster id the namespace had before.
    pub previous_cluster: String,
    /// The cluster id the forced membership stamps.
    pub cluster: String,
    /// When it was forced, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Why, in words (for the status timeline): a recovery from a lost quorum, a restore.
    pub reason: String,
}

/// Why a forced tail cannot go onto the log as it is: a pure check of what the log holds.
///
/// `last` is the index of the log's last entry (or of the purged id when the log is empty),
/// `stored` the vote on disk, `vote` and `entry` what is to be written.
pub(crate) fn check_forced_tail(
    last: Option<u64>,
    stored: Option<&Vote>,
    vote: &Vote,
    entry: &LogId,
) -> Result<(), String> {
    let next = last.map_or(0, |l| l.saturating_add(1));
    if entry.index != next {
        return Err(format!("the forced entry is at index {}, the log's next index is {next}", entry.index));
    }
    if stored.is_some_and(|s| vote < s) {
        return Err("the forced vote is older than the stored vote".into());
    }
    if entry.leader_id != vote.leader_id {
        return Err("the forced entry's leader is not the forced vote's".into());
    }
    Ok(())
}

impl Store {
    /// Append `entry`, a membership entry, right after the last entry of `ns`'s log, save
    /// `vote` and keep `record`, all in one durable commit. The namespace's Raft group must not
    /// be running (the agent is stopped). Refused with [`StoreError::Invalid`] when `entry` is
    /// not a membership entry, is not at the log's next index, names another leader than
    /// `vote`, or `vote` is older than the stored one.
    pub async fn force_membership(
        &self,
        ns: &Namespace,
        vote: Vote,
        entry: Entry,
        record: &ForcedMembership,
    ) -> Result<(), StoreError> {
        if !matches!(entry.payload, EntryPayload::Membership(_)) || entry.log_id != record.log_id {
            return Err(StoreError::Invalid("a forced entry must be the recorded membership entry".into()));
        }
        let tables = NsTables::new(ns);
        let index = entry.index();
        let sealed_entry = self.codec.encode(&tables.log_context(index), &entry)?;
        let (sealed_vote, sealed_record) = (encode_sealed(&vote)?, encode_sealed(record)?);
        let cost = sealed_entry.len() + sealed_vote.len() + sealed_record.len();
        let log_id = entry.log_id;
        let in_wal = self.wal.is_some();
        let wal_last = if in_wal { self.wal_last_index(ns)? } else { None };
        let table_entry = sealed_entry.clone();
        let work = move |txn: &WriteTransaction| {
            let last = if in_wal { wal_last } else { last_index(txn, &tables)? };
            let stored = stored_vote(txn, &tables)?;
            check_forced_tail(last, stored.as_ref(), &vote, &log_id)
                .map_err(|e| JobFailure::clean(StoreError::Invalid(e)))?;
            if !in_wal {
                let mut log = txn.open_table(tables.log()).map_err(clean)?;
                log.insert(index, table_entry.as_slice()).map_err(dirty)?;
            }
            let mut meta = txn.open_table(tables.meta()).map_err(dirty)?;
            meta.insert(META_VOTE, sealed_vote.as_slice()).map_err(dirty)?;
            meta.insert(META_FORCED, sealed_record.as_slice()).map_err(dirty)?;
            Ok(())
        };
        self.writer.execute(cost, work).await?;
        if in_wal {
            let write = WalWrite { kind: RecordKind::Entry, index, payload: sealed_entry };
            self.writer.write_log(ns, WalOp::Append(vec![write]), Wait::Durable, None).await?;
        }
        Ok(())
    }

    /// The last membership forced onto `ns`'s log by an operator, if any was.
    pub fn forced_membership(&self, ns: &Namespace) -> Result<Option<ForcedMembership>, StoreError> {
        let txn = self.read_txn()?;
        read_meta(&txn, &NsTables::new(ns), META_FORCED)
    }
}

/// Index of the last log entry of `tables`, else of the purged log id.
fn last_index(txn: &WriteTransaction, tables: &NsTables) -> Result<Option<u64>, JobFailure> {
    let log = txn.open_table(tables.log()).map_err(clean)?;
    if let Some((index, _)) = log.last().map_err(clean)? {
        return Ok(Some(index.value()));
    }
    let meta = txn.open_table(tables.meta()).map_err(clean)?;
    let purged = match meta.get(META_PURGED).map_err(clean)? {
        Some(v) => {
            Some(decode_sealed::<LogId>(v.value(), &|| tables.meta_what(META_PURGED)).map_err(JobFailure::clean)?)
        }
        None => None,
    };
    Ok(purged.map(|p| p.index))
}

/// The vote stored for `tables`.
fn stored_vote(txn: &WriteTransaction, tables: &NsTables) -> Result<Option<Vote>, JobFailure> {
    let meta = txn.open_table(tables.meta()).map_err(clean)?;
    let stored = meta.get(META_VOTE).map_err(clean)?;
    stored
        .map(|v| decode_sealed::<Vote>(v.value(), &|| tables.meta_what(META_VOTE)).map_err(JobFailure::clean))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::types::{NodeId, TypeConfig};
    use openraft::vote::RaftLeaderIdExt;
    use openraft::RaftTypeConfig;

    fn node(n: u8) -> NodeId {
        let mut seed = [0u8; 32];
        seed[0] = n;
        libp2p_identity::Keypair::ed25519_from_bytes(seed).expect("key").public().to_peer_id()
    }

    fn at(term: u64, who: u8, index: u64) -> LogId {
        LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(term, node(who)), index)
    }

    /// (log's last index, stored vote, forced vote, forced entry, accepted).
    type Case = (Option<u64>, Option<Vote>, Vote, LogId, bool);

    #[test]
    fn a_forced_tail_goes_right_after_the_log_under_a_vote_that_does_not_go_back() {
        let me = 1;
        let cases: Vec<Case> = vec![
            // The usual case: vote raised one term, the entry under it, right after the log.
            (Some(9), Some(Vote::new(4, node(2))), Vote::new(5, node(me)), at(5, me, 10), true),
            // An empty log that was never purged: the entry is the first one.
            (None, None, Vote::new(1, node(me)), at(1, me, 0), true),
            // A gap or an overwrite of the last entry.
            (Some(9), Some(Vote::new(4, node(2))), Vote::new(5, node(me)), at(5, me, 11), false),
            (Some(9), Some(Vote::new(4, node(2))), Vote::new(5, node(me)), at(5, me, 9), false),
            // A vote older than the stored one.
            (Some(9), Some(Vote::new(6, node(2))), Vote::new(5, node(me)), at(5, me, 10), false),
            // The entry under another leader than the vote.
            (Some(9), Some(Vote::new(4, node(2))), Vote::new(5, node(me)), at(5, 2, 10), false),
            (Some(9), Some(Vote::new(4, node(2))), Vote::new(5, node(me)), at(4, me, 10), false),
        ];
        for (last, stored, vote, entry, accepted) in cases {
            let got = check_forced_tail(last, stored.as_ref(), &vote, &entry);
            assert_eq!(got.is_ok(), accepted, "last {last:?}, stored {stored:?}, vote {vote}, entry {entry}: {got:?}");
        }
    }
}
