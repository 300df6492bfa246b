//! Stripe's error envelope: `{"error":{"type","code","decline_code","message","param",…}}`
//! with absent fields omitted, and the status each kind of error carries.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Stripe's `error.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Card,
    InvalidRequest,
    Api,
    Idempotency,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Card => "card_error",
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Api => "api_error",
            ErrorType::Idempotency => "idempotency_error",
        }
    }
}

/// Response extension telling the idempotency layer not to save this
/// response: Stripe saves a result only once an endpoint began executing, so
/// authentication, validation and rate-limit failures (and, in this emulator,
/// 5xx) can be retried with the same key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotSaved;

/// One Stripe API error. Build it with the constructors, which fix the status,
/// type and code the way Stripe does for that situation. Boxed so that the
/// many `Result<_, ApiError>` in the emulator stay small.
#[derive(Debug, Clone)]
pub(crate) struct ApiError(Box<Details>);

#[derive(Debug, Clone)]
struct Details {
    status: StatusCode,
    kind: ErrorType,
    code: Option<&'static str>,
    decline_code: Option<&'static str>,
    message: String,
    param: Option<String>,
    payment_intent: Option<Value>,
    charge: Option<String>,
    retry_after: Option<u32>,
    www_authenticate: bool,
    saved: bool,
}

impl ApiError {
    fn new(status: StatusCode, kind: ErrorType, message: impl Into<String>) -> Self {
        ApiError(Box::new(Details {
            status,
            kind,
            code: None,
            decline_code: None,
            message: message.into(),
            param: None,
            payment_intent: None,
            charge: None,
            retry_after: None,
            www_authenticate: false,
            saved: true,
        }))
    }

    fn code(mut self, code: &'static str) -> Self {
        self.0.code = Some(code);
        self
    }

    fn param(mut self, param: impl Into<String>) -> Self {
        self.0.param = Some(param.into());
        self
    }

    fn not_saved(mut self) -> Self {
        self.0.saved = false;
        self
    }

    /// 400 for a request parameter that fails validation (never saved under an
    /// idempotency key: the endpoint did not start executing).
    pub(crate) fn invalid_param(
        code: &'static str,
        param: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequest, message)
            .code(code)
            .param(param)
            .not_saved()
    }

    /// 400 `parameter_missing`.
    pub(crate) fn missing_param(param: &str) -> Self {
        ApiError::invalid_param(
            "parameter_missing",
            param,
            format!("Missing required param: {param}."),
        )
    }

    /// 400 `parameter_unknown`: Stripe rejects parameters it does not know.
    pub(crate) fn unknown_param(param: &str) -> Self {
        ApiError::invalid_param(
            "parameter_unknown",
            param,
            format!("Received unknown parameter: {param}"),
        )
    }

    /// 400 `resource_missing` for an id named in a request parameter.
    pub(crate) fn no_such_param_object(kind: &str, id: &str, param: &str) -> Self {
        ApiError::invalid_param("resource_missing", param, format!("No such {kind}: '{id}'"))
    }

    /// 404 `resource_missing` for an object addressed by the URL (unknown id,
    /// or one that belongs to another API key).
    pub(crate) fn not_found(kind: &str, id: &str, param: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequest,
            format!("No such {kind}: '{id}'"),
        )
        .code("resource_missing")
        .param(param)
        .not_saved()
    }

    /// 400 for a request that is well formed but not allowed in the object's
    /// current state (saved: the endpoint ran).
    pub(crate) fn state(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequest, message).code(code)
    }

    /// Same as [`ApiError::state`], naming the offending parameter.
    pub(crate) fn state_param(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        ApiError::state(code, message).param(param)
    }

    /// 402 `card_error`: the card was declined. Carries the PaymentIntent as it
    /// is after the failed attempt and the failed charge's id, as Stripe does.
    pub(crate) fn card(
        code: &'static str,
        decline_code: Option<&'static str>,
        message: &str,
        payment_intent: Value,
        charge: String,
    ) -> Self {
        let mut error =
            ApiError::new(StatusCode::PAYMENT_REQUIRED, ErrorType::Card, message).code(code);
        error.0.decline_code = decline_code;
        error.0.payment_intent = Some(payment_intent);
        error.0.charge = Some(charge);
        error
    }

    /// 401 with Stripe's `WWW-Authenticate` challenge.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        let mut error =
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorType::InvalidRequest, message).not_saved();
        error.0.www_authenticate = true;
        error
    }

    /// 400 `idempotency_error`: the key was first used with another endpoint
    /// or other parameters.
    pub(crate) fn idempotency_mismatch(key: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorType::Idempotency,
            format!(
                "Keys for idempotent requests can only be used with the same parameters they \
                 were first used with. Try using a key other than '{key}' if you meant to \
                 execute a different request."
            ),
        )
        .not_saved()
    }

    /// 409 `idempotency_key_in_use`: another request with this key is still
    /// executing.
    pub(crate) fn idempotency_in_use() -> Self {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorType::Idempotency,
            "There is currently another in-progress request using this Idempotency-Key. \
             Please try again later.",
        )
        .code("idempotency_key_in_use")
        .not_saved()
    }

    /// 429 `rate_limit` with `Retry-After`.
    pub(crate) fn rate_limited(retry_after_secs: u32, message: impl Into<String>) -> Self {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::InvalidRequest,
            message,
        )
        .code("rate_limit")
        .not_saved();
        error.0.retry_after = Some(retry_after_secs);
        error
    }

    /// 500 `api_error` (never saved under an idempotency key in this emulator).
    pub(crate) fn api(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorType::Api, message).not_saved()
    }

    /// 404 for a URL the API does not serve.
    pub(crate) fn unrecognized_url(method: &str, path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequest,
            format!(
                "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs \
                 or we can help at https://support.stripe.com/."
            ),
        )
        .not_saved()
    }

    /// The `error` object itself (also used as a PaymentIntent's
    /// `last_payment_error`, without `payment_intent`).
    pub(crate) fn error_object(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), json!(self.0.kind.as_str()));
        if let Some(code) = self.0.code {
            error.insert("code".into(), json!(code));
        }
        if let Some(decline_code) = self.0.decline_code {
            error.insert("decline_code".into(), json!(decline_code));
        }
        error.insert("message".into(), json!(self.0.message));
        if let Some(param) = &self.0.param {
            error.insert("param".into(), json!(param));
        }
        if let Some(charge) = &self.0.charge {
            error.insert("charge".into(), json!(charge));
        }
        if let Some(payment_intent) = &self.0.payment_intent {
            error.insert("payment_intent".into(), payment_intent.clone());
        }
        Value::Object(error)
    }

    #[cfg(test)]
    pub(crate) fn code_str(&self) -> Option<&'static str> {
        self.0.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error_object() });
        let mut response = (self.0.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.0.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.0.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Stripe\""),
            );
        }
        if !self.0.saved || self.0.status.is_server_error() {
            response.extensions_mut().insert(NotSaved);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_are_omitted() {
        let body = ApiError::missing_param("amount").error_object();
        assert_eq!(
            body,
            json!({
                "type": "invalid_request_error",
                "code": "parameter_missing",
                "message": "Missing required param: amount.",
                "param": "amount",
            })
        );
    }

    #[test]
    fn validation_and_server_errors_are_not_saved_but_state_errors_are() {
        let validation = ApiError::missing_param("amount").into_response();
        assert!(validation.extensions().get::<NotSaved>().is_some());
        let outage = ApiError::api("down").into_response();
        assert!(outage.extensions().get::<NotSaved>().is_some());
        let state = ApiError::state("payment_intent_unexpected_state", "no").into_response();
        assert!(state.extensions().get::<NotSaved>().is_none());
        assert_eq!(state.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn rate_limit_carries_retry_after() {
        let response = ApiError::rate_limited(2, "slow down").into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
