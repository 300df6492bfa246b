//! The clock the webhook pipeline schedules by: the instance's wall clock
//! ([`crate::clock`]), hand-driven in tests, so retries and leases are
//! tested without sleeping.

use std::sync::Arc;

use crate::store::UnixMillis;

/// Where "now" comes from. Cheap to clone.
#[derive(Clone)]
pub struct Clock(Arc<dyn crate::clock::Clock>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(Arc::new(crate::clock::SystemClock))
    }

    /// The current time on this clock.
    pub fn now(&self) -> UnixMillis {
        self.0.now()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now().as_i64())
    }
}

impl<C: crate::clock::Clock> From<Arc<C>> for Clock {
    fn from(clock: Arc<C>) -> Clock {
        Clock(clock)
    }
}

impl From<Arc<dyn crate::clock::Clock>> for Clock {
    fn from(clock: Arc<dyn crate::clock::Clock>) -> Clock {
        Clock(clock)
    }
}
