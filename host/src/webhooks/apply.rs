//! Applying one inbox event to orders and the ledger, through the ledger's
//! own booking functions (never a second booking path).
//!
//! Idempotent by construction, so at-least-once delivery from the inbox
//! gives exactly-once effects: a paid order's lines are booked under
//! `{payment reference}#{line}` (the same references the API path books,
//! so an API payment and its webhook echo book once); a refund under the
//! gateway's refund reference (an API refund and its echo book once); order
//! transitions are compare-and-set.
//!
//! Out-of-order events converge: `payment succeeded` is authoritative
//! (money moved), so it books even on an order an earlier-delivered
//! `failed`/`canceled` event marked declined or canceled; `failed`,
//! `canceled` and `requires action` never move an order that is already
//! paid (or refunded). A refund event before its payment's booking fails
//! (retried with backoff) until the payment is booked.

use super::inbox::StoredEvent;
use crate::checkout::update_order_after_refund;
use crate::ledger::{
    self, EntryKind, EntryStatus, GatewayRef, LedgerError, Order, OrderStatus, Source,
};
use crate::store::{
    Currency, Money, OrderId, ProviderId, RefundReservationId, Store, StoreError, TenantId,
};

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// It changed the ledger or an order; says what.
    Effect(String),
    /// Nothing to do (already done, or an event the host does not act on).
    Nothing(String),
}

/// Why an event could not be applied now; the worker retries it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

impl From<LedgerError> for ApplyError {
    fn from(e: LedgerError) -> Self {
        ApplyError(e.to_string())
    }
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError(e.to_string())
    }
}

fn reference(raw: Option<&str>, what: &str) -> Result<GatewayRef, ApplyError> {
    let raw = raw.ok_or_else(|| ApplyError(format!("the event has no {what}")))?;
    GatewayRef::parse(raw).map_err(|e| ApplyError(format!("{what}: {e}")))
}

fn amount(event: &StoredEvent) -> Result<Option<Money>, ApplyError> {
    match (event.amount_minor, event.currency.as_deref()) {
        (Some(minor), Some(currency)) => {
            let minor = i64::try_from(minor)
                .map_err(|_| ApplyError(format!("amount {minor} out of range")))?;
            let currency =
                Currency::parse(currency).map_err(|e| ApplyError(format!("currency: {e}")))?;
            Ok(Some(Money::new(minor, currency)))
        }
        _ => Ok(None),
    }
}

/// Applies `event` for `tenant`, verified by `provider`.
pub async fn apply(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
    event: &StoredEvent,
) -> Result<Applied, ApplyError> {
    match event.kind.as_str() {
        "payment_succeeded" => payment_succeeded(store, tenant, provider, event).await,
        "payment_failed" => {
            payment_moved(store, tenant, provider, event, OrderStatus::Declined).await
        }
        "payment_canceled" => {
            payment_moved(store, tenant, provider, event, OrderStatus::Canceled).await
        }
        "payment_requires_action" => {
            payment_moved(store, tenant, provider, event, OrderStatus::RequiresAction).await
        }
        "refund_succeeded" => refund_succeeded(store, tenant, provider, event).await,
        "refund_pending" => refund_pending(store, tenant, event).await,
        "refund_failed" => refund_failed(store, tenant, event).await,
        other => Ok(Applied::Nothing(format!("`{other}` is not acted on"))),
    }
}

/// The order an event is about: by the order id the gateway echoed, else by
/// the payment reference. An echoed id whose order records another payment
/// reference is refused (a gateway-side mix-up must not book elsewhere).
async fn order_of(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
    event: &StoredEvent,
) -> Result<(Order, GatewayRef), ApplyError> {
    let payment = reference(event.payment_reference.as_deref(), "payment reference")?;
    if let Some(id) = event
        .order_id
        .as_deref()
        .and_then(|o| OrderId::parse(o).ok())
        && let Some(order) = ledger::get_order(store, tenant, &id).await?
    {
        if order
            .gateway_reference
            .as_ref()
            .is_some_and(|r| r != &payment)
        {
            return Err(ApplyError(format!(
                "order {id} records another payment reference than {payment}"
            )));
        }
        return Ok((order, payment));
    }
    match ledger::find_order_by_gateway_reference(store, tenant, provider, &payment).await? {
        Some(order) => Ok((order, payment)),
        None => Err(ApplyError(format!("no order for payment {payment}"))),
    }
}

fn is_paid(status: OrderStatus) -> bool {
    matches!(
        status,
        OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded
    )
}

async fn payment_succeeded(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
    event: &StoredEvent,
) -> Result<Applied, ApplyError> {
    let (order, payment) = order_of(store, tenant, provider, event).await?;
    if is_paid(order.status) {
        return Ok(Applied::Nothing(format!(
            "order {} is already paid",
            order.id
        )));
    }
    if let Some(reported) = amount(event)?
        && reported != order.amount
    {
        audit_system(
            store,
            tenant,
            "payment.amount_mismatch",
            serde_json::json!({
                "order_id": order.id, "provider": provider.as_str(),
                "gateway_reference": payment.as_str(), "source": "webhook",
                "requested": {"amount": order.amount.minor, "currency": order.amount.currency.as_str()},
                "reported": {"amount": reported.minor, "currency": reported.currency.as_str()},
            }),
        )
        .await;
        return Err(ApplyError(format!(
            "the gateway reports {} {} for order {} of {} {}",
            reported.minor,
            reported.currency.as_str(),
            order.id,
            order.amount.minor,
            order.amount.currency.as_str()
        )));
    }
    let rows = order
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let external = GatewayRef::parse(&format!("{payment}#{i}"))
                .map_err(|e| ApplyError(format!("line reference: {e}")))?;
            Ok(line
                .ledger_row(order.amount.currency, Source::Webhook)
                .via_gateway(provider.clone(), Some(payment.clone()))
                .with_external_ref(external))
        })
        .collect::<Result<Vec<_>, ApplyError>>()?;
    const FROM: [OrderStatus; 4] = [
        OrderStatus::Pending,
        OrderStatus::RequiresAction,
        OrderStatus::Declined,
        OrderStatus::Canceled,
    ];
    match ledger::book_paid_checkout_from(store, &order, provider, &payment, &rows, &FROM).await {
        Ok((order, rows)) => Ok(Applied::Effect(format!(
            "order {} paid, {} rows booked",
            order.id,
            rows.len()
        ))),
        // The API path (or another worker) booked it first.
        Err(LedgerError::StatusConflict { current }) if is_paid(current) => Ok(Applied::Nothing(
            format!("order {} is already paid", order.id),
        )),
        Err(LedgerError::Duplicate { .. }) => Ok(Applied::Nothing(format!(
            "order {} is already booked",
            order.id
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn payment_moved(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
    event: &StoredEvent,
    to: OrderStatus,
) -> Result<Applied, ApplyError> {
    let (order, _) = order_of(store, tenant, provider, event).await?;
    let from: &[OrderStatus] = match to {
        OrderStatus::RequiresAction => &[OrderStatus::Pending],
        _ => &[OrderStatus::Pending, OrderStatus::RequiresAction],
    };
    match ledger::transition_order(store, tenant, &order.id, from, to).await {
        Ok(order) => Ok(Applied::Effect(format!("order {} is {to:?}", order.id))),
        Err(LedgerError::StatusConflict { current }) => Ok(Applied::Nothing(format!(
            "order {} stays {current:?}",
            order.id
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The hold a refund event is about: by the hold id the gateway echoed,
/// else by the refund reference recorded on it.
async fn hold_of(
    store: &Store,
    tenant: &TenantId,
    event: &StoredEvent,
    refund: Option<&GatewayRef>,
) -> Result<Option<ledger::RefundReservation>, ApplyError> {
    let id = event
        .refund_id
        .as_deref()
        .and_then(|r| RefundReservationId::parse(r).ok());
    Ok(ledger::find_reservation(store, tenant, id.as_ref(), refund).await?)
}

async fn refund_succeeded(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
    event: &StoredEvent,
) -> Result<Applied, ApplyError> {
    let refund = reference(event.refund_reference.as_deref(), "refund reference")?;
    let reported = amount(event)?;
    if let Some(hold) = hold_of(store, tenant, event, Some(&refund)).await? {
        // A hold is completed at its own amount only when the gateway
        // refunded exactly that; a mismatch (also one the API path already
        // flagged) stays held for an operator.
        if let Some(reported) = reported
            && reported != hold.amount
        {
            audit_system(
                store,
                tenant,
                "refund.amount_mismatch",
                serde_json::json!({
                    "hold_id": hold.id, "payment_id": hold.payment_id,
                    "provider": provider.as_str(), "gateway_refund_reference": refund.as_str(),
                    "source": "webhook",
                    "requested": {"amount": hold.amount.minor, "currency": hold.amount.currency.as_str()},
                    "reported": {"amount": reported.minor, "currency": reported.currency.as_str()},
                }),
            )
            .await;
            return Err(ApplyError(format!(
                "refund {refund} of {} {} does not match hold {} of {}",
                reported.minor,
                reported.currency.as_str(),
                hold.id,
                hold.amount.minor
            )));
        }
        return match ledger::complete_refund(
            store,
            tenant,
            &hold.id,
            Some(&refund),
            Source::Webhook,
        )
        .await
        {
            Ok(row) => {
                update_order_after_refund(store, tenant, &row.order_id).await;
                Ok(Applied::Effect(format!(
                    "hold {} completed as {}",
                    hold.id, row.id
                )))
            }
            Err(LedgerError::Duplicate { .. } | LedgerError::ReservationNotFound) => Ok(
                Applied::Nothing(format!("refund {refund} is already booked")),
            ),
            Err(e) => Err(e.into()),
        };
    }
    if let Some(row) = ledger::find_by_external_ref(store, tenant, Some(provider), &refund).await? {
        return Ok(Applied::Nothing(format!(
            "refund {refund} is already booked as {}",
            row.id
        )));
    }
    // Started at the gateway (its dashboard): a new refund row.
    let reported =
        reported.ok_or_else(|| ApplyError(format!("refund {refund} carries no amount")))?;
    let (order, _) = order_of(store, tenant, provider, event).await?;
    let rows = ledger::rows_for_order(store, tenant, &order.id).await?;
    let candidates: Vec<_> = rows
        .iter()
        .filter(|r| r.kind != EntryKind::Refund && r.status == EntryStatus::Approved)
        .collect();
    if candidates.is_empty() {
        return Err(ApplyError(format!(
            "order {} has no booked payment to refund yet",
            order.id
        )));
    }
    let mut last = None;
    for row in candidates {
        match ledger::book_refund(
            store,
            tenant,
            &row.id,
            Some(reported.minor),
            Some(&refund),
            Source::Webhook,
        )
        .await
        {
            Ok(booked) => {
                update_order_after_refund(store, tenant, &order.id).await;
                return Ok(Applied::Effect(format!(
                    "gateway-side refund {refund} booked as {}",
                    booked.id
                )));
            }
            Err(LedgerError::Duplicate { .. }) => {
                return Ok(Applied::Nothing(format!(
                    "refund {refund} is already booked"
                )));
            }
            Err(e @ LedgerError::RefundExceedsPaid { .. }) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| ApplyError("no refundable row".into()), ApplyError::from))
}

async fn refund_pending(
    store: &Store,
    tenant: &TenantId,
    event: &StoredEvent,
) -> Result<Applied, ApplyError> {
    let refund = reference(event.refund_reference.as_deref(), "refund reference")?;
    match hold_of(store, tenant, event, Some(&refund)).await? {
        Some(hold) if hold.gateway_refund_reference.is_none() => {
            ledger::mark_refund_pending(store, tenant, &hold.id, &refund).await?;
            Ok(Applied::Effect(format!(
                "hold {} is pending as {refund}",
                hold.id
            )))
        }
        Some(hold) => Ok(Applied::Nothing(format!(
            "hold {} already pending",
            hold.id
        ))),
        None => Ok(Applied::Nothing(format!("no hold for refund {refund}"))),
    }
}

async fn refund_failed(
    store: &Store,
    tenant: &TenantId,
    event: &StoredEvent,
) -> Result<Applied, ApplyError> {
    let refund = reference(event.refund_reference.as_deref(), "refund reference")?;
    match hold_of(store, tenant, event, Some(&refund)).await? {
        Some(hold) => {
            if ledger::release_refund(store, tenant, &hold.id).await? {
                Ok(Applied::Effect(format!("hold {} released", hold.id)))
            } else {
                Ok(Applied::Nothing(format!("hold {} already gone", hold.id)))
            }
        }
        None => Ok(Applied::Nothing(format!("no hold for refund {refund}"))),
    }
}

async fn audit_system(store: &Store, tenant: &TenantId, action: &str, details: serde_json::Value) {
    crate::audit::record_by_system(store, "webhooks", action, Some(tenant), details).await;
}
