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
use serde::Deserialize;
use serde_json::Value;

mod api;
pub mod config;
pub mod entities;
mod integrity;
mod wire;

use api::Api;
use wire::*;

use super::outbound::{JsonApi, Pacer, PushError};
use super::{
    header, keep_headers, Change, Delivery, FetchFuture, IntegrityCtx, IntegrityFuture,
    MaintainFuture, NormaliseError, Provider, PushFuture, Reject, StoredEvent, Verified,
    WebhookRequest,
};
use crate::config::{Config, Secret};
use crate::domain::{parse_provider_time, DedupKey, ProviderName};
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
        // Validated when the configuration was built (check_settings).
        let Ok(kc) = config::KeapConfig::from_settings(&c.settings) else {
            return Err(WEBHOOKS_DISABLED);
        };
        let api = kc.api_key.clone().map(|key| {
            Api(JsonApi::new(
                c.push_timeout,
                kc.api_url.trim_end_matches('/').to_owned(),
                "X-Keap-API-Key",
                key,
                Pacer::per_minute(kc.api_rate_per_min),
            ))
        });
        if kc.webhook_token.is_none() && api.is_none() {
            return Err(WEBHOOKS_DISABLED);
        }
        Ok(Keap {
            token: kc.webhook_token.clone(),
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

    fn writes_in_doubt(&self) -> bool {
        // A PATCH whose answer is lost (PushError::InDoubt).
        true
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

    fn integrity<'a>(&'a self, ctx: &'a IntegrityCtx<'a>) -> IntegrityFuture<'a> {
        Box::pin(async move {
            match &self.api {
                Some(api) => integrity::check(api, ctx).await,
                // Without the API there is nothing to count against.
                None => Ok(Vec::new()),
            }
        })
    }

    fn path_token(&self) -> Option<&Secret> {
        self.token.as_ref()
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

#[cfg(test)]
mod tests {
    use super::api::*;
    use super::*;
    use serde_json::json;

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
