//! A per-tenant cache of gateway settings, so a checkout does not read them
//! from the database on every request.
//!
//! Holds the stored records only: credentials stay sealed (ciphertext) in
//! memory and are decrypted per call, as before.
//!
//! Freshness:
//! - [`Gateways::save`](super::Gateways::save) and
//!   [`Gateways::delete`](super::Gateways::delete) evict the tenant here
//!   before they return.
//! - Other instances hear of the change on the cluster broadcast
//!   ([`crate::broadcast`], topic [`super::settings::TOPIC`]), which
//!   [`Gateways`](super::Gateways) publishes after every save and delete.
//! - An entry lives at most [`DEFAULT_TTL`], the bound on staleness if a
//!   broadcast is lost.
//! - A fill that raced with an eviction is dropped (an epoch counter), so a
//!   read that started before a save cannot re-insert the old settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::store::TenantId;
use crate::store::gateways::GatewaySettingsRecord;

/// How long an entry may be served without being re-read.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Tenants held at most; beyond that, new tenants are read uncached until
/// entries expire.
const CAPACITY: usize = 10_000;

/// The cached records of one tenant, in routing order.
pub type Records = Arc<[GatewaySettingsRecord]>;

#[derive(Debug)]
pub(crate) struct SettingsCache {
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every eviction; a fill carries the epoch its read began in.
    epoch: u64,
    entries: HashMap<TenantId, (Instant, Records)>,
}

/// A cache miss: read the database, then [`SettingsCache::fill`] with this.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Miss {
    epoch: u64,
}

impl SettingsCache {
    pub(crate) fn new(ttl: Duration) -> SettingsCache {
        SettingsCache {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the map consistent; a panic elsewhere
        // cannot poison it meaningfully.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, tenant: &TenantId) -> Result<Records, Miss> {
        let now = Instant::now();
        let mut state = self.lock();
        match state.entries.get(tenant) {
            Some((expires, records)) if *expires > now => Ok(records.clone()),
            Some(_) => {
                state.entries.remove(tenant);
                Err(Miss { epoch: state.epoch })
            }
            None => Err(Miss { epoch: state.epoch }),
        }
    }

    pub(crate) fn fill(&self, tenant: &TenantId, miss: Miss, records: Records) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.epoch != miss.epoch {
            return;
        }
        if state.entries.len() >= CAPACITY {
            state.entries.retain(|_, (expires, _)| *expires > now);
            if state.entries.len() >= CAPACITY {
                return;
            }
        }
        state
            .entries
            .insert(tenant.clone(), (now + self.ttl, records));
    }

    pub(crate) fn evict(&self, tenants: &[TenantId]) {
        let mut state = self.lock();
        state.epoch += 1;
        for tenant in tenants {
            state.entries.remove(tenant);
        }
    }

    pub(crate) fn flush(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u8) -> TenantId {
        TenantId::parse(&format!("ten_{}", hex::encode([n; 12]))).expect("tenant id")
    }

    fn empty() -> Records {
        Arc::from(Vec::new())
    }

    #[test]
    fn a_fill_that_raced_an_eviction_is_dropped() {
        let cache = SettingsCache::new(DEFAULT_TTL);
        let miss = cache.get(&tenant(1)).expect_err("empty cache");
        // A save evicts while the read is in flight.
        cache.evict(&[tenant(1)]);
        cache.fill(&tenant(1), miss, empty());
        assert!(cache.get(&tenant(1)).is_err(), "stale fill must not land");
        let miss = cache.get(&tenant(1)).expect_err("still empty");
        cache.fill(&tenant(1), miss, empty());
        assert!(cache.get(&tenant(1)).is_ok());
    }

    #[test]
    fn eviction_and_flush_drop_entries_and_expiry_is_honoured() {
        let cache = SettingsCache::new(DEFAULT_TTL);
        for n in 1..=2 {
            let miss = cache.get(&tenant(n)).expect_err("empty");
            cache.fill(&tenant(n), miss, empty());
        }
        cache.evict(&[tenant(1)]);
        assert!(cache.get(&tenant(1)).is_err());
        assert!(cache.get(&tenant(2)).is_ok());
        cache.flush();
        assert!(cache.get(&tenant(2)).is_err());

        let expired = SettingsCache::new(Duration::ZERO);
        let miss = expired.get(&tenant(3)).expect_err("empty");
        expired.fill(&tenant(3), miss, empty());
        assert!(expired.get(&tenant(3)).is_err(), "a zero TTL never serves");
    }
}
