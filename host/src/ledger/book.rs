//! Booking: the only code that inserts ledger rows for orders (products and
//! shipping, e.g. a paid checkout). Refund rows are inserted only by
//! [`super::refunds`], which shares [`insert_row`] and [`insert_error`].

use super::{
    Entitlement, EntryKind, EntryStatus, GatewayRef, LedgerError, LedgerRow, Order, OrderStatus,
    Source,
};
use crate::store::{
    Arg, Currency, MAX_LINE_MINOR, Money, OrderId, PaymentId, ProviderId, SqlBuf, Store,
    StoreError, TenantId, UnixMillis, Violation, WriteTx, get_parsed,
};

/// A row to book for an order. Construct with [`NewLedgerRow::product`] or
/// [`NewLedgerRow::shipping`]; refunds are booked only through the refund
/// functions, so a caller cannot build an inconsistent refund row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLedgerRow {
    kind: EntryKind,
    status: EntryStatus,
    amount: Money,
    entitlement: Option<Entitlement>,
    provider: Option<ProviderId>,
    gateway_reference: Option<GatewayRef>,
    source: Source,
    external_ref: Option<GatewayRef>,
}

impl NewLedgerRow {
    /// An approved product row, granting `entitlement` if given.
    pub fn product(amount: Money, entitlement: Option<Entitlement>, source: Source) -> Self {
        Self {
            kind: EntryKind::Product,
            status: EntryStatus::Approved,
            amount,
            entitlement,
            provider: None,
            gateway_reference: None,
            source,
            external_ref: None,
        }
    }

    /// An approved shipping (carrier cost) row; it never grants an entitlement.
    pub fn shipping(amount: Money, source: Source) -> Self {
        Self {
            kind: EntryKind::Shipping,
            status: EntryStatus::Approved,
            amount,
            entitlement: None,
            provider: None,
            gateway_reference: None,
            source,
            external_ref: None,
        }
    }

    /// Marks the row pending (authorised, awaiting the gateway). Pending rows
    /// count in no balance and cannot be refunded.
    pub fn pending(mut self) -> Self {
        self.status = EntryStatus::Pending;
        self
    }

    /// The gateway that took the money and its payment reference.
    /// Without this the row is a manual/bulk/external booking (`provider` NULL).
    pub fn via_gateway(
        mut self,
        provider: ProviderId,
        gateway_reference: Option<GatewayRef>,
    ) -> Self {
        self.provider = Some(provider);
        self.gateway_reference = gateway_reference;
        self
    }

    /// The gateway event id that caused this booking; booking the same
    /// (tenant, provider, external_ref) again fails with
    /// [`LedgerError::Duplicate`]. In a multi-row booking put it on one row
    /// (the booking is atomic, so that row dedupes the whole booking).
    pub fn with_external_ref(mut self, external_ref: GatewayRef) -> Self {
        self.external_ref = Some(external_ref);
        self
    }

    /// Product or shipping.
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// The row's amount.
    pub fn amount(&self) -> Money {
        self.amount
    }
}

pub(super) async fn insert_row(tx: &mut WriteTx, row: &LedgerRow) -> Result<(), sqlx::Error> {
    insert_rows(tx, std::slice::from_ref(row)).await
}

/// Columns of one `payments` insert, in bind order.
const INSERT_COLUMNS: usize = 14;

/// Inserts `rows` with one multi-row `INSERT` (one round trip).
async fn insert_rows(tx: &mut WriteTx, rows: &[LedgerRow]) -> Result<(), sqlx::Error> {
    insert_rows_sql(rows).query().execute(tx.conn()).await?;
    Ok(())
}

/// The multi-row `INSERT` that stores `rows`.
fn insert_rows_sql(rows: &[LedgerRow]) -> SqlBuf {
    let mut args = Vec::with_capacity(rows.len() * INSERT_COLUMNS);
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        let first = args.len();
        args.extend([
            Arg::Text(row.id.to_string()),
            Arg::Text(row.tenant_id.to_string()),
            Arg::Text(row.order_id.to_string()),
            Arg::Text(row.kind.as_str().to_owned()),
            Arg::Text(row.status.as_str().to_owned()),
            Arg::Int(row.amount.minor),
            Arg::Text(row.amount.currency.as_str().to_owned()),
            Arg::opt_text(row.provider.as_ref().map(ProviderId::as_str)),
            Arg::opt_text(row.gateway_reference.as_ref().map(GatewayRef::as_str)),
            Arg::opt_text(row.refund_of.as_ref().map(PaymentId::as_str)),
            Arg::opt_text(row.entitlement.as_ref().map(Entitlement::as_str)),
            Arg::Text(row.source.as_str().to_owned()),
            Arg::opt_text(row.external_ref.as_ref().map(GatewayRef::as_str)),
            Arg::Int(row.created_at.as_i64()),
        ]);
        let params: Vec<String> = (first + 1..=args.len()).map(|n| format!("${n}")).collect();
        values.push(format!("({})", params.join(", ")));
    }
    SqlBuf::bound(
        format!(
            "INSERT INTO payments (id, tenant_id, order_id, kind, status, amount_minor, currency, \
                 provider, gateway_reference, refund_of, entitlement, source, external_ref, created_at) \
             VALUES {}",
            values.join(", ")
        ),
        args,
    )
}

/// Turns an insert failure into the ledger outcome it stands for.
pub(super) fn insert_error(err: StoreError, remaining: Option<Money>) -> LedgerError {
    match err.violation() {
        Some(Violation::Unique { .. }) => LedgerError::Duplicate { existing: None },
        Some(Violation::Check { constraint })
            if constraint
                .as_deref()
                .is_some_and(|c| c.contains("refund_totals_within_paid")) =>
        {
            match remaining {
                Some(remaining) => LedgerError::RefundExceedsPaid { remaining },
                None => LedgerError::Store(err),
            }
        }
        Some(v @ Violation::Trigger { .. }) if v.mentions("amount_bound") => LedgerError::Invalid(
            format!("amount exceeds the maximum of {MAX_LINE_MINOR} minor units per ledger row"),
        ),
        Some(Violation::Trigger { .. }) => LedgerError::NotRefundable {
            reason: "a refund must reference an approved payment of the same tenant and currency",
        },
        Some(Violation::ForeignKey { .. }) => LedgerError::OrderNotFound,
        _ => LedgerError::Store(err),
    }
}

/// A paid checkout, booked in one commit: the order moves from `pending` or
/// `requires_action` to `paid` with its gateway and payment reference, and
/// `rows` are booked for it. Returns the order as it now is and the rows.
///
/// On an SQLite file this is a single job on the dedicated writer (one hop,
/// group-committed under load); elsewhere a write transaction of two
/// statements.
///
/// `order` must be the order as stored (e.g. as [`create_order`] returned
/// it): on the writer path the returned order is `order` with the four
/// columns the `UPDATE` sets, not a re-read.
///
/// [`create_order`]: super::create_order
pub async fn book_paid_checkout(
    store: &Store,
    order: &Order,
    provider: &ProviderId,
    gateway_reference: &GatewayRef,
    rows: &[NewLedgerRow],
) -> Result<(Order, Vec<LedgerRow>), LedgerError> {
    const FROM: [OrderStatus; 2] = [OrderStatus::Pending, OrderStatus::RequiresAction];
    book_paid_checkout_from(store, order, provider, gateway_reference, rows, &FROM).await
}

/// [`book_paid_checkout`] from any of the statuses in `from`: the webhook
/// worker books a gateway's `payment succeeded` also on an order an earlier
/// (out-of-order) event marked declined or canceled, because the money
/// moved. The rows' unique references still book each line once.
pub async fn book_paid_checkout_from(
    store: &Store,
    order: &Order,
    provider: &ProviderId,
    gateway_reference: &GatewayRef,
    rows: &[NewLedgerRow],
    from: &[OrderStatus],
) -> Result<(Order, Vec<LedgerRow>), LedgerError> {
    let from = from.to_vec();
    let tenant = &order.tenant_id;
    let booked = rows_to_book(tenant, &order.id, order.amount.currency, rows)?;
    let Some(writer) = store.sqlite_writer() else {
        let mut tx = store.begin_write().await?;
        let paid = super::transition_routed_order_in(
            &mut tx,
            tenant,
            &order.id,
            &from,
            OrderStatus::Paid,
            provider,
            gateway_reference,
        )
        .await?;
        insert_rows(&mut tx, &booked)
            .await
            .map_err(|e| insert_error(e.into(), None))?;
        tx.commit().await?;
        return Ok((paid, booked));
    };
    let now = UnixMillis::now();
    let update = super::orders::transition_sql(
        tenant,
        &order.id,
        &from,
        OrderStatus::Paid,
        Some((provider, gateway_reference)),
        now,
        false,
    )?;
    let insert = insert_rows_sql(&booked);
    let (tenant_id, order_id) = (tenant.clone(), order.id.clone());
    writer
        .run(move |conn| {
            let changed = update
                .execute_sqlite(conn)
                .map_err(|e| super::orders::routing_error(e.into()))?;
            if changed == 0 {
                return Err(super::orders::transition_refused_sqlite(
                    conn, &tenant_id, &order_id,
                ));
            }
            insert
                .execute_sqlite(conn)
                .map_err(|e| insert_error(e.into(), None))?;
            Ok(())
        })
        .await?;
    // Exactly what the UPDATE wrote; every other column of an order is
    // never updated.
    let paid = Order {
        status: OrderStatus::Paid,
        provider: Some(provider.clone()),
        gateway_reference: Some(gateway_reference.clone()),
        updated_at: now,
        ..order.clone()
    };
    Ok((paid, booked))
}

/// Books several rows for one of `tenant`'s orders atomically (e.g. product
/// and shipping): all are stored, or none. Every row must be in the order's
/// currency and have a positive amount.
pub async fn book_order_rows(
    store: &Store,
    tenant: &TenantId,
    order: &OrderId,
    rows: &[NewLedgerRow],
) -> Result<Vec<LedgerRow>, LedgerError> {
    let mut tx = store.begin_write().await?;
    match book_order_rows_in(&mut tx, tenant, order, rows).await {
        Ok(booked) => {
            tx.commit().await?;
            Ok(booked)
        }
        Err(LedgerError::Duplicate { existing: None }) => {
            // Lost a race with a concurrent booking of the same reference:
            // name the row that won.
            tx.rollback().await?;
            let mut existing = None;
            for row in rows {
                if let Some(external_ref) = &row.external_ref
                    && let Some(found) = super::find_by_external_ref(
                        store,
                        tenant,
                        row.provider.as_ref(),
                        external_ref,
                    )
                    .await?
                {
                    existing = Some(found.id);
                    break;
                }
            }
            Err(LedgerError::Duplicate { existing })
        }
        Err(e) => Err(e),
    }
}

/// [`book_order_rows`] inside the caller's transaction (e.g. with the order's
/// status change). On error the caller must roll back (drop the transaction).
/// A reference already booked fails with `Duplicate { existing: None }` (the
/// unique index decides; [`book_order_rows`] names the winner afterwards).
pub async fn book_order_rows_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    order: &OrderId,
    rows: &[NewLedgerRow],
) -> Result<Vec<LedgerRow>, LedgerError> {
    let order_row = sqlx::query("SELECT currency FROM orders WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(LedgerError::OrderNotFound)?;
    let currency = get_parsed(&order_row, "currency", Currency::parse)?;
    book_rows_of_in(tx, tenant, order, currency, rows).await
}

/// [`book_order_rows_in`] for an order the caller read (or updated) in the
/// same transaction, so its currency is known: one round trip for all rows.
pub async fn book_rows_of_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    order: &OrderId,
    currency: Currency,
    rows: &[NewLedgerRow],
) -> Result<Vec<LedgerRow>, LedgerError> {
    let booked = rows_to_book(tenant, order, currency, rows)?;
    insert_rows(tx, &booked)
        .await
        .map_err(|e| insert_error(e.into(), None))?;
    Ok(booked)
}

/// Validates `rows` for an order in `currency` and gives each its id and time.
fn rows_to_book(
    tenant: &TenantId,
    order: &OrderId,
    currency: Currency,
    rows: &[NewLedgerRow],
) -> Result<Vec<LedgerRow>, LedgerError> {
    if rows.is_empty() {
        return Err(LedgerError::Invalid("nothing to book".into()));
    }
    for row in rows {
        if row.amount.minor <= 0 {
            return Err(LedgerError::Invalid(format!(
                "ledger amounts must be positive, got {}",
                row.amount.minor
            )));
        }
        if row.amount.currency != currency {
            return Err(LedgerError::CurrencyMismatch {
                expected: currency,
                got: row.amount.currency,
            });
        }
    }
    let now = UnixMillis::now();
    Ok(rows
        .iter()
        .map(|row| LedgerRow {
            id: PaymentId::generate(),
            tenant_id: tenant.clone(),
            order_id: order.clone(),
            kind: row.kind,
            status: row.status,
            amount: row.amount,
            provider: row.provider.clone(),
            gateway_reference: row.gateway_reference.clone(),
            refund_of: None,
            entitlement: row.entitlement.clone(),
            source: row.source,
            external_ref: row.external_ref.clone(),
            created_at: now,
        })
        .collect())
}
