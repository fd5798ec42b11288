//! OpenPhone (Quo): legacy `openphone-signature` webhooks and the beta
//! Standard Webhooks ones on the same route, told apart by their headers;
//! `call.*` and `message.*` events become communications, `contact.*`
//! events become client changes. Payload shapes: PROVIDERS.md §1.4, §1.7;
//! the beta `data.resource` is read like the legacy `data.object`.

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::edge::AnyObject;
use super::outbound::{JsonApi, Pacer, PushError};
use super::signature::{self, HmacKey};
use super::{
    header, keep_headers, Change, Delivery, NormaliseError, Provider, PushFuture, Pushed, Reject,
    StoredEvent, Verified, WebhookRequest,
};
use crate::config::Config;
use crate::domain::{parse_provider_time, DedupKey, E164Phone, ProviderName};
use crate::events::{CallEvent, CallFacet, Direction, DomainEvent, MessageEvent, RemoteContact};

const LEGACY_HEADER: &str = "openphone-signature";
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    LEGACY_HEADER,
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-quo-api-version",
];

const WEBHOOKS_DISABLED: &str =
    "OpenPhone webhooks are disabled: set OPENPHONE_WEBHOOK_KEY (legacy) \
                                 or OPENPHONE_WEBHOOK_SECRET (beta)";
const PUSH_DISABLED: &str = "OpenPhone outbound sync is disabled: set OPENPHONE_API_KEY";

pub struct OpenPhone {
    legacy_key: Option<HmacKey>,
    standard_key: Option<HmacKey>,
    tolerance: Option<std::time::Duration>,
    api: Option<Api>,
}

impl OpenPhone {
    pub fn from_config(c: &Config) -> Result<OpenPhone, &'static str> {
        let api = c.openphone.api_key.clone().map(|key| {
            Api(JsonApi::new(
                c.push_timeout,
                c.openphone.api_url.clone(),
                "Authorization",
                key,
                Pacer::per_second(c.openphone.api_rate),
            ))
        });
        if c.openphone.webhook_key.is_none()
            && c.openphone.webhook_secret.is_none()
            && api.is_none()
        {
            return Err(WEBHOOKS_DISABLED);
        }
        Ok(OpenPhone {
            legacy_key: c.openphone.webhook_key.clone(),
            standard_key: c.openphone.webhook_secret.clone(),
            tolerance: c.signature_tolerance,
            api,
        })
    }

    /// Accepts a delivery when either scheme it carries verifies: a
    /// sender mid-migration may sign with both, and one bad or unconfigured
    /// scheme must not refuse a delivery the other authenticates. At most
    /// two schemes' worth of HMACs (see `signature`) before the answer.
    fn check_signature(&self, req: &WebhookRequest<'_>) -> Result<(), Reject> {
        let standard = req.headers.contains_key("webhook-signature");
        let legacy = req.headers.contains_key(LEGACY_HEADER);
        if !standard && !legacy {
            return Err(Reject::Unauthorized(
                "missing signature: expected openphone-signature or webhook-signature".into(),
            ));
        }
        let mut refused = Vec::new();
        if standard {
            match &self.standard_key {
                None => refused.push(
                    "Standard Webhooks signature received but OPENPHONE_WEBHOOK_SECRET is not set"
                        .to_owned(),
                ),
                Some(key) => match signature::verify_standard_headers(
                    key,
                    req.headers,
                    req.body,
                    req.now,
                    self.tolerance,
                ) {
                    Ok(()) => return Ok(()),
                    Err(e) => refused.push(e.to_string()),
                },
            }
        }
        if legacy {
            match &self.legacy_key {
                None => refused.push(
                    "openphone-signature received but OPENPHONE_WEBHOOK_KEY is not set".to_owned(),
                ),
                Some(key) => match signature::verify_openphone_headers(
                    key,
                    req.headers,
                    req.body,
                    req.now,
                    self.tolerance,
                ) {
                    Ok(()) => return Ok(()),
                    Err(e) => refused.push(e.to_string()),
                },
            }
        }
        Err(Reject::Unauthorized(refused.join("; ")))
    }
}

/// The envelope both webhook generations share.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "createdAt")]
    created_at: Option<String>,
    #[serde(default)]
    data: Option<EnvelopeData>,
}

#[derive(Debug, Deserialize)]
struct EnvelopeData {
    object: Option<Value>,
    resource: Option<Value>,
}

impl Envelope {
    fn object(&self) -> Option<&Value> {
        let d = self.data.as_ref()?;
        d.object.as_ref().or(d.resource.as_ref())
    }
}

/// Only what `verify` needs from the envelope: the data is checked to be
/// an object holding `object` (legacy) or `resource` (beta), not parsed.
#[derive(Debug, Deserialize)]
struct EnvelopeHead {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "createdAt")]
    created_at: Option<String>,
    data: Option<DataHead>,
}

#[derive(Debug, Deserialize)]
struct DataHead {
    object: Option<AnyObject>,
    resource: Option<AnyObject>,
}

impl Provider for OpenPhone {
    fn name(&self) -> ProviderName {
        ProviderName::OpenPhone
    }

    fn webhooks_disabled(&self) -> Option<&'static str> {
        (self.legacy_key.is_none() && self.standard_key.is_none()).then_some(WEBHOOKS_DISABLED)
    }

    fn pushes(&self) -> Result<&'static [&'static str], &'static str> {
        match self.api {
            Some(_) => Ok(&["clients"]),
            None => Err(PUSH_DISABLED),
        }
    }

    fn push<'a>(&'a self, change: &'a Change) -> PushFuture<'a> {
        Box::pin(async move {
            let api = self
                .api
                .as_ref()
                .ok_or(PushError::Disabled(PUSH_DISABLED))?;
            match change.table.as_str() {
                "clients" => push_client(api, change).await,
                other => Err(PushError::Permanent(format!(
                    "OpenPhone does not sync table {other}"
                ))),
            }
        })
    }

    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Reject> {
        self.check_signature(req)?;
        let env: EnvelopeHead = serde_json::from_slice(req.body)
            .map_err(|e| Reject::BadRequest(format!("body is not a JSON event envelope: {e}")))?;
        let id = env
            .id
            .as_deref()
            .ok_or_else(|| Reject::BadRequest("event envelope has no id".into()))?;
        let dedup_key = DedupKey::new(id)
            .ok_or_else(|| Reject::BadRequest("event envelope id is empty".into()))?;
        let kind = env
            .kind
            .clone()
            .ok_or_else(|| Reject::BadRequest("event envelope has no type".into()))?;
        let occurred_at = env
            .created_at
            .as_deref()
            .and_then(parse_provider_time)
            .ok_or_else(|| {
                Reject::BadRequest("event envelope has no createdAt timestamp (RFC 3339)".into())
            })?;
        if !env
            .data
            .as_ref()
            .is_some_and(|d| d.object.is_some() || d.resource.is_some())
        {
            return Err(Reject::BadRequest(
                "event envelope has no data.object (or data.resource) object".into(),
            ));
        }
        Ok(Verified::Delivery(Delivery {
            provider: ProviderName::OpenPhone,
            dedup_key,
            object_keys: Vec::new(),
            event_type: Some(kind),
            event_id: Some(id.to_owned()),
            occurred_at: Some(occurred_at),
            headers: keep_headers(req.headers, KEPT_HEADERS),
            body: req.body.clone(),
        }))
    }

    fn routes_events(&self) -> bool {
        true
    }

    fn normalise(&self, event: &StoredEvent<'_>) -> Result<Vec<DomainEvent>, NormaliseError> {
        normalise(event.body)
    }

    fn resign(&self, headers: &mut HeaderMap, body: &[u8], now: DateTime<Utc>) {
        if headers.contains_key("webhook-signature") {
            if let (Some(key), Some(id)) = (&self.standard_key, header(headers, "webhook-id")) {
                let id = id.to_owned();
                let ts = now.timestamp();
                let sig = signature::sign_standard(key, &id, ts, body);
                set(headers, "webhook-timestamp", &ts.to_string());
                set(headers, "webhook-signature", &sig);
            }
        } else if headers.contains_key(LEGACY_HEADER) {
            if let Some(key) = &self.legacy_key {
                let sig = signature::sign_openphone_legacy(key, now.timestamp_millis(), body);
                set(headers, LEGACY_HEADER, &sig);
            }
        }
    }
}

pub(crate) fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(parse_provider_time)
}

/// `to` is a string in webhooks and an array in the REST API.
fn first_number(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Who a call or message is between, and which number is the client's.
struct Parties {
    direction: Option<Direction>,
    from: Option<String>,
    to: Option<String>,
    counterpart: Option<E164Phone>,
}

impl Parties {
    fn of(obj: &Value) -> Parties {
        let direction = obj
            .get("direction")
            .and_then(Value::as_str)
            .and_then(Direction::parse);
        let from = text(obj, "from");
        let to = first_number(obj, "to");
        Parties {
            counterpart: counterpart(direction, &from, &to),
            direction,
            from,
            to,
        }
    }
}

fn counterpart(
    direction: Option<Direction>,
    from: &Option<String>,
    to: &Option<String>,
) -> Option<E164Phone> {
    let other = match direction {
        Some(Direction::Outgoing) => to,
        _ => from,
    };
    other.as_deref().and_then(E164Phone::parse)
}

/// A stored OpenPhone delivery → domain events. Pure: unit-tested on
/// the fixtures' bodies.
pub fn normalise(body: &[u8]) -> Result<Vec<DomainEvent>, NormaliseError> {
    let env: Envelope = serde_json::from_slice(body)?;
    let kind = env.kind.as_deref().unwrap_or_default();
    let event_at = env
        .created_at
        .as_deref()
        .and_then(parse_provider_time)
        .ok_or_else(|| NormaliseError::Invalid("event has no valid createdAt".into()))?;
    let Some(obj) = env.object() else {
        return Err(NormaliseError::Invalid("event has no data.object".into()));
    };
    let missing = |what: &str| NormaliseError::Invalid(format!("{kind} event without {what}"));

    let ev = match kind {
        "call.ringing"
        | "call.answered"
        | "call.completed"
        | "call.missed"
        | "call.forwarded"
        | "call.recording.completed" => {
            let facet = if kind == "call.recording.completed" {
                CallFacet::Recording
            } else {
                CallFacet::Lifecycle
            };
            DomainEvent::Call(call_event(obj, facet, event_at).ok_or_else(|| missing("a call id"))?)
        }
        "call.summary.completed" => {
            let summary = match obj.get("summary") {
                Some(Value::Array(lines)) => lines
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let mut call = facet_event(obj, CallFacet::Summary(summary), event_at)
                .ok_or_else(|| missing("callId"))?;
            call.status = None;
            DomainEvent::Call(call)
        }
        "call.transcript.completed" => {
            let dialogue = obj
                .get("dialogue")
                .cloned()
                .unwrap_or(Value::Array(Vec::new()));
            let mut call = facet_event(obj, CallFacet::Transcript(dialogue), event_at)
                .ok_or_else(|| missing("callId"))?;
            call.duration_seconds = obj.get("duration").and_then(Value::as_i64).map(clamp_i32);
            call.status = None;
            DomainEvent::Call(call)
        }
        "message.received"
        | "message.delivered"
        | "message.sent"
        | "message.failed"
        | "message.undelivered" => {
            let message_id = text(obj, "id").ok_or_else(|| missing("a message id"))?;
            let p = Parties::of(obj);
            DomainEvent::Message(MessageEvent {
                message_id,
                event_at,
                direction: p.direction,
                counterpart: p.counterpart,
                from: p.from,
                to: p.to,
                text: text(obj, "text").or_else(|| text(obj, "body")),
                status: text(obj, "status")
                    .or_else(|| kind.strip_prefix("message.").map(str::to_owned)),
                sent_at: time(obj, "createdAt"),
                conversation_id: text(obj, "conversationId"),
                phone_number_id: text(obj, "phoneNumberId"),
                user_id: text(obj, "userId"),
            })
        }
        "contact.updated" => DomainEvent::ContactUpserted(
            contact(obj, event_at).ok_or_else(|| missing("a contact id"))?,
        ),
        "contact.deleted" => DomainEvent::ContactDeleted {
            remote_id: text(obj, "id").ok_or_else(|| missing("a contact id"))?,
        },
        other => DomainEvent::Ignored(format!("event type {other:?} is not handled")),
    };
    Ok(vec![ev])
}

fn clamp_i32(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn call_event(obj: &Value, facet: CallFacet, event_at: DateTime<Utc>) -> Option<CallEvent> {
    let call_id = text(obj, "id").or_else(|| text(obj, "callId"))?;
    let p = Parties::of(obj);
    let media_url = obj
        .get("media")
        .and_then(Value::as_array)
        .and_then(|m| m.first())
        .and_then(|m| text(m, "url"));
    let media_duration = obj
        .get("media")
        .and_then(Value::as_array)
        .and_then(|m| m.first())
        .and_then(|m| m.get("duration"))
        .and_then(Value::as_i64);
    let voicemail = obj.get("voicemail").filter(|v| v.is_object());
    let started_at = time(obj, "createdAt");
    let completed_at = time(obj, "completedAt");
    let duration = obj
        .get("duration")
        .and_then(Value::as_i64)
        .or(media_duration)
        .or_else(|| match (time(obj, "answeredAt"), completed_at) {
            (Some(a), Some(c)) if c >= a => Some((c - a).num_seconds()),
            _ => None,
        })
        .map(clamp_i32);
    Some(CallEvent {
        call_id,
        facet,
        event_at,
        direction: p.direction,
        counterpart: p.counterpart,
        from: p.from,
        to: p.to,
        status: text(obj, "status"),
        started_at,
        answered_at: time(obj, "answeredAt"),
        completed_at,
        duration_seconds: duration,
        conversation_id: text(obj, "conversationId"),
        phone_number_id: text(obj, "phoneNumberId"),
        user_id: text(obj, "userId"),
        recording_url: media_url,
        voicemail_url: voicemail.and_then(|v| text(v, "url")),
    })
}

/// Summary and transcript objects name the call by `callId` and carry
/// nothing of its lifecycle.
fn facet_event(obj: &Value, facet: CallFacet, event_at: DateTime<Utc>) -> Option<CallEvent> {
    Some(CallEvent {
        call_id: text(obj, "callId").or_else(|| text(obj, "id"))?,
        facet,
        event_at,
        direction: None,
        from: None,
        to: None,
        counterpart: None,
        status: None,
        started_at: None,
        answered_at: None,
        completed_at: None,
        duration_seconds: None,
        conversation_id: None,
        phone_number_id: None,
        user_id: None,
        recording_url: None,
        voicemail_url: None,
    })
}

/// A v1 contact (`defaultFields`), or the flat beta shape.
fn contact(obj: &Value, event_at: DateTime<Utc>) -> Option<RemoteContact> {
    let remote_id = text(obj, "id")?;
    let fields = obj.get("defaultFields").unwrap_or(obj);
    let first_value = |list: &str| {
        fields
            .get(list)
            .and_then(Value::as_array)
            .and_then(|items| items.iter().find_map(|i| text(i, "value")))
    };
    Some(RemoteContact {
        remote_id,
        external_id: text(obj, "externalId"),
        version: time(obj, "updatedAt").unwrap_or(event_at),
        first_name: text(fields, "firstName"),
        last_name: text(fields, "lastName"),
        company: text(fields, "company"),
        email: first_value("emails"),
        phone: first_value("phoneNumbers")
            .as_deref()
            .and_then(E164Phone::parse),
    })
}

/// The v1 contacts API (PROVIDERS.md §1.6): `Authorization: <key>` (no
/// `Bearer`), paced under the rate limit, `Retry-After` honoured.
struct Api(JsonApi);

impl Api {
    async fn find(&self, external_id: &str) -> Result<Option<Value>, PushError> {
        let found = self
            .0
            .call(
                reqwest::Method::GET,
                "/v1/contacts",
                &[("externalIds", external_id), ("maxResults", "1")],
                None,
            )
            .await?;
        // Only a contact that carries the external id asked for is "the
        // same" contact: an API or proxy that ignored the filter must never
        // make syncbridge overwrite somebody else.
        Ok(found.and_then(|v| {
            v.get("data").and_then(Value::as_array).and_then(|a| {
                a.iter()
                    .find(|c| c.get("externalId").and_then(Value::as_str) == Some(external_id))
                    .cloned()
            })
        }))
    }

    /// Creates or updates the contact whose `externalId` is `external_id`:
    /// PATCH the stored id; else look it up by external id (so a create
    /// retried after a timeout finds the first one) and PATCH it; else POST.
    async fn upsert(
        &self,
        external_id: &str,
        stored: Option<&str>,
        body: &Value,
    ) -> Result<String, PushError> {
        let patch = |id: String| async move {
            let path = format!("/v1/contacts/{id}");
            self.0
                .call(reqwest::Method::PATCH, &path, &[], Some(body))
                .await
        };
        if let Some(id) = stored {
            if let Some(v) = patch(id.to_owned()).await? {
                return contact_id(&v)
                    .ok_or_else(|| PushError::Transient("PATCH answer has no contact id".into()));
            }
        }
        if let Some(existing) = self.find(external_id).await? {
            let id = existing
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| PushError::Transient("contact list entry has no id".into()))?
                .to_owned();
            if let Some(v) = patch(id).await? {
                return contact_id(&v)
                    .ok_or_else(|| PushError::Transient("PATCH answer has no contact id".into()));
            }
        }
        let created = self
            .0
            .call(reqwest::Method::POST, "/v1/contacts", &[], Some(body))
            .await?
            .ok_or_else(|| PushError::Permanent("POST /v1/contacts answered 404".into()))?;
        contact_id(&created)
            .ok_or_else(|| PushError::Transient("create answer has no contact id".into()))
    }

    /// Deletes a contact; one that is already gone counts as deleted.
    async fn delete(&self, id: &str) -> Result<(), PushError> {
        self.0
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/contacts/{id}"),
                &[],
                None,
            )
            .await
            .map(|_| ())
    }
}

fn contact_id(v: &Value) -> Option<String> {
    v.get("data")?.get("id")?.as_str().map(str::to_owned)
}

/// The v1 create/update body for a client, or one of its alternates.
fn contact_body(c: &RemoteContact, external_id: &str) -> Value {
    let mut fields = serde_json::Map::new();
    fields.insert("firstName".into(), c.first_name.clone().into());
    fields.insert("lastName".into(), c.last_name.clone().into());
    fields.insert("company".into(), c.company.clone().into());
    fields.insert(
        "emails".into(),
        match &c.email {
            Some(e) => serde_json::json!([{"name": "email", "value": e}]),
            None => serde_json::json!([]),
        },
    );
    fields.insert(
        "phoneNumbers".into(),
        match &c.phone {
            Some(p) => serde_json::json!([{"name": "phone", "value": p.as_str()}]),
            None => serde_json::json!([]),
        },
    );
    serde_json::json!({
        "defaultFields": fields,
        "externalId": external_id,
        "source": "syncbridge",
    })
}

fn row_text(row: &Value, key: &str) -> Option<String> {
    row.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// A `clients` row as the contact (primary, or an alternate number).
fn client_contact(row: &Value, phone_column: &str) -> RemoteContact {
    RemoteContact {
        remote_id: String::new(),
        external_id: None,
        version: Utc::now(),
        first_name: row_text(row, "first_name"),
        last_name: row_text(row, "last_name"),
        company: row_text(row, "company"),
        email: if phone_column == "phone" {
            row_text(row, "email")
        } else {
            None
        },
        phone: row_text(row, phone_column)
            .as_deref()
            .and_then(E164Phone::parse),
    }
}

/// The three contacts a client may have: slot, phone column, id column,
/// external-id suffix.
const CLIENT_SLOTS: [(&str, &str, &str, &str); 3] = [
    ("primary", "phone", "openphone_contact_id", ""),
    (
        "alt_1",
        "alt_phone_1",
        "openphone_alt_contact_1_id",
        ":alt1",
    ),
    (
        "alt_2",
        "alt_phone_2",
        "openphone_alt_contact_2_id",
        ":alt2",
    ),
];

async fn push_client(api: &Api, change: &Change) -> Result<Pushed, PushError> {
    let mut pushed = Pushed::default();
    let id = change.record_id.to_string();
    let Some(row) = &change.row else {
        // Deleted locally: delete every contact it had.
        let old = change.deleted_row.clone().unwrap_or(Value::Null);
        for (slot, _, id_column, _) in CLIENT_SLOTS {
            if let Some(remote) = row_text(&old, id_column) {
                api.delete(&remote).await?;
            }
            pushed.links.push((slot, None));
        }
        return Ok(pushed);
    };
    for (slot, phone_column, id_column, suffix) in CLIENT_SLOTS {
        let stored = row_text(row, id_column);
        let has_phone = row_text(row, phone_column).is_some();
        if slot != "primary" && !has_phone {
            // No alternate number (any more): its contact goes.
            if let Some(remote) = stored {
                api.delete(&remote).await?;
                pushed.links.push((slot, None));
            }
            continue;
        }
        let contact = client_contact(row, phone_column);
        let external_id = format!("{id}{suffix}");
        let remote = api
            .upsert(
                &external_id,
                stored.as_deref(),
                &contact_body(&contact, &external_id),
            )
            .await?;
        pushed.links.push((slot, Some(remote)));
        pushed
            .snapshots
            .push((slot, Value::Object(contact.local_fields(phone_column))));
    }
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_received_legacy() {
        let body = br#"{"id":"EV1","object":"event","apiVersion":"v4","createdAt":"2025-03-14T16:05:00.731Z","type":"message.received","data":{"object":{"object":"message","id":"AC9","direction":"incoming","from":"(415) 555-0142","to":"+14155550199","body":"Is the 2BR still available?","status":"received","createdAt":"2025-03-14T16:04:59.980Z"}}}"#;
        let evs = normalise(body).unwrap();
        let DomainEvent::Message(m) = &evs[0] else {
            panic!("{evs:?}")
        };
        assert_eq!(m.message_id, "AC9");
        assert_eq!(m.text.as_deref(), Some("Is the 2BR still available?"));
        assert_eq!(m.counterpart.as_ref().unwrap().as_str(), "+14155550142");
        assert_eq!(m.direction, Some(Direction::Incoming));
    }

    #[test]
    fn outgoing_links_to_recipient_and_beta_resource_reads_like_object() {
        let body = br#"{"id":"EV2","apiVersion":"2026-03-30","createdAt":"2025-03-14T16:30:05.000Z","type":"call.completed","data":{"resource":{"id":"AC2","direction":"outgoing","from":"+14155550199","to":["+12125550187"],"status":"completed","duration":95},"context":{},"links":{"quo":null}}}"#;
        let evs = normalise(body).unwrap();
        let DomainEvent::Call(c) = &evs[0] else {
            panic!("{evs:?}")
        };
        assert_eq!(c.counterpart.as_ref().unwrap().as_str(), "+12125550187");
        assert_eq!(c.duration_seconds, Some(95));
        assert_eq!(c.facet, CallFacet::Lifecycle);
    }

    #[test]
    fn summary_and_transcript_are_facets_of_the_call() {
        let body = br#"{"id":"EV3","createdAt":"2025-03-14T16:31:30.000Z","type":"call.summary.completed","data":{"object":{"object":"callSummary","callId":"AC2","summary":["a","b"],"nextSteps":[],"status":"completed"}}}"#;
        let DomainEvent::Call(c) = &normalise(body).unwrap()[0] else {
            panic!()
        };
        assert_eq!(c.call_id, "AC2");
        assert_eq!(c.facet, CallFacet::Summary("a\nb".into()));
    }

    #[test]
    fn unknown_types_are_ignored_and_broken_events_are_errors() {
        let body = br#"{"id":"EV4","createdAt":"2025-03-14T16:31:30.000Z","type":"call.menu.selected","data":{"object":{}}}"#;
        assert!(matches!(
            normalise(body).unwrap()[0],
            DomainEvent::Ignored(_)
        ));
        let body = br#"{"id":"EV5","createdAt":"2025-03-14T16:31:30.000Z","type":"message.received","data":{"object":{"text":"no id"}}}"#;
        assert!(normalise(body).is_err());
        assert!(normalise(b"not json").is_err());
    }

    #[test]
    fn contact_updated_maps_default_fields() {
        let body = br#"{"id":"EV6","createdAt":"2025-03-14T17:00:00.500Z","type":"contact.updated","data":{"object":{"object":"contact","id":"664d","externalId":null,"defaultFields":{"firstName":"Dana","lastName":"Ortiz-Reyes","company":"Ortiz Realty","emails":[{"id":"em1","name":"work","value":"dana@ortiz.example"}],"phoneNumbers":[{"id":"ph1","name":"mobile","value":"+14155550142"}]},"updatedAt":"2025-03-14T17:00:00.000Z"}}}"#;
        let DomainEvent::ContactUpserted(c) = &normalise(body).unwrap()[0] else {
            panic!()
        };
        assert_eq!(c.last_name.as_deref(), Some("Ortiz-Reyes"));
        assert_eq!(c.email.as_deref(), Some("dana@ortiz.example"));
        assert_eq!(c.phone.as_ref().unwrap().as_str(), "+14155550142");
        assert_eq!(
            c.version,
            parse_provider_time("2025-03-14T17:00:00.000Z").unwrap()
        );
    }
}
