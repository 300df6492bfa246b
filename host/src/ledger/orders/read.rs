//! Reading orders: one by id, a filtered newest-first page, one by its
//! gateway reference.

use super::*;

/// [`get_order`]'s query: `$1` tenant, `$2` id.
pub(crate) fn get_order_sql() -> String {
    format!("SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = $1 AND id = $2")
}

/// [`find_order_by_gateway_reference`]'s query: `$1` tenant, `$2` provider,
/// `$3` reference.
pub(crate) fn order_by_gateway_reference_sql() -> String {
    format!(
        "SELECT {ORDER_COLUMNS} FROM orders \
          WHERE tenant_id = $1 AND provider = $2 AND gateway_reference = $3"
    )
}

/// The order, if it exists and belongs to `tenant` (another tenant's id → `None`).
pub async fn get_order(
    store: &Store,
    tenant: &TenantId,
    id: &OrderId,
) -> Result<Option<Order>, LedgerError> {
    let row = sqlx::query(&get_order_sql())
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(store.pool())
        .await?;
    Ok(row.as_ref().map(decode_order).transpose()?)
}

/// Filters for [`list_orders`]; every `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only orders with this status.
    pub status: Option<OrderStatus>,
    /// Only orders of this kind.
    pub kind: Option<OrderKind>,
    /// Only orders in this currency.
    pub currency: Option<Currency>,
    /// Only orders created at or after this time.
    pub created_from: Option<UnixMillis>,
    /// Only orders created strictly before this time.
    pub created_before: Option<UnixMillis>,
}

/// `tenant`'s orders matching `filter`, newest first, `limit` per page
/// (clamped to 1..=[`MAX_PAGE_SIZE`]). Pass the previous page's
/// `next_cursor` to continue; pages never skip or repeat an order, since
/// the order is the total order (created_at, id). An order's status may
/// change between pages; its place in the listing never does.
pub async fn list_orders(
    store: &Store,
    tenant: &TenantId,
    filter: &OrderFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Order>, LedgerError> {
    let (q, limit) = list_orders_sql(tenant, filter, cursor, limit)?;
    let rows = q.query().fetch_all(store.pool()).await?;
    let items = rows
        .iter()
        .map(decode_order)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page_of(items, limit, |o| {
        (o.created_at.as_i64(), o.id.as_str().to_owned())
    }))
}

/// The query behind [`list_orders`] and its clamped page size (for the
/// query-plan tests too).
pub(crate) fn list_orders_sql(
    tenant: &TenantId,
    filter: &OrderFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(SqlBuf, u32), LedgerError> {
    let mut q = SqlBuf::new(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = "
    ));
    let p = q.arg(Arg::Text(tenant.as_str().to_owned()));
    q.push(&p);
    let mut eq = |column: &str, value: Option<&str>| {
        if let Some(value) = value {
            let p = q.arg(Arg::Text(value.to_owned()));
            q.push(&format!(" AND {column} = {p}"));
        }
    };
    eq("status", filter.status.as_ref().map(|s| s.as_str()));
    eq("kind", filter.kind.as_ref().map(|k| k.as_str()));
    eq("currency", filter.currency.as_ref().map(|c| c.as_str()));
    if let Some(from) = filter.created_from {
        let p = q.arg(Arg::Int(from.as_i64()));
        q.push(&format!(" AND created_at >= {p}"));
    }
    if let Some(before) = filter.created_before {
        let p = q.arg(Arg::Int(before.as_i64()));
        q.push(&format!(" AND created_at < {p}"));
    }
    let limit = q
        .newest_first_page(cursor, limit)
        .map_err(|_| LedgerError::InvalidCursor)?;
    Ok((q, limit))
}

/// The order a gateway payment reference belongs to (webhooks arrive with
/// the gateway's reference, not ours).
pub async fn find_order_by_gateway_reference(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
    reference: &GatewayRef,
) -> Result<Option<Order>, LedgerError> {
    let row = sqlx::query(&order_by_gateway_reference_sql())
        .bind(tenant.as_str())
        .bind(provider.as_str())
        .bind(reference.as_str())
        .fetch_optional(store.pool())
        .await?;
    Ok(row.as_ref().map(decode_order).transpose()?)
}

/// The order with this id, whichever tenant owns it (order ids are unique
/// across tenants): for the operator API, which is not tenant-scoped.
pub async fn find_order_any_tenant(
    store: &Store,
    id: &OrderId,
) -> Result<Option<Order>, LedgerError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id.as_str())
        .fetch_optional(store.pool())
        .await?;
    Ok(row.as_ref().map(decode_order).transpose()?)
}

/// The client's `Idempotency-Key` a checkout order was stored under, if any.
pub async fn checkout_key_of(
    store: &Store,
    tenant: &TenantId,
    id: &OrderId,
) -> Result<Option<String>, LedgerError> {
    let row = sqlx::query("SELECT checkout_key FROM orders WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(store.pool())
        .await?;
    match row {
        Some(row) => Ok(get_opt_text(&row, "checkout_key")?),
        None => Err(LedgerError::OrderNotFound),
    }
}

/// The gateway account (credentials fingerprint) a checkout order's first
/// call went to, if recorded.
pub async fn gateway_account_of(
    store: &Store,
    tenant: &TenantId,
    id: &OrderId,
) -> Result<Option<String>, LedgerError> {
    let row = sqlx::query("SELECT gateway_account FROM orders WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(store.pool())
        .await?;
    match row {
        Some(row) => Ok(get_opt_text(&row, "gateway_account")?),
        None => Err(LedgerError::OrderNotFound),
    }
}

/// Whether another of the tenant's orders under the same checkout key as
/// `id` was created since it (its stored answer is then that order's).
pub async fn newer_order_under_checkout_key(
    store: &Store,
    tenant: &TenantId,
    id: &OrderId,
) -> Result<bool, LedgerError> {
    let newer: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders o, orders this \
          WHERE this.tenant_id = $1 AND this.id = $2 \
            AND o.tenant_id = $1 AND o.checkout_key = this.checkout_key \
            AND (o.created_at > this.created_at \
                 OR (o.created_at = this.created_at AND o.id > this.id))",
    )
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_one(store.pool())
    .await?;
    Ok(newer > 0)
}

/// How many of `tenant`'s orders under the checkout key `key` are canceled.
/// A canceled order charged nothing, so a new checkout under the same key
/// starts afresh; this count makes its gateway idempotency key differ from
/// the canceled attempts' (the gateway would replay their answer otherwise).
pub async fn canceled_orders_for_checkout_key(
    store: &Store,
    tenant: &TenantId,
    key: &str,
) -> Result<i64, LedgerError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM orders \
          WHERE tenant_id = $1 AND checkout_key = $2 AND status = 'canceled'",
    )
    .bind(tenant.as_str())
    .bind(key)
    .fetch_one(store.pool())
    .await?;
    Ok(get_i64(&row, "n")?)
}
