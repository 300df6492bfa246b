//! Features: boolean flags and numeric limits, granted per plan, overridden
//! per tenant (reason, actor, optional expiry), disabled platform-wide by
//! kill switches.
//!
//! Owns the feature definitions (built-in ones registered at start), plans
//! and their grants, a tenant's plan assignment, tenant overrides and kill
//! switches, and their evaluation: kill switch → unexpired override → plan
//! grant → default ([`Features::evaluate`]). Evaluation is an in-memory
//! lookup in a snapshot of the tables, swapped whole after every write here
//! and on every other instance (cluster broadcast, topic `features`; a
//! missed message reloads everything). Override expiry is judged against an
//! injected [`Clock`].
//!
//! Must never: error or touch the database while evaluating (an unknown key
//! is off), commit a write without its audit event, leave a committed write
//! out of this instance's snapshot (the reload runs even if the caller's
//! future is dropped after the commit), count quota usage, or import `api`.

mod model;
mod service;
mod snapshot;
mod store;

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use crate::broadcast::{Broadcast, Heard};
use crate::store::{ParseError, Store, StoreError, TenantId, UnixMillis};

pub use model::{
    Evaluation, Feature, FeatureKey, FeatureKind, FeatureValue, KillSwitch, KindMismatch, Override,
    Source,
};
pub use service::{FeatureWrite, FeatureWritten};
pub use snapshot::{PlanGrants, Snapshot};

/// The broadcast topic of feature changes.
pub const TOPIC: &str = "features";

/// Built-in keys besides `provider.<id>`.
pub mod keys {
    /// Limit: how many gateways a tenant may configure.
    pub const GATEWAYS_MAX: &str = "gateways.max";
    /// Limit: checkouts per calendar month (UTC).
    pub const CHECKOUTS_MONTHLY: &str = "checkouts.monthly";
    /// Flag: manual orders.
    pub const ORDERS_MANUAL: &str = "orders.manual";
    /// Flag: bulk orders.
    pub const ORDERS_BULK: &str = "orders.bulk";
    /// Flag: API refunds.
    pub const REFUNDS: &str = "refunds";
    /// Limit: API requests per minute per (tenant, API key).
    pub const API_REQUESTS_PER_MINUTE: &str = "api.requests_per_minute";
}

/// Errors of the features service.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// An input did not have the required shape.
    #[error(transparent)]
    Invalid(#[from] ParseError),
    /// A value does not fit its feature's kind.
    #[error("feature {key}: {source}")]
    KindMismatch {
        /// The feature.
        key: String,
        /// How it does not fit.
        #[source]
        source: KindMismatch,
    },
    /// A stored feature's kind cannot change.
    #[error("feature {key} is a {existing}; its kind cannot change")]
    KindChange {
        /// The feature.
        key: String,
        /// Its stored kind.
        existing: &'static str,
    },
    /// No feature with this key.
    #[error("no feature {0}")]
    FeatureNotFound(String),
    /// No plan with this name.
    #[error("no plan {0}")]
    PlanNotFound(String),
    /// No tenant with this id.
    #[error("tenant {0} not found")]
    TenantNotFound(TenantId),
    /// The audit event could not be written (nothing was committed).
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub use crate::clock::{Clock, ManualClock, SystemClock};

struct Inner {
    /// `None` for a fixed snapshot ([`Features::fixed`]).
    store: Option<Store>,
    snapshot: RwLock<Arc<Snapshot>>,
    clock: Arc<dyn Clock>,
    broadcast: Broadcast,
    /// Serialises reloads, so a slower, older load never replaces a newer one.
    reloading: tokio::sync::Mutex<()>,
}

/// The features service: in-memory evaluation plus the operator's audited
/// writes. Cheap to clone.
#[derive(Clone)]
pub struct Features {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features").finish_non_exhaustive()
    }
}

/// The built-in features: `provider.<id>` for each of `providers` (flag,
/// on) and the host's own keys (see [`keys`]).
pub fn builtins<'a>(providers: impl IntoIterator<Item = &'a str>) -> Vec<Feature> {
    let feature = |key: &str, default, description: &str| Feature {
        key: FeatureKey::parse(key).expect("built-in keys are valid"),
        kind: FeatureValue::kind(default),
        default,
        description: description.to_owned(),
        builtin: true,
    };
    let mut out: Vec<Feature> = providers
        .into_iter()
        .filter_map(|id| {
            let key = FeatureKey::parse(&FeatureKey::provider(id)).ok()?;
            Some(Feature {
                description: format!("the tenant may route checkouts to {id}"),
                ..feature(key.as_str(), FeatureValue::Flag(true), "")
            })
        })
        .collect();
    out.extend([
        feature(
            keys::GATEWAYS_MAX,
            FeatureValue::Limit(None),
            "gateways a tenant may configure",
        ),
        feature(
            keys::CHECKOUTS_MONTHLY,
            FeatureValue::Limit(None),
            "checkouts per calendar month (UTC)",
        ),
        feature(
            keys::ORDERS_MANUAL,
            FeatureValue::Flag(true),
            "manual orders",
        ),
        feature(keys::ORDERS_BULK, FeatureValue::Flag(true), "bulk orders"),
        feature(keys::REFUNDS, FeatureValue::Flag(true), "API refunds"),
        feature(
            keys::API_REQUESTS_PER_MINUTE,
            FeatureValue::Limit(None),
            "API requests per minute per API key",
        ),
    ]);
    out
}

impl Features {
    /// Registers the built-in features for `providers` (missing rows only),
    /// loads the snapshot, and follows `broadcast` (topic [`TOPIC`]): any
    /// message or a missed one reloads the snapshot.
    pub async fn start<'a>(
        store: Store,
        providers: impl IntoIterator<Item = &'a str>,
        clock: Arc<dyn Clock>,
        broadcast: Broadcast,
    ) -> Result<Features, FeaturesError> {
        store::register_builtins(&store, &builtins(providers)).await?;
        let snapshot = store::load(&store).await?;
        let features = Features {
            inner: Arc::new(Inner {
                store: Some(store),
                snapshot: RwLock::new(Arc::new(snapshot)),
                clock,
                broadcast: broadcast.clone(),
                reloading: tokio::sync::Mutex::new(()),
            }),
        };
        let weak: Weak<Inner> = Arc::downgrade(&features.inner);
        broadcast.subscribe(TOPIC, move |heard| {
            let Some(inner) = weak.upgrade() else { return };
            if let Heard::Missed = heard {
                tracing::info!("features: broadcast missed; reloading the snapshot");
            }
            // Handlers must not block: reload in a task of its own.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    Features { inner }.reload_logged().await;
                });
            }
        });
        if broadcast.is_shared() {
            tokio::spawn(refresh_periodically(Arc::downgrade(&features.inner)));
        }
        Ok(features)
    }

    /// A service over a fixed snapshot, with no database (benchmarks, unit
    /// tests, and hosts assembled without features).
    pub fn fixed(snapshot: Snapshot, clock: Arc<dyn Clock>) -> Features {
        Features {
            inner: Arc::new(Inner {
                store: None,
                snapshot: RwLock::new(Arc::new(snapshot)),
                clock,
                broadcast: Broadcast::local(),
                reloading: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The current snapshot (for listings).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The clock override expiry is judged against.
    pub fn now(&self) -> UnixMillis {
        self.inner.clock.now()
    }

    /// `key` for `tenant`: value, source and reason. Never errors: an
    /// unknown key is off (`false`, source `default`, error code
    /// `FLAG_NOT_FOUND`).
    pub fn evaluate(&self, tenant: &TenantId, key: &str) -> Evaluation {
        self.read(|snapshot, now| snapshot.evaluate(tenant, key, now))
    }

    /// Whether `key` is on for `tenant`: a flag that is `true`, or a limit
    /// above zero. An unknown key is off.
    pub fn enabled(&self, tenant: &TenantId, key: &str) -> bool {
        self.read(|snapshot, now| snapshot.resolve(tenant, key, now).value.is_on())
    }

    /// The limit `key` sets for `tenant`; `None` is unlimited. A flag (or an
    /// unknown key) reads as `Some(1)` when on and `Some(0)` when off.
    pub fn limit(&self, tenant: &TenantId, key: &str) -> Option<u64> {
        self.read(
            |snapshot, now| match snapshot.resolve(tenant, key, now).value {
                FeatureValue::Limit(n) => n,
                FeatureValue::Flag(on) => Some(u64::from(on)),
            },
        )
    }

    /// `f` on the current snapshot at the clock's now, under the read lock
    /// (no `Arc` clone on the hot path).
    fn read<T>(&self, f: impl FnOnce(&Snapshot, UnixMillis) -> T) -> T {
        let now = self.inner.clock.now();
        let snapshot = self
            .inner
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner());
        f(&snapshot, now)
    }

    /// Every feature for `tenant`, by key.
    pub fn evaluate_all(&self, tenant: &TenantId) -> Vec<Evaluation> {
        let now = self.inner.clock.now();
        let snapshot = self.snapshot();
        let mut keys: Vec<&String> = snapshot.features.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|key| snapshot.evaluate(tenant, key, now))
            .collect()
    }

    /// Reloads the snapshot from the database (serialised with other reloads).
    pub async fn reload(&self) -> Result<(), FeaturesError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let _one_at_a_time = self.inner.reloading.lock().await;
        let fresh = store::load(store).await?;
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    async fn reload_logged(&self) {
        if let Err(e) = self.reload().await {
            tracing::warn!(
                "features: reloading the snapshot failed (serving the previous one): {e}"
            );
        }
    }

    /// After a committed change here: reload this instance's snapshot, then
    /// tell the other instances to reload theirs.
    pub async fn changed(&self) {
        self.reload_logged().await;
        if let Err(e) = self.inner.broadcast.publish(TOPIC, "reload").await {
            tracing::warn!(
                "features: broadcasting a change failed (other instances keep their snapshot until the next change or a missed broadcast): {e}"
            );
        }
    }
}

/// How often an instance of a shared deployment reloads anyway: the bound
/// on staleness when a broadcast was lost without a "missed" report.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Reloads every [`REFRESH_INTERVAL`] until the service is dropped.
async fn refresh_periodically(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(REFRESH_INTERVAL).await;
        let Some(inner) = weak.upgrade() else { return };
        Features { inner }.reload_logged().await;
    }
}

/// Quotas read their limits (`checkouts.monthly`) from the evaluation.
impl crate::quota::LimitSource for Features {
    fn limit(&self, tenant: &TenantId, key: &str) -> Option<u64> {
        Features::limit(self, tenant, key)
    }
}
