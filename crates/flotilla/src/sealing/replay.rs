//! The anti-replay window of one sealed channel.
//!
//! Requests of one channel are numbered 1, 2, 3... by the sender, but may arrive slightly out of
//! order (calls are concurrent tasks that race to the stream). The window accepts each number
//! once, as long as it is no more than [`WINDOW`] behind the highest seen, like IPsec's.

/// How far behind the highest accepted number a late one may be.
pub const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;

/// Which sequence numbers were already accepted, near the highest.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest accepted number; 0 = none yet (0 is never a valid number).
    highest: u64,
    /// Bit `n % WINDOW` is set when `n` (within the window) was accepted.
    seen: [u64; WORDS],
}

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// The number was accepted before.
    #[error("sequence number {0} was already received")]
    Duplicate(u64),
    /// The number is too far behind to tell.
    #[error("sequence number {0} is older than the replay window")]
    TooOld(u64),
    /// 0 is never sent.
    #[error("sequence number 0 is invalid")]
    Zero,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self { highest: 0, seen: [0; WORDS] }
    }
}

impl ReplayWindow {
    /// Whether `seq` may be accepted, without recording it (checked before decryption so a
    /// replay costs no AES work, and recorded after, so a forgery cannot burn a number).
    pub fn check(&self, seq: u64) -> Result<(), Replay> {
        if seq == 0 {
            return Err(Replay::Zero);
        }
        if seq > self.highest {
            return Ok(());
        }
        if self.highest - seq >= WINDOW {
            return Err(Replay::TooOld(seq));
        }
        if self.bit(seq) {
            return Err(Replay::Duplicate(seq));
        }
        Ok(())
    }

    /// Record `seq` as accepted; `check(seq)` must have passed.
    pub fn record(&mut self, seq: u64) {
        if seq > self.highest {
            let advance = seq - self.highest;
            if advance >= WINDOW {
                self.seen = [0; WORDS];
            } else {
                // Clear the slots of the numbers that now enter the window.
                (self.highest + 1..seq).for_each(|n| self.set(n, false));
            }
            self.highest = seq;
        }
        self.set(seq, true);
    }

    fn bit(&self, n: u64) -> bool {
        let slot = n % WINDOW;
        self.seen[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    fn set(&mut self, n: u64, on: bool) {
        let slot = n % WINDOW;
        let word = &mut self.seen[(slot / 64) as usize];
        if on {
            *word |= 1 << (slot % 64);
        } else {
            *word &= !(1 << (slot % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, seq: u64) -> Result<(), Replay> {
        w.check(seq)?;
        w.record(seq);
        Ok(())
    }

    #[test]
    fn each_number_is_accepted_once_in_any_order() {
        let mut w = ReplayWindow::default();
        for seq in [3, 1, 2, 10, 4, 9] {
            assert_eq!(accept(&mut w, seq), Ok(()), "{seq}");
        }
        for seq in [1, 2, 3, 4, 9, 10] {
            assert_eq!(accept(&mut w, seq), Err(Replay::Duplicate(seq)));
        }
        assert_eq!(accept(&mut w, 0), Err(Replay::Zero));
        assert_eq!(accept(&mut w, 5), Ok(()));
    }

    #[test]
    fn numbers_behind_the_window_are_refused_and_slots_are_reused() {
        let mut w = ReplayWindow::default();
        accept(&mut w, 1).unwrap();
        accept(&mut w, WINDOW + 1).unwrap();
        assert_eq!(accept(&mut w, 1), Err(Replay::TooOld(1)));
        // Slot of 2 is the slot of WINDOW + 2: entering the window clears it.
        accept(&mut w, 2).unwrap();
        accept(&mut w, WINDOW + 2).unwrap();
        assert_eq!(accept(&mut w, WINDOW + 2), Err(Replay::Duplicate(WINDOW + 2)));
        accept(&mut w, 10 * WINDOW).unwrap();
        assert_eq!(accept(&mut w, 9 * WINDOW + 1), Ok(()));
        assert_eq!(accept(&mut w, 9 * WINDOW), Err(Replay::TooOld(9 * WINDOW)));
    }

    #[test]
    fn a_random_permutation_within_the_window_is_accepted_exactly_once() {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seqs: Vec<u64> = (1..=3000).collect();
        seqs.shuffle(&mut rng);
        let mut w = ReplayWindow::default();
        for &s in &seqs {
            assert_eq!(accept(&mut w, s), Ok(()), "{s}");
        }
        for &s in &seqs {
            assert!(accept(&mut w, s).is_err(), "{s} accepted twice");
        }
    }
}
