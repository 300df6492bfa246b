//! The attempt loop: stage the order, call the route's gateways in order,
//! fall through only when a gateway provably did not process the charge.

use std::future::Future;

use futures_util::TryFutureExt;
use futures_util::future::Either;

use super::outcome::{describe, outcome_unknown, provider_failure};
use super::request::{
    checkout_metadata, checkout_scope, gateway_key, key_generation, lines_of, payment_request,
};
use super::{CheckoutError, CheckoutOutcome, CheckoutRequest, Checkouts};
use crate::gateways::{OpenGateway, Records};
use crate::ledger::{self, LedgerError, NewOrder, Order, OrderKind, OrderLine, OrderStatus};
use crate::quota::CHECKOUTS_MONTHLY;
use crate::runtime::contract::{CallContext, Payment, PaymentRequest, ProviderError};
use crate::runtime::{CallError, LoadedProvider, SendGate, send_gate};
use crate::store::gateways::GatewaySettingsRecord;
use crate::store::{ProviderId, TenantId};

/// What one gateway attempt left for the loop.
enum Attempt {
    /// The checkout ended here (paid, pending, awaiting the customer).
    Done(CheckoutOutcome),
    /// The gateway provably did not process the charge: the next one may.
    /// The error is the client's if no gateway is left.
    Next(CheckoutError),
}

/// One gateway's answer to a payment request.
type Answer = Result<Payment, CallError<ProviderError>>;

impl Checkouts {
    /// [`Checkouts::checkout`] without its budget.
    pub(super) async fn checkout_unbounded(
        &self,
        tenant: &TenantId,
        request: CheckoutRequest,
    ) -> Result<CheckoutOutcome, CheckoutError> {
        let lines = lines_of(&request.items, request.shipping)?;
        let generation =
            key_generation(&self.store, tenant, request.idempotency_key.as_deref()).await?;
        let records = self.gateways.records(tenant).await?;
        let route = self.route(tenant, &records, request.currency, request.capture)?;
        // The first gateway is opened before the order is staged: the
        // order records it, and the account its credentials belong to.
        let mut route = route.into_iter();
        let (first_record, first_provider) = route
            .next()
            .ok_or_else(|| CheckoutError::NoRoute(request.currency.as_str().into()))?;
        let first_open = self
            .gateways
            .open_record(first_provider, tenant, first_record)?;
        // The order is committed while the first gateway call gets ready;
        // that call's requests wait until the commit is durable. It records
        // that first gateway, and the client's key (see `resume`).
        let (order, stored) = self.stage(
            tenant,
            &request,
            &lines,
            first_record,
            &first_open,
            generation,
        )?;
        let mut stored = Some(stored);

        let mut last_retriable = None;
        let mut next = Some((first_record, first_open));
        loop {
            let (record, open) = match next.take() {
                Some(first) => first,
                None => match route.next() {
                    Some((record, provider)) => {
                        (record, self.gateways.open_record(provider, tenant, record)?)
                    }
                    None => break,
                },
            };
            let c = Checkout {
                tenant,
                request: &request,
                order: &order,
                lines: &lines,
                records: &records,
                generation,
            };
            match self.attempt(&c, record, open, stored.take()).await? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Next(e) => last_retriable = Some(e),
            }
        }
        if let Some(stored) = stored {
            // No gateway was even tried; keep the record of the attempt.
            stored.await?;
        }
        let _ = self.mark(tenant, &order.id, OrderStatus::Canceled).await;
        Err(last_retriable
            .unwrap_or_else(|| CheckoutError::NoRoute(request.currency.as_str().into())))
    }

    /// The order, and the future that commits it. The order is committed
    /// while the first gateway call gets ready; that call's requests wait
    /// until the commit is durable. It records that first gateway, the
    /// account its credentials belong to (the fingerprint a resume checks),
    /// and the client's key (see `resume`). The tenant's monthly checkout
    /// is counted in the same transaction: over the quota, nothing is
    /// stored and nothing is sent.
    fn stage(
        &self,
        tenant: &TenantId,
        request: &CheckoutRequest,
        lines: &[OrderLine],
        first: &GatewaySettingsRecord,
        first_open: &OpenGateway,
        generation: i64,
    ) -> Result<
        (
            Order,
            impl Future<Output = Result<(), CheckoutError>> + Send + use<>,
        ),
        CheckoutError,
    > {
        let customer_json = request
            .customer
            .as_ref()
            .map(|c| serde_json::json!({"id": c.id, "email": c.email, "name": c.name}))
            .unwrap_or(serde_json::Value::Null);
        let order = NewOrder {
            kind: OrderKind::Checkout,
            currency: request.currency,
            lines: lines.to_vec(),
            metadata: checkout_metadata(request, &customer_json),
            customer: customer_json,
            provider: Some(first.settings.provider.clone()),
            checkout_key: request.idempotency_key.clone(),
            gateway_account: Some(first_open.credentials_fingerprint.clone()),
            key_generation: Some(generation),
        };
        Ok(match self.quotas.admission(tenant, CHECKOUTS_MONTHLY) {
            Some(admission) => {
                let (order, stored) = ledger::stage_order_with::<_, CheckoutError>(
                    &self.store,
                    tenant,
                    &order,
                    admission,
                )?;
                (order, Either::Left(stored))
            }
            None => {
                let (order, stored) = ledger::stage_order(&self.store, tenant, &order)?;
                (order, Either::Right(stored.map_err(CheckoutError::from)))
            }
        })
    }

    /// One gateway's attempt at the checkout's order. `stored` is the
    /// order's pending commit, for the first attempt only. `Err` ends the
    /// checkout with that error.
    async fn attempt<S>(
        &self,
        c: &Checkout<'_>,
        record: &GatewaySettingsRecord,
        open: OpenGateway,
        stored: Option<S>,
    ) -> Result<Attempt, CheckoutError>
    where
        S: Future<Output = Result<(), CheckoutError>> + Send,
    {
        let provider_id = record.settings.provider.clone();
        let mut ctx = open.ctx;
        ctx.idempotency_key = Some(gateway_key(
            c.tenant,
            c.request.idempotency_key.as_deref(),
            c.order.id.as_str(),
            &checkout_scope(provider_id.as_str(), c.generation),
        ));
        let wire = payment_request(c.tenant, c.request, c.order);
        // Set when this attempt's requests waited for the order's commit.
        let mut held = None;
        let answer = match stored {
            Some(stored) => {
                let (stored, answer, gate) =
                    call_beside_commit(stored, &open.provider, ctx, wire).await;
                held = Some(gate);
                match stored {
                    Ok(()) => answer,
                    // A live order holds this key: this is a retry.
                    // This call's requests were denied before any I/O.
                    Err(CheckoutError::Ledger(LedgerError::CheckoutKeyTaken)) => {
                        let resumed = self.resume(c.tenant, c.request, c.order, c.records);
                        return resumed.await.map(Attempt::Done);
                    }
                    // Not stored: the call's requests were denied
                    // before any I/O, so nothing was charged.
                    Err(e) => return Err(e),
                }
            }
            None => {
                // A fallback: record the gateway that may hold the
                // charge before any request reaches it, so a retry
                // resumes there and nowhere else.
                ledger::route_pending_order(
                    &self.store,
                    c.tenant,
                    &c.order.id,
                    &provider_id,
                    &open.credentials_fingerprint,
                )
                .await?;
                open.provider.create_payment(ctx, wire).await
            }
        };
        self.judge(c, provider_id, held.as_ref(), answer).await
    }

    /// What the loop does with a gateway's answer: settle it, try the next
    /// gateway (only when this one provably did not process the charge), or
    /// end the checkout.
    async fn judge(
        &self,
        c: &Checkout<'_>,
        provider_id: ProviderId,
        held: Option<&SendGate>,
        answer: Answer,
    ) -> Result<Attempt, CheckoutError> {
        let (tenant, order) = (c.tenant, c.order);
        let name = provider_id.as_str();
        match answer {
            Ok(payment) => {
                let order = order.clone();
                self.settle(tenant, order, c.lines, provider_id, payment)
                    .await
                    .map(Attempt::Done)
            }
            // 429: the gateway did not process it; the next one may.
            Err(CallError::Gateway(ProviderError::RateLimited(after))) => {
                tracing::warn!(provider = %name, order = %order.id, "gateway rate limited, trying next");
                Ok(Attempt::Next(CheckoutError::RateLimited(after)))
            }
            // The component never ran: nothing was sent.
            Err(e @ CallError::Instantiate(_)) => {
                tracing::warn!(provider = %name, order = %order.id, "provider could not start, trying next: {e}");
                Ok(Attempt::Next(provider_failure(&e)))
            }
            // The deadline struck while the request still waited for
            // the order's commit: nothing was sent (sealing makes sure
            // a request released just now cannot leave either).
            Err(e @ CallError::Deadline { .. }) if held.is_some_and(SendGate::seal_if_unused) => {
                tracing::warn!(provider = %name, order = %order.id, "deadline before any request left, trying next: {e}");
                Ok(Attempt::Next(provider_failure(&e)))
            }
            Err(CallError::Gateway(ProviderError::Declined(d))) => {
                Err(self.declined(tenant, &order.id, d).await)
            }
            // The gateway refused the request itself: nothing charged.
            Err(CallError::Gateway(ProviderError::InvalidRequest(message))) => {
                let _ = self.mark(tenant, &order.id, OrderStatus::Canceled).await;
                Err(CheckoutError::GatewayInvalidRequest {
                    provider: name.to_owned(),
                    message,
                })
            }
            Err(CallError::Gateway(
                e @ (ProviderError::InvalidCredentials(_) | ProviderError::Unsupported(_)),
            )) => {
                let _ = self.mark(tenant, &order.id, OrderStatus::Canceled).await;
                Err(CheckoutError::Gateway {
                    provider: name.to_owned(),
                    message: describe(&e),
                })
            }
            // Unknown outcome: the gateway may have charged. The order
            // stays pending with this gateway recorded, for
            // reconciliation; a client retry with the same
            // Idempotency-Key resumes it there (`resume`).
            Err(e) => Err(outcome_unknown(name, e)),
        }
    }
}

/// What every attempt of one checkout shares.
struct Checkout<'a> {
    tenant: &'a TenantId,
    request: &'a CheckoutRequest,
    order: &'a Order,
    lines: &'a [OrderLine],
    records: &'a Records,
    /// Orders under the client's key canceled before this one.
    generation: i64,
}

/// The first gateway call, run beside the order's commit: its requests wait
/// at the send gate until the commit is durable, and are refused (before
/// any I/O) if it fails. The commit's result, the call's, and the gate (to
/// tell whether any request left).
async fn call_beside_commit<S>(
    stored: S,
    provider: &LoadedProvider,
    ctx: CallContext,
    wire: PaymentRequest,
) -> (Result<(), CheckoutError>, Answer, SendGate)
where
    S: Future<Output = Result<(), CheckoutError>> + Send,
{
    let (opener, gate) = send_gate();
    let held = gate.clone();
    let stored = async move {
        let result = stored.await;
        match result {
            Ok(()) => opener.open(),
            Err(_) => opener.refuse(),
        }
        result
    };
    let (stored, answer) =
        tokio::join!(stored, provider.create_payment_after(Some(gate), ctx, wire));
    (stored, answer, held)
}
