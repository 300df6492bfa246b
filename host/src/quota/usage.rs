//! Reading a tenant's counters, and the operator's manual corrections.

use sqlx::Row;

use super::{Period, QuotaError, Quotas, metered};
use crate::audit::{self, Actor};
use crate::store::{Arg, SqlBuf, StoreError, TenantId, Violation};

/// The largest correction one adjustment may make, either way.
pub const MAX_ADJUSTMENT: i64 = 1_000_000_000;

/// The audit action of a manual correction.
pub const ADJUSTED_ACTION: &str = "quota.adjusted";

const READ: &str = "SELECT used FROM quota_usage \
     WHERE tenant_id = $1 AND key = $2 AND period_start = $3";

/// Adds `$4` (negative: removes), never below zero; creates the row when the
/// period has none yet.
const ADJUST: &str = "INSERT INTO quota_usage \
     (tenant_id, key, period_start, used, alerted_percent, updated_at) \
     VALUES ($1, $2, $3, $5, 0, $6) \
     ON CONFLICT (tenant_id, key, period_start) DO UPDATE \
     SET used = CASE WHEN quota_usage.used + $4 < 0 THEN 0 ELSE quota_usage.used + $4 END, \
         updated_at = $6 \
     RETURNING used";

/// One metered key's use in the current period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The feature key (`checkouts.monthly`).
    pub key: &'static str,
    /// Uses counted in the period.
    pub used: u64,
    /// The limit now; `None`: unlimited.
    pub limit: Option<u64>,
    /// The current period.
    pub period: Period,
}

impl Usage {
    /// What is left before the limit; `None`: unlimited.
    pub fn remaining(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.used))
    }
}

fn key_args(tenant: &TenantId, key: &str, period: Period) -> Vec<Arg> {
    vec![
        Arg::Text(tenant.to_string()),
        Arg::Text(key.to_owned()),
        Arg::Int(period.start.as_i64()),
    ]
}

impl Quotas {
    /// Every metered key's use by `tenant` in the current period.
    pub async fn usage(&self, tenant: &TenantId) -> Result<Vec<Usage>, QuotaError> {
        let period = Period::month_of(self.clock.now());
        let mut all = Vec::with_capacity(super::METERED.len());
        for key in super::METERED {
            let row = SqlBuf::bound(READ.to_owned(), key_args(tenant, key, period))
                .query()
                .fetch_optional(self.store.pool())
                .await
                .map_err(StoreError::from)?;
            let used = match row {
                Some(row) => row.try_get::<i64, _>("used").map_err(StoreError::from)?,
                None => 0,
            };
            all.push(Usage {
                key,
                used: u64::try_from(used).unwrap_or(0),
                limit: self.limits.limit(tenant, key),
                period,
            });
        }
        Ok(all)
    }

    /// A manual correction of `key`'s counter for the current period by
    /// `delta` (negative gives uses back; the counter stops at zero),
    /// committed with its audit event. `reason` is the operator's, 1–500
    /// characters.
    pub async fn adjust(
        &self,
        actor: &Actor,
        tenant: &TenantId,
        key: &str,
        delta: i64,
        reason: &str,
    ) -> Result<Usage, QuotaError> {
        let key = metered(key).ok_or_else(|| QuotaError::UnknownKey(key.to_owned()))?;
        if delta == 0 || delta.unsigned_abs() > MAX_ADJUSTMENT.unsigned_abs() {
            return Err(QuotaError::Invalid(format!(
                "delta must be non-zero and within ±{MAX_ADJUSTMENT}"
            )));
        }
        let now = self.clock.now();
        let period = Period::month_of(now);
        let mut args = key_args(tenant, key, period);
        args.extend([
            Arg::Int(delta),
            Arg::Int(delta.max(0)),
            Arg::Int(now.as_i64()),
        ]);
        let mut tx = self.store.begin_write().await?;
        let row = SqlBuf::bound(ADJUST.to_owned(), args)
            .query()
            .fetch_one(tx.conn())
            .await
            .map_err(|e| match StoreError::from(e) {
                e if matches!(e.violation(), Some(Violation::ForeignKey { .. })) => {
                    QuotaError::TenantNotFound
                }
                e => QuotaError::Store(e),
            })?;
        let used: i64 = row.try_get("used").map_err(StoreError::from)?;
        let details = serde_json::json!({
            "key": key,
            "delta": delta,
            "reason": reason,
            "used": used,
            "period_start": period.start.as_i64(),
            "period_end": period.end.as_i64(),
        });
        audit::record_in(&mut tx, actor, ADJUSTED_ACTION, Some(tenant), details).await?;
        tx.commit().await?;
        Ok(Usage {
            key,
            used: u64::try_from(used).unwrap_or(0),
            limit: self.limits.limit(tenant, key),
            period,
        })
    }
}
