//! The Keap v1 API: pushing `sync_contacts` (read before write, only the
//! differing fields PATCHed), fetching hinted objects, and keeping the
//! REST-hook subscriptions.

use serde_json::{json, Map, Value};

use super::wire::*;
use super::{object_table, HOOK_EVENT_KEYS};
use crate::domain::E164Phone;
use crate::providers::outbound::{JsonApi, PushError};
use crate::providers::{Change, Fetched, InDoubtWrite, Pushed, WriteWindow};

/// The v1 request body for a `sync_contacts` row: the fields Keap lets a
/// client write (company and tags are Keap's: a company is a separate
/// object, tags are applied by their own endpoints).
pub(super) fn contact_body(row: &Value) -> Value {
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
/// The `sync_contacts` columns a v1 contact body writes.
pub(super) fn written_columns(body: &Map<String, Value>) -> Vec<String> {
    [
        ("given_name", "first_name"),
        ("family_name", "last_name"),
        ("email_addresses", "email"),
        ("phone_numbers", "phone"),
        ("custom_fields", "custom_fields"),
    ]
    .iter()
    .filter(|(key, _)| body.contains_key(*key))
    .map(|(_, column)| (*column).to_owned())
    .collect()
}

pub(super) fn changed_body(row: &Value, remote: &Map<String, Value>) -> Map<String, Value> {
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
pub(super) fn changed_elsewhere(
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
pub(super) struct Api(pub(super) JsonApi);

impl Api {
    /// Subscribes `url` to every event key syncbridge applies that this
    /// Keap account offers, and asks Keap to verify again any of those
    /// subscriptions that is not `Verified` (Keap makes a hook `Inactive`
    /// after four failed deliveries or a 410; PROVIDERS.md §2.6).
    pub(super) async fn ensure_hooks(&self, url: &str) -> Result<String, PushError> {
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

    /// How many contacts Keap has (the `count` of a one-contact page).
    pub(super) async fn contact_count(&self) -> Result<u64, PushError> {
        self.0
            .call(reqwest::Method::GET, "/contacts", &[("limit", "1")], None)
            .await?
            .as_ref()
            .and_then(|v| v.get("count"))
            .and_then(Value::as_u64)
            .ok_or_else(|| PushError::Transient("GET /contacts answered without a count".into()))
    }

    pub(super) async fn fetch(&self, object_type: &str, id: &str) -> Result<Fetched, PushError> {
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

    pub(super) async fn push_contact(&self, change: &Change) -> Result<Pushed, PushError> {
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
                    return Err(PushError::RemoteChanged {
                        object: Box::new(obj),
                        wrote: None,
                    });
                }
                // Only what differs from Keap's current state goes out, so
                // fields changed in Keap meanwhile are never overwritten.
                let body = changed_body(row, &obj.fields);
                if body.is_empty() {
                    current
                } else {
                    let patched = self
                        .0
                        .call(
                            reqwest::Method::PATCH,
                            &path,
                            &[],
                            Some(&Value::Object(body.clone())),
                        )
                        .await;
                    let answer = match patched {
                        Ok(a) => a,
                        // The answer was lost (a timeout, a dropped
                        // connection): the PATCH may have been applied all
                        // the same, over whatever Keap got since the read.
                        // Read again: a write that landed is a write over
                        // the read, declared like any other (below); one
                        // that did not is retried.
                        Err(PushError::Transient(why)) => {
                            let again = self
                                .0
                                .call(
                                    reqwest::Method::GET,
                                    &path,
                                    &[("optional_properties", "custom_fields")],
                                    None,
                                )
                                .await
                                .ok()
                                .flatten();
                            let landed = again.as_ref().and_then(|a| {
                                let now = remote_object("contact", "sync_contacts", a)?;
                                let left = changed_body(row, &now.fields);
                                body.keys().all(|k| !left.contains_key(k)).then_some(())
                            });
                            match landed {
                                Some(()) => again,
                                // Not there, or not known: it may still
                                // land (late), over an edit made since the
                                // read. Recorded, so the attempt that finds
                                // it in place declares the window.
                                None => {
                                    let values = written_columns(&body)
                                        .into_iter()
                                        .map(|c| {
                                            let v = row.get(&c).cloned().unwrap_or(Value::Null);
                                            (c, v)
                                        })
                                        .collect();
                                    return Err(PushError::InDoubt {
                                        why,
                                        write: Box::new(InDoubtWrite {
                                            read_version: obj.version,
                                            values,
                                        }),
                                    });
                                }
                            }
                        }
                        Err(e) => return Err(e),
                    }
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
                    let window = WriteWindow {
                        read_version: obj.version,
                        written_version: after.version,
                        fields: written_columns(&body),
                        in_doubt: false,
                    };
                    if changed_elsewhere(&obj.fields, &after.fields, &body) {
                        // The write is in all the same, over whatever else
                        // changed since the read: its window is declared
                        // too, not only the other fields reconciled.
                        return Err(PushError::RemoteChanged {
                            object: Box::new(after),
                            wrote: Some(Box::new(window)),
                        });
                    }
                    pushed.write_window = Some(window);
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
