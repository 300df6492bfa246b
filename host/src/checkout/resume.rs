//! Resume: a retry under the same `Idempotency-Key` goes back to the order
//! its first attempt left, at the one gateway and account that order records.

use super::outcome::outcome_unknown;
use super::request::{checkout_scope, gateway_key, payment_request};
use super::{CheckoutError, CheckoutOutcome, CheckoutRequest, Checkouts};
use crate::gateways::{OpenGateway, Records};
use crate::ledger::{self, LedgerError, Order, OrderKind, OrderStatus};
use crate::runtime::CallError;
use crate::runtime::contract::ProviderError;
use crate::store::{ProviderId, TenantId};

/// The order a retry found under its key.
enum Found {
    /// Still pending or awaiting the customer: resumed at its gateway, under
    /// the credentials fingerprint it recorded (if any).
    /// The generation of its gateway key is the one stored with it.
    Live(Order, Option<String>, i64),
    /// Already paid: answered from the ledger, with no gateway call.
    Paid(CheckoutOutcome),
}

impl Checkouts {
    /// A retry of a checkout whose first attempt left a live order under
    /// the same `Idempotency-Key` (a 5xx is not kept for replay, so the
    /// client sends it again). The order goes back to the one gateway it
    /// records, with the same gateway idempotency key and the same request,
    /// so the gateway answers as it did (or would have) the first time; an
    /// approved charge whose booking failed is booked now.
    ///
    /// Must never: call another gateway (an earlier one answered 429 and
    /// charged nothing, but the recorded one may hold the charge), or
    /// cancel the order on an error (it may hold a charge). Only the
    /// gateway's own decline ends it.
    pub(super) async fn resume(
        &self,
        tenant: &TenantId,
        request: &CheckoutRequest,
        staged: &Order,
        records: &Records,
    ) -> Result<CheckoutOutcome, CheckoutError> {
        let key = request
            .idempotency_key
            .as_deref()
            .ok_or(LedgerError::CheckoutKeyTaken)?;
        let (order, account, generation) = match self.find_resumable(tenant, key, staged).await? {
            Found::Live(order, account, generation) => (order, account, generation),
            Found::Paid(outcome) => return Ok(outcome),
        };
        let (provider_id, open) = self.reopen(tenant, &order, account, records)?;
        // The generation its first attempt used, as stored with the order
        // (never recounted: an order canceled under the key after that
        // count, or before an upgrade, would change it and so the key).
        let mut ctx = open.ctx;
        ctx.idempotency_key = Some(gateway_key(
            tenant,
            Some(key),
            order.id.as_str(),
            &checkout_scope(provider_id.as_str(), generation),
        ));
        let wire = payment_request(tenant, request, &order);
        tracing::info!(order = %order.id, provider = %provider_id, "resuming the order of an earlier attempt under the same Idempotency-Key");
        match open.provider.create_payment(ctx, wire).await {
            Ok(payment) => {
                let lines = order.lines.clone();
                self.settle(tenant, order, &lines, provider_id, payment)
                    .await
            }
            Err(CallError::Gateway(ProviderError::Declined(d))) => {
                Err(self.declined(tenant, &order.id, d).await)
            }
            Err(e) => Err(outcome_unknown(provider_id.as_str(), e)),
        }
    }

    /// The live order under `key`, if it is the same checkout as `staged`
    /// (same kind, amount, lines, customer and metadata, which holds the
    /// fingerprint of what the gateway is sent): else
    /// [`CheckoutError::KeyReused`].
    async fn find_resumable(
        &self,
        tenant: &TenantId,
        key: &str,
        staged: &Order,
    ) -> Result<Found, CheckoutError> {
        let (order, account, generation) =
            ledger::live_order_for_checkout_key(&self.store, tenant, key)
                .await?
                .ok_or(LedgerError::CheckoutKeyTaken)?;
        if order.kind != OrderKind::Checkout
            || order.amount != staged.amount
            || order.lines != staged.lines
            || order.customer != staged.customer
            || order.metadata != staged.metadata
        {
            return Err(CheckoutError::KeyReused);
        }
        match order.status {
            OrderStatus::Pending | OrderStatus::RequiresAction => {
                // NULL: stored by a build that always derived generation 0.
                Ok(Found::Live(order, account, generation.unwrap_or(0)))
            }
            OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
                let rows = ledger::rows_for_order(&self.store, tenant, &order.id).await?;
                Ok(Found::Paid(CheckoutOutcome::Paid { order, rows }))
            }
            // Not live, so not found by the key (an answer that is not kept).
            OrderStatus::Declined | OrderStatus::Canceled => {
                Err(LedgerError::CheckoutKeyTaken.into())
            }
        }
    }

    /// The gateway `order` records, opened with the credentials saved now,
    /// only if they are the ones its first call used (`account`).
    fn reopen(
        &self,
        tenant: &TenantId,
        order: &Order,
        account: Option<String>,
        records: &Records,
    ) -> Result<(ProviderId, OpenGateway), CheckoutError> {
        let unavailable = |name: &str| {
            CheckoutError::Unavailable(format!(
                "order {} may hold a charge at `{name}`, which is not enabled for this tenant now; \
                 it is resumed there only",
                order.id
            ))
        };
        let provider_id = order.provider.clone().ok_or_else(|| unavailable("?"))?;
        let record = records
            .iter()
            .find(|r| r.settings.provider == provider_id && r.settings.enabled)
            .ok_or_else(|| unavailable(provider_id.as_str()))?;
        let provider = self
            .gateways
            .providers()
            .get(provider_id.as_str())
            .ok_or_else(|| unavailable(provider_id.as_str()))?;
        let open = self.gateways.open_record(provider, tenant, record)?;
        // Other credentials may be another account, which never saw the
        // first call's idempotency key: resuming there could charge twice.
        // An order without one (stored by a build before migration 0004)
        // cannot tell, so it waits too.
        let same = account.as_deref().is_some_and(|account| {
            self.gateways
                .same_credentials(tenant, provider_id.as_str(), &open, account)
        });
        if !same {
            return Err(CheckoutError::Unavailable(format!(
                "order {} may hold a charge at `{provider_id}` under the credentials saved at \
                 the time, and other credentials are saved now; it is resumed only with those",
                order.id
            )));
        }
        Ok((provider_id, open))
    }
}
