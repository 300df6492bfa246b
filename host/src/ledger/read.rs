//! Reading the ledger: single rows, an order's rows, filtered listings with
//! keyset pagination and refund headroom (balances: [`super::projection`]). Every read is
//! tenant-scoped: another tenant's id simply is not found.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::{Entitlement, EntryKind, EntryStatus, GatewayRef, LedgerError, Source};
use crate::store::{
    Arg, Currency, Money, OrderId, Page, PaymentId, ProviderId, SqlBuf, Store, StoreError,
    TenantId, UnixMillis, get_i64, get_opt_parsed, get_parsed, get_time, page_of,
};

/// One ledger row. Immutable once booked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    /// Its id (`pay_…`).
    pub id: PaymentId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The order it belongs to (same tenant).
    pub order_id: OrderId,
    /// Product, shipping or refund.
    pub kind: EntryKind,
    /// Approved, pending or refunded.
    pub status: EntryStatus,
    /// Always positive; a refund's amount is money returned.
    pub amount: Money,
    /// The gateway; `None` for manual, bulk and external bookings.
    pub provider: Option<ProviderId>,
    /// The gateway's payment reference; on a refund row, the refund's own
    /// reference (`re_…`), the payment being `refund_of`.
    pub gateway_reference: Option<GatewayRef>,
    /// For refund rows: the payment row refunded.
    pub refund_of: Option<PaymentId>,
    /// The user plan a product row grants; `None` for shipping and refund rows.
    pub entitlement: Option<Entitlement>,
    /// Which path booked it.
    pub source: Source,
    /// The gateway event id or refund reference that makes this booking
    /// unique per (tenant, provider); `None` when there is none.
    pub external_ref: Option<GatewayRef>,
    /// When it was booked.
    pub created_at: UnixMillis,
}

pub(super) const ROW_COLUMNS: &str = "id, tenant_id, order_id, kind, status, amount_minor, currency, \
     provider, gateway_reference, refund_of, entitlement, source, external_ref, created_at";

pub(super) fn decode_row(row: &AnyRow) -> Result<LedgerRow, StoreError> {
    let currency = get_parsed(row, "currency", Currency::parse)?;
    Ok(LedgerRow {
        id: get_parsed(row, "id", PaymentId::parse)?,
        tenant_id: get_parsed(row, "tenant_id", TenantId::parse)?,
        order_id: get_parsed(row, "order_id", OrderId::parse)?,
        kind: get_parsed(row, "kind", EntryKind::parse)?,
        status: get_parsed(row, "status", EntryStatus::parse)?,
        amount: Money::new(get_i64(row, "amount_minor")?, currency),
        provider: get_opt_parsed(row, "provider", ProviderId::parse)?,
        gateway_reference: get_opt_parsed(row, "gateway_reference", GatewayRef::parse)?,
        refund_of: get_opt_parsed(row, "refund_of", PaymentId::parse)?,
        entitlement: get_opt_parsed(row, "entitlement", Entitlement::parse)?,
        source: get_parsed(row, "source", Source::parse)?,
        external_ref: get_opt_parsed(row, "external_ref", GatewayRef::parse)?,
        created_at: get_time(row, "created_at")?,
    })
}

/// [`payment`]'s query: `$1` tenant, `$2` id.
pub(crate) fn payment_sql() -> String {
    format!("SELECT {ROW_COLUMNS} FROM payments WHERE tenant_id = $1 AND id = $2")
}

/// [`rows_for_order`]'s query: `$1` tenant, `$2` order.
pub(crate) fn rows_for_order_sql() -> String {
    format!(
        "SELECT {ROW_COLUMNS} FROM payments WHERE tenant_id = $1 AND order_id = $2 \
         ORDER BY created_at, id"
    )
}

/// [`find_external_in`]'s query: `$1` tenant, `$2` provider or '', `$3`
/// reference. The same expression as the unique index.
pub(crate) const FIND_EXTERNAL_SQL: &str = "SELECT id FROM payments \
      WHERE tenant_id = $1 AND COALESCE(provider, '') = $2 AND external_ref = $3";

/// The row, if it exists and belongs to `tenant`.
pub async fn payment(
    store: &Store,
    tenant: &TenantId,
    id: &PaymentId,
) -> Result<Option<LedgerRow>, LedgerError> {
    let row = sqlx::query(&payment_sql())
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(store.pool())
        .await?;
    Ok(row.as_ref().map(decode_row).transpose()?)
}

/// Every row of one of `tenant`'s orders, oldest first (the order's history).
pub async fn rows_for_order(
    store: &Store,
    tenant: &TenantId,
    order: &OrderId,
) -> Result<Vec<LedgerRow>, LedgerError> {
    let rows = sqlx::query(&rows_for_order_sql())
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_all(store.pool())
        .await?;
    Ok(rows.iter().map(decode_row).collect::<Result<_, _>>()?)
}

/// The row that booked a gateway event id / refund reference, if any.
/// `provider = None` looks among manual rows.
pub async fn find_by_external_ref(
    store: &Store,
    tenant: &TenantId,
    provider: Option<&ProviderId>,
    external_ref: &GatewayRef,
) -> Result<Option<LedgerRow>, LedgerError> {
    // The connection goes back before `payment` takes one: holding it
    // while acquiring another deadlocks a busy pool.
    let id = {
        let mut conn = store.pool().acquire().await.map_err(StoreError::from)?;
        find_external_in(&mut conn, tenant, provider, external_ref).await?
    };
    match id {
        Some(id) => payment(store, tenant, &id).await,
        None => Ok(None),
    }
}

/// Id of the row holding (`tenant`, `provider`, `external_ref`). Uses the same
/// expression as the unique index, so it is one index probe.
pub(super) async fn find_external_in(
    conn: &mut sqlx::AnyConnection,
    tenant: &TenantId,
    provider: Option<&ProviderId>,
    external_ref: &GatewayRef,
) -> Result<Option<PaymentId>, LedgerError> {
    let row = sqlx::query(FIND_EXTERNAL_SQL)
        .bind(tenant.as_str())
        .bind(provider.map(ProviderId::as_str).unwrap_or(""))
        .bind(external_ref.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(row
        .as_ref()
        .map(|r| get_parsed(r, "id", PaymentId::parse))
        .transpose()?)
}

/// Filters for [`list_payments`]; every `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentFilter {
    /// Only rows of this order.
    pub order_id: Option<OrderId>,
    /// Only rows of this kind.
    pub kind: Option<EntryKind>,
    /// Only rows with this status.
    pub status: Option<EntryStatus>,
    /// Only rows in this currency.
    pub currency: Option<Currency>,
    /// Only rows booked through this gateway.
    pub provider: Option<ProviderId>,
    /// Only rows created at or after this time.
    pub created_from: Option<UnixMillis>,
    /// Only rows created strictly before this time.
    pub created_before: Option<UnixMillis>,
}

/// The query behind [`list_payments`] and its clamped page size (for the
/// query-plan tests too).
pub(crate) fn list_payments_sql(
    tenant: &TenantId,
    filter: &PaymentFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(SqlBuf, u32), LedgerError> {
    let mut q = SqlBuf::new(&format!(
        "SELECT {ROW_COLUMNS} FROM payments WHERE tenant_id = "
    ));
    let p = q.arg(Arg::Text(tenant.as_str().to_owned()));
    q.push(&p);
    let eq = |q: &mut SqlBuf, column: &str, value: Arg| {
        let p = q.arg(value);
        q.push(&format!(" AND {column} = {p}"));
    };
    if let Some(order) = &filter.order_id {
        eq(&mut q, "order_id", Arg::Text(order.as_str().to_owned()));
    }
    if let Some(kind) = filter.kind {
        eq(&mut q, "kind", Arg::Text(kind.as_str().to_owned()));
    }
    if let Some(status) = filter.status {
        eq(&mut q, "status", Arg::Text(status.as_str().to_owned()));
    }
    if let Some(currency) = filter.currency {
        eq(&mut q, "currency", Arg::Text(currency.as_str().to_owned()));
    }
    if let Some(provider) = &filter.provider {
        eq(&mut q, "provider", Arg::Text(provider.as_str().to_owned()));
    }
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

/// `tenant`'s rows matching `filter`, newest first, `limit` per page
/// (clamped to 1..=[`MAX_PAGE_SIZE`]). Pass the previous page's
/// `next_cursor` to continue; pages never skip or repeat a row, because the
/// order is the total order (created_at, id) and the cursor is the last row's key.
pub async fn list_payments(
    store: &Store,
    tenant: &TenantId,
    filter: &PaymentFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<LedgerRow>, LedgerError> {
    let (q, limit) = list_payments_sql(tenant, filter, cursor, limit)?;
    let rows = q.query().fetch_all(store.pool()).await?;
    let items = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
    Ok(page_of(items, limit, |r| {
        (r.created_at.as_i64(), r.id.as_str().to_owned())
    }))
}

/// How much of one approved payment is refunded, held for in-flight refunds,
/// and still refundable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundSummary {
    /// The payment row.
    pub payment_id: PaymentId,
    /// Its amount.
    pub paid: Money,
    /// Sum of its refund rows.
    pub refunded: Money,
    /// Held by unfinished reservations.
    pub reserved: Money,
    /// `paid - refunded - reserved`: the most a new refund may take.
    pub remaining: Money,
}

/// Refund headroom of an approved payment; `None` if `tenant` has no such
/// approved payment.
pub async fn refund_summary(
    store: &Store,
    tenant: &TenantId,
    id: &PaymentId,
) -> Result<Option<RefundSummary>, LedgerError> {
    let row = sqlx::query(
        "SELECT currency, paid, refunded, reserved FROM refund_totals \
          WHERE payment_id = $1 AND tenant_id = $2",
    )
    .bind(id.as_str())
    .bind(tenant.as_str())
    .fetch_optional(store.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(summary_from(id.clone(), &row)?))
}

pub(super) fn summary_from(
    payment_id: PaymentId,
    row: &AnyRow,
) -> Result<RefundSummary, StoreError> {
    let currency = get_parsed(row, "currency", Currency::parse)?;
    let paid = get_i64(row, "paid")?;
    let refunded = get_i64(row, "refunded")?;
    let reserved = get_i64(row, "reserved")?;
    Ok(RefundSummary {
        payment_id,
        paid: Money::new(paid, currency),
        refunded: Money::new(refunded, currency),
        reserved: Money::new(reserved, currency),
        remaining: Money::new(paid - refunded - reserved, currency),
    })
}
