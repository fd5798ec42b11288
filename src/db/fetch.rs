//! The fetch queue (`sync_fetch_queue`, migrations/0008): hints in,
//! debounced and leased claims out.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::DbError;
use crate::domain::ProviderName;

/// Records hints for `ids`: a new object is due one debounce window from
/// now; an object already queued only counts the hint (and moves its `seq`
/// on, so a fetch already in flight is followed by another).
pub async fn enqueue(
    c: &impl GenericClient,
    provider: ProviderName,
    object_type: &str,
    ids: &[String],
    debounce: std::time::Duration,
    event_id: i64,
) -> Result<u64, DbError> {
    let debounce_ms = i64::try_from(debounce.as_millis()).unwrap_or(i64::MAX);
    let stmt = c
        .prepare_cached(
            "INSERT INTO sync_fetch_queue AS q (provider, object_type, object_id, due_at, event_id)
             SELECT $1, $2, id, now() + make_interval(secs => $4::bigint / 1000.0), $5
             FROM unnest($3::text[]) AS id
             ON CONFLICT (provider, object_type, object_id) DO UPDATE SET
                 hints = q.hints + 1, seq = q.seq + 1, last_hint_at = now(),
                 event_id = EXCLUDED.event_id",
        )
        .await?;
    Ok(c.execute(
        &stmt,
        &[
            &provider.as_str(),
            &object_type,
            &ids,
            &debounce_ms,
            &event_id,
        ],
    )
    .await?)
}

/// A claimed queue row.
#[derive(Debug, Clone)]
pub struct Due {
    pub object_type: String,
    pub object_id: String,
    pub seq: i64,
    pub hints: i32,
    pub attempts: i32,
    pub event_id: Option<i64>,
}

/// Claims up to `limit` due objects for `lease`: another fetcher skips them
/// until the lease runs out (a crashed fetcher's claims come back).
pub async fn claim(
    c: &impl GenericClient,
    provider: ProviderName,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<Due>, DbError> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let stmt = c
        .prepare_cached(
            "UPDATE sync_fetch_queue q
             SET leased_until = now() + make_interval(secs => $3::bigint / 1000.0)
             FROM (SELECT provider, object_type, object_id FROM sync_fetch_queue
                   WHERE provider = $1 AND due_at <= now()
                     AND (leased_until IS NULL OR leased_until < now())
                   ORDER BY due_at
                   LIMIT $2
                   FOR UPDATE SKIP LOCKED) d
             WHERE q.provider = d.provider AND q.object_type = d.object_type
               AND q.object_id = d.object_id
             RETURNING q.object_type, q.object_id, q.seq, q.hints, q.attempts, q.event_id, q.due_at",
        )
        .await?;
    let mut rows = c
        .query(&stmt, &[&provider.as_str(), &limit, &lease_ms])
        .await?;
    rows.sort_by_key(|r| r.get::<_, DateTime<Utc>>(6));
    Ok(rows
        .iter()
        .map(|r| Due {
            object_type: r.get(0),
            object_id: r.get(1),
            seq: r.get(2),
            hints: r.get(3),
            attempts: r.get(4),
            event_id: r.get(5),
        })
        .collect())
}

/// The object was fetched and applied: its row goes, unless a hint came
/// in meanwhile (then it is fetched again after a debounce window).
pub async fn done(
    c: &impl GenericClient,
    provider: ProviderName,
    due: &Due,
    debounce: std::time::Duration,
) -> Result<(), DbError> {
    let debounce_ms = i64::try_from(debounce.as_millis()).unwrap_or(i64::MAX);
    let stmt = c
        .prepare_cached(
            "WITH gone AS (
                 DELETE FROM sync_fetch_queue
                 WHERE provider = $1 AND object_type = $2 AND object_id = $3 AND seq = $4
                 RETURNING 1)
             UPDATE sync_fetch_queue
             SET leased_until = NULL, attempts = 0, error = NULL, hints = 1,
                 due_at = now() + make_interval(secs => $5::bigint / 1000.0)
             WHERE provider = $1 AND object_type = $2 AND object_id = $3
               AND NOT EXISTS (SELECT 1 FROM gone)",
        )
        .await?;
    c.execute(
        &stmt,
        &[
            &provider.as_str(),
            &due.object_type,
            &due.object_id,
            &due.seq,
            &debounce_ms,
        ],
    )
    .await?;
    Ok(())
}

/// The fetch failed: try again at `retry_at`, counting the attempt unless
/// it was only rate limited.
pub async fn retry(
    c: &impl GenericClient,
    provider: ProviderName,
    due: &Due,
    retry_at: DateTime<Utc>,
    count_attempt: bool,
    error: &str,
) -> Result<(), DbError> {
    let stmt = c
        .prepare_cached(
            "UPDATE sync_fetch_queue
             SET leased_until = NULL, due_at = $4, error = $5,
                 attempts = attempts + CASE WHEN $6 THEN 1 ELSE 0 END
             WHERE provider = $1 AND object_type = $2 AND object_id = $3",
        )
        .await?;
    c.execute(
        &stmt,
        &[
            &provider.as_str(),
            &due.object_type,
            &due.object_id,
            &retry_at,
            &error,
            &count_attempt,
        ],
    )
    .await?;
    Ok(())
}

/// When the next queued object for `provider` is due, if any.
pub async fn next_due(
    c: &impl GenericClient,
    provider: ProviderName,
) -> Result<Option<DateTime<Utc>>, DbError> {
    let stmt = c
        .prepare_cached(
            "SELECT min(greatest(due_at, coalesce(leased_until, due_at)))
             FROM sync_fetch_queue WHERE provider = $1",
        )
        .await?;
    Ok(c.query_one(&stmt, &[&provider.as_str()]).await?.get(0))
}
