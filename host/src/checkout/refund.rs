//! Refunds: reserve → call the gateway → book, keep the hold while the
//! gateway says pending or the outcome is unknown, release it only when the
//! gateway refused. Gateway-less payments are refunded manually.

use super::CheckoutError;
use super::outcome::{audit_mismatch, describe, provider_failure};
use super::request::{gateway_key, to_wire};
use crate::gateways::Gateways;
use crate::ledger::{self, GatewayRef, LedgerError, LedgerRow, OrderStatus, Source};
use crate::runtime::CallError;
use crate::runtime::contract::{Capabilities, ProviderError, Refund, RefundRequest, RefundStatus};
use crate::store::{OrderId, PaymentId, ProviderId, RefundReservationId, Store, TenantId};

/// How a refund request ended.
#[derive(Debug, Clone)]
pub enum RefundOutcome {
    /// The new `refunded` row (manual refunds, and gateway refunds the
    /// gateway reports as succeeded).
    Booked(LedgerRow),
    /// The gateway accepted the refund but has not completed it (Stripe's
    /// `pending`). Nothing is booked: the amount stays held, so it keeps
    /// counting against what remains, until the gateway's later event
    /// completes the hold (books the row) or releases it. The hold records
    /// the gateway's refund reference, and the gateway echoes the hold's id
    /// as the event's `refund-id`.
    Pending { hold: ledger::RefundReservation },
}

/// The refund service.
#[derive(Clone)]
pub struct Refunds {
    store: Store,
    gateways: Gateways,
}

impl Refunds {
    /// A refund service.
    pub fn new(store: Store, gateways: Gateways) -> Refunds {
        Refunds { store, gateways }
    }

    /// Refund a payment row. Gateway payments are refunded through their
    /// provider (reserve → call → book, keep held while the gateway says
    /// pending, or release); gateway-less payments are recorded as manual
    /// refunds with no gateway call.
    pub async fn refund(
        &self,
        tenant: &TenantId,
        payment: &PaymentId,
        amount: Option<i64>,
        client_key: Option<&str>,
    ) -> Result<RefundOutcome, CheckoutError> {
        if amount.is_some_and(|a| a <= 0) {
            return Err(CheckoutError::Invalid("amount must be positive".into()));
        }
        let row = ledger::payment(&self.store, tenant, payment)
            .await?
            .ok_or(LedgerError::PaymentNotFound)?;
        let outcome = self
            .refund_row(tenant, &row, payment, amount, client_key)
            .await?;
        if matches!(outcome, RefundOutcome::Booked(_)) {
            self.update_order_after_refund(tenant, &row.order_id).await;
        }
        Ok(outcome)
    }

    /// See [`update_order_after_refund`].
    async fn update_order_after_refund(&self, tenant: &TenantId, order: &OrderId) {
        update_order_after_refund(&self.store, tenant, order).await;
    }

    async fn refund_row(
        &self,
        tenant: &TenantId,
        row: &LedgerRow,
        payment: &PaymentId,
        amount: Option<i64>,
        client_key: Option<&str>,
    ) -> Result<RefundOutcome, CheckoutError> {
        let Some(provider_id) = row.provider.clone() else {
            return Ok(RefundOutcome::Booked(
                ledger::book_refund(&self.store, tenant, payment, amount, None, Source::Manual)
                    .await?,
            ));
        };
        // Refused before any hold or call: a provider that cannot refund in
        // part would refund everything, or fail in its own way. "In part"
        // is relative to the gateway's payment, which is the whole order
        // (its rows share one gateway reference).
        let whole = self.whole_unless_partial(tenant, row, &provider_id).await?;
        let partial = |minor: i64| whole.is_some_and(|whole| minor < whole);
        let not_supported = || CheckoutError::CapabilityNotSupported {
            provider: provider_id.as_str().into(),
            capability: "partial-refund",
        };
        if partial(amount.unwrap_or(row.amount.minor).min(row.amount.minor)) {
            return Err(not_supported());
        }
        let reservation = ledger::reserve_refund(&self.store, tenant, payment, amount).await?;
        // What remains after earlier refunds (booked manually, by webhook,
        // or before a component update) is a partial refund too.
        if partial(reservation.amount.minor) {
            self.release(tenant, &reservation.id).await;
            return Err(not_supported());
        }
        let open = match self.gateways.open(tenant, provider_id.as_str()).await {
            Ok(open) => open,
            Err(e) => {
                self.release(tenant, &reservation.id).await;
                return Err(e.into());
            }
        };
        let Some(reference) = row.gateway_reference.clone() else {
            self.release(tenant, &reservation.id).await;
            return Err(CheckoutError::Invalid(
                "payment has no gateway reference".into(),
            ));
        };
        let mut ctx = open.ctx;
        ctx.idempotency_key = Some(gateway_key(
            tenant,
            client_key,
            reservation.id.as_str(),
            &format!("refund:{payment}"),
        ));
        let request = RefundRequest {
            payment_reference: reference.as_str().to_string(),
            amount: Some(to_wire(reservation.amount)),
            reason: None,
            refund_id: reservation.id.to_string(),
        };
        match open.provider.refund(ctx, request).await {
            Ok(refund) => self.taken(tenant, &provider_id, reservation, refund).await,
            Err(e) => Err(self.failed(tenant, &provider_id, &reservation.id, e).await),
        }
    }

    /// The order's whole amount when `provider`'s manifest does not claim
    /// partial refunds (a refund of less is refused); `None` when it does.
    async fn whole_unless_partial(
        &self,
        tenant: &TenantId,
        row: &LedgerRow,
        provider_id: &ProviderId,
    ) -> Result<Option<i64>, CheckoutError> {
        let provider = self
            .gateways
            .providers()
            .get(provider_id.as_str())
            .ok_or_else(|| {
                crate::gateways::GatewayError::UnknownProvider(provider_id.as_str().into())
            })?;
        if provider
            .manifest()
            .capabilities
            .contains(Capabilities::PARTIAL_REFUND)
        {
            return Ok(None);
        }
        let order = ledger::get_order(&self.store, tenant, &row.order_id)
            .await?
            .ok_or(LedgerError::OrderNotFound)?;
        Ok(Some(order.amount.minor))
    }

    async fn release(&self, tenant: &TenantId, hold: &RefundReservationId) {
        if let Err(e) = ledger::release_refund(&self.store, tenant, hold).await {
            tracing::error!(reservation = %hold, "cannot release refund hold: {e}");
        }
    }

    /// The gateway answered the refund call: booked, pending (the hold
    /// stays), for another amount (the hold stays, audited), or ended
    /// otherwise (released).
    async fn taken(
        &self,
        tenant: &TenantId,
        provider_id: &ProviderId,
        reservation: ledger::RefundReservation,
        refund: Refund,
    ) -> Result<RefundOutcome, CheckoutError> {
        match refund.status {
            RefundStatus::Pending | RefundStatus::Succeeded
                if refund.amount != to_wire(reservation.amount) =>
            {
                Err(self
                    .refund_mismatch(tenant, provider_id, reservation, refund)
                    .await)
            }
            RefundStatus::Pending => {
                // The hold stays in every branch here: the gateway took the
                // refund, so releasing the amount could refund it twice.
                let external = refund_reference(&refund.reference)?;
                ledger::mark_refund_pending(&self.store, tenant, &reservation.id, &external)
                    .await?;
                tracing::info!(
                    hold = %reservation.id,
                    "gateway refund {external} pending: the amount stays held until it completes"
                );
                let mut hold = reservation;
                hold.gateway_refund_reference = Some(external);
                Ok(RefundOutcome::Pending { hold })
            }
            RefundStatus::Succeeded => {
                let external = refund_reference(&refund.reference)?;
                Ok(RefundOutcome::Booked(
                    ledger::complete_refund(
                        &self.store,
                        tenant,
                        &reservation.id,
                        Some(&external),
                        Source::Api,
                    )
                    .await?,
                ))
            }
            _ => {
                self.release(tenant, &reservation.id).await;
                Err(CheckoutError::Gateway {
                    provider: provider_id.as_str().into(),
                    message: format!("refund {} ended {:?}", refund.reference, refund.status),
                })
            }
        }
    }

    /// The refund call failed: the hold stays unless the gateway refused
    /// the refund (then nothing moved and it is released).
    async fn failed(
        &self,
        tenant: &TenantId,
        provider_id: &ProviderId,
        hold: &RefundReservationId,
        e: CallError<ProviderError>,
    ) -> CheckoutError {
        match e {
            CallError::Gateway(
                e @ (ProviderError::Unavailable(_) | ProviderError::Internal(_)),
            ) => {
                // The request may have left and the gateway refunded (a read
                // timeout, a 5xx, a 2xx the component could not parse): keep
                // the hold, so the amount cannot be refunded a second time
                // before reconciliation settles it.
                tracing::warn!(
                    %hold,
                    "refund outcome unknown ({}); the amount stays held",
                    describe(&e)
                );
                match e {
                    ProviderError::Unavailable(m) => CheckoutError::Unavailable(m),
                    other => CheckoutError::Gateway {
                        provider: provider_id.as_str().into(),
                        message: describe(&other),
                    },
                }
            }
            CallError::Gateway(e) => {
                // The gateway refused the refund: nothing moved.
                self.release(tenant, hold).await;
                match e {
                    ProviderError::Unavailable(m) => CheckoutError::Unavailable(m),
                    ProviderError::RateLimited(a) => CheckoutError::RateLimited(a),
                    ProviderError::InvalidRequest(message) => {
                        CheckoutError::GatewayInvalidRequest {
                            provider: provider_id.as_str().into(),
                            message,
                        }
                    }
                    other => CheckoutError::Gateway {
                        provider: provider_id.as_str().into(),
                        message: describe(&other),
                    },
                }
            }
            // Outcome unknown (deadline): keep the hold for the janitor.
            e => provider_failure(&e),
        }
    }

    /// A refund the gateway took for another amount or currency than held.
    /// Like a payment amount mismatch, nothing is booked: the hold stays
    /// (counting against what remains, so the difference cannot be refunded
    /// again meanwhile) with the gateway's refund reference, so
    /// reconciliation can settle it, and the operator gets an audit event.
    async fn refund_mismatch(
        &self,
        tenant: &TenantId,
        provider: &ProviderId,
        hold: ledger::RefundReservation,
        refund: Refund,
    ) -> CheckoutError {
        // Audit first, whatever happens next: money moved in an unexpected
        // amount, and the operator must hear of it even if the reference
        // is unusable or storing it fails.
        let details = serde_json::json!({
            "hold_id": hold.id,
            "payment_id": hold.payment_id,
            "provider": provider.as_str(),
            "gateway_refund_reference": refund.reference,
            "requested": {"amount": hold.amount.minor, "currency": hold.amount.currency.as_str()},
            "reported": {"amount": refund.amount.minor, "currency": refund.amount.currency},
        });
        audit_mismatch(&self.store, tenant, "refund.amount_mismatch", details).await;
        let reference = match refund_reference(&refund.reference) {
            Ok(reference) => reference,
            Err(e) => return e,
        };
        // The hold stays either way; with its reference, reconciliation can
        // match the gateway's refund to it.
        if let Err(e) = ledger::mark_refund_pending(&self.store, tenant, &hold.id, &reference).await
        {
            return e.into();
        }
        CheckoutError::RefundAmountMismatch {
            provider: provider.as_str().into(),
            hold: hold.id,
            reference,
            requested: hold.amount,
            reported_minor: refund.amount.minor,
            reported_currency: refund.amount.currency,
        }
    }
}

/// Orders are workflow state: after a refund (through the API or reported by
/// a webhook), mark the order `partially_refunded` or `refunded` from the
/// ledger's sums. A failure is logged: the ledger is the truth.
pub async fn update_order_after_refund(store: &Store, tenant: &TenantId, order: &OrderId) {
    let rows = match ledger::rows_for_order(store, tenant, order).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(%order, "cannot read rows to update the order after a refund: {e}");
            return;
        }
    };
    let sum = |status| -> i64 {
        rows.iter()
            .filter(|r| r.status == status)
            .map(|r| r.amount.minor)
            .sum()
    };
    let status = if sum(ledger::EntryStatus::Refunded) >= sum(ledger::EntryStatus::Approved) {
        OrderStatus::Refunded
    } else {
        OrderStatus::PartiallyRefunded
    };
    if let Err(e) = ledger::transition_order(
        store,
        tenant,
        order,
        &[OrderStatus::Paid, OrderStatus::PartiallyRefunded],
        status,
    )
    .await
    {
        tracing::warn!(%order, "order status not updated after refund: {e}");
    }
}

/// The gateway's refund reference, which a webhook echo is matched on: an
/// unusable one is an error, never dropped silently.
fn refund_reference(reference: &str) -> Result<GatewayRef, CheckoutError> {
    GatewayRef::parse(reference).map_err(|e| CheckoutError::Provider {
        code: "provider_bad_reference",
        message: format!("refund reference: {e}"),
    })
}
