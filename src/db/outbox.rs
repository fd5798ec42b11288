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

/// Claims the pending changes of records of one table for `provider` and
/// reads each record, in one statement: the claim and the reads see one
/// snapshot, so every claimed change is in the state read, and a change
/// committed a moment later stays pending for the next push (rather than
/// being pushed now and again with its own row).
///
/// A record-level advisory lock keeps two dispatchers from pushing the same
/// record at once: a record another dispatcher holds is left out, as is
/// one with an open conflict for the provider, whose changes wait (next
/// attempt `infinity`) until the conflict is resolved (resolving releases
/// them). Changes still in backoff are claimed too: the push carries their
/// state. A record larger than [`MAX_RECORD_BYTES`] as JSON is not read:
/// its size is, and its push fails with it (the dispatcher's memory is
/// bounded by its group size times this).
pub async fn claim_records(
    tx: &Transaction<'_>,
    provider: ProviderName,
    table: &str,
    record_ids: &[Uuid],
) -> Result<Vec<(DueRecord, ClaimedRecord)>, DbError> {
    // The table name comes from the outbox (written by the capture
    // trigger) and is quoted as an identifier; a table no longer
    // registered for capture is refused (its record must not read as
    // deleted). The conflict hold is a data-modifying CTE: it runs to
    // completion whether or not the query reads it, on rows `locked`
    // leaves out. Both reach the outbox from the records (a parameterised
    // probe of the pending index per record, whatever the statistics say
    // of the queue: a queue filled in one burst, not yet analysed, had the
    // planner scan all of it once per group).
    let sql = format!(
        "WITH held AS (
             UPDATE sync_outbox SET next_attempt_at = 'infinity'
             WHERE id IN (
                 SELECT o.id FROM sync_conflicts c, LATERAL (
                     SELECT o.id FROM sync_outbox o
                     WHERE o.provider = $1 AND o.table_name = $2 AND o.record_id = c.entity_id
                       AND o.status = 'pending') o
                 WHERE c.entity_type = $2 AND c.provider = $1 AND c.status = 'open'
                   AND c.entity_id = ANY($3))
             RETURNING 1),
         locked AS MATERIALIZED (
             SELECT r FROM unnest($3::uuid[]) AS r
             WHERE NOT EXISTS (SELECT 1 FROM sync_conflicts
                               WHERE entity_type = $2 AND entity_id = r AND provider = $1
                                 AND status = 'open')
               AND pg_try_advisory_xact_lock(hashtextextended($1 || ':' || $2 || ':' || r::text, 7))),
         claimed AS (
             SELECT o.* FROM locked, LATERAL (
                 SELECT o.id, o.record_id, o.attempts, o.created_at, o.old_row,
                        o.changed_columns, o.operation
                 FROM sync_outbox o
                 WHERE o.provider = $1 AND o.table_name = $2 AND o.record_id = locked.r
                   AND o.status = 'pending'
                 FOR UPDATE SKIP LOCKED) o),
         grouped AS (
             SELECT record_id, array_agg(id ORDER BY id) AS ids, max(attempts) AS attempts,
                    min(created_at) AS first_at,
                    (array_agg(old_row ORDER BY id DESC) FILTER (WHERE old_row IS NOT NULL))[1] AS old_row,
                    bool_or(operation = 'INSERT') AS created
             FROM claimed GROUP BY record_id),
         cols AS (
             SELECT k.record_id, array_agg(DISTINCT c ORDER BY c) AS cols
             FROM claimed k, unnest(k.changed_columns) AS c GROUP BY k.record_id)
         SELECT g.record_id, g.ids, g.attempts, g.first_at,
                CASE WHEN octet_length(g.old_row::text) <= $4::int THEN g.old_row END,
                CASE WHEN r.len <= $4::int THEN r.j END,
                greatest(r.len, octet_length(g.old_row::text)),
                coalesce(cols.cols, '{{}}'),
                g.created,
                (SELECT l.remote_version FROM sync_links l
                 WHERE l.entity_type = $2 AND l.local_id = g.record_id AND l.provider = $1
                   AND l.slot = 'primary'),
                EXISTS (SELECT 1 FROM syncbridge_capture WHERE table_name = $2 AND provider = $1)
         FROM grouped g
         LEFT JOIN cols ON cols.record_id = g.record_id
         LEFT JOIN LATERAL (
             SELECT j, octet_length(j::text) AS len
             FROM (SELECT to_jsonb(t) AS j FROM {} t WHERE t.id = g.record_id) x) r ON true
         ORDER BY g.ids[1]",
        postgres_protocol::escape::escape_identifier(table)
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &provider.as_str(),
                &table,
                &record_ids,
                &(MAX_RECORD_BYTES as i32),
            ],
        )
        .await?;
    if rows.first().is_some_and(|r| !r.get::<_, bool>(10)) {
        return Err(DbError::NotSynced(format!(
            "table {table:?} has pending changes but is not registered for capture"
        )));
    }
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
                    remote_version: row.get(9),
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
async fn close_pushed(
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

/// One record's successful push, for [`record_successes`].
pub struct PushedRecord<'a> {
    pub rec: &'a DueRecord,
    pub claimed: &'a ClaimedRecord,
    pub pushed: &'a Pushed,
}

/// Pushes succeeded: close their changes, store the remote ids and the
/// snapshots, and mark the records synced — with `syncbridge.origin` set
/// to the provider, so these writes are never captured as changes for it.
/// A statement each for all of them (the records are of one table).
pub async fn record_successes(
    tx: &Transaction<'_>,
    provider: ProviderName,
    done: &[PushedRecord<'_>],
) -> Result<(), DbError> {
    if done.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = done
        .iter()
        .flat_map(|d| d.claimed.ids.iter().copied())
        .collect();
    close_pushed(tx, provider, &ids).await?;
    record_pushed_states(tx, provider, done).await
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

/// What pushes left on their records' side, once their changes are
/// closed: the records' link columns and sync status, the write windows'
/// audit rows, the links and snapshots — one statement for each kind, for
/// all the records (of one table). Runs with `syncbridge.origin` set (by
/// [`close_pushed`]).
async fn record_pushed_states(
    tx: &Transaction<'_>,
    provider: ProviderName,
    done: &[PushedRecord<'_>],
) -> Result<(), DbError> {
    let Some(first) = done.first() else {
        return Ok(());
    };
    let table = first.rec.table.as_str();
    // The records' rows before their links: the engine locks rows in that
    // order too (a fetch or webhook applying to the same record), so the
    // two never wait on each other in a cycle.
    if let Some(entity) = crate::providers::entity(table) {
        // The records' own link columns (their remote ids), synced now.
        // The columns come from the entity's constants, never from data.
        let slots: Vec<_> = entity
            .link_columns
            .iter()
            .filter(|l| l.provider == provider)
            .collect();
        let mut records = Vec::with_capacity(done.len());
        let mut ids = Vec::with_capacity(done.len());
        for d in done.iter().filter(|d| d.claimed.row.is_some()) {
            let mut cols = serde_json::Map::new();
            for l in &slots {
                if let Some((_, id)) = d.pushed.links.iter().find(|(s, _)| *s == l.slot) {
                    cols.insert(
                        l.column.to_owned(),
                        id.clone().map_or(Value::Null, Value::String),
                    );
                }
            }
            records.push(d.rec.record_id);
            ids.push(Value::Object(cols));
        }
        if !records.is_empty() {
            let sets: String = slots
                .iter()
                .map(|l| {
                    format!(
                        "{c} = CASE WHEN v.ids ? '{c}' THEN v.ids->>'{c}' ELSE t.{c} END, ",
                        c = l.column
                    )
                })
                .collect();
            let sql = format!(
                "UPDATE {} t SET {sets}last_synced_at = now(), sync_status = 'synced', sync_error = NULL
                 FROM unnest($1::uuid[], $2::jsonb[]) AS v(id, ids)
                 WHERE t.id = v.id",
                entity.table
            );
            let stmt = tx.prepare_cached(&sql).await?;
            tx.execute(&stmt, &[&records, &ids]).await?;
        }
    }
    for d in done {
        if let Some(w) = &d.pushed.write_window {
            declare_write_window(tx, provider, d.rec, w).await?;
        }
    }
    let (mut local, mut slot, mut remote, mut snapshot, mut version) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut gone_local, mut gone_slot) = (vec![], vec![]);
    for d in done {
        for (s, r) in &d.pushed.links {
            match r {
                Some(r) => {
                    local.push(d.rec.record_id);
                    slot.push(*s);
                    remote.push(r.as_str());
                    snapshot.push(
                        d.pushed
                            .snapshots
                            .iter()
                            .find(|(x, _)| x == s)
                            .map(|(_, v)| v),
                    );
                    version.push(
                        d.pushed
                            .versions
                            .iter()
                            .find(|(x, _)| x == s)
                            .map(|(_, v)| *v),
                    );
                }
                None => {
                    gone_local.push(d.rec.record_id);
                    gone_slot.push(*s);
                }
            }
        }
    }
    if !local.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id,
                                         snapshot, remote_version, last_synced_at)
                 SELECT $1, v.local_id, $2, v.slot, v.remote_id, v.snapshot, v.version, now()
                 FROM unnest($3::uuid[], $4::text[], $5::text[], $6::jsonb[], $7::timestamptz[])
                      AS v(local_id, slot, remote_id, snapshot, version)
                 ON CONFLICT (entity_type, local_id, provider, slot) DO UPDATE SET
                     remote_id = EXCLUDED.remote_id, snapshot = EXCLUDED.snapshot,
                     remote_version = greatest(EXCLUDED.remote_version, sync_links.remote_version),
                     last_synced_at = now(), deleted_at = NULL, updated_at = now()",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &table,
                &provider.as_str(),
                &local,
                &slot,
                &remote,
                &snapshot,
                &version,
            ],
        )
        .await?;
    }
    if !gone_local.is_empty() {
        let stmt = tx
            .prepare_cached(
                "DELETE FROM sync_links l USING unnest($3::uuid[], $4::text[]) AS v(local_id, slot)
                 WHERE l.entity_type = $1 AND l.provider = $2
                   AND l.local_id = v.local_id AND l.slot = v.slot",
            )
            .await?;
        tx.execute(
            &stmt,
            &[&table, &provider.as_str(), &gone_local, &gone_slot],
        )
        .await?;
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
