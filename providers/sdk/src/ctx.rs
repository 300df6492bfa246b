//! Helpers on [`CallContext`]: reading credentials, choosing the base URL and
//! deriving gateway idempotency keys.
//!
//! These are inherent methods on the generated type, so a provider needs no
//! extra import: `ctx.require_credential("secret-key")?`.

use crate::{CallContext, ProviderError, signature};

impl CallContext {
    /// The value of credential `name`, or `None` when the tenant did not supply
    /// it (an empty value counts as not supplied).
    ///
    /// The returned value is a secret: never log it or put it in an error.
    pub fn credential(&self, name: &str) -> Option<&str> {
        self.credentials
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Like [`CallContext::credential`], but a missing credential is
    /// [`ProviderError::InvalidCredentials`] naming the field (never a value).
    pub fn require_credential(&self, name: &str) -> Result<&str, ProviderError> {
        self.credential(name).ok_or_else(|| {
            ProviderError::InvalidCredentials(format!("missing credential `{name}`"))
        })
    }

    /// The base URL for gateway calls: the host's override (emulator, proxy)
    /// when set and non-blank, else `default`. A trailing `/` is removed so
    /// callers can always write `format!("{base}/v1/…")`.
    pub fn base_url<'a>(&'a self, default: &'a str) -> &'a str {
        let chosen = match self.base_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => url,
            _ => default,
        };
        chosen.trim_end_matches('/')
    }

    /// The idempotency key to send to the gateway for `operation` (a short
    /// label such as `"create"`), at most `max_len` bytes.
    ///
    /// Derived deterministically from the host's key (see
    /// [`derive_idempotency_key`]), so a retried call sends the same key and
    /// the gateway never performs the operation twice; distinct operations in
    /// one call get distinct keys. When the host supplied no key, a random one
    /// is generated: the request is still safe to retry at the HTTP level, but
    /// not across calls.
    pub fn idempotency_key_for(&self, operation: &str, max_len: usize) -> String {
        match self.idempotency_key.as_deref() {
            Some(key) if !key.is_empty() => derive_idempotency_key(key, operation, max_len),
            _ => derive_idempotency_key(&random_hex(16), operation, max_len),
        }
    }
}

/// Derives a gateway idempotency key `"{base}:{operation}"` that fits in
/// `max_len` bytes.
///
/// When the plain form is too long, the hex SHA-256 of it is used instead
/// (truncated to `max_len`), so the result stays deterministic and distinct
/// per `(base, operation)`.
pub fn derive_idempotency_key(base: &str, operation: &str, max_len: usize) -> String {
    let plain = format!("{base}:{operation}");
    if plain.len() <= max_len {
        return plain;
    }
    let mut hashed = signature::to_hex(&signature::sha256(plain.as_bytes()));
    hashed.truncate(max_len);
    hashed
}

/// `bytes` random bytes, hex-encoded: from `wasi:random` inside a component,
/// from the standard library's per-process hasher seed natively (tests only).
#[cfg(target_arch = "wasm32")]
fn random_hex(bytes: usize) -> String {
    signature::to_hex(&crate::bindings::wasi::random::random::get_random_bytes(
        bytes as u64,
    ))
}

/// Native stand-in for the `wasi:random` version above (tests only).
#[cfg(not(target_arch = "wasm32"))]
fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    let mut out = Vec::with_capacity(bytes);
    let mut i = 0u64;
    while out.len() < bytes {
        out.extend_from_slice(&state.hash_one(i).to_le_bytes());
        i += 1;
    }
    out.truncate(bytes);
    signature::to_hex(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Credential;

    fn ctx(base_url: Option<&str>, key: Option<&str>) -> CallContext {
        CallContext {
            credentials: vec![
                Credential {
                    name: "secret-key".into(),
                    value: "sk_test_123".into(),
                },
                Credential {
                    name: "empty".into(),
                    value: String::new(),
                },
            ],
            base_url: base_url.map(Into::into),
            idempotency_key: key.map(Into::into),
        }
    }

    #[test]
    fn credential_lookup_by_name() {
        let c = ctx(None, None);
        assert_eq!(c.credential("secret-key"), Some("sk_test_123"));
        assert_eq!(c.credential("other"), None);
        assert_eq!(c.credential("empty"), None, "empty values count as missing");
    }

    #[test]
    fn require_credential_names_the_field_not_the_value() {
        let c = ctx(None, None);
        assert_eq!(c.require_credential("secret-key"), Ok("sk_test_123"));
        assert_eq!(
            c.require_credential("webhook"),
            Err(ProviderError::InvalidCredentials(
                "missing credential `webhook`".into()
            ))
        );
    }

    #[test]
    fn base_url_prefers_override_and_trims_slash() {
        assert_eq!(
            ctx(None, None).base_url("https://api.stripe.com/"),
            "https://api.stripe.com"
        );
        assert_eq!(
            ctx(Some("http://127.0.0.1:9000/stripe/"), None).base_url("https://api.stripe.com"),
            "http://127.0.0.1:9000/stripe"
        );
        assert_eq!(
            ctx(Some("  "), None).base_url("https://api.stripe.com"),
            "https://api.stripe.com"
        );
    }

    #[test]
    fn idempotency_keys_are_deterministic_and_per_operation() {
        let c = ctx(None, Some("order-42"));
        assert_eq!(c.idempotency_key_for("create", 255), "order-42:create");
        assert_eq!(
            c.idempotency_key_for("create", 255),
            c.idempotency_key_for("create", 255)
        );
        assert_ne!(
            c.idempotency_key_for("create", 255),
            c.idempotency_key_for("capture", 255)
        );
    }

    #[test]
    fn long_idempotency_keys_are_hashed_to_fit() {
        let long = "k".repeat(300);
        let a = derive_idempotency_key(&long, "create", 255);
        let b = derive_idempotency_key(&long, "refund", 255);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(a, derive_idempotency_key(&long, "create", 255));
        assert_eq!(derive_idempotency_key(&long, "create", 40).len(), 40);
    }

    #[test]
    fn missing_host_key_gets_a_random_one() {
        let c = ctx(None, None);
        let a = c.idempotency_key_for("create", 255);
        let b = c.idempotency_key_for("create", 255);
        assert!(a.ends_with(":create"), "{a}");
        assert_eq!(a.len(), 32 + ":create".len());
        assert_ne!(a, b);
    }
}
