//! The wall clock that time-driven domain logic reads: feature-override
//! expiry, quota periods. Injected everywhere it matters, so tests move
//! time (cross a month, expire an override) without sleeping.
//!
//! One clock per host instance: `server::app_state_with_clock` hands the
//! same one to every module, so a test that moves it moves all of them.
//! The rate limiter keeps a monotonic clock of its own (`ratelimit`): its
//! budgets must not jump when the wall clock does.

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
}
