//! Every machine code an error answer can carry, as one enum.
//!
//! Invariant: each variant's string ([`ErrorCode::as_str`]) is stable and
//! unique; clients and tests match on it, so a string never changes once
//! published. Whether the `Idempotency-Key` layer may keep an answer is a
//! property of its code ([`ErrorCode::is_replayable`]), never a string match.

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $s:literal,)*) => {
        /// A stable machine code of an [`ApiError`](super::ApiError).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order (the document's enum).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable string clients match on.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $s,)*
                }
            }
        }
    };
}

error_codes! {
    /// 400: unreadable request.
    BadRequest = "bad_request",
    /// 400: the JSON body does not parse.
    MalformedJson = "malformed_json",
    /// 400: bad query parameters.
    BadQuery = "bad_query",
    /// 400: a path segment that is not UTF-8, or a wrong count.
    BadPath = "bad_path",
    /// 400: the body was cut off.
    BodyUnreadable = "body_unreadable",
    /// 400: two `Host` or `Authorization` headers.
    DuplicateHeader = "duplicate_header",
    /// 400: an absolute-form target naming another host than `Host`.
    HostMismatch = "host_mismatch",
    /// 400: a pagination cursor this server did not hand out.
    InvalidCursor = "invalid_cursor",
    /// 400: an `Idempotency-Key` that is not 1–255 printable characters.
    InvalidIdempotencyKey = "invalid_idempotency_key",
    /// 401: missing, unknown or revoked credentials.
    Unauthorized = "unauthorized",
    /// 402: the gateway declined the payment.
    PaymentDeclined = "payment_declined",
    /// 403: the tenant is suspended.
    TenantSuspended = "tenant_suspended",
    /// 404: no such endpoint.
    RouteNotFound = "route_not_found",
    /// 404: no such tenant.
    TenantNotFound = "tenant_not_found",
    /// 404: no such domain.
    DomainNotFound = "domain_not_found",
    /// 404: no such API key.
    ApiKeyNotFound = "api_key_not_found",
    /// 404: no such order.
    OrderNotFound = "order_not_found",
    /// 404: no such payment.
    PaymentNotFound = "payment_not_found",
    /// 404: the provider is not loaded on this host.
    ProviderNotFound = "provider_not_found",
    /// 404: the tenant has no settings for this provider.
    GatewayNotConfigured = "gateway_not_configured",
    /// 405: the endpoint does not take this method.
    MethodNotAllowed = "method_not_allowed",
    /// 408: the body did not arrive in time.
    BodyTimeout = "body_timeout",
    /// 409: the domain belongs to another tenant.
    DomainTaken = "domain_taken",
    /// 409: a request with this `Idempotency-Key` is still running.
    IdempotencyRequestInFlight = "idempotency_request_in_flight",
    /// 409: an order is already stored under this `Idempotency-Key`. Not
    /// replayable: the key belongs to another request.
    IdempotencyKeyInUse = "idempotency_key_in_use",
    /// 409: the order's status forbids this change.
    OrderStateConflict = "order_state_conflict",
    /// 409: the event was already booked.
    AlreadyBooked = "already_booked",
    /// 413: the body is over the limit.
    BodyTooLarge = "body_too_large",
    /// 414: the request target is over the limit.
    UriTooLong = "uri_too_long",
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType = "unsupported_media_type",
    /// 422: the body or a field fails validation.
    ValidationFailed = "validation_failed",
    /// 422: the `Idempotency-Key` was used with another request. Not
    /// replayable: the key belongs to another request.
    IdempotencyKeyReused = "idempotency_key_reused",
    /// 422: no enabled gateway accepts the currency.
    NoGatewayForCurrency = "no_gateway_for_currency",
    /// 422: the gateway rejected the credentials.
    GatewayCredentialsRejected = "gateway_credentials_rejected",
    /// 422: the refund exceeds what remains refundable.
    RefundExceedsPaid = "refund_exceeds_paid",
    /// 422: the payment cannot be refunded.
    NotRefundable = "not_refundable",
    /// 422: the gateway refused the request as invalid.
    GatewayInvalidRequest = "gateway_invalid_request",
    /// 422: the provider does not claim the capability the request needs.
    CapabilityNotSupported = "capability_not_supported",
    /// 431: too many or too large headers.
    HeadersTooLarge = "headers_too_large",
    /// 500: an internal failure, detailed in the server log only.
    InternalError = "internal_error",
    /// 502: the gateway failed.
    GatewayError = "gateway_error",
    /// 502: the credentials could not be validated.
    GatewayUnreachable = "gateway_unreachable",
    /// 502: the provider component ran out of time.
    ProviderDeadlineExceeded = "provider_deadline_exceeded",
    /// 502: the provider component ran out of memory.
    ProviderMemoryExceeded = "provider_memory_exceeded",
    /// 502: the provider reached for a host it may not.
    ProviderOutboundDenied = "provider_outbound_denied",
    /// 502: the gateway's response was too large.
    ProviderResponseTooLarge = "provider_response_too_large",
    /// 502: the provider made too many outbound requests.
    ProviderRequestBudgetExceeded = "provider_request_budget_exceeded",
    /// 502: the provider returned malformed output.
    ProviderInvalidOutput = "provider_invalid_output",
    /// 502: the provider component trapped.
    ProviderTrapped = "provider_trapped",
    /// 502: the provider component could not start.
    ProviderUnavailable = "provider_unavailable",
    /// 502: the gateway returned an unusable reference.
    ProviderBadReference = "provider_bad_reference",
    /// 502: the gateway charged another amount than requested.
    ProviderAmountMismatch = "provider_amount_mismatch",
    /// 502: the gateway refunded another amount than requested.
    ProviderRefundAmountMismatch = "provider_refund_amount_mismatch",
    /// 503: the gateway is unavailable.
    GatewayUnavailable = "gateway_unavailable",
    /// 503: the gateway is rate limiting this account.
    GatewayRateLimited = "gateway_rate_limited",
    /// 503: too many mutations in progress on this server.
    ServerBusy = "server_busy",
    /// 503: too many mutations in progress for this tenant.
    TenantBusy = "tenant_busy",
    /// 504: the checkout took too long and was stopped.
    CheckoutTimedOut = "checkout_timed_out",
    /// 429: this API key sent more requests than its rate allows; retry
    /// after `Retry-After` seconds (`RateLimit` headers say the budget).
    RateLimited = "rate_limited",
    /// 404: no feature with this key.
    FeatureNotFound = "feature_not_found",
    /// 404: no plan with this name.
    PlanNotFound = "plan_not_found",
    /// 404: the tenant has no override of this feature.
    OverrideNotFound = "override_not_found",
    /// 404: no kill switch is pulled for this feature.
    KillSwitchNotFound = "kill_switch_not_found",
    /// 422: a value does not fit its feature's kind (flag: true/false;
    /// limit: a non-negative integer or null).
    FeatureValueMismatch = "feature_value_mismatch",
    /// 409: a feature's kind cannot change once defined.
    FeatureKindConflict = "feature_kind_conflict",
    /// 403: the tenant's features do not permit this provider.
    ProviderNotEnabled = "provider_not_enabled",
    /// 403: the tenant's features do not permit this operation
    /// (`details.feature` names the feature).
    FeatureNotEnabled = "feature_not_enabled",
    /// 403: the tenant has as many gateways as `gateways.max` allows.
    GatewayLimitReached = "gateway_limit_reached",
    /// 429: the tenant's quota for this period is used up; nothing was
    /// stored (`Retry-After`: seconds until the period ends). Not
    /// replayable: a retry under the same key runs again, so it succeeds
    /// once the limit is raised or the period rolls over.
    QuotaExceeded = "quota_exceeded",
    /// 404: not a metered quota key.
    QuotaKeyNotFound = "quota_key_not_found",
    /// 400: a report's `from`/`to` is not a `YYYY-MM-DD` date, or the range
    /// is reversed or longer than 366 days.
    InvalidReportRange = "invalid_report_range",
    /// 400: a webhook whose signature did not verify (one code for every
    /// reason, so a sender learns nothing about the tenant's secret).
    WebhookSignatureInvalid = "webhook_signature_invalid",
    /// 400: a verified webhook whose body is not a readable event.
    WebhookPayloadInvalid = "webhook_payload_invalid",
    /// 404: no such dead letter.
    DeadLetterNotFound = "dead_letter_not_found",
    /// 409: the order cannot be canceled (paid, refunded, declined, not a
    /// checkout, or its gateway has not answered yet).
    OrderNotCancelable = "order_not_cancelable",
    /// 409: another instance is reconciling this order right now.
    ReconcileInProgress = "reconcile_in_progress",
}

impl ErrorCode {
    /// Whether the `Idempotency-Key` layer may keep an answer with this
    /// code. `false` for the codes that say the key already belongs to
    /// another request (keeping them would bind the key to this one and
    /// lock out a retry of the first), and for `quota_exceeded`, which
    /// stored nothing and stops being true when the limit is raised or the
    /// period ends.
    pub const fn is_replayable(self) -> bool {
        !matches!(
            self,
            ErrorCode::IdempotencyKeyReused
                | ErrorCode::IdempotencyKeyInUse
                | ErrorCode::QuotaExceeded
        )
    }

    /// The code with this string, if there is one.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn strings_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }

    #[test]
    fn only_key_ownership_and_quota_codes_are_not_replayable() {
        let not: Vec<_> = ErrorCode::ALL
            .iter()
            .filter(|c| !c.is_replayable())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            not,
            [
                "idempotency_key_in_use",
                "idempotency_key_reused",
                "quota_exceeded"
            ]
        );
    }
}
