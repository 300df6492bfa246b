//! The diagnosis budget: how many signature-mismatch diagnoses (each a
//! gateway call) one (tenant, provider) may cause. A token bucket on the
//! pipeline's [`Clock`]; past it, a forged delivery gets the plain
//! mismatch with no gateway call, so nobody can make the host hammer a
//! tenant's gateway account by sending bad signatures.
//!
//! To be replaced by the `webhook_diagnosis` lane of the shared rate
//! limiter when that lands (it is shared across instances; this one is
//! per instance, which bounds the calls to `instances × burst`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::Clock;
use crate::store::{ProviderId, TenantId};

/// At most this many (tenant, provider) buckets are kept; beyond it the
/// fullest (oldest refilled) are dropped, which only ever grants a fresh
/// burst, never more than one per key at a time.
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// A per-(tenant, provider) token bucket.
#[derive(Debug)]
pub struct DiagnosisBudget {
    burst: f64,
    per_ms: f64,
    clock: Clock,
    buckets: Mutex<HashMap<(TenantId, ProviderId), Bucket>>,
}

impl DiagnosisBudget {
    /// `burst` tokens at most, `per_minute` regained per minute.
    pub fn new(burst: u32, per_minute: u32, clock: Clock) -> DiagnosisBudget {
        DiagnosisBudget {
            burst: f64::from(burst),
            per_ms: f64::from(per_minute) / 60_000.0,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for (`tenant`, `provider`); `false` when none is left.
    pub fn try_take(&self, tenant: &TenantId, provider: &ProviderId) -> bool {
        let now = self.clock.now().as_i64();
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        if buckets.len() >= MAX_BUCKETS {
            buckets.clear();
        }
        let bucket = buckets
            .entry((tenant.clone(), provider.clone()))
            .or_insert(Bucket {
                tokens: self.burst,
                at_ms: now,
            });
        let elapsed = (now - bucket.at_ms).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * self.per_ms).min(self.burst);
        bucket.at_ms = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::ManualClock;
    use std::time::Duration;

    #[test]
    fn a_burst_then_one_token_per_interval_per_key() {
        let manual = std::sync::Arc::new(ManualClock::starting_now());
        let budget = DiagnosisBudget::new(2, 1, Clock::from(manual.clone()));
        let t = TenantId::generate();
        let other = TenantId::generate();
        let p = ProviderId::parse("stripe").expect("id");
        assert!(budget.try_take(&t, &p));
        assert!(budget.try_take(&t, &p));
        assert!(!budget.try_take(&t, &p), "the burst is spent");
        assert!(budget.try_take(&other, &p), "another tenant has its own");
        manual.advance(Duration::from_secs(60));
        assert!(budget.try_take(&t, &p), "one regained per minute");
        assert!(!budget.try_take(&t, &p));
    }
}
