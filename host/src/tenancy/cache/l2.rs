//! L2: the optional Redis cache shared by every host instance. Any Redis
//! failure makes a lookup fall through to the database.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use super::l1::{CacheKey, Cached};
use super::{Invalidation, ResolverError};
use crate::tenancy::{ResolvedApiKey, TenantId, TenantStatus};

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

/// What L2 stores under a key (JSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum L2Entry {
    ApiKey {
        tenant_id: TenantId,
        key_id: crate::tenancy::ApiKeyId,
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
    pub(super) fn of(value: &Option<Cached>) -> Self {
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
    pub(super) fn answer(self, key: &CacheKey) -> Option<Option<Cached>> {
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

pub(super) enum L2Read {
    Hit(Option<Cached>),
    Miss,
    /// Tombstoned or unreadable: answer from the database without filling L2.
    Blocked,
}

pub(super) struct RedisConnState {
    conn: Option<MultiplexedConnection>,
    retry_at: Option<Instant>,
}

pub(super) struct RedisL2 {
    client: redis::Client,
    state: Mutex<RedisConnState>,
    /// Held while connecting, so one request connects and the others skip L2.
    connecting: tokio::sync::Mutex<()>,
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisL2 {
    pub(super) fn new(url: &str) -> Result<Self, ResolverError> {
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

    pub(super) fn lock_state(&self) -> MutexGuard<'_, RedisConnState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn cached_conn(&self) -> Result<Option<MultiplexedConnection>, ResolverError> {
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
    pub(super) async fn conn(&self, wait: bool) -> Result<MultiplexedConnection, ResolverError> {
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

    pub(super) async fn exec<T: redis::FromRedisValue>(
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

    pub(super) async fn get(&self, key: &CacheKey) -> Result<L2Read, ResolverError> {
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
    pub(super) async fn fill(
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
    pub(super) async fn tombstone(&self, inv: &Invalidation) -> Result<(), ResolverError> {
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
}
