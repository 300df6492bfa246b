//! The janitor's schedule (`reconcile_checks`, migration 0010): which
//! unsettled orders are due, the claim (lease) an instance takes before it
//! calls the gateway, and the next check time once it is done.

use crate::ledger::LedgerError;
use crate::store::{OrderId, Store, TenantId, UnixMillis, get_i64, get_parsed};

/// An unsettled checkout order the janitor may look at now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Due {
    pub tenant: TenantId,
    pub order: OrderId,
}

/// Checkout orders left `pending` / `requires_action` since before
/// `older_than`, never checked or due again at `now` and not leased,
/// oldest first, at most `limit`.
pub(super) async fn due(
    store: &Store,
    now: UnixMillis,
    older_than: UnixMillis,
    limit: i64,
) -> Result<Vec<Due>, LedgerError> {
    let rows = sqlx::query(
        "SELECT o.id AS id, o.tenant_id AS tenant_id FROM orders o \
           LEFT JOIN reconcile_checks c ON c.order_id = o.id \
          WHERE o.status IN ('pending', 'requires_action') AND o.kind = 'checkout' \
            AND o.created_at < $2 \
            AND (c.order_id IS NULL \
                 OR (c.next_check_at <= $1 AND (c.lease_until IS NULL OR c.lease_until < $1))) \
          ORDER BY o.created_at, o.id LIMIT $3",
    )
    .bind(now.as_i64())
    .bind(older_than.as_i64())
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Due {
                tenant: get_parsed(row, "tenant_id", TenantId::parse)?,
                order: get_parsed(row, "id", OrderId::parse)?,
            })
        })
        .collect::<Result<_, crate::store::StoreError>>()
        .map_err(LedgerError::from)
}

/// Claims `order` for `owner` until `until`: atomically, so of several
/// instances only one holds it (a row lock on PostgreSQL, the write lock on
/// SQLite). Without `force` only an order that is due at `now` is claimed;
/// with it (the operator's "now") any order whose lease has lapsed. The
/// number of checks made so far, or `None` when not claimed.
pub(super) async fn claim(
    store: &Store,
    due: &Due,
    owner: &str,
    now: UnixMillis,
    until: UnixMillis,
    force: bool,
) -> Result<Option<i64>, LedgerError> {
    let due_clause = if force {
        ""
    } else {
        "reconcile_checks.next_check_at <= $3 AND "
    };
    let sql = format!(
        "INSERT INTO reconcile_checks \
           (order_id, tenant_id, attempts, next_check_at, lease_owner, lease_until) \
         VALUES ($1, $2, 0, $3, $4, $5) \
         ON CONFLICT (order_id) DO UPDATE \
            SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until \
          WHERE {due_clause}(reconcile_checks.lease_until IS NULL \
                 OR reconcile_checks.lease_until < $3) \
         RETURNING attempts"
    );
    let row = sqlx::query(&sql)
        .bind(due.order.as_str())
        .bind(due.tenant.as_str())
        .bind(now.as_i64())
        .bind(owner)
        .bind(until.as_i64())
        .fetch_optional(store.pool())
        .await?;
    Ok(row.map(|row| get_i64(&row, "attempts")).transpose()?)
}

/// Ends `owner`'s claim of `order`: one more check made, the next at
/// `next_check_at`, what it found in `state`.
pub(super) async fn checked(
    store: &Store,
    order: &OrderId,
    owner: &str,
    now: UnixMillis,
    next_check_at: UnixMillis,
    state: &str,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE reconcile_checks \
            SET attempts = attempts + 1, next_check_at = $3, lease_owner = NULL, \
                lease_until = NULL, last_state = $4, checked_at = $5 \
          WHERE order_id = $1 AND lease_owner = $2",
    )
    .bind(order.as_str())
    .bind(owner)
    .bind(next_check_at.as_i64())
    .bind(state)
    .bind(now.as_i64())
    .execute(store.pool())
    .await?;
    Ok(())
}
