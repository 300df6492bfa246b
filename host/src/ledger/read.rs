//! Reading the ledger: single rows, an order's rows, filtered listings with
//! keyset pagination, balances and refund headroom. Every read is
//! tenant-scoped: another tenant's id simply is not found.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::{Entitlement, EntryKind, EntryStatus, GatewayRef, LedgerError, Source};
use crate::store::{
    Arg, Currency, Keyset, MAX_PAGE_SIZE, Money, OrderId, Page, PaymentId, ProviderId, SqlBuf,
    Store, StoreError, TenantId, UnixMillis, get_i64, get_opt_parsed, get_parsed, get_time,
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

/// The row, if it exists and belongs to `tenant`.
pub async fn payment(
    store: &Store,
    tenant: &TenantId,
    id: &PaymentId,
) -> Result<Option<LedgerRow>, LedgerError> {
    let sql = format!("SELECT {ROW_COLUMNS} FROM payments WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(&sql)
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
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM payments WHERE tenant_id = $1 AND order_id = $2 \
         ORDER BY created_at, id"
    );
    let rows = sqlx::query(&sql)
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
    let row = sqlx::query(
        "SELECT id FROM payments \
          WHERE tenant_id = $1 AND COALESCE(provider, '') = $2 AND external_ref = $3",
    )
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
    let limit = limit.clamp(1, MAX_PAGE_SIZE);
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
    if let Some(cursor) = cursor {
        Keyset::decode(cursor)
            .ok_or(LedgerError::InvalidCursor)?
            .push_older(&mut q);
    }
    Keyset::push_order_limit(&mut q, limit);

    let rows = q.query().fetch_all(store.pool()).await?;
    let items = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
    Ok(Keyset::page(items, limit, |r| Keyset {
        created_at: r.created_at.as_i64(),
        id: r.id.as_str().to_owned(),
    }))
}

/// Money per currency, computed from the rows (never stored).
///
/// The sums are `i128`: a balance is a sum over any number of rows and must
/// never overflow, whatever was booked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// The currency of the three amounts.
    pub currency: Currency,
    /// Sum of approved rows, minor units.
    pub paid: i128,
    /// Sum of refund rows, minor units.
    pub refunded: i128,
    /// `paid - refunded`, minor units.
    pub net: i128,
}

/// Rows' amounts are summed in two parts, `amount / SPLIT` and
/// `amount % SPLIT`, each of which stays far inside `i64` for any realistic
/// row count (SQLite's `SUM` fails on overflow; PostgreSQL's would need a
/// `NUMERIC` that the `Any` driver cannot decode), and recombined as `i128`.
const SPLIT: i64 = 1_000_000;

/// `tenant`'s balance in each currency it has approved or refunded rows in,
/// sorted by currency. Pending rows count towards nothing.
pub async fn balances(store: &Store, tenant: &TenantId) -> Result<Vec<Balance>, LedgerError> {
    let part = |status: &str, op: &str| {
        format!(
            "CAST(COALESCE(SUM(CASE WHEN status = '{status}' THEN amount_minor {op} {SPLIT} ELSE 0 END), 0) AS BIGINT)"
        )
    };
    let sql = format!(
        "SELECT currency, {} AS paid_high, {} AS paid_low, {} AS refunded_high, {} AS refunded_low \
           FROM payments \
          WHERE tenant_id = $1 AND status IN ('approved', 'refunded') \
          GROUP BY currency ORDER BY currency",
        part("approved", "/"),
        part("approved", "%"),
        part("refunded", "/"),
        part("refunded", "%"),
    );
    let rows = sqlx::query(&sql)
        .bind(tenant.as_str())
        .fetch_all(store.pool())
        .await?;
    let sum = |row: &AnyRow, high: &'static str, low: &'static str| -> Result<i128, StoreError> {
        Ok(i128::from(get_i64(row, high)?) * i128::from(SPLIT) + i128::from(get_i64(row, low)?))
    };
    rows.iter()
        .map(|row| {
            let currency = get_parsed(row, "currency", Currency::parse)?;
            let paid = sum(row, "paid_high", "paid_low")?;
            let refunded = sum(row, "refunded_high", "refunded_low")?;
            Ok(Balance {
                currency,
                paid,
                refunded,
                net: paid - refunded,
            })
        })
        .collect()
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
