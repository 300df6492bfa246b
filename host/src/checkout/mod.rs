//! Checkout: route a cart to a gateway, call the provider, book the outcome
//! in the ledger. This file is the public face (the request, outcome and
//! error types, the [`Checkouts`] service); each job has its own file:
//!
//! - `request.rs`: a cart as order lines, what a gateway is sent, gateway
//!   idempotency keys, the account fingerprint;
//! - `route.rs`: which of the tenant's gateways may take a cart;
//! - `attempt.rs`: the attempt loop (send gate, fallback, unknown outcomes);
//! - `resume.rs`: a retry under the same `Idempotency-Key` resumes its order;
//! - `settle.rs`: a gateway's answer booked (or left pending);
//! - `reconcile.rs`: a waiting order re-read at its gateway and settled
//!   (the janitor, the operator), or canceled by the tenant;
//! - `orders.rs`: orders without a gateway ([`GatewayLessOrders`]);
//! - `refund.rs`: refunds ([`Refunds`]).
//!
//! Must never: book a row for money that did not move, charge twice for one
//! order (every gateway call carries an idempotency key derived from the
//! order), or let refunds exceed what was paid (the ledger enforces it; the
//! reservation keeps two concurrent API refunds from both reaching the gateway).
//! Nothing here imports `api`.

use serde::Serialize;

use crate::features::Features;
use crate::gateways::Gateways;
use crate::ledger::{Entitlement, GatewayRef, LedgerError, LedgerRow, Order};
use crate::quota::Quotas;
use crate::runtime::contract::{CaptureMode, Customer};
use crate::store::{Currency, Money, Store, TenantId};

mod attempt;
mod orders;
mod outcome;
mod reconcile;
mod refund;
mod request;
mod resume;
mod route;
mod settle;

pub use orders::{GatewayLessOrder, GatewayLessOrders};
pub use reconcile::Reconciled;
pub use refund::{RefundOutcome, Refunds, update_order_after_refund};
pub use request::gateway_key;

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
    assert!(CHECKOUT_BUDGET.as_secs() + 60 <= crate::idempotency::IN_FLIGHT_LEASE.as_secs());

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

/// Why a checkout, a gateway-less order or a refund failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("{0}")]
    Invalid(String),
    #[error("no enabled gateway accepts {0}")]
    NoRoute(String),
    /// Gateways for the currency are configured, but the tenant's features
    /// permit none of their providers (plan, override or kill switch).
    #[error(
        "no permitted gateway accepts {currency}: {}",
        describe_disabled(disabled)
    )]
    NoPermittedRoute {
        /// The cart's currency.
        currency: String,
        /// The providers that would have taken it, and why each may not.
        disabled: Vec<(String, crate::features::Source)>,
    },
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
    /// The order cannot be canceled (paid, refunded, declined, not a
    /// checkout, or its gateway has not answered yet).
    #[error("order {} cannot be canceled: {reason}", order.id)]
    NotCancelable { order: Box<Order>, reason: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Settings(#[from] crate::gateways::GatewayError),
    /// A quota refused the checkout (nothing was stored), or its counter
    /// could not be written.
    #[error(transparent)]
    Quota(#[from] crate::quota::QuotaError),
}

impl From<crate::store::StoreError> for CheckoutError {
    fn from(e: crate::store::StoreError) -> Self {
        CheckoutError::Ledger(LedgerError::Store(e))
    }
}

fn describe_disabled(disabled: &[(String, crate::features::Source)]) -> String {
    disabled
        .iter()
        .map(|(p, source)| format!("provider.{p} is off ({})", source.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The checkout service: routes, charges, books (see the module doc).
#[derive(Clone)]
pub struct Checkouts {
    store: Store,
    gateways: Gateways,
    /// Whether a tenant may route to a provider (`provider.<id>`).
    features: Features,
    quotas: Quotas,
}

impl Checkouts {
    /// A checkout service; every checkout that stores an order counts
    /// against the tenant's `checkouts.monthly` quota.
    pub fn new(store: Store, gateways: Gateways, features: Features, quotas: Quotas) -> Checkouts {
        Checkouts {
            store,
            gateways,
            features,
            quotas,
        }
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
}
