//! How much one Raft message may carry, and how long it may take to cross.
//!
//! openraft bounds an append by its number of entries and gives every append the heartbeat
//! interval as its deadline, whatever it carries. Neither fits large entries: 1 MiB values
//! overflow a frame after a few entries, and a frame of several MiB cannot cross a slow link or
//! be stored by a debug build within 50 ms. [`WireBudget`] cuts appends to a byte budget and
//! stretches the deadline of any message with the bytes it carries.

use std::time::Duration;

/// Bandwidth every peer link is assumed to sustain at least, in bytes per second. Deliberately
/// low: a deadline that is too long only delays the retry of a message lost on a stalled link
/// (heartbeats run separately, so leadership does not depend on it), while one that is too
/// short makes a large message fail forever.
const MIN_BYTES_PER_SEC: u64 = 1024 * 1024;

/// The byte budget and deadlines of the messages one group sends to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireBudget {
    /// Largest number of payload bytes one message carries (about half a frame, leaving room
    /// for the envelope and sealing). A single item larger than this still travels alone.
    pub bytes: usize,
    /// Least deadline of a message that carries data (entries or a snapshot chunk): it must
    /// cover the receiver's write to disk, not only the network.
    pub ttl_floor: Duration,
}

impl WireBudget {
    /// The budget of a node whose frames hold `max_frame_bytes` and whose elections time out
    /// after at most `election_max`.
    pub fn new(max_frame_bytes: usize, election_max: Duration) -> Self {
        Self { bytes: (max_frame_bytes / 2).max(1), ttl_floor: election_max }
    }

    /// How many of the items of sizes `sizes`, taken in order, one message carries: the longest
    /// prefix that fits the budget, and always at least one item so replication progresses (the
    /// request limits keep any single entry below the frame limit).
    pub fn prefix_len(&self, sizes: impl IntoIterator<Item = usize>) -> usize {
        let mut total = 0usize;
        let mut count = 0usize;
        for size in sizes {
            total = total.saturating_add(size);
            if count > 0 && total > self.bytes {
                break;
            }
            count += 1;
        }
        count
    }

    /// The deadline of a message carrying `bytes` of data when openraft proposed `proposed`: a
    /// message without data keeps `proposed`; one with data gets at least the floor, plus the
    /// time to move its bytes at the assumed least bandwidth.
    pub fn ttl(&self, proposed: Duration, bytes: usize) -> Duration {
        if bytes == 0 {
            return proposed;
        }
        let transfer = Duration::from_millis((bytes as u64).saturating_mul(1000) / MIN_BYTES_PER_SEC);
        proposed.max(self.ttl_floor).saturating_add(transfer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn budget() -> WireBudget {
        WireBudget::new(16 * MIB, Duration::from_millis(600))
    }

    #[test]
    fn an_append_of_large_entries_is_cut_to_half_a_frame() {
        assert_eq!(budget().prefix_len(vec![MIB + 100; 40]), 7);
        assert_eq!(budget().prefix_len(vec![MIB; 40]), 8);
    }

    #[test]
    fn small_entries_all_travel_together() {
        assert_eq!(budget().prefix_len(vec![100; 512]), 512);
        assert_eq!(budget().prefix_len(Vec::new()), 0);
    }

    #[test]
    fn an_entry_larger_than_the_budget_still_travels_alone() {
        assert_eq!(budget().prefix_len(vec![9 * MIB, 10]), 1);
        assert_eq!(budget().prefix_len(vec![10, 9 * MIB]), 1);
        assert_eq!(budget().prefix_len(vec![usize::MAX, usize::MAX]), 1);
    }

    #[test]
    fn a_message_without_data_keeps_openraft_s_deadline() {
        assert_eq!(budget().ttl(Duration::from_millis(50), 0), Duration::from_millis(50));
    }

    #[test]
    fn the_deadline_grows_with_the_bytes_carried() {
        let b = budget();
        assert_eq!(b.ttl(Duration::from_millis(50), 10), Duration::from_millis(600));
        assert_eq!(b.ttl(Duration::from_millis(50), 8 * MIB), Duration::from_millis(8_600));
        assert_eq!(b.ttl(Duration::from_secs(3), MIB), Duration::from_millis(4_000));
        assert!(b.ttl(Duration::from_millis(50), usize::MAX) > Duration::from_secs(3600));
    }
}
