//! Counting one use of a metered key, inside the transaction of the write
//! it admits.
//!
//! The count is one statement that both decides and increments:
//!
//! ```sql
//! INSERT INTO quota_usage (…, used, …) VALUES (…, 1, …)
//! ON CONFLICT (tenant_id, key, period_start)
//!   DO UPDATE SET used = quota_usage.used + 1 WHERE quota_usage.used < $limit
//! RETURNING used, alerted_percent
//! ```
//!
//! No row back means the limit is reached, and the caller's transaction
//! (holding its order) rolls back. Why it cannot over-admit: on PostgreSQL
//! `ON CONFLICT DO UPDATE` locks the counter row and re-checks the `WHERE`
//! against the latest committed version, so concurrent transactions, on any
//! number of host instances, queue on that row and each sees the previous
//! one's increment; on SQLite every write holds the database's one write
//! lock. The row of a new period does not exist yet, so a new period starts
//! at zero without any reset.

use sqlx::Row;

use super::{Period, QuotaError};
use crate::audit::{self, Actor};
use crate::store::{Arg, CoWrite, SqlBuf, StoreError, TenantId, UnixMillis, WriteTx};

const COUNT: &str = "INSERT INTO quota_usage \
     (tenant_id, key, period_start, used, alerted_percent, updated_at) \
     VALUES ($1, $2, $3, 1, 0, $4) \
     ON CONFLICT (tenant_id, key, period_start) DO UPDATE \
     SET used = quota_usage.used + 1, updated_at = $4 \
     WHERE quota_usage.used < $5 \
     RETURNING used, alerted_percent";

const MARK_ALERTED: &str = "UPDATE quota_usage SET alerted_percent = $4 \
     WHERE tenant_id = $1 AND key = $2 AND period_start = $3";

/// The audit action of a threshold crossing.
pub const THRESHOLD_ACTION: &str = "quota.threshold";

/// The thresholds audited once per period, in percent of the limit.
const THRESHOLDS: [i64; 2] = [80, 100];

/// One use of `key` by `tenant` in `period`, to be counted in the
/// transaction of the write it admits (a [`CoWrite`]). Built without I/O.
#[derive(Debug, Clone)]
pub struct Admission {
    pub(super) tenant: TenantId,
    pub(super) key: &'static str,
    /// `None`: unlimited (counted, never refused).
    pub(super) limit: Option<u64>,
    pub(super) period: Period,
    pub(super) now: UnixMillis,
}

impl Admission {
    fn refused(&self) -> QuotaError {
        QuotaError::Exceeded {
            key: self.key,
            limit: self.limit.unwrap_or(0),
            period: self.period,
            retry_after_secs: self.period.secs_until_end(self.now),
        }
    }

    fn count_statement(&self) -> SqlBuf {
        let guard = self
            .limit
            .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        SqlBuf::bound(
            COUNT.to_owned(),
            vec![
                Arg::Text(self.tenant.to_string()),
                Arg::Text(self.key.to_owned()),
                Arg::Int(self.period.start.as_i64()),
                Arg::Int(self.now.as_i64()),
                Arg::Int(guard),
            ],
        )
    }

    /// What a count that returned (`used`, `alerted`) must also write: an
    /// audit event per threshold crossed now, and the new mark.
    fn crossings(&self, used: i64, alerted: i64) -> Result<Vec<SqlBuf>, QuotaError> {
        let Some(limit) = self.limit.and_then(|l| i64::try_from(l).ok()) else {
            return Ok(Vec::new());
        };
        let reached: Vec<i64> = THRESHOLDS
            .into_iter()
            .filter(|t| {
                *t > alerted && i128::from(used) * 100 >= i128::from(*t) * i128::from(limit)
            })
            .collect();
        let Some(&highest) = reached.last() else {
            return Ok(Vec::new());
        };
        let actor = Actor::system("quota").map_err(|e| QuotaError::Invalid(e.to_string()))?;
        let mut writes = Vec::with_capacity(reached.len() + 1);
        for percent in reached {
            let details = serde_json::json!({
                "key": self.key,
                "percent": percent,
                "used": used,
                "limit": limit,
                "period_start": self.period.start.as_i64(),
                "period_end": self.period.end.as_i64(),
            });
            let (_, insert) =
                audit::event_insert(&actor, THRESHOLD_ACTION, Some(&self.tenant), details)?;
            writes.push(insert);
        }
        writes.push(SqlBuf::bound(
            MARK_ALERTED.to_owned(),
            vec![
                Arg::Text(self.tenant.to_string()),
                Arg::Text(self.key.to_owned()),
                Arg::Int(self.period.start.as_i64()),
                Arg::Int(highest),
            ],
        ));
        Ok(writes)
    }
}

impl CoWrite for Admission {
    type Error = QuotaError;

    fn run_sqlite(self, conn: &rusqlite::Connection) -> Result<(), QuotaError> {
        if self.limit == Some(0) {
            return Err(self.refused());
        }
        let counted = self
            .count_statement()
            .query_row_sqlite(conn, |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(StoreError::from)?;
        let Some((used, alerted)) = counted else {
            return Err(self.refused());
        };
        for write in self.crossings(used, alerted)? {
            write.execute_sqlite(conn).map_err(StoreError::from)?;
        }
        Ok(())
    }

    async fn run(self, tx: &mut WriteTx) -> Result<(), QuotaError> {
        if self.limit == Some(0) {
            return Err(self.refused());
        }
        let row = self
            .count_statement()
            .query()
            .fetch_optional(tx.conn())
            .await
            .map_err(StoreError::from)?;
        let Some(row) = row else {
            return Err(self.refused());
        };
        let used: i64 = row.try_get("used").map_err(StoreError::from)?;
        let alerted: i64 = row.try_get("alerted_percent").map_err(StoreError::from)?;
        for write in self.crossings(used, alerted)? {
            write
                .query()
                .execute(tx.conn())
                .await
                .map_err(StoreError::from)?;
        }
        Ok(())
    }
}
