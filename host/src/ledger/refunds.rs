//! Refunds: holds, refund rows and their guarantee.
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

use super::book::{insert_error, insert_row};
use super::read::{decode_row, find_external_in, summary_from};
use super::{EntryKind, EntryStatus, GatewayRef, LedgerError, LedgerRow, RefundSummary, Source};
use crate::store::{
    Currency, Money, OrderId, PaymentId, ProviderId, RefundReservationId, Store, TenantId,
    UnixMillis, WriteTx, get_i64, get_opt_parsed, get_parsed, get_time,
};

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
    let rows = sqlx::query(&format!(
        "{RESERVATION_SELECT} WHERE r.created_at < $1 ORDER BY r.created_at, r.id"
    ))
    .bind(cutoff.as_i64())
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(decode_reservation)
        .collect::<Result<_, crate::store::StoreError>>()
        .map_err(LedgerError::from)
}

const RESERVATION_SELECT: &str = "SELECT r.id AS id, r.tenant_id AS tenant_id, \
        r.payment_id AS payment_id, r.amount_minor AS amount_minor, r.created_at AS created_at, \
        r.gateway_refund_reference AS gateway_refund_reference, \
        p.order_id AS order_id, p.currency AS currency, p.provider AS provider, \
        p.gateway_reference AS gateway_reference \
   FROM refund_reservations r JOIN payments p ON p.id = r.payment_id";

fn decode_reservation(
    row: &sqlx::any::AnyRow,
) -> Result<RefundReservation, crate::store::StoreError> {
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
}

/// `tenant`'s live refund hold with id `id`, or else the one recording
/// `gateway_refund` as its gateway refund reference (how a webhook about a
/// refund finds the hold it completes or releases).
pub async fn find_reservation(
    store: &Store,
    tenant: &TenantId,
    id: Option<&RefundReservationId>,
    gateway_refund: Option<&GatewayRef>,
) -> Result<Option<RefundReservation>, LedgerError> {
    if let Some(id) = id {
        let row = sqlx::query(&format!(
            "{RESERVATION_SELECT} WHERE r.id = $1 AND r.tenant_id = $2"
        ))
        .bind(id.as_str())
        .bind(tenant.as_str())
        .fetch_optional(store.pool())
        .await?;
        if let Some(row) = row {
            return Ok(Some(decode_reservation(&row)?));
        }
    }
    let Some(reference) = gateway_refund else {
        return Ok(None);
    };
    let row = sqlx::query(&format!(
        "{RESERVATION_SELECT} WHERE r.gateway_refund_reference = $1 AND r.tenant_id = $2"
    ))
    .bind(reference.as_str())
    .bind(tenant.as_str())
    .fetch_optional(store.pool())
    .await?;
    Ok(row.as_ref().map(decode_reservation).transpose()?)
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
