//! Booking: the only code that inserts ledger rows.
//!
//! # The refund guarantee
//!
//! Every approved payment has one `refund_totals` row `(paid, refunded,
//! reserved)` with `CHECK (refunded + reserved <= paid)`. Database triggers —
//! not this code — add each refund row's amount to `refunded` and each
//! reservation's amount to `reserved` (and subtract it when the reservation is
//! deleted). So however a refund row gets in, the total can never exceed what
//! was paid: the statement that would break it fails and its transaction rolls back.
//!
//! Concurrency: the refund paths below first "touch" the payment's
//! `refund_totals` row (`UPDATE … SET reserved = reserved`). On PostgreSQL that
//! takes the row lock, so concurrent refunds of one payment queue up and each
//! reads the totals its predecessor committed (READ COMMITTED re-reads per
//! statement). On SQLite the transaction already holds the database write lock
//! (`BEGIN IMMEDIATE`). Either way the remaining amount computed inside the
//! transaction is exact, so the error is a precise
//! [`LedgerError::RefundExceedsPaid`] rather than a constraint failure; the
//! CHECK stays as the backstop.
//!
//! # Refunding through a gateway
//!
//! [`reserve_refund`] holds the amount (it counts against what remains) before
//! the gateway call; [`complete_refund`] turns the hold into a refund row in one
//! transaction; [`release_refund`] drops the hold when the gateway refused.
//! Two concurrent API refunds that do not both fit can therefore never both
//! reach the gateway. Manual refunds and webhook-reported refunds use
//! [`book_refund`] directly.

use super::read::{decode_row, find_external_in, summary_from};
use super::{
    Entitlement, EntryKind, EntryStatus, GatewayRef, LedgerError, LedgerRow, Order, OrderStatus,
    RefundSummary, Source,
};
use crate::store::{
    Arg, Currency, MAX_LINE_MINOR, Money, OrderId, PaymentId, ProviderId, RefundReservationId,
    SqlBuf, Store, StoreError, TenantId, UnixMillis, Violation, WriteTx, get_i64, get_opt_parsed,
    get_parsed, get_time,
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

/// A refund amount held against a payment while the gateway is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReservation {
    /// Its id (`rsv_…`); also a good idempotency key for the gateway refund call.
    pub id: RefundReservationId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The payment being refunded.
    pub payment_id: PaymentId,
    /// The payment's order.
    pub order_id: OrderId,
    /// Amount held (the payment's currency).
    pub amount: Money,
    /// The gateway to refund through (`None`: a manual payment).
    pub provider: Option<ProviderId>,
    /// The gateway's payment reference to refund.
    pub gateway_reference: Option<GatewayRef>,
    /// The gateway's refund reference once it accepted the refund as
    /// pending ([`mark_refund_pending`]); `None` while the call's outcome
    /// is unknown.
    pub gateway_refund_reference: Option<GatewayRef>,
    /// When the hold was taken.
    pub created_at: UnixMillis,
}

async fn insert_row(tx: &mut WriteTx, row: &LedgerRow) -> Result<(), sqlx::Error> {
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
fn insert_error(err: StoreError, remaining: Option<Money>) -> LedgerError {
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
    let tenant = &order.tenant_id;
    let booked = rows_to_book(tenant, &order.id, order.amount.currency, rows)?;
    let Some(writer) = store.sqlite_writer() else {
        let mut tx = store.begin_write().await?;
        let paid = super::transition_routed_order_in(
            &mut tx,
            tenant,
            &order.id,
            &FROM,
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
        &FROM,
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

/// The payment being refunded, with its totals read under the refund lock.
struct Target {
    payment: LedgerRow,
    totals: RefundSummary,
}

/// Locks `payment`'s refund totals for the rest of `tx` and reads them.
async fn lock_target(
    tx: &mut WriteTx,
    tenant: &TenantId,
    payment: &PaymentId,
) -> Result<Target, LedgerError> {
    let touched = sqlx::query(
        "UPDATE refund_totals SET reserved = reserved WHERE payment_id = $1 AND tenant_id = $2",
    )
    .bind(payment.as_str())
    .bind(tenant.as_str())
    .execute(tx.conn())
    .await?;

    let sql = format!(
        "SELECT {} FROM payments WHERE tenant_id = $1 AND id = $2",
        super::read::ROW_COLUMNS
    );
    let original = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(payment.as_str())
        .fetch_optional(tx.conn())
        .await?
        .ok_or(LedgerError::PaymentNotFound)?;
    let original = decode_row(&original)?;

    if touched.rows_affected() == 0 {
        return Err(LedgerError::NotRefundable {
            reason: if original.kind == EntryKind::Refund {
                "a refund cannot be refunded"
            } else {
                "only approved payments can be refunded"
            },
        });
    }
    let totals = sqlx::query(
        "SELECT currency, paid, refunded, reserved FROM refund_totals WHERE payment_id = $1",
    )
    .bind(payment.as_str())
    .fetch_one(tx.conn())
    .await?;
    Ok(Target {
        totals: summary_from(payment.clone(), &totals)?,
        payment: original,
    })
}

/// The amount to refund: `requested`, or everything that remains.
fn choose_amount(target: &Target, requested: Option<i64>) -> Result<Money, LedgerError> {
    let remaining = target.totals.remaining;
    match requested {
        Some(minor) if minor <= 0 => Err(LedgerError::Invalid(format!(
            "refund amount must be positive, got {minor}"
        ))),
        Some(minor) if minor > remaining.minor => Err(LedgerError::RefundExceedsPaid { remaining }),
        Some(minor) => Ok(Money::new(minor, remaining.currency)),
        None if remaining.minor <= 0 => Err(LedgerError::RefundExceedsPaid { remaining }),
        None => Ok(remaining),
    }
}

/// A refund row of `target`. Its `gateway_reference` is the refund's own
/// reference at the gateway (`re_…`), which webhook echoes and
/// reconciliation match on; the payment it refunds is `refund_of`. A refund
/// without a gateway reference (manual) has none.
fn refund_row(
    target: &Target,
    amount: Money,
    provider_ref: Option<&GatewayRef>,
    source: Source,
) -> LedgerRow {
    LedgerRow {
        id: PaymentId::generate(),
        tenant_id: target.payment.tenant_id.clone(),
        order_id: target.payment.order_id.clone(),
        kind: EntryKind::Refund,
        status: EntryStatus::Refunded,
        amount,
        provider: target.payment.provider.clone(),
        gateway_reference: provider_ref.cloned(),
        refund_of: Some(target.payment.id.clone()),
        entitlement: None,
        source,
        external_ref: provider_ref.cloned(),
        created_at: UnixMillis::now(),
    }
}

/// Books a refund of `payment` without a gateway call of ours (a manual refund,
/// or one the gateway reported by webhook). `amount` is in the payment's minor
/// units; `None` refunds everything that remains. `provider_ref` (the gateway's
/// refund reference) makes the booking idempotent: a second booking with it is
/// [`LedgerError::Duplicate`] naming the first row.
///
/// Guarantee: the sum of a payment's refunds never exceeds its amount, also
/// under concurrent calls on either backend (see the module docs).
pub async fn book_refund(
    store: &Store,
    tenant: &TenantId,
    payment: &PaymentId,
    amount: Option<i64>,
    provider_ref: Option<&GatewayRef>,
    source: Source,
) -> Result<LedgerRow, LedgerError> {
    let mut tx = store.begin_write().await?;
    let target = lock_target(&mut tx, tenant, payment).await?;
    if let Some(reference) = provider_ref
        && let Some(existing) = find_external_in(
            tx.conn(),
            tenant,
            target.payment.provider.as_ref(),
            reference,
        )
        .await?
    {
        return Err(LedgerError::Duplicate {
            existing: Some(existing),
        });
    }
    let amount = choose_amount(&target, amount)?;
    let row = refund_row(&target, amount, provider_ref, source);
    insert_row(&mut tx, &row)
        .await
        .map_err(|e| insert_error(e.into(), Some(target.totals.remaining)))?;
    tx.commit().await?;
    Ok(row)
}

/// Holds a refund amount of `payment` before calling the gateway: from now on
/// it counts against what remains, so a concurrent refund that would not fit
/// alongside it fails with [`LedgerError::RefundExceedsPaid`] before reaching
/// the gateway. `None` holds everything that remains. Follow with exactly one
/// of [`complete_refund`] or [`release_refund`].
pub async fn reserve_refund(
    store: &Store,
    tenant: &TenantId,
    payment: &PaymentId,
    amount: Option<i64>,
) -> Result<RefundReservation, LedgerError> {
    let mut tx = store.begin_write().await?;
    let target = lock_target(&mut tx, tenant, payment).await?;
    let amount = choose_amount(&target, amount)?;
    let reservation = RefundReservation {
        id: RefundReservationId::generate(),
        tenant_id: tenant.clone(),
        payment_id: payment.clone(),
        order_id: target.payment.order_id.clone(),
        amount,
        provider: target.payment.provider.clone(),
        gateway_reference: target.payment.gateway_reference.clone(),
        gateway_refund_reference: None,
        created_at: UnixMillis::now(),
    };
    sqlx::query(
        "INSERT INTO refund_reservations (id, tenant_id, payment_id, amount_minor, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(reservation.id.as_str())
    .bind(tenant.as_str())
    .bind(payment.as_str())
    .bind(amount.minor)
    .bind(reservation.created_at.as_i64())
    .execute(tx.conn())
    .await
    .map_err(|e| insert_error(e.into(), Some(target.totals.remaining)))?;
    tx.commit().await?;
    Ok(reservation)
}

/// Books the refund row for a reservation after the gateway accepted it, and
/// drops the hold, in one transaction. `provider_ref` is the gateway's refund
/// reference; if a webhook already booked it, the hold is released and
/// [`LedgerError::Duplicate`] names that row (the refund is booked once).
pub async fn complete_refund(
    store: &Store,
    tenant: &TenantId,
    reservation: &RefundReservationId,
    provider_ref: Option<&GatewayRef>,
    source: Source,
) -> Result<LedgerRow, LedgerError> {
    let mut tx = store.begin_write().await?;
    let held =
        sqlx::query("SELECT payment_id FROM refund_reservations WHERE id = $1 AND tenant_id = $2")
            .bind(reservation.as_str())
            .bind(tenant.as_str())
            .fetch_optional(tx.conn())
            .await?
            .ok_or(LedgerError::ReservationNotFound)?;
    let payment = get_parsed(&held, "payment_id", PaymentId::parse)?;
    let target = lock_target(&mut tx, tenant, &payment).await?;

    // Authoritative under the lock: a concurrent complete/release may have won.
    let deleted = sqlx::query(
        "DELETE FROM refund_reservations WHERE id = $1 AND tenant_id = $2 \
         RETURNING amount_minor",
    )
    .bind(reservation.as_str())
    .bind(tenant.as_str())
    .fetch_optional(tx.conn())
    .await?
    .ok_or(LedgerError::ReservationNotFound)?;
    let amount = Money::new(
        get_i64(&deleted, "amount_minor")?,
        target.totals.paid.currency,
    );

    if let Some(reference) = provider_ref
        && let Some(existing) = find_external_in(
            tx.conn(),
            tenant,
            target.payment.provider.as_ref(),
            reference,
        )
        .await?
    {
        if !is_refund_of(&mut tx, &existing, &payment).await? {
            // The reference belongs to another row (a payment line, a
            // refund of another payment): this refund is not booked, and
            // money moved, so the hold stays for reconciliation.
            tx.rollback().await?;
            return Err(foreign_reference(reference));
        }
        tx.commit().await?; // the echo of this refund: keep the release
        return Err(LedgerError::Duplicate {
            existing: Some(existing),
        });
    }
    let row = refund_row(&target, amount, provider_ref, source);
    match insert_row(&mut tx, &row).await {
        Ok(()) => {
            tx.commit().await?;
            Ok(row)
        }
        Err(e) => match insert_error(e.into(), Some(target.totals.remaining)) {
            LedgerError::Duplicate { .. } => {
                // A webhook booked the same reference between our check and
                // insert: keep its row and drop our hold, if it is this
                // refund's echo; otherwise the hold stays.
                tx.rollback().await?;
                let existing = match provider_ref {
                    Some(reference) => {
                        super::find_by_external_ref(store, tenant, row.provider.as_ref(), reference)
                            .await?
                    }
                    None => None,
                };
                if let (Some(found), Some(reference)) = (&existing, provider_ref)
                    && found.refund_of.as_ref() != Some(&payment)
                {
                    return Err(foreign_reference(reference));
                }
                release_refund(store, tenant, reservation).await?;
                Err(LedgerError::Duplicate {
                    existing: existing.map(|r| r.id),
                })
            }
            other => Err(other),
        },
    }
}

/// Whether row `id` is a refund of `payment` (so a gateway reference found on
/// it is an echo of the same refund, not another row's).
async fn is_refund_of(
    tx: &mut WriteTx,
    id: &PaymentId,
    payment: &PaymentId,
) -> Result<bool, LedgerError> {
    let row = sqlx::query("SELECT refund_of FROM payments WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(tx.conn())
        .await?;
    let refund_of = match &row {
        Some(row) => get_opt_parsed(row, "refund_of", PaymentId::parse)?,
        None => None,
    };
    Ok(refund_of.as_ref() == Some(payment))
}

fn foreign_reference(reference: &GatewayRef) -> LedgerError {
    LedgerError::Invalid(format!(
        "gateway refund reference {reference} is already booked on another ledger row; \
         the hold is kept for reconciliation"
    ))
}

/// Records that the gateway accepted the refund of `reservation` as pending,
/// under its refund reference. The hold stays: it keeps counting against
/// what remains until the gateway's later answer completes it
/// ([`complete_refund`]) or, if the refund failed, releases it.
pub async fn mark_refund_pending(
    store: &Store,
    tenant: &TenantId,
    reservation: &RefundReservationId,
    gateway_refund: &GatewayRef,
) -> Result<(), LedgerError> {
    let marked = sqlx::query(
        "UPDATE refund_reservations SET gateway_refund_reference = $3 \
          WHERE id = $1 AND tenant_id = $2",
    )
    .bind(reservation.as_str())
    .bind(tenant.as_str())
    .bind(gateway_refund.as_str())
    .execute(store.pool())
    .await?;
    if marked.rows_affected() == 0 {
        return Err(LedgerError::ReservationNotFound);
    }
    Ok(())
}

/// Reservations older than `cutoff`, across tenants, oldest first — for the
/// janitor. Two kinds, told apart by `gateway_refund_reference`:
/// - `None`: the process stopped between the gateway call and
///   [`complete_refund`], so the outcome is unknown;
/// - `Some`: the gateway accepted the refund as pending and has not
///   completed it yet.
///
/// Neither may be released without asking the gateway first: a hold whose
/// refund went through, released, would let the same amount be refunded
/// twice.
pub async fn stale_reservations(
    store: &Store,
    cutoff: UnixMillis,
) -> Result<Vec<RefundReservation>, LedgerError> {
    let rows = sqlx::query(
        "SELECT r.id AS id, r.tenant_id AS tenant_id, r.payment_id AS payment_id, \
                r.amount_minor AS amount_minor, r.created_at AS created_at, \
                r.gateway_refund_reference AS gateway_refund_reference, \
                p.order_id AS order_id, p.currency AS currency, p.provider AS provider, \
                p.gateway_reference AS gateway_reference \
           FROM refund_reservations r JOIN payments p ON p.id = r.payment_id \
          WHERE r.created_at < $1 ORDER BY r.created_at, r.id",
    )
    .bind(cutoff.as_i64())
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let currency = get_parsed(row, "currency", Currency::parse)?;
            Ok(RefundReservation {
                id: get_parsed(row, "id", RefundReservationId::parse)?,
                tenant_id: get_parsed(row, "tenant_id", TenantId::parse)?,
                payment_id: get_parsed(row, "payment_id", PaymentId::parse)?,
                order_id: get_parsed(row, "order_id", OrderId::parse)?,
                amount: Money::new(get_i64(row, "amount_minor")?, currency),
                provider: get_opt_parsed(row, "provider", ProviderId::parse)?,
                gateway_reference: get_opt_parsed(row, "gateway_reference", GatewayRef::parse)?,
                gateway_refund_reference: get_opt_parsed(
                    row,
                    "gateway_refund_reference",
                    GatewayRef::parse,
                )?,
                created_at: get_time(row, "created_at")?,
            })
        })
        .collect::<Result<_, crate::store::StoreError>>()
        .map_err(LedgerError::from)
}

/// Drops a hold after the gateway refused the refund (or was never called).
/// Returns `false` if the reservation no longer exists.
pub async fn release_refund(
    store: &Store,
    tenant: &TenantId,
    reservation: &RefundReservationId,
) -> Result<bool, LedgerError> {
    let mut tx = store.begin_write().await?;
    let gone = sqlx::query("DELETE FROM refund_reservations WHERE id = $1 AND tenant_id = $2")
        .bind(reservation.as_str())
        .bind(tenant.as_str())
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(gone.rows_affected() == 1)
}
