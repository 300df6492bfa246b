//! Reconcile and cancel: a checkout order left `pending` / `requires_action`
//! re-read at its gateway (`get-payment`) and settled through the one
//! booking path ([`Checkouts::settle_as`]); or cancelled at its gateway
//! (`cancel`) by the tenant, which frees its `Idempotency-Key`.

use super::outcome::outcome_unknown;
use super::request::gateway_key;
use super::{CheckoutError, CheckoutOutcome, Checkouts};
use crate::gateways::OpenGateway;
use crate::ledger::{self, GatewayRef, LedgerError, Order, OrderKind, OrderStatus, Source};
use crate::runtime::CallError;
use crate::runtime::contract::{Capabilities, Payment, PaymentState, ProviderError};
use crate::store::{OrderId, ProviderId, TenantId};

/// What a reconciliation found.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// The order as it is now.
    pub order: Order,
    /// Whether the gateway was asked (`false`: the order was already
    /// settled, or has no gateway reference to ask about).
    pub asked_gateway: bool,
}

impl Reconciled {
    /// Whether the order no longer waits for its gateway.
    pub fn settled(&self) -> bool {
        !unsettled(self.order.status)
    }
}

fn unsettled(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Pending | OrderStatus::RequiresAction)
}

/// Why a cancel did not cancel.
fn not_cancelable(order: &Order, why: &str) -> CheckoutError {
    CheckoutError::NotCancelable {
        order: Box::new(order.clone()),
        reason: why.to_owned(),
    }
}

impl Checkouts {
    /// Re-reads `order` at its gateway and books what the gateway says,
    /// exactly as the checkout would have (rows with `source`), through
    /// [`Checkouts::settle_as`]: booked when approved, recorded when still
    /// waiting, declined or canceled otherwise. An order that no longer
    /// waits, or has no gateway reference yet, is answered as it is
    /// without a gateway call. A gateway error leaves the order as it is.
    pub async fn reconcile(
        &self,
        tenant: &TenantId,
        id: &OrderId,
        source: Source,
    ) -> Result<Reconciled, CheckoutError> {
        let order = ledger::get_order(&self.store, tenant, id)
            .await?
            .ok_or(LedgerError::OrderNotFound)?;
        let (Some(provider), Some(reference)) =
            (order.provider.clone(), order.gateway_reference.clone())
        else {
            return Ok(Reconciled {
                order,
                asked_gateway: false,
            });
        };
        if order.kind != OrderKind::Checkout || !unsettled(order.status) {
            return Ok(Reconciled {
                order,
                asked_gateway: false,
            });
        }
        let open = self.open_recorded(tenant, &order, &provider).await?;
        let mut payment = open
            .provider
            .get_payment(open.ctx.clone(), reference.as_str().to_owned())
            .await
            .map_err(|e| outcome_unknown(provider.as_str(), e))?;
        // Untrusted: book nothing the gateway says about another payment.
        if payment.reference != reference.as_str() {
            return Err(CheckoutError::Provider {
                code: "provider_bad_reference",
                message: format!("{provider} answered the read of {reference} for another payment"),
            });
        }
        // A decline read later may leave the payment open at the gateway
        // (Stripe: `requires_payment_method`, which the customer can still
        // confirm): it is canceled there before the order ends, so no charge
        // can follow an order payhost considers over.
        if matches!(payment.state, PaymentState::Declined(_))
            && open
                .provider
                .manifest()
                .capabilities
                .contains(Capabilities::CANCEL)
        {
            let mut ctx = open.ctx;
            ctx.idempotency_key = Some(gateway_key(tenant, None, id.as_str(), "cancel"));
            payment = match open
                .provider
                .cancel(ctx, reference.as_str().to_owned())
                .await
            {
                Ok(canceled) if canceled.reference == reference.as_str() => canceled,
                Ok(_) => {
                    return Err(CheckoutError::Provider {
                        code: "provider_bad_reference",
                        message: format!(
                            "{provider} answered the cancel of {reference} for another payment"
                        ),
                    });
                }
                // Not canceled (e.g. it went on meanwhile): left as it is,
                // for the next check.
                Err(e) => return Err(outcome_unknown(provider.as_str(), e)),
            };
        }
        let order = self.apply(tenant, order, provider, payment, source).await?;
        Ok(Reconciled {
            order,
            asked_gateway: true,
        })
    }

    /// `order`'s gateway, opened with the credentials saved now only if they
    /// are the ones its first call used (see `resume`): another account
    /// never saw that payment, and a call there could act on another one.
    async fn open_recorded(
        &self,
        tenant: &TenantId,
        order: &Order,
        provider: &ProviderId,
    ) -> Result<OpenGateway, CheckoutError> {
        let open = self.gateways.open(tenant, provider.as_str()).await?;
        let account = ledger::gateway_account_of(&self.store, tenant, &order.id).await?;
        let same = account.as_deref().is_some_and(|account| {
            self.gateways
                .same_credentials(tenant, provider.as_str(), &open, account)
        });
        if !same {
            return Err(CheckoutError::Unavailable(format!(
                "order {} went to `{provider}` under the credentials saved at the time, and \
                 other credentials are saved now; it is reconciled only with those",
                order.id
            )));
        }
        Ok(open)
    }

    /// Books `payment` for `order` and answers the order as it is after.
    async fn apply(
        &self,
        tenant: &TenantId,
        order: Order,
        provider: ProviderId,
        payment: Payment,
        source: Source,
    ) -> Result<Order, CheckoutError> {
        let id = order.id.clone();
        let lines = order.lines.clone();
        match self
            .settle_as(tenant, order, &lines, provider, payment, source)
            .await
        {
            Ok(
                CheckoutOutcome::Paid { order, .. }
                | CheckoutOutcome::Pending { order }
                | CheckoutOutcome::RequiresAction { order, .. },
            ) => Ok(order),
            // Declined or canceled at the gateway: recorded on the order.
            Err(CheckoutError::Declined { order, .. }) => Ok(*order),
            // Someone else (a webhook, another instance) settled it first.
            Err(CheckoutError::Ledger(LedgerError::StatusConflict { .. })) => {
                Ok(ledger::get_order(&self.store, tenant, &id)
                    .await?
                    .ok_or(LedgerError::OrderNotFound)?)
            }
            Err(e) => Err(e),
        }
    }

    /// Cancels the tenant's pending checkout order at its gateway and marks
    /// it `canceled`, which frees its `Idempotency-Key`: a new checkout
    /// under the same key makes a new order (with a new gateway key, see
    /// `request::checkout_scope`). Idempotent: an order already canceled is
    /// answered as it is. Refused ([`CheckoutError::NotCancelable`]) for an
    /// order that is paid (or refunded, or declined), for one that is not a
    /// checkout, and for one whose gateway reference is not known yet (its
    /// checkout may still hold a charge; a retry under the key resumes it).
    /// If the gateway says the payment succeeded meanwhile, it is booked
    /// and the cancel refused.
    pub async fn cancel(&self, tenant: &TenantId, id: &OrderId) -> Result<Order, CheckoutError> {
        let order = ledger::get_order(&self.store, tenant, id)
            .await?
            .ok_or(LedgerError::OrderNotFound)?;
        if order.kind != OrderKind::Checkout {
            return Err(not_cancelable(
                &order,
                "only checkout orders can be canceled",
            ));
        }
        match order.status {
            OrderStatus::Canceled => {
                // An earlier cancel may have stopped before freeing the key.
                self.free_key(tenant, id).await?;
                return Ok(order);
            }
            OrderStatus::Pending | OrderStatus::RequiresAction => {}
            status => {
                return Err(not_cancelable(
                    &order,
                    &format!("the order is {status}; only a pending order can be canceled"),
                ));
            }
        }
        let (Some(provider), Some(reference)) =
            (order.provider.clone(), order.gateway_reference.clone())
        else {
            return Err(not_cancelable(
                &order,
                "the gateway has not answered for this order yet; retry the checkout with its \
                 Idempotency-Key to resume it",
            ));
        };
        let open = self.open_recorded(tenant, &order, &provider).await?;
        if !open
            .provider
            .manifest()
            .capabilities
            .contains(Capabilities::CANCEL)
        {
            return Err(CheckoutError::CapabilityNotSupported {
                provider: provider.as_str().into(),
                capability: "cancel",
            });
        }
        let mut ctx = open.ctx;
        ctx.idempotency_key = Some(gateway_key(tenant, None, id.as_str(), "cancel"));
        let payment = match open
            .provider
            .cancel(ctx, reference.as_str().to_owned())
            .await
        {
            Ok(payment) => payment,
            // The gateway would not cancel (e.g. it succeeded meanwhile):
            // read what it holds and book that.
            Err(CallError::Gateway(ProviderError::InvalidRequest(_))) => {
                let now = self.reconcile(tenant, id, Source::Api).await?;
                if now.order.status == OrderStatus::Canceled {
                    self.free_key(tenant, id).await?;
                    return Ok(now.order);
                }
                return Err(not_cancelable(
                    &now.order,
                    &format!(
                        "the gateway would not cancel; the order is {}",
                        now.order.status
                    ),
                ));
            }
            Err(e) => return Err(outcome_unknown(provider.as_str(), e)),
        };
        let canceled = self
            .canceled_at_gateway(tenant, order, provider, &reference, payment)
            .await?;
        self.free_key(tenant, id).await?;
        Ok(canceled)
    }

    /// Forgets the stored answer of the checkout request made under the
    /// canceled order's `Idempotency-Key`, so the same key runs a new
    /// checkout instead of replaying the canceled one. Left alone once a
    /// newer order was made under the key: the stored answer is then that
    /// order's (a repeated cancel of the old one must not forget it).
    async fn free_key(&self, tenant: &TenantId, id: &OrderId) -> Result<(), CheckoutError> {
        let Some(raw) = ledger::checkout_key_of(&self.store, tenant, id).await? else {
            return Ok(());
        };
        if ledger::newer_order_under_checkout_key(&self.store, tenant, id).await? {
            return Ok(());
        }
        if let Ok(key) = crate::idempotency::IdempotencyKey::parse(&raw) {
            crate::idempotency::release(&self.store, tenant, &key)
                .await
                .map_err(LedgerError::from)?;
        }
        Ok(())
    }

    /// The gateway's answer to a cancel: canceled → the order too; anything
    /// else is booked as the gateway states it and the cancel refused.
    async fn canceled_at_gateway(
        &self,
        tenant: &TenantId,
        order: Order,
        provider: ProviderId,
        reference: &GatewayRef,
        payment: Payment,
    ) -> Result<Order, CheckoutError> {
        if payment.reference != reference.as_str() {
            return Err(CheckoutError::Provider {
                code: "provider_bad_reference",
                message: format!(
                    "{provider} answered the cancel of {reference} for another payment"
                ),
            });
        }
        if matches!(payment.state, PaymentState::Canceled) {
            return match self.mark(tenant, &order.id, OrderStatus::Canceled).await {
                Ok(order) => Ok(order),
                // A webhook or the janitor recorded the cancel first.
                Err(CheckoutError::Ledger(LedgerError::StatusConflict {
                    current: OrderStatus::Canceled,
                })) => Ok(ledger::get_order(&self.store, tenant, &order.id)
                    .await?
                    .ok_or(LedgerError::OrderNotFound)?),
                Err(e) => Err(e),
            };
        }
        let now = self
            .apply(tenant, order, provider, payment, Source::Api)
            .await?;
        if now.status == OrderStatus::Canceled {
            return Ok(now);
        }
        Err(not_cancelable(
            &now,
            &format!("the gateway did not cancel; the order is {}", now.status),
        ))
    }
}
