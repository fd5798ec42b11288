//! Inbox queries: the group-commit insert, the router's claim, and the
//! status updates that close an event.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};

use super::DbError;
use crate::domain::ProviderName;
use crate::providers::Delivery;

/// Inserts a batch of deliveries; for each, `Some(id)` if it is new or
/// `None` if an equal one was stored before (or earlier in this batch).
/// Runs inside the caller's transaction: nothing is visible, and nothing
/// may be acknowledged, until it commits. A batch with no object keys is
/// one statement, which may run on its own (its own transaction, durable
/// when it returns): see [`needs_transaction`].
pub async fn insert_batch(
    tx: &impl GenericClient,
    batch: &[&Delivery],
) -> Result<Vec<Option<i64>>, DbError> {
    const INSERT: &str = "
        INSERT INTO webhook_events
            (provider, dedup_key, event_type, event_id, headers, body, occurred_at)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                             $5::jsonb[], $6::bytea[], $7::timestamptz[])
        ON CONFLICT (provider, dedup_key) DO NOTHING
        RETURNING id, provider, dedup_key";

    let providers: Vec<&str> = batch.iter().map(|d| d.provider.as_str()).collect();
    let keys: Vec<&str> = batch.iter().map(|d| d.dedup_key.as_str()).collect();
    let types: Vec<Option<&str>> = batch.iter().map(|d| d.event_type.as_deref()).collect();
    let ids: Vec<Option<&str>> = batch.iter().map(|d| d.event_id.as_deref()).collect();
    let headers: Vec<serde_json::Value> = batch
        .iter()
        .map(|d| serde_json::Value::Object(d.headers.clone()))
        .collect();
    let bodies: Vec<&[u8]> = batch.iter().map(|d| d.body.as_ref()).collect();
    let times: Vec<Option<DateTime<Utc>>> = batch.iter().map(|d| d.occurred_at).collect();

    let stmt = tx.prepare_cached(INSERT).await?;
    let rows = tx
        .query(
            &stmt,
            &[&providers, &keys, &types, &ids, &headers, &bodies, &times],
        )
        .await?;

    let mut out = vec![None; batch.len()];
    for row in rows {
        let id: i64 = row.get(0);
        let provider: &str = row.get(1);
        let key: &str = row.get(2);
        // The first delivery in the batch with this key owns the row; any
        // later one in the same batch is its duplicate.
        if let Some(i) = batch
            .iter()
            .position(|d| d.provider.as_str() == provider && d.dedup_key.as_str() == key)
        {
            out[i] = Some(id);
        }
    }

    // Batched hints: a delivery none of whose object keys is new is a
    // duplicate, even when its bytes differ from the earlier one's.
    for (i, d) in batch.iter().enumerate() {
        let Some(id) = out[i] else { continue };
        if d.object_keys.is_empty() {
            continue;
        }
        let keys: Vec<&str> = d.object_keys.iter().map(|k| k.as_str()).collect();
        let new_keys = tx
            .query_one(
                "WITH ins AS (
                     INSERT INTO webhook_event_keys (provider, dedup_key, event_id)
                     SELECT $1, k, $2 FROM unnest($3::text[]) AS k
                     ON CONFLICT DO NOTHING
                     RETURNING 1)
                 SELECT count(*) FROM ins",
                &[&d.provider.as_str(), &id, &keys],
            )
            .await?
            .get::<_, i64>(0);
        if new_keys == 0 {
            tx.execute("DELETE FROM webhook_events WHERE id = $1", &[&id])
                .await?;
            out[i] = None;
        }
    }
    Ok(out)
}

/// Whether [`insert_batch`] of these deliveries runs more than one
/// statement (batched hints: their object keys are recorded after the
/// events), and so needs a transaction of its own.
pub fn needs_transaction(batch: &[&Delivery]) -> bool {
    batch.iter().any(|d| !d.object_keys.is_empty())
}

/// One claimed inbox row.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub provider: ProviderName,
    pub event_type: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub body: Vec<u8>,
}

/// Locks up to `limit` due, pending events of `provider`, oldest first
/// (found through `webhook_queue`, which triggers keep in step with the
/// events' status: closing an event then touches no index of its row),
/// skipping rows another router holds, and returns the longest prefix of
/// them whose bodies add up to at most `max_bytes` (always the first one,
/// however large): the router's memory is bounded by bytes, not only by
/// count. Rows locked past the budget are not returned; they stay pending
/// and are free again when the claiming transaction ends. The router sizes
/// `limit` from the bodies it saw last, so that few are.
pub async fn claim(
    tx: &Transaction<'_>,
    provider: ProviderName,
    limit: i64,
    max_bytes: i64,
) -> Result<Vec<Claimed>, DbError> {
    let stmt = tx
        .prepare_cached(
            "WITH locked AS (
                 SELECT e.id, q.next_attempt_at, octet_length(e.body) AS len
                 FROM webhook_queue q JOIN webhook_events e ON e.id = q.event_id
                 WHERE q.status = 'pending' AND q.provider = $1 AND q.next_attempt_at <= now()
                   AND e.status = 'pending'
                 ORDER BY q.next_attempt_at, q.event_id
                 LIMIT $2
                 FOR UPDATE OF e SKIP LOCKED),
             sized AS (
                 SELECT id, sum(len) OVER (ORDER BY next_attempt_at, id) - len AS before
                 FROM locked)
             SELECT e.id, e.event_type, e.occurred_at, e.attempts, e.body
             FROM sized s JOIN webhook_events e ON e.id = s.id
             WHERE s.before = 0 OR s.before + octet_length(e.body) <= $3
             ORDER BY s.before, e.id",
        )
        .await?;
    let rows = tx
        .query(&stmt, &[&provider.as_str(), &limit, &max_bytes])
        .await?;
    Ok(rows.iter().map(|r| claimed(r, provider)).collect())
}

/// A claimed row whose first columns are `id, event_type, occurred_at,
/// attempts, body`.
fn claimed(r: &tokio_postgres::Row, provider: ProviderName) -> Claimed {
    Claimed {
        id: r.get(0),
        provider,
        event_type: r.get(1),
        occurred_at: r.get(2),
        attempts: r.get(3),
        body: r.get(4),
    }
}

/// Locks `provider`'s events with these dedup keys, whatever their status,
/// and returns them with their keys: a pull applies what it has just stored,
/// and applies again a delivery stored before whose effect is gone (a call
/// ignored for an unknown agent, a deleted message). Waits for a router
/// holding one of them.
pub async fn claim_keys(
    tx: &Transaction<'_>,
    provider: ProviderName,
    keys: &[&str],
) -> Result<Vec<(String, Claimed)>, DbError> {
    let stmt = tx
        .prepare_cached(
            "SELECT id, event_type, occurred_at, attempts, body, dedup_key FROM webhook_events
             WHERE provider = $1 AND dedup_key = ANY($2)
             ORDER BY id FOR UPDATE",
        )
        .await?;
    let rows = tx.query(&stmt, &[&provider.as_str(), &keys]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(5), claimed(r, provider)))
        .collect())
}

/// Which of these dedup keys `provider`'s inbox rows hold already.
pub async fn existing_keys(
    db: &impl deadpool_postgres::GenericClient,
    provider: ProviderName,
    keys: &[&str],
) -> Result<std::collections::HashSet<String>, DbError> {
    let stmt = db
        .prepare_cached(
            "SELECT dedup_key FROM webhook_events WHERE provider = $1 AND dedup_key = ANY($2)",
        )
        .await?;
    let rows = db.query(&stmt, &[&provider.as_str(), &keys]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// How the router closed one event.
#[derive(Debug, Clone)]
pub enum Outcome {
    Processed,
    Ignored(String),
    SkippedStale(String),
    /// Failed this attempt: retried at `retry_at`, or `failed` for good
    /// when `retry_at` is `None`.
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

/// Writes the outcomes of a claimed batch in one statement.
pub async fn close(tx: &Transaction<'_>, outcomes: &[(i64, Outcome)]) -> Result<(), DbError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(outcomes.len());
    let mut retry: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(outcomes.len());
    for (id, o) in outcomes {
        ids.push(*id);
        let (status, error, at) = match o {
            Outcome::Processed => ("processed", None, None),
            Outcome::Ignored(why) => ("ignored", Some(why.as_str()), None),
            Outcome::SkippedStale(why) => ("skipped_stale", Some(why.as_str()), None),
            Outcome::Failed {
                error,
                retry_at: Some(at),
            } => ("pending", Some(error.as_str()), Some(*at)),
            Outcome::Failed {
                error,
                retry_at: None,
            } => ("failed", Some(error.as_str()), None),
        };
        statuses.push(status);
        errors.push(error);
        retry.push(at);
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE webhook_events e SET
                 status = u.status,
                 error = u.error,
                 attempts = e.attempts + 1,
                 next_attempt_at = COALESCE(u.retry_at, e.next_attempt_at),
                 processed_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[])
                  AS u(id, status, error, retry_at)
             WHERE e.id = u.id",
        )
        .await?;
    tx.execute(&stmt, &[&ids, &statuses, &errors, &retry])
        .await?;
    Ok(())
}
