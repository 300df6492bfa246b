//! Quotas: per-tenant counters of metered features (today
//! `checkouts.monthly`), per calendar month in UTC.
//!
//! Owns the `quota_usage` table: counting a use inside the transaction of
//! the write it admits ([`Admission`], `counter.rs`), so a checkout's count
//! and its pending order commit or roll back together; reading usage and the
//! operator's audited corrections (`usage.rs`); periods and the injected
//! [`Clock`] (`period.rs`). The limit itself comes from a [`LimitSource`]
//! (the features module's evaluation).
//!
//! Must never: admit a use past the limit (the check and the increment are
//! one statement, see `counter.rs`), count a use whose write did not commit,
//! let a counter go below zero, or import `api`.

use std::sync::Arc;

use crate::audit::AuditError;
use crate::store::{Store, StoreError, TenantId};

mod counter;
mod period;
mod usage;

pub use counter::{Admission, THRESHOLD_ACTION};
pub use period::{Clock, ManualClock, Period, SystemClock};
pub use usage::{ADJUSTED_ACTION, MAX_ADJUSTMENT, Usage};

/// Checkouts per calendar month (UTC).
pub const CHECKOUTS_MONTHLY: &str = "checkouts.monthly";

/// Every key this module counts.
pub const METERED: &[&str] = &[CHECKOUTS_MONTHLY];

/// The metered key named `raw`, if there is one.
pub fn metered(raw: &str) -> Option<&'static str> {
    METERED.iter().copied().find(|k| *k == raw)
}

/// Where a tenant's limit for a metered key comes from (the features
/// module's evaluation). Must be an in-memory lookup: it runs on every
/// checkout.
pub trait LimitSource: Send + Sync + 'static {
    /// The limit of `key` for `tenant`; `None`: unlimited.
    fn limit(&self, tenant: &TenantId, key: &str) -> Option<u64>;
}

/// Errors of quotas.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The limit of `key` is reached for this period; nothing was stored.
    #[error("the {key} quota of {limit} is used up until the period ends")]
    Exceeded {
        key: &'static str,
        limit: u64,
        period: Period,
        /// Seconds until the period ends.
        retry_after_secs: u64,
    },
    /// Not a metered key.
    #[error("`{0}` is not a metered key")]
    UnknownKey(String),
    /// No such tenant.
    #[error("no such tenant")]
    TenantNotFound,
    /// A malformed input.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The quota service: limits from a [`LimitSource`], periods from a
/// [`Clock`], counters in the store.
#[derive(Clone)]
pub struct Quotas {
    store: Store,
    limits: Arc<dyn LimitSource>,
    clock: Arc<dyn Clock>,
    counting: bool,
}

impl Quotas {
    /// Quotas over `store`.
    pub fn new(store: Store, limits: Arc<dyn LimitSource>, clock: Arc<dyn Clock>) -> Quotas {
        Quotas {
            store,
            limits,
            clock,
            counting: true,
        }
    }

    /// Quotas that count nothing and refuse nothing: the baseline of the
    /// checkout benchmark (quotas off).
    pub fn uncounted(mut self) -> Quotas {
        self.counting = false;
        self
    }

    /// The use of `key` a write by `tenant` would count, now; `None` when
    /// nothing is counted. Unlimited keys are counted too, so usage is
    /// right when a limit is set mid-period.
    pub fn admission(&self, tenant: &TenantId, key: &'static str) -> Option<Admission> {
        if !self.counting {
            return None;
        }
        let now = self.clock.now();
        Some(Admission {
            tenant: tenant.clone(),
            key,
            limit: self.limits.limit(tenant, key),
            period: Period::month_of(now),
            now,
        })
    }
}
