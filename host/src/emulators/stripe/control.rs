//! **Emulator extensions** (not Stripe's API; outside `/v1/`): what a
//! gateway does on its own side, for tests and the tour.
//!
//! - `POST /_emulator/payment_intents/{id}/refund` (optional form `amount`):
//!   a refund started in the Stripe dashboard; emits `charge.refunded` and
//!   `refund.created` like an API refund, with `request.id` null (Stripe's
//!   mark of a dashboard action). Answers the refund.
//! - `POST /_emulator/refunds/{id}/succeed|fail`: a pending refund ends
//!   (`refund.updated`, `charge.refund.updated`; `refund.failed` too when it
//!   fails); a `pm_card_refundFail` refund fails from `succeeded`.
//! - `POST /_emulator/webhooks/chaos` (the account's key as Bearer; JSON
//!   `{"duplicate": n, "shuffle": true}`): that account's later deliveries
//!   are each sent `1 + n` times, and with `shuffle` each after a random
//!   delay of up to 50 ms, so they arrive out of order. `{}` resets.
//!
//! The objects are found in whichever account holds them, as the 3-D
//! Secure page does.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::form::Params;
use super::model::{NewRefund, RefundTarget};
use super::webhook::Cause;
use super::{Shared, authenticate};

/// Most copies of one delivery the chaos control sends.
const MAX_DUPLICATES: u32 = 20;

/// An account's delivery chaos.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Chaos {
    /// Extra copies of each delivery.
    #[serde(default)]
    pub duplicate: u32,
    /// Deliver each after a random short delay.
    #[serde(default)]
    pub shuffle: bool,
}

fn problem(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"type": "invalid_request_error", "message": message}})),
    )
        .into_response()
}

/// `POST /_emulator/payment_intents/{id}/refund`.
pub(crate) async fn dashboard_refund(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body);
    let amount = match params.positive_amount("amount") {
        Ok(amount) => amount,
        Err(e) => return e.into_response(),
    };
    let mut events = Vec::new();
    let outcome = {
        let mut state = shared.lock();
        match state
            .accounts
            .iter_mut()
            .find(|(_, account)| account.owns_payment_intent(&id))
        {
            None => Err(ApiError::not_found("payment_intent", &id, "id")),
            Some((owner, account)) => account
                .refund(
                    NewRefund {
                        target: RefundTarget {
                            payment_intent: Some(id.clone()),
                            charge: None,
                        },
                        amount,
                        reason: None,
                        metadata: vec![],
                    },
                    &mut events,
                )
                .and_then(|refund| account.refund_json(&refund))
                .map(|json| (owner.clone(), json)),
        }
    };
    match outcome {
        Ok((owner, refund)) => {
            shared.publish(&owner, events, &Cause::default());
            Json(refund).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /_emulator/refunds/{id}/{succeed|fail}`.
pub(crate) async fn settle_refund(
    State(shared): State<Arc<Shared>>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let succeed = match action.as_str() {
        "succeed" => true,
        "fail" => false,
        other => {
            return problem(
                StatusCode::NOT_FOUND,
                format!("Emulator: no refund action `{other}` (succeed or fail)."),
            );
        }
    };
    let mut events = Vec::new();
    let outcome = {
        let mut state = shared.lock();
        match state
            .accounts
            .iter_mut()
            .find(|(_, account)| account.has_refund(&id))
        {
            None => Err((StatusCode::NOT_FOUND, format!("No such refund: '{id}'"))),
            Some((owner, account)) => account
                .settle_refund(&id, succeed, &mut events)
                .map(|json| (owner.clone(), json))
                .map_err(|m| (StatusCode::BAD_REQUEST, m)),
        }
    };
    match outcome {
        Ok((owner, refund)) => {
            shared.publish(&owner, events, &Cause::default());
            Json(refund).into_response()
        }
        Err((status, message)) => problem(status, message),
    }
}

/// `POST /_emulator/webhooks/chaos`.
pub(crate) async fn chaos(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let account = match authenticate(&headers) {
        Ok(account) => account,
        Err(e) => return e.into_response(),
    };
    let chaos: Chaos = if body.iter().all(u8::is_ascii_whitespace) {
        Chaos::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(chaos) => chaos,
            Err(e) => return problem(StatusCode::BAD_REQUEST, format!("Emulator: {e}")),
        }
    };
    if chaos.duplicate > MAX_DUPLICATES {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("Emulator: duplicate is at most {MAX_DUPLICATES}."),
        );
    }
    shared.lock().account(&account).chaos = chaos;
    Json(json!({"duplicate": chaos.duplicate, "shuffle": chaos.shuffle})).into_response()
}
