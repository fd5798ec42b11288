//! Queries behind the admin API: sync status, re-queueing, full resync,
//! inbox inspection and replay.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::domain::ProviderName;

use super::{Client, DbError};

/// Counts and times for `GET /api/sync/status`.
pub async fn status(c: &Client) -> Result<Value, DbError> {
    let inbound = c
        .query(
            "SELECT provider, status, count(*), min(received_at) FILTER (WHERE status = 'pending'),
                    max(received_at), max(processed_at)
             FROM webhook_events GROUP BY provider, status ORDER BY provider, status",
            &[],
        )
        .await?;
    let mut inb = serde_json::Map::new();
    for r in &inbound {
        let provider: String = r.get(0);
        let status: String = r.get(1);
        let entry = inb.entry(provider).or_insert_with(
            || json!({"pending": 0, "processed": 0, "ignored": 0, "skipped_stale": 0, "failed": 0}),
        );
        entry[&status] = json!(r.get::<_, i64>(2));
        if let Some(oldest) = r.get::<_, Option<DateTime<Utc>>>(3) {
            entry["oldest_pending_age_s"] =
                json!((Utc::now() - oldest).num_milliseconds() as f64 / 1000.0);
        }
        let last_rx: Option<DateTime<Utc>> = r.get(4);
        let last_done: Option<DateTime<Utc>> = r.get(5);
        if last_rx
            > entry["last_received_at"]
                .as_str()
                .and_then(|s| s.parse().ok())
        {
            entry["last_received_at"] = json!(last_rx);
        }
        if last_done.is_some()
            && last_done
                > entry["last_applied_at"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
        {
            entry["last_applied_at"] = json!(last_done);
        }
    }

    let outbound = c
        .query(
            "SELECT provider, table_name, status, count(*),
                    min(created_at) FILTER (WHERE status = 'pending'),
                    max(processed_at) FILTER (WHERE status = 'done')
             FROM sync_outbox GROUP BY provider, table_name, status ORDER BY 1, 2, 3",
            &[],
        )
        .await?;
    let mut out = serde_json::Map::new();
    for r in &outbound {
        let provider: String = r.get(0);
        let table: String = r.get(1);
        let status: String = r.get(2);
        let p = out.entry(provider).or_insert_with(|| json!({}));
        let t = p.as_object_mut().map(|m| {
            m.entry(table)
                .or_insert_with(|| json!({"pending": 0, "done": 0, "failed": 0, "skipped": 0}))
        });
        let Some(t) = t else { continue };
        t[&status] = json!(r.get::<_, i64>(3));
        if let Some(oldest) = r.get::<_, Option<DateTime<Utc>>>(4) {
            t["oldest_pending_age_s"] =
                json!((Utc::now() - oldest).num_milliseconds() as f64 / 1000.0);
        }
        if let Some(last) = r.get::<_, Option<DateTime<Utc>>>(5) {
            t["last_pushed_at"] = json!(last);
        }
    }

    // Every synced table, by sync status (table names are the engine's
    // constants).
    let mut records = serde_json::Map::new();
    for entity in crate::providers::entities() {
        let sql = format!(
            "SELECT coalesce(sync_status, 'pending'), count(*), max(last_synced_at) FROM {} GROUP BY 1",
            entity.table
        );
        let rows = c.query(&sql, &[]).await?;
        let mut t = json!({"pending": 0, "synced": 0, "failed": 0, "skipped": 0, "conflict": 0});
        for r in &rows {
            let s: String = r.get(0);
            t[&s] = json!(r.get::<_, i64>(1));
            if let Some(at) = r.get::<_, Option<DateTime<Utc>>>(2) {
                if Some(at) > t["last_synced_at"].as_str().and_then(|s| s.parse().ok()) {
                    t["last_synced_at"] = json!(at);
                }
            }
        }
        records.insert(entity.table.to_owned(), t);
    }
    let conflicts = c
        .query_one(
            "SELECT count(*), min(detected_at) FROM sync_conflicts WHERE status = 'open'",
            &[],
        )
        .await?;
    let mut open = json!({"open": conflicts.get::<_, i64>(0)});
    if let Some(oldest) = conflicts.get::<_, Option<DateTime<Utc>>>(1) {
        open["oldest_open_age_s"] = json!((Utc::now() - oldest).num_milliseconds() as f64 / 1000.0);
    }
    let fetches = c
        .query(
            "SELECT provider, count(*), count(*) FILTER (WHERE attempts > 0), min(due_at)
             FROM sync_fetch_queue GROUP BY provider ORDER BY provider",
            &[],
        )
        .await?;
    let mut fetch = serde_json::Map::new();
    for r in &fetches {
        fetch.insert(
            r.get(0),
            json!({"queued": r.get::<_, i64>(1), "retrying": r.get::<_, i64>(2),
                   "next_due_at": r.get::<_, Option<DateTime<Utc>>>(3)}),
        );
    }
    let backlog: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM webhook_queue WHERE status = 'pending')
                  + (SELECT count(*) FROM sync_outbox WHERE status = 'pending')
                  + (SELECT count(*) FROM sync_fetch_queue)",
            &[],
        )
        .await?
        .get(0);
    Ok(json!({
        "inbound": inb,
        "outbound": out,
        "fetch": fetch,
        "records": records,
        "conflicts": open,
        "backlog": backlog,
    }))
}

/// What `POST /api/sync/retry` re-queues.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RetryFilter {
    pub provider: Option<ProviderName>,
    /// A table (`clients`) for outbound changes.
    pub entity: Option<String>,
    /// Local record ids (outbound).
    #[serde(default)]
    pub ids: Vec<Uuid>,
    /// Inbox event ids (inbound).
    #[serde(default)]
    pub event_ids: Vec<i64>,
    /// `inbound`, `outbound`, or both when absent.
    pub direction: Option<Direction>,
}

/// Which way a retry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Failed → pending; returns (outbound changes, inbound events) re-queued.
pub async fn retry(c: &mut Client, f: &RetryFilter) -> Result<(u64, u64), DbError> {
    let tx = c.transaction().await?;
    let both = f.direction.is_none();
    let provider = f.provider.map(ProviderName::as_str);
    let mut outbound = 0;
    let mut inbound = 0;
    if both || f.direction == Some(Direction::Outbound) {
        let rows = tx
            .query(
                "UPDATE sync_outbox SET status = 'pending', attempts = 0, error = NULL,
                        next_attempt_at = now(), processed_at = NULL
                 WHERE status = 'failed'
                   AND ($1::text IS NULL OR provider = $1)
                   AND ($2::text IS NULL OR table_name = $2)
                   AND (cardinality($3::uuid[]) = 0 OR record_id = ANY($3))
                 RETURNING table_name, record_id",
                &[&provider, &f.entity, &f.ids],
            )
            .await?;
        outbound = rows.len() as u64;
        tx.execute(
            "SELECT set_config('syncbridge.origin', 'syncbridge', true)",
            &[],
        )
        .await?;
        // Each synced table's records back to `pending`; the table name is
        // the engine's own constant, never the outbox's text.
        for entity in crate::providers::entities() {
            let ids: Vec<Uuid> = rows
                .iter()
                .filter(|r| r.get::<_, &str>(0) == entity.table)
                .map(|r| r.get(1))
                .collect();
            if ids.is_empty() {
                continue;
            }
            let sql = format!(
                "UPDATE {} SET sync_status = 'pending' WHERE id = ANY($1) AND sync_status = 'failed'",
                entity.table
            );
            tx.execute(&sql, &[&ids]).await?;
        }
    }
    if both || f.direction == Some(Direction::Inbound) {
        inbound = tx
            .execute(
                "UPDATE webhook_events SET status = 'pending', attempts = 0, error = NULL,
                        next_attempt_at = now(), processed_at = NULL
                 WHERE status = 'failed'
                   AND id IN (SELECT event_id FROM webhook_queue
                              WHERE status = 'failed' AND ($1::text IS NULL OR provider = $1)
                                AND (cardinality($2::bigint[]) = 0 OR event_id = ANY($2)))",
                &[&provider, &f.event_ids],
            )
            .await?;
    }
    tx.commit().await?;
    Ok((outbound, inbound))
}

/// Queues a push to `provider` of every record of `table` that was never
/// synced or changed since (`last_synced_at IS NULL OR updated_at >
/// last_synced_at`), unless one is pending already. Works on rows that
/// predate syncbridge, for every table the engine syncs and the provider's
/// capture subscribes to.
pub async fn full_resync(c: &Client, table: &str, provider: &str) -> Result<u64, DbError> {
    let entity = crate::providers::entity(table)
        .ok_or_else(|| DbError::NotSynced(format!("{table:?} is not a table syncbridge syncs")))?;
    let subscribed = c
        .query_opt(
            "SELECT 1 FROM syncbridge_capture WHERE table_name = $1 AND provider = $2",
            &[&entity.table, &provider],
        )
        .await?
        .is_some();
    if !subscribed {
        return Err(DbError::NotSynced(format!(
            "{table} is not captured for {provider}: nothing would push it"
        )));
    }
    // The table name is the engine's constant (whitelisted above).
    let sql = format!(
        "INSERT INTO sync_outbox (provider, table_name, record_id, operation, origin)
         SELECT $1, $2, t.id, 'SYNC', 'syncbridge'
         FROM {} t
         WHERE (t.last_synced_at IS NULL OR t.updated_at > t.last_synced_at)
           AND NOT EXISTS (SELECT 1 FROM sync_outbox o
                           WHERE o.provider = $1 AND o.table_name = $2
                             AND o.record_id = t.id AND o.status = 'pending')",
        entity.table
    );
    Ok(c.execute(&sql, &[&provider, &entity.table]).await?)
}

/// Inbox rows for `GET /api/sync/events`, newest first, without bodies.
pub async fn events(
    c: &Client,
    provider: Option<&str>,
    status: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Value>, DbError> {
    let rows = c
        .query(
            "SELECT jsonb_build_object('id', id, 'provider', provider, 'dedup_key', dedup_key,
                        'event_type', event_type, 'event_id', event_id, 'status', status,
                        'attempts', attempts, 'error', error, 'received_at', received_at,
                        'occurred_at', occurred_at, 'processed_at', processed_at,
                        'next_attempt_at', next_attempt_at)
             FROM webhook_events
             WHERE ($1::text IS NULL OR provider = $1) AND ($2::text IS NULL OR status = $2)
               AND ($3::bigint IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4",
            &[&provider, &status, &before_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One inbox row with its headers, body and the audit rows it caused.
pub async fn event(c: &Client, id: i64) -> Result<Option<Value>, DbError> {
    let Some(row) = c
        .query_opt(
            "SELECT jsonb_build_object('id', id, 'provider', provider, 'dedup_key', dedup_key,
                        'event_type', event_type, 'event_id', event_id, 'status', status,
                        'attempts', attempts, 'error', error, 'received_at', received_at,
                        'occurred_at', occurred_at, 'processed_at', processed_at,
                        'headers', headers),
                    body
             FROM webhook_events WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut v: Value = row.get(0);
    let body: Vec<u8> = row.get(1);
    match String::from_utf8(body) {
        Ok(s) => v["body"] = json!(s),
        Err(e) => {
            use base64::Engine;
            v["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(e.as_bytes()))
        }
    }
    let audit = c
        .query(
            "SELECT jsonb_build_object('entity_type', entity_type, 'entity_id', entity_id,
                        'operation', operation, 'decision', decision, 'changed_fields', changed_fields,
                        'old_data', old_data, 'new_data', new_data, 'created_at', created_at)
             FROM sync_audit_log WHERE event_id = $1 ORDER BY created_at",
            &[&id],
        )
        .await?;
    v["audit"] = Value::Array(audit.iter().map(|r| r.get(0)).collect());
    Ok(Some(v))
}

/// Sets an inbox event back to pending so the router applies it again
/// (idempotently: stale and duplicate effects are recognised as such).
pub async fn replay_event(c: &Client, id: i64) -> Result<bool, DbError> {
    Ok(c.execute(
        "UPDATE webhook_events SET status = 'pending', attempts = 0, error = NULL,
                    next_attempt_at = now(), processed_at = NULL
             WHERE id = $1",
        &[&id],
    )
    .await?
        == 1)
}

/// Outbox changes for `GET /api/sync/outbox` (the dashboard's failed
/// pushes), newest first, without their row images.
pub async fn outbox_changes(
    c: &Client,
    status: &str,
    provider: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Value>, DbError> {
    let rows = c
        .query(
            "SELECT jsonb_build_object('id', id, 'provider', provider, 'table_name', table_name,
                        'record_id', record_id, 'operation', operation,
                        'changed_columns', changed_columns, 'origin', origin, 'status', status,
                        'attempts', attempts, 'error', error, 'created_at', created_at,
                        'next_attempt_at', next_attempt_at, 'processed_at', processed_at)
             FROM sync_outbox
             WHERE status = $1 AND ($2::text IS NULL OR provider = $2)
               AND ($3::bigint IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4",
            &[&status, &provider, &before_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
