//! Domain events: what a provider delivery means for the local database,
//! independent of any provider's wire format. Providers produce them in
//! `normalise`; the router applies them.

use chrono::{DateTime, Utc};
use serde::Serialize;

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
    /// Stored, understood as not ours to apply (e.g. an unknown type).
    Ignored(String),
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
    /// The synced fields only, in one comparable form: what a link's
    /// snapshot holds and what an echo is compared against.
    pub fn fields(&self) -> serde_json::Value {
        serde_json::json!({
            "first_name": self.first_name,
            "last_name": self.last_name,
            "company": self.company,
            "email": self.email,
            "phone": self.phone.as_ref().map(E164Phone::as_str),
        })
    }
}
