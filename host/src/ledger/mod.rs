//! The ledger: append-only payment rows, refunds, balances — and the orders
//! they belong to.
//!
//! Owns the `payments` table (every financial event is a new row; balances are
//! sums over rows), the refund guard (`refund_totals`, `refund_reservations`),
//! `orders` (mutable workflow state that rows point at) and the projections
//! derived from the rows (`balance_projection`, `ledger_daily`: kept by
//! triggers in the booking's transaction, checked by [`verify_projections`]).
//!
//! Must never: update or delete a payment row (the database refuses it too),
//! let refunds of a payment exceed what was paid (enforced by a database CHECK
//! under concurrency on both backends, see [`book_refund`]), book the same
//! gateway event or refund reference twice, or return another tenant's rows.
//! It makes no gateway calls; `checkout` does and then books here.

mod book;
mod orders;
mod projection;
mod read;
mod refunds;
mod reports;

use crate::store::domain::string_newtype;
use crate::store::{ParseError, StoreError};

pub use crate::store::{Currency, Money, OrderId, PaymentId, ProviderId, RefundReservationId};
pub use book::{
    NewLedgerRow, book_order_rows, book_order_rows_in, book_paid_checkout, book_paid_checkout_from,
    book_rows_of_in,
};
pub(crate) use orders::stage_order_with;
pub use orders::{
    LineKind, NewOrder, Order, OrderFilter, OrderKind, OrderLine, OrderStatus, create_order,
    create_order_in, find_order_by_gateway_reference, get_order, list_orders,
    live_order_for_checkout_key, route_pending_order, set_order_gateway, set_order_gateway_in,
    set_order_status, set_order_status_in, stage_order, transition_order, transition_order_in,
    transition_routed_order_in,
};
pub use orders::{
    canceled_orders_for_checkout_key, checkout_key_of, find_order_any_tenant, gateway_account_of,
    newer_order_under_checkout_key,
};
pub use projection::{Balance, ProjectionDiff, VerifyReport, balances, verify_projections};
pub use read::{
    LedgerRow, PaymentFilter, RefundSummary, find_by_external_ref, list_payments, payment,
    refund_summary, rows_for_order,
};
pub use refunds::{
    RefundReservation, book_refund, complete_refund, find_reservation, mark_refund_pending,
    release_refund, reserve_refund, stale_reservations,
};
pub use reports::{DailyEntry, DailyFilter, Day, MAX_REPORT_DAYS, daily_report};

/// Errors of the ledger and orders repositories. Each variant is a distinct
/// client-facing outcome except [`LedgerError::Store`].
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// No such order for this tenant.
    #[error("order not found")]
    OrderNotFound,
    /// No such payment row for this tenant.
    #[error("payment not found")]
    PaymentNotFound,
    /// The refund is larger than what is left (paid − refunded − reserved).
    #[error("refund exceeds what remains refundable ({remaining})")]
    RefundExceedsPaid {
        /// What could still be refunded at the time of the attempt.
        remaining: Money,
    },
    /// The row cannot be refunded (a refund row, or a payment not approved).
    #[error("payment cannot be refunded: {reason}")]
    NotRefundable {
        /// Why, safe to show to a client.
        reason: &'static str,
    },
    /// The gateway event or refund reference is already booked.
    #[error("already booked")]
    Duplicate {
        /// The row that holds the reference, when it could be found.
        existing: Option<PaymentId>,
    },
    /// A live order is already stored under this checkout's `Idempotency-Key`.
    #[error("an order is already stored under this Idempotency-Key")]
    CheckoutKeyTaken,
    /// The refund reservation does not exist (already completed or released).
    #[error("refund reservation not found")]
    ReservationNotFound,
    /// The order's status was not one the caller expected.
    #[error("order is {current:?}")]
    StatusConflict {
        /// The status the order actually has.
        current: OrderStatus,
    },
    /// A row's currency differs from its order's.
    #[error("currency {got} does not match {expected}")]
    CurrencyMismatch {
        /// The order's currency.
        expected: Currency,
        /// The offending currency.
        got: Currency,
    },
    /// An input was malformed (non-positive amount, empty booking, …).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The pagination cursor was not produced by this listing.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        LedgerError::Store(StoreError::Database(e))
    }
}

impl From<ParseError> for LedgerError {
    fn from(e: ParseError) -> Self {
        LedgerError::Invalid(e.to_string())
    }
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The stored (and serialized) spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored spelling.
            pub fn parse(raw: &str) -> Result<Self, $crate::store::ParseError> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::store::ParseError::new($what, format!("`{other}` is not one of {}", [$($text),+].join("|")))),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// What a ledger row is for.
    EntryKind, "entry kind" {
        /// The product itself; may grant an entitlement.
        Product => "product",
        /// A carrier cost; never grants an entitlement.
        Shipping => "shipping",
        /// Money returned; always `status = refunded` with `refund_of` set.
        Refund => "refund",
    }
);

text_enum!(
    /// The financial state a row records. Balances count `approved` as paid and
    /// `refunded` as refunded; `pending` rows (authorised, not settled) count
    /// towards neither and cannot be refunded.
    EntryStatus, "entry status" {
        /// Money taken.
        Approved => "approved",
        /// Awaiting the gateway; a later `approved` row records the outcome.
        Pending => "pending",
        /// Money returned (refund rows only).
        Refunded => "refunded",
    }
);

text_enum!(
    /// Which path booked a row.
    Source, "source" {
        /// A tenant API call.
        Api => "api",
        /// A gateway webhook.
        Webhook => "webhook",
        /// Recorded by hand (manual/bulk/external orders, manual refunds).
        Manual => "manual",
        /// The reconciliation janitor.
        Janitor => "janitor",
    }
);

string_newtype! {
    /// The user plan / access right a product row grants (e.g. `pro_monthly`):
    /// 1–100 characters of `[A-Za-z0-9_.:-]`.
    pub struct Entitlement;
}

impl Entitlement {
    /// Validates an entitlement name.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty()
            || raw.len() > 100
            || !raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        {
            return Err(ParseError::new(
                "entitlement",
                "must be 1-100 characters of [A-Za-z0-9_.:-]",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

string_newtype! {
    /// An identifier issued by a gateway: a payment reference (`pi_…`), a webhook
    /// event id (`evt_…`) or a refund reference (`re_…`). 1–255 visible ASCII characters.
    pub struct GatewayRef, display;
}

impl GatewayRef {
    /// Validates a gateway-issued identifier.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty() || raw.len() > 255 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError::new(
                "gateway reference",
                "must be 1-255 visible ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

#[cfg(test)]
mod plans;
#[cfg(test)]
mod projection_tests;
#[cfg(test)]
mod tests;
