//! Confirming a PaymentIntent as Stripe documents it: the test
//! PaymentMethod decides whether it approves, declines (leaving the intent
//! in `requires_payment_method` with `last_payment_error`) or requires 3-D
//! Secure, and the fake authentication page completes it.

use super::*;

impl Account {
    /// `POST /v1/payment_intents/{id}/confirm`: allowed from
    /// `requires_payment_method`, `requires_confirmation` and
    /// `requires_action`; the (possibly new) payment method decides the
    /// outcome.
    pub(crate) fn confirm(
        &mut self,
        id: &str,
        confirmation: Confirmation,
        base_url: &str,
        events: &mut Vec<Emitted>,
    ) -> Result<(), ApiError> {
        let pi = self.intent_mut(id)?;
        if !matches!(
            pi.status,
            Status::RequiresPaymentMethod | Status::RequiresConfirmation | Status::RequiresAction
        ) {
            return Err(ApiError::state(
                "payment_intent_unexpected_state",
                format!(
                    "You cannot confirm this PaymentIntent because it has a status of {}.",
                    pi.status.as_str()
                ),
            ));
        }
        if confirmation.payment_method.is_none() && pi.payment_method.is_none() {
            return Err(missing_payment_method());
        }
        if let Some(payment_method) = confirmation.payment_method {
            pi.payment_method = Some(payment_method);
        }
        if let Some(return_url) = confirmation.return_url {
            pi.return_url = Some(return_url);
        }
        if let Some(receipt_email) = confirmation.receipt_email {
            pi.receipt_email = Some(receipt_email);
        }
        if let Some(capture_method) = confirmation.capture_method {
            pi.capture_method = capture_method;
        }
        self.run_confirmation(id, base_url, events)
    }

    /// Runs the attached test card: approve, decline or ask for 3-D Secure.
    pub(super) fn run_confirmation(
        &mut self,
        id: &str,
        base_url: &str,
        events: &mut Vec<Emitted>,
    ) -> Result<(), ApiError> {
        let pi = self.intent(id)?;
        let payment_method = pi.payment_method.clone().unwrap_or_default();
        // Handlers only accept known test cards; an unknown one declines.
        match test_card(&payment_method).unwrap_or(GENERIC_DECLINE) {
            TestCard::Approve => {
                self.approve(id, events);
                Ok(())
            }
            TestCard::Authenticate => {
                let pi = self.intent_mut(id)?;
                let action = redirect_action(base_url, pi);
                pi.status = Status::RequiresAction;
                pi.next_action = Some(action);
                pi.last_payment_error = None;
                self.intent_event("payment_intent.requires_action", id, events);
                Ok(())
            }
            TestCard::Decline {
                code,
                decline_code,
                message,
            } => Err(self.decline(id, &payment_method, code, decline_code, message, events)),
        }
    }

    /// The card was authorized: a successful Charge, and the PaymentIntent
    /// `succeeded` (automatic capture) or `requires_capture` (manual).
    fn approve(&mut self, id: &str, events: &mut Vec<Emitted>) {
        let Some(pi) = self.payment_intents.get_mut(id) else {
            return;
        };
        let manual = pi.is_manual();
        let charge = Charge {
            id: random_id("ch"),
            created: unix_now(),
            amount: pi.amount,
            amount_captured: if manual { 0 } else { pi.amount },
            amount_refunded: 0,
            currency: pi.currency.clone(),
            captured: !manual,
            succeeded: true,
            payment_intent: pi.id.clone(),
            payment_method: pi.payment_method.clone().unwrap_or_default(),
            failure_code: None,
            failure_message: None,
        };
        pi.latest_charge = Some(charge.id.clone());
        pi.next_action = None;
        pi.last_payment_error = None;
        let kind = if manual {
            pi.status = Status::RequiresCapture;
            pi.amount_capturable = pi.amount;
            "payment_intent.amount_capturable_updated"
        } else {
            pi.status = Status::Succeeded;
            pi.amount_received = pi.amount;
            "payment_intent.succeeded"
        };
        self.charges.insert(charge.id.clone(), charge);
        self.intent_event(kind, id, events);
    }

    /// The card was declined: a failed Charge, the PaymentIntent back in
    /// `requires_payment_method` with `last_payment_error`, and the 402 to
    /// answer.
    fn decline(
        &mut self,
        id: &str,
        payment_method: &str,
        code: &'static str,
        decline_code: Option<&'static str>,
        message: &'static str,
        events: &mut Vec<Emitted>,
    ) -> ApiError {
        let Some(pi) = self.payment_intents.get_mut(id) else {
            return ApiError::not_found("payment_intent", id, "intent");
        };
        let charge = Charge {
            id: random_id("ch"),
            created: unix_now(),
            amount: pi.amount,
            amount_captured: 0,
            amount_refunded: 0,
            currency: pi.currency.clone(),
            captured: false,
            succeeded: false,
            payment_intent: pi.id.clone(),
            payment_method: payment_method.to_owned(),
            failure_code: Some(code),
            failure_message: Some(message),
        };
        let mut last_error = json!({
            "type": "card_error",
            "code": code,
            "message": message,
            "charge": charge.id,
            "payment_method": { "id": payment_method, "object": "payment_method", "type": "card" },
        });
        if let Some(decline_code) = decline_code {
            last_error["decline_code"] = json!(decline_code);
        }
        pi.status = Status::RequiresPaymentMethod;
        pi.payment_method = None;
        pi.next_action = None;
        pi.last_payment_error = Some(last_error);
        pi.latest_charge = Some(charge.id.clone());
        let charge_id = charge.id.clone();
        self.charges.insert(charge.id.clone(), charge);
        self.intent_event("payment_intent.payment_failed", id, events);
        let object = self.payment_intent_json(id, false).unwrap_or(Value::Null);
        ApiError::card(code, decline_code, message, object, charge_id)
    }

    /// The customer finished (or failed) 3-D Secure on the emulator page.
    /// `Err` carries a message for the page when the PaymentIntent is not
    /// waiting for authentication.
    pub(crate) fn complete_authentication(
        &mut self,
        id: &str,
        succeed: bool,
        events: &mut Vec<Emitted>,
    ) -> Result<(), String> {
        let Some(pi) = self.payment_intents.get_mut(id) else {
            return Err(format!("No such payment_intent: '{id}'"));
        };
        if pi.status != Status::RequiresAction {
            return Err(format!(
                "PaymentIntent {id} is not awaiting authentication (status: {}).",
                pi.status.as_str()
            ));
        }
        if succeed {
            self.approve(id, events);
        } else {
            pi.status = Status::RequiresPaymentMethod;
            pi.next_action = None;
            pi.last_payment_error = Some(json!({
                "type": "invalid_request_error",
                "code": "payment_intent_authentication_failure",
                "message": "The provided PaymentMethod has failed authentication. You can provide \
                            payment_method_data or a new PaymentMethod to attempt to fulfill this \
                            PaymentIntent again.",
                "payment_method": { "id": pi.payment_method, "object": "payment_method", "type": "card" },
            }));
            pi.payment_method = None;
            self.intent_event("payment_intent.payment_failed", id, events);
        }
        Ok(())
    }
}
