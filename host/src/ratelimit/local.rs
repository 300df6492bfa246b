//! The in-process limiter: one TAT per key in a sharded map of bounded
//! size, on an injectable clock.
//!
//! Memory is bounded by evicting idle keys: a key whose TAT has passed is
//! indistinguishable from one never seen (see [`super::gcra`]), so dropping
//! it changes no answer. Only when a shard is full of keys that are all
//! still refilling does it drop the one closest to full, which can admit
//! that key's few remaining requests early; that needs more live keys than
//! `max_keys`, i.e. a mis-sized limit, and is logged.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::gcra::{self, Outcome, Quota};

/// Shards of the map; a power of two so a hash picks one with a mask.
const SHARDS: usize = 16;

/// The time source of the in-process limiter, injectable so tests control
/// refills.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since an arbitrary origin fixed for the clock's life.
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to (tests). Clones share the time.
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<std::sync::atomic::AtomicU64>,
}

#[cfg(any(test, feature = "test-support"))]
impl ManualClock {
    /// A clock at its origin.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.micros
            .fetch_add(micros, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_micros(self.micros.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// TATs by key, sharded so concurrent requests rarely share a lock.
pub(super) struct LocalLimiter<K> {
    shards: Vec<Mutex<HashMap<K, u64>>>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
    clock: Arc<dyn Clock>,
}

impl<K: Hash + Eq + Clone> LocalLimiter<K> {
    /// A limiter holding at most about `max_keys` keys (at least one per shard).
    pub(super) fn new(max_keys: usize, clock: Arc<dyn Clock>) -> LocalLimiter<K> {
        let per_shard = max_keys.div_ceil(SHARDS).max(1);
        LocalLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            hasher: Default::default(),
            clock,
        }
    }

    /// The clock's time in microseconds.
    fn now(&self) -> u64 {
        u64::try_from(self.clock.now().as_micros()).unwrap_or(u64::MAX)
    }

    /// One request of `key` under `quota`.
    pub(super) fn check(&self, key: &K, quota: Quota) -> Outcome {
        let now = self.now();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) & (SHARDS - 1)];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let (outcome, new_tat) = gcra::step(quota, map.get(key).copied(), now);
        if let Some(tat) = new_tat {
            match map.get_mut(key) {
                Some(slot) => *slot = tat,
                None => {
                    if map.len() >= self.per_shard {
                        evict(&mut map, now);
                    }
                    map.insert(key.clone(), tat);
                }
            }
        }
        outcome
    }

    /// Keys held now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Makes room in a full shard: drops every key whose TAT has passed, or,
/// when none has, the one whose budget is closest to full.
fn evict<K: Hash + Eq + Clone>(map: &mut HashMap<K, u64>, now: u64) {
    let before = map.len();
    map.retain(|_, tat| *tat > now);
    if map.len() < before {
        return;
    }
    if let Some(oldest) = map
        .iter()
        .min_by_key(|(_, tat)| **tat)
        .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
        tracing::warn!(
            keys = before,
            "rate limiter: a shard is full of active keys; raise rate_limit.max_tracked_keys"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_keys: usize) -> (LocalLimiter<String>, ManualClock) {
        let clock = ManualClock::new();
        (LocalLimiter::new(max_keys, Arc::new(clock.clone())), clock)
    }

    #[test]
    fn keys_have_separate_budgets_that_refill_with_the_clock() {
        let (l, clock) = limiter(100);
        let q = Quota::per_minute(60, Some(2));
        let a = "a".to_string();
        let b = "b".to_string();
        assert!(l.check(&a, q).allowed);
        assert!(l.check(&a, q).allowed);
        assert!(!l.check(&a, q).allowed);
        assert!(l.check(&b, q).allowed, "another key is unaffected");
        clock.advance(Duration::from_millis(999));
        assert!(!l.check(&a, q).allowed);
        clock.advance(Duration::from_millis(1));
        assert!(l.check(&a, q).allowed, "one interval later, one more");
        assert!(!l.check(&a, q).allowed);
    }

    #[test]
    fn memory_is_bounded_by_evicting_idle_keys_first() {
        let (l, clock) = limiter(SHARDS);
        let q = Quota::per_minute(60, Some(5));
        for i in 0..1000 {
            l.check(&format!("k{i}"), q);
        }
        assert!(l.len() <= SHARDS, "{} keys held", l.len());
        // Every key is idle after its reset time: all of them can go.
        clock.advance(Duration::from_secs(10));
        let busy = "busy".to_string();
        for _ in 0..5 {
            assert!(l.check(&busy, q).allowed);
        }
        for i in 0..1000 {
            l.check(&format!("other{i}"), q);
        }
        assert!(l.len() <= SHARDS, "{} keys held", l.len());
    }

    #[test]
    fn an_evicted_idle_key_answers_as_before() {
        let q = Quota::per_minute(60, Some(3));
        let (l, clock) = limiter(SHARDS);
        let key = "k".to_string();
        l.check(&key, q);
        clock.advance(Duration::from_secs(3));
        for i in 0..200 {
            l.check(&format!("x{i}"), q);
        }
        let allowed = (0..4).filter(|_| l.check(&key, q).allowed).count();
        assert_eq!(allowed, 3);
    }
}
