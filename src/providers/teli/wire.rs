//! Teli's wire format (PROVIDERS.md §4): the list page, the call detail,
//! and the delivery a pulled call is stored as.
//!
//! A pulled call is stored as `{"success": true, "call": {…}}`: the detail
//! response's bytes exactly as Teli sent them, or, for a call from an agent
//! no business answers for (whose detail is not fetched), the listed call
//! wrapped the same way with `"source": "list"`. Its dedup key is the call
//! at its version, `<call_id>@<updated_at>` (`/list` appended for a listed
//! one): the same version pulled twice is one delivery, a version Teli
//! updated later (analysis finished) is a new one.

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};

use crate::domain::{parse_provider_time, DedupKey, ProviderName};
use crate::providers::edge::check_text;
use crate::providers::Delivery;

/// Longest call or agent id taken.
const MAX_ID: usize = 200;

/// A call as the list answers it: what the pull decides from.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub call_id: String,
    pub voice_agent_id: Option<String>,
    pub agent_id: Option<String>,
    /// `start_timestamp`: the list's order (newest first).
    pub started: Option<DateTime<Utc>>,
    /// `updated_at` as sent (the version) and parsed.
    pub version: String,
    pub updated_at: Option<DateTime<Utc>>,
    /// The entry as listed.
    pub raw: Map<String, Value>,
}

fn text(v: &Map<String, Value>, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Epoch milliseconds (Teli's `*_timestamp`), integer or float.
fn millis(v: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    let ms = v.get(key)?.as_f64()?;
    Utc.timestamp_millis_opt(ms as i64).single()
}

impl Listed {
    /// One entry of a list page (or a stored call object).
    pub fn parse(v: &Value) -> Result<Listed, String> {
        let raw = v
            .as_object()
            .ok_or_else(|| "a listed call is not an object".to_owned())?;
        let call_id = text(raw, "call_id").ok_or("a call has no call_id")?;
        check_text("call_id", &call_id, MAX_ID)?;
        let voice_agent_id = text(raw, "voice_agent_id");
        let agent_id = text(raw, "agent_id");
        for id in [&voice_agent_id, &agent_id].into_iter().flatten() {
            check_text("agent id", id, MAX_ID)?;
        }
        let version = text(raw, "updated_at").unwrap_or_default();
        check_text("updated_at", &version, 64)?;
        Ok(Listed {
            updated_at: parse_provider_time(&version),
            started: millis(raw, "start_timestamp")
                .or_else(|| text(raw, "call_started_at").and_then(|s| parse_provider_time(&s))),
            call_id,
            voice_agent_id,
            agent_id,
            version,
            raw: raw.clone(),
        })
    }

    /// The agent ids a business may be registered under, preferred first.
    pub fn agents(&self) -> Vec<&str> {
        [&self.voice_agent_id, &self.agent_id]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// The dedup key of this call's detail at this version.
    pub fn key(&self) -> String {
        format!("{}@{}", self.call_id, self.version)
    }

    /// The dedup key of this call stored as listed (no detail).
    pub fn listed_key(&self) -> String {
        format!("{}/list", self.key())
    }

    /// This call, as listed, as a delivery.
    pub fn delivery(&self) -> Result<Delivery, String> {
        let body =
            serde_json::to_vec(&json!({"success": true, "source": "list", "call": self.raw}))
                .map_err(|e| e.to_string())?;
        delivery(Bytes::from(body))
    }
}

/// A list page: `{success, calls: […], count}`. Entries that do not parse
/// are returned as errors beside the ones that do: one bad call never
/// hides its neighbours.
pub fn list_page(v: &Value) -> Result<Vec<Result<Listed, String>>, String> {
    if v.get("success").and_then(Value::as_bool) == Some(false) {
        return Err(format!("Teli answered success=false: {}", error_text(v)));
    }
    let calls = v
        .get("calls")
        .and_then(Value::as_array)
        .ok_or("the list answer has no calls array")?;
    Ok(calls.iter().map(Listed::parse).collect())
}

/// The `error` of a Teli error body, cut short.
pub fn error_text(v: &Value) -> String {
    v.get("error")
        .or_else(|| v.get("message"))
        .map(|e| match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "no error given".into())
        .chars()
        .take(300)
        .collect()
}

/// The call object of a stored or fetched call body.
pub fn call_of(body: &[u8]) -> Result<(Listed, bool), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("success").and_then(Value::as_bool) == Some(false) {
        return Err(format!("Teli answered success=false: {}", error_text(&v)));
    }
    let call = v.get("call").ok_or("the body has no call object")?;
    let listed = v.get("source").and_then(Value::as_str) == Some("list");
    Ok((Listed::parse(call)?, listed))
}

/// A pulled call's body as an inbox delivery.
pub fn delivery(body: Bytes) -> Result<Delivery, String> {
    let (call, listed) = call_of(&body)?;
    let key = if listed {
        call.listed_key()
    } else {
        call.key()
    };
    Ok(Delivery {
        provider: ProviderName::Teli,
        dedup_key: DedupKey::new(&key).ok_or("the call has no id")?,
        object_keys: Vec::new(),
        event_type: Some(if listed { "call.listed" } else { "call" }.into()),
        event_id: Some(call.call_id),
        occurred_at: call.started,
        headers: Map::new(),
        body,
    })
}

/// What the apply reads of a call's detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    pub listed: Listed,
    /// The caller (inbound) or the called (outbound), as sent.
    pub phone: Option<String>,
    /// A name from the extraction, when it holds one.
    pub name: Option<String>,
}

impl Detail {
    pub fn parse(call: &Value) -> Result<Detail, String> {
        let listed = Listed::parse(call)?;
        let raw = &listed.raw;
        let outbound = text(raw, "direction").is_some_and(|d| d.eq_ignore_ascii_case("outbound"));
        let phone = if outbound {
            text(raw, "to_number")
        } else {
            text(raw, "from_number")
        };
        let fields = raw.get("extracted_fields").and_then(Value::as_object);
        let name = fields.and_then(|f| {
            [
                "name",
                "customer_name",
                "caller_name",
                "full_name",
                "contact_name",
            ]
            .iter()
            .find_map(|k| text(f, k))
            .or_else(|| {
                let parts: Vec<String> = ["first_name", "last_name"]
                    .iter()
                    .filter_map(|k| text(f, k))
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            })
        });
        Ok(Detail {
            listed,
            phone,
            name: name.map(|n| n.chars().take(200).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DETAIL: &str = r#"{"success":true,"powered_by":"Teli","call":{"call_id":"call_a1b2","voice_agent_id":"agent_0f1e","agent_id":"74014854-b110-46c8-b037-18f0149baae6","direction":"inbound","from_number":"+14155550142","to_number":"+14155550199","start_timestamp":1741968000000,"updated_at":"2025-03-14T16:02:30.200000","extracted_fields":{"customer_name":"Ada Lovelace","bedrooms":"2"}}}"#;

    #[test]
    fn a_detail_is_a_delivery_keyed_by_its_version() {
        let d = delivery(Bytes::from_static(DETAIL.as_bytes())).unwrap();
        assert_eq!(d.dedup_key.as_str(), "call_a1b2@2025-03-14T16:02:30.200000");
        assert_eq!(d.event_type.as_deref(), Some("call"));
        assert_eq!(
            d.occurred_at.unwrap().to_rfc3339(),
            "2025-03-14T16:00:00+00:00"
        );
        let (call, listed) = call_of(DETAIL.as_bytes()).unwrap();
        assert!(!listed);
        assert_eq!(
            call.agents(),
            ["agent_0f1e", "74014854-b110-46c8-b037-18f0149baae6"]
        );
    }

    #[test]
    fn a_listed_call_keeps_its_own_key() {
        let v: Value = serde_json::from_str(DETAIL).unwrap();
        let l = Listed::parse(&v["call"]).unwrap();
        let d = l.delivery().unwrap();
        assert_eq!(
            d.dedup_key.as_str(),
            "call_a1b2@2025-03-14T16:02:30.200000/list"
        );
        assert_eq!(d.event_type.as_deref(), Some("call.listed"));
    }

    #[test]
    fn phone_and_name_follow_the_direction_and_extraction() {
        let v: Value = serde_json::from_str(DETAIL).unwrap();
        let d = Detail::parse(&v["call"]).unwrap();
        assert_eq!(d.phone.as_deref(), Some("+14155550142"));
        assert_eq!(d.name.as_deref(), Some("Ada Lovelace"));
        let mut out = v["call"].clone();
        out["direction"] = json!("outbound");
        out["extracted_fields"] = json!({"first_name": "Grace", "last_name": "Hopper"});
        let d = Detail::parse(&out).unwrap();
        assert_eq!(d.phone.as_deref(), Some("+14155550199"));
        assert_eq!(d.name.as_deref(), Some("Grace Hopper"));
        out["extracted_fields"] = Value::Null;
        assert_eq!(Detail::parse(&out).unwrap().name, None);
    }

    #[test]
    fn bad_entries_fail_alone() {
        let page = json!({"success": true, "calls": [
            {"call_id": "call_1", "updated_at": "2025-01-01T00:00:00"},
            {"call_id": ""},
            "not a call",
            {"call_id": "bad\u{0}id"},
            {"call_id": "call_2"}
        ]});
        let parsed = list_page(&page).unwrap();
        let ok: Vec<_> = parsed.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), 2);
        assert_eq!(parsed.iter().filter(|r| r.is_err()).count(), 3);
        assert_eq!(ok[1].key(), "call_2@");
        assert!(
            list_page(&json!({"success": false, "error": "organization_id is required"}))
                .unwrap_err()
                .contains("organization_id")
        );
        assert!(call_of(b"{\"success\":true}").is_err());
    }
}
