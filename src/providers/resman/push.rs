//! A conversation becomes a ResMan lead (SPEC §4.3): pushed with the legacy
//! `MITS/PostLeadManagement4_0` when its property's integration is active
//! and allows `to_resman`, and the conversation is a lead — qualified, a
//! tour booked, its status changed, or already mapped to a prospect. A user
//! whose name, e-mail or phone changes has the leads of its mapped
//! conversations updated.
//!
//! A conversation never makes a second prospect: a mapped one updates its
//! prospect (`Identification IDType="ProspectID"`); an unmapped one first
//! searches the property's prospects by e-mail, then phone, and updates the
//! one it finds — so a create retried after a timeout finds the first. A
//! prospect that already maps to another conversation of the same person is
//! a duplicate lead: not pushed, recorded as a conflict.

use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::api::{ResManApi, Search, Target};
use super::wire::{EventType, Lead};
use crate::providers::{Change, PushError, Pushed};

/// The reason a duplicate lead is skipped with (its bookkeeping records a
/// conflict).
pub const DUPLICATE: &str = "duplicate lead";

/// A property's integration, as the push reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Integration {
    pub property_id: Option<uuid::Uuid>,
    pub resman_property_id: String,
    #[serde(default)]
    pub api_credentials: Value,
    pub sync_enabled: bool,
    pub sync_direction: String,
    pub sync_status: String,
}

impl Integration {
    /// Why nothing is pushed for it, if nothing is.
    pub fn refuses_push(&self) -> Option<String> {
        if !self.sync_enabled {
            return Some("the property's ResMan integration is disabled".into());
        }
        if matches!(self.sync_status.as_str(), "paused" | "disconnected") {
            return Some(format!(
                "the property's ResMan integration is {}",
                self.sync_status
            ));
        }
        if self.sync_direction == "from_resman" {
            return Some("the property's ResMan integration only syncs from ResMan".into());
        }
        None
    }

    pub fn target(&self, default_account: Option<&str>) -> Result<Target, PushError> {
        let account = self
            .api_credentials
            .get("account_id")
            .and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_i64().map(|n| n.to_string())))
            .or_else(|| default_account.map(str::to_owned))
            .ok_or_else(|| {
                PushError::Permanent(
                    "no ResMan account: set api_credentials.account_id on the integration or RESMAN_ACCOUNT_ID"
                        .into(),
                )
            })?;
        Ok(Target {
            account_id: account,
            property_id: self.resman_property_id.clone(),
        })
    }
}

/// What a conversation's push reads beside its row.
#[derive(Debug, Default, Deserialize)]
pub struct ConversationContext {
    pub user: Option<Map<String, Value>>,
    pub integration: Option<Integration>,
    /// The prospect it maps to.
    pub lead_id: Option<String>,
    /// Prospects mapped to other conversations of the same person at the
    /// property.
    #[serde(default)]
    pub taken: Vec<String>,
}

/// One mapped conversation of a user, for a user's push.
#[derive(Debug, Deserialize)]
pub struct MappedConversation {
    pub conversation: Map<String, Value>,
    pub integration: Option<Integration>,
    pub lead_id: String,
}

fn text(row: &Map<String, Value>, key: &str) -> Option<String> {
    row.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn flag(row: &Map<String, Value>, key: &str) -> bool {
    row.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// The lead a conversation and its user make.
pub fn lead_of(
    conversation: &Map<String, Value>,
    user: Option<&Map<String, Value>>,
    prospect_id: Option<String>,
) -> Lead {
    let u = |k: &str| user.and_then(|u| text(u, k));
    let event = if flag(conversation, "is_book_tour") {
        EventType::Appointment
    } else {
        match text(conversation, "channel")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("call" | "phone" | "voice") => EventType::Call,
            Some("walk_in" | "walkin" | "walk-in") => EventType::WalkIn,
            _ => EventType::Email,
        }
    };
    Lead {
        prospect_id,
        first_name: u("first_name"),
        last_name: u("last_name"),
        email: u("email"),
        phone: u("phone"),
        event,
        event_date: conversation
            .get("updated_at")
            .and_then(Value::as_str)
            .and_then(crate::domain::parse_provider_time)
            .unwrap_or_else(Utc::now),
        comments: text(conversation, "ai_intent_summary"),
    }
}

/// The lead's fields as last pushed (the link's snapshot).
pub fn snapshot(lead: &Lead) -> Value {
    json!({
        "first_name": lead.first_name, "last_name": lead.last_name,
        "email": lead.email, "phone": lead.phone,
    })
}

/// Whether a conversation is a lead for ResMan yet.
fn is_lead(row: &Map<String, Value>, change: &Change, mapped: bool) -> bool {
    mapped
        || flag(row, "is_qualified")
        || flag(row, "is_book_tour")
        || (!change.created && change.changed.iter().any(|c| c == "status"))
}

pub async fn conversation(
    api: &ResManApi,
    default_account: Option<&str>,
    change: &Change,
) -> Result<Pushed, PushError> {
    let Some(Value::Object(row)) = &change.row else {
        return Err(PushError::Skipped(
            "the conversation was deleted; its ResMan prospect stays as it is".into(),
        ));
    };
    let ctx: ConversationContext = serde_json::from_value(change.context.clone())
        .map_err(|e| PushError::Permanent(format!("the push's context did not read: {e}")))?;
    let Some(integration) = &ctx.integration else {
        return Err(PushError::Skipped(
            "the conversation's property has no ResMan integration".into(),
        ));
    };
    if let Some(why) = integration.refuses_push() {
        return Err(PushError::Skipped(why));
    }
    if !is_lead(row, change, ctx.lead_id.is_some()) {
        return Err(PushError::Skipped(
            "not a lead yet: not qualified, no tour booked, no status change".into(),
        ));
    }
    let target = integration.target(default_account)?;
    let mut lead = lead_of(row, ctx.user.as_ref(), ctx.lead_id.clone());
    if lead.prospect_id.is_none() {
        // Never a second prospect: adopt the one a first attempt (or the
        // leasing office) made for this person.
        let mut searches = Vec::new();
        if let Some(e) = &lead.email {
            searches.push(Search {
                email: Some(e.clone()),
                ..Default::default()
            });
        }
        if let Some(p) = &lead.phone {
            searches.push(Search {
                phone: Some(p.clone()),
                ..Default::default()
            });
        }
        for s in searches {
            let found = api.search(&target, &s).await.map_err(|e| e.into_push())?;
            if let Some(taken) = found
                .iter()
                .filter_map(|p| p.prospect_id.as_ref())
                .find(|id| ctx.taken.contains(id))
            {
                return Err(PushError::Skipped(format!(
                    "{DUPLICATE}: prospect {taken} already maps to another conversation of this person"
                )));
            }
            if let Some(id) = found.into_iter().find_map(|p| p.prospect_id) {
                lead.prospect_id = Some(id);
                break;
            }
        }
    }
    let answer = api
        .post_lead(&target, &lead)
        .await
        .map_err(|e| e.into_push())?;
    let prospect = answer
        .prospects
        .first()
        .and_then(|p| p.prospect_id.clone())
        .or(lead.prospect_id.clone())
        .ok_or_else(|| {
            PushError::Transient("ResMan accepted the lead but named no ProspectID".into())
        })?;
    Ok(Pushed {
        links: vec![("primary", Some(prospect))],
        snapshots: vec![("primary", snapshot(&lead))],
        ..Default::default()
    })
}

pub async fn user(
    api: &ResManApi,
    default_account: Option<&str>,
    change: &Change,
) -> Result<Pushed, PushError> {
    let Some(Value::Object(row)) = &change.row else {
        return Err(PushError::Skipped(
            "the user was deleted; ResMan keeps its prospects".into(),
        ));
    };
    let mapped: Vec<MappedConversation> = serde_json::from_value(change.context.clone())
        .map_err(|e| PushError::Permanent(format!("the push's context did not read: {e}")))?;
    let mut person = None;
    let mut pushed = 0;
    for m in &mapped {
        let Some(integration) = &m.integration else {
            continue;
        };
        if integration.refuses_push().is_some() {
            continue;
        }
        let target = integration.target(default_account)?;
        let lead = lead_of(&m.conversation, Some(row), Some(m.lead_id.clone()));
        let answer = api
            .post_lead(&target, &lead)
            .await
            .map_err(|e| e.into_push())?;
        person = person.or(answer.prospects.first().and_then(|p| p.person_id.clone()));
        pushed += 1;
    }
    if pushed == 0 {
        return Err(PushError::Skipped(
            "no conversation of this user maps to a ResMan lead it may push".into(),
        ));
    }
    Ok(Pushed {
        links: person
            .map(|p| vec![("primary", Some(p))])
            .unwrap_or_default(),
        ..Default::default()
    })
}
