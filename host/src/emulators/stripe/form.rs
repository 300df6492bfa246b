//! Stripe request parameters: `application/x-www-form-urlencoded` bodies (and
//! GET query strings) with bracketed nested keys such as `metadata[order_id]`
//! and `expand[]`. Parsed by hand with `url::form_urlencoded` because axum's
//! `Form` extractor is not enabled in this workspace.

use std::collections::BTreeMap;

use super::error::ApiError;

/// Stripe's metadata limits: at most 50 keys, keys up to 40 characters,
/// values up to 500 characters.
const METADATA_MAX_KEYS: usize = 50;
const METADATA_MAX_KEY_CHARS: usize = 40;
const METADATA_MAX_VALUE_CHARS: usize = 500;

/// The decoded parameters of one request, in the order they were sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes a form body or query string; malformed escapes decode lossily,
    /// as `form_urlencoded` does.
    pub(crate) fn parse(input: &[u8]) -> Self {
        Params {
            pairs: url::form_urlencoded::parse(input).into_owned().collect(),
        }
    }

    /// The parameters in a canonical order: two requests with the same
    /// parameters sent in a different order compare equal. Used to decide
    /// whether an idempotency key is reused with "the same parameters".
    pub(crate) fn fingerprint(&self) -> Vec<(String, String)> {
        let mut pairs = self.pairs.clone();
        pairs.sort();
        pairs
    }

    /// Rejects any parameter that is neither in `known` nor starts with one of
    /// `known_prefixes` (e.g. `"metadata["`), the way Stripe answers
    /// `parameter_unknown`.
    pub(crate) fn reject_unknown(
        &self,
        known: &[&str],
        known_prefixes: &[&str],
    ) -> Result<(), ApiError> {
        for (name, _) in &self.pairs {
            let is_known = known.contains(&name.as_str())
                || known_prefixes.iter().any(|prefix| name.starts_with(prefix));
            if !is_known {
                return Err(ApiError::unknown_param(name));
            }
        }
        Ok(())
    }

    /// The last value sent for `name`; an empty value means "not set", as in
    /// Stripe's API.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }

    /// Every value of the list parameter `name` (`name[]=a&name[]=b`, or
    /// indexed `name[0]=a&name[1]=b`), in the order sent.
    pub(crate) fn list(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}[");
        self.pairs
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix(']'))
                    .is_some_and(|index| index.chars().all(|c| c.is_ascii_digit()))
            })
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
            .collect()
    }

    /// An integer parameter, `None` when absent. Non-integers are rejected with
    /// `parameter_invalid_integer`.
    pub(crate) fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(raw) => raw.parse::<i64>().map(Some).map_err(|_| {
                ApiError::invalid_param(
                    "parameter_invalid_integer",
                    name,
                    format!("Invalid integer: {raw}"),
                )
            }),
        }
    }

    /// A positive amount in minor units (`>= 1`), `None` when absent.
    pub(crate) fn positive_amount(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.integer(name)? {
            Some(value) if value < 1 => Err(ApiError::invalid_param(
                "parameter_invalid_integer",
                name,
                "This value must be greater than or equal to 1.",
            )),
            other => Ok(other),
        }
    }

    /// A boolean parameter (`true`/`false`), `None` when absent.
    pub(crate) fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(raw) => Err(ApiError::invalid_param(
                "parameter_invalid_boolean",
                name,
                format!("Invalid boolean: {raw}"),
            )),
        }
    }

    /// A parameter restricted to `allowed` values, `None` when absent.
    pub(crate) fn one_of(
        &self,
        name: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(raw) => allowed
                .iter()
                .find(|candidate| **candidate == raw)
                .copied()
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "parameter_invalid_string",
                        name,
                        format!("Invalid {name}: must be one of {}", allowed.join(", ")),
                    )
                }),
        }
    }

    /// An absolute URL parameter (e.g. `return_url`), `None` when absent.
    pub(crate) fn url(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(raw) => match url::Url::parse(raw) {
                Ok(_) => Ok(Some(raw.to_owned())),
                Err(_) => Err(ApiError::invalid_param(
                    "url_invalid",
                    name,
                    format!("Not a valid URL: {name}"),
                )),
            },
        }
    }

    /// The `metadata[key]=value` updates, in order: `Some(value)` sets a key,
    /// `None` (an empty value) unsets it. Enforces Stripe's limits on key and
    /// value length; nested keys are rejected.
    pub(crate) fn metadata(&self) -> Result<Vec<(String, Option<String>)>, ApiError> {
        let mut updates = Vec::new();
        for (name, value) in &self.pairs {
            let Some(rest) = name.strip_prefix("metadata[") else {
                continue;
            };
            let key = match rest.strip_suffix(']') {
                Some(key) if !key.is_empty() && !key.contains(['[', ']']) => key,
                _ => {
                    return Err(ApiError::invalid_param(
                        "parameter_invalid_string",
                        name.as_str(),
                        "Invalid metadata key: metadata keys must be non-empty plain strings.",
                    ));
                }
            };
            if key.chars().count() > METADATA_MAX_KEY_CHARS {
                return Err(ApiError::invalid_param(
                    "parameter_invalid_string",
                    name.as_str(),
                    format!(
                        "Metadata keys can have up to {METADATA_MAX_KEY_CHARS} characters; \
                         `{key}` has more."
                    ),
                ));
            }
            if value.chars().count() > METADATA_MAX_VALUE_CHARS {
                return Err(ApiError::invalid_param(
                    "parameter_invalid_string",
                    name.as_str(),
                    format!(
                        "Metadata values can have up to {METADATA_MAX_VALUE_CHARS} characters."
                    ),
                ));
            }
            let value = (!value.is_empty()).then(|| value.clone());
            updates.push((key.to_owned(), value));
        }
        Ok(updates)
    }

    /// Whether `expand[]=<field>` (or `expand[N]=<field>`) was requested.
    pub(crate) fn expands(&self, field: &str) -> bool {
        self.pairs
            .iter()
            .any(|(name, value)| name.starts_with("expand[") && value == field)
    }
}

/// Applies [`Params::metadata`] updates to an object's metadata, enforcing
/// Stripe's 50-key limit on the result.
pub(crate) fn apply_metadata(
    metadata: &mut BTreeMap<String, String>,
    updates: Vec<(String, Option<String>)>,
) -> Result<(), ApiError> {
    let mut next = metadata.clone();
    for (key, value) in updates {
        match value {
            Some(value) => {
                next.insert(key, value);
            }
            None => {
                next.remove(&key);
            }
        }
    }
    if next.len() > METADATA_MAX_KEYS {
        return Err(ApiError::invalid_param(
            "parameter_invalid_string",
            "metadata",
            format!("You can have up to {METADATA_MAX_KEYS} metadata keys."),
        ));
    }
    *metadata = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bracketed_metadata_and_escapes() {
        let params =
            Params::parse(b"amount=2000&metadata%5Border_id%5D=ord+42&metadata[note]=a%26b");
        assert_eq!(params.integer("amount").ok(), Some(Some(2000)));
        let updates = params.metadata().ok();
        assert_eq!(
            updates,
            Some(vec![
                ("order_id".to_owned(), Some("ord 42".to_owned())),
                ("note".to_owned(), Some("a&b".to_owned())),
            ])
        );
    }

    #[test]
    fn empty_metadata_value_unsets_the_key() {
        let mut metadata = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        let params = Params::parse(b"metadata[a]=&metadata[b]=2");
        let updates = params.metadata().ok().unwrap_or_default();
        assert!(apply_metadata(&mut metadata, updates).is_ok());
        assert_eq!(metadata, BTreeMap::from([("b".to_owned(), "2".to_owned())]));
    }

    #[test]
    fn nested_or_oversized_metadata_is_rejected() {
        assert!(Params::parse(b"metadata[a][b]=1").metadata().is_err());
        assert!(Params::parse(b"metadata[]=1").metadata().is_err());
        let long_key = format!("metadata[{}]=1", "k".repeat(41));
        assert!(Params::parse(long_key.as_bytes()).metadata().is_err());
    }

    #[test]
    fn invalid_integers_and_booleans_name_the_param() {
        let params = Params::parse(b"amount=12.5&confirm=yes&zero=0");
        let error = params.integer("amount").err().map(|e| e.error_object());
        assert_eq!(
            error.as_ref().and_then(|e| e["param"].as_str()),
            Some("amount")
        );
        assert_eq!(
            error.as_ref().and_then(|e| e["code"].as_str()),
            Some("parameter_invalid_integer")
        );
        assert!(params.boolean("confirm").is_err());
        assert!(params.positive_amount("zero").is_err());
        assert_eq!(params.positive_amount("missing").ok(), Some(None));
    }

    #[test]
    fn fingerprint_ignores_order_but_not_values() {
        let a = Params::parse(b"amount=1&currency=usd");
        let b = Params::parse(b"currency=usd&amount=1");
        let c = Params::parse(b"currency=usd&amount=2");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn unknown_parameters_are_rejected_by_name() {
        let params = Params::parse(b"amount=1&metadata[x]=1&amonut=2");
        let error = params
            .reject_unknown(&["amount"], &["metadata["])
            .err()
            .map(|e| e.error_object());
        assert_eq!(
            error.as_ref().and_then(|e| e["param"].as_str()),
            Some("amonut")
        );
    }

    #[test]
    fn expand_accepts_both_array_forms() {
        assert!(Params::parse(b"expand[]=latest_charge").expands("latest_charge"));
        assert!(Params::parse(b"expand[0]=latest_charge").expands("latest_charge"));
        assert!(!Params::parse(b"expand[]=customer").expands("latest_charge"));
    }
}
