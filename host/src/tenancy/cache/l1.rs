//! L1: bounded in-process maps with TTL, a tenant → keys index and an
//! invalidation epoch (a fill that raced with an eviction is dropped).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::Invalidation;
use crate::tenancy::{ApiKeyHash, Domain, ResolvedApiKey, TenantId, TenantStatus};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum CacheKey {
    ApiKey(ApiKeyHash),
    Host(Domain),
    Tenant(TenantId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cached {
    ApiKey(ResolvedApiKey),
    Host(TenantId),
    Tenant { id: TenantId, status: TenantStatus },
}

impl Cached {
    /// The tenant this entry belongs to (for the reverse index).
    pub(super) fn tenant(&self) -> &TenantId {
        match self {
            Cached::ApiKey(resolved) => &resolved.tenant_id,
            Cached::Host(tenant) => tenant,
            Cached::Tenant { id, .. } => id,
        }
    }
}

pub(super) fn expiry(now: Instant, ttl: Duration) -> Instant {
    // `ttl` is bounded by MAX_TTL, so this only fails on a clock near its end.
    now.checked_add(ttl).unwrap_or(now)
}

pub(super) enum Lookup<V> {
    Hit(V),
    Expired(V),
    Miss,
}

pub(super) struct Slot<V> {
    value: V,
    expires_at: Instant,
    seq: u64,
}

/// A map of at most `capacity` entries with per-entry expiry; when full, the
/// oldest insertion is evicted. `order` may hold stale `(key, seq)` pairs for
/// removed or replaced entries; they are skipped and compacted away.
pub(super) struct Bounded<K, V> {
    capacity: usize,
    entries: HashMap<K, Slot<V>>,
    order: VecDeque<(K, u64)>,
    next_seq: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> Bounded<K, V> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The live value; an expired entry is removed and handed back.
    pub(super) fn get(&mut self, key: &K, now: Instant) -> Lookup<V> {
        match self.entries.get(key) {
            None => Lookup::Miss,
            Some(slot) if slot.expires_at > now => Lookup::Hit(slot.value.clone()),
            Some(_) => match self.entries.remove(key) {
                Some(slot) => Lookup::Expired(slot.value),
                None => Lookup::Miss,
            },
        }
    }

    /// Inserts, returning every entry displaced (the replaced value and any
    /// evicted to make room).
    pub(super) fn insert(&mut self, key: K, value: V, expires_at: Instant) -> Vec<(K, V)> {
        let mut displaced = Vec::new();
        if let Some(old) = self.entries.remove(&key) {
            displaced.push((key.clone(), old.value));
        }
        while self.entries.len() >= self.capacity {
            let Some((oldest, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&oldest).is_some_and(|s| s.seq == seq)
                && let Some(slot) = self.entries.remove(&oldest)
            {
                displaced.push((oldest, slot.value));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((key.clone(), seq));
        self.entries.insert(
            key,
            Slot {
                value,
                expires_at,
                seq,
            },
        );
        if self.order.len() > 2 * self.capacity + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(k, seq)| entries.get(k).is_some_and(|s| s.seq == *seq));
        }
        displaced
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|slot| slot.value)
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

pub(super) enum L1Lookup {
    Found(Cached),
    /// Negatively cached: known not to exist.
    Absent,
    Miss {
        epoch: u64,
    },
}

pub(super) struct L1 {
    pub(super) positive: Bounded<CacheKey, Cached>,
    pub(super) negative: Bounded<CacheKey, ()>,
    /// Every positive key, by the tenant it belongs to.
    pub(super) by_tenant: HashMap<TenantId, HashSet<CacheKey>>,
    /// Bumped by every eviction; a fill that started in an older epoch may
    /// carry a value read before the write and is dropped.
    pub(super) epoch: u64,
}

impl L1 {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            positive: Bounded::new(capacity),
            negative: Bounded::new(capacity),
            by_tenant: HashMap::new(),
            epoch: 0,
        }
    }

    pub(super) fn lookup(&mut self, key: &CacheKey, now: Instant) -> L1Lookup {
        match self.positive.get(key, now) {
            Lookup::Hit(value) => return L1Lookup::Found(value),
            Lookup::Expired(value) => self.unindex(key, &value),
            Lookup::Miss => {}
        }
        if let Lookup::Hit(()) = self.negative.get(key, now) {
            return L1Lookup::Absent;
        }
        L1Lookup::Miss { epoch: self.epoch }
    }

    pub(super) fn fill(
        &mut self,
        key: CacheKey,
        value: Option<Cached>,
        epoch: u64,
        now: Instant,
        ttl: Duration,
        negative_ttl: Duration,
    ) {
        if epoch != self.epoch {
            return;
        }
        match value {
            Some(value) => {
                self.negative.remove(&key);
                let tenant = value.tenant().clone();
                for (old_key, old) in self.positive.insert(key.clone(), value, expiry(now, ttl)) {
                    self.unindex(&old_key, &old);
                }
                self.by_tenant.entry(tenant).or_default().insert(key);
            }
            None => {
                self.remove_positive(&key);
                if !negative_ttl.is_zero() {
                    self.negative.insert(key, (), expiry(now, negative_ttl));
                }
            }
        }
    }

    pub(super) fn unindex(&mut self, key: &CacheKey, value: &Cached) {
        if let Some(keys) = self.by_tenant.get_mut(value.tenant()) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_tenant.remove(value.tenant());
            }
        }
    }

    pub(super) fn remove_positive(&mut self, key: &CacheKey) {
        if let Some(old) = self.positive.remove(key) {
            self.unindex(key, &old);
        }
    }

    pub(super) fn evict_key(&mut self, key: &CacheKey) {
        self.remove_positive(key);
        self.negative.remove(key);
    }

    pub(super) fn evict(&mut self, inv: &Invalidation) {
        self.epoch += 1;
        for tenant in &inv.tenants {
            for key in self.by_tenant.remove(tenant).unwrap_or_default() {
                self.positive.remove(&key);
            }
            self.evict_key(&CacheKey::Tenant(tenant.clone()));
        }
        for domain in &inv.domains {
            self.evict_key(&CacheKey::Host(domain.clone()));
        }
        for hash in &inv.api_keys {
            self.evict_key(&CacheKey::ApiKey(hash.clone()));
        }
    }

    pub(super) fn flush(&mut self) {
        self.epoch += 1;
        self.positive.clear();
        self.negative.clear();
        self.by_tenant.clear();
    }
}
