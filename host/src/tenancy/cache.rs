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
//!   broadcasts the invalidation so every other instance evicts too: over
//!   Redis pub/sub when Redis is configured, else over PostgreSQL
//!   `NOTIFY` on [`INVALIDATION_CHANNEL`]; SQLite is one process and needs no
//!   broadcast.
//! - A fill that raced with an invalidation is dropped: L1 fills carry the
//!   invalidation epoch they started in, L2 fills use `SET … NX` and therefore
//!   never overwrite a tombstone.
//! - When an instance may have missed broadcasts (its subscription dropped),
//!   it empties its L1 rather than serve entries it can no longer vouch for.
//! - Redis is never required: any Redis failure during resolution is logged
//!   and the lookup falls through to the database.
//!
//! Must never: cache an API key secret (only its hash is a key), or fail a
//! resolution because Redis is unavailable.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rand::RngCore;
use redis::aio::{MultiplexedConnection, PubSub};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    ApiKeyHash, Domain, DomainChange, ResolvedApiKey, TenancyError, TenantId, TenantStatus,
    get_tenant, resolve_api_key, resolve_domain,
};
use crate::store::{Backend, Store, StoreError};

/// The PostgreSQL `NOTIFY` channel and the Redis pub/sub channel invalidations
/// are broadcast on. Payload: a small JSON object naming the tenants, domains
/// and API key hashes to evict.
pub const INVALIDATION_CHANNEL: &str = "payhost_tenant_invalidate";

/// Prefix of every Redis key this cache writes.
pub const L2_KEY_PREFIX: &str = "payhost:tenancy:";

/// How long an L2 tombstone blocks re-fills after an invalidation. Longer than
/// any database read a racing fill could have started before the write.
const L2_TOMBSTONE_WINDOW: Duration = Duration::from_secs(10);
/// Redis calls on the request path must fail fast so resolution can fall
/// back to the database.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed Redis connect, requests skip L2 this long before retrying.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Timeout for (re)subscribing a listener.
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Listener reconnect backoff bounds.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(200);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// PostgreSQL rejects `NOTIFY` payloads of 8000 bytes or more; a larger
/// invalidation is sent as "flush everything".
const MAX_NOTIFY_PAYLOAD: usize = 7900;
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
    /// Publishing the invalidation with PostgreSQL `NOTIFY` failed.
    #[error("broadcasting the invalidation over PostgreSQL NOTIFY failed: {0}")]
    Notify(#[source] StoreError),
    /// Subscribing to [`INVALIDATION_CHANNEL`] on PostgreSQL failed.
    #[error("listening on the PostgreSQL invalidation channel failed: {0}")]
    Listen(#[source] sqlx::Error),
    /// A cache entry could not be encoded for L2 (not expected: entries are
    /// validated ids and enums).
    #[error("cannot encode a tenant cache entry: {0}")]
    Encode(#[from] serde_json::Error),
    /// Subscribing to [`INVALIDATION_CHANNEL`] on PostgreSQL timed out.
    #[error("listening on the PostgreSQL invalidation channel timed out")]
    ListenTimeout,
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
        }
    }
}

impl ResolverOptions {
    /// Sets [`ResolverOptions::postgres_url`] from the store's database URL
    /// when it is a PostgreSQL URL (and leaves it unset for SQLite).
    pub fn with_database_url(mut self, database_url: &str) -> Self {
        self.postgres_url = matches!(Backend::from_url(database_url), Ok(Backend::Postgres))
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

/// What a [`TenantResolver::on_invalidate`] follower must drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted<'a> {
    /// Everything cached for these tenants.
    Tenants(&'a [TenantId]),
    /// Everything.
    All,
}

type Follower = Box<dyn Fn(Evicted<'_>) + Send + Sync>;

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
            .field("db_queries", &self.db_queries())
            .finish()
    }
}

struct Inner {
    store: Store,
    ttl: Duration,
    negative_ttl: Duration,
    postgres_url: Option<String>,
    channel: String,
    clock: Arc<dyn Clock>,
    l1: Mutex<L1>,
    l2: Option<RedisL2>,
    /// Random id of this resolver, so it ignores its own broadcasts.
    origin: String,
    db_queries: AtomicU64,
    /// Caches elsewhere that evict with this one ([`TenantResolver::on_invalidate`]).
    followers: Mutex<Vec<Follower>>,
    /// Dropped with the resolver; listeners stop when it closes.
    shutdown: watch::Sender<()>,
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
        let channel_ok = !opts.channel.is_empty()
            && opts.channel.len() <= 63
            && opts
                .channel
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !channel_ok {
            return Err(config(
                "channel",
                "must be 1-63 lowercase ASCII letters, digits or `_`",
            ));
        }
        let l2 = match &opts.redis_url {
            Some(url) => Some(RedisL2::new(url)?),
            None => None,
        };
        match (&opts.postgres_url, store.backend()) {
            (Some(url), Backend::Postgres) => {
                if !matches!(Backend::from_url(url), Ok(Backend::Postgres)) {
                    return Err(config("postgres_url", "must be a postgres:// URL"));
                }
            }
            (Some(_), Backend::Sqlite) => {
                return Err(config(
                    "postgres_url",
                    "is set but the store is SQLite, which needs no LISTEN connection",
                ));
            }
            (None, Backend::Postgres) if l2.is_none() => {
                return Err(config(
                    "postgres_url",
                    "is required on PostgreSQL without redis_url: other instances' \
                     invalidations arrive over LISTEN",
                ));
            }
            (None, _) => {}
        }
        let mut origin = [0u8; 8];
        rand::rng().fill_bytes(&mut origin);
        let (shutdown, _) = watch::channel(());
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                ttl: opts.ttl,
                negative_ttl: opts.negative_ttl,
                postgres_url: opts.postgres_url,
                channel: opts.channel,
                clock,
                l1: Mutex::new(L1::new(opts.l1_capacity)),
                l2,
                origin: hex::encode(origin),
                db_queries: AtomicU64::new(0),
                followers: Mutex::new(Vec::new()),
                shutdown,
            }),
        })
    }

    /// Subscribes to [`ResolverOptions::channel`] (Redis pub/sub when Redis is
    /// configured, else PostgreSQL `LISTEN`) and spawns the task that applies
    /// other instances' invalidations to this L1. Returns once subscribed, so
    /// a broadcast sent after it returns is heard. `None` on SQLite without
    /// Redis: one process, nothing to hear.
    ///
    /// The first subscription's failure is returned (a misconfiguration
    /// should stop start-up); later connection losses are retried in the
    /// background with backoff, and L1 is emptied each time because
    /// broadcasts may have been missed. The task ends when every clone of
    /// the resolver is dropped.
    pub async fn start_invalidation_listener(
        &self,
    ) -> Result<Option<JoinHandle<()>>, ResolverError> {
        let weak = Arc::downgrade(&self.inner);
        let shutdown = self.inner.shutdown.subscribe();
        let channel = self.inner.channel.clone();
        if let Some(l2) = &self.inner.l2 {
            let pubsub = redis_subscribe(&l2.client, &channel).await?;
            let client = l2.client.clone();
            return Ok(Some(tokio::spawn(redis_listen_loop(
                weak, client, channel, pubsub, shutdown,
            ))));
        }
        match (&self.inner.postgres_url, self.inner.store.backend()) {
            (Some(url), Backend::Postgres) => {
                let listener = pg_subscribe(url, &channel).await?;
                Ok(Some(tokio::spawn(pg_listen_loop(
                    weak,
                    url.clone(),
                    channel,
                    listener,
                    shutdown,
                ))))
            }
            _ => Ok(None),
        }
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
        if let Err(e) = self.broadcast(inv).await {
            tracing::warn!(error = %e, "tenant cache: could not broadcast an invalidation");
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Calls `follow` whenever this instance evicts tenants, whether the
    /// change was made here or heard from another instance, and with
    /// [`Evicted::All`] when it cannot tell what changed (an unreadable
    /// message, or a reconnect that may have missed some). Lets another
    /// per-tenant cache ride on this one's invalidation broadcast.
    pub fn on_invalidate(&self, follow: impl Fn(Evicted<'_>) + Send + Sync + 'static) {
        self.inner
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(follow));
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

    async fn broadcast(&self, inv: &Invalidation) -> Result<(), ResolverError> {
        let store = &self.inner.store;
        if self.inner.l2.is_none() && store.backend() == Backend::Sqlite {
            return Ok(());
        }
        let mut payload = WireMessage::new(&self.inner.origin, inv).encode();
        if let Some(l2) = &self.inner.l2 {
            return l2.publish(&self.inner.channel, &payload).await;
        }
        if payload.len() > MAX_NOTIFY_PAYLOAD {
            payload = WireMessage::flush_all(&self.inner.origin).encode();
        }
        // `pg_notify` returns `void`, which the Any driver cannot decode; select a constant.
        sqlx::query("SELECT 1 AS sent FROM pg_notify($1, $2)")
            .bind(&self.inner.channel)
            .bind(payload)
            .execute(store.pool())
            .await
            .map_err(|e| ResolverError::Notify(StoreError::Database(e)))?;
        Ok(())
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
            Ok(msg) if msg.origin == self.origin => {}
            Ok(msg) if msg.all => self.flush_l1(),
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

    /// Flushes L1 and tells every follower to drop everything.
    fn flush_l1(&self) {
        self.lock_l1().flush();
        self.notify(Evicted::All);
    }

    /// Evicts `inv` from L1 and tells every follower which tenants changed.
    fn evict_local(&self, inv: &Invalidation) {
        self.lock_l1().evict(inv);
        if !inv.tenants.is_empty() {
            self.notify(Evicted::Tenants(&inv.tenants));
        }
    }

    fn notify(&self, evicted: Evicted<'_>) {
        let followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        for follow in followers.iter() {
            follow(evicted);
        }
    }
}

// ---------------------------------------------------------------------------
// L1: bounded maps with TTL, a tenant → keys index and an invalidation epoch.

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    ApiKey(ApiKeyHash),
    Host(Domain),
    Tenant(TenantId),
}

impl CacheKey {
    fn l2_key(&self) -> String {
        match self {
            CacheKey::ApiKey(hash) => format!("{L2_KEY_PREFIX}key:{}", hash.as_str()),
            CacheKey::Host(domain) => format!("{L2_KEY_PREFIX}host:{domain}"),
            CacheKey::Tenant(id) => format!("{L2_KEY_PREFIX}tenant:{id}"),
        }
    }
}

/// The Redis set listing a tenant's L2 keys, so a tenant invalidation can find them.
fn l2_index_key(tenant: &TenantId) -> String {
    format!("{L2_KEY_PREFIX}index:{tenant}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cached {
    ApiKey(ResolvedApiKey),
    Host(TenantId),
    Tenant { id: TenantId, status: TenantStatus },
}

impl Cached {
    /// The tenant this entry belongs to (for the reverse index).
    fn tenant(&self) -> &TenantId {
        match self {
            Cached::ApiKey(resolved) => &resolved.tenant_id,
            Cached::Host(tenant) => tenant,
            Cached::Tenant { id, .. } => id,
        }
    }
}

fn expiry(now: Instant, ttl: Duration) -> Instant {
    // `ttl` is bounded by MAX_TTL, so this only fails on a clock near its end.
    now.checked_add(ttl).unwrap_or(now)
}

enum Lookup<V> {
    Hit(V),
    Expired(V),
    Miss,
}

struct Slot<V> {
    value: V,
    expires_at: Instant,
    seq: u64,
}

/// A map of at most `capacity` entries with per-entry expiry; when full, the
/// oldest insertion is evicted. `order` may hold stale `(key, seq)` pairs for
/// removed or replaced entries; they are skipped and compacted away.
struct Bounded<K, V> {
    capacity: usize,
    entries: HashMap<K, Slot<V>>,
    order: VecDeque<(K, u64)>,
    next_seq: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> Bounded<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The live value; an expired entry is removed and handed back.
    fn get(&mut self, key: &K, now: Instant) -> Lookup<V> {
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
    fn insert(&mut self, key: K, value: V, expires_at: Instant) -> Vec<(K, V)> {
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

    fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|slot| slot.value)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

enum L1Lookup {
    Found(Cached),
    /// Negatively cached: known not to exist.
    Absent,
    Miss {
        epoch: u64,
    },
}

struct L1 {
    positive: Bounded<CacheKey, Cached>,
    negative: Bounded<CacheKey, ()>,
    /// Every positive key, by the tenant it belongs to.
    by_tenant: HashMap<TenantId, HashSet<CacheKey>>,
    /// Bumped by every eviction; a fill that started in an older epoch may
    /// carry a value read before the write and is dropped.
    epoch: u64,
}

impl L1 {
    fn new(capacity: usize) -> Self {
        Self {
            positive: Bounded::new(capacity),
            negative: Bounded::new(capacity),
            by_tenant: HashMap::new(),
            epoch: 0,
        }
    }

    fn lookup(&mut self, key: &CacheKey, now: Instant) -> L1Lookup {
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

    fn fill(
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

    fn unindex(&mut self, key: &CacheKey, value: &Cached) {
        if let Some(keys) = self.by_tenant.get_mut(value.tenant()) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_tenant.remove(value.tenant());
            }
        }
    }

    fn remove_positive(&mut self, key: &CacheKey) {
        if let Some(old) = self.positive.remove(key) {
            self.unindex(key, &old);
        }
    }

    fn evict_key(&mut self, key: &CacheKey) {
        self.remove_positive(key);
        self.negative.remove(key);
    }

    fn evict(&mut self, inv: &Invalidation) {
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

    fn flush(&mut self) {
        self.epoch += 1;
        self.positive.clear();
        self.negative.clear();
        self.by_tenant.clear();
    }
}

// ---------------------------------------------------------------------------
// Broadcast payload.

/// The JSON sent on the invalidation channel ([`ResolverOptions::channel`]).
#[derive(Debug, Serialize, Deserialize)]
struct WireMessage {
    /// The sending resolver, which has already evicted locally.
    origin: String,
    /// Evict everything (the invalidation was too large to send).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    all: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tenants: Vec<TenantId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    domains: Vec<Domain>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    api_keys: Vec<String>,
}

impl WireMessage {
    fn new(origin: &str, inv: &Invalidation) -> Self {
        Self {
            origin: origin.to_owned(),
            all: false,
            tenants: inv.tenants.clone(),
            domains: inv.domains.clone(),
            api_keys: inv.api_keys.iter().map(|h| h.as_str().to_owned()).collect(),
        }
    }

    fn flush_all(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            all: true,
            tenants: Vec::new(),
            domains: Vec::new(),
            api_keys: Vec::new(),
        }
    }

    fn encode(&self) -> String {
        // Plain strings and validated ids only: serialising cannot fail, but
        // if it ever did, "flush everything" is the safe message.
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"origin":"","all":true}"#.to_owned())
    }

    fn into_invalidation(self) -> Invalidation {
        Invalidation {
            tenants: self.tenants,
            domains: self.domains,
            api_keys: self
                .api_keys
                .iter()
                .filter_map(|raw| ApiKeyHash::parse(raw).ok())
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// L2: Redis.

/// What L2 stores under a key (JSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum L2Entry {
    ApiKey {
        tenant_id: TenantId,
        key_id: super::ApiKeyId,
        tenant_status: TenantStatus,
    },
    Host {
        tenant_id: TenantId,
    },
    Tenant {
        status: TenantStatus,
    },
    /// Known not to exist (negative entry).
    Missing,
    /// Recently invalidated: read from the database, do not re-fill.
    Tombstone,
}

impl L2Entry {
    fn of(value: &Option<Cached>) -> Self {
        match value {
            None => L2Entry::Missing,
            Some(Cached::ApiKey(r)) => L2Entry::ApiKey {
                tenant_id: r.tenant_id.clone(),
                key_id: r.key_id.clone(),
                tenant_status: r.tenant_status,
            },
            Some(Cached::Host(tenant_id)) => L2Entry::Host {
                tenant_id: tenant_id.clone(),
            },
            Some(Cached::Tenant { status, .. }) => L2Entry::Tenant { status: *status },
        }
    }

    /// The cached answer for `key`, or `None` if this entry cannot answer it
    /// (a tombstone, or an entry of the wrong kind).
    fn answer(self, key: &CacheKey) -> Option<Option<Cached>> {
        match (self, key) {
            (L2Entry::Missing, _) => Some(None),
            (
                L2Entry::ApiKey {
                    tenant_id,
                    key_id,
                    tenant_status,
                },
                CacheKey::ApiKey(_),
            ) => Some(Some(Cached::ApiKey(ResolvedApiKey {
                tenant_id,
                key_id,
                tenant_status,
            }))),
            (L2Entry::Host { tenant_id }, CacheKey::Host(_)) => Some(Some(Cached::Host(tenant_id))),
            (L2Entry::Tenant { status }, CacheKey::Tenant(id)) => Some(Some(Cached::Tenant {
                id: id.clone(),
                status,
            })),
            _ => None,
        }
    }
}

enum L2Read {
    Hit(Option<Cached>),
    Miss,
    /// Tombstoned or unreadable: answer from the database without filling L2.
    Blocked,
}

struct RedisConnState {
    conn: Option<MultiplexedConnection>,
    retry_at: Option<Instant>,
}

struct RedisL2 {
    client: redis::Client,
    state: Mutex<RedisConnState>,
    /// Held while connecting, so one request connects and the others skip L2.
    connecting: tokio::sync::Mutex<()>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisL2 {
    fn new(url: &str) -> Result<Self, ResolverError> {
        let client = redis::Client::open(url).map_err(|_| ResolverError::Config {
            option: "redis_url",
            reason: "is not a valid redis:// URL".to_owned(),
        })?;
        Ok(Self {
            client,
            state: Mutex::new(RedisConnState {
                conn: None,
                retry_at: None,
            }),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, RedisConnState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached_conn(&self) -> Result<Option<MultiplexedConnection>, ResolverError> {
        let state = self.lock_state();
        if let Some(conn) = &state.conn {
            return Ok(Some(conn.clone()));
        }
        if state.retry_at.is_some_and(|at| at > Instant::now()) {
            return Err(ResolverError::RedisUnavailable);
        }
        Ok(None)
    }

    /// A live connection. With `wait == false` (the request path) a request
    /// that finds another one connecting skips L2 instead of queueing;
    /// invalidations wait for it.
    async fn conn(&self, wait: bool) -> Result<MultiplexedConnection, ResolverError> {
        if let Some(conn) = self.cached_conn()? {
            return Ok(conn);
        }
        let _connecting = if wait {
            self.connecting.lock().await
        } else {
            self.connecting
                .try_lock()
                .map_err(|_| ResolverError::RedisUnavailable)?
        };
        if let Some(conn) = self.cached_conn()? {
            return Ok(conn);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(REDIS_CONNECT_TIMEOUT)
            .set_response_timeout(REDIS_RESPONSE_TIMEOUT);
        let connected = tokio::time::timeout(
            REDIS_CONNECT_TIMEOUT + REDIS_RESPONSE_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let mut state = self.lock_state();
        match connected {
            Ok(Ok(conn)) => {
                state.conn = Some(conn.clone());
                state.retry_at = None;
                Ok(conn)
            }
            Ok(Err(source)) => {
                state.retry_at = Some(Instant::now() + REDIS_RETRY_AFTER);
                tracing::warn!(error = %source, "tenant cache: cannot connect to redis; L2 skipped");
                Err(ResolverError::Redis {
                    action: "connect",
                    source,
                })
            }
            Err(_) => {
                state.retry_at = Some(Instant::now() + REDIS_RETRY_AFTER);
                tracing::warn!("tenant cache: connecting to redis timed out; L2 skipped");
                Err(ResolverError::RedisTimeout { action: "connect" })
            }
        }
    }

    async fn exec<T: redis::FromRedisValue>(
        &self,
        action: &'static str,
        wait: bool,
        pipe: &redis::Pipeline,
    ) -> Result<T, ResolverError> {
        let mut conn = self.conn(wait).await?;
        match pipe.query_async::<T>(&mut conn).await {
            Ok(value) => Ok(value),
            Err(source) => {
                if !matches!(
                    source.kind(),
                    redis::ErrorKind::TypeError | redis::ErrorKind::ResponseError
                ) {
                    // Drop the connection; the next call reconnects.
                    self.lock_state().conn = None;
                }
                Err(ResolverError::Redis { action, source })
            }
        }
    }

    async fn get(&self, key: &CacheKey) -> Result<L2Read, ResolverError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(key.l2_key());
        let (raw,): (Option<String>,) = self.exec("get", false, &pipe).await?;
        let Some(raw) = raw else {
            return Ok(L2Read::Miss);
        };
        match serde_json::from_str::<L2Entry>(&raw) {
            Ok(L2Entry::Tombstone) => Ok(L2Read::Blocked),
            Ok(entry) => match entry.answer(key) {
                Some(value) => Ok(L2Read::Hit(value)),
                None => {
                    tracing::warn!(key = %key.l2_key(), "tenant cache: L2 entry of the wrong kind");
                    Ok(L2Read::Blocked)
                }
            },
            Err(e) => {
                tracing::warn!(key = %key.l2_key(), error = %e, "tenant cache: unreadable L2 entry");
                Ok(L2Read::Blocked)
            }
        }
    }

    /// Stores a database answer unless the key already holds something (in
    /// particular a tombstone), and lists it under its tenant.
    async fn fill(
        &self,
        key: &CacheKey,
        value: &Option<Cached>,
        ttl: Duration,
    ) -> Result<(), ResolverError> {
        let json = serde_json::to_string(&L2Entry::of(value))?;
        let l2_key = key.l2_key();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET")
            .arg(&l2_key)
            .arg(json)
            .arg("PX")
            .arg(ms(ttl))
            .arg("NX")
            .ignore();
        if let Some(value) = value {
            let index = l2_index_key(value.tenant());
            pipe.cmd("SADD").arg(&index).arg(&l2_key).ignore();
            pipe.cmd("PEXPIRE").arg(&index).arg(ms(ttl)).ignore();
        }
        self.exec::<()>("fill", false, &pipe).await
    }

    /// Replaces every L2 entry the invalidation names (including each
    /// tenant's indexed keys) with a tombstone.
    async fn tombstone(&self, inv: &Invalidation) -> Result<(), ResolverError> {
        let mut keys: Vec<String> = Vec::new();
        if !inv.tenants.is_empty() {
            let mut pipe = redis::pipe();
            for tenant in &inv.tenants {
                pipe.cmd("SMEMBERS").arg(l2_index_key(tenant));
            }
            let members: Vec<Vec<String>> = self.exec("index read", true, &pipe).await?;
            keys.extend(
                members
                    .into_iter()
                    .flatten()
                    .filter(|k| k.starts_with(L2_KEY_PREFIX)),
            );
            keys.extend(
                inv.tenants
                    .iter()
                    .map(|t| CacheKey::Tenant(t.clone()).l2_key()),
            );
        }
        keys.extend(
            inv.domains
                .iter()
                .map(|d| CacheKey::Host(d.clone()).l2_key()),
        );
        keys.extend(
            inv.api_keys
                .iter()
                .map(|h| CacheKey::ApiKey(h.clone()).l2_key()),
        );
        let tombstone = serde_json::to_string(&L2Entry::Tombstone)
            .unwrap_or_else(|_| r#"{"kind":"tombstone"}"#.to_owned());
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in &keys {
            pipe.cmd("SET")
                .arg(key)
                .arg(&tombstone)
                .arg("PX")
                .arg(ms(L2_TOMBSTONE_WINDOW))
                .ignore();
        }
        for tenant in &inv.tenants {
            pipe.cmd("DEL").arg(l2_index_key(tenant)).ignore();
        }
        self.exec::<()>("tombstone", true, &pipe).await
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<(), ResolverError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        self.exec::<()>("publish", true, &pipe).await
    }
}

// ---------------------------------------------------------------------------
// Listeners.

async fn redis_subscribe(client: &redis::Client, channel: &str) -> Result<PubSub, ResolverError> {
    let subscribe = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(LISTEN_CONNECT_TIMEOUT, subscribe).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(source)) => Err(ResolverError::Redis {
            action: "subscribe",
            source,
        }),
        Err(_) => Err(ResolverError::RedisTimeout {
            action: "subscribe",
        }),
    }
}

async fn pg_subscribe(url: &str, channel: &str) -> Result<PgListener, ResolverError> {
    let subscribe = async {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(channel).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(LISTEN_CONNECT_TIMEOUT, subscribe).await {
        Ok(Ok(listener)) => Ok(listener),
        Ok(Err(e)) => Err(ResolverError::Listen(e)),
        Err(_) => Err(ResolverError::ListenTimeout),
    }
}

/// Empties the L1 of the resolver behind `weak`; `false` if it is gone.
fn flush(weak: &Weak<Inner>) -> bool {
    match weak.upgrade() {
        Some(inner) => {
            inner.flush_l1();
            true
        }
        None => false,
    }
}

/// Sleeps for `backoff` (doubling it for next time) unless shut down first;
/// `false` on shutdown.
async fn back_off(backoff: &mut Duration, shutdown: &mut watch::Receiver<()>) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(LISTEN_BACKOFF_MAX);
    tokio::select! {
        _ = shutdown.changed() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

async fn redis_listen_loop(
    weak: Weak<Inner>,
    client: redis::Client,
    channel: String,
    mut pubsub: PubSub,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    _ = shutdown.changed() => return,
                    msg = messages.next() => msg,
                };
                let Some(msg) = msg else { break };
                let Some(inner) = weak.upgrade() else { return };
                match msg.get_payload::<String>() {
                    Ok(payload) => inner.apply_remote(&payload),
                    Err(e) => {
                        tracing::warn!(error = %e, "tenant cache: unreadable invalidation; flushing L1");
                        inner.flush_l1();
                    }
                }
            }
        }
        tracing::warn!("tenant cache: redis subscription lost; flushing L1 and resubscribing");
        if !flush(&weak) {
            return;
        }
        let Some(next) = reconnect(&mut shutdown, "redis resubscribe", || {
            redis_subscribe(&client, &channel)
        })
        .await
        else {
            return;
        };
        pubsub = next;
        // Broadcasts sent while unsubscribed are lost: forget what they may have named.
        if !flush(&weak) {
            return;
        }
    }
}

/// Calls `connect` after each back-off step until it succeeds, or `None`
/// once the resolver shuts down.
async fn reconnect<T, E, Fut>(
    shutdown: &mut watch::Receiver<()>,
    what: &str,
    mut connect: impl FnMut() -> Fut,
) -> Option<T>
where
    E: std::fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        if !back_off(&mut backoff, shutdown).await {
            return None;
        }
        match connect().await {
            Ok(connected) => return Some(connected),
            Err(e) => tracing::warn!(error = %e, "tenant cache: {what} failed"),
        }
    }
}

async fn pg_listen_loop(
    weak: Weak<Inner>,
    url: String,
    channel: String,
    mut listener: PgListener,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.changed() => return,
            next = listener.try_recv() => next,
        };
        match next {
            Ok(Some(notification)) => {
                let Some(inner) = weak.upgrade() else { return };
                inner.apply_remote(notification.payload());
            }
            Ok(None) => {
                // The connection dropped and was re-established (re-listening):
                // notifications in between are lost.
                tracing::warn!("tenant cache: LISTEN connection lost; flushing L1");
                if !flush(&weak) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "tenant cache: LISTEN failed; flushing L1 and reconnecting");
                if !flush(&weak) {
                    return;
                }
                let Some(next) =
                    reconnect(&mut shutdown, "re-LISTEN", || pg_subscribe(&url, &channel)).await
                else {
                    return;
                };
                listener = next;
                if !flush(&weak) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Run on SQLite always, on PostgreSQL when `PAYHOST_TEST_POSTGRES_URL` is
    //! set, and with Redis (L2 + pub/sub) when `PAYHOST_TEST_REDIS_URL` is set.

    use std::future::Future;

    use super::*;
    use crate::store::testing::{POSTGRES_URL_ENV, TestDb, each_backend_with_url, tenant};
    use crate::tenancy::{
        ApiKeyId, IssuedApiKey, attach_domain, detach_domain, issue_api_key, move_domain,
        revoke_api_key, set_tenant_status,
    };

    /// Environment variable naming a Redis server for tests, e.g. `redis://127.0.0.1:6379`.
    const REDIS_URL_ENV: &str = "PAYHOST_TEST_REDIS_URL";

    /// Long enough that no test entry expires unless a test moves the clock.
    const LONG_TTL: Duration = Duration::from_secs(3600);
    /// How long a test waits for a broadcast to reach another instance.
    const BROADCAST_DEADLINE: Duration = Duration::from_secs(10);

    struct ManualClock {
        start: Instant,
        offset: Mutex<Duration>,
    }

    impl ManualClock {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                start: Instant::now(),
                offset: Mutex::new(Duration::ZERO),
            })
        }

        fn advance(&self, by: Duration) {
            *self.offset.lock().expect("clock") += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            self.start + *self.offset.lock().expect("clock")
        }
    }

    fn redis_url() -> Option<String> {
        std::env::var(REDIS_URL_ENV).ok().filter(|u| !u.is_empty())
    }

    /// Like `each_backend`, but also hands the test resolver options wired
    /// for that database (the PostgreSQL URL for LISTEN), with a long TTL.
    async fn each_database<F, Fut>(test: F)
    where
        F: Fn(Store, ResolverOptions) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        each_backend_with_url(|store, url| {
            let opts = ResolverOptions {
                channel: test_channel(),
                ttl: LONG_TTL,
                ..ResolverOptions::default()
            }
            .with_database_url(&url);
            test(store, opts)
        })
        .await
    }

    fn random_domain() -> Domain {
        let mut bytes = [0u8; 6];
        rand::rng().fill_bytes(&mut bytes);
        Domain::parse(&format!("shop-{}.example.com", hex::encode(bytes))).expect("domain")
    }

    async fn key(store: &Store, tenant: &TenantId) -> IssuedApiKey {
        issue_api_key(store, tenant, "test").await.expect("key")
    }

    fn resolved(tenant: &TenantId, key: &ApiKeyId, status: TenantStatus) -> ResolvedApiKey {
        ResolvedApiKey {
            tenant_id: tenant.clone(),
            key_id: key.clone(),
            tenant_status: status,
        }
    }

    /// Evaluates `$check` (which may `.await`) until it holds, failing the
    /// test after `BROADCAST_DEADLINE`. A macro, not an async closure, so the
    /// test futures stay `Send`.
    macro_rules! eventually {
        ($what:expr, $check:expr) => {{
            let deadline = Instant::now() + BROADCAST_DEADLINE;
            loop {
                if $check {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out after {BROADCAST_DEADLINE:?} waiting for {}",
                    $what
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }};
    }

    #[tokio::test]
    async fn a_cache_hit_makes_no_database_query() {
        each_database(|store, opts| async move {
            let t = tenant(&store, "Acme").await;
            let issued = key(&store, &t).await;
            let hash = issued.secret.hash();
            let d = random_domain();
            attach_domain(&store, &t, &d).await.expect("attach");
            let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
            let expected = resolved(&t, &issued.info.id, TenantStatus::Active);

            assert_eq!(resolver.db_queries(), 0);
            assert_eq!(
                resolver.resolve_api_key(&hash).await.expect("key"),
                Some(expected.clone())
            );
            assert_eq!(
                resolver.resolve_host(d.as_str()).await.expect("host"),
                Some(t.clone())
            );
            assert_eq!(
                resolver.resolve_tenant(&t).await.expect("tenant"),
                Some(TenantStatus::Active)
            );
            assert_eq!(resolver.db_queries(), 3, "each miss is one lookup");

            let upper_with_port = format!("{}:8443", d.as_str().to_ascii_uppercase());
            for _ in 0..3 {
                assert_eq!(
                    resolver.resolve_api_key(&hash).await.expect("key"),
                    Some(expected.clone())
                );
                assert_eq!(
                    resolver.resolve_host(&upper_with_port).await.expect("host"),
                    Some(t.clone()),
                    "a Host header with case and port hits the same entry"
                );
                assert_eq!(
                    resolver.resolve_tenant(&t).await.expect("tenant"),
                    Some(TenantStatus::Active)
                );
            }
            assert_eq!(resolver.db_queries(), 3, "cache hits made a query");

            // Independent of the counter: with the pool closed, any query
            // fails, yet cached answers are still served.
            store.close().await;
            assert_eq!(
                resolver.resolve_api_key(&hash).await.expect("cached key"),
                Some(expected)
            );
            assert_eq!(
                resolver
                    .resolve_host(d.as_str())
                    .await
                    .expect("cached host"),
                Some(t)
            );
            assert!(
                resolver
                    .resolve_host(random_domain().as_str())
                    .await
                    .is_err(),
                "a miss must reach the (closed) database"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn unknown_hosts_and_keys_are_negatively_cached_until_the_negative_ttl_ends() {
        each_database(|store, opts| async move {
            let clock = ManualClock::new();
            let opts = ResolverOptions {
                negative_ttl: Duration::from_secs(5),
                ..opts
            };
            let resolver =
                TenantResolver::with_clock(store.clone(), opts, clock.clone()).expect("resolver");
            let t = tenant(&store, "Late").await;
            let d = random_domain();

            assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);
            assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);
            assert_eq!(
                resolver.db_queries(),
                1,
                "the second miss was answered by the cache"
            );

            // Attached behind the cache's back (no invalidation): the
            // negative entry holds until it expires.
            attach_domain(&store, &t, &d).await.expect("attach");
            clock.advance(Duration::from_secs(4));
            assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);
            assert_eq!(resolver.db_queries(), 1);
            clock.advance(Duration::from_secs(2));
            assert_eq!(
                resolver.resolve_host(d.as_str()).await.expect("host"),
                Some(t.clone())
            );
            assert_eq!(
                resolver.db_queries(),
                2,
                "an expired negative entry is looked up again"
            );

            // Positive entries live for the (longer) ttl, then are looked up again.
            clock.advance(Duration::from_secs(60));
            assert_eq!(
                resolver.resolve_host(d.as_str()).await.expect("host"),
                Some(t.clone())
            );
            assert_eq!(resolver.db_queries(), 2);
            clock.advance(LONG_TTL);
            assert_eq!(
                resolver.resolve_host(d.as_str()).await.expect("host"),
                Some(t)
            );
            assert_eq!(resolver.db_queries(), 3);

            let unknown = ApiKeyHash::of("ph_not-a-key");
            assert_eq!(resolver.resolve_api_key(&unknown).await.expect("key"), None);
            assert_eq!(resolver.resolve_api_key(&unknown).await.expect("key"), None);
            assert_eq!(
                resolver.db_queries(),
                4,
                "unknown keys are negatively cached too"
            );

            assert_eq!(
                resolver.resolve_host("not a host!").await.expect("junk"),
                None
            );
            assert_eq!(
                resolver.db_queries(),
                4,
                "an unparsable host needs no lookup"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn attaching_a_negatively_cached_host_resolves_once_invalidated() {
        each_database(|store, opts| async move {
            let opts = ResolverOptions {
                negative_ttl: LONG_TTL,
                ..opts
            };
            let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
            let t = tenant(&store, "New shop").await;
            let d = random_domain();
            assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);

            let change = attach_domain(&store, &t, &d).await.expect("attach");
            assert_eq!(
                resolver.resolve_host(d.as_str()).await.expect("host"),
                None,
                "still negatively cached before the invalidation"
            );
            resolver
                .invalidate_domain_change(&change)
                .await
                .expect("invalidate");
            assert_eq!(
                resolver.resolve_host(d.as_str()).await.expect("host"),
                Some(t)
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_revoked_key_stops_resolving_once_invalidated() {
        each_database(|store, opts| async move {
            let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
            let t = tenant(&store, "Acme").await;
            let doomed = key(&store, &t).await;
            let kept = key(&store, &t).await;
            let doomed_hash = doomed.secret.hash();
            let kept_hash = kept.secret.hash();
            for hash in [&doomed_hash, &kept_hash] {
                assert!(resolver.resolve_api_key(hash).await.expect("key").is_some());
            }
            assert_eq!(resolver.db_queries(), 2);

            let revoked = revoke_api_key(&store, &t, &doomed.info.id)
                .await
                .expect("revoke")
                .expect("was active");
            assert_eq!(revoked.hash, doomed_hash);
            assert!(
                resolver
                    .resolve_api_key(&doomed_hash)
                    .await
                    .expect("key")
                    .is_some(),
                "the cache serves the key until it is told"
            );

            resolver
                .invalidate_api_key(&revoked.hash)
                .await
                .expect("invalidate");
            assert_eq!(
                resolver.resolve_api_key(&doomed_hash).await.expect("key"),
                None
            );
            assert_eq!(resolver.db_queries(), 3);
            assert_eq!(
                resolver.resolve_api_key(&kept_hash).await.expect("key"),
                Some(resolved(&t, &kept.info.id, TenantStatus::Active))
            );
            assert_eq!(resolver.db_queries(), 3, "other keys stay cached");
        })
        .await;
    }

    #[tokio::test]
    async fn after_a_domain_move_or_detach_the_old_owner_no_longer_resolves() {
        each_database(|store, opts| async move {
            let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
            let old_owner = tenant(&store, "Old").await;
            let new_owner = tenant(&store, "New").await;
            let d = random_domain();
            attach_domain(&store, &old_owner, &d).await.expect("attach");
            let old_key = key(&store, &old_owner).await.secret.hash();
            let bystander = tenant(&store, "Bystander").await;
            let bystander_domain = random_domain();
            attach_domain(&store, &bystander, &bystander_domain)
                .await
                .expect("attach");

            assert_eq!(
                resolver.resolve_host(d.as_str()).await.expect("host"),
                Some(old_owner.clone())
            );
            assert!(
                resolver
                    .resolve_api_key(&old_key)
                    .await
                    .expect("key")
                    .is_some()
            );
            assert!(
                resolver
                    .resolve_host(bystander_domain.as_str())
                    .await
                    .expect("host")
                    .is_some()
            );
            assert_eq!(resolver.db_queries(), 3);

            let moved = move_domain(&store, &d, &new_owner).await.expect("move");
            resolver
                .invalidate_domain_change(&moved)
                .await
                .expect("invalidate");
            assert_eq!(
                resolver.resolve_host(d.as_str()).await.expect("host"),
                Some(new_owner.clone())
            );
            assert!(
                resolver
                    .resolve_api_key(&old_key)
                    .await
                    .expect("key")
                    .is_some()
            );
            assert_eq!(
                resolver.db_queries(),
                5,
                "both owners' entries were dropped"
            );
            assert!(
                resolver
                    .resolve_host(bystander_domain.as_str())
                    .await
                    .expect("host")
                    .is_some()
            );
            assert_eq!(resolver.db_queries(), 5, "other tenants stay cached");

            let detached = detach_domain(&store, &new_owner, &d)
                .await
                .expect("detach")
                .expect("had it");
            resolver
                .invalidate_domain_change(&detached)
                .await
                .expect("invalidate");
            assert_eq!(resolver.resolve_host(d.as_str()).await.expect("host"), None);
        })
        .await;
    }

    #[tokio::test]
    async fn invalidating_a_tenant_drops_every_key_of_that_tenant() {
        each_database(|store, opts| async move {
            let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
            let t = tenant(&store, "Suspect").await;
            let issued = key(&store, &t).await;
            let hash = issued.secret.hash();
            let d = random_domain();
            attach_domain(&store, &t, &d).await.expect("attach");
            let other = tenant(&store, "Other").await;
            let other_hash = key(&store, &other).await.secret.hash();

            assert!(
                resolver
                    .resolve_api_key(&hash)
                    .await
                    .expect("key")
                    .is_some()
            );
            assert!(
                resolver
                    .resolve_host(d.as_str())
                    .await
                    .expect("host")
                    .is_some()
            );
            assert_eq!(
                resolver.resolve_tenant(&t).await.expect("t"),
                Some(TenantStatus::Active)
            );
            assert!(
                resolver
                    .resolve_api_key(&other_hash)
                    .await
                    .expect("key")
                    .is_some()
            );
            assert_eq!(resolver.db_queries(), 4);

            set_tenant_status(&store, &t, TenantStatus::Suspended)
                .await
                .expect("suspend");
            resolver.invalidate_tenant(&t).await.expect("invalidate");
            assert_eq!(
                resolver.resolve_api_key(&hash).await.expect("key"),
                Some(resolved(&t, &issued.info.id, TenantStatus::Suspended))
            );
            assert_eq!(
                resolver.resolve_tenant(&t).await.expect("t"),
                Some(TenantStatus::Suspended)
            );
            assert_eq!(
                resolver.resolve_host(d.as_str()).await.expect("host"),
                Some(t.clone())
            );
            assert_eq!(
                resolver.db_queries(),
                7,
                "all three of the tenant's entries were dropped"
            );
            assert!(
                resolver
                    .resolve_api_key(&other_hash)
                    .await
                    .expect("key")
                    .is_some()
            );
            assert_eq!(
                resolver.db_queries(),
                7,
                "another tenant's key stayed cached"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn l1_is_bounded_and_evicts_the_oldest_entry() {
        each_database(|store, opts| async move {
            let opts = ResolverOptions {
                l1_capacity: 2,
                ..opts
            };
            let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
            let t = tenant(&store, "Many domains").await;
            let domains = [random_domain(), random_domain(), random_domain()];
            for d in &domains {
                attach_domain(&store, &t, d).await.expect("attach");
                assert!(
                    resolver
                        .resolve_host(d.as_str())
                        .await
                        .expect("host")
                        .is_some()
                );
            }
            assert_eq!(resolver.db_queries(), 3);
            for d in &domains[1..] {
                assert!(
                    resolver
                        .resolve_host(d.as_str())
                        .await
                        .expect("host")
                        .is_some()
                );
            }
            assert_eq!(resolver.db_queries(), 3, "the two newest are cached");
            assert!(
                resolver
                    .resolve_host(domains[0].as_str())
                    .await
                    .expect("host")
                    .is_some()
            );
            assert_eq!(resolver.db_queries(), 4, "the oldest was evicted");
        })
        .await;
    }

    #[test]
    fn evicted_entries_leave_the_tenant_index() {
        let now = Instant::now();
        let mut l1 = L1::new(1);
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let key_a = CacheKey::Tenant(a.clone());
        let key_b = CacheKey::Host(random_domain());
        let epoch = l1.epoch;
        l1.fill(
            key_a.clone(),
            Some(Cached::Tenant {
                id: a.clone(),
                status: TenantStatus::Active,
            }),
            epoch,
            now,
            LONG_TTL,
            LONG_TTL,
        );
        l1.fill(
            key_b.clone(),
            Some(Cached::Host(b.clone())),
            epoch,
            now,
            LONG_TTL,
            LONG_TTL,
        );
        assert_eq!(l1.positive.len(), 1);
        assert!(matches!(l1.lookup(&key_a, now), L1Lookup::Miss { .. }));
        assert!(
            !l1.by_tenant.contains_key(&a),
            "evicted entry still indexed"
        );
        assert_eq!(l1.by_tenant.get(&b).map(HashSet::len), Some(1));

        // A fill that started before an invalidation is dropped.
        let stale_epoch = l1.epoch;
        l1.evict(&Invalidation {
            tenants: vec![b.clone()],
            ..Invalidation::default()
        });
        assert!(l1.by_tenant.is_empty());
        l1.fill(
            key_b.clone(),
            Some(Cached::Host(b)),
            stale_epoch,
            now,
            LONG_TTL,
            LONG_TTL,
        );
        assert!(
            matches!(l1.lookup(&key_b, now), L1Lookup::Miss { .. }),
            "stale fill was kept"
        );
    }

    #[tokio::test]
    async fn broadcasts_from_others_evict_and_unreadable_ones_flush() {
        let db = TestDb::sqlite().await.expect("sqlite");
        let store = db.store().clone();
        let resolver = TenantResolver::new(store.clone(), ResolverOptions::default()).expect("r");
        let t = tenant(&store, "Acme").await;
        let d = random_domain();
        attach_domain(&store, &t, &d).await.expect("attach");
        let inner = &resolver.inner;
        let lookup = async || {
            let before = resolver.db_queries();
            resolver.resolve_host(d.as_str()).await.expect("host");
            resolver.db_queries() > before
        };
        assert!(lookup().await, "first lookup reaches the database");

        let inv = Invalidation {
            domains: vec![d.clone()],
            ..Invalidation::default()
        };
        inner.apply_remote(&WireMessage::new(&inner.origin, &inv).encode());
        assert!(!lookup().await, "its own broadcast is ignored");
        inner.apply_remote(&WireMessage::new("someone-else", &inv).encode());
        assert!(lookup().await, "another instance's broadcast evicts");
        inner.apply_remote(&WireMessage::flush_all("someone-else").encode());
        assert!(lookup().await, "flush-all evicts");
        inner.apply_remote("{not json");
        assert!(lookup().await, "an unreadable broadcast flushes");
        db.cleanup().await;
    }

    #[tokio::test]
    async fn options_are_validated_at_start_up() {
        each_database(|store, opts| async move {
            let bad = |opts: ResolverOptions| TenantResolver::new(store.clone(), opts).err();
            let option_of = |e: Option<ResolverError>| match e {
                Some(ResolverError::Config { option, .. }) => Some(option),
                _ => None,
            };
            assert_eq!(
                option_of(bad(ResolverOptions {
                    l1_capacity: 0,
                    ..opts.clone()
                })),
                Some("l1_capacity")
            );
            assert_eq!(
                option_of(bad(ResolverOptions {
                    ttl: Duration::ZERO,
                    ..opts.clone()
                })),
                Some("ttl")
            );
            assert_eq!(
                option_of(bad(ResolverOptions {
                    redis_url: Some("http://x".into()),
                    ..opts.clone()
                })),
                Some("redis_url")
            );
            for channel in ["", "Payhost", "payhost-tenants", &"x".repeat(64)] {
                assert_eq!(
                    option_of(bad(ResolverOptions {
                        channel: channel.to_string(),
                        ..opts.clone()
                    })),
                    Some("channel"),
                    "{channel:?}"
                );
            }
            match store.backend() {
                Backend::Postgres => {
                    assert_eq!(
                        option_of(bad(ResolverOptions {
                            postgres_url: None,
                            ..opts.clone()
                        })),
                        Some("postgres_url"),
                        "PostgreSQL without a broadcast channel must not start"
                    );
                    let with_redis = ResolverOptions {
                        postgres_url: None,
                        redis_url: Some("redis://127.0.0.1:1".into()),
                        ..opts.clone()
                    };
                    assert!(TenantResolver::new(store.clone(), with_redis).is_ok());
                }
                Backend::Sqlite => {
                    assert_eq!(
                        option_of(bad(ResolverOptions {
                            postgres_url: Some("postgres://u:secret@h/db".into()),
                            ..opts.clone()
                        })),
                        Some("postgres_url")
                    );
                    let resolver = TenantResolver::new(store.clone(), opts.clone()).expect("ok");
                    assert!(
                        resolver
                            .start_invalidation_listener()
                            .await
                            .expect("listen")
                            .is_none(),
                        "SQLite without Redis has nobody to listen to"
                    );
                }
            }
            let shown = format!(
                "{:?}",
                ResolverOptions {
                    redis_url: Some("redis://:hunter2@h".into()),
                    postgres_url: Some("postgres://u:hunter2@h/db".into()),
                    ..opts
                }
            );
            assert!(!shown.contains("hunter2"), "{shown}");
        })
        .await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_degrades_to_the_database() {
        each_database(|store, opts| async move {
            // Nothing listens on port 1: every Redis call fails fast.
            let opts = ResolverOptions {
                redis_url: Some("redis://127.0.0.1:1".into()),
                ..opts
            };
            let resolver = TenantResolver::new(store.clone(), opts).expect("resolver");
            let t = tenant(&store, "Acme").await;
            let issued = key(&store, &t).await;
            let hash = issued.secret.hash();
            let expected = Some(resolved(&t, &issued.info.id, TenantStatus::Active));

            assert_eq!(
                resolver
                    .resolve_api_key(&hash)
                    .await
                    .expect("no redis needed"),
                expected
            );
            assert_eq!(resolver.resolve_api_key(&hash).await.expect("L1"), expected);
            assert_eq!(resolver.db_queries(), 1, "L1 works without Redis");

            assert!(
                resolver.invalidate_api_key(&hash).await.is_err(),
                "a broadcast that could not be sent is reported"
            );
            assert_eq!(resolver.resolve_api_key(&hash).await.expect("db"), expected);
            assert_eq!(
                resolver.db_queries(),
                2,
                "the local eviction happened anyway"
            );
            assert!(resolver.start_invalidation_listener().await.is_err());
        })
        .await;
    }

    /// The acceptance scenario: two host instances over one PostgreSQL
    /// database, invalidations travelling by NOTIFY.
    #[tokio::test]
    async fn a_second_instance_on_postgres_stops_resolving_a_moved_domain() {
        if std::env::var(POSTGRES_URL_ENV).is_err() {
            eprintln!("skipped: {POSTGRES_URL_ENV} is not set");
            return;
        }
        each_database(|store, opts| async move {
            if store.backend() != Backend::Postgres {
                return;
            }
            let a = TenantResolver::new(store.clone(), opts.clone()).expect("instance a");
            let b = TenantResolver::new(store.clone(), opts).expect("instance b");
            a.start_invalidation_listener()
                .await
                .expect("listen a")
                .expect("pg listens");
            let b_listener = b
                .start_invalidation_listener()
                .await
                .expect("listen b")
                .expect("pg listens");
            two_instances_stay_coherent(&store, &a, &b).await;

            // An invalidation too large for one NOTIFY flushes the other instance.
            let d = random_domain();
            let t = tenant(&store, "Flushed").await;
            attach_domain(&store, &t, &d).await.expect("attach");
            assert!(b.resolve_host(d.as_str()).await.expect("host").is_some());
            let many: Vec<Domain> = (0..400).map(|_| random_domain()).collect();
            a.invalidate_domains(&many).await.expect("invalidate");
            eventually!("the flush-all broadcast", {
                let before = b.db_queries();
                b.resolve_host(d.as_str()).await.expect("host");
                b.db_queries() > before
            });

            drop(b);
            tokio::time::timeout(BROADCAST_DEADLINE, b_listener)
                .await
                .expect("the listener stops when its resolver is dropped")
                .expect("listener task");
        })
        .await;
    }

    /// Losing the LISTEN connection may lose broadcasts: the instance empties
    /// its L1, reconnects, and hears later invalidations again.
    #[tokio::test]
    async fn a_lost_listen_connection_flushes_l1_and_is_reestablished() {
        if std::env::var(POSTGRES_URL_ENV).is_err() {
            eprintln!("skipped: {POSTGRES_URL_ENV} is not set");
            return;
        }
        each_database(|store, opts| async move {
            if store.backend() != Backend::Postgres {
                return;
            }
            let mut name = [0u8; 6];
            rand::rng().fill_bytes(&mut name);
            let app = format!("payhost_listen_{}", hex::encode(name));
            let url = opts.postgres_url.clone().expect("pg url");
            let sep = if url.contains('?') { '&' } else { '?' };
            let a = TenantResolver::new(store.clone(), opts.clone()).expect("instance a");
            let b = TenantResolver::new(
                store.clone(),
                ResolverOptions {
                    postgres_url: Some(format!("{url}{sep}application_name={app}")),
                    ..opts
                },
            )
            .expect("instance b");
            b.start_invalidation_listener()
                .await
                .expect("listen b")
                .expect("pg listens");

            let t = tenant(&store, "Acme").await;
            let d = random_domain();
            attach_domain(&store, &t, &d).await.expect("attach");
            assert!(b.resolve_host(d.as_str()).await.expect("b").is_some());
            assert_eq!(b.db_queries(), 1);

            let killed = sqlx::query(
                "SELECT CAST(COUNT(pg_terminate_backend(pid)) AS BIGINT) AS n \
                   FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&app)
            .fetch_one(store.pool())
            .await
            .expect("terminate");
            assert_eq!(
                crate::store::get_i64(&killed, "n").expect("n"),
                1,
                "b's LISTEN connection"
            );
            eventually!("b to flush L1 after losing LISTEN", {
                let before = b.db_queries();
                b.resolve_host(d.as_str()).await.expect("b");
                b.db_queries() > before
            });
            two_instances_stay_coherent(&store, &a, &b).await;
        })
        .await;
    }

    /// The same over Redis: shared L2 plus pub/sub, on every database backend.
    #[tokio::test]
    async fn a_second_instance_with_redis_shares_l2_and_hears_invalidations() {
        let Some(redis_url) = redis_url() else {
            eprintln!("skipped: {REDIS_URL_ENV} is not set");
            return;
        };
        each_database(move |store, opts| {
            let opts = ResolverOptions {
                redis_url: Some(redis_url.clone()),
                ..opts
            };
            async move {
                let a = TenantResolver::new(store.clone(), opts.clone()).expect("instance a");
                let b = TenantResolver::new(store.clone(), opts.clone()).expect("instance b");
                a.start_invalidation_listener()
                    .await
                    .expect("listen a")
                    .expect("redis");
                b.start_invalidation_listener()
                    .await
                    .expect("listen b")
                    .expect("redis");

                // L2: what A looked up, B gets without touching the database.
                let t = tenant(&store, "Shared").await;
                let issued = key(&store, &t).await;
                let hash = issued.secret.hash();
                let expected = Some(resolved(&t, &issued.info.id, TenantStatus::Active));
                assert_eq!(a.resolve_api_key(&hash).await.expect("a"), expected);
                assert_eq!(a.db_queries(), 1);
                assert_eq!(b.resolve_api_key(&hash).await.expect("b"), expected);
                assert_eq!(b.db_queries(), 0, "an L2 hit makes no database query");
                let unknown = random_domain();
                assert_eq!(a.resolve_host(unknown.as_str()).await.expect("a"), None);
                assert_eq!(b.resolve_host(unknown.as_str()).await.expect("b"), None);
                assert_eq!(b.db_queries(), 0, "negative entries are shared too");

                // A tenant invalidation tombstones the tenant's L2 keys: a
                // fresh instance (empty L1) sees the new status.
                set_tenant_status(&store, &t, TenantStatus::Suspended)
                    .await
                    .expect("suspend");
                a.invalidate_tenant(&t).await.expect("invalidate");
                let c = TenantResolver::new(store.clone(), opts).expect("instance c");
                assert_eq!(
                    c.resolve_api_key(&hash).await.expect("c"),
                    Some(resolved(&t, &issued.info.id, TenantStatus::Suspended))
                );
                assert_eq!(c.db_queries(), 1, "the tombstone sent c to the database");
                eventually!(
                    "b to hear the tenant invalidation",
                    b.resolve_api_key(&hash)
                        .await
                        .expect("b")
                        .map(|r| r.tenant_status)
                        == Some(TenantStatus::Suspended)
                );

                two_instances_stay_coherent(&store, &a, &b).await;
            }
        })
        .await;
    }

    /// B caches a domain and a key; A changes both and invalidates; B must
    /// stop serving the old answers (polled, bounded).
    async fn two_instances_stay_coherent(store: &Store, a: &TenantResolver, b: &TenantResolver) {
        let old_owner = tenant(store, "Old owner").await;
        let new_owner = tenant(store, "New owner").await;
        let d = random_domain();
        attach_domain(store, &old_owner, &d).await.expect("attach");
        let issued = key(store, &old_owner).await;
        let hash = issued.secret.hash();

        assert_eq!(
            b.resolve_host(d.as_str()).await.expect("b"),
            Some(old_owner.clone())
        );
        assert!(b.resolve_api_key(&hash).await.expect("b").is_some());
        let cached = b.db_queries();
        assert_eq!(
            b.resolve_host(d.as_str()).await.expect("b"),
            Some(old_owner.clone())
        );
        assert_eq!(b.db_queries(), cached, "b answers from its cache");

        let moved = move_domain(store, &d, &new_owner).await.expect("move");
        assert_eq!(
            b.resolve_host(d.as_str()).await.expect("b"),
            Some(old_owner.clone()),
            "b keeps its cached answer until it is told"
        );
        a.invalidate_domain_change(&moved)
            .await
            .expect("invalidate");
        eventually!(
            "b to stop resolving the moved domain to its old owner",
            b.resolve_host(d.as_str()).await.expect("b") != Some(old_owner.clone())
        );
        assert_eq!(
            b.resolve_host(d.as_str()).await.expect("b"),
            Some(new_owner)
        );

        let revoked = revoke_api_key(store, &old_owner, &issued.info.id)
            .await
            .expect("revoke")
            .expect("active");
        a.invalidate_api_key(&revoked.hash)
            .await
            .expect("invalidate");
        eventually!(
            "b to stop resolving the revoked key",
            b.resolve_api_key(&hash).await.expect("b").is_none()
        );
    }

    /// A channel of this test's own: tests run side by side on one
    /// PostgreSQL server and one Redis, and one test's flush must not reach
    /// another's instances.
    fn test_channel() -> String {
        let mut suffix = [0u8; 8];
        rand::rng().fill_bytes(&mut suffix);
        format!("payhost_test_{}", hex::encode(suffix))
    }
}
