//! What a verified delivery must be before the inbox takes it. Every check
//! here runs after the signature held and before anything is stored, so a
//! delivery the database or the router would refuse is answered `400` with
//! the reason at the door, and never reaches (or fails) a shared batch.
//!
//! - The body is JSON that `serde_json` parses within its default nesting
//!   limit (128), in UTF-8, with no U+0000 in any string or key (Postgres
//!   `text` and `jsonb` cannot hold it). The check builds no tree: it walks
//!   the document once and allocates only for strings with escapes.
//! - Everything the inbox stores as text (event type, event id, dedup and
//!   object keys, kept header values) is UTF-8 without NUL or other control
//!   characters, within the lengths below.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Delivery, Reject};

/// Longest event type stored.
pub const MAX_EVENT_TYPE_BYTES: usize = 128;
/// Longest provider event id stored (dedup keys are hashed past 512).
pub const MAX_EVENT_ID_BYTES: usize = 512;
/// Longest header value kept with a delivery.
pub const MAX_KEPT_HEADER_BYTES: usize = 1024;

/// Checks that `body` is one JSON document the router can read and the
/// database can store (see the module doc).
pub fn check_json(body: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Checked::deserialize(&mut de).map_err(describe)?;
    de.end().map_err(describe)
}

fn describe(e: serde_json::Error) -> String {
    let text = e.to_string();
    if text.contains("recursion limit") {
        format!("body is nested deeper than serde_json's limit of 128 levels ({text})")
    } else {
        format!("body is not valid JSON: {text}")
    }
}

/// A JSON value, checked and discarded.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(CheckVisitor)
    }
}

/// An object key, checked and discarded.
struct CheckedKey;

impl<'de> Deserialize<'de> for CheckedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CheckedKey, D::Error> {
        d.deserialize_str(CheckVisitor).map(|_| CheckedKey)
    }
}

struct CheckVisitor;

fn no_nul<E: de::Error>(s: &str) -> Result<Checked, E> {
    if s.contains('\0') {
        Err(E::custom(
            "a string holds U+0000, which Postgres text and jsonb cannot store",
        ))
    } else {
        Ok(Checked)
    }
}

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Checked, E> {
        no_nul(s)
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Checked, E> {
        no_nul(s)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<CheckedKey, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// A text value the inbox stores: no NUL or other control character, at
/// most `max` bytes.
pub fn check_text(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "{what} is {} bytes, over the {max}-byte limit",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!(
            "{what} holds U+0000, which Postgres text cannot store"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} holds a control character"));
    }
    Ok(())
}

impl Delivery {
    /// Everything about a verified delivery that does not depend on its
    /// provider: its body is storable JSON and its text fields are sane.
    pub fn validate(&self) -> Result<(), Reject> {
        let bad = Reject::BadRequest;
        if let Some(t) = &self.event_type {
            check_text("event type", t, MAX_EVENT_TYPE_BYTES).map_err(bad)?;
        }
        if let Some(id) = &self.event_id {
            check_text("event id", id, MAX_EVENT_ID_BYTES).map_err(bad)?;
        }
        check_text("dedup key", self.dedup_key.as_str(), 512).map_err(bad)?;
        for k in &self.object_keys {
            check_text("object key", k.as_str(), 512).map_err(bad)?;
        }
        for (name, value) in &self.headers {
            if let Some(v) = value.as_str() {
                check_text(&format!("header {name}"), v, MAX_KEPT_HEADER_BYTES).map_err(bad)?;
            }
        }
        check_json(&self.body).map_err(bad)
    }
}

/// Deserializes any JSON object without keeping it: a field that must be
/// an object (and is not needed on the ingest path).
#[derive(Debug)]
pub struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AnyObject, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_check_accepts_documents_and_names_each_refusal() {
        for ok in [
            r#"{"a":[1,2.5,-3,true,null,"x\u00e9"],"b":{}}"#,
            "[]",
            "\"plain\"",
            &format!("{}{}", "[".repeat(100), "]".repeat(100)),
        ] {
            assert_eq!(check_json(ok.as_bytes()), Ok(()), "{ok}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(check_json(deep.as_bytes()).unwrap_err().contains("128"));
        assert!(check_json(br#"{"id":"a\u0000b"}"#)
            .unwrap_err()
            .contains("U+0000"));
        assert!(check_json(br#"{"a\u0000":1}"#)
            .unwrap_err()
            .contains("U+0000"));
        assert!(check_json(b"{\"t\":\"\xff\xfe\"}").is_err());
        assert!(check_json(br#"{"t":"\ud800"}"#).is_err());
        assert!(check_json(b"{} {}").is_err());
        assert!(check_json(b"").is_err());
        assert!(check_json(b"{\"a\":").is_err());
    }

    #[test]
    fn text_check_bounds_length_and_control_characters() {
        assert_eq!(check_text("t", "message.received", 128), Ok(()));
        assert!(check_text("t", &"x".repeat(129), 128).is_err());
        assert!(check_text("t", "a\0b", 128).is_err());
        assert!(check_text("t", "a\nb", 128).is_err());
        assert_eq!(check_text("t", "Dana Ortíz", 128), Ok(()));
    }
}
