//! The clock the webhook pipeline schedules by: the wall clock in service,
//! a hand-driven one in tests, so retries and leases are tested without
//! sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::store::UnixMillis;

/// Where "now" comes from. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// Moves only when [`ManualClock::advance`] is called.
    Manual(ManualClock),
}

impl Clock {
    /// The current time on this clock.
    pub fn now(&self) -> UnixMillis {
        match self {
            Clock::System => UnixMillis::now(),
            Clock::Manual(m) => UnixMillis(m.0.load(Ordering::SeqCst)),
        }
    }
}

/// A clock that starts at the wall-clock time of its creation and then
/// moves only by [`ManualClock::advance`].
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(Arc::new(AtomicI64::new(UnixMillis::now().as_i64())))
    }
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let manual = ManualClock::default();
        let clock = Clock::Manual(manual.clone());
        let start = clock.now();
        assert_eq!(clock.now(), start);
        manual.advance(Duration::from_secs(60));
        assert_eq!(clock.now().as_i64() - start.as_i64(), 60_000);
    }
}
