//! Deserializing request bodies so that an object stays an object.
//!
//! serde's derived structs also accept a JSON array of their fields in
//! order (`["USD", [[null, "pro", 1000, 1]], …]` is a valid `CheckoutBody`
//! to plain `serde_json`). That is a second, undocumented input format that
//! bypasses every field name (and `deny_unknown_fields`). [`from_value`]
//! deserializes through a wrapper that refuses a non-object wherever the
//! target is a struct, at any depth, and reports the path of the offence.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, Visitor,
};
use serde_json::{Map, Value};

/// Deserialize `value` into `T`, refusing arrays (or anything else but an
/// object) where `T` or any struct inside it expects an object. The error
/// names the path (`items[0]: invalid type: …`).
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(Strict(value)).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

/// A JSON value parsed with every object's keys unique: `{"amount": 1,
/// "amount": 1000}` is an error, as it is to a derived struct parsed
/// straight from text, instead of the last key silently winning (which a
/// proxy reading the first would disagree with).
pub struct UniqueKeys(pub Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(UniqueKeys(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

struct Strict(Value);

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Unexpected::Signed(i),
            None => n
                .as_f64()
                .map_or(Unexpected::Other("number"), Unexpected::Float),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

impl<'de> Deserializer<'de> for Strict {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Seq(items.into_iter())),
            Value::Object(map) => visitor.visit_map(Obj {
                iter: map.into_iter(),
                value: None,
            }),
            scalar => scalar.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a JSON object",
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // Enum payloads are not wrapped; no request body has an enum with a
        // struct variant.
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
        ignored_any
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Seq {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Strict(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Obj {
    iter: <Map<String, Value> as IntoIterator>::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Obj {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value requested before its key"))?;
        seed.deserialize(Strict(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        name: Option<String>,
        amount: i64,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        currency: String,
        items: Vec<Item>,
        extra: Option<Item>,
        #[serde(default)]
        tags: BTreeMap<String, String>,
    }

    #[test]
    fn objects_deserialize_as_usual() {
        let body: Body = from_value(json!({
            "currency": "USD",
            "items": [{"name": "a", "amount": 5}],
            "extra": null,
            "tags": {"k": "v"},
        }))
        .expect("valid body");
        assert_eq!(body.items[0].amount, 5);
        assert_eq!(body.tags["k"], "v");
        assert_eq!(body.extra, None);
    }

    #[test]
    fn a_struct_given_as_an_array_is_refused_at_any_depth() {
        let top = from_value::<Body>(json!(["USD", [[null, 1000]], null])).unwrap_err();
        assert!(top.contains("expected a JSON object"), "{top}");
        let nested =
            from_value::<Body>(json!({"currency": "USD", "items": [[null, 1000]]})).unwrap_err();
        assert!(nested.starts_with("items[0]:"), "{nested}");
        let option =
            from_value::<Body>(json!({"currency": "USD", "items": [], "extra": [null, 1]}))
                .unwrap_err();
        assert!(option.starts_with("extra:"), "{option}");
        let map = from_value::<Body>(json!({"currency": "USD", "items": [], "tags": [["k", "v"]]}))
            .unwrap_err();
        assert!(map.starts_with("tags:"), "{map}");
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let parse = |t: &str| serde_json::from_str::<UniqueKeys>(t).map(|u| u.0);
        assert!(parse(r#"{"a": 1, "a": 2}"#).is_err());
        assert!(parse(r#"{"a": [{"b": 1, "b": 1}]}"#).is_err());
        assert_eq!(
            parse(r#"{"a": [1, -2, 1.5, "s", null, true, {}]}"#).ok(),
            Some(json!({"a": [1, -2, 1.5, "s", null, true, {}]}))
        );
    }

    #[test]
    fn unknown_fields_and_types_name_their_path() {
        let e =
            from_value::<Body>(json!({"currency": "USD", "items": [{"amount": "x"}]})).unwrap_err();
        assert!(e.starts_with("items[0].amount:"), "{e}");
        let e = from_value::<Body>(json!({"currency": "USD", "items": [], "nope": 1})).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }
}
