//! Settle: a gateway's answer to a payment, booked in the ledger when money
//! moved, else recorded on the order (requires action, pending, declined).

use super::outcome::audit_mismatch;
use super::{CheckoutError, CheckoutOutcome, Checkouts};
use crate::ledger::{self, GatewayRef, LedgerError, Order, OrderLine, OrderStatus, Source};
use crate::runtime::contract::{Decline, NextAction, Payment, PaymentState};
use crate::store::{OrderId, ProviderId, TenantId};

fn next_action_json(action: &NextAction) -> serde_json::Value {
    match action {
        NextAction::Redirect(url) => serde_json::json!({"type": "redirect", "url": url}),
        NextAction::SdkData(data) => serde_json::json!({"type": "sdk_data", "data": data}),
    }
}

impl Checkouts {
    /// Marks the order declined; the error the client gets.
    pub(super) async fn declined(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        decline: Decline,
    ) -> CheckoutError {
        match self.mark(tenant, order, OrderStatus::Declined).await {
            Ok(order) => CheckoutError::Declined {
                order: Box::new(order),
                code: decline.code,
                message: decline.message,
            },
            Err(e) => e,
        }
    }

    pub(super) async fn mark(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        to: OrderStatus,
    ) -> Result<Order, CheckoutError> {
        Ok(ledger::transition_order(
            &self.store,
            tenant,
            order,
            &[OrderStatus::Pending, OrderStatus::RequiresAction],
            to,
        )
        .await?)
    }

    /// Books (or records) what the gateway answered for `order`.
    pub(super) async fn settle(
        &self,
        tenant: &TenantId,
        order: Order,
        lines: &[OrderLine],
        provider: ProviderId,
        payment: Payment,
    ) -> Result<CheckoutOutcome, CheckoutError> {
        self.settle_as(tenant, order, lines, provider, payment, Source::Api)
            .await
    }

    /// [`Checkouts::settle`] with the rows' `source`: the one booking path
    /// for a checkout's payment, whoever learned the answer (the checkout
    /// itself, or the janitor's `get-payment`). Booking is idempotent: the
    /// order moves to `paid` only from `pending` / `requires_action`, and the
    /// rows' external references (`{payment reference}#{line}`) are unique.
    pub(super) async fn settle_as(
        &self,
        tenant: &TenantId,
        order: Order,
        lines: &[OrderLine],
        provider: ProviderId,
        payment: Payment,
        source: Source,
    ) -> Result<CheckoutOutcome, CheckoutError> {
        let gateway_ref = self
            .check_reported(tenant, &order, &provider, &payment)
            .await?;
        let reference = payment.reference;
        match payment.state {
            PaymentState::Approved => {
                let rows: Vec<_> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, line)| -> Result<_, CheckoutError> {
                        let external =
                            GatewayRef::parse(&format!("{reference}#{i}")).map_err(|e| {
                                CheckoutError::Provider {
                                    code: "provider_bad_reference",
                                    message: e.to_string(),
                                }
                            })?;
                        Ok(line
                            .ledger_row(order.amount.currency, source)
                            .via_gateway(provider.clone(), Some(gateway_ref.clone()))
                            .with_external_ref(external))
                    })
                    .collect::<Result<_, _>>()?;
                // Gateway reference, status and rows: one commit.
                let (order, booked) =
                    ledger::book_paid_checkout(&self.store, &order, &provider, &gateway_ref, &rows)
                        .await?;
                Ok(CheckoutOutcome::Paid {
                    order,
                    rows: booked,
                })
            }
            PaymentState::RequiresAction(action) => {
                let order = self
                    .mark(tenant, &order.id, OrderStatus::RequiresAction)
                    .await?;
                Ok(CheckoutOutcome::RequiresAction {
                    order,
                    next_action: next_action_json(&action),
                })
            }
            PaymentState::Pending | PaymentState::Authorized => {
                let order = ledger::get_order(&self.store, tenant, &order.id)
                    .await?
                    .ok_or(LedgerError::OrderNotFound)?;
                Ok(CheckoutOutcome::Pending { order })
            }
            PaymentState::Declined(d) => Err(self.declined(tenant, &order.id, d).await),
            PaymentState::Canceled => {
                let order = self.mark(tenant, &order.id, OrderStatus::Canceled).await?;
                Err(CheckoutError::Declined {
                    order: Box::new(order),
                    code: "canceled".into(),
                    message: "the gateway canceled the payment".into(),
                })
            }
        }
    }

    /// The gateway's reference for `payment`, recorded on the order unless
    /// the approved booking records it; an error (nothing booked, the order
    /// left pending, the operator audited) when the gateway reports another
    /// amount or currency than the order's.
    async fn check_reported(
        &self,
        tenant: &TenantId,
        order: &Order,
        provider: &ProviderId,
        payment: &Payment,
    ) -> Result<GatewayRef, CheckoutError> {
        let gateway_ref =
            GatewayRef::parse(&payment.reference).map_err(|e| CheckoutError::Provider {
                code: "provider_bad_reference",
                message: format!("{provider}: unusable payment reference: {e}"),
            })?;
        // Book only what the gateway says moved: a component reporting
        // another amount or currency leaves the order pending.
        // An approved payment books the order's amount: one captured only
        // in part (e.g. at the gateway's dashboard) takes the same path.
        let wanted = order.amount.minor.max(0) as u64;
        let captured_short = matches!(payment.state, PaymentState::Approved)
            && payment.captured.unwrap_or(payment.amount.minor) != wanted;
        let mismatch = payment.amount.minor != wanted
            || payment.amount.currency != order.amount.currency.as_str()
            || captured_short;
        // The approved path records the reference in its booking commit.
        if mismatch || !matches!(payment.state, PaymentState::Approved) {
            ledger::set_order_gateway(&self.store, tenant, &order.id, provider, Some(&gateway_ref))
                .await
                .map_err(|e| match e {
                    LedgerError::Invalid(message) => CheckoutError::Provider {
                        code: "provider_bad_reference",
                        message,
                    },
                    e => CheckoutError::from(e),
                })?;
        }
        if mismatch {
            audit_mismatch(
                &self.store,
                tenant,
                "payment.amount_mismatch",
                serde_json::json!({
                    "order_id": order.id,
                    "provider": provider.as_str(),
                    "gateway_reference": gateway_ref.as_str(),
                    "requested": {"amount": order.amount.minor, "currency": order.amount.currency.as_str()},
                    "reported": {"amount": payment.amount.minor, "currency": payment.amount.currency, "captured": payment.captured},
                }),
            )
            .await;
            return Err(CheckoutError::Provider {
                code: "provider_amount_mismatch",
                message: format!(
                    "{provider} reported {} {} for order {} of {} {}",
                    payment.amount.minor,
                    payment.amount.currency,
                    order.id,
                    order.amount.minor,
                    order.amount.currency.as_str()
                ),
            });
        }
        Ok(gateway_ref)
    }
}
