//! Domain events: what a provider delivery means for the local database,
//! independent of any provider's wire format. Providers produce them in
//! `normalise`; the router applies them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::E164Phone;

/// What one stored delivery asks the router to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DomainEvent {
    Call(CallEvent),
    Message(MessageEvent),
    ContactUpserted(RemoteContact),
    ContactDeleted {
        remote_id: String,
    },
    /// A thin delivery naming objects to fetch from the provider's API
    /// (Keap's REST hooks).
    FetchHint {
        object_type: String,
        ids: Vec<String>,
    },
    /// An object of the provider's own (a pulled Teli call), applied by
    /// that provider's `apply_event` and by nothing generic.
    Record {
        kind: &'static str,
        value: Value,
    },
    /// Stored, understood as not ours to apply (e.g. an unknown type).
    Ignored(String),
}

impl DomainEvent {
    /// The event's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            DomainEvent::Call(_) => "call",
            DomainEvent::Message(_) => "message",
            DomainEvent::ContactUpserted(_) => "contact",
            DomainEvent::ContactDeleted { .. } => "contact deletion",
            DomainEvent::FetchHint { .. } => "fetch hint",
            DomainEvent::Record { kind, .. } => kind,
            DomainEvent::Ignored(_) => "ignored",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "incoming" | "inbound" => Some(Direction::Incoming),
            "outgoing" | "outbound" => Some(Direction::Outgoing),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }
}

/// Which part of a call an event reports. Lifecycle events carry the call's
/// state and are ordered by their timestamp; the others each fill their own
/// columns and never conflict with one another.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum CallFacet {
    Lifecycle,
    Recording,
    Summary(String),
    Transcript(serde_json::Value),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEvent {
    pub call_id: String,
    pub facet: CallFacet,
    /// The provider's time for this event: the order events are applied in.
    pub event_at: DateTime<Utc>,
    pub direction: Option<Direction>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The number on the other end from the workspace's, for linking.
    pub counterpart: Option<E164Phone>,
    pub status: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i32>,
    pub conversation_id: Option<String>,
    pub phone_number_id: Option<String>,
    pub user_id: Option<String>,
    pub recording_url: Option<String>,
    pub voicemail_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageEvent {
    pub message_id: String,
    pub event_at: DateTime<Utc>,
    pub direction: Option<Direction>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub counterpart: Option<E164Phone>,
    pub text: Option<String>,
    pub status: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub conversation_id: Option<String>,
    pub phone_number_id: Option<String>,
    pub user_id: Option<String>,
}

/// A contact as a provider holds it, mapped onto `clients` columns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteContact {
    pub remote_id: String,
    /// The provider's external id, which syncbridge sets to the local id.
    pub external_id: Option<String>,
    /// When the provider last changed it (or the event time).
    pub version: DateTime<Utc>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub email: Option<String>,
    pub phone: Option<E164Phone>,
}

impl RemoteContact {
    /// The fields this contact reports, in `clients` column form, for the
    /// contact slot whose phone lives in `phone_column` (`phone` for the
    /// primary contact, `alt_phone_1`/`alt_phone_2` for the alternates,
    /// which carry only their number). What a link's snapshot holds and
    /// what the conflict engine compares. An absent email or phone is not
    /// reported (a contact without one does not clear the client's).
    pub fn local_fields(&self, phone_column: &str) -> Map<String, Value> {
        let mut m = Map::new();
        if phone_column == "phone" {
            m.insert("first_name".into(), self.first_name.clone().into());
            m.insert("last_name".into(), self.last_name.clone().into());
            m.insert("company".into(), self.company.clone().into());
            if let Some(e) = &self.email {
                m.insert("email".into(), e.clone().into());
            }
        }
        if let Some(p) = &self.phone {
            m.insert(phone_column.to_owned(), p.as_str().into());
        }
        m
    }
}
