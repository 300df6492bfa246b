//! Component outputs are untrusted input: every string a guest returns is
//! capped and cleaned here, in one place, before the host logs, stores or
//! answers it.
//!
//! Two kinds of string, treated differently:
//! - **Text** (error messages, decline codes, display names): cut to its cap
//!   on a char boundary (ending in `…`), control and bidirectional-override
//!   characters replaced by a space, the call's credential values replaced
//!   by `[redacted]`. Altered text is still good text.
//! - **Identifiers** (payment, refund and event references, echoed host ids,
//!   currencies, next-action URLs and SDK data): never altered, because a
//!   truncated reference is a *wrong* reference that could be booked or
//!   matched against another payment. One over its cap, holding a control
//!   character or holding a credential of the call makes the whole answer
//!   invalid ([`InvalidOutput`], reported as `CallError::InvalidOutput`).
//!
//! A host decision that takes a rejected output as "outcome unknown" stays
//! safe: a checkout keeps its order pending for reconciliation.

/// Longest error message (or other free text) kept from a component, bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest decline code kept, bytes (Stripe's are under 40).
pub const MAX_CODE_BYTES: usize = 64;
/// Longest reference or id accepted, bytes. Below the ledger's 255 so that
/// the host's per-line suffixes (`#<n>`) still fit.
pub const MAX_REFERENCE_BYTES: usize = 200;
/// Longest currency code accepted, bytes (ISO-4217 codes have 3).
pub const MAX_CURRENCY_BYTES: usize = 8;
/// Longest next-action redirect URL (and manifest URL) accepted, bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Largest next-action SDK data (JSON for a client SDK) accepted, bytes.
pub const MAX_SDK_DATA_BYTES: usize = 16 * 1024;
/// Most events one webhook delivery may yield.
pub const MAX_WEBHOOK_EVENTS: usize = 100;
/// Longest `Retry-After` a component may ask for, seconds.
pub const MAX_RETRY_AFTER_SECS: u32 = 3600;
/// Longest trap description kept (wasmtime's text plus the guest's stderr,
/// which is itself capped when captured).
pub const MAX_TRAP_BYTES: usize = 16 * 1024;
/// Most entries in one manifest list (currencies, credential fields, hosts).
pub const MAX_MANIFEST_ENTRIES: usize = 256;

use super::bindings::contract::{
    Decline, Manifest, Money, NextAction, Payment, PaymentState, ProviderError, Refund,
    WebhookError, WebhookEvent,
};

/// A component answer the host refuses: an identifier over its cap or
/// malformed. Names the field, never repeats the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidOutput {
    /// Which output field (`payment.reference`, …).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Cleans component output with the call's secrets at hand.
pub(crate) struct Cleaner<'a> {
    secrets: &'a [String],
}

fn is_unsafe_char(c: char) -> bool {
    // Bidi overrides and isolates can make a log line read differently
    // from what it holds.
    // Line and paragraph separators read as line breaks in some viewers;
    // marks and the BOM are invisible.
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{FEFF}'
        )
}

/// The longest prefix of `s` of at most `max` bytes, on a char boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

impl<'a> Cleaner<'a> {
    /// A cleaner scrubbing `secrets` (the call's credential values).
    pub(crate) fn new(secrets: &'a [String]) -> Self {
        Cleaner { secrets }
    }

    /// Free text: at most `cap` bytes, no control characters, no secrets.
    pub(crate) fn text(&self, raw: &str, cap: usize) -> String {
        // Scrub a window long enough to hold any secret that starts before
        // the cap, so no partial secret survives the cut.
        let longest = self.secrets.iter().map(String::len).max().unwrap_or(0);
        let window = prefix(raw, cap.saturating_add(longest));
        // Scrub before replacing control characters, so a secret that holds
        // one still matches.
        let mut scrubbed = window.to_owned();
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            if scrubbed.contains(secret.as_str()) {
                scrubbed = scrubbed.replace(secret.as_str(), "[redacted]");
            }
        }
        let mut out: String = scrubbed
            .chars()
            .map(|c| if is_unsafe_char(c) { ' ' } else { c })
            .collect();
        if out.len() > cap || window.len() < raw.len() {
            const ELLIPSIS: char = '…';
            let keep = prefix(&out, cap.saturating_sub(ELLIPSIS.len_utf8())).len();
            out.truncate(keep);
            out.push(ELLIPSIS);
        }
        out
    }

    /// An identifier, unchanged, or why it is refused.
    fn id(&self, field: &'static str, value: String, cap: usize) -> Result<String, InvalidOutput> {
        self.checked(field, value, cap, is_unsafe_char)
    }

    fn checked(
        &self,
        field: &'static str,
        value: String,
        cap: usize,
        forbidden: impl Fn(char) -> bool,
    ) -> Result<String, InvalidOutput> {
        let refuse = |reason: String| Err(InvalidOutput { field, reason });
        if value.len() > cap {
            return refuse(format!("is {} bytes, over the cap of {cap}", value.len()));
        }
        if value.chars().any(forbidden) {
            return refuse("contains control characters".into());
        }
        if self
            .secrets
            .iter()
            .any(|s| !s.is_empty() && value.contains(s.as_str()))
        {
            return refuse("contains a credential of the call".into());
        }
        Ok(value)
    }

    fn opt_id(
        &self,
        field: &'static str,
        value: Option<String>,
        cap: usize,
    ) -> Result<Option<String>, InvalidOutput> {
        value.map(|v| self.id(field, v, cap)).transpose()
    }

    fn money(&self, field: &'static str, m: Money) -> Result<Money, InvalidOutput> {
        Ok(Money {
            minor: m.minor,
            currency: self.id(field, m.currency, MAX_CURRENCY_BYTES)?,
        })
    }

    fn decline(&self, d: Decline) -> Decline {
        Decline {
            code: self.text(&d.code, MAX_CODE_BYTES),
            message: self.text(&d.message, MAX_MESSAGE_BYTES),
        }
    }
}

/// A value a component returned, cleaned before the host uses it.
pub(crate) trait Untrusted: Sized {
    /// The value with its text capped and cleaned, or why it is refused.
    fn sanitize(self, cleaner: &Cleaner<'_>) -> Result<Self, InvalidOutput>;
}

impl Untrusted for () {
    fn sanitize(self, _: &Cleaner<'_>) -> Result<Self, InvalidOutput> {
        Ok(())
    }
}

impl Untrusted for Payment {
    fn sanitize(self, c: &Cleaner<'_>) -> Result<Self, InvalidOutput> {
        let state = match self.state {
            PaymentState::RequiresAction(NextAction::Redirect(url)) => {
                PaymentState::RequiresAction(NextAction::Redirect(c.id(
                    "payment.next_action.redirect",
                    url,
                    MAX_URL_BYTES,
                )?))
            }
            // JSON may hold whitespace (tabs, newlines) between tokens.
            PaymentState::RequiresAction(NextAction::SdkData(data)) => {
                PaymentState::RequiresAction(NextAction::SdkData(c.checked(
                    "payment.next_action.sdk_data",
                    data,
                    MAX_SDK_DATA_BYTES,
                    |ch| is_unsafe_char(ch) && !matches!(ch, '\t' | '\n' | '\r'),
                )?))
            }
            PaymentState::Declined(d) => PaymentState::Declined(c.decline(d)),
            other => other,
        };
        Ok(Payment {
            reference: c.id("payment.reference", self.reference, MAX_REFERENCE_BYTES)?,
            state,
            amount: c.money("payment.amount.currency", self.amount)?,
            captured: self.captured,
        })
    }
}

impl Untrusted for Refund {
    fn sanitize(self, c: &Cleaner<'_>) -> Result<Self, InvalidOutput> {
        Ok(Refund {
            reference: c.id("refund.reference", self.reference, MAX_REFERENCE_BYTES)?,
            status: self.status,
            amount: c.money("refund.amount.currency", self.amount)?,
        })
    }
}

impl Untrusted for Vec<WebhookEvent> {
    fn sanitize(self, c: &Cleaner<'_>) -> Result<Self, InvalidOutput> {
        if self.len() > MAX_WEBHOOK_EVENTS {
            return Err(InvalidOutput {
                field: "webhook events",
                reason: format!("are {}, over the cap of {MAX_WEBHOOK_EVENTS}", self.len()),
            });
        }
        self.into_iter()
            .map(|e| {
                const REF: usize = MAX_REFERENCE_BYTES;
                Ok(WebhookEvent {
                    id: c.id("webhook_event.id", e.id, REF)?,
                    kind: e.kind,
                    gateway_type: c.id("webhook_event.gateway_type", e.gateway_type, REF)?,
                    payment_reference: c.opt_id(
                        "webhook_event.payment_reference",
                        e.payment_reference,
                        REF,
                    )?,
                    refund_reference: c.opt_id(
                        "webhook_event.refund_reference",
                        e.refund_reference,
                        REF,
                    )?,
                    amount: e
                        .amount
                        .map(|m| c.money("webhook_event.amount.currency", m))
                        .transpose()?,
                    order_id: c.opt_id("webhook_event.order_id", e.order_id, REF)?,
                    refund_id: c.opt_id("webhook_event.refund_id", e.refund_id, REF)?,
                })
            })
            .collect()
    }
}

impl Untrusted for ProviderError {
    fn sanitize(self, c: &Cleaner<'_>) -> Result<Self, InvalidOutput> {
        let m = |text: String| c.text(&text, MAX_MESSAGE_BYTES);
        Ok(match self {
            ProviderError::InvalidCredentials(t) => ProviderError::InvalidCredentials(m(t)),
            ProviderError::Declined(d) => ProviderError::Declined(c.decline(d)),
            ProviderError::InvalidRequest(t) => ProviderError::InvalidRequest(m(t)),
            ProviderError::Unavailable(t) => ProviderError::Unavailable(m(t)),
            ProviderError::RateLimited(after) => {
                ProviderError::RateLimited(after.map(|s| s.min(MAX_RETRY_AFTER_SECS)))
            }
            ProviderError::Unsupported(t) => ProviderError::Unsupported(m(t)),
            ProviderError::Internal(t) => ProviderError::Internal(m(t)),
        })
    }
}

impl Untrusted for WebhookError {
    fn sanitize(self, c: &Cleaner<'_>) -> Result<Self, InvalidOutput> {
        Ok(match self {
            WebhookError::MalformedSignature(t) => {
                WebhookError::MalformedSignature(c.text(&t, MAX_MESSAGE_BYTES))
            }
            WebhookError::InvalidPayload(t) => {
                WebhookError::InvalidPayload(c.text(&t, MAX_MESSAGE_BYTES))
            }
            other => other,
        })
    }
}

impl Untrusted for Manifest {
    fn sanitize(self, c: &Cleaner<'_>) -> Result<Self, InvalidOutput> {
        let bounded = |field: &'static str, len: usize| {
            if len > MAX_MANIFEST_ENTRIES {
                Err(InvalidOutput {
                    field,
                    reason: format!("has {len} entries, over the cap of {MAX_MANIFEST_ENTRIES}"),
                })
            } else {
                Ok(())
            }
        };
        bounded("manifest.currencies", self.currencies.len())?;
        bounded("manifest.credential_fields", self.credential_fields.len())?;
        bounded("manifest.default_hosts", self.default_hosts.len())?;
        Ok(Manifest {
            id: c.id("manifest.id", self.id, MAX_CODE_BYTES)?,
            name: c.text(&self.name, MAX_CODE_BYTES * 2),
            version: c.id("manifest.version", self.version, MAX_CODE_BYTES)?,
            currencies: self
                .currencies
                .into_iter()
                .map(|cur| c.id("manifest.currencies", cur, MAX_CURRENCY_BYTES))
                .collect::<Result<_, _>>()?,
            credential_fields: self
                .credential_fields
                .into_iter()
                .map(|f| {
                    Ok(super::bindings::contract::CredentialField {
                        name: c.id("manifest.credential_fields.name", f.name, MAX_CODE_BYTES)?,
                        label: c.text(&f.label, MAX_CODE_BYTES * 2),
                        secret: f.secret,
                        required: f.required,
                    })
                })
                .collect::<Result<_, _>>()?,
            capabilities: self.capabilities,
            default_base_url: c.id(
                "manifest.default_base_url",
                self.default_base_url,
                MAX_URL_BYTES,
            )?,
            default_hosts: self
                .default_hosts
                .into_iter()
                .map(|h| c.id("manifest.default_hosts", h, MAX_URL_BYTES))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_with_control_characters_are_still_scrubbed_and_separators_go() {
        let secrets = vec!["sk_live_line\nbreak".to_owned(), String::new()];
        let c = Cleaner::new(&secrets);
        assert_eq!(
            c.text("key sk_live_line\nbreak leaked", 100),
            "key [redacted] leaked",
            "scrubbed before the newline became a space; an empty secret changes nothing"
        );
        assert_eq!(
            c.text("a\u{2028}b\u{2029}c\u{feff}d\u{200e}", 100),
            "a b c d ",
            "line separators, the BOM and marks become spaces"
        );
    }

    #[test]
    fn text_is_capped_on_a_char_boundary_and_loses_control_characters() {
        let c = Cleaner::new(&[]);
        let huge = "é".repeat(4 * 1024 * 1024);
        let out = c.text(&huge, MAX_MESSAGE_BYTES);
        assert!(out.len() <= MAX_MESSAGE_BYTES, "{}", out.len());
        assert!(out.ends_with('…'));
        assert_eq!(
            c.text("a\nb\u{1b}[31mc\u{202e}d\0", 100),
            "a b [31mc d ",
            "control characters and bidi overrides become spaces"
        );
        assert_eq!(c.text("short", 100), "short");
    }

    #[test]
    fn secrets_are_scrubbed_even_across_the_cut() {
        let secrets = vec!["sk_test_secret_value".to_string()];
        let c = Cleaner::new(&secrets);
        let raw = format!("{}sk_test_secret_value and more", "x".repeat(10));
        let out = c.text(&raw, 16);
        assert!(!out.contains("sk_test"), "{out}");
        assert!(out.len() <= 16);
        assert_eq!(c.text("key sk_test_secret_value", 100), "key [redacted]");
    }

    #[test]
    fn identifiers_are_refused_not_altered() {
        let secrets = vec!["sk_test_secret_value".to_string()];
        let c = Cleaner::new(&secrets);
        let payment = |reference: String| Payment {
            reference,
            state: PaymentState::Approved,
            amount: Money {
                minor: 1,
                currency: "USD".into(),
            },
            captured: None,
        };
        let ok = payment("pi_123".into())
            .sanitize(&c)
            .expect("a normal reference");
        assert_eq!(ok.reference, "pi_123");
        for bad in [
            "p".repeat(MAX_REFERENCE_BYTES + 1),
            "pi_1\n".into(),
            "pi_sk_test_secret_value".into(),
        ] {
            let err = payment(bad).sanitize(&c).expect_err("refused");
            assert_eq!(err.field, "payment.reference");
        }
        let long_url = PaymentState::RequiresAction(NextAction::Redirect(format!(
            "https://x.example/{}",
            "a".repeat(MAX_URL_BYTES)
        )));
        let err = Payment {
            state: long_url,
            ..payment("pi_1".into())
        }
        .sanitize(&c)
        .expect_err("a redirect URL over its cap");
        assert_eq!(err.field, "payment.next_action.redirect");
        assert!(!err.to_string().contains("aaaa"), "never echoes the value");
    }

    #[test]
    fn error_messages_and_retry_after_are_capped() {
        let c = Cleaner::new(&[]);
        let e = ProviderError::Internal("m".repeat(10 * MAX_MESSAGE_BYTES))
            .sanitize(&c)
            .expect("text is never refused");
        let ProviderError::Internal(m) = e else {
            panic!("variant kept");
        };
        assert!(m.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(
            ProviderError::RateLimited(Some(u32::MAX)).sanitize(&c),
            Ok(ProviderError::RateLimited(Some(MAX_RETRY_AFTER_SECS)))
        );
    }
}
