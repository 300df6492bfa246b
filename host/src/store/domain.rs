//! The persisted vocabulary every layer shares: prefixed identifiers, ISO-4217
//! currencies, money in minor units, provider ids and timestamps.
//!
//! Each type is validated once, by its `parse` constructor, so a value of the
//! type is always well-formed; values read back from the database go through the
//! same constructors, and a malformed stored value is reported as
//! [`crate::store::StoreError::Corrupt`] instead of being trusted.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A value did not have the shape its type requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct ParseError {
    /// Which kind of value was being parsed (e.g. `"tenant id"`).
    pub what: &'static str,
    /// Why it was rejected, safe to show to a client.
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}

/// Defines the boilerplate of a validated string newtype whose `parse` the
/// type writes itself: the struct (serde through `parse`, so a value that
/// does not parse is refused on the way in), `as_str`, `Debug` as
/// `Name(value)`, `TryFrom<String>`, `From<Name> for String`, and with
/// `display` a `Display` that writes the value.
///
/// ```ignore
/// string_newtype! {
///     /// A provider id.
///     pub struct ProviderId, display;
/// }
/// impl ProviderId {
///     pub fn parse(raw: &str) -> Result<Self, ParseError> { … }
/// }
/// ```
macro_rules! string_newtype {
    ($(#[$meta:meta])* pub struct $name:ident $(, $display:ident)?;) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The value as validated (and stored).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::store::ParseError;
            fn try_from(raw: String) -> Result<Self, $crate::store::ParseError> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        $( $crate::store::domain::string_newtype!(@$display $name); )?
    };
    (@display $name:ident) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use string_newtype;

/// Number of random bytes in a generated identifier (hex-encoded: 24 chars, 96 bits).
const ID_RANDOM_BYTES: usize = 12;

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        ///
        /// Shape: the prefix, `_`, then 1–64 characters of `[a-z0-9]`.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The textual prefix of every identifier of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random identifier (96 bits of entropy).
            pub fn generate() -> Self {
                let mut bytes = [0u8; ID_RANDOM_BYTES];
                rand::rng().fill_bytes(&mut bytes);
                Self(format!("{}_{}", $prefix, hex::encode(bytes)))
            }

            /// Validates an identifier received from a client or read from storage.
            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                let rest = raw
                    .strip_prefix(concat!($prefix, "_"))
                    .ok_or_else(|| ParseError::new($what, concat!("must start with `", $prefix, "_`")))?;
                if rest.is_empty()
                    || rest.len() > 64
                    || !rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                {
                    return Err(ParseError::new(
                        $what,
                        "must be the prefix followed by 1-64 characters of [a-z0-9]",
                    ));
                }
                Ok(Self(raw.to_owned()))
            }

            /// The identifier as stored and shown.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(raw: String) -> Result<Self, ParseError> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(raw: &str) -> Result<Self, ParseError> {
                Self::parse(raw)
            }
        }
    };
}

prefixed_id!(
    /// A tenant (a business on the platform). Every tenant-owned row carries one.
    TenantId,
    "ten",
    "tenant id"
);
prefixed_id!(
    /// A tenant API key's public identifier (never the secret).
    ApiKeyId,
    "key",
    "api key id"
);
prefixed_id!(
    /// An order: mutable workflow state that ledger rows point at.
    OrderId,
    "ord",
    "order id"
);
prefixed_id!(
    /// One ledger row (a payment, a shipping charge or a refund).
    PaymentId,
    "pay",
    "payment id"
);
prefixed_id!(
    /// A refund amount held while the gateway is called.
    RefundReservationId,
    "rsv",
    "refund reservation id"
);
prefixed_id!(
    /// One audit event.
    AuditEventId,
    "aud",
    "audit event id"
);
prefixed_id!(
    /// One verified gateway event in the webhook inbox.
    InboxEventId,
    "whe",
    "inbox event id"
);
prefixed_id!(
    /// A dead letter: a job that exhausted its retries.
    DeadLetterId,
    "dlq",
    "dead letter id"
);

string_newtype! {
    /// A gateway provider's id as loaded by the runtime (e.g. `stripe`).
    ///
    /// Shape: 1–64 characters of `[a-z0-9_-]`, starting with a letter.
    pub struct ProviderId, display;
}

impl ProviderId {
    /// Validates a provider id.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.as_bytes()[0].is_ascii_lowercase()
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::new(
                "provider id",
                "must be 1-64 characters of [a-z0-9_-] starting with a letter",
            ))
        }
    }
}

/// Active ISO-4217 codes (sorted; `XXX` "no currency" is deliberately absent,
/// `XTS` "testing" is present).
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR",
    "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
];

/// An ISO-4217 currency code: exactly three upper-case ASCII letters naming an
/// active currency. Lower-case input is rejected rather than folded, so the
/// stored form is the only form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Validates an ISO-4217 code such as `"EUR"`.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bytes = raw.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(ParseError::new(
                "currency",
                format!("`{raw}` is not three upper-case letters"),
            ));
        }
        if ISO_4217.binary_search(&raw).is_err() {
            return Err(ParseError::new(
                "currency",
                format!("`{raw}` is not an ISO-4217 currency"),
            ));
        }
        Ok(Self([bytes[0], bytes[1], bytes[2]]))
    }

    /// The three-letter code.
    pub fn as_str(&self) -> &str {
        // Constructed only from validated ASCII, so this cannot fail; fall back
        // to a visibly wrong value rather than panicking.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl TryFrom<String> for Currency {
    type Error = ParseError;
    fn try_from(raw: String) -> Result<Self, ParseError> {
        Self::parse(&raw)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl std::str::FromStr for Currency {
    type Err = ParseError;
    fn from_str(raw: &str) -> Result<Self, ParseError> {
        Self::parse(raw)
    }
}

/// Largest amount of one order line, in minor units (10^11: a billion in a
/// two-decimal currency). Gateways cap a payment far lower (Stripe: 99,999,999
/// for most currencies); the bound keeps every sum over stored rows far from
/// `i64`'s limit, so a tenant can never book amounts that break its balance.
pub const MAX_LINE_MINOR: i64 = 100_000_000_000;

/// Largest total of one order (the sum of its lines), in minor units (10^12).
pub const MAX_ORDER_MINOR: i64 = 1_000_000_000_000;
/// Short text a client supplies and the host stores or shows: a customer's
/// id, e-mail or name, a product name, a carrier, a bulk user id, an
/// external reference, a key label.
///
/// Invariant: trimmed, 1 to the caller's maximum characters, no control
/// character (C0 including NUL, ESC and newlines, DEL, C1), so it can go into
/// a log line, a header or a CSV export unescaped without forging a line.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct ClientText(String);

impl ClientText {
    /// Validates `raw` as the field `what` (named in the error), at most
    /// `max_chars` characters once trimmed.
    pub fn parse(what: &'static str, raw: &str, max_chars: usize) -> Result<Self, ParseError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(ParseError::new(what, "must not be blank"));
        }
        if text.chars().count() > max_chars {
            return Err(ParseError::new(
                what,
                format!("must be at most {max_chars} characters"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(ParseError::new(
                what,
                "must not contain control characters (NUL, ESC, newlines, …)",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The text as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientText({:?})", self.0)
    }
}

impl From<ClientText> for String {
    fn from(t: ClientText) -> String {
        t.0
    }
}

/// An amount of money: integer minor units (cents) plus its currency. Never a float.
///
/// `minor` may be zero or negative in computed values (e.g. a balance); every
/// place that requires a positive amount says so and checks it with
/// [`Money::positive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in the currency's minor units.
    pub minor: i64,
    /// The currency `minor` is counted in.
    pub currency: Currency,
}

impl Money {
    /// Any amount (used for computed values such as balances).
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// A strictly positive amount, as every ledger row and order total requires.
    pub fn positive(minor: i64, currency: Currency) -> Result<Self, ParseError> {
        if minor > 0 {
            Ok(Self { minor, currency })
        } else {
            Err(ParseError::new(
                "amount",
                format!("must be a positive number of minor units, got {minor}"),
            ))
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.minor, self.currency)
    }
}

/// A point in time as stored everywhere: unix milliseconds (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self(ms)
    }

    /// Milliseconds since the unix epoch.
    pub fn as_i64(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_table_is_sorted_for_binary_search() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn currency_accepts_iso_codes_only() {
        assert_eq!(
            Currency::parse("EUR").map(|c| c.to_string()),
            Ok("EUR".into())
        );
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        assert!(Currency::parse("ABC").is_err());
        assert!(Currency::parse("XXX").is_err());
    }

    #[test]
    fn ids_round_trip_and_reject_wrong_prefix() {
        let id = TenantId::generate();
        assert_eq!(TenantId::parse(id.as_str()), Ok(id.clone()));
        assert!(TenantId::parse("ord_abc").is_err());
        assert!(TenantId::parse("ten_").is_err());
        assert!(TenantId::parse("ten_ABC").is_err());
        assert!(OrderId::parse("ord_0123abc").is_ok());
    }

    #[test]
    fn money_positive_rejects_zero_and_negative() {
        let eur = Currency::parse("EUR").expect("EUR");
        assert!(Money::positive(0, eur).is_err());
        assert!(Money::positive(-5, eur).is_err());
        assert_eq!(Money::positive(5, eur).map(|m| m.minor), Ok(5));
    }

    #[test]
    fn client_text_refuses_controls_blanks_and_overlong() {
        assert_eq!(
            ClientText::parse("customer name", "  Ada  ", 10).map(|t| t.as_str().to_owned()),
            Ok("Ada".into())
        );
        for bad in [
            "a\0b",
            "a\u{1b}[31m",
            "a\nb",
            "a\rb",
            "a\u{7f}",
            "a\u{85}b",
            "   ",
            "",
        ] {
            let err = ClientText::parse("customer name", bad, 10).unwrap_err();
            assert_eq!(err.what, "customer name", "{bad:?}");
        }
        assert!(ClientText::parse("x", &"é".repeat(10), 10).is_ok());
        assert!(ClientText::parse("x", &"é".repeat(11), 10).is_err());
    }

    #[test]
    fn provider_id_shape() {
        assert!(ProviderId::parse("stripe").is_ok());
        assert!(ProviderId::parse("my-gw_2").is_ok());
        assert!(ProviderId::parse("Stripe").is_err());
        assert!(ProviderId::parse("2co").is_err());
        assert!(ProviderId::parse("").is_err());
    }
}
