//! Pushing a client to OpenPhone's v1 contacts API: the primary contact
//! and one per alternate number, upserted by `externalId` (PATCH the
//! stored id; else look it up by external id; else POST).

use chrono::Utc;
use serde_json::Value;

use crate::domain::E164Phone;
use crate::events::RemoteContact;
use crate::providers::outbound::{JsonApi, PushError};
use crate::providers::{Change, Pushed};

/// The v1 contacts API (PROVIDERS.md §1.6): `Authorization: <key>` (no
/// `Bearer`), paced under the rate limit, `Retry-After` honoured.
pub(super) struct Api(pub(super) JsonApi);

impl Api {
    pub(super) async fn find(&self, external_id: &str) -> Result<Option<Value>, PushError> {
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
    pub(super) async fn upsert(
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
    pub(super) async fn delete(&self, id: &str) -> Result<(), PushError> {
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

pub(super) fn contact_id(v: &Value) -> Option<String> {
    v.get("data")?.get("id")?.as_str().map(str::to_owned)
}

/// The v1 create/update body for a client, or one of its alternates.
pub(super) fn contact_body(c: &RemoteContact, external_id: &str) -> Value {
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

pub(super) fn row_text(row: &Value, key: &str) -> Option<String> {
    row.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// A `clients` row as the contact (primary, or an alternate number).
pub(super) fn client_contact(row: &Value, phone_column: &str) -> RemoteContact {
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
pub(super) const CLIENT_SLOTS: [(&str, &str, &str, &str); 3] = [
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

pub(super) async fn push_client(api: &Api, change: &Change) -> Result<Pushed, PushError> {
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
