//! Keap REST hooks and the Keap REST v1 API. Keap signs nothing: the hook
//! URL carries an unguessable token (`/webhooks/keap/{token}`, compared in
//! constant time with `KEAP_WEBHOOK_TOKEN`), the `X-Hook-Secret` handshake is
//! echoed only on a valid token, and a delivery is a hint — up to 1000
//! object ids — that the router turns into debounced fetches
//! (`sync_fetch_queue`); the fetcher reads each object from the API with
//! syncbridge's own key. Deliveries dedupe per object key
//! (`event_key|id|timestamp`), PROVIDERS.md Part A.
//!
//! Outbound, local changes to `sync_contacts` are pushed: PATCH by the
//! stored `keap_id`, else look the contact up by email (so a create retried
//! after a timeout finds the first one) and PATCH it, else POST. Keap's API
//! has no update for orders, subscriptions or tags, so those tables mirror
//! Keap one way.

use axum::http::{HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::outbound::{JsonApi, Pacer, PushError};
use super::{
    header, keep_headers, Change, Delivery, FetchFuture, Fetched, MaintainFuture, NormaliseError,
    Provider, PushFuture, Pushed, Reject, RemoteObject, StoredEvent, Verified, WebhookRequest,
};
use crate::config::{Config, Secret};
use crate::domain::{parse_provider_time, DedupKey, E164Phone, ProviderName};
use crate::events::DomainEvent;

const HOOK_SECRET: &str = "x-hook-secret";
const MAX_OBJECT_KEYS: usize = 1000;

const WEBHOOKS_DISABLED: &str = "Keap webhooks are disabled: set KEAP_WEBHOOK_TOKEN";

/// The REST-hook events syncbridge subscribes to (those of them the account
/// offers): every change to a mirrored object.
const HOOK_EVENT_KEYS: &[&str] = &[
    "contact.add",
    "contact.edit",
    "contact.delete",
    "contactGroup.applied",
    "contactGroup.removed",
    "contactGroup.add",
    "contactGroup.edit",
    "contactGroup.delete",
    "order.add",
    "order.edit",
    "order.delete",
    "subscription.add",
    "subscription.edit",
    "subscription.delete",
];
const API_DISABLED: &str = "the Keap API is disabled: set KEAP_API_KEY";

pub struct Keap {
    token: Option<Secret>,
    api: Option<Api>,
}

impl Keap {
    pub fn from_config(c: &Config) -> Result<Keap, &'static str> {
        let api = c.keap.api_key.clone().map(|key| {
            Api(JsonApi::new(
                c.push_timeout,
                c.keap.api_url.trim_end_matches('/').to_owned(),
                "X-Keap-API-Key",
                key,
                Pacer::per_minute(c.keap.api_rate_per_min),
            ))
        });
        if c.keap.webhook_token.is_none() && api.is_none() {
            return Err(WEBHOOKS_DISABLED);
        }
        Ok(Keap {
            token: c.keap.webhook_token.clone(),
            api,
        })
    }
}

/// The local table mirroring a Keap object type, and the API path to read
/// one object of it.
fn object_table(object_type: &str) -> Option<(&'static str, &'static str)> {
    match object_type {
        "contact" => Some(("sync_contacts", "/contacts/")),
        "order" => Some(("sync_orders", "/orders/")),
        "tag" => Some(("sync_tags", "/tags/")),
        "subscription" => Some(("sync_subscriptions", "/subscriptions/")),
        _ => None,
    }
}

/// The object type a hook's event key names: `contact.edit` → contact.
/// `contactGroup.*` events are about tags, except `applied`/`removed`,
/// which change a contact's tags (their ids are taken as contact ids —
/// PROVIDERS.md §2.5 lists the key catalogue as unverified).
pub fn hinted_type(event_key: &str) -> Option<&'static str> {
    let (object, action) = event_key.split_once('.').unwrap_or((event_key, ""));
    match (object, action) {
        ("contact", _) => Some("contact"),
        ("contactGroup", "applied" | "removed") => Some("contact"),
        ("contactGroup", _) | ("tag", _) => Some("tag"),
        ("order", _) => Some("order"),
        ("subscription", _) => Some("subscription"),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
struct HookDelivery {
    event_key: String,
    #[allow(dead_code)]
    object_type: Option<String>,
    object_keys: Vec<ObjectKey>,
}

#[derive(Debug, Deserialize)]
struct ObjectKey {
    id: Value,
    timestamp: Option<String>,
}

impl Provider for Keap {
    fn name(&self) -> ProviderName {
        ProviderName::Keap
    }

    fn webhooks_disabled(&self) -> Option<&'static str> {
        self.token.is_none().then_some(WEBHOOKS_DISABLED)
    }

    fn routes_events(&self) -> bool {
        // Hints are only worth applying when the objects can be fetched;
        // until then deliveries wait in the inbox.
        self.api.is_some()
    }

    fn normalise(&self, event: &StoredEvent<'_>) -> Result<Vec<DomainEvent>, NormaliseError> {
        normalise(event.body)
    }

    fn fetches(&self) -> bool {
        self.api.is_some()
    }

    fn fetch<'a>(&'a self, object_type: &'a str, id: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let api = self.api.as_ref().ok_or(PushError::Disabled(API_DISABLED))?;
            api.fetch(object_type, id).await
        })
    }

    fn ensure_subscriptions<'a>(&'a self, public_url: &'a str) -> MaintainFuture<'a> {
        Box::pin(async move {
            let (Some(api), Some(token)) = (&self.api, &self.token) else {
                return Ok(None);
            };
            let url = format!("{public_url}/webhooks/keap/{}", token.expose());
            api.ensure_hooks(&url).await.map(Some)
        })
    }

    fn pushes(&self) -> Result<&'static [&'static str], &'static str> {
        match self.api {
            Some(_) => Ok(&["sync_contacts"]),
            None => Err(API_DISABLED),
        }
    }

    fn push<'a>(&'a self, change: &'a Change) -> PushFuture<'a> {
        Box::pin(async move {
            let api = self.api.as_ref().ok_or(PushError::Disabled(API_DISABLED))?;
            match change.table.as_str() {
                "sync_contacts" => api.push_contact(change).await,
                other => Err(PushError::Permanent(format!(
                    "Keap's API cannot update {other}; it is mirrored from Keap only"
                ))),
            }
        })
    }

    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Reject> {
        let token = req.token.unwrap_or_default();
        if !self.token.as_ref().is_some_and(|t| t.matches(token)) {
            return Err(Reject::Unauthorized("unknown hook token".into()));
        }
        if let Some(secret) = header(req.headers, HOOK_SECRET) {
            let value = HeaderValue::from_str(secret).map_err(|_| {
                Reject::BadRequest("X-Hook-Secret is not a valid header value".into())
            })?;
            return Ok(Verified::Handshake {
                header: HeaderName::from_static(HOOK_SECRET),
                value,
            });
        }
        let hook: HookDelivery = serde_json::from_slice(req.body).map_err(|e| {
            Reject::BadRequest(format!(
                "body is not a Keap hook delivery {{event_key, object_type, object_keys}}: {e}"
            ))
        })?;
        if hook.object_keys.is_empty() || hook.object_keys.len() > MAX_OBJECT_KEYS {
            return Err(Reject::BadRequest(format!(
                "a delivery carries 1 to {MAX_OBJECT_KEYS} object keys, this one {}",
                hook.object_keys.len()
            )));
        }
        let mut object_keys = Vec::with_capacity(hook.object_keys.len());
        let mut latest = None;
        for k in &hook.object_keys {
            let id = match &k.id {
                Value::Number(n) => n.to_string(),
                Value::String(s) if !s.is_empty() => s.clone(),
                _ => return Err(Reject::BadRequest("object key without an id".into())),
            };
            let ts = k.timestamp.as_deref().unwrap_or_default();
            if let Some(t) = parse_provider_time(ts) {
                latest = latest.max(Some(t));
            }
            let key = format!("{}|{id}|{ts}", hook.event_key);
            object_keys.extend(DedupKey::new(&key));
        }
        Ok(Verified::Delivery(Delivery {
            provider: ProviderName::Keap,
            dedup_key: DedupKey::of_bytes(req.body),
            object_keys,
            event_type: Some(hook.event_key),
            event_id: None,
            occurred_at: latest,
            headers: keep_headers(req.headers, &["content-type", "user-agent"]),
            body: req.body.clone(),
        }))
    }
}

/// A stored delivery as fetch hints: the object type and every id.
fn normalise(body: &[u8]) -> Result<Vec<DomainEvent>, NormaliseError> {
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

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key)?.as_str().and_then(parse_provider_time)
}

/// Whether a v1 contact lists `email` (any field, case-insensitive).
fn has_email(contact: &Value, email: &str) -> bool {
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
fn primary<'a>(v: &'a Value, list: &str, field: &str) -> Option<&'a Value> {
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

fn order_fields(v: &Value) -> Map<String, Value> {
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

fn tag_fields(v: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), text(v, "name").into());
    m.insert("description".into(), text(v, "description").into());
    let category = v
        .get("category")
        .and_then(|c| text(c, "name").or_else(|| c.as_str().map(str::to_owned)));
    m.insert("category".into(), category.into());
    m
}

fn subscription_fields(v: &Value) -> Map<String, Value> {
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
fn remote_object(object_type: &str, table: &'static str, v: &Value) -> Option<RemoteObject> {
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

/// The v1 request body for a `sync_contacts` row: the fields Keap lets a
/// client write (company and tags are Keap's: a company is a separate
/// object, tags are applied by their own endpoints).
fn contact_body(row: &Value) -> Value {
    let s = |k: &str| {
        row.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    let mut body = json!({
        "given_name": s("first_name"),
        "family_name": s("last_name"),
        "email_addresses": match s("email") {
            Some(e) => json!([{"email": e, "field": "EMAIL1"}]),
            None => json!([]),
        },
        "phone_numbers": match s("phone") {
            Some(p) => json!([{"number": p, "field": "PHONE1"}]),
            None => json!([]),
        },
    });
    if let Some(custom) = row.get("custom_fields").and_then(Value::as_object) {
        let list: Vec<Value> = custom
            .iter()
            .filter_map(|(id, content)| {
                Some(json!({"id": id.parse::<i64>().ok()?, "content": content}))
            })
            .collect();
        if !list.is_empty() {
            body["custom_fields"] = Value::Array(list);
        }
    }
    body
}

/// The part of a row's v1 body whose values differ from what Keap holds
/// (`remote`, as `sync_contacts` fields): phones compare in E.164, custom
/// fields by id (only the ones that differ are sent; Keap merges them).
fn changed_body(row: &Value, remote: &Map<String, Value>) -> Map<String, Value> {
    let full = contact_body(row);
    let null = Value::Null;
    let local_text = |k: &str| {
        row.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    let remote_text = |k: &str| remote.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut out = Map::new();
    for (field, key) in [
        ("first_name", "given_name"),
        ("last_name", "family_name"),
        ("email", "email_addresses"),
    ] {
        if local_text(field) != remote_text(field) {
            out.insert(key.into(), full.get(key).cloned().unwrap_or(Value::Null));
        }
    }
    let phone =
        |p: Option<String>| p.map(|p| E164Phone::parse(&p).map_or(p, |e| e.as_str().to_owned()));
    if phone(local_text("phone")) != phone(remote_text("phone")) {
        out.insert(
            "phone_numbers".into(),
            full.get("phone_numbers").cloned().unwrap_or(Value::Null),
        );
    }
    let remote_custom = remote.get("custom_fields").unwrap_or(&null);
    if let Some(list) = full.get("custom_fields").and_then(Value::as_array) {
        let differing: Vec<Value> = list
            .iter()
            .filter(|f| {
                let id = f.get("id").map(|i| i.to_string()).unwrap_or_default();
                remote_custom.get(&id) != f.get("content")
            })
            .cloned()
            .collect();
        if !differing.is_empty() {
            out.insert("custom_fields".into(), Value::Array(differing));
        }
    }
    out
}

/// Whether `after` (a contact as Keap answered a PATCH of `body`) differs
/// from `before` (the same contact as read just before) in anything the
/// PATCH did not write: a change someone else made in between.
fn changed_elsewhere(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    body: &Map<String, Value>,
) -> bool {
    let written = |field: &str| match field {
        "first_name" => body.contains_key("given_name"),
        "last_name" => body.contains_key("family_name"),
        "email" => body.contains_key("email_addresses"),
        "phone" => body.contains_key("phone_numbers"),
        _ => false,
    };
    let written_custom: Vec<String> = body
        .get("custom_fields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.get("id").map(|i| i.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let null = Value::Null;
    after.iter().any(|(k, v)| {
        let was = before.get(k).unwrap_or(&null);
        if k == "custom_fields" {
            let (Some(a), Some(b)) = (v.as_object(), was.as_object()) else {
                return v != was;
            };
            a.iter()
                .filter(|(id, _)| !written_custom.contains(id))
                .any(|(id, c)| b.get(id) != Some(c))
        } else {
            !written(k) && v != was
        }
    })
}

/// The v1 API (PROVIDERS.md §2.2–2.3): `X-Keap-API-Key`, paced under the
/// per-key limits, `Retry-After` honoured.
struct Api(JsonApi);

impl Api {
    /// Subscribes `url` to every event key syncbridge applies that this
    /// Keap account offers, and asks Keap to verify again any of those
    /// subscriptions that is not `Verified` (Keap makes a hook `Inactive`
    /// after four failed deliveries or a 410; PROVIDERS.md §2.6).
    async fn ensure_hooks(&self, url: &str) -> Result<String, PushError> {
        let offered = self
            .0
            .call(reqwest::Method::GET, "/hooks/event_keys", &[], None)
            .await?
            .unwrap_or(Value::Null);
        let offered: Vec<&str> = offered
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let hooks = self
            .0
            .call(reqwest::Method::GET, "/hooks", &[], None)
            .await?
            .unwrap_or(Value::Null);
        let hooks = hooks.as_array().cloned().unwrap_or_default();
        let (mut created, mut reverified, mut ok) = (0, 0, 0);
        for key in HOOK_EVENT_KEYS.iter().filter(|k| offered.contains(k)) {
            let ours = hooks.iter().find(|h| {
                h.get("eventKey").and_then(Value::as_str) == Some(key)
                    && h.get("hookUrl").and_then(Value::as_str) == Some(url)
            });
            match ours {
                None => {
                    self.0
                        .call(
                            reqwest::Method::POST,
                            "/hooks",
                            &[],
                            Some(&json!({"eventKey": key, "hookUrl": url})),
                        )
                        .await?;
                    created += 1;
                }
                Some(h) if h.get("status").and_then(Value::as_str) != Some("Verified") => {
                    let id = text(h, "key")
                        .ok_or_else(|| PushError::Transient("a Keap hook without a key".into()))?;
                    self.0
                        .call(
                            reqwest::Method::POST,
                            &format!("/hooks/{id}/verify"),
                            &[],
                            None,
                        )
                        .await?;
                    reverified += 1;
                }
                Some(_) => ok += 1,
            }
        }
        Ok(format!(
            "Keap hooks: {created} created, {reverified} asked to verify again, {ok} verified"
        ))
    }

    async fn fetch(&self, object_type: &str, id: &str) -> Result<Fetched, PushError> {
        let (table, path) = object_table(object_type).ok_or_else(|| {
            PushError::Permanent(format!("Keap object type {object_type} is not mirrored"))
        })?;
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(PushError::Permanent(format!("{id:?} is not a Keap id")));
        }
        let query: &[(&str, &str)] = if object_type == "contact" {
            &[("optional_properties", "custom_fields")]
        } else {
            &[]
        };
        let path = format!("{path}{id}");
        match self
            .0
            .call(reqwest::Method::GET, &path, query, None)
            .await?
        {
            None => Ok(Fetched::Gone { table }),
            Some(v) => remote_object(object_type, table, &v)
                .map(Fetched::Found)
                .ok_or_else(|| PushError::Transient(format!("GET {path} answered without an id"))),
        }
    }

    async fn push_contact(&self, change: &Change) -> Result<Pushed, PushError> {
        let mut pushed = Pushed::default();
        let gone = change
            .row
            .as_ref()
            .is_none_or(|r| !r.get("deleted_at").unwrap_or(&Value::Null).is_null());
        if gone {
            // Deleted locally (or soft-deleted): delete it in Keap too.
            let row = change.row.as_ref().or(change.deleted_row.as_ref());
            if let Some(id) = row.and_then(|r| text(r, "keap_id")) {
                self.0
                    .call(
                        reqwest::Method::DELETE,
                        &format!("/contacts/{id}"),
                        &[],
                        None,
                    )
                    .await?;
            }
            pushed.links.push(("primary", None));
            return Ok(pushed);
        }
        let row = change.row.as_ref().unwrap_or(&Value::Null);
        let mut target = text(row, "keap_id");
        let looked_up = target.is_none();
        if target.is_none() {
            if let Some(email) = row
                .get("email")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
            {
                let found = self
                    .0
                    .call(
                        reqwest::Method::GET,
                        "/contacts",
                        &[("email", email), ("limit", "1")],
                        None,
                    )
                    .await?;
                // Only a contact that has this e-mail is "the same" one:
                // an API or proxy that ignored the filter must never make
                // syncbridge overwrite somebody else.
                target = found
                    .as_ref()
                    .and_then(|v| v.get("contacts"))
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|c| has_email(c, email)))
                    .and_then(|c| text(c, "id"));
            }
        }
        let answer = match &target {
            Some(id) => {
                // Read before write: Keap has no conditional update, so a
                // newer remote state is detected here and handed back to be
                // reconciled under the rules instead of being overwritten.
                let path = format!("/contacts/{id}");
                let current = self
                    .0
                    .call(
                        reqwest::Method::GET,
                        &path,
                        &[("optional_properties", "custom_fields")],
                        None,
                    )
                    .await?
                    .ok_or_else(|| {
                        PushError::Permanent(format!(
                            "Keap contact {id} no longer exists (deleted in Keap)"
                        ))
                    })?;
                let obj = remote_object("contact", "sync_contacts", &current).ok_or_else(|| {
                    PushError::Transient("Keap answered a contact without an id".into())
                })?;
                if looked_up
                    || change
                        .remote_version
                        .is_none_or(|known| obj.version > known)
                {
                    return Err(PushError::RemoteChanged(Box::new(obj)));
                }
                // Only what differs from Keap's current state goes out, so
                // fields changed in Keap meanwhile are never overwritten.
                let body = changed_body(row, &obj.fields);
                if body.is_empty() {
                    current
                } else {
                    let answer = self
                        .0
                        .call(
                            reqwest::Method::PATCH,
                            &path,
                            &[],
                            Some(&Value::Object(body.clone())),
                        )
                        .await?
                        .ok_or_else(|| {
                            PushError::Permanent(format!(
                                "Keap contact {id} no longer exists (deleted in Keap)"
                            ))
                        })?;
                    // The answer is the whole contact: if a field this PATCH
                    // did not write differs from what the GET showed, someone
                    // changed it in between. That state must be applied
                    // under the rules, not recorded as already known (the
                    // next push would write the old value back over it).
                    let after =
                        remote_object("contact", "sync_contacts", &answer).ok_or_else(|| {
                            PushError::Transient("Keap answered a contact without an id".into())
                        })?;
                    if changed_elsewhere(&obj.fields, &after.fields, &body) {
                        return Err(PushError::RemoteChanged(Box::new(after)));
                    }
                    answer
                }
            }
            None => self
                .0
                .call(
                    reqwest::Method::POST,
                    "/contacts",
                    &[],
                    Some(&contact_body(row)),
                )
                .await?
                .ok_or_else(|| PushError::Permanent("POST /contacts answered 404".into()))?,
        };
        let obj = remote_object("contact", "sync_contacts", &answer)
            .ok_or_else(|| PushError::Transient("Keap answered a contact without an id".into()))?;
        pushed.links.push(("primary", Some(obj.remote_id.clone())));
        pushed
            .snapshots
            .push(("primary", Value::Object(obj.fields)));
        pushed.versions.push(("primary", obj.version));
        Ok(pushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTACT: &str = r#"{"id":1570,"given_name":"Dana","family_name":"Ortiz","middle_name":null,
        "email_addresses":[{"email":"dana@work.example","field":"EMAIL2"},{"email":"dana@ortiz.example","field":"EMAIL1"}],
        "phone_numbers":[{"number":"(415) 555-0142","extension":"","field":"PHONE1","type":"Mobile"}],
        "addresses":[],"company":{"id":7,"company_name":"Ortiz Realty"},"owner_id":null,"tag_ids":[204,101],
        "email_opted_in":false,"email_status":"NonMarketable","ScoreValue":null,
        "date_created":"2025-03-10T19:21:25.000+0000","last_updated":"2025-03-14T16:20:31.000+0000",
        "last_updated_utc_millis":1741969231000,"lead_source_id":null,
        "custom_fields":[{"id":182,"content":"qualified"}]}"#;

    #[test]
    fn contact_maps_to_sync_contacts_fields_and_keap_dates_parse() {
        let v: Value = serde_json::from_str(CONTACT).unwrap();
        let obj = remote_object("contact", "sync_contacts", &v).unwrap();
        assert_eq!(obj.remote_id, "1570");
        assert_eq!(obj.fields["email"], "dana@ortiz.example", "EMAIL1 wins");
        assert_eq!(obj.fields["phone"], "+14155550142");
        assert_eq!(obj.fields["company"], "Ortiz Realty");
        assert_eq!(obj.fields["tags"], json!([101, 204]));
        assert_eq!(obj.fields["custom_fields"], json!({"182": "qualified"}));
        assert_eq!(
            obj.version,
            parse_provider_time("2025-03-14T16:20:31Z").unwrap()
        );
    }

    #[test]
    fn a_contact_without_email_or_phone_reports_them_cleared() {
        let v = json!({"id": 9, "given_name": "X", "last_updated": "2025-03-14T16:20:31.000+0000"});
        let f = contact_fields(&v);
        assert_eq!(f["email"], Value::Null);
        assert_eq!(f["phone"], Value::Null);
        assert_eq!(f["tags"], json!([]));
    }

    #[test]
    fn push_body_is_the_v1_shape_and_skips_unknown_custom_field_ids() {
        let row = json!({"first_name": "Dana", "last_name": null, "email": "d@o.example",
                         "phone": "", "custom_fields": {"182": "x", "name": "y"}});
        let b = contact_body(&row);
        assert_eq!(b["given_name"], "Dana");
        assert_eq!(b["family_name"], Value::Null);
        assert_eq!(
            b["email_addresses"],
            json!([{"email": "d@o.example", "field": "EMAIL1"}])
        );
        assert_eq!(b["phone_numbers"], json!([]));
        assert_eq!(b["custom_fields"], json!([{"id": 182, "content": "x"}]));
    }

    #[test]
    fn a_patch_answer_shows_changes_made_by_someone_else_in_between() {
        let before = contact_fields(&json!({"id": 1, "given_name": "A", "family_name": "B",
            "custom_fields": [{"id": 1, "content": "x"}, {"id": 2, "content": "y"}]}));
        let body = changed_body(
            &json!({"first_name": "A2", "last_name": "B", "custom_fields": {"1": "x2"}}),
            &before,
        );
        assert!(body.contains_key("given_name") && !body.contains_key("family_name"));
        // Only what we wrote changed: ours.
        let ours = contact_fields(&json!({"id": 1, "given_name": "A2", "family_name": "B",
            "custom_fields": [{"id": 1, "content": "x2"}, {"id": 2, "content": "y"}]}));
        assert!(!changed_elsewhere(&before, &ours, &body));
        // The last name (or another custom field) changed too: someone else.
        let theirs = contact_fields(&json!({"id": 1, "given_name": "A2", "family_name": "C",
            "custom_fields": [{"id": 1, "content": "x2"}, {"id": 2, "content": "y"}]}));
        assert!(changed_elsewhere(&before, &theirs, &body));
        let theirs = contact_fields(&json!({"id": 1, "given_name": "A2", "family_name": "B",
            "custom_fields": [{"id": 1, "content": "x2"}, {"id": 2, "content": "z"}]}));
        assert!(changed_elsewhere(&before, &theirs, &body));
    }

    #[test]
    fn event_keys_name_the_object_to_fetch() {
        assert_eq!(hinted_type("contact.edit"), Some("contact"));
        assert_eq!(hinted_type("contact.delete"), Some("contact"));
        assert_eq!(hinted_type("contactGroup.applied"), Some("contact"));
        assert_eq!(hinted_type("contactGroup.add"), Some("tag"));
        assert_eq!(hinted_type("order.add"), Some("order"));
        assert_eq!(hinted_type("subscription.edit"), Some("subscription"));
        assert_eq!(hinted_type("invoice.payment.add"), None);
    }

    #[test]
    fn a_delivery_becomes_one_hint_with_each_id_once() {
        let body = br#"{"event_key":"contact.edit","object_type":"contact","object_keys":[
            {"id":1570,"timestamp":"2025-03-14T16:20:31.000Z"},{"id":"1574"},{"id":1570,"timestamp":"x"}]}"#;
        let evs = normalise(body).unwrap();
        assert_eq!(
            evs,
            vec![DomainEvent::FetchHint {
                object_type: "contact".into(),
                ids: vec!["1570".into(), "1574".into()]
            }]
        );
        let ignored =
            normalise(br#"{"event_key":"invoice.add","object_keys":[{"id":1}]}"#).unwrap();
        assert!(matches!(ignored[0], DomainEvent::Ignored(_)));
        assert!(normalise(b"[]").is_err());
    }
}
