//! Outbox queries: which records have changes due, claiming one record's
//! pending changes (coalesced), and recording a push's result.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::Value;
use uuid::Uuid;

use super::DbError;
use crate::apply::engine;
use crate::domain::ProviderName;
use crate::providers::Pushed;

/// A record with pending changes for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRecord {
    pub table: String,
    pub record_id: Uuid,
}

/// Records with changes due for `provider`, oldest change first. The same
/// statement re-arms the outbox doorbell, so a change committed after it
/// either rings NOTIFY again or is among the records returned (or the next
/// drain's).
pub async fn due_records(
    client: &deadpool_postgres::Client,
    provider: ProviderName,
    limit: i64,
) -> Result<Vec<DueRecord>, DbError> {
    let stmt = client
        .prepare_cached(
            "WITH rearm AS (
                 UPDATE syncbridge_doorbell SET armed = true
                 WHERE channel = 'syncbridge_outbox' AND NOT armed)
             SELECT table_name, record_id FROM (
                 SELECT table_name, record_id, min(id) AS first
                 FROM sync_outbox
                 WHERE provider = $1 AND status = 'pending' AND next_attempt_at <= now()
                 GROUP BY table_name, record_id
             ) due ORDER BY first LIMIT $2",
        )
        .await?;
    let rows = client.query(&stmt, &[&provider.as_str(), &limit]).await?;
    Ok(rows
        .iter()
        .map(|r| DueRecord {
            table: r.get(0),
            record_id: r.get(1),
        })
        .collect())
}

/// One record's pending changes, locked by this transaction, and the
/// record's state that includes exactly them.
#[derive(Debug)]
pub struct ClaimedRecord {
    pub ids: Vec<i64>,
    /// The most attempts any of them has had.
    pub attempts: i32,
    /// The oldest change's time, for the change-to-push latency.
    pub first_change_at: DateTime<Utc>,
    /// The row as it was before a DELETE, when one is among them.
    pub deleted_row: Option<Value>,
    /// The record's current row as JSON, `None` once it is deleted.
    pub row: Option<Value>,
    /// The remote version last applied or pushed for the record's primary
    /// remote object, if it has one.
    pub remote_version: Option<DateTime<Utc>>,
    /// The record's size as JSON when it is over [`MAX_RECORD_BYTES`]:
    /// then neither `row` nor `deleted_row` was read.
    pub oversized: Option<i32>,
    /// The columns the claimed changes changed.
    pub changed: Vec<String>,
    /// Whether an insert is among them.
    pub created: bool,
}

/// A record is read for a push only up to this size as JSON.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Claims every pending change of one record for `provider` and reads the
/// record, or `None` if another dispatcher holds the record.
///
/// The claim and the read are one statement, so they see one snapshot:
/// every claimed change is in the state read, and a change committed a
/// moment later stays pending for the next push (rather than being pushed
/// now and again with its own row). A record-level advisory lock keeps two
/// dispatchers from pushing the same record at once. Changes still in
/// backoff are claimed too: the push carries their state. A record with an
/// open conflict for the provider is held: its changes wait (next attempt
/// `infinity`) until the conflict is resolved.
pub async fn claim_record(
    tx: &Transaction<'_>,
    provider: ProviderName,
    rec: &DueRecord,
) -> Result<Option<ClaimedRecord>, DbError> {
    let key = format!("{}:{}:{}", provider.as_str(), rec.table, rec.record_id);
    let locked: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 7))",
            &[&key],
        )
        .await?
        .get(0);
    if !locked {
        return Ok(None);
    }
    // The table name comes from the outbox (written by the capture trigger)
    // and is quoted as an identifier; a table no longer registered for
    // capture is refused (its record must not read as deleted).
    // A record larger than MAX_RECORD_BYTES as JSON is not read: its
    // size is, and the push fails with it (the dispatcher's memory is
    // bounded by its concurrency times this).
    let sql = format!(
        "WITH claimed AS (
             SELECT id, attempts, created_at, old_row, changed_columns, operation FROM sync_outbox
             WHERE provider = $1 AND table_name = $2 AND record_id = $3 AND status = 'pending'
             ORDER BY id
             FOR UPDATE SKIP LOCKED),
         record AS (SELECT to_jsonb(t) AS j FROM {} t WHERE t.id = $3),
         sized AS (
             SELECT octet_length(j::text) AS len, j FROM record
             UNION ALL
             SELECT octet_length(old_row::text), NULL FROM claimed WHERE old_row IS NOT NULL)
         SELECT array_agg(id ORDER BY id), max(attempts), min(created_at),
                CASE WHEN (SELECT max(len) FROM sized) <= $4::int THEN
                    (array_agg(old_row ORDER BY id DESC) FILTER (WHERE old_row IS NOT NULL))[1]
                END,
                (SELECT j FROM sized WHERE j IS NOT NULL AND len <= $4::int),
                EXISTS (SELECT 1 FROM syncbridge_capture WHERE table_name = $2),
                EXISTS (SELECT 1 FROM sync_conflicts
                        WHERE entity_type = $2 AND entity_id = $3 AND provider = $1
                          AND status = 'open'),
                (SELECT remote_version FROM sync_links
                 WHERE entity_type = $2 AND local_id = $3 AND provider = $1 AND slot = 'primary'),
                (SELECT max(len) FROM sized),
                (SELECT coalesce(array_agg(DISTINCT c ORDER BY c), '{{}}')
                 FROM claimed, unnest(claimed.changed_columns) AS c),
                bool_or(operation = 'INSERT')
         FROM claimed",
        postgres_protocol::escape::escape_identifier(&rec.table)
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &provider.as_str(),
                &rec.table,
                &rec.record_id,
                &(MAX_RECORD_BYTES as i32),
            ],
        )
        .await?;
    let ids: Option<Vec<i64>> = row.get(0);
    let Some(ids) = ids.filter(|ids| !ids.is_empty()) else {
        return Ok(None);
    };
    if !row.get::<_, bool>(5) {
        return Err(DbError::NotSynced(format!(
            "table {:?} has pending changes but is not registered for capture",
            rec.table
        )));
    }
    if row.get::<_, bool>(6) {
        // An open conflict holds the record's pushes to this provider until
        // it is resolved (resolving releases them).
        tx.execute(
            "UPDATE sync_outbox SET next_attempt_at = 'infinity' WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
        return Ok(None);
    }
    Ok(Some(ClaimedRecord {
        ids,
        attempts: row.get::<_, Option<i32>>(1).unwrap_or(0),
        first_change_at: row.get(2),
        deleted_row: row.get(3),
        row: row.get(4),
        remote_version: row.get(7),
        oversized: row
            .get::<_, Option<i32>>(8)
            .filter(|&n| n as usize > MAX_RECORD_BYTES),
        changed: row.get::<_, Option<Vec<String>>>(9).unwrap_or_default(),
        created: row.get::<_, Option<bool>>(10).unwrap_or(false),
    }))
}

/// Claims the pending changes of many records of one table for
/// `provider` and reads each record, in one statement (one snapshot, as
/// [`claim_record`] does for one): the records another dispatcher holds
/// (their advisory lock) or an open conflict holds are left out. For
/// providers that push many records per request.
pub async fn claim_records(
    tx: &Transaction<'_>,
    provider: ProviderName,
    table: &str,
    record_ids: &[Uuid],
) -> Result<Vec<(DueRecord, ClaimedRecord)>, DbError> {
    let captured = tx
        .query_opt(
            "SELECT 1 FROM syncbridge_capture WHERE table_name = $1 AND provider = $2",
            &[&table, &provider.as_str()],
        )
        .await?
        .is_some();
    if !captured {
        return Err(DbError::NotSynced(format!(
            "table {table:?} has pending changes but is not registered for capture"
        )));
    }
    // An open conflict holds a record's pushes until it is resolved, as in
    // claim_record.
    tx.execute(
        "UPDATE sync_outbox SET next_attempt_at = 'infinity'
         WHERE provider = $1 AND table_name = $2 AND status = 'pending'
           AND record_id IN (SELECT entity_id FROM sync_conflicts
                             WHERE entity_type = $2 AND provider = $1 AND status = 'open'
                               AND entity_id = ANY($3))",
        &[&provider.as_str(), &table, &record_ids],
    )
    .await?;
    // The table is registered for capture (checked above) and quoted as an
    // identifier. The advisory lock keys are claim_record's.
    let sql = format!(
        "WITH locked AS MATERIALIZED (
             SELECT r FROM unnest($3::uuid[]) AS r
             WHERE NOT EXISTS (SELECT 1 FROM sync_conflicts
                               WHERE entity_type = $2 AND entity_id = r AND provider = $1
                                 AND status = 'open')
               AND pg_try_advisory_xact_lock(hashtextextended($1 || ':' || $2 || ':' || r::text, 7))),
         claimed AS (
             SELECT o.id, o.record_id, o.attempts, o.created_at, o.old_row, o.changed_columns,
                    o.operation
             FROM sync_outbox o JOIN locked ON o.record_id = locked.r
             WHERE o.provider = $1 AND o.table_name = $2 AND o.status = 'pending'
             ORDER BY o.id
             FOR UPDATE OF o SKIP LOCKED),
         grouped AS (
             SELECT record_id, array_agg(id ORDER BY id) AS ids, max(attempts) AS attempts,
                    min(created_at) AS first_at,
                    (array_agg(old_row ORDER BY id DESC) FILTER (WHERE old_row IS NOT NULL))[1] AS old_row,
                    bool_or(operation = 'INSERT') AS created
             FROM claimed GROUP BY record_id)
         SELECT g.record_id, g.ids, g.attempts, g.first_at,
                CASE WHEN octet_length(g.old_row::text) <= $4::int THEN g.old_row END,
                CASE WHEN octet_length(r.j::text) <= $4::int THEN r.j END,
                greatest(octet_length(r.j::text), octet_length(g.old_row::text)),
                (SELECT coalesce(array_agg(DISTINCT c ORDER BY c), '{{}}')
                 FROM claimed k, unnest(k.changed_columns) AS c WHERE k.record_id = g.record_id),
                g.created
         FROM grouped g
         LEFT JOIN LATERAL (SELECT to_jsonb(t) AS j FROM {} t WHERE t.id = g.record_id) r ON true
         ORDER BY g.ids[1]",
        postgres_protocol::escape::escape_identifier(table)
    );
    let rows = tx
        .query(
            &sql,
            &[
                &provider.as_str(),
                &table,
                &record_ids,
                &(MAX_RECORD_BYTES as i32),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                DueRecord {
                    table: table.to_owned(),
                    record_id: row.get(0),
                },
                ClaimedRecord {
                    ids: row.get(1),
                    attempts: row.get::<_, Option<i32>>(2).unwrap_or(0),
                    first_change_at: row.get(3),
                    deleted_row: row.get(4),
                    row: row.get(5),
                    remote_version: None,
                    oversized: row
                        .get::<_, Option<i32>>(6)
                        .filter(|&n| n as usize > MAX_RECORD_BYTES),
                    changed: row.get::<_, Option<Vec<String>>>(7).unwrap_or_default(),
                    created: row.get::<_, Option<bool>>(8).unwrap_or(false),
                },
            )
        })
        .collect())
}

/// Closes pushed changes (`done`), with `syncbridge.origin` set to the
/// provider.
pub async fn close_pushed(
    tx: &Transaction<'_>,
    provider: ProviderName,
    ids: &[i64],
) -> Result<(), DbError> {
    tx.execute(
        "SELECT set_config('syncbridge.origin', $1, true)",
        &[&provider.as_str()],
    )
    .await?;
    tx.execute(
        "UPDATE sync_outbox SET status = 'done', processed_at = now(), error = NULL,
                attempts = attempts + 1
         WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    Ok(())
}

/// A push succeeded: close the changes, store the remote ids and the
/// snapshots, and mark the record synced — with `syncbridge.origin` set to
/// the provider, so this write is never captured as a change for it.
pub async fn record_success(
    tx: &Transaction<'_>,
    provider: ProviderName,
    rec: &DueRecord,
    claimed: &ClaimedRecord,
    pushed: &Pushed,
    record_exists: bool,
) -> Result<(), DbError> {
    close_pushed(tx, provider, &claimed.ids).await?;
    record_pushed_state(tx, provider, rec, pushed, record_exists).await
}

/// Audits a write that went over a state read just before it
/// (`pushed_over_read`): an edit made on the provider's side between the
/// two, to one of these fields, was overwritten unseen.
pub async fn declare_write_window(
    tx: &Transaction<'_>,
    provider: ProviderName,
    rec: &DueRecord,
    w: &crate::providers::WriteWindow,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO sync_audit_log (entity_type, entity_id, operation, changed_fields,
             sync_source, sync_destination, decision, detail)
         VALUES ($1, $2, 'PUSH', $3, 'local', $4, 'pushed_over_read', $5)",
        &[
            &rec.table,
            &rec.record_id,
            &w.fields,
            &provider.as_str(),
            &serde_json::json!({
                "read_version": w.read_version,
                "written_version": w.written_version,
                "fields": w.fields,
                "in_doubt": w.in_doubt,
            }),
        ],
    )
    .await?;
    Ok(())
}

/// Audits a write whose answer was lost and whose landing could not be
/// told (`push_in_doubt`, with the version it was made over and the values
/// it wrote), for [`in_doubt_landed`].
pub async fn record_in_doubt(
    tx: &Transaction<'_>,
    provider: ProviderName,
    rec: &DueRecord,
    w: &crate::providers::InDoubtWrite,
) -> Result<(), DbError> {
    let fields: Vec<&String> = w.values.keys().collect();
    tx.execute(
        "INSERT INTO sync_audit_log (entity_type, entity_id, operation, changed_fields,
             sync_source, sync_destination, decision, detail)
         VALUES ($1, $2, 'PUSH', $3, 'local', $4, 'push_in_doubt', $5)",
        &[
            &rec.table,
            &rec.record_id,
            &fields,
            &provider.as_str(),
            &serde_json::json!({"read_version": w.read_version, "values": w.values}),
        ],
    )
    .await?;
    Ok(())
}

/// The write window of the record's last in-doubt write (one recorded
/// after its last declared window), once a remote state newer than the
/// version it was made over is seen (`fields` at `version`): the write may
/// have landed over whatever changed in between.
pub async fn in_doubt_landed(
    tx: &Transaction<'_>,
    provider: ProviderName,
    rec: &DueRecord,
    fields: &serde_json::Map<String, Value>,
    version: DateTime<Utc>,
) -> Result<Option<crate::providers::WriteWindow>, DbError> {
    let row = tx
        .query_opt(
            "SELECT detail FROM sync_audit_log a
             WHERE a.entity_type = $1 AND a.entity_id = $2 AND a.sync_destination = $3
               AND a.decision = 'push_in_doubt'
               AND a.created_at > coalesce(
                   (SELECT max(w.created_at) FROM sync_audit_log w
                     WHERE w.entity_type = $1 AND w.entity_id = $2 AND w.sync_destination = $3
                       AND w.decision = 'pushed_over_read'), '-infinity')
             ORDER BY a.created_at DESC LIMIT 1",
            &[&rec.table, &rec.record_id, &provider.as_str()],
        )
        .await?;
    let Some(doubt) =
        row.and_then(|r| serde_json::from_value::<crate::providers::InDoubtWrite>(r.get(0)).ok())
    else {
        return Ok(None);
    };
    // Whether it landed cannot always be told: its values may have been
    // overwritten since, by later edits. A newer version after it is a
    // window it may have written over; declared, `in_doubt` unless every
    // value it wrote is there.
    let seen = doubt
        .values
        .iter()
        .all(|(k, v)| fields.get(k).is_some_and(|r| crate::conflict::same(r, v)));
    let newer = !doubt.values.is_empty() && version > doubt.read_version;
    Ok(newer.then(|| crate::providers::WriteWindow {
        read_version: doubt.read_version,
        written_version: version,
        fields: doubt.values.keys().cloned().collect(),
        in_doubt: !seen,
    }))
}

/// Whether a push's result writes anything past closing its changes
/// ([`record_pushed_state`]).
pub fn leaves_state(table: &str, pushed: &Pushed) -> bool {
    crate::providers::entity(table).is_some()
        || !pushed.links.is_empty()
        || pushed.write_window.is_some()
}

/// What a push left on the record's side, once its changes are closed:
/// its link columns and sync status, the write window's audit row, the
/// links and snapshots. Runs with `syncbridge.origin` set (by
/// [`close_pushed`]).
pub async fn record_pushed_state(
    tx: &Transaction<'_>,
    provider: ProviderName,
    rec: &DueRecord,
    pushed: &Pushed,
    record_exists: bool,
) -> Result<(), DbError> {
    // The record's row before its links: the engine locks rows in that
    // order too (a fetch or webhook applying to the same record), so the
    // two never wait on each other in a cycle.
    if let (true, Some(entity)) = (record_exists, crate::providers::entity(&rec.table)) {
        // The record's own link columns (its remote ids), synced now. The
        // columns come from the entity's constants, never from data.
        let columns: Vec<&str> = entity
            .link_columns
            .iter()
            .filter(|l| l.provider == provider)
            .map(|l| l.column)
            .collect();
        let mut ids = serde_json::Map::new();
        for l in entity
            .link_columns
            .iter()
            .filter(|l| l.provider == provider)
        {
            if let Some((_, id)) = pushed.links.iter().find(|(s, _)| *s == l.slot) {
                ids.insert(
                    l.column.to_owned(),
                    id.clone().map_or(Value::Null, Value::String),
                );
            }
        }
        let sets: String = columns
            .iter()
            .map(|c| format!("{c} = CASE WHEN $2::jsonb ? '{c}' THEN $2->>'{c}' ELSE {c} END, "))
            .collect();
        let sql = format!(
            "UPDATE {t} SET {sets}last_synced_at = now(), sync_status = 'synced', sync_error = NULL
             WHERE id = $1",
            t = entity.table
        );
        tx.execute(&sql, &[&rec.record_id, &Value::Object(ids)])
            .await?;
    }
    if let Some(w) = &pushed.write_window {
        declare_write_window(tx, provider, rec, w).await?;
    }
    for (slot, remote) in &pushed.links {
        match remote {
            Some(remote_id) => {
                let snapshot = pushed
                    .snapshots
                    .iter()
                    .find(|(s, _)| s == slot)
                    .map(|(_, v)| v.clone());
                let version = pushed
                    .versions
                    .iter()
                    .find(|(s, _)| s == slot)
                    .map(|(_, v)| *v);
                tx.execute(
                    "INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id,
                                             snapshot, remote_version, last_synced_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, now())
                     ON CONFLICT (entity_type, local_id, provider, slot) DO UPDATE SET
                         remote_id = EXCLUDED.remote_id, snapshot = EXCLUDED.snapshot,
                         remote_version = greatest(EXCLUDED.remote_version, sync_links.remote_version),
                         last_synced_at = now(), deleted_at = NULL, updated_at = now()",
                    &[
                        &rec.table,
                        &rec.record_id,
                        &provider.as_str(),
                        slot,
                        remote_id,
                        &snapshot,
                        &version,
                    ],
                )
                .await?;
            }
            None => {
                tx.execute(
                    "DELETE FROM sync_links
                     WHERE entity_type = $1 AND local_id = $2 AND provider = $3 AND slot = $4",
                    &[&rec.table, &rec.record_id, &provider.as_str(), slot],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// The provider does not take these changes (`PushError::Skipped`): they
/// are `skipped` with the reason, never retried.
pub async fn record_skipped(
    tx: &Transaction<'_>,
    provider: ProviderName,
    claimed: &ClaimedRecord,
    reason: &str,
) -> Result<(), DbError> {
    tx.execute(
        "SELECT set_config('syncbridge.origin', $1, true)",
        &[&provider.as_str()],
    )
    .await?;
    tx.execute(
        "UPDATE sync_outbox SET status = 'skipped', processed_at = now(), error = $2,
                attempts = attempts + 1
         WHERE id = ANY($1)",
        &[&claimed.ids, &reason],
    )
    .await?;
    Ok(())
}

/// A push failed: retry the changes at `retry_at`, or fail them for good
/// (`None`), and show the error on the record.
pub async fn record_failure(
    tx: &Transaction<'_>,
    provider: ProviderName,
    rec: &DueRecord,
    claimed: &ClaimedRecord,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<(), DbError> {
    tx.execute(
        "SELECT set_config('syncbridge.origin', $1, true)",
        &[&provider.as_str()],
    )
    .await?;
    tx.execute(
        "UPDATE sync_outbox SET attempts = attempts + 1, error = $2,
                status = CASE WHEN $3::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
                next_attempt_at = COALESCE($3, next_attempt_at),
                processed_at = CASE WHEN $3::timestamptz IS NULL THEN now() END
         WHERE id = ANY($1)",
        &[&claimed.ids, &error, &retry_at],
    )
    .await?;
    if let Some(entity) = crate::providers::entity(&rec.table) {
        let sql = format!(
            "UPDATE {} SET sync_error = $2,
                 sync_status = CASE WHEN $3 THEN 'failed' ELSE sync_status END
             WHERE id = $1",
            entity.table
        );
        tx.execute(&sql, &[&rec.record_id, &error, &retry_at.is_none()])
            .await?;
    }
    Ok(())
}

/// The provider refused to overwrite a newer remote state: apply it through
/// the conflict engine (with the provider as origin) and leave the claimed
/// changes pending, due now, for a push of what the rules decided.
pub async fn reconcile_before_push(
    tx: &Transaction<'_>,
    provider: ProviderName,
    rec: &DueRecord,
    claimed: &ClaimedRecord,
    obj: &crate::providers::RemoteObject,
) -> Result<(), DbError> {
    tx.execute(
        "SELECT set_config('syncbridge.origin', $1, true)",
        &[&provider.as_str()],
    )
    .await?;
    let entity = crate::providers::entity(obj.table)
        .ok_or_else(|| DbError::NotSynced(format!("{} is not a synced table", obj.table)))?;
    let rules = engine::load_rules(tx).await?;
    let remote = engine::RemoteRecord {
        provider,
        slot: "primary",
        remote_id: &obj.remote_id,
        fields: obj.fields.clone(),
        version: obj.version,
    };
    let applied = engine::apply_keyed(tx, &rules, entity, &remote, None).await?;
    tracing::info!(provider = %provider, table = %rec.table, record = %rec.record_id,
        ?applied, "remote changed before the push: reconciled first");
    tx.execute(
        "UPDATE sync_outbox SET next_attempt_at = now() WHERE id = ANY($1)
           AND next_attempt_at <> 'infinity'",
        &[&claimed.ids],
    )
    .await?;
    Ok(())
}
