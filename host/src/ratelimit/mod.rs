//! Request rate limits: a GCRA budget per key in named lanes, so one kind of
//! traffic never spends another's budget.
//!
//! - [`Lane::Api`]: per (tenant, API key); the rate comes from a [`RateFor`]
//!   (the tenant's `api.requests_per_minute` feature once features land,
//!   else `rate_limit.requests_per_minute`).
//! - [`Lane::Webhooks`]: per (tenant, provider), for webhook ingestion.
//! - [`Lane::WebhookDiagnosis`]: a small budget per (tenant, provider) for
//!   diagnosing rejected webhooks.
//!
//! The budget is kept in process ([`local`], bounded memory, injectable
//! clock) or, when Redis is configured, in Redis by one atomic script per
//! check ([`redis`]), shared by every instance. A Redis failure falls back
//! to the in-process budget and is logged; it never fails a request.
//!
//! Owns: the arithmetic ([`gcra`]), the budgets, the decision and the
//! IETF `RateLimit` / `RateLimit-Policy` header values.
//! Must never: touch the database, block a request on Redis for longer than
//! a short timeout, or import `api`.

pub mod gcra;
mod local;
mod redis;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use gcra::Quota;
#[cfg(any(test, feature = "test-support"))]
pub use local::ManualClock;
pub use local::{Clock, SystemClock};

use crate::store::{ApiKeyId, TenantId};

/// The per-tenant API rate, requests per minute; `None` = unlimited.
pub type RateFor = Arc<dyn Fn(&TenantId) -> Option<u64> + Send + Sync>;

/// The window every rate is quoted in, seconds (`w` of `RateLimit-Policy`).
pub const WINDOW_SECS: u64 = gcra::WINDOW_MICROS / 1_000_000;

/// Default prefix of every Redis key the limiter writes.
pub const DEFAULT_REDIS_PREFIX: &str = "payhost:ratelimit:";

/// A budget family with limits of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// The tenant API, per (tenant, API key).
    Api,
    /// Webhook ingestion, per (tenant, provider).
    Webhooks,
    /// Webhook diagnosis, per (tenant, provider).
    WebhookDiagnosis,
}

impl Lane {
    /// The lane's name: the policy name in the `RateLimit` headers and a
    /// segment of its Redis keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Lane::Api => "api",
            Lane::Webhooks => "webhooks",
            Lane::WebhookDiagnosis => "webhook_diagnosis",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose budget a request spends: a tenant and one of its callers (an API
/// key id, a provider id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitKey {
    tenant: TenantId,
    caller: String,
}

impl LimitKey {
    /// The budget of one API key of a tenant ([`Lane::Api`]).
    pub fn api_key(tenant: &TenantId, key: &ApiKeyId) -> LimitKey {
        LimitKey {
            tenant: tenant.clone(),
            caller: key.as_str().to_owned(),
        }
    }

    /// The budget of one provider of a tenant ([`Lane::Webhooks`],
    /// [`Lane::WebhookDiagnosis`]); `provider` is a provider id.
    pub fn provider(tenant: &TenantId, provider: &str) -> LimitKey {
        LimitKey {
            tenant: tenant.clone(),
            caller: provider.to_owned(),
        }
    }

    /// The tenant whose budget this is.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
}

/// The budget a decision was taken under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The lane (the policy's name).
    pub lane: Lane,
    /// The quota applied.
    pub quota: Quota,
    /// Requests still admitted right now, after this one.
    pub remaining: u64,
    /// Until the budget is full again.
    pub reset: Duration,
}

/// What [`RateLimiter::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The budget, or `None` when the key is unlimited.
    pub limit: Option<Limit>,
    /// When denied: until a request would be admitted.
    pub retry_after: Option<Duration>,
}

/// Whole seconds, rounded up (a client waiting that long is admitted).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Decision {
    /// An unlimited request.
    pub const UNLIMITED: Decision = Decision {
        allowed: true,
        limit: None,
        retry_after: None,
    };

    fn of(lane: Lane, quota: Quota, o: gcra::Outcome) -> Decision {
        Decision {
            allowed: o.allowed,
            limit: Some(Limit {
                lane,
                quota,
                remaining: o.remaining,
                reset: Duration::from_micros(o.reset_micros),
            }),
            retry_after: (!o.allowed).then(|| Duration::from_micros(o.retry_after_micros)),
        }
    }

    /// `Retry-After` in seconds (at least 1) when denied.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_secs(d).max(1))
    }

    /// The `RateLimit-Policy` value (draft-ietf-httpapi-ratelimit-headers):
    /// `"api";q=600;w=60`.
    pub fn policy_header(&self) -> Option<String> {
        self.limit
            .map(|l| format!("\"{}\";q={};w={WINDOW_SECS}", l.lane, l.quota.per_window))
    }

    /// The `RateLimit` value: `"api";r=<remaining>;t=<seconds until full>`.
    pub fn header(&self) -> Option<String> {
        self.limit
            .map(|l| format!("\"{}\";r={};t={}", l.lane, l.remaining, ceil_secs(l.reset)))
    }
}

/// How a [`RateLimiter`] is set up (from `[rate_limit]` and `redis_url`).
#[derive(Clone)]
pub struct RateLimitOptions {
    /// [`Lane::Api`] requests per minute when the [`RateFor`] has no
    /// opinion of its own (the default [`RateFor`] answers this).
    pub requests_per_minute: u64,
    /// Requests a key may send at once; `None` = the minute's rate.
    pub burst: Option<u64>,
    /// [`Lane::Webhooks`] requests per minute per (tenant, provider).
    pub webhooks_per_minute: u64,
    /// [`Lane::WebhookDiagnosis`] requests per minute per (tenant, provider).
    pub webhook_diagnosis_per_minute: u64,
    /// Keys the in-process limiter holds at most (idle ones are evicted).
    pub max_tracked_keys: usize,
    /// `redis://…`: share budgets across instances.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (deployments sharing a Redis, tests).
    pub redis_prefix: String,
}

impl Default for RateLimitOptions {
    fn default() -> Self {
        RateLimitOptions {
            requests_per_minute: 600,
            burst: None,
            webhooks_per_minute: 6000,
            webhook_diagnosis_per_minute: 10,
            max_tracked_keys: 100_000,
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
        }
    }
}

impl fmt::Debug for RateLimitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitOptions")
            .field("requests_per_minute", &self.requests_per_minute)
            .field("burst", &self.burst)
            .field("webhooks_per_minute", &self.webhooks_per_minute)
            .field(
                "webhook_diagnosis_per_minute",
                &self.webhook_diagnosis_per_minute,
            )
            .field("max_tracked_keys", &self.max_tracked_keys)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "[redacted]"))
            .field("redis_prefix", &self.redis_prefix)
            .finish()
    }
}

/// Errors building a [`RateLimiter`].
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// `redis_url` is not a Redis URL (the URL itself is not repeated: it
    /// may hold a password).
    #[error("rate limiter: redis_url is not a valid redis:// URL")]
    RedisUrl,
}

/// The rate limiter of one instance. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    options: RateLimitOptions,
    rate_for: std::sync::RwLock<RateFor>,
    local: local::LocalLimiter<(Lane, LimitKey)>,
    redis: Option<redis::RedisLimiter>,
    /// When the last Redis failure was logged (one line per outage second).
    logged_failure: Mutex<Option<Instant>>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter on the system clock whose [`Lane::Api`] rate is
    /// `options.requests_per_minute` for every tenant.
    pub fn new(options: RateLimitOptions) -> Result<RateLimiter, RateLimitError> {
        let default = options.requests_per_minute;
        RateLimiter::with(
            options,
            Arc::new(move |_| Some(default)),
            Arc::new(SystemClock::new()),
        )
    }

    /// A limiter with its own tenant rates and clock (the clock drives the
    /// in-process budgets; Redis budgets run on Redis's clock).
    pub fn with(
        options: RateLimitOptions,
        rate_for: RateFor,
        clock: Arc<dyn Clock>,
    ) -> Result<RateLimiter, RateLimitError> {
        let redis = match &options.redis_url {
            Some(url) => Some(
                redis::RedisLimiter::new(url, options.redis_prefix.clone())
                    .map_err(|_| RateLimitError::RedisUrl)?,
            ),
            None => None,
        };
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                local: local::LocalLimiter::new(options.max_tracked_keys, clock),
                options,
                rate_for: std::sync::RwLock::new(rate_for),
                redis,
                logged_failure: Mutex::new(None),
            }),
        })
    }

    /// Takes [`Lane::Api`] rates from `rate_for` from now on, in every
    /// clone (the features module installs the tenant's
    /// `api.requests_per_minute`). Budgets already spent are kept.
    pub fn set_rate_for(&self, rate_for: RateFor) {
        *self
            .inner
            .rate_for
            .write()
            .unwrap_or_else(|e| e.into_inner()) = rate_for;
    }

    /// The [`Lane::Api`] rate `tenant`'s keys get, requests per minute;
    /// `None` = unlimited.
    pub fn api_rate(&self, tenant: &TenantId) -> Option<u64> {
        let rate_for = self
            .inner
            .rate_for
            .read()
            .unwrap_or_else(|e| e.into_inner());
        (*rate_for)(tenant)
    }

    /// Whether budgets are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// The quota of `lane` for `key`'s tenant, `None` = unlimited.
    pub fn quota(&self, lane: Lane, key: &LimitKey) -> Option<Quota> {
        let o = &self.inner.options;
        let per_minute = match lane {
            Lane::Api => {
                let rate_for = self
                    .inner
                    .rate_for
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                (*rate_for)(&key.tenant)?
            }
            Lane::Webhooks => o.webhooks_per_minute,
            Lane::WebhookDiagnosis => o.webhook_diagnosis_per_minute,
        };
        Some(Quota::per_minute(per_minute, o.burst))
    }

    /// Spends one request of `key`'s budget in `lane`. In-memory (or one
    /// Redis round trip); never touches the database and never errors.
    pub async fn check(&self, lane: Lane, key: &LimitKey) -> Decision {
        let Some(quota) = self.quota(lane, key) else {
            return Decision::UNLIMITED;
        };
        if let Some(redis) = &self.inner.redis {
            let redis_key = format!("{lane}:{}:{}", key.tenant.as_str(), key.caller);
            match redis.check(&redis_key, quota).await {
                Ok((_, ahead)) => return Decision::of(lane, quota, gcra::outcome(quota, ahead)),
                Err(e) => self.log_redis_failure(&e),
            }
        }
        let outcome = self.inner.local.check(&(lane, key.clone()), quota);
        Decision::of(lane, quota, outcome)
    }

    fn log_redis_failure(&self, e: &redis::RedisLimitError) {
        let mut last = self
            .inner
            .logged_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!(error = %e, "rate limiter: redis unavailable; using this instance's budgets");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u8) -> TenantId {
        TenantId::parse(&format!("ten_{n}")).expect("tenant id")
    }

    fn key(n: u8) -> ApiKeyId {
        ApiKeyId::parse(&format!("key_{n}")).expect("key id")
    }

    #[tokio::test]
    async fn lanes_have_separate_budgets() {
        let clock = ManualClock::new();
        let options = RateLimitOptions {
            webhooks_per_minute: 2,
            webhook_diagnosis_per_minute: 1,
            ..RateLimitOptions::default()
        };
        let l = RateLimiter::with(options, Arc::new(|_| Some(1)), Arc::new(clock.clone()))
            .expect("limiter");
        let api = LimitKey::api_key(&tenant(1), &key(1));
        let hooks = LimitKey::provider(&tenant(1), "stripe");
        assert!(l.check(Lane::Api, &api).await.allowed);
        let denied = l.check(Lane::Api, &api).await;
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_secs(), Some(60));
        assert_eq!(denied.policy_header().as_deref(), Some("\"api\";q=1;w=60"));
        assert_eq!(denied.header().as_deref(), Some("\"api\";r=0;t=60"));
        // API traffic spent nothing of the webhook lanes.
        let first = l.check(Lane::Webhooks, &hooks).await;
        assert_eq!(first.header().as_deref(), Some("\"webhooks\";r=1;t=30"));
        assert!(l.check(Lane::Webhooks, &hooks).await.allowed);
        assert!(!l.check(Lane::Webhooks, &hooks).await.allowed);
        assert!(l.check(Lane::WebhookDiagnosis, &hooks).await.allowed);
        assert!(!l.check(Lane::WebhookDiagnosis, &hooks).await.allowed);
        clock.advance(Duration::from_secs(60));
        assert!(l.check(Lane::Api, &api).await.allowed);
    }

    #[tokio::test]
    async fn an_unlimited_tenant_gets_no_headers() {
        let l = RateLimiter::with(
            RateLimitOptions::default(),
            Arc::new(|t: &TenantId| (t.as_str() != "ten_2").then_some(1)),
            Arc::new(ManualClock::new()),
        )
        .expect("limiter");
        let free = LimitKey::api_key(&tenant(2), &key(1));
        for _ in 0..10 {
            assert_eq!(l.check(Lane::Api, &free).await, Decision::UNLIMITED);
        }
        assert_eq!(Decision::UNLIMITED.header(), None);
        let limited = LimitKey::api_key(&tenant(3), &key(1));
        assert!(l.check(Lane::Api, &limited).await.allowed);
        assert!(!l.check(Lane::Api, &limited).await.allowed);
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_this_instance() {
        let options = RateLimitOptions {
            // Nothing listens on port 1.
            redis_url: Some("redis://127.0.0.1:1".into()),
            ..RateLimitOptions::default()
        };
        let l = RateLimiter::with(options, Arc::new(|_| Some(2)), Arc::new(ManualClock::new()))
            .expect("limiter");
        assert!(l.is_shared());
        let k = LimitKey::api_key(&tenant(4), &key(1));
        let allowed: Vec<bool> = [
            l.check(Lane::Api, &k).await.allowed,
            l.check(Lane::Api, &k).await.allowed,
            l.check(Lane::Api, &k).await.allowed,
        ]
        .to_vec();
        assert_eq!(allowed, [true, true, false]);
    }

    #[test]
    fn a_bad_redis_url_is_refused() {
        let options = RateLimitOptions {
            redis_url: Some("http://nope".into()),
            ..RateLimitOptions::default()
        };
        assert!(RateLimiter::new(options).is_err());
    }
}
