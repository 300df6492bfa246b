//! The emulator's Stripe objects (PaymentIntent, Charge, Refund) for one
//! account, the test PaymentMethods that decide how a confirmation ends, and
//! the state transitions Stripe documents for them. No HTTP here: handlers
//! parse requests, call these operations and render the results. The test
//! PaymentMethods are in [`cards`]; confirmations (approve, decline, 3-D
//! Secure) in `confirm`; refunds in `refunds`.
//!
//! Every operation validates before it mutates, except where Stripe itself
//! commits a change and still answers an error (a declined confirmation leaves
//! the PaymentIntent in `requires_payment_method` with `last_payment_error`).

mod cards;
mod confirm;
mod refunds;

use cards::GENERIC_DECLINE;
pub(crate) use cards::*;
use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::form::apply_metadata;
use super::idempotency::IdempotencyTable;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A Stripe-style id: `<prefix>_` followed by 24 random alphanumerics.
pub(crate) fn random_id(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}_{suffix}")
}

/// The account an API key belongs to. Derived from a hash of the key, so the
/// emulator never keeps the key itself; different keys are different accounts
/// and cannot see each other's objects or idempotency keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AccountId(String);

impl AccountId {
    pub(crate) fn for_api_key(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        AccountId(format!("acct_{}", &hex::encode(digest)[..16]))
    }
}

/// A PaymentIntent's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    RequiresCapture,
    Canceled,
    Succeeded,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::RequiresPaymentMethod => "requires_payment_method",
            Status::RequiresConfirmation => "requires_confirmation",
            Status::RequiresAction => "requires_action",
            Status::RequiresCapture => "requires_capture",
            Status::Canceled => "canceled",
            Status::Succeeded => "succeeded",
        }
    }
}

/// A PaymentIntent as the emulator stores it.
#[derive(Debug, Clone)]
pub(crate) struct PaymentIntent {
    pub id: String,
    client_secret: String,
    created: i64,
    pub amount: i64,
    pub currency: String,
    pub capture_method: &'static str,
    pub status: Status,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub payment_method: Option<String>,
    description: Option<String>,
    receipt_email: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub return_url: Option<String>,
    pub latest_charge: Option<String>,
    last_payment_error: Option<Value>,
    next_action: Option<Value>,
    canceled_at: Option<i64>,
    cancellation_reason: Option<&'static str>,
}

impl PaymentIntent {
    pub(crate) fn client_secret(&self) -> &str {
        &self.client_secret
    }

    fn is_manual(&self) -> bool {
        self.capture_method == "manual"
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Charge {
    pub id: String,
    created: i64,
    amount: i64,
    amount_captured: i64,
    amount_refunded: i64,
    currency: String,
    captured: bool,
    succeeded: bool,
    payment_intent: String,
    payment_method: String,
    failure_code: Option<&'static str>,
    failure_message: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub(crate) struct Refund {
    id: String,
    created: i64,
    amount: i64,
    currency: String,
    charge: String,
    payment_intent: String,
    reason: Option<&'static str>,
    metadata: BTreeMap<String, String>,
    /// `succeeded`, or `pending` for charges of [`PENDING_REFUND_CARD`].
    status: &'static str,
}

/// An event an operation produced: its type and the object as it is now.
#[derive(Debug, Clone)]
pub(crate) struct Emitted {
    pub kind: &'static str,
    pub object: Value,
}

/// Validated parameters of `POST /v1/payment_intents`.
#[derive(Debug, Clone)]
pub(crate) struct NewPaymentIntent {
    pub amount: i64,
    pub currency: String,
    pub payment_method: Option<String>,
    pub confirm: bool,
    pub capture_method: &'static str,
    pub return_url: Option<String>,
    pub description: Option<String>,
    pub receipt_email: Option<String>,
    pub metadata: Vec<(String, Option<String>)>,
}

/// Validated parameters of `POST /v1/payment_intents/{id}/confirm`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Confirmation {
    pub payment_method: Option<String>,
    pub return_url: Option<String>,
    pub receipt_email: Option<String>,
    pub capture_method: Option<&'static str>,
}

/// What `POST /v1/refunds` names as the thing to refund.
#[derive(Debug, Clone, Default)]
pub(crate) struct RefundTarget {
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
}

/// Validated parameters of `POST /v1/refunds`.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewRefund {
    pub target: RefundTarget,
    pub amount: Option<i64>,
    pub reason: Option<&'static str>,
    pub metadata: Vec<(String, Option<String>)>,
}

/// Everything one API key (account) owns.
#[derive(Debug, Default)]
pub(crate) struct Account {
    payment_intents: HashMap<String, PaymentIntent>,
    charges: HashMap<String, Charge>,
    refunds: HashMap<String, Refund>,
    /// Events about this account's objects, by id, as first rendered.
    events: HashMap<String, Value>,
    pub idempotency: IdempotencyTable,
    /// Webhook endpoints registered through `POST /v1/webhook_endpoints`.
    pub webhook_endpoints: Vec<super::endpoints::WebhookEndpoint>,
    /// Duplication and reordering of this account's deliveries (control).
    pub chaos: super::control::Chaos,
}

/// Where the fake 3-D Secure page lives and where to send the customer after.
fn redirect_action(base_url: &str, pi: &PaymentIntent) -> Value {
    let page = format!("{base_url}/emulator/3ds/{}", pi.id);
    let url = match &pi.return_url {
        Some(return_url) => {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("return_url", return_url)
                .finish();
            format!("{page}?{query}")
        }
        None => page,
    };
    json!({
        "type": "redirect_to_url",
        "redirect_to_url": { "url": url, "return_url": pi.return_url },
    })
}

impl Account {
    fn intent(&self, id: &str) -> Result<&PaymentIntent, ApiError> {
        self.payment_intents
            .get(id)
            .ok_or_else(|| ApiError::not_found("payment_intent", id, "intent"))
    }

    fn intent_mut(&mut self, id: &str) -> Result<&mut PaymentIntent, ApiError> {
        self.payment_intents
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("payment_intent", id, "intent"))
    }

    /// Whether this account owns the PaymentIntent `id`.
    pub(crate) fn has_payment_intent(&self, id: &str) -> bool {
        self.payment_intents.contains_key(id)
    }

    /// Borrow a PaymentIntent (for the 3-D Secure page).
    pub(crate) fn payment_intent(&self, id: &str) -> Option<&PaymentIntent> {
        self.payment_intents.get(id)
    }

    /// The PaymentIntent JSON, with `latest_charge` expanded to the Charge
    /// object when `expand_charge`; 404 `resource_missing` if this account
    /// has no such PaymentIntent.
    pub(crate) fn payment_intent_json(
        &self,
        id: &str,
        expand_charge: bool,
    ) -> Result<Value, ApiError> {
        let pi = self.intent(id)?;
        let latest_charge = match (&pi.latest_charge, expand_charge) {
            (Some(charge), true) => self
                .charges
                .get(charge)
                .map(charge_json)
                .unwrap_or(Value::Null),
            (charge, _) => json!(charge),
        };
        Ok(json!({
            "id": pi.id,
            "object": "payment_intent",
            "amount": pi.amount,
            "amount_capturable": pi.amount_capturable,
            "amount_received": pi.amount_received,
            "canceled_at": pi.canceled_at,
            "cancellation_reason": pi.cancellation_reason,
            "capture_method": pi.capture_method,
            "client_secret": pi.client_secret,
            "confirmation_method": "automatic",
            "created": pi.created,
            "currency": pi.currency,
            "description": pi.description,
            "last_payment_error": pi.last_payment_error,
            "latest_charge": latest_charge,
            "livemode": false,
            "metadata": pi.metadata,
            "next_action": pi.next_action,
            "payment_method": pi.payment_method,
            "payment_method_types": ["card"],
            "receipt_email": pi.receipt_email,
            "status": pi.status.as_str(),
        }))
    }

    fn intent_event(&self, kind: &'static str, id: &str, events: &mut Vec<Emitted>) {
        if let Ok(object) = self.payment_intent_json(id, false) {
            events.push(Emitted { kind, object });
        }
    }

    /// The Charge JSON, 404 if unknown to this account.
    pub(crate) fn charge_json(&self, id: &str) -> Result<Value, ApiError> {
        self.charges
            .get(id)
            .map(charge_json)
            .ok_or_else(|| ApiError::not_found("charge", id, "charge"))
    }

    /// The Refund JSON, 404 if unknown to this account.
    /// `GET /v1/events/{id}`: an event about one of this account's objects.
    pub(crate) fn event_json(&self, id: &str) -> Result<Value, ApiError> {
        self.events
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("event", id, "id"))
    }

    /// Keeps an emitted event so `GET /v1/events/{id}` can return it.
    pub(crate) fn record_event(&mut self, event: &Value) {
        if let Some(id) = event["id"].as_str() {
            self.events.insert(id.to_owned(), event.clone());
        }
    }

    pub(crate) fn refund_json(&self, id: &str) -> Result<Value, ApiError> {
        self.refunds
            .get(id)
            .map(refund_json)
            .ok_or_else(|| ApiError::not_found("refund", id, "refund"))
    }

    /// `POST /v1/payment_intents`: creates the PaymentIntent (status
    /// `requires_payment_method`, or `requires_confirmation` when a payment
    /// method is attached) and confirms it at once when `confirm`. Returns its
    /// id; a declined confirmation is an `Err` although the PaymentIntent
    /// exists (as on Stripe).
    pub(crate) fn create_payment_intent(
        &mut self,
        new: NewPaymentIntent,
        base_url: &str,
        events: &mut Vec<Emitted>,
    ) -> Result<String, ApiError> {
        let mut metadata = BTreeMap::new();
        apply_metadata(&mut metadata, new.metadata)?;
        if new.confirm && new.payment_method.is_none() {
            return Err(missing_payment_method());
        }
        let id = random_id("pi");
        let pi = PaymentIntent {
            client_secret: format!("{id}_secret_{}", &random_id("s")[2..]),
            id: id.clone(),
            created: unix_now(),
            amount: new.amount,
            currency: new.currency,
            capture_method: new.capture_method,
            status: if new.payment_method.is_some() {
                Status::RequiresConfirmation
            } else {
                Status::RequiresPaymentMethod
            },
            amount_capturable: 0,
            amount_received: 0,
            payment_method: new.payment_method,
            description: new.description,
            receipt_email: new.receipt_email,
            metadata,
            return_url: new.return_url,
            latest_charge: None,
            last_payment_error: None,
            next_action: None,
            canceled_at: None,
            cancellation_reason: None,
        };
        self.payment_intents.insert(id.clone(), pi);
        if new.confirm {
            self.run_confirmation(&id, base_url, events)?;
        }
        Ok(id)
    }

    /// `POST /v1/payment_intents/{id}/capture`: only from `requires_capture`;
    /// `amount_to_capture` (default: all of `amount_capturable`) may not
    /// exceed `amount_capturable`. The rest of the authorization is released.
    pub(crate) fn capture(
        &mut self,
        id: &str,
        amount_to_capture: Option<i64>,
        metadata: Vec<(String, Option<String>)>,
        events: &mut Vec<Emitted>,
    ) -> Result<(), ApiError> {
        let pi = self
            .payment_intents
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("payment_intent", id, "intent"))?;
        if pi.status != Status::RequiresCapture {
            return Err(ApiError::state(
                "payment_intent_unexpected_state",
                format!(
                    "This PaymentIntent could not be captured because it has a status of {}. \
                     Only a PaymentIntent with one of the following statuses may be captured: \
                     requires_capture.",
                    pi.status.as_str()
                ),
            ));
        }
        let amount = amount_to_capture.unwrap_or(pi.amount_capturable);
        if amount > pi.amount_capturable {
            return Err(ApiError::state_param(
                "amount_too_large",
                "amount_to_capture",
                format!(
                    "The payment could not be captured because the requested capture amount \
                     ({amount}) is greater than the amount you can capture for this charge ({}).",
                    pi.amount_capturable
                ),
            ));
        }
        apply_metadata(&mut pi.metadata, metadata)?;
        pi.status = Status::Succeeded;
        pi.amount_received = amount;
        pi.amount_capturable = 0;
        if let Some(charge) = pi
            .latest_charge
            .as_ref()
            .and_then(|c| self.charges.get_mut(c))
        {
            charge.captured = true;
            charge.amount_captured = amount;
        }
        self.intent_event("payment_intent.succeeded", id, events);
        Ok(())
    }

    /// `POST /v1/payment_intents/{id}/cancel`: from any status in which no
    /// money moved yet.
    pub(crate) fn cancel(
        &mut self,
        id: &str,
        reason: Option<&'static str>,
        events: &mut Vec<Emitted>,
    ) -> Result<(), ApiError> {
        let pi = self.intent_mut(id)?;
        if matches!(pi.status, Status::Succeeded | Status::Canceled) {
            return Err(ApiError::state(
                "payment_intent_unexpected_state",
                format!(
                    "You cannot cancel this PaymentIntent because it has a status of {}. Only a \
                     PaymentIntent with one of the following statuses may be canceled: \
                     requires_payment_method, requires_capture, requires_confirmation, \
                     requires_action, processing.",
                    pi.status.as_str()
                ),
            ));
        }
        pi.status = Status::Canceled;
        pi.canceled_at = Some(unix_now());
        pi.cancellation_reason = reason;
        pi.amount_capturable = 0;
        pi.next_action = None;
        self.intent_event("payment_intent.canceled", id, events);
        Ok(())
    }

    /// Every payment intent that received money and every refund, for
    /// [`super::StripeEmulator::money_moved`].
    pub(crate) fn money_moved(&self) -> super::MoneyMoved {
        let mut payments: Vec<super::MovedPayment> = self
            .payment_intents
            .values()
            .filter(|pi| pi.amount_received > 0)
            .map(|pi| super::MovedPayment {
                id: pi.id.clone(),
                amount_received: pi.amount_received,
                currency: pi.currency.clone(),
            })
            .collect();
        payments.sort_by(|a, b| a.id.cmp(&b.id));
        let mut refunds: Vec<super::MovedRefund> = self
            .refunds
            .values()
            .map(|r| super::MovedRefund {
                id: r.id.clone(),
                payment_intent: r.payment_intent.clone(),
                amount: r.amount,
                status: r.status,
            })
            .collect();
        refunds.sort_by(|a, b| a.id.cmp(&b.id));
        super::MoneyMoved { payments, refunds }
    }

    /// The balance object: per currency, what was captured minus what was
    /// refunded (all of it `available`; nothing is ever `pending`).
    pub(crate) fn balance_json(&self) -> Value {
        let mut per_currency: BTreeMap<&str, i64> = BTreeMap::new();
        for charge in self.charges.values().filter(|c| c.succeeded && c.captured) {
            *per_currency.entry(charge.currency.as_str()).or_default() +=
                charge.amount_captured - charge.amount_refunded;
        }
        if per_currency.is_empty() {
            per_currency.insert("usd", 0);
        }
        let funds = |amounts: &BTreeMap<&str, i64>, zero: bool| -> Vec<Value> {
            amounts
                .iter()
                .map(|(currency, amount)| {
                    let amount = if zero { 0 } else { *amount };
                    json!({ "amount": amount, "currency": currency, "source_types": { "card": amount } })
                })
                .collect()
        };
        json!({
            "object": "balance",
            "available": funds(&per_currency, false),
            "pending": funds(&per_currency, true),
            "livemode": false,
        })
    }
}

fn missing_payment_method() -> ApiError {
    ApiError::state(
        "payment_intent_unexpected_state",
        "You cannot confirm this PaymentIntent because it's missing a payment method. Update \
         the PaymentIntent with a payment method and then confirm it again.",
    )
}

fn charge_json(charge: &Charge) -> Value {
    json!({
        "id": charge.id,
        "object": "charge",
        "amount": charge.amount,
        "amount_captured": charge.amount_captured,
        "amount_refunded": charge.amount_refunded,
        "captured": charge.captured,
        "created": charge.created,
        "currency": charge.currency,
        "failure_code": charge.failure_code,
        "failure_message": charge.failure_message,
        "livemode": false,
        "paid": charge.succeeded,
        "payment_intent": charge.payment_intent,
        "payment_method": charge.payment_method,
        "refunded": charge.captured && charge.amount_refunded >= charge.amount_captured,
        "status": if charge.succeeded { "succeeded" } else { "failed" },
    })
}

fn refund_json(refund: &Refund) -> Value {
    json!({
        "id": refund.id,
        "object": "refund",
        "amount": refund.amount,
        "charge": refund.charge,
        "created": refund.created,
        "currency": refund.currency,
        "metadata": refund.metadata,
        "payment_intent": refund.payment_intent,
        "reason": refund.reason,
        "status": refund.status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:1";

    fn new_pi(payment_method: &str, capture_method: &'static str) -> NewPaymentIntent {
        NewPaymentIntent {
            amount: 1000,
            currency: "usd".into(),
            payment_method: Some(payment_method.into()),
            confirm: true,
            capture_method,
            return_url: None,
            description: None,
            receipt_email: None,
            metadata: vec![],
        }
    }

    fn status(account: &Account, id: &str) -> Option<String> {
        let pi = account.payment_intent_json(id, false).ok()?;
        pi["status"].as_str().map(str::to_owned)
    }

    #[test]
    fn account_ids_depend_on_the_key_and_hide_it() {
        let a = AccountId::for_api_key("sk_test_a");
        assert_eq!(a, AccountId::for_api_key("sk_test_a"));
        assert_ne!(a, AccountId::for_api_key("sk_test_b"));
        assert!(!a.0.contains("sk_test_a"));
    }

    #[test]
    fn random_ids_are_prefixed_and_distinct() {
        let a = random_id("pi");
        assert!(a.starts_with("pi_"));
        assert_eq!(a.len(), 27);
        assert_ne!(a, random_id("pi"));
    }

    #[test]
    fn decline_keeps_the_intent_and_records_the_failure() {
        let mut account = Account::default();
        let mut events = vec![];
        let error = account
            .create_payment_intent(
                new_pi("pm_card_visa_chargeDeclined", "automatic"),
                BASE,
                &mut events,
            )
            .expect_err("declined");
        let body = error.error_object();
        let pi_id = body["payment_intent"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            status(&account, &pi_id).as_deref(),
            Some("requires_payment_method")
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "payment_intent.payment_failed");
        assert_eq!(
            events[0].object["last_payment_error"]["decline_code"],
            "generic_decline"
        );
    }

    #[test]
    fn manual_capture_then_refunds_never_exceed_what_was_received() {
        let mut account = Account::default();
        let mut events = vec![];
        let id = account
            .create_payment_intent(new_pi("pm_card_visa", "manual"), BASE, &mut events)
            .expect("authorized");
        assert_eq!(status(&account, &id).as_deref(), Some("requires_capture"));
        assert!(account.capture(&id, Some(600), vec![], &mut events).is_ok());
        let refund = |account: &mut Account, amount: Option<i64>, events: &mut Vec<Emitted>| {
            account.refund(
                NewRefund {
                    target: RefundTarget {
                        payment_intent: Some(id.clone()),
                        charge: None,
                    },
                    amount,
                    ..NewRefund::default()
                },
                events,
            )
        };
        let too_much = refund(&mut account, Some(601), &mut events).expect_err("over");
        assert_eq!(too_much.code_str(), Some("amount_too_large"));
        assert!(refund(&mut account, Some(100), &mut events).is_ok());
        assert!(refund(&mut account, None, &mut events).is_ok());
        let nothing_left = refund(&mut account, None, &mut events).expect_err("nothing left");
        assert_eq!(nothing_left.code_str(), Some("charge_already_refunded"));
        assert_eq!(account.balance_json()["available"][0]["amount"], 0);
    }

    #[test]
    fn three_d_secure_redirect_names_the_emulator_page() {
        let mut account = Account::default();
        let mut events = vec![];
        let mut new = new_pi("pm_card_threeDSecure2Required", "automatic");
        new.return_url = Some("https://shop.example/done?x=1".into());
        let id = account
            .create_payment_intent(new, BASE, &mut events)
            .expect("requires action");
        let pi = account.payment_intent_json(&id, false).expect("exists");
        assert_eq!(pi["status"], "requires_action");
        assert_eq!(
            pi["next_action"]["redirect_to_url"]["url"],
            format!(
                "{BASE}/emulator/3ds/{id}?return_url=https%3A%2F%2Fshop.example%2Fdone%3Fx%3D1"
            )
        );
        assert!(
            account
                .complete_authentication(&id, false, &mut events)
                .is_ok()
        );
        assert_eq!(
            status(&account, &id).as_deref(),
            Some("requires_payment_method")
        );
        assert!(
            account
                .complete_authentication(&id, true, &mut events)
                .is_err()
        );
    }

    #[test]
    fn cannot_cancel_after_success() {
        let mut account = Account::default();
        let mut events = vec![];
        let id = account
            .create_payment_intent(new_pi("pm_card_visa", "automatic"), BASE, &mut events)
            .expect("succeeded");
        let error = account
            .cancel(&id, None, &mut events)
            .expect_err("succeeded");
        assert_eq!(error.code_str(), Some("payment_intent_unexpected_state"));
    }
}
