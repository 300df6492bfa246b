//! Cache-first tenant resolution: API key → tenant, `Host` header → tenant,
//! tenant id (from a path) → status.
//!
//! Lookups go L1 (in-process, bounded, TTL) → L2 (Redis, optional, shared by
//! every host instance) → the database. Unknown keys and hosts are cached too,
//! for the shorter `negative_ttl`, in a map of their own so a flood of unknown
//! hosts cannot push known tenants out of L1.
//!
//! Invariants:
//! - A hit in L1 or L2 makes no database query ([`TenantResolver::db_queries`]
//!   counts the ones made).
//! - Writers call an `invalidate_*` method after a successful write. It evicts
//!   locally, replaces the L2 entries with short-lived tombstones and
//!   publishes the invalidation on the cluster [`Broadcast`] (topic
//!   [`TOPIC`]) so every other instance evicts too.
//! - A fill that raced with an invalidation is dropped: L1 fills carry the
//!   invalidation epoch they started in, L2 fills use `SET … NX` and therefore
//!   never overwrite a tombstone.
//! - When an instance may have missed broadcasts ([`Heard::Missed`]), it
//!   empties its L1 rather than serve entries it can no longer vouch for.
//! - Redis is never required: any Redis failure during resolution is logged
//!   and the lookup falls through to the database.
//!
//! Parts: [`l1`] (the in-process maps), [`l2`] (Redis), [`wire`] (what
//! travels on the broadcast).
//!
//! Must never: cache an API key secret (only its hash is a key), or fail a
//! resolution because Redis is unavailable.

mod l1;
mod l2;
mod wire;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use l1::{CacheKey, Cached, L1, L1Lookup};
use l2::{L2Read, RedisL2};
use wire::WireMessage;

use super::{
    ApiKeyHash, Domain, DomainChange, ResolvedApiKey, TenancyError, TenantId, TenantStatus,
    get_tenant, resolve_api_key, resolve_domain,
};
use crate::broadcast::{Broadcast, BroadcastError, BroadcastOptions, Heard};
use crate::store::Store;

pub use l2::L2_KEY_PREFIX;

/// The default broadcast channel (PostgreSQL `NOTIFY` / Redis pub/sub).
pub const INVALIDATION_CHANNEL: &str = crate::broadcast::DEFAULT_CHANNEL;

/// The broadcast topic of tenant-cache invalidations. Payload: a small JSON
/// object naming the tenants, domains and API key hashes to evict.
pub const TOPIC: &str = "tenancy";
/// Upper bound for the TTL options (also keeps `Instant + ttl` from overflowing).
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Errors of the tenant resolver.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// A [`ResolverOptions`] value is unusable; raised at start-up.
    #[error("invalid tenant resolver option `{option}`: {reason}")]
    Config {
        /// The option's field name.
        option: &'static str,
        /// What is wrong with it (never the value: URLs may hold passwords).
        reason: String,
    },
    /// The database lookup behind a cache miss failed.
    #[error("tenant lookup failed: {0}")]
    Lookup(#[from] TenancyError),
    /// A Redis command failed. Resolution never returns this (it degrades to
    /// the database); invalidation and listener start-up do.
    #[error("redis {action} failed: {source}")]
    Redis {
        /// What was being done (`get`, `tombstone`, `publish`, …).
        action: &'static str,
        /// The Redis error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis recently refused a connection; L2 is skipped until a retry.
    #[error("redis is unavailable (retrying shortly)")]
    RedisUnavailable,
    /// A Redis operation did not complete in time.
    #[error("redis {action} timed out")]
    RedisTimeout {
        /// What was being done.
        action: &'static str,
    },
    /// Publishing the invalidation on, or subscribing to, the broadcast failed.
    #[error("tenant cache broadcast: {0}")]
    Broadcast(#[source] BroadcastError),
    /// A cache entry could not be encoded for L2 (not expected: entries are
    /// validated ids and enums).
    #[error("cannot encode a tenant cache entry: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<BroadcastError> for ResolverError {
    fn from(e: BroadcastError) -> Self {
        match e {
            // Keep option errors as option errors: start-up names the option.
            BroadcastError::Config { option, reason } => ResolverError::Config { option, reason },
            other => ResolverError::Broadcast(other),
        }
    }
}

/// Tuning and wiring of a [`TenantResolver`].
#[derive(Clone)]
pub struct ResolverOptions {
    /// Most positive entries L1 holds (negative entries have a separate map of
    /// the same size). Oldest entries are evicted first. At least 1.
    pub l1_capacity: usize,
    /// Lifetime of a positive entry in L1 and L2: the longest a stale entry
    /// can survive if an invalidation broadcast is lost. Non-zero.
    pub ttl: Duration,
    /// Lifetime of a negative entry (unknown key or host). Zero disables
    /// negative caching.
    pub negative_ttl: Duration,
    /// `redis://…` of the shared L2 cache. When set, Redis pub/sub also
    /// carries the invalidation broadcast (instead of PostgreSQL `NOTIFY`).
    pub redis_url: Option<String>,
    /// Plain `postgres://…` URL of the store's database, for the `LISTEN`
    /// connection (an [`sqlx::AnyPool`] cannot `LISTEN`). Required when the
    /// store is PostgreSQL and `redis_url` is not set; rejected on SQLite.
    pub postgres_url: Option<String>,
    /// The PostgreSQL `NOTIFY` / Redis pub/sub channel the invalidations
    /// travel on ([`INVALIDATION_CHANNEL`] by default). Every instance of
    /// one deployment uses the same; deployments that share a database
    /// server or a Redis without sharing tenants use different ones (an
    /// unreadable or oversized message flushes every listener's L1).
    /// Lowercase ASCII letters, digits and `_`, at most 63 bytes.
    pub channel: String,
    /// The instance's cluster broadcast, shared with the other caches. When
    /// `None`, the resolver builds its own from `redis_url`, `postgres_url`
    /// and `channel`.
    pub broadcast: Option<Broadcast>,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        Self {
            l1_capacity: 10_000,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            redis_url: None,
            postgres_url: None,
            channel: INVALIDATION_CHANNEL.to_owned(),
            broadcast: None,
        }
    }
}

impl ResolverOptions {
    /// Sets [`ResolverOptions::postgres_url`] from the store's database URL
    /// when it is a PostgreSQL URL (and leaves it unset for SQLite).
    pub fn with_database_url(mut self, database_url: &str) -> Self {
        self.postgres_url = matches!(
            crate::store::Backend::from_url(database_url),
            Ok(crate::store::Backend::Postgres)
        )
        .then(|| database_url.to_owned());
        self
    }
}

impl fmt::Debug for ResolverOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may carry passwords: show only whether they are set.
        let redacted = |url: &Option<String>| url.as_ref().map(|_| "[redacted]");
        f.debug_struct("ResolverOptions")
            .field("l1_capacity", &self.l1_capacity)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("redis_url", &redacted(&self.redis_url))
            .field("postgres_url", &redacted(&self.postgres_url))
            .field("channel", &self.channel)
            .field("broadcast", &self.broadcast)
            .finish()
    }
}

/// The time source of cache expiry, injectable so tests control it.
pub trait Clock: Send + Sync + 'static {
    /// The current monotonic instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// What to evict: every cached entry of these tenants plus these domains and
/// API keys (whoever they resolved to, including negative entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invalidation {
    /// Tenants whose every cached key (API keys, domains, status) is dropped.
    pub tenants: Vec<TenantId>,
    /// Hosts to drop, positive or negative.
    pub domains: Vec<Domain>,
    /// API keys to drop, positive or negative.
    pub api_keys: Vec<ApiKeyHash>,
}

impl Invalidation {
    /// Whether there is nothing to evict.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.domains.is_empty() && self.api_keys.is_empty()
    }
}

impl From<&DomainChange> for Invalidation {
    /// Everything a domain write affects: the domain, the acting tenant's
    /// previous domains, and both the previous and the new owner.
    fn from(change: &DomainChange) -> Self {
        let mut tenants: Vec<TenantId> = change
            .previous_owner
            .iter()
            .chain(change.owner.iter())
            .cloned()
            .collect();
        tenants.dedup();
        let mut domains = vec![change.domain.clone()];
        domains.extend(
            change
                .old_domains
                .iter()
                .filter(|d| **d != change.domain)
                .cloned(),
        );
        Invalidation {
            tenants,
            domains,
            api_keys: Vec::new(),
        }
    }
}

/// Cache-first tenant resolver. Cheap to clone (shares one cache).
///
/// Build it with [`TenantResolver::new`], then call
/// [`TenantResolver::start_invalidation_listener`] once per process so this
/// instance hears other instances' invalidations.
#[derive(Clone)]
pub struct TenantResolver {
    inner: Arc<Inner>,
}

impl fmt::Debug for TenantResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantResolver")
            .field("backend", &self.inner.store.backend())
            .field("redis", &self.inner.l2.is_some())
            .field("broadcast", &self.inner.broadcast)
            .field("db_queries", &self.db_queries())
            .finish()
    }
}

struct Inner {
    store: Store,
    ttl: Duration,
    negative_ttl: Duration,
    clock: Arc<dyn Clock>,
    l1: Mutex<L1>,
    l2: Option<RedisL2>,
    broadcast: Broadcast,
    db_queries: AtomicU64,
}

impl TenantResolver {
    /// A resolver on the real clock. Validates `opts` (no connection is made).
    pub fn new(store: Store, opts: ResolverOptions) -> Result<Self, ResolverError> {
        Self::with_clock(store, opts, Arc::new(SystemClock))
    }

    /// A resolver whose cache expiry follows `clock`.
    pub fn with_clock(
        store: Store,
        opts: ResolverOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ResolverError> {
        let config = |option, reason: &str| ResolverError::Config {
            option,
            reason: reason.to_owned(),
        };
        if opts.l1_capacity == 0 {
            return Err(config("l1_capacity", "must be at least 1"));
        }
        if opts.ttl.is_zero() || opts.ttl > MAX_TTL {
            return Err(config("ttl", "must be between 1 ms and 7 days"));
        }
        if opts.negative_ttl > MAX_TTL {
            return Err(config("negative_ttl", "must be at most 7 days"));
        }
        let l2 = match &opts.redis_url {
            Some(url) => Some(RedisL2::new(url)?),
            None => None,
        };
        let broadcast = match opts.broadcast {
            Some(shared) => shared,
            None => Broadcast::new(
                &store,
                BroadcastOptions {
                    redis_url: opts.redis_url,
                    postgres_url: opts.postgres_url,
                    channel: opts.channel,
                },
            )?,
        };
        let inner = Arc::new(Inner {
            store,
            ttl: opts.ttl,
            negative_ttl: opts.negative_ttl,
            clock,
            l1: Mutex::new(L1::new(opts.l1_capacity)),
            l2,
            broadcast: broadcast.clone(),
            db_queries: AtomicU64::new(0),
        });
        // The broadcast outlives no resolver it serves: hold it weakly.
        let weak = Arc::downgrade(&inner);
        broadcast.subscribe(TOPIC, move |heard| {
            if let Some(inner) = weak.upgrade() {
                match heard {
                    Heard::Message(payload) => inner.apply_remote(payload),
                    Heard::Missed => inner.flush_l1(),
                }
            }
        });
        Ok(Self { inner })
    }

    /// Starts the cluster broadcast this resolver listens on (see
    /// [`Broadcast::start`]; starting a shared broadcast twice is harmless).
    /// Returns once subscribed, so an invalidation sent after it returns is
    /// heard. `None` on SQLite without Redis: one process, nothing to hear.
    /// L1 is emptied whenever the broadcast reports missed messages.
    pub async fn start_invalidation_listener(
        &self,
    ) -> Result<Option<JoinHandle<()>>, ResolverError> {
        Ok(self.inner.broadcast.start().await?)
    }

    /// Who an active API key acts for; `None` for unknown or revoked keys.
    /// Errors only if the database lookup behind a miss fails.
    pub async fn resolve_api_key(
        &self,
        hash: &ApiKeyHash,
    ) -> Result<Option<ResolvedApiKey>, ResolverError> {
        let found = self.resolve(CacheKey::ApiKey(hash.clone())).await?;
        Ok(match found {
            Some(Cached::ApiKey(resolved)) => Some(resolved),
            _ => None,
        })
    }

    /// The tenant a `Host` header (custom domain or subdomain, any case, with
    /// or without port) resolves to. An unparsable host resolves to nobody
    /// without a lookup.
    pub async fn resolve_host(&self, host: &str) -> Result<Option<TenantId>, ResolverError> {
        let Ok(domain) = Domain::from_host_header(host) else {
            return Ok(None);
        };
        let found = self.resolve(CacheKey::Host(domain)).await?;
        Ok(match found {
            Some(Cached::Host(tenant)) => Some(tenant),
            _ => None,
        })
    }

    /// The status of the tenant named in a path (e.g. `/webhooks/{tenant}/…`);
    /// `None` if no such tenant exists.
    pub async fn resolve_tenant(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<TenantStatus>, ResolverError> {
        let found = self.resolve(CacheKey::Tenant(tenant.clone())).await?;
        Ok(match found {
            Some(Cached::Tenant { status, .. }) => Some(status),
            _ => None,
        })
    }

    /// Evicts one API key everywhere (call after revoking it).
    pub async fn invalidate_api_key(&self, hash: &ApiKeyHash) -> Result<(), ResolverError> {
        self.invalidate(&Invalidation {
            api_keys: vec![hash.clone()],
            ..Invalidation::default()
        })
        .await
    }

    /// Evicts these hosts everywhere, positive or negative entries alike.
    pub async fn invalidate_domains(&self, domains: &[Domain]) -> Result<(), ResolverError> {
        self.invalidate(&Invalidation {
            domains: domains.to_vec(),
            ..Invalidation::default()
        })
        .await
    }

    /// Evicts every cached key of the tenant everywhere: its API keys, its
    /// domains and its status (call after suspending it or changing its keys).
    pub async fn invalidate_tenant(&self, tenant: &TenantId) -> Result<(), ResolverError> {
        self.invalidate(&Invalidation {
            tenants: vec![tenant.clone()],
            ..Invalidation::default()
        })
        .await
    }

    /// Evicts everything a domain attach/move/detach affected: the domain,
    /// the tenant's old domains, and the previous and new owners.
    pub async fn invalidate_domain_change(
        &self,
        change: &DomainChange,
    ) -> Result<(), ResolverError> {
        self.invalidate(&Invalidation::from(change)).await
    }

    /// Evicts these entries from this instance's L1 only, at once (no
    /// I/O): for a drop guard, which spawns [`TenantResolver::invalidate`]
    /// for the rest.
    pub(crate) fn evict_local(&self, inv: &Invalidation) {
        self.inner.evict_local(inv);
    }

    /// Evicts locally (always, before anything can fail), tombstones the L2
    /// entries, then broadcasts to the other instances. An error means L2 or
    /// the broadcast failed: other instances may serve the old answer until
    /// their TTL ends. The local eviction has happened regardless.
    pub async fn invalidate(&self, inv: &Invalidation) -> Result<(), ResolverError> {
        if inv.is_empty() {
            return Ok(());
        }
        self.inner.evict_local(inv);
        let mut first_error = None;
        if let Some(l2) = &self.inner.l2
            && let Err(e) = l2.tombstone(inv).await
        {
            tracing::warn!(error = %e, "tenant cache: could not clear the shared L2 entries");
            first_error = Some(e);
        }
        if let Err(e) = self.publish(inv).await {
            tracing::warn!(error = %e, "tenant cache: could not broadcast an invalidation");
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// How many database lookups this resolver (all its clones) has made.
    /// Cache hits, in L1 or L2, do not add to it.
    pub fn db_queries(&self) -> u64 {
        self.inner.db_queries.load(Ordering::Relaxed)
    }

    async fn resolve(&self, key: CacheKey) -> Result<Option<Cached>, ResolverError> {
        let now = self.inner.clock.now();
        let epoch = match self.inner.lock_l1().lookup(&key, now) {
            L1Lookup::Found(value) => return Ok(Some(value)),
            L1Lookup::Absent => return Ok(None),
            L1Lookup::Miss { epoch } => epoch,
        };
        let mut fill_l2 = self.inner.l2.is_some();
        if let Some(l2) = &self.inner.l2 {
            match l2.get(&key).await {
                Ok(L2Read::Hit(value)) => {
                    self.inner.fill_l1(key, value.clone(), epoch);
                    return Ok(value);
                }
                Ok(L2Read::Miss) => {}
                // Recently invalidated (or unreadable): a fill now could be
                // stale, so only the database answers, and nothing is stored in L2.
                Ok(L2Read::Blocked) => fill_l2 = false,
                Err(ResolverError::RedisUnavailable) => fill_l2 = false,
                Err(e) => {
                    tracing::warn!(error = %e, "tenant cache: L2 read failed; using the database");
                    fill_l2 = false;
                }
            }
        }
        let value = self.inner.lookup_db(&key).await?;
        if fill_l2
            && self.inner.lock_l1().epoch == epoch
            && let Some(l2) = &self.inner.l2
        {
            let ttl = if value.is_some() {
                self.inner.ttl
            } else {
                self.inner.negative_ttl
            };
            if !ttl.is_zero()
                && let Err(e) = l2.fill(&key, &value, ttl).await
            {
                tracing::warn!(error = %e, "tenant cache: L2 write failed");
            }
        }
        self.inner.fill_l1(key, value.clone(), epoch);
        Ok(value)
    }

    async fn publish(&self, inv: &Invalidation) -> Result<(), ResolverError> {
        let payload = WireMessage::new(inv).encode();
        Ok(self.inner.broadcast.publish(TOPIC, &payload).await?)
    }

    /// The cluster broadcast this resolver publishes on, for the other
    /// caches of the instance to share.
    pub fn broadcast(&self) -> &Broadcast {
        &self.inner.broadcast
    }
}

impl Inner {
    fn lock_l1(&self) -> MutexGuard<'_, L1> {
        match self.l1.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                // A panic mid-update may have left the maps inconsistent; a
                // cache can always start over.
                let mut guard = poisoned.into_inner();
                guard.flush();
                self.l1.clear_poison();
                guard
            }
        }
    }

    fn fill_l1(&self, key: CacheKey, value: Option<Cached>, epoch: u64) {
        let now = self.clock.now();
        self.lock_l1()
            .fill(key, value, epoch, now, self.ttl, self.negative_ttl);
    }

    async fn lookup_db(&self, key: &CacheKey) -> Result<Option<Cached>, ResolverError> {
        self.db_queries.fetch_add(1, Ordering::Relaxed);
        let store = &self.store;
        Ok(match key {
            CacheKey::ApiKey(hash) => resolve_api_key(store, hash).await?.map(Cached::ApiKey),
            CacheKey::Host(domain) => resolve_domain(store, domain.as_str())
                .await?
                .map(Cached::Host),
            CacheKey::Tenant(id) => get_tenant(store, id).await?.map(|t| Cached::Tenant {
                id: t.id,
                status: t.status,
            }),
        })
    }

    /// Applies a broadcast from another instance.
    fn apply_remote(&self, payload: &str) {
        match serde_json::from_str::<WireMessage>(payload) {
            Ok(msg) => {
                let inv = msg.into_invalidation();
                self.evict_local(&inv);
            }
            Err(e) => {
                // Cannot tell what to evict: evict everything.
                tracing::warn!(error = %e, "tenant cache: unreadable invalidation; flushing L1");
                self.flush_l1();
            }
        }
    }

    fn flush_l1(&self) {
        self.lock_l1().flush();
    }

    fn evict_local(&self, inv: &Invalidation) {
        self.lock_l1().evict(inv);
    }
}

#[cfg(test)]
mod tests;
