//! The router's apply of ResMan's deliveries: a polled prospect onto the
//! conversation it maps to (ResMan's status and lost reason as reported; the
//! main person's name, e-mail and phone onto the conversation's user under
//! the conflict rules of entity `user`, three-way against what was last
//! pushed or applied), and a relay's notification as a poll due now.
//!
//! Every polled prospect is kept in `resman_prospects` as ResMan reported
//! it, mapped or not: one no conversation maps to is recorded (it shows in
//! `lead_sync_mapping` as `from_resman`), never dropped.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use super::wire::Prospect;
use crate::apply::engine;
use crate::apply::Applied;
use crate::conflict::{self, Changed, Outcome, Side};
use crate::db::DbError;
use crate::domain::{E164Phone, ProviderName};
use crate::providers::ApplyCtx;

/// The user fields a prospect's main person carries.
const FIELDS: &[&str] = &["first_name", "last_name", "email", "phone"];

/// The cursor row of a property's polls.
pub fn cursor_name(property: uuid::Uuid) -> String {
    format!("resman.poll.{property}")
}

fn normalised(field: &str, v: Value) -> Value {
    match (field, v.as_str()) {
        ("phone", Some(p)) => E164Phone::parse(p)
            .map(|p| Value::String(p.as_str().to_owned()))
            .unwrap_or(v),
        ("email", Some(e)) => Value::String(e.trim().to_ascii_lowercase()),
        _ => v,
    }
}

fn fields_of(map: Option<&Map<String, Value>>, keys: &[(&str, &str)]) -> Map<String, Value> {
    keys.iter()
        .map(|(ours, theirs)| {
            let v = map
                .and_then(|m| m.get(*theirs))
                .cloned()
                .unwrap_or(Value::Null);
            ((*ours).to_owned(), normalised(ours, v))
        })
        .collect()
}

/// A statement prepared once per connection: the router applies a batch
/// of prospects with the same few statements.
async fn exec(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, DbError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, params).await?)
}

async fn query_opt(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>, DbError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&stmt, params).await?)
}

/// A relay's notification: the property it names is polled now.
pub async fn notification(
    ctx: &ApplyCtx<'_, '_>,
    body: &Value,
    wake: &Arc<Notify>,
) -> Result<Applied, DbError> {
    let Some(property) = body.get("propertyId").and_then(Value::as_str) else {
        return Ok(Applied::Ignored(
            "the notification names no propertyId".into(),
        ));
    };
    let local: Option<uuid::Uuid> = query_opt(
        ctx.tx,
        "SELECT property_id FROM resman_integration WHERE resman_property_id = $1",
        &[&property],
    )
    .await?
    .and_then(|r| r.get(0));
    let Some(local) = local else {
        return Ok(Applied::Ignored(format!(
            "no integration polls ResMan property {property}"
        )));
    };
    exec(
        ctx.tx,
        "INSERT INTO sync_cursors (name, position) VALUES ($1, '{\"due\": true}')
             ON CONFLICT (name) DO UPDATE
                 SET position = sync_cursors.position || '{\"due\": true}', updated_at = now()",
        &[&cursor_name(local)],
    )
    .await?;
    // This process's poller looks now (after the commit it sees the flag;
    // any other process's next round does too).
    wake.notify_one();
    Ok(Applied::Queued)
}

/// A polled prospect.
pub async fn prospect(ctx: &ApplyCtx<'_, '_>, value: &Value) -> Result<Applied, DbError> {
    let p: Prospect = match serde_json::from_value(value.clone()) {
        Ok(p) => p,
        Err(e) => return Ok(Applied::Ignored(format!("not a ResMan prospect: {e}"))),
    };
    let Some(modified) = p.modified_at() else {
        return Ok(Applied::Ignored(format!(
            "prospect {}: lastModified {:?} is not a time",
            p.prospect_id, p.last_modified
        )));
    };
    let tx = ctx.tx;
    let main = p
        .main_person()
        .map(|m| serde_json::to_value(m).unwrap_or(Value::Null));
    // The conversation the prospect maps to, locked (its link and row)
    // before anything is written.
    let link = query_opt(
        tx,
        "SELECT l.local_id, l.snapshot, l.remote_version, c.user_id, c.resman_status,
                c.resman_lost_reason, to_jsonb(u), c.updated_at
         FROM sync_links l
         JOIN conversation c ON c.id = l.local_id
         LEFT JOIN \"user\" u ON u.id = c.user_id
         WHERE l.provider = 'resman' AND l.entity_type = 'conversation'
           AND l.slot = 'primary' AND l.remote_id = $1
         FOR NO KEY UPDATE OF l, c",
        &[&p.prospect_id],
    )
    .await?;
    let conversation: Option<uuid::Uuid> = link.as_ref().map(|l| l.get(0));
    // The mirror, newest state wins, with the local property (the
    // integration's that polls ResMan's) and the conversation it maps to
    // (none: it shows in lead_sync_mapping as from_resman).
    let mirrored = query_opt(
        tx,
        "INSERT INTO resman_prospects (prospect_id, property_id, resman_property_id, status,
                                       lost_reason, main_person, data, last_modified,
                                       conversation_id)
         VALUES ($1, (SELECT property_id FROM resman_integration WHERE resman_property_id = $2),
                 $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (prospect_id) DO UPDATE SET
             property_id = EXCLUDED.property_id, resman_property_id = EXCLUDED.resman_property_id,
             status = EXCLUDED.status, lost_reason = EXCLUDED.lost_reason,
             main_person = EXCLUDED.main_person, data = EXCLUDED.data,
             last_modified = EXCLUDED.last_modified, conversation_id = EXCLUDED.conversation_id,
             updated_at = now()
         WHERE resman_prospects.last_modified IS NULL
            OR EXCLUDED.last_modified >= resman_prospects.last_modified
         RETURNING property_id",
        &[
            &p.prospect_id,
            &p.property_id,
            &p.status,
            &p.lost_reason,
            &main,
            value,
            &modified,
            &conversation,
        ],
    )
    .await?;
    let Some(mirrored) = mirrored else {
        return Ok(Applied::Stale(format!(
            "prospect {} at {modified} is older than the one applied",
            p.prospect_id
        )));
    };
    let property: Option<uuid::Uuid> = mirrored.get(0);
    let (Some(link), Some(conversation)) = (link, conversation) else {
        return Ok(Applied::Ignored(format!(
            "prospect {} maps to no conversation: recorded (lead_sync_mapping from_resman)",
            p.prospect_id
        )));
    };
    let snapshot: Option<Value> = link.get(1);
    let version: Option<DateTime<Utc>> = link.get(2);
    if version.is_some_and(|v| modified <= v) {
        return Ok(Applied::Stale(format!(
            "prospect {} at {modified} is not newer than the one applied",
            p.prospect_id
        )));
    }
    let user: Option<uuid::Uuid> = link.get(3);
    let old_status: Option<String> = link.get(4);
    let old_reason: Option<String> = link.get(5);
    let status_changed = old_status != p.status || old_reason != p.lost_reason;
    if status_changed {
        // ResMan's own fields: as it reports them.
        exec(
            tx,
            "UPDATE conversation SET resman_status = $2, resman_lost_reason = $3,
                 resman_last_sync_at = now()
             WHERE id = $1",
            &[&conversation, &p.status, &p.lost_reason],
        )
        .await?;
    }

    // The main person onto the user, under the rules.
    let mut detail = json!({
        "resman_lead_id": p.prospect_id, "property_id": property,
        "status": p.status, "lost_reason": p.lost_reason, "sync_type": "status_change",
    });
    let mut decision = if status_changed {
        "status_change"
    } else {
        "in_sync"
    };
    let mut changed: Vec<String> = Vec::new();
    if status_changed {
        changed.push("resman_status".into());
    }
    let mut applied = Applied::Updated(conversation);
    if let (Some(user), Some(person)) = (user, p.main_person()) {
        let user_row: Option<Value> = link.get(6);
        let local_updated: DateTime<Utc> = user_row
            .as_ref()
            .and_then(|u| u.get("updated_at"))
            .and_then(Value::as_str)
            .and_then(crate::domain::parse_provider_time)
            .unwrap_or_else(|| link.get(7));
        let local = fields_of(
            user_row.as_ref().and_then(Value::as_object),
            &[
                ("first_name", "first_name"),
                ("last_name", "last_name"),
                ("email", "email"),
                ("phone", "phone"),
            ],
        );
        let person = serde_json::to_value(person).unwrap_or(Value::Null);
        let remote = fields_of(
            person.as_object(),
            &[
                ("first_name", "firstName"),
                ("last_name", "lastName"),
                ("email", "email"),
                ("phone", "phone"),
            ],
        );
        let base: Option<Map<String, Value>> =
            snapshot.as_ref().and_then(Value::as_object).map(|s| {
                FIELDS
                    .iter()
                    .map(|f| {
                        (
                            (*f).to_owned(),
                            normalised(f, s.get(*f).cloned().unwrap_or(Value::Null)),
                        )
                    })
                    .collect()
            });
        let res = conflict::resolve(
            ctx.rules,
            "user",
            base.as_ref(),
            Side {
                fields: &local,
                changed_at: local_updated,
            },
            Side {
                fields: &remote,
                changed_at: modified,
            },
        );
        let both: Vec<String> = res
            .fields
            .iter()
            .filter(|(_, d)| d.changed == Changed::Both)
            .map(|(f, _)| f.clone())
            .collect();
        detail["fields"] = serde_json::to_value(&res.fields).unwrap_or(Value::Null);
        detail["local"] = Value::Object(local.clone());
        detail["remote"] = Value::Object(remote.clone());
        match res.outcome {
            Outcome::Manual => {
                exec(
                    tx,
                    "INSERT INTO sync_conflicts (entity_type, entity_id, keap_data, supabase_data,
                                                 conflict_fields, provider, remote_id, base_data,
                                                 remote_version, event_id)
                     VALUES ('user', $1, $2, $3, $4, 'resman', $5, $6, $7, $8)",
                    &[
                        &user,
                        &Value::Object(remote.clone()),
                        &Value::Object(local.clone()),
                        &res.manual,
                        &p.prospect_id,
                        &base.clone().map(Value::Object),
                        &modified,
                        &ctx.inbox_id,
                    ],
                )
                .await?;
                exec(
                    tx,
                    "UPDATE \"user\" SET resman_sync_status = 'conflict' WHERE id = $1",
                    &[&user],
                )
                .await?;
                decision = "manual";
                applied = Applied::Conflict(format!(
                    "{} changed on both sides: left for review",
                    res.manual.join(", ")
                ));
            }
            outcome => {
                if !res.to_local.is_empty() {
                    let values: Map<String, Value> = res
                        .to_local
                        .iter()
                        .filter_map(|f| Some((f.clone(), res.merged.get(f)?.clone())))
                        .collect();
                    exec(
                        tx,
                        "UPDATE \"user\" AS u SET
                             first_name = CASE WHEN $2::jsonb ? 'first_name' THEN $2->>'first_name' ELSE u.first_name END,
                             last_name = CASE WHEN $2::jsonb ? 'last_name' THEN $2->>'last_name' ELSE u.last_name END,
                             email = CASE WHEN $2::jsonb ? 'email' THEN $2->>'email' ELSE u.email END,
                             phone = CASE WHEN $2::jsonb ? 'phone' THEN $2->>'phone' ELSE u.phone END,
                             resman_last_sync_at = now()
                         WHERE u.id = $1",
                        &[&user, &Value::Object(values)],
                    )
                    .await?;
                    changed.extend(res.to_local.iter().cloned());
                }
                if !res.to_remote.is_empty() {
                    // The merged state goes back to ResMan.
                    exec(
                        tx,
                        "INSERT INTO sync_outbox (provider, table_name, record_id, operation, origin,
                                                  changed_columns)
                         VALUES ('resman', 'conversation', $1, 'SYNC', 'syncbridge', $2)",
                        &[&conversation, &res.to_remote],
                    )
                    .await?;
                }
                if let Outcome::Resolved(strategy) = outcome {
                    if !both.is_empty() {
                        // Decided by the rules: on record as an
                        // auto-resolved conflict.
                        exec(
                            tx,
                            "INSERT INTO sync_conflicts (entity_type, entity_id, keap_data, supabase_data,
                                                         conflict_fields, provider, remote_id, base_data,
                                                         remote_version, event_id, status,
                                                         resolution_strategy, resolution, resolved_data,
                                                         resolved_at)
                             VALUES ('user', $1, $2, $3, $4, 'resman', $5, $6, $7, $8, 'resolved',
                                     $9, $10, $11, now())",
                            &[
                                &user,
                                &Value::Object(remote.clone()),
                                &Value::Object(local.clone()),
                                &both,
                                &p.prospect_id,
                                &base.clone().map(Value::Object),
                                &modified,
                                &ctx.inbox_id,
                                &strategy.as_str(),
                                &if res.to_local.is_empty() { "local" } else if res.to_remote.is_empty() { "remote" } else { "merged" },
                                &Value::Object(res.merged.clone()),
                            ],
                        )
                        .await?;
                        detail["strategy"] = json!(strategy.as_str());
                    }
                }
                if outcome != Outcome::InSync && outcome != Outcome::NoRemoteChange {
                    decision = outcome.decision();
                }
                let mut snap = base.unwrap_or_default();
                for (k, v) in &res.merged {
                    snap.insert(k.clone(), v.clone());
                }
                for (k, v) in &remote {
                    snap.entry(k.clone()).or_insert_with(|| v.clone());
                }
                exec(
                    tx,
                    "UPDATE sync_links SET snapshot = $2, remote_version = $3, last_synced_at = now(),
                         updated_at = now()
                     WHERE provider = 'resman' AND entity_type = 'conversation' AND remote_id = $1",
                    &[&p.prospect_id, &Value::Object(snap), &modified],
                )
                .await?;
            }
        }
    } else {
        exec(
            tx,
            "UPDATE sync_links SET remote_version = $2, last_synced_at = now(), updated_at = now()
             WHERE provider = 'resman' AND entity_type = 'conversation' AND remote_id = $1",
            &[&p.prospect_id, &modified],
        )
        .await?;
    }
    engine::audit(
        tx,
        "conversation",
        conversation,
        "UPDATE",
        ProviderName::ResMan,
        Some(ctx.inbox_id),
        decision,
        &detail,
        &changed,
    )
    .await?;
    Ok(applied)
}

/// An operator's resolution of a ResMan conflict on a user's contact
/// fields: `remote` writes ResMan's version (as ResMan's own write: nothing
/// goes back); `local` keeps the user and pushes it to its leads; `merged`
/// writes the given values (captured, so pushed like any local change).
/// The conflict row is closed and the resolution audited.
pub async fn resolve(
    client: &mut deadpool_postgres::Client,
    id: uuid::Uuid,
    choice: engine::Choice,
    resolved_by: Option<uuid::Uuid>,
    notes: Option<&str>,
) -> Result<Value, engine::ResolveError> {
    use engine::{Choice, ResolveError};
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT entity_type, entity_id, keap_data, supabase_data, status, remote_id
             FROM sync_conflicts WHERE id = $1 AND provider = 'resman' FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(ResolveError::NotFound(id))?;
    let status: String = row.get(4);
    if status != "open" {
        return Err(ResolveError::NotOpen(id, status));
    }
    let table: String = row.get(0);
    if table != "user" {
        return Err(ResolveError::Invalid(format!(
            "a ResMan conflict on {table} is resolved by pushing its conversation again; only user conflicts take a choice"
        )));
    }
    let user: uuid::Uuid = row.get(1);
    let remote: Value = row.get(2);
    let local: Value = row.get(3);
    let restrict = |m: &Map<String, Value>| -> Map<String, Value> {
        m.iter()
            .filter(|(k, _)| FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (values, origin) = match &choice {
        Choice::Remote => (
            restrict(remote.as_object().unwrap_or(&Map::new())),
            "resman",
        ),
        Choice::Local => (Map::new(), "local"),
        Choice::Merged(m) => {
            let unknown: Vec<&str> = m
                .keys()
                .map(String::as_str)
                .filter(|k| !FIELDS.contains(k))
                .collect();
            if !unknown.is_empty() {
                return Err(ResolveError::Invalid(format!(
                    "a ResMan person has {}, not {}",
                    FIELDS.join(", "),
                    unknown.join(", ")
                )));
            }
            (m.clone(), "local")
        }
    };
    // ResMan's version is ResMan's own write (not captured for it); a
    // local or merged one is a local change (captured: pushed).
    tx.execute(
        "SELECT set_config('syncbridge.origin', $1, true)",
        &[&origin],
    )
    .await?;
    let after: Value = tx
        .query_opt(
            "UPDATE \"user\" AS u SET
                 first_name = CASE WHEN $2::jsonb ? 'first_name' THEN $2->>'first_name' ELSE u.first_name END,
                 last_name = CASE WHEN $2::jsonb ? 'last_name' THEN $2->>'last_name' ELSE u.last_name END,
                 email = CASE WHEN $2::jsonb ? 'email' THEN $2->>'email' ELSE u.email END,
                 phone = CASE WHEN $2::jsonb ? 'phone' THEN $2->>'phone' ELSE u.phone END,
                 resman_sync_status = CASE WHEN $3 AND u.resman_contact_id IS NOT NULL THEN 'synced'
                                           ELSE 'not_synced' END
             WHERE u.id = $1 RETURNING to_jsonb(u)",
            &[&user, &Value::Object(values.clone()), &matches!(choice, Choice::Remote)],
        )
        .await?
        .ok_or_else(|| ResolveError::Invalid(format!("user {user} no longer exists")))?
        .get(0);
    if matches!(choice, Choice::Local) {
        // Nothing changed here: queue the push of the user's leads.
        tx.execute(
            "INSERT INTO sync_outbox (provider, table_name, record_id, operation, origin)
             VALUES ('resman', 'user', $1, 'SYNC', 'syncbridge')",
            &[&user],
        )
        .await?;
    }
    let resolved = restrict(after.as_object().unwrap_or(&Map::new()));
    let conflict: Value = tx
        .query_one(
            "UPDATE sync_conflicts SET status = 'resolved', resolution = $2,
                    resolution_strategy = $3, resolved_at = now(), resolved_by = $4,
                    resolution_notes = $5, resolved_data = $6
             WHERE id = $1 RETURNING to_jsonb(sync_conflicts)",
            &[
                &id,
                &choice.name(),
                &choice.strategy().as_str(),
                &resolved_by,
                &notes,
                &Value::Object(resolved.clone()),
            ],
        )
        .await?
        .get(0);
    engine::audit(
        &tx,
        "user",
        user,
        "RESOLVE",
        ProviderName::ResMan,
        None,
        &format!("resolved_{}", choice.name()),
        &json!({"local": local, "remote": remote, "merged": resolved, "after": after,
                "conflict_id": id, "resolution": choice.name(), "resolved_by": resolved_by,
                "resman_lead_id": row.get::<_, Option<String>>(5)}),
        &values.keys().cloned().collect::<Vec<_>>(),
    )
    .await?;
    tx.commit().await?;
    Ok(conflict)
}
