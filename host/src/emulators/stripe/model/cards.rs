//! Stripe's documented test PaymentMethods and how each ends a
//! confirmation, plus the emulator's own trigger ids that make the API fail.

use super::super::error::ApiError;

/// How the test PaymentMethod named in a confirmation behaves; the ids are
/// Stripe's documented test PaymentMethods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestCard {
    Approve,
    Decline {
        code: &'static str,
        decline_code: Option<&'static str>,
        message: &'static str,
    },
    /// 3-D Secure required: the PaymentIntent goes to `requires_action`.
    Authenticate,
}

pub(super) const GENERIC_DECLINE: TestCard = TestCard::Decline {
    code: "card_declined",
    decline_code: Some("generic_decline"),
    message: "Your card was declined.",
};
pub(super) const INSUFFICIENT_FUNDS: TestCard = TestCard::Decline {
    code: "card_declined",
    decline_code: Some("insufficient_funds"),
    message: "Your card has insufficient funds.",
};
pub(super) const PROCESSING_ERROR: TestCard = TestCard::Decline {
    code: "processing_error",
    decline_code: None,
    message: "An error occurred while processing your card. Try again in a little bit.",
};

/// Stripe's test card whose payments approve but whose refunds stay
/// `pending` (on Stripe they later turn `succeeded`; the emulator leaves them
/// pending, which is the case a client must handle).
pub(crate) const PENDING_REFUND_CARD: &str = "pm_card_pendingRefund";

/// Stripe's test card whose payments approve and whose refunds start
/// `succeeded`, then turn `failed` (Stripe: "some time later"; here when
/// `POST /_emulator/refunds/{id}/fail` says so), with a `refund.failed` event.
pub(crate) const REFUND_FAIL_CARD: &str = "pm_card_refundFail";

/// The behaviour of a Stripe test PaymentMethod id, `None` for ids the
/// emulator does not know (Stripe answers `resource_missing`).
pub(crate) fn test_card(payment_method: &str) -> Option<TestCard> {
    match payment_method {
        "pm_card_visa" | "pm_card_visa_debit" | "pm_card_mastercard" | "pm_card_amex"
        | PENDING_REFUND_CARD | REFUND_FAIL_CARD => Some(TestCard::Approve),
        "pm_card_visa_chargeDeclined" | "pm_card_chargeDeclined" => Some(GENERIC_DECLINE),
        "pm_card_visa_chargeDeclinedInsufficientFunds"
        | "pm_card_chargeDeclinedInsufficientFunds" => Some(INSUFFICIENT_FUNDS),
        "pm_card_chargeDeclinedProcessingError" => Some(PROCESSING_ERROR),
        "pm_card_threeDSecure2Required" | "pm_card_authenticationRequired" => {
            Some(TestCard::Authenticate)
        }
        _ => None,
    }
}

/// **Emulator extension** (not Stripe): PaymentMethod ids that make the API
/// itself fail, for testing a client's retry handling. They fail the request
/// before anything is created or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmulatorTrigger {
    /// `pm_emulator_unavailable`: 500 `api_error`.
    Unavailable,
    /// `pm_emulator_rate_limited`: 429 `rate_limit` with `Retry-After: 2`.
    RateLimited,
}

pub(crate) fn emulator_trigger(payment_method: &str) -> Option<EmulatorTrigger> {
    match payment_method {
        "pm_emulator_unavailable" => Some(EmulatorTrigger::Unavailable),
        "pm_emulator_rate_limited" => Some(EmulatorTrigger::RateLimited),
        _ => None,
    }
}

impl EmulatorTrigger {
    pub(crate) fn error(self) -> ApiError {
        match self {
            EmulatorTrigger::Unavailable => ApiError::api(
                "Emulator: simulated Stripe outage (payment_method pm_emulator_unavailable).",
            ),
            EmulatorTrigger::RateLimited => ApiError::rate_limited(
                2,
                "Emulator: simulated rate limit (payment_method pm_emulator_rate_limited).",
            ),
        }
    }
}
