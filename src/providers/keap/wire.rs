//! Keap's wire formats: a REST-hook delivery as fetch hints, and a v1
//! object (contact, order, tag, subscription) as the fields of the local
//! table mirroring it (PROVIDERS.md §2.3–2.4).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{hinted_type, HookDelivery};
use crate::domain::{parse_provider_time, E164Phone};
use crate::events::DomainEvent;
use crate::providers::{NormaliseError, RemoteObject};

/// A stored delivery as fetch hints: the object type and every id.
pub(super) fn normalise(body: &[u8]) -> Result<Vec<DomainEvent>, NormaliseError> {
    let hook: HookDelivery = serde_json::from_slice(body)?;
    let Some(object_type) = hinted_type(&hook.event_key) else {
        return Ok(vec![DomainEvent::Ignored(format!(
            "Keap event {} names no object syncbridge mirrors",
            hook.event_key
        ))]);
    };
    let mut ids: Vec<String> = hook
        .object_keys
        .iter()
        .filter_map(|k| match &k.id {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Err(NormaliseError::Invalid(
            "delivery names no object ids".into(),
        ));
    }
    Ok(vec![DomainEvent::FetchHint {
        object_type: object_type.to_owned(),
        ids,
    }])
}

pub(super) fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key)?.as_str().and_then(parse_provider_time)
}

/// Whether a v1 contact lists `email` (any field, case-insensitive).
pub(super) fn has_email(contact: &Value, email: &str) -> bool {
    contact
        .get("email_addresses")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter().any(|e| {
                e.get("email")
                    .and_then(Value::as_str)
                    .is_some_and(|x| x.eq_ignore_ascii_case(email))
            })
        })
}

/// The entry of a v1 list (`email_addresses`, `phone_numbers`) in `field`
/// (EMAIL1, PHONE1), else the first one.
pub(super) fn primary<'a>(v: &'a Value, list: &str, field: &str) -> Option<&'a Value> {
    let items = v.get(list)?.as_array()?;
    items
        .iter()
        .find(|i| i.get("field").and_then(Value::as_str) == Some(field))
        .or_else(|| items.first())
}

/// A v1 contact as `sync_contacts` fields. The whole object was fetched, so
/// every field is reported: an absent email or phone clears the local one.
pub fn contact_fields(v: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "email".into(),
        primary(v, "email_addresses", "EMAIL1")
            .and_then(|e| text(e, "email"))
            .into(),
    );
    m.insert("first_name".into(), text(v, "given_name").into());
    m.insert("last_name".into(), text(v, "family_name").into());
    let phone = primary(v, "phone_numbers", "PHONE1").and_then(|p| text(p, "number"));
    m.insert(
        "phone".into(),
        phone
            .map(|p| match E164Phone::parse(&p) {
                Some(e) => e.as_str().to_owned(),
                None => p,
            })
            .into(),
    );
    let company = match v.get("company") {
        Some(Value::Object(c)) => c
            .get("company_name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    m.insert("company".into(), company.into());
    let mut tags: Vec<i64> = v
        .get("tag_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    tags.sort_unstable();
    m.insert("tags".into(), json!(tags));
    let custom: Map<String, Value> = v
        .get("custom_fields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| Some((text(f, "id")?, f.get("content")?.clone())))
                .collect()
        })
        .unwrap_or_default();
    m.insert("custom_fields".into(), Value::Object(custom));
    m
}

pub(super) fn order_fields(v: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    let contact = v.get("contact").cloned().unwrap_or(Value::Null);
    m.insert(
        "keap_contact_id".into(),
        text(&contact, "id")
            .or_else(|| text(v, "contact_id"))
            .into(),
    );
    m.insert("order_number".into(), text(v, "order_number").into());
    m.insert(
        "order_date".into(),
        text(v, "order_date")
            .or_else(|| text(v, "creation_date"))
            .into(),
    );
    m.insert(
        "total_amount".into(),
        v.get("total").cloned().unwrap_or(json!(0)),
    );
    m.insert(
        "currency".into(),
        text(v, "currency").unwrap_or_else(|| "USD".into()).into(),
    );
    m.insert(
        "status".into(),
        text(v, "status").unwrap_or_else(|| "UNKNOWN".into()).into(),
    );
    m.insert(
        "line_items".into(),
        v.get("order_items").cloned().unwrap_or(json!([])),
    );
    m.insert(
        "shipping_address".into(),
        v.get("shipping_information")
            .cloned()
            .unwrap_or(Value::Null),
    );
    m.insert(
        "billing_address".into(),
        v.get("billing_address").cloned().unwrap_or(Value::Null),
    );
    m
}

pub(super) fn tag_fields(v: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), text(v, "name").into());
    m.insert("description".into(), text(v, "description").into());
    let category = v
        .get("category")
        .and_then(|c| text(c, "name").or_else(|| c.as_str().map(str::to_owned)));
    m.insert("category".into(), category.into());
    m
}

pub(super) fn subscription_fields(v: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("keap_contact_id".into(), text(v, "contact_id").into());
    m.insert("keap_product_id".into(), text(v, "product_id").into());
    m.insert(
        "keap_plan_id".into(),
        text(v, "subscription_plan_id").into(),
    );
    let status = text(v, "status").or_else(|| {
        v.get("active")
            .and_then(Value::as_bool)
            .map(|a| if a { "Active" } else { "Inactive" }.to_owned())
    });
    m.insert(
        "status".into(),
        status.unwrap_or_else(|| "Unknown".into()).into(),
    );
    m.insert("start_date".into(), text(v, "start_date").into());
    m.insert("end_date".into(), text(v, "end_date").into());
    m.insert("billing_cycle".into(), text(v, "billing_cycle").into());
    m.insert(
        "billing_frequency".into(),
        v.get("billing_frequency").cloned().unwrap_or(Value::Null),
    );
    m.insert(
        "amount".into(),
        v.get("billing_amount").cloned().unwrap_or(Value::Null),
    );
    m.insert("next_bill_date".into(), text(v, "next_bill_date").into());
    m
}

/// A fetched object as the fields of its mirror table, and its version
/// (Keap's `last_updated` where it has one, else the time it was read).
pub(super) fn remote_object(
    object_type: &str,
    table: &'static str,
    v: &Value,
) -> Option<RemoteObject> {
    let remote_id = text(v, "id")?;
    let (fields, version) = match object_type {
        "contact" => (contact_fields(v), time(v, "last_updated")),
        "order" => (
            order_fields(v),
            time(v, "modification_date").or_else(|| time(v, "last_updated")),
        ),
        "tag" => (tag_fields(v), None),
        "subscription" => (subscription_fields(v), time(v, "last_updated")),
        _ => return None,
    };
    Some(RemoteObject {
        table,
        remote_id,
        fields,
        version: version.unwrap_or_else(Utc::now),
    })
}
