//! OpenPhone's webhook payloads (PROVIDERS.md §1.4, §1.7): the envelope
//! both generations share and `normalise`, which turns a stored delivery
//! into domain events (calls, messages, contact changes). The beta
//! `data.resource` is read like the legacy `data.object`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::{parse_provider_time, E164Phone};
use crate::events::{CallEvent, CallFacet, Direction, DomainEvent, MessageEvent, RemoteContact};
use crate::providers::NormaliseError;

/// The envelope both webhook generations share.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "createdAt")]
    created_at: Option<String>,
    #[serde(default)]
    data: Option<EnvelopeData>,
}

#[derive(Debug, Deserialize)]
pub(super) struct EnvelopeData {
    object: Option<Value>,
    resource: Option<Value>,
}

impl Envelope {
    fn object(&self) -> Option<&Value> {
        let d = self.data.as_ref()?;
        d.object.as_ref().or(d.resource.as_ref())
    }
}

pub(super) fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub(super) fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(parse_provider_time)
}

/// `to` is a string in webhooks and an array in the REST API.
pub(super) fn first_number(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Who a call or message is between, and which number is the client's.
pub(super) struct Parties {
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

pub(super) fn counterpart(
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

pub(super) fn clamp_i32(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(super) fn call_event(
    obj: &Value,
    facet: CallFacet,
    event_at: DateTime<Utc>,
) -> Option<CallEvent> {
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
pub(super) fn facet_event(
    obj: &Value,
    facet: CallFacet,
    event_at: DateTime<Utc>,
) -> Option<CallEvent> {
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
pub(super) fn contact(obj: &Value, event_at: DateTime<Utc>) -> Option<RemoteContact> {
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
