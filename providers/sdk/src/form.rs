//! `application/x-www-form-urlencoded` bodies with Stripe-style nested keys.
//!
//! Gateways such as Stripe take form-encoded parameters and express nesting
//! with brackets: `metadata[order_id]=42`, `payment_method_options[card][cvc]=…`.
//! [`Form`] keeps parameters in insertion order and encodes each key segment
//! and value separately, so the brackets stay literal while everything inside
//! them is escaped.
//!
//! Encoding: bytes outside the RFC 3986 unreserved set (`A-Z a-z 0-9 - . _ ~`)
//! become `%XX` (upper-case hex) of their UTF-8 bytes; space is `%20` rather
//! than `+`, which every form decoder reads the same way.

/// An ordered list of form parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `key=value`. `key` is a single, un-nested name.
    pub fn field(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.push(key, value);
        self
    }

    /// Appends `key=value` when `value` is `Some`; does nothing otherwise.
    pub fn opt_field<V: AsRef<str>>(self, key: impl AsRef<str>, value: Option<V>) -> Self {
        match value {
            Some(v) => self.field(key, v),
            None => self,
        }
    }

    /// Appends the nested parameter `path[0][path[1]]…=value`
    /// (`&["metadata", "order_id"]` → `metadata[order_id]`).
    pub fn nested(mut self, path: &[&str], value: impl AsRef<str>) -> Self {
        self.push_nested(path, value);
        self
    }

    /// In-place variant of [`Form::field`], for loops.
    pub fn push(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> &mut Self {
        self.pairs
            .push((encode_component(key.as_ref()), value.as_ref().to_owned()));
        self
    }

    /// In-place variant of [`Form::nested`], for loops.
    pub fn push_nested(&mut self, path: &[&str], value: impl AsRef<str>) -> &mut Self {
        self.pairs
            .push((nested_key(path), value.as_ref().to_owned()));
        self
    }

    /// True when no parameter has been added.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The encoded body, `k1=v1&k2=v2`, in insertion order.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (key, value)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(key);
            out.push('=');
            out.push_str(&encode_component(value));
        }
        out
    }
}

/// Encodes a nested key: the first segment bare, the rest in brackets, each
/// segment percent-encoded (`["metadata", "a b"]` → `metadata[a%20b]`).
pub fn nested_key(path: &[&str]) -> String {
    let mut key = String::new();
    for (i, segment) in path.iter().enumerate() {
        if i == 0 {
            key.push_str(&encode_component(segment));
        } else {
            key.push('[');
            key.push_str(&encode_component(segment));
            key.push(']');
        }
    }
    key
}

/// Percent-encodes `s` for a form key segment or value: unreserved bytes
/// (`A-Z a-z 0-9 - . _ ~`) pass through, every other byte becomes `%XX`.
pub fn encode_component(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_pass_through_everything_else_escaped() {
        assert_eq!(encode_component("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(encode_component("a b&c=d+e"), "a%20b%26c%3Dd%2Be");
        assert_eq!(encode_component("[x]/?#%"), "%5Bx%5D%2F%3F%23%25");
        assert_eq!(encode_component("é€"), "%C3%A9%E2%82%AC");
        assert_eq!(encode_component(""), "");
    }

    #[test]
    fn nested_keys_keep_literal_brackets() {
        assert_eq!(nested_key(&["metadata", "order_id"]), "metadata[order_id]");
        assert_eq!(
            nested_key(&["payment_method_options", "card", "cvc"]),
            "payment_method_options[card][cvc]"
        );
        assert_eq!(
            nested_key(&["metadata", "a b[c]"]),
            "metadata[a%20b%5Bc%5D]"
        );
        assert_eq!(nested_key(&["plain"]), "plain");
    }

    #[test]
    fn form_encodes_in_insertion_order() {
        let form = Form::new()
            .field("amount", "1000")
            .field("currency", "usd")
            .opt_field("description", Some("Order #42 & more"))
            .opt_field::<&str>("receipt_email", None)
            .nested(&["metadata", "order_id"], "ord_42");
        assert_eq!(
            form.encode(),
            "amount=1000&currency=usd&description=Order%20%2342%20%26%20more&metadata[order_id]=ord_42"
        );
    }

    #[test]
    fn push_in_loops_and_empty_form() {
        let mut form = Form::new();
        assert!(form.is_empty());
        assert_eq!(form.encode(), "");
        for (k, v) in [("a", "1"), ("b", "2")] {
            form.push_nested(&["metadata", k], v);
        }
        form.push("email", "x@y.z");
        assert_eq!(form.encode(), "metadata[a]=1&metadata[b]=2&email=x%40y.z");
    }
}
