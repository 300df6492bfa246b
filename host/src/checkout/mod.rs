//! Checkout orchestration: route a cart to a gateway, call the provider,
//! book the outcome in the ledger; orders without a gateway; refunds.
//!
//! Must never: book a row for money that did not move, charge twice for one
//! order (every gateway call carries an idempotency key derived from the
//! order), or let refunds exceed what was paid (the ledger enforces it; the
//! reservation keeps two concurrent API refunds from both reaching the gateway).

use std::sync::Arc;

use serde::Serialize;

use crate::gateways::{Gateways, Records, RouteEntry, eligible};
use crate::ledger::{
    self, Entitlement, GatewayRef, LedgerError, LedgerRow, NewOrder, Order, OrderKind, OrderLine,
    OrderStatus, Source,
};
use crate::runtime::contract::{
    Capabilities, CaptureMode, Customer, Money as WireMoney, NextAction, PaymentRequest,
    PaymentState, ProviderError, RefundRequest, RefundStatus,
};
use crate::runtime::{CallError, LoadedProvider, SendGate, send_gate};
use crate::store::gateways::GatewaySettingsRecord;
use crate::store::{
    Currency, MAX_LINE_MINOR, Money, OrderId, PaymentId, ProviderId, Store, TenantId,
};

/// A line of a cart.
#[derive(Debug, Clone)]
pub struct CartItem {
    /// Price of one unit, minor units.
    pub unit_amount: i64,
    /// Units.
    pub quantity: i64,
    /// The user plan this line grants, if any.
    pub user_plan: Option<Entitlement>,
}

/// One order of [`Checkouts::gateway_less_many`].
#[derive(Debug, Clone)]
pub struct GatewayLessOrder {
    pub items: Vec<CartItem>,
    /// Stored as the order's customer (`{"id": …}` for a bulk user).
    pub customer: serde_json::Value,
    /// The outside system's reference, for external orders.
    pub external_ref: Option<String>,
    /// The client's descriptive fields (product names), kept in the
    /// order's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// What a checkout asks for.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub currency: Currency,
    pub items: Vec<CartItem>,
    /// Carrier cost of a physical product, minor units.
    pub shipping: Option<i64>,
    pub customer: Option<Customer>,
    pub payment_method: Option<String>,
    pub return_url: Option<String>,
    pub capture: CaptureMode,
    /// The client's `Idempotency-Key`, if any. Gateway idempotency keys are
    /// derived from it, so a client retry that reaches the gateway again
    /// (even as a new order) replays the first charge instead of making a
    /// second one.
    pub idempotency_key: Option<String>,
    /// The client's descriptive fields (product names, carrier), kept in
    /// the order's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// The longest a checkout runs. Shorter than the `Idempotency-Key`
/// in-flight lease by a margin (clocks of several instances, writes that
/// land after the stop), so a retry that takes the key over never runs
/// beside the first attempt.
pub const CHECKOUT_BUDGET: std::time::Duration = std::time::Duration::from_secs(240);
const _: () =
    assert!(CHECKOUT_BUDGET.as_secs() + 60 <= crate::store::idempotency::IN_FLIGHT_LEASE.as_secs());

/// The idempotency key sent to a gateway for one operation: derived from the
/// client's key when there is one (stable across client retries), else from
/// our own id for the operation. Never longer than 64 characters.
pub fn gateway_key(
    tenant: &TenantId,
    client_key: Option<&str>,
    fallback: &str,
    scope: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let basis = match client_key {
        Some(k) => format!("client:{tenant}:{k}:{scope}"),
        None => format!("own:{tenant}:{fallback}:{scope}"),
    };
    let digest = Sha256::digest(basis.as_bytes());
    format!("payhost-{}", &hex::encode(digest)[..48])
}

/// How a checkout ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CheckoutOutcome {
    /// Money moved; the ledger rows are booked.
    Paid { order: Order, rows: Vec<LedgerRow> },
    /// The customer must act; nothing booked yet.
    RequiresAction {
        order: Order,
        next_action: serde_json::Value,
    },
    /// The gateway accepted but has not settled; nothing booked yet.
    Pending { order: Order },
}

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

/// Why a checkout or refund failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("{0}")]
    Invalid(String),
    #[error("no enabled gateway accepts {0}")]
    NoRoute(String),
    #[error("declined: {code}: {message}")]
    Declined {
        order: Box<Order>,
        code: String,
        message: String,
    },
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    #[error("gateway rate limited")]
    RateLimited(Option<u32>),
    #[error("gateway error ({provider}): {message}")]
    Gateway { provider: String, message: String },
    /// The gateway refused the request as invalid (`invalid-request`): an
    /// unknown payment method, an amount over its maximum, a bad return
    /// URL. Nothing was charged or refunded; the client can fix the request.
    #[error("the gateway refused the request ({provider}): {message}")]
    GatewayInvalidRequest { provider: String, message: String },
    /// The operation needs a capability the provider's manifest does not
    /// claim; refused before the component is called.
    #[error("{provider} does not support {capability}")]
    CapabilityNotSupported {
        provider: String,
        capability: &'static str,
    },
    /// The gateway took a refund of another amount (or currency) than
    /// requested. Nothing is booked: the hold stays, with the gateway's
    /// refund reference, for reconciliation, and the operator is audited.
    #[error(
        "{provider} reported refund {reference} of {reported_minor} {reported_currency} for hold {hold} of {requested}"
    )]
    RefundAmountMismatch {
        provider: String,
        hold: crate::store::RefundReservationId,
        reference: GatewayRef,
        requested: Money,
        reported_minor: u64,
        reported_currency: String,
    },
    #[error("provider failure ({code}): {message}")]
    Provider { code: &'static str, message: String },
    /// The checkout ran past [`CHECKOUT_BUDGET`] and was stopped; its
    /// order is kept as it was.
    #[error("the checkout took longer than its budget")]
    OverBudget,
    /// The `Idempotency-Key` holds a live order with another cart or other
    /// payment details.
    #[error("the Idempotency-Key was used for another checkout")]
    KeyReused,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Settings(#[from] crate::gateways::GatewayError),
}

/// The checkout service.
#[derive(Clone)]
pub struct Checkouts {
    store: Store,
    gateways: Gateways,
}

fn lines_of(items: &[CartItem], shipping: Option<i64>) -> Result<Vec<OrderLine>, CheckoutError> {
    if items.is_empty() {
        return Err(CheckoutError::Invalid(
            "a checkout needs at least one item".into(),
        ));
    }
    let mut lines = Vec::with_capacity(items.len() + 1);
    for (i, item) in items.iter().enumerate() {
        if item.unit_amount <= 0 || item.quantity <= 0 {
            return Err(CheckoutError::Invalid(format!(
                "items[{i}]: amount and quantity must be positive"
            )));
        }
        let amount = item
            .unit_amount
            .checked_mul(item.quantity)
            .filter(|a| *a <= MAX_LINE_MINOR)
            .ok_or_else(|| {
                CheckoutError::Invalid(format!(
                    "items[{i}]: amount × quantity exceeds the maximum of {MAX_LINE_MINOR} minor units per line"
                ))
            })?;
        lines.push(OrderLine::product(amount, item.user_plan.clone()));
    }
    if let Some(cost) = shipping {
        if cost <= 0 || cost > MAX_LINE_MINOR {
            return Err(CheckoutError::Invalid(format!(
                "shipping.amount must be positive and at most {MAX_LINE_MINOR} minor units"
            )));
        }
        lines.push(OrderLine::shipping(cost));
    }
    Ok(lines)
}

fn next_action_json(action: &NextAction) -> serde_json::Value {
    match action {
        NextAction::Redirect(url) => serde_json::json!({"type": "redirect", "url": url}),
        NextAction::SdkData(data) => serde_json::json!({"type": "sdk_data", "data": data}),
    }
}

/// A provider error as text for a client: the variant and the gateway's
/// message (the bundled components scrub secrets from it).
fn describe(e: &ProviderError) -> String {
    match e {
        ProviderError::InvalidCredentials(m) => format!("invalid credentials: {m}"),
        ProviderError::Declined(d) => format!("declined: {}: {}", d.code, d.message),
        ProviderError::InvalidRequest(m) => format!("invalid request: {m}"),
        ProviderError::Unavailable(m) => format!("unavailable: {m}"),
        ProviderError::RateLimited(_) => "rate limited".into(),
        ProviderError::Unsupported(m) => format!("unsupported: {m}"),
        ProviderError::Internal(m) => format!("internal: {m}"),
    }
}

/// The error of a gateway call whose outcome is unknown: the gateway may
/// have charged, so the order stays as it is. Never a 4xx: a client error
/// would be kept for `Idempotency-Key` replay and lock the retry that can
/// still resume the order (an `invalid-request` here, e.g. Stripe's
/// `idempotency_error` on a resumed call, says nothing about the charge).
fn outcome_unknown(provider: &str, e: CallError<ProviderError>) -> CheckoutError {
    match e {
        CallError::Gateway(ProviderError::Unavailable(m)) => CheckoutError::Unavailable(m),
        CallError::Gateway(ProviderError::RateLimited(after)) => CheckoutError::RateLimited(after),
        CallError::Gateway(other) => CheckoutError::Gateway {
            provider: provider.to_owned(),
            message: describe(&other),
        },
        other => provider_failure(&other),
    }
}

/// What a checkout sends a gateway for `order`. A retry that resumes the
/// order must send exactly this again, so it is built in one place.
fn payment_request(tenant: &TenantId, request: &CheckoutRequest, order: &Order) -> PaymentRequest {
    PaymentRequest {
        amount: to_wire(order.amount),
        order_id: order.id.to_string(),
        description: None,
        payment_method: request.payment_method.clone(),
        capture: request.capture,
        return_url: request.return_url.clone(),
        customer: request.customer.clone(),
        metadata: vec![("tenant_id".into(), tenant.to_string())],
    }
}

/// A checkout order's metadata. Under an `Idempotency-Key` it holds a
/// fingerprint of what the gateway call sends besides the order (payment
/// method, capture, return URL, customer), so a retry under the same key
/// resumes the order only if the gateway would see the same request.
fn checkout_metadata(request: &CheckoutRequest, customer: &serde_json::Value) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let mut metadata = request.metadata.clone();
    if request.idempotency_key.is_none() {
        return serde_json::Value::Object(metadata);
    }
    let capture = match request.capture {
        CaptureMode::Automatic => "automatic",
        CaptureMode::Manual => "manual",
    };
    let sent = serde_json::json!({
        "payment_method": request.payment_method,
        "capture": capture,
        "return_url": request.return_url,
        "customer": customer,
    });
    let digest = Sha256::digest(sent.to_string().as_bytes());
    metadata.insert(
        "checkout_fingerprint".into(),
        hex::encode(&digest[..16]).into(),
    );
    serde_json::Value::Object(metadata)
}

fn provider_failure<E: std::fmt::Debug>(e: &CallError<E>) -> CheckoutError {
    CheckoutError::Provider {
        code: e.code(),
        message: e.to_string(),
    }
}

impl Checkouts {
    /// A checkout service.
    pub fn new(store: Store, gateways: Gateways) -> Checkouts {
        Checkouts { store, gateways }
    }

    /// Route, charge, book. A gateway that provably did not process the
    /// charge (rate limited, or its component could not even start) falls
    /// through to the next eligible gateway with the same order. When the
    /// outcome is unknown (5xx, deadline, sandbox violation after a request
    /// went out) the order stays `pending` for reconciliation and nothing is
    /// booked: falling through there could charge at two gateways.
    ///
    /// A checkout that runs past [`CHECKOUT_BUDGET`] is stopped where it is
    /// (its order keeps what it recorded), so it can never still be running
    /// when the `Idempotency-Key`'s in-flight lease lets a retry resume its
    /// order: two runs of one order could call two gateways.
    pub async fn checkout(
        &self,
        tenant: &TenantId,
        request: CheckoutRequest,
    ) -> Result<CheckoutOutcome, CheckoutError> {
        tokio::time::timeout(CHECKOUT_BUDGET, self.checkout_unbounded(tenant, request))
            .await
            .unwrap_or(Err(CheckoutError::OverBudget))
    }

    async fn checkout_unbounded(
        &self,
        tenant: &TenantId,
        request: CheckoutRequest,
    ) -> Result<CheckoutOutcome, CheckoutError> {
        let lines = lines_of(&request.items, request.shipping)?;
        let records = self.gateways.records(tenant).await?;
        let route = self.route(&records, request.currency, request.capture)?;
        let customer_json = request
            .customer
            .as_ref()
            .map(|c| serde_json::json!({"id": c.id, "email": c.email, "name": c.name}))
            .unwrap_or(serde_json::Value::Null);
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
        let (order, stored) = ledger::stage_order(
            &self.store,
            tenant,
            &NewOrder {
                kind: OrderKind::Checkout,
                currency: request.currency,
                lines: lines.clone(),
                metadata: checkout_metadata(&request, &customer_json),
                customer: customer_json,
                provider: Some(first_record.settings.provider.clone()),
                checkout_key: request.idempotency_key.clone(),
                gateway_account: Some(first_open.credentials_fingerprint.clone()),
            },
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
            let provider_id = record.settings.provider.clone();
            let name = provider_id.as_str();
            let mut ctx = open.ctx;
            ctx.idempotency_key = Some(gateway_key(
                tenant,
                request.idempotency_key.as_deref(),
                order.id.as_str(),
                &format!("checkout:{name}"),
            ));
            let wire = payment_request(tenant, &request, &order);
            // Set when this attempt's requests waited for the order's commit.
            let mut held = None;
            let result = match stored.take() {
                Some(stored) => {
                    let (opener, gate) = send_gate();
                    held = Some(gate.clone());
                    let stored = async move {
                        let result = stored.await;
                        match result {
                            Ok(()) => opener.open(),
                            Err(_) => opener.refuse(),
                        }
                        result
                    };
                    let (stored, result) = tokio::join!(
                        stored,
                        open.provider.create_payment_after(Some(gate), ctx, wire)
                    );
                    match stored {
                        Ok(()) => result,
                        // A live order holds this key: this is a retry.
                        // This call's requests were denied before any I/O.
                        Err(LedgerError::CheckoutKeyTaken) => {
                            return self.resume(tenant, &request, &order, &records).await;
                        }
                        // Not stored: the call's requests were denied
                        // before any I/O, so nothing was charged.
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {
                    // A fallback: record the gateway that may hold the
                    // charge before any request reaches it, so a retry
                    // resumes there and nowhere else.
                    ledger::route_pending_order(
                        &self.store,
                        tenant,
                        &order.id,
                        &provider_id,
                        &open.credentials_fingerprint,
                    )
                    .await?;
                    open.provider.create_payment(ctx, wire).await
                }
            };
            match result {
                Ok(payment) => {
                    return self
                        .settle(tenant, order, &lines, provider_id, payment)
                        .await;
                }
                // 429: the gateway did not process it; the next one may.
                Err(CallError::Gateway(ProviderError::RateLimited(after))) => {
                    tracing::warn!(provider = %name, order = %order.id, "gateway rate limited, trying next");
                    last_retriable = Some(CheckoutError::RateLimited(after));
                }
                // The component never ran: nothing was sent.
                Err(e @ CallError::Instantiate(_)) => {
                    tracing::warn!(provider = %name, order = %order.id, "provider could not start, trying next: {e}");
                    last_retriable = Some(provider_failure(&e));
                }
                // The deadline struck while the request still waited for
                // the order's commit: nothing was sent (sealing makes sure
                // a request released just now cannot leave either).
                Err(e @ CallError::Deadline { .. })
                    if held.as_ref().is_some_and(SendGate::seal_if_unused) =>
                {
                    tracing::warn!(provider = %name, order = %order.id, "deadline before any request left, trying next: {e}");
                    last_retriable = Some(provider_failure(&e));
                }
                Err(CallError::Gateway(ProviderError::Declined(d))) => {
                    return Err(self.declined(tenant, &order.id, d).await);
                }
                // The gateway refused the request itself: nothing charged.
                Err(CallError::Gateway(ProviderError::InvalidRequest(message))) => {
                    let _ = self.mark(tenant, &order.id, OrderStatus::Canceled).await;
                    return Err(CheckoutError::GatewayInvalidRequest {
                        provider: name.to_owned(),
                        message,
                    });
                }
                Err(CallError::Gateway(
                    e @ (ProviderError::InvalidCredentials(_) | ProviderError::Unsupported(_)),
                )) => {
                    let _ = self.mark(tenant, &order.id, OrderStatus::Canceled).await;
                    return Err(CheckoutError::Gateway {
                        provider: name.to_owned(),
                        message: describe(&e),
                    });
                }
                // Unknown outcome: the gateway may have charged. The order
                // stays pending with this gateway recorded, for
                // reconciliation; a client retry with the same
                // Idempotency-Key resumes it there (`resume`).
                Err(e) => return Err(outcome_unknown(name, e)),
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

    /// The tenant's gateways that take `currency`, enabled and loaded, in
    /// priority order, each with its provider; none → [`CheckoutError::NoRoute`].
    /// A manual capture goes only to providers whose manifest claims
    /// `capture`; if none of the eligible ones does →
    /// [`CheckoutError::CapabilityNotSupported`].
    fn route<'r>(
        &self,
        records: &'r Records,
        currency: Currency,
        capture: CaptureMode,
    ) -> Result<Vec<(&'r GatewaySettingsRecord, Arc<LoadedProvider>)>, CheckoutError> {
        let entries: Vec<RouteEntry> = records
            .iter()
            .map(|r| RouteEntry {
                provider: r.settings.provider.as_str().to_string(),
                priority: r.settings.priority,
                currencies: r
                    .settings
                    .currencies
                    .iter()
                    .map(|c| c.as_str().to_string())
                    .collect(),
                enabled: r.settings.enabled,
            })
            .collect();
        let providers = self.gateways.providers();
        let route: Vec<_> = eligible(&entries, currency.as_str(), |p| providers.get(p).is_some())
            .into_iter()
            .filter_map(|entry| {
                let record = records
                    .iter()
                    .find(|r| r.settings.provider.as_str() == entry.provider)?;
                Some((record, providers.get(&entry.provider)?))
            })
            .collect();
        if route.is_empty() {
            return Err(CheckoutError::NoRoute(currency.as_str().to_string()));
        }
        if capture == CaptureMode::Manual {
            let first = route[0].1.id().to_owned();
            let capable: Vec<_> = route
                .into_iter()
                .filter(|(_, p)| p.manifest().capabilities.contains(Capabilities::CAPTURE))
                .collect();
            if capable.is_empty() {
                return Err(CheckoutError::CapabilityNotSupported {
                    provider: first,
                    capability: "capture",
                });
            }
            return Ok(capable);
        }
        Ok(route)
    }

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
    async fn resume(
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
        let (order, account) = ledger::live_order_for_checkout_key(&self.store, tenant, key)
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
            OrderStatus::Pending | OrderStatus::RequiresAction => {}
            OrderStatus::Paid | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
                let rows = ledger::rows_for_order(&self.store, tenant, &order.id).await?;
                return Ok(CheckoutOutcome::Paid { order, rows });
            }
            // Not live, so not found by the key (an answer that is not kept).
            OrderStatus::Declined | OrderStatus::Canceled => {
                return Err(LedgerError::CheckoutKeyTaken.into());
            }
        }
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
        let mut ctx = open.ctx;
        ctx.idempotency_key = Some(gateway_key(
            tenant,
            Some(key),
            order.id.as_str(),
            &format!("checkout:{provider_id}"),
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

    /// Marks the order declined; the error the client gets.
    async fn declined(
        &self,
        tenant: &TenantId,
        order: &OrderId,
        decline: crate::runtime::contract::Decline,
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

    async fn mark(
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

    async fn settle(
        &self,
        tenant: &TenantId,
        order: Order,
        lines: &[OrderLine],
        provider: ProviderId,
        payment: crate::runtime::contract::Payment,
    ) -> Result<CheckoutOutcome, CheckoutError> {
        let reference = payment.reference;
        let state = payment.state;
        let gateway_ref = GatewayRef::parse(&reference).map_err(|e| CheckoutError::Provider {
            code: "provider_bad_reference",
            message: format!("{provider}: unusable payment reference: {e}"),
        })?;
        // Book only what the gateway says moved: a component reporting
        // another amount or currency leaves the order pending.
        let mismatch = payment.amount.minor != order.amount.minor.max(0) as u64
            || payment.amount.currency != order.amount.currency.as_str();
        // The approved path records the reference in its booking commit.
        if mismatch || !matches!(state, PaymentState::Approved) {
            ledger::set_order_gateway(
                &self.store,
                tenant,
                &order.id,
                &provider,
                Some(&gateway_ref),
            )
            .await?;
        }
        if mismatch {
            self.audit_mismatch(
                tenant,
                "payment.amount_mismatch",
                serde_json::json!({
                    "order_id": order.id,
                    "provider": provider.as_str(),
                    "gateway_reference": gateway_ref.as_str(),
                    "requested": {"amount": order.amount.minor, "currency": order.amount.currency.as_str()},
                    "reported": {"amount": payment.amount.minor, "currency": payment.amount.currency},
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
        match state {
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
                            .ledger_row(order.amount.currency, Source::Api)
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

    /// An order without a gateway (manual or external): no gateway call;
    /// rows booked at once; access granted.
    pub async fn gateway_less(
        &self,
        tenant: &TenantId,
        kind: OrderKind,
        currency: Currency,
        items: &[CartItem],
        customer: serde_json::Value,
        external_ref: Option<&str>,
    ) -> Result<(Order, Vec<LedgerRow>), CheckoutError> {
        let order = GatewayLessOrder {
            items: items.to_vec(),
            customer,
            external_ref: external_ref.map(str::to_owned),
            metadata: serde_json::Map::new(),
        };
        let mut booked = self
            .gateway_less_many(tenant, kind, currency, std::slice::from_ref(&order))
            .await?;
        booked
            .pop()
            .ok_or_else(|| CheckoutError::Invalid("nothing was booked".into()))
    }

    /// Several gateway-less orders (a bulk order: one per user) in **one**
    /// transaction: every order is booked and paid, or none is. A failure on
    /// the last entry (or in the commit) leaves nothing behind, so retrying a
    /// failed request cannot book the first users twice. (Retrying one whose
    /// response was lost needs an `Idempotency-Key`, like every mutating
    /// call.) On SQLite the write lock is held for the whole batch: three
    /// statements per user, up to 1,000 users.
    pub async fn gateway_less_many(
        &self,
        tenant: &TenantId,
        kind: OrderKind,
        currency: Currency,
        orders: &[GatewayLessOrder],
    ) -> Result<Vec<(Order, Vec<LedgerRow>)>, CheckoutError> {
        if kind == OrderKind::Checkout {
            return Err(CheckoutError::Invalid(
                "checkout orders go through a gateway".into(),
            ));
        }
        let mut tx = self.store.begin_write().await.map_err(LedgerError::from)?;
        let mut out = Vec::with_capacity(orders.len());
        for (i, entry) in orders.iter().enumerate() {
            // Dropping `tx` on an early return rolls every entry back.
            let lines = lines_of(&entry.items, None).map_err(|e| match e {
                CheckoutError::Invalid(m) if orders.len() > 1 => {
                    CheckoutError::Invalid(format!("orders[{i}]: {m}"))
                }
                other => other,
            })?;
            let mut metadata = entry.metadata.clone();
            if let Some(r) = &entry.external_ref {
                metadata.insert("external_reference".into(), r.as_str().into());
            }
            let metadata = serde_json::Value::Object(metadata);
            let order = ledger::create_order_in(
                &mut tx,
                tenant,
                &NewOrder {
                    kind,
                    currency,
                    lines: lines.clone(),
                    customer: entry.customer.clone(),
                    metadata,
                    provider: None,
                    checkout_key: None,
                    gateway_account: None,
                },
            )
            .await?;
            let rows: Vec<_> = lines
                .iter()
                .map(|l| l.ledger_row(currency, Source::Manual))
                .collect();
            let booked = ledger::book_order_rows_in(&mut tx, tenant, &order.id, &rows).await?;
            let order = ledger::transition_order_in(
                &mut tx,
                tenant,
                &order.id,
                &[OrderStatus::Pending],
                OrderStatus::Paid,
            )
            .await?;
            out.push((order, booked));
        }
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(out)
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

    /// Orders are workflow state: after a refund, mark the order
    /// `partially_refunded` or `refunded` from the ledger's sums.
    async fn update_order_after_refund(&self, tenant: &TenantId, order: &OrderId) {
        let rows = match ledger::rows_for_order(&self.store, tenant, order).await {
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
            &self.store,
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
        let provider = self
            .gateways
            .providers()
            .get(provider_id.as_str())
            .ok_or_else(|| {
                crate::gateways::GatewayError::UnknownProvider(provider_id.as_str().into())
            })?;
        let whole = if provider
            .manifest()
            .capabilities
            .contains(Capabilities::PARTIAL_REFUND)
        {
            None
        } else {
            let order = ledger::get_order(&self.store, tenant, &row.order_id)
                .await?
                .ok_or(LedgerError::OrderNotFound)?;
            Some(order.amount.minor)
        };
        let partial = |minor: i64| whole.is_some_and(|whole| minor < whole);
        let not_supported = || CheckoutError::CapabilityNotSupported {
            provider: provider_id.as_str().into(),
            capability: "partial-refund",
        };
        if partial(amount.unwrap_or(row.amount.minor).min(row.amount.minor)) {
            return Err(not_supported());
        }
        let reservation = ledger::reserve_refund(&self.store, tenant, payment, amount).await?;
        let release = || async {
            if let Err(e) = ledger::release_refund(&self.store, tenant, &reservation.id).await {
                tracing::error!(reservation = %reservation.id, "cannot release refund hold: {e}");
            }
        };
        // What remains after earlier refunds (booked manually, by webhook,
        // or before a component update) is a partial refund too.
        if partial(reservation.amount.minor) {
            release().await;
            return Err(not_supported());
        }
        let open = match self.gateways.open(tenant, provider_id.as_str()).await {
            Ok(open) => open,
            Err(e) => {
                release().await;
                return Err(e.into());
            }
        };
        let Some(reference) = row.gateway_reference.clone() else {
            release().await;
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
            Ok(refund)
                if matches!(
                    refund.status,
                    RefundStatus::Pending | RefundStatus::Succeeded
                ) && refund.amount != to_wire(reservation.amount) =>
            {
                Err(self
                    .refund_mismatch(tenant, &provider_id, reservation, refund)
                    .await)
            }
            Ok(refund) if refund.status == RefundStatus::Pending => {
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
            Ok(refund) if refund.status == RefundStatus::Succeeded => {
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
            Ok(refund) => {
                release().await;
                Err(CheckoutError::Gateway {
                    provider: provider_id.as_str().into(),
                    message: format!("refund {} ended {:?}", refund.reference, refund.status),
                })
            }
            Err(CallError::Gateway(
                e @ (ProviderError::Unavailable(_) | ProviderError::Internal(_)),
            )) => {
                // The request may have left and the gateway refunded (a read
                // timeout, a 5xx, a 2xx the component could not parse): keep
                // the hold, so the amount cannot be refunded a second time
                // before reconciliation settles it.
                tracing::warn!(
                    hold = %reservation.id,
                    "refund outcome unknown ({}); the amount stays held",
                    describe(&e)
                );
                Err(match e {
                    ProviderError::Unavailable(m) => CheckoutError::Unavailable(m),
                    other => CheckoutError::Gateway {
                        provider: provider_id.as_str().into(),
                        message: describe(&other),
                    },
                })
            }
            Err(CallError::Gateway(e)) => {
                // The gateway refused the refund: nothing moved.
                release().await;
                Err(match e {
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
                })
            }
            Err(e) => {
                // Outcome unknown (deadline): keep the hold for the janitor.
                Err(provider_failure(&e))
            }
        }
    }

    /// Records a gateway amount mismatch (`action`) for the operator. A
    /// failed audit write is logged, not returned: the caller's record of
    /// the mismatch (order or hold with its reference) is already stored.
    async fn audit_mismatch(&self, tenant: &TenantId, action: &str, details: serde_json::Value) {
        let audited = match crate::audit::Actor::system("checkout") {
            Ok(actor) => crate::audit::record(&self.store, &actor, action, Some(tenant), details)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = audited {
            tracing::error!(%tenant, action, "amount mismatch not audited: {e}");
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
        refund: crate::runtime::contract::Refund,
    ) -> CheckoutError {
        let reference = match refund_reference(&refund.reference) {
            Ok(reference) => reference,
            Err(e) => return e,
        };
        if let Err(e) = ledger::mark_refund_pending(&self.store, tenant, &hold.id, &reference).await
        {
            return e.into();
        }
        let details = serde_json::json!({
            "hold_id": hold.id,
            "payment_id": hold.payment_id,
            "provider": provider.as_str(),
            "gateway_refund_reference": reference.as_str(),
            "requested": {"amount": hold.amount.minor, "currency": hold.amount.currency.as_str()},
            "reported": {"amount": refund.amount.minor, "currency": refund.amount.currency},
        });
        // The hold and its reference are stored: reconciliation finds it
        // even if the audit write fails, so the client's answer is the same.
        self.audit_mismatch(tenant, "refund.amount_mismatch", details)
            .await;
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

/// The gateway's refund reference, which a webhook echo is matched on: an
/// unusable one is an error, never dropped silently.
fn refund_reference(reference: &str) -> Result<GatewayRef, CheckoutError> {
    GatewayRef::parse(reference).map_err(|e| CheckoutError::Provider {
        code: "provider_bad_reference",
        message: format!("refund reference: {e}"),
    })
}

fn to_wire(m: Money) -> WireMoney {
    WireMoney {
        minor: m.minor.max(0) as u64,
        currency: m.currency.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkouts(store: &Store) -> Checkouts {
        let key = crate::gateways::Vault::decode_key("k1", &crate::gateways::Vault::generate_key())
            .expect("key");
        let vault =
            crate::gateways::Vault::new("k1", [("k1".to_string(), key)].into()).expect("vault");
        let gateways = Gateways::new(
            store.clone(),
            std::sync::Arc::new(vault),
            std::sync::Arc::new(crate::runtime::ProviderRegistry::default()),
        );
        Checkouts::new(store.clone(), gateways)
    }

    fn user(n: i64, quantity: i64) -> GatewayLessOrder {
        GatewayLessOrder {
            items: vec![CartItem {
                unit_amount: 100 * n,
                quantity,
                user_plan: Some(Entitlement::parse("pro").expect("plan")),
            }],
            customer: serde_json::json!({ "id": format!("user-{n}") }),
            external_ref: None,
            metadata: serde_json::Map::new(),
        }
    }

    async fn count(store: &Store, table: &str, tenant: &TenantId) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = $1");
        sqlx::query_scalar(&sql)
            .bind(tenant.as_str())
            .fetch_one(store.pool())
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn a_bulk_order_books_every_user_or_none() {
        crate::store::testing::each_backend(|store| async move {
            let checkouts = checkouts(&store);
            let tenant = crate::store::testing::tenant(&store, "Bulk shop").await;
            let usd = Currency::parse("USD").expect("USD");

            // The third entry is invalid after two were already written.
            let err = checkouts
                .gateway_less_many(
                    &tenant,
                    OrderKind::Bulk,
                    usd,
                    &[user(1, 1), user(2, 1), user(3, 0)],
                )
                .await
                .expect_err("an invalid entry fails the whole bulk order");
            assert!(
                matches!(&err, CheckoutError::Invalid(m) if m.starts_with("orders[2]")),
                "{err:?}"
            );
            assert_eq!(
                count(&store, "orders", &tenant).await,
                0,
                "no order survives"
            );
            assert_eq!(
                count(&store, "payments", &tenant).await,
                0,
                "no row survives"
            );

            let booked = checkouts
                .gateway_less_many(&tenant, OrderKind::Bulk, usd, &[user(1, 1), user(2, 3)])
                .await
                .expect("a valid bulk order");
            assert_eq!(booked.len(), 2);
            assert!(booked.iter().all(|(o, _)| o.status == OrderStatus::Paid));
            assert_eq!(booked[1].1[0].amount.minor, 600);
            assert_eq!(count(&store, "orders", &tenant).await, 2);
            assert_eq!(count(&store, "payments", &tenant).await, 2);
        })
        .await;
    }

    #[test]
    fn gateway_keys_follow_the_client_key_and_stay_tenant_scoped() {
        let a = TenantId::parse("ten_a1").unwrap();
        let b = TenantId::parse("ten_b2").unwrap();
        let k1 = gateway_key(&a, Some("order-1"), "ord_x", "checkout:stripe");
        // A retry is a new order, but the same client key: same gateway key.
        assert_eq!(
            k1,
            gateway_key(&a, Some("order-1"), "ord_y", "checkout:stripe")
        );
        assert_ne!(
            k1,
            gateway_key(&b, Some("order-1"), "ord_x", "checkout:stripe")
        );
        assert_ne!(
            k1,
            gateway_key(&a, Some("order-1"), "ord_x", "checkout:paddle")
        );
        // Without a client key, our own id decides.
        assert_ne!(
            gateway_key(&a, None, "ord_x", "checkout:stripe"),
            gateway_key(&a, None, "ord_y", "checkout:stripe")
        );
        assert!(k1.len() <= 64);
    }
}
