//! Crash points for this crate's own crash tests: with the `crash-points` feature (enabled only
//! by the crate's dev-dependency on itself), `FLOTILLA_STORE_CRASH_AT=<point>` makes the process
//! exit at once, status [`CRASH_EXIT_CODE`], when it reaches that step, as a crash would there:
//! no destructor runs, nothing more is written or synced. Without the feature, `hit` is empty.
//!
//! The points (each named where it is hit):
//! - `wal-checkpoint`: the writer is about to make redb's non-durable commits durable;
//! - `wal-copy-appended`, `wal-copy-synced`: copying forward wrote its copies, before and after
//!   syncing them (and before any segment is recycled);
//! - `wal-recycle-deleted`: recycling deleted one segment, before syncing the directory;
//! - `wal-convert-synced`: a conversion from tables synced the new log, before the commit that
//!   makes the store use it;
//! - `wal-seal-copied`: sealing a log in place synced the sealed copies, before recycling the
//!   plaintext segments.

/// The exit status of a process stopped at a crash point.
pub const CRASH_EXIT_CODE: i32 = 86;

/// The environment variable naming the armed point.
pub const CRASH_AT_ENV: &str = "FLOTILLA_STORE_CRASH_AT";

/// Exit the process now if `point` is the armed crash point.
#[cfg(feature = "crash-points")]
pub(crate) fn hit(point: &str) {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if ARMED.get_or_init(|| std::env::var(CRASH_AT_ENV).ok()).as_deref() == Some(point) {
        eprintln!("crash point {point}: exiting");
        std::process::exit(CRASH_EXIT_CODE);
    }
}

/// Nothing: crash points exist only with the `crash-points` feature.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub(crate) fn hit(_point: &str) {}
