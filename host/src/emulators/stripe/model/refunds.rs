//! Refunds of an account's PaymentIntents, as Stripe documents them: never
//! more than was received, pending for the pending-refund test card.

use super::*;

impl Account {
    /// `POST /v1/refunds`: refunds part or all of what a succeeded
    /// PaymentIntent received; the sum of refunds never exceeds
    /// `amount_received`. Returns the refund's id; emits `charge.refunded`
    /// and `refund.created`.
    pub(crate) fn refund(
        &mut self,
        new: NewRefund,
        events: &mut Vec<Emitted>,
    ) -> Result<String, ApiError> {
        let pi_id = self.refund_target(&new.target)?;
        let pi = self.intent(&pi_id)?;
        let charge_id = match (&pi.latest_charge, pi.status) {
            (Some(charge), Status::Succeeded) => charge.clone(),
            _ => {
                return Err(ApiError::state(
                    "payment_intent_unexpected_state",
                    format!(
                        "This PaymentIntent ({pi_id}) does not have a successful charge to refund \
                         (status: {}).",
                        pi.status.as_str()
                    ),
                ));
            }
        };
        let (currency, received) = (pi.currency.clone(), pi.amount_received);
        let Some(charge) = self.charges.get(&charge_id) else {
            return Err(ApiError::no_such_param_object(
                "charge", &charge_id, "charge",
            ));
        };
        let status = if charge.payment_method == PENDING_REFUND_CARD {
            "pending"
        } else {
            "succeeded"
        };
        let remaining = received - charge.amount_refunded;
        if remaining <= 0 {
            return Err(ApiError::state(
                "charge_already_refunded",
                format!("Charge {charge_id} has already been refunded."),
            ));
        }
        let amount = new.amount.unwrap_or(remaining);
        if amount > remaining {
            return Err(ApiError::state_param(
                "amount_too_large",
                "amount",
                format!(
                    "Refund amount ({amount}) is greater than unrefunded amount on charge \
                     ({remaining})."
                ),
            ));
        }
        let mut metadata = BTreeMap::new();
        apply_metadata(&mut metadata, new.metadata)?;
        let refund = Refund {
            id: random_id("re"),
            created: unix_now(),
            amount,
            currency,
            charge: charge_id.clone(),
            payment_intent: pi_id,
            reason: new.reason,
            metadata,
            status,
        };
        if let Some(charge) = self.charges.get_mut(&charge_id) {
            charge.amount_refunded += amount;
            events.push(Emitted {
                kind: "charge.refunded",
                object: charge_json(charge),
            });
        }
        events.push(Emitted {
            kind: "refund.created",
            object: refund_json(&refund),
        });
        let id = refund.id.clone();
        self.refunds.insert(id.clone(), refund);
        Ok(id)
    }

    /// Resolves `payment_intent` / `charge` to this account's PaymentIntent.
    fn refund_target(&self, target: &RefundTarget) -> Result<String, ApiError> {
        let from_charge = match &target.charge {
            Some(charge_id) => Some(
                self.charges
                    .get(charge_id)
                    .map(|charge| charge.payment_intent.clone())
                    .ok_or_else(|| ApiError::no_such_param_object("charge", charge_id, "charge"))?,
            ),
            None => None,
        };
        match (&target.payment_intent, from_charge) {
            (Some(pi), Some(charge_pi)) if *pi != charge_pi => Err(ApiError::invalid_param(
                "parameter_invalid_string",
                "charge",
                format!("Charge does not belong to PaymentIntent {pi}."),
            )),
            (Some(pi), _) if !self.payment_intents.contains_key(pi) => Err(
                ApiError::no_such_param_object("payment_intent", pi, "payment_intent"),
            ),
            (Some(pi), _) => Ok(pi.clone()),
            (None, Some(charge_pi)) => Ok(charge_pi),
            (None, None) => Err(ApiError::invalid_param(
                "parameter_missing",
                "payment_intent",
                "One of the following params should be provided for this request: \
                 payment_intent or charge.",
            )),
        }
    }

    /// Whether this account holds refund `id`.
    pub(crate) fn has_refund(&self, id: &str) -> bool {
        self.refunds.contains_key(id)
    }

    /// Whether this account holds PaymentIntent `id`.
    pub(crate) fn owns_payment_intent(&self, id: &str) -> bool {
        self.payment_intents.contains_key(id)
    }

    /// **Emulator control**: the gateway ends refund `id`. `succeed`: a
    /// `pending` refund becomes `succeeded` (`refund.updated`,
    /// `charge.refund.updated`). Otherwise a `pending` refund, or a
    /// `succeeded` one of [`REFUND_FAIL_CARD`], becomes `failed`: the
    /// charge's `amount_refunded` gives the amount back, and `refund.failed`,
    /// `refund.updated` and `charge.refund.updated` are emitted, as Stripe
    /// does. `Err` (a message) for a refund in another state.
    pub(crate) fn settle_refund(
        &mut self,
        id: &str,
        succeed: bool,
        events: &mut Vec<Emitted>,
    ) -> Result<Value, String> {
        let Some(refund) = self.refunds.get(id) else {
            return Err(format!("No such refund: '{id}'"));
        };
        let refund_fail_card = self
            .charges
            .get(&refund.charge)
            .is_some_and(|c| c.payment_method == REFUND_FAIL_CARD);
        let allowed = match (succeed, refund.status) {
            (true, "pending") => true,
            (false, "pending") => true,
            (false, "succeeded") => refund_fail_card,
            _ => false,
        };
        if !allowed {
            return Err(format!(
                "Refund {id} cannot be moved to {} (status: {}).",
                if succeed { "succeeded" } else { "failed" },
                refund.status
            ));
        }
        let (charge_id, amount) = (refund.charge.clone(), refund.amount);
        if let Some(refund) = self.refunds.get_mut(id) {
            refund.status = if succeed { "succeeded" } else { "failed" };
        }
        let rendered = self.refund_json(id).map_err(|e| format!("{e:?}"))?;
        if !succeed {
            if let Some(charge) = self.charges.get_mut(&charge_id) {
                charge.amount_refunded = (charge.amount_refunded - amount).max(0);
            }
            events.push(Emitted {
                kind: "refund.failed",
                object: rendered.clone(),
            });
        }
        events.push(Emitted {
            kind: "refund.updated",
            object: rendered.clone(),
        });
        events.push(Emitted {
            kind: "charge.refund.updated",
            object: rendered.clone(),
        });
        Ok(rendered)
    }
}
