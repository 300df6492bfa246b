//! The wall clock that time-driven domain logic reads: feature-override
//! expiry, quota periods. Injected everywhere it matters, so tests move
//! time (cross a month, expire an override) without sleeping.
//!
//! One clock per host instance: `server::app_state_with_clock` hands the
//! same one to every module, so a test that moves it moves all of them.
//! The rate limiter keeps a monotonic clock of its own (`ratelimit`): its
//! budgets must not jump when the wall clock does.
//!
//! The janitor compares its time with the rows' own timestamps, which are
//! the real wall clock's, so its clock in tests is an [`OffsetClock`] (the
//! wall clock moved forward on demand) rather than a frozen [`ManualClock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::store::UnixMillis;

/// Where domain logic reads the time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> UnixMillis;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing the current wall-clock time.
    pub fn starting_now() -> ManualClock {
        ManualClock::at(UnixMillis::now())
    }

    /// A clock showing `at`.
    pub fn at(at: UnixMillis) -> ManualClock {
        ManualClock(AtomicI64::new(at.as_i64()))
    }

    /// Shows `at` from now on.
    pub fn set(&self, at: UnixMillis) {
        self.0.store(at.as_i64(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

/// The wall clock plus an offset that only grows when told to (tests of
/// logic that compares with rows stamped by the real clock). Clones share
/// the offset.
#[derive(Debug, Clone, Default)]
pub struct OffsetClock {
    offset_ms: Arc<AtomicI64>,
}

impl OffsetClock {
    /// The wall clock, no offset yet.
    pub fn new() -> OffsetClock {
        OffsetClock::default()
    }

    /// Moves this clock (and every clone) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(
            UnixMillis::now()
                .as_i64()
                .saturating_add(self.offset_ms.load(Ordering::SeqCst)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(UnixMillis(1_000));
        assert_eq!(clock.now(), UnixMillis(1_000));
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), UnixMillis(3_000));
        clock.set(UnixMillis(10));
        assert_eq!(clock.now(), UnixMillis(10));
    }

    #[test]
    fn an_offset_clock_is_the_wall_clock_moved_by_what_its_clones_add() {
        let clock = OffsetClock::new();
        let shared = clock.clone();
        let before = clock.now().as_i64();
        shared.advance(Duration::from_secs(3600));
        let after = clock.now().as_i64();
        assert!(after - before >= 3_600_000, "{before} → {after}");
        assert!(after - before < 3_660_000, "{before} → {after}");
    }
}
