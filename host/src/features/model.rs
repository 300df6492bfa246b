//! The vocabulary of features: keys, kinds, values, and what an evaluation
//! answers. Pure data; nothing here does I/O.

use std::fmt;

use serde::Serialize;

use crate::store::{ParseError, UnixMillis};

/// A feature key: 1–100 characters of `[a-z0-9_-]` in dot-separated
/// segments, starting with a letter (`provider.stripe`, `orders.bulk`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct FeatureKey(String);

impl FeatureKey {
    /// Validates a key.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        let ok = !raw.is_empty()
            && raw.len() <= 100
            && raw.as_bytes()[0].is_ascii_lowercase()
            && raw.split('.').all(segment_ok);
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::new(
                "feature key",
                "must be 1-100 characters of [a-z0-9_-] in dot-separated segments, \
                 starting with a letter",
            ))
        }
    }

    /// The key of the flag that permits provider `id` (`provider.<id>`).
    pub fn provider(id: &str) -> String {
        format!("provider.{id}")
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FeatureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeatureKey({})", self.0)
    }
}

impl fmt::Display for FeatureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<FeatureKey> for String {
    fn from(k: FeatureKey) -> String {
        k.0
    }
}

/// Whether a feature is a boolean flag or a numeric limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// On or off.
    Flag,
    /// A non-negative count, or unlimited.
    Limit,
}

impl FeatureKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Flag => "flag",
            FeatureKind::Limit => "limit",
        }
    }

    /// Parses the stored (and API) spelling.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "flag" => Ok(FeatureKind::Flag),
            "limit" => Ok(FeatureKind::Limit),
            other => Err(ParseError::new(
                "feature kind",
                format!("`{other}` is not flag|limit"),
            )),
        }
    }
}

/// A feature's value. JSON: a flag is `true`/`false`; a limit is a
/// non-negative integer, or `null` for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureValue {
    /// A flag's value.
    Flag(bool),
    /// A limit's value; `None` is unlimited.
    Limit(Option<u64>),
}

/// A value did not match its feature's kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} takes {expected}, not {got}")]
pub struct KindMismatch {
    /// The feature's kind.
    pub kind: &'static str,
    /// What it takes.
    pub expected: &'static str,
    /// A short description of what was given.
    pub got: String,
}

impl FeatureValue {
    /// `json` as a value of `kind`.
    pub fn from_json(kind: FeatureKind, json: &serde_json::Value) -> Result<Self, KindMismatch> {
        use serde_json::Value;
        match (kind, json) {
            (FeatureKind::Flag, Value::Bool(b)) => Ok(FeatureValue::Flag(*b)),
            (FeatureKind::Limit, Value::Null) => Ok(FeatureValue::Limit(None)),
            (FeatureKind::Limit, Value::Number(n)) if n.as_u64().is_some() => {
                Ok(FeatureValue::Limit(n.as_u64()))
            }
            (kind, other) => Err(KindMismatch {
                kind: kind.as_str(),
                expected: match kind {
                    FeatureKind::Flag => "true or false",
                    FeatureKind::Limit => "a non-negative integer or null (unlimited)",
                },
                got: match other {
                    Value::Null => "null".to_owned(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::String(_) => "a string".to_owned(),
                    Value::Array(_) => "an array".to_owned(),
                    Value::Object(_) => "an object".to_owned(),
                },
            }),
        }
    }

    /// The value as JSON (see the type's doc).
    pub fn to_json(self) -> serde_json::Value {
        match self {
            FeatureValue::Flag(b) => serde_json::Value::Bool(b),
            FeatureValue::Limit(Some(n)) => serde_json::Value::from(n),
            FeatureValue::Limit(None) => serde_json::Value::Null,
        }
    }

    /// The kind this value belongs to.
    pub fn kind(self) -> FeatureKind {
        match self {
            FeatureValue::Flag(_) => FeatureKind::Flag,
            FeatureValue::Limit(_) => FeatureKind::Limit,
        }
    }

    /// What a kill switch makes of a feature of `kind`: off, or a limit of 0.
    pub fn killed(kind: FeatureKind) -> Self {
        match kind {
            FeatureKind::Flag => FeatureValue::Flag(false),
            FeatureKind::Limit => FeatureValue::Limit(Some(0)),
        }
    }

    /// Whether this value lets something happen: a flag that is on, or a
    /// limit above zero.
    pub fn is_on(self) -> bool {
        match self {
            FeatureValue::Flag(b) => b,
            FeatureValue::Limit(n) => n != Some(0),
        }
    }
}

impl Serialize for FeatureValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// A feature's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// Its key.
    pub key: FeatureKey,
    /// Flag or limit.
    pub kind: FeatureKind,
    /// The value when nothing else applies.
    pub default: FeatureValue,
    /// What it controls, for operators.
    pub description: String,
    /// Registered by the host itself at start.
    pub builtin: bool,
}

/// A tenant override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Override {
    /// The value it sets.
    pub value: FeatureValue,
    /// Why (shown as the evaluation's reason).
    pub reason: String,
    /// The operator who set it.
    pub actor: String,
    /// When it stops applying; `None`: never.
    pub expires_at: Option<UnixMillis>,
    /// When it was set.
    pub created_at: UnixMillis,
}

impl Override {
    /// Whether the override applies at `now` (it does until `expires_at`).
    pub fn applies_at(&self, now: UnixMillis) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// A platform-wide kill switch of one feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KillSwitch {
    /// The feature it disables.
    pub key: FeatureKey,
    /// Why.
    pub reason: String,
    /// The operator who pulled it.
    pub actor: String,
    /// When.
    pub created_at: UnixMillis,
}

/// Where an evaluated value came from, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A platform kill switch.
    KillSwitch,
    /// An unexpired tenant override.
    Override,
    /// The tenant's plan grants it.
    Plan,
    /// The feature's default (or off, for an unknown key).
    Default,
}

impl Source {
    /// The spelling in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::KillSwitch => "kill_switch",
            Source::Override => "override",
            Source::Plan => "plan",
            Source::Default => "default",
        }
    }

    /// The OpenFeature resolution reason of this source.
    pub fn openfeature_reason(self) -> &'static str {
        match self {
            Source::KillSwitch => "DISABLED",
            Source::Override | Source::Plan => "TARGETING_MATCH",
            Source::Default => "DEFAULT",
        }
    }
}

/// One evaluated feature, in the shape of an OpenFeature evaluation result
/// (`value`, `variant`, `reason`, `error_code`), plus payhost's `source`
/// and the human reason of an override or kill switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// The feature key as asked.
    pub key: String,
    /// The effective value.
    pub value: FeatureValue,
    /// Which rule gave it.
    pub source: Source,
    /// OpenFeature's variant: `default`, `plan:<name>`, `override`, `kill_switch`.
    pub variant: String,
    /// OpenFeature's reason: `DISABLED`, `TARGETING_MATCH`, `DEFAULT`, or
    /// `ERROR` with [`Evaluation::error_code`] for an unknown key.
    pub reason: &'static str,
    /// The operator's reason for an override or a kill switch.
    pub detail: Option<String>,
    /// OpenFeature's error code: `FLAG_NOT_FOUND` for an unknown key.
    pub error_code: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_dotted_lowercase_segments() {
        for ok in [
            "refunds",
            "provider.stripe",
            "api.requests_per_minute",
            "a.b-c.d_1",
        ] {
            assert!(FeatureKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Refunds",
            "1abc",
            "a..b",
            "a.",
            ".a",
            "a b",
            "a/b",
            &"a".repeat(101),
        ] {
            assert!(FeatureKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_must_match_their_kind() {
        let flag = |v| FeatureValue::from_json(FeatureKind::Flag, &v);
        let limit = |v| FeatureValue::from_json(FeatureKind::Limit, &v);
        assert_eq!(flag(json!(true)), Ok(FeatureValue::Flag(true)));
        assert!(flag(json!(1)).is_err());
        assert!(flag(json!(null)).is_err());
        assert_eq!(limit(json!(null)), Ok(FeatureValue::Limit(None)));
        assert_eq!(limit(json!(7)), Ok(FeatureValue::Limit(Some(7))));
        assert!(limit(json!(-1)).is_err());
        assert!(limit(json!(1.5)).is_err());
        assert!(limit(json!("7")).is_err());
        assert_eq!(FeatureValue::Limit(None).to_json(), json!(null));
        assert_eq!(
            FeatureValue::killed(FeatureKind::Limit),
            FeatureValue::Limit(Some(0))
        );
        assert!(!FeatureValue::Limit(Some(0)).is_on());
        assert!(FeatureValue::Limit(None).is_on());
    }
}
