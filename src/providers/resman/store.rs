//! ResMan's reads and writes in Postgres: what a push needs beside the
//! record (its user, its property's integration, its mapping), and the
//! bookkeeping after it — the conversation's and user's `resman_*` status
//! columns as the seed describes, an audit row per push with its processing
//! time (the `lead_sync_log` view), the integration's health (consecutive
//! failures past the threshold → `error`, a success → `active`), and a
//! `duplicate_lead` conflict for a lead that would merge two conversations.

use std::time::Duration;

use deadpool_postgres::Transaction;
use serde_json::{json, Value};

use super::push::DUPLICATE;
use crate::db::DbError;
use crate::providers::{Change, PushOutcome};

/// The context of a push ([`super::push`]).
pub async fn push_context(tx: &Transaction<'_>, change: &Change) -> Result<Value, DbError> {
    let row = match change.table.as_str() {
        "conversation" => {
            tx.query_opt(
                "SELECT jsonb_build_object(
                     'user', (SELECT to_jsonb(u) FROM \"user\" u WHERE u.id = c.user_id),
                     'integration', (SELECT to_jsonb(i) FROM resman_integration i
                                     WHERE i.property_id = c.property_id),
                     'lead_id', (SELECT l.remote_id FROM sync_links l
                                 WHERE l.entity_type = 'conversation' AND l.local_id = c.id
                                   AND l.provider = 'resman' AND l.slot = 'primary'),
                     'taken', (SELECT coalesce(jsonb_agg(l.remote_id), '[]')
                               FROM sync_links l
                               JOIN conversation c2 ON c2.id = l.local_id
                               JOIN \"user\" u2 ON u2.id = c2.user_id
                               JOIN \"user\" u ON u.id = c.user_id
                               WHERE l.entity_type = 'conversation' AND l.provider = 'resman'
                                 AND c2.property_id = c.property_id AND c2.id <> c.id
                                 AND (lower(u2.email) = lower(u.email) OR u2.phone = u.phone)))
                 FROM conversation c WHERE c.id = $1",
                &[&change.record_id],
            )
            .await?
        }
        "user" => {
            tx.query_opt(
                "SELECT coalesce(jsonb_agg(jsonb_build_object(
                     'conversation', to_jsonb(c),
                     'integration', (SELECT to_jsonb(i) FROM resman_integration i
                                     WHERE i.property_id = c.property_id),
                     'lead_id', l.remote_id) ORDER BY c.created_at), '[]')
                 FROM conversation c
                 JOIN sync_links l ON l.entity_type = 'conversation' AND l.local_id = c.id
                                  AND l.provider = 'resman' AND l.slot = 'primary'
                 WHERE c.user_id = $1",
                &[&change.record_id],
            )
            .await?
        }
        _ => None,
    };
    Ok(row.map(|r| r.get(0)).unwrap_or(Value::Null))
}

/// The property a push was for (its integration's), if the context named
/// one.
fn property_of(change: &Change) -> Option<uuid::Uuid> {
    let integration = match change.table.as_str() {
        "conversation" => change.context.get("integration"),
        _ => change
            .context
            .as_array()
            .and_then(|a| a.first())
            .and_then(|m| m.get("integration")),
    }?;
    integration
        .get("property_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The bookkeeping of a push's end.
pub async fn after_push(
    tx: &Transaction<'_>,
    change: &Change,
    outcome: PushOutcome<'_>,
    took: Duration,
    error_threshold: i32,
) -> Result<(), DbError> {
    let ms = took.as_millis().min(i32::MAX as u128) as i32;
    let property = property_of(change);
    let sync_type = if change.context.get("lead_id").is_some_and(|v| !v.is_null()) {
        "update"
    } else if change.table == "user" {
        "enrichment"
    } else {
        "create"
    };
    match outcome {
        PushOutcome::Pushed(pushed) => {
            let remote = pushed
                .links
                .iter()
                .find_map(|(slot, id)| (*slot == "primary").then_some(id.clone()))
                .flatten();
            let snapshot = pushed
                .snapshots
                .iter()
                .find_map(|(slot, v)| (*slot == "primary").then_some(v.clone()));
            match change.table.as_str() {
                "conversation" => {
                    tx.execute(
                        "UPDATE conversation SET resman_lead_id = coalesce($2, resman_lead_id),
                             resman_sync_status = 'synced', resman_last_sync_at = now()
                         WHERE id = $1",
                        &[&change.record_id, &remote],
                    )
                    .await?;
                }
                _ => {
                    tx.execute(
                        "UPDATE \"user\" SET resman_contact_id = coalesce($2, resman_contact_id),
                             resman_sync_status = CASE WHEN coalesce($2, resman_contact_id) IS NULL
                                                       THEN resman_sync_status ELSE 'synced' END,
                             resman_last_sync_at = now()
                         WHERE id = $1",
                        &[&change.record_id, &remote],
                    )
                    .await?;
                }
            }
            audit(
                tx,
                change,
                None,
                snapshot,
                json!({
                    "resman_lead_id": remote, "processing_time_ms": ms, "sync_type": sync_type,
                    "property_id": property,
                }),
            )
            .await?;
            if let Some(p) = property {
                tx.execute(
                    "UPDATE resman_integration SET error_count = 0, last_error = NULL,
                         sync_status = CASE WHEN sync_status = 'error' THEN 'active' ELSE sync_status END,
                         last_sync_at = now(), last_successful_sync_at = now()
                     WHERE property_id = $1",
                    &[&p],
                )
                .await?;
            }
        }
        PushOutcome::Failed { error, last } => {
            if last && change.row.is_some() {
                let sql = match change.table.as_str() {
                    "conversation" => {
                        "UPDATE conversation SET resman_sync_status = 'failed' WHERE id = $1"
                    }
                    _ => "UPDATE \"user\" SET resman_sync_status = 'failed' WHERE id = $1",
                };
                tx.execute(sql, &[&change.record_id]).await?;
            }
            audit(
                tx,
                change,
                Some(error),
                None,
                json!({
                    "processing_time_ms": ms, "sync_type": sync_type, "property_id": property,
                    "final": last,
                }),
            )
            .await?;
            if let Some(p) = property {
                record_failure(tx, p, error, error_threshold).await?;
            }
        }
        PushOutcome::Skipped(reason) if reason.starts_with(DUPLICATE) => {
            // Recorded once while it stands: an open duplicate_lead conflict.
            tx.execute(
                "INSERT INTO sync_conflicts (entity_type, entity_id, keap_data, supabase_data,
                                             conflict_fields, provider, resolution_notes)
                 SELECT $1, $2, jsonb_build_object('duplicate_of', $3::text), coalesce($4, '{}'),
                        ARRAY['email'], 'resman', $3
                 WHERE NOT EXISTS (SELECT 1 FROM sync_conflicts
                                   WHERE entity_type = $1 AND entity_id = $2 AND provider = 'resman'
                                     AND status = 'open' AND keap_data ? 'duplicate_of')",
                &[&change.table, &change.record_id, &reason, &change.row],
            )
            .await?;
            tx.execute(
                "UPDATE conversation SET resman_sync_status = 'conflict' WHERE id = $1",
                &[&change.record_id],
            )
            .await?;
        }
        PushOutcome::Skipped(_) => {}
    }
    Ok(())
}

/// A failure of a property's integration: one more consecutive failure;
/// past the threshold, `error` (a paused or disconnected one stays so).
pub async fn record_failure(
    tx: &Transaction<'_>,
    property: uuid::Uuid,
    error: &str,
    threshold: i32,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE resman_integration SET error_count = error_count + 1, last_error = $2,
             last_sync_at = now(),
             sync_status = CASE WHEN error_count + 1 >= $3 AND sync_status = 'active' THEN 'error'
                                ELSE sync_status END
         WHERE property_id = $1",
        &[&property, &error, &threshold],
    )
    .await?;
    Ok(())
}

async fn audit(
    tx: &Transaction<'_>,
    change: &Change,
    error: Option<&str>,
    data: Option<Value>,
    detail: Value,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO sync_audit_log (entity_type, entity_id, operation, new_data, changed_fields,
                                     sync_source, sync_destination, decision, detail, error)
         VALUES ($1, $2, 'PUSH', $3, $4, 'local', 'resman', $5, $6, $7)",
        &[
            &change.table,
            &change.record_id,
            &data,
            &change.changed,
            &if error.is_some() { "failed" } else { "pushed" },
            &detail,
            &error,
        ],
    )
    .await?;
    Ok(())
}
