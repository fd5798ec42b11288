//! The conflict engine's writes (SPEC §2.4). A provider's normaliser turns
//! a remote object into its fields in local-column form; the entity's own
//! code finds and locks the local row; [`reconcile`] then asks
//! [`crate::conflict::resolve`] what both sides should hold and writes it:
//! the local columns that change, the link's snapshot and remote version, a
//! push when the remote must change, a `sync_conflicts` row when a `manual`
//! rule holds, and one audit row with both versions either way.
//!
//! Which columns a remote may write is a code whitelist per table
//! ([`Entity`]); the statements are built from those constants only.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::Applied;
use crate::conflict::{self, Outcome, Rules, Side, Strategy};
use crate::db::DbError;
use crate::domain::{E164Phone, ProviderName};

/// A local table the engine syncs, and the columns providers may write.
#[derive(Debug)]
pub struct Entity {
    pub table: &'static str,
    /// Synced columns: what a remote may write and what is compared.
    pub columns: &'static [&'static str],
    /// Columns holding phone numbers, compared in E.164 form.
    pub phone_columns: &'static [&'static str],
    /// Columns holding times, compared as instants.
    pub time_columns: &'static [&'static str],
    /// The column holding the remote id, for tables mirroring one provider.
    pub key_column: Option<&'static str>,
    /// A column that identifies a not-yet-linked local row (a contact
    /// created locally and not pushed yet is matched by email).
    pub natural_key: Option<&'static str>,
    /// Extra values for rows created from a remote object.
    pub insert_extra: &'static [(&'static str, &'static str)],
    /// Columns of the table a successful push writes remote ids into, per
    /// provider and link slot (besides `sync_links`, which always has them).
    pub link_columns: &'static [LinkColumn],
}

/// A column holding the remote id of one of a record's links.
#[derive(Debug)]
pub struct LinkColumn {
    pub provider: ProviderName,
    pub slot: &'static str,
    pub column: &'static str,
}

impl Entity {
    /// One value in its comparable form: phones in E.164 and times as UTC
    /// instants, where they parse.
    fn normalise(&self, column: &str, v: Value) -> Value {
        let Some(text) = v.as_str() else { return v };
        if self.phone_columns.contains(&column) {
            if let Some(p) = E164Phone::parse(text) {
                return Value::String(p.as_str().to_owned());
            }
        } else if self.time_columns.contains(&column) {
            if let Some(t) = crate::domain::parse_provider_time(text) {
                return Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            }
        }
        v
    }

    /// The synced fields of a row image (`to_jsonb(row)`), normalised.
    pub fn local_fields(&self, row: &Value) -> Map<String, Value> {
        self.columns
            .iter()
            .map(|c| {
                let v = row.get(*c).cloned().unwrap_or(Value::Null);
                ((*c).to_owned(), self.normalise(c, v))
            })
            .collect()
    }

    /// Only the whitelisted keys of `fields`, normalised.
    pub fn restrict(&self, fields: &Map<String, Value>) -> Map<String, Value> {
        fields
            .iter()
            .filter(|(k, _)| self.columns.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), self.normalise(k, v.clone())))
            .collect()
    }

    /// `UPDATE` of the columns named in `$2` (a JSON object) to its values,
    /// the others left as they are; `$3` is the new `sync_status`.
    pub(crate) fn update_sql(&self) -> String {
        let sets: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{c} = CASE WHEN $2::jsonb ? '{c}' THEN r.{c} ELSE t.{c} END"))
            .collect();
        format!(
            "UPDATE {t} AS t SET {sets}, last_synced_at = now(), sync_status = $3, sync_error = NULL
             FROM jsonb_populate_record(NULL::{t}, $2) AS r
             WHERE t.id = $1
             RETURNING to_jsonb(t)",
            t = self.table,
            sets = sets.join(", ")
        )
    }

    /// `INSERT` of a new row mirroring remote object `$1` with fields `$2`
    /// (tables with a key column only).
    fn insert_sql(&self) -> Option<String> {
        let key = self.key_column?;
        let mut cols: Vec<&str> = self.columns.to_vec();
        let mut vals: Vec<String> = self.columns.iter().map(|c| format!("r.{c}")).collect();
        for (c, v) in self.insert_extra {
            cols.push(c);
            vals.push((*v).to_owned());
        }
        Some(format!(
            "INSERT INTO {t} AS t ({key}, {cols}, last_synced_at, sync_status)
             SELECT $1, {vals}, now(), 'synced'
             FROM jsonb_populate_record(NULL::{t}, $2) AS r
             RETURNING id, to_jsonb(t)",
            t = self.table,
            cols = cols.join(", "),
            vals = vals.join(", ")
        ))
    }

    /// Finds and locks the local row of remote object `$2` of provider
    /// `$1`: the linked row, else the row whose key column holds it, else
    /// an unlinked row with the same natural key `$3`.
    fn find_sql(&self) -> Option<String> {
        let key = self.key_column?;
        let natural = match self.natural_key {
            Some(n) => format!(
                "OR ($3::text IS NOT NULL AND lower(t.{n}) = lower($3) AND t.{key} IS NULL)"
            ),
            // No natural key: $3 is still typed so the statement takes it.
            None => "OR (false AND $3::text IS NULL)".to_owned(),
        };
        Some(format!(
            "WITH l AS (
                 SELECT local_id FROM sync_links
                 WHERE provider = $1 AND entity_type = '{t}' AND remote_id = $2
             )
             SELECT id, to_jsonb(t), updated_at FROM {t} t
             WHERE t.id = (SELECT local_id FROM l) OR t.{key} = $2 {natural}
             ORDER BY (t.id = (SELECT local_id FROM l)) IS TRUE DESC,
                      (t.{key} = $2) IS TRUE DESC, t.created_at
             LIMIT 1
             FOR NO KEY UPDATE",
            t = self.table
        ))
    }
}

/// The local row a remote record belongs to, locked by the caller.
#[derive(Debug, Clone)]
pub struct LocalRow {
    pub id: Uuid,
    /// `to_jsonb(row)`.
    pub row: Value,
    /// When the row last changed (`updated_at`).
    pub changed_at: DateTime<Utc>,
}

/// What the link table knows about the pair.
#[derive(Debug, Clone, Default)]
pub struct LinkState {
    /// The remote's state as last synced, in local-column form.
    pub snapshot: Option<Value>,
    /// The remote version last applied.
    pub remote_version: Option<DateTime<Utc>>,
}

/// A remote record, in local-column form.
#[derive(Debug, Clone)]
pub struct RemoteRecord<'a> {
    pub provider: ProviderName,
    /// Which of the local record's remote objects this is (`primary`, …).
    pub slot: &'a str,
    pub remote_id: &'a str,
    /// The fields the provider reports; a missing one is not synced by this
    /// record, `null` clears.
    pub fields: Map<String, Value>,
    /// When the provider last changed it.
    pub version: DateTime<Utc>,
}

/// Loads the rule table.
pub async fn load_rules(c: &impl GenericClient) -> Result<Rules, DbError> {
    let rows = c
        .query(
            "SELECT entity_type, field, strategy FROM sync_conflict_rules",
            &[],
        )
        .await?;
    Ok(Rules::new(rows.iter().filter_map(|r| {
        let s: &str = r.get(2);
        Some((r.get(0), r.get(1), Strategy::parse(s)?))
    })))
}

/// The audit row a decision writes.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub operation: &'static str,
    pub decision: String,
    pub detail: Value,
    pub changed: Vec<String>,
}

/// What the engine does about one remote record.
#[derive(Debug, Clone)]
pub enum Action {
    /// Older than the version applied: only the audit row.
    Stale,
    /// A `manual` rule holds: record the conflict, move the link's remote
    /// version, leave the row.
    Conflict {
        fields: Vec<String>,
        remote_fields: Map<String, Value>,
        local_fields: Map<String, Value>,
        base: Option<Map<String, Value>>,
    },
    /// Write `values` (possibly none) with `status`, store `snapshot` and
    /// the remote version on the link, and queue a push if `push`.
    Apply {
        values: Map<String, Value>,
        status: &'static str,
        snapshot: Map<String, Value>,
        push: bool,
    },
}

/// The engine's decision for one remote record, before anything is
/// written: what [`reconcile`] writes at once and the router's batch path
/// writes set-based.
#[derive(Debug, Clone)]
pub struct Decision {
    pub applied: Applied,
    pub action: Action,
    pub audit: AuditEntry,
}

/// Decides what `remote` does to the `local` row under the rules (pure).
pub fn decide(
    rules: &Rules,
    entity: &Entity,
    local: &LocalRow,
    link: Option<&LinkState>,
    remote: &RemoteRecord<'_>,
) -> Decision {
    let remote_fields = entity.restrict(&remote.fields);
    let base = link
        .and_then(|l| l.snapshot.as_ref())
        .and_then(Value::as_object);
    let local_fields = entity.local_fields(&local.row);

    if let Some(applied) = link.and_then(|l| l.remote_version) {
        // Older than what was applied: stale. The same version is stale
        // only when it also carries the state last synced: a provider
        // whose timestamps are coarser than its edits (Keap's
        // `last_updated` can repeat within a second) reports two states
        // under one version, and the second must not be lost.
        let same_state = base.is_some_and(|b| {
            remote_fields
                .iter()
                .all(|(k, r)| b.get(k).is_some_and(|v| conflict::same(r, v)))
        });
        if applied > remote.version || (applied == remote.version && same_state) {
            let detail = json!({"local": local_fields, "remote": remote_fields, "base": base,
                                "applied_version": applied, "version": remote.version});
            return Decision {
                applied: Applied::Stale(format!(
                    "{} {} version {} is not newer than the version already applied ({applied})",
                    entity.table, remote.remote_id, remote.version
                )),
                action: Action::Stale,
                audit: AuditEntry {
                    operation: "SKIP",
                    decision: "skipped_stale".into(),
                    detail,
                    changed: Vec::new(),
                },
            };
        }
    }

    let res = conflict::resolve(
        rules,
        entity.table,
        base,
        Side {
            fields: &local_fields,
            changed_at: local.changed_at,
        },
        Side {
            fields: &remote_fields,
            changed_at: remote.version,
        },
    );
    let fields_detail: Map<String, Value> = res
        .fields
        .iter()
        .map(|(k, d)| (k.clone(), json!(d)))
        .collect();
    let mut detail = json!({
        "local": local_fields, "remote": remote_fields, "base": base,
        "fields": fields_detail,
        "local_changed_at": local.changed_at, "remote_version": remote.version,
    });

    if res.outcome == Outcome::Manual {
        return Decision {
            applied: Applied::Conflict(format!(
                "{} {}: {} changed on both sides, left for review",
                entity.table,
                local.id,
                res.manual.join(", ")
            )),
            audit: AuditEntry {
                operation: "CONFLICT",
                decision: "manual".into(),
                detail,
                changed: res.manual.clone(),
            },
            action: Action::Conflict {
                fields: res.manual,
                remote_fields,
                local_fields,
                base: base.cloned(),
            },
        };
    }

    // The remote's state as syncbridge now knows it.
    let mut snapshot = base.cloned().unwrap_or_default();
    snapshot.extend(remote_fields.clone());
    let values: Map<String, Value> = res
        .to_local
        .iter()
        .filter_map(|k| Some((k.clone(), res.merged.get(k)?.clone())))
        .collect();
    let push = !res.to_remote.is_empty();
    // The synced fields as the decision leaves them locally (both sides
    // end with these for every field the remote reported).
    let mut after = local_fields.clone();
    after.extend(values.clone());
    detail["after"] = Value::Object(after);
    // An echo: the remote reports exactly what was last synced (usually
    // syncbridge's own push coming back).
    let echo = base.is_some_and(|b| {
        remote_fields
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| conflict::same(v, w)))
    });
    let (operation, decision) = match res.outcome {
        Outcome::InSync if echo => ("SKIP", "echo"),
        Outcome::InSync => ("SKIP", "in_sync"),
        Outcome::NoRemoteChange => ("SKIP", "echo"),
        o => ("UPDATE", o.decision()),
    };
    let applied = match res.outcome {
        Outcome::InSync | Outcome::NoRemoteChange => Applied::Ignored(format!(
            "{}: {} {} reports nothing new",
            decision, entity.table, remote.remote_id
        )),
        _ => Applied::Updated(local.id),
    };
    Decision {
        applied,
        audit: AuditEntry {
            operation,
            decision: decision.into(),
            detail,
            changed: res.to_local.clone(),
        },
        action: Action::Apply {
            values,
            status: if push { "pending" } else { "synced" },
            snapshot,
            push,
        },
    }
}

/// Applies `remote` to the locked `local` row under the rules, writing the
/// decision at once.
pub async fn reconcile(
    tx: &impl GenericClient,
    rules: &Rules,
    entity: &Entity,
    local: &LocalRow,
    link: Option<&LinkState>,
    remote: &RemoteRecord<'_>,
    event_id: Option<i64>,
) -> Result<Applied, DbError> {
    let Decision {
        mut applied,
        action,
        audit: mut entry,
    } = decide(rules, entity, local, link, remote);
    match action {
        Action::Stale => {}
        Action::Conflict {
            fields,
            remote_fields,
            local_fields,
            base,
        } => {
            applied = write_conflict(
                tx,
                entity,
                local,
                remote,
                &Conflict {
                    fields: &fields,
                    remote_fields: &remote_fields,
                    local_fields: &local_fields,
                    base: base.as_ref(),
                },
                &mut entry,
                event_id,
            )
            .await?;
        }
        Action::Apply {
            values,
            status,
            snapshot,
            push,
        } => {
            if !values.is_empty() {
                let stmt = tx.prepare_cached(&entity.update_sql()).await?;
                tx.query_one(&stmt, &[&local.id, &Value::Object(values), &status])
                    .await?;
            }
            upsert_link(tx, entity, local.id, remote, &Value::Object(snapshot)).await?;
            if push {
                enqueue_push(tx, remote.provider, entity.table, local.id).await?;
            }
        }
    }
    audit(
        tx,
        entity.table,
        local.id,
        entry.operation,
        remote.provider,
        event_id,
        &entry.decision,
        &entry.detail,
        &entry.changed,
    )
    .await?;
    Ok(applied)
}

/// Applies a remote object to the table mirroring it (an entity with a key
/// column): a known object goes through [`reconcile`], an unknown one
/// becomes a new row.
pub async fn apply_keyed(
    tx: &impl GenericClient,
    rules: &Rules,
    entity: &Entity,
    remote: &RemoteRecord<'_>,
    event_id: Option<i64>,
) -> Result<Applied, DbError> {
    let (Some(key), Some(find), Some(insert)) =
        (entity.key_column, entity.find_sql(), entity.insert_sql())
    else {
        return Ok(Applied::Ignored(format!(
            "{} does not mirror remote objects by id",
            entity.table
        )));
    };
    let natural: Option<&str> = entity
        .natural_key
        .and_then(|n| remote.fields.get(n))
        .and_then(Value::as_str);
    let stmt = tx.prepare_cached(&find).await?;
    let found = tx
        .query_opt(
            &stmt,
            &[&remote.provider.as_str(), &remote.remote_id, &natural],
        )
        .await?;
    let Some(row) = found else {
        let fields = entity.restrict(&remote.fields);
        let stmt = tx.prepare_cached(&insert).await?;
        let row = tx
            .query_one(&stmt, &[&remote.remote_id, &Value::Object(fields.clone())])
            .await?;
        let id: Uuid = row.get(0);
        let after: Value = row.get(1);
        upsert_link(tx, entity, id, remote, &Value::Object(fields.clone())).await?;
        let detail = json!({"remote": fields, "after": after, "remote_version": remote.version});
        audit(
            tx,
            entity.table,
            id,
            "INSERT",
            remote.provider,
            event_id,
            "applied",
            &detail,
            &fields.keys().cloned().collect::<Vec<_>>(),
        )
        .await?;
        return Ok(Applied::Inserted(id));
    };
    let local = LocalRow {
        id: row.get(0),
        row: row.get(1),
        changed_at: row.get(2),
    };
    // The link is read once the row is locked: whoever changes it (the
    // dispatcher after a push, another fetcher) holds the row's lock, so
    // only this read sees the snapshot the decision must start from.
    let stmt = tx
        .prepare_cached(
            "SELECT local_id, snapshot, remote_version FROM sync_links
             WHERE provider = $1 AND entity_type = $2 AND remote_id = $3",
        )
        .await?;
    let link = tx
        .query_opt(
            &stmt,
            &[&remote.provider.as_str(), &entity.table, &remote.remote_id],
        )
        .await?;
    // A link to another row (the object was re-linked) is not this row's
    // history: compare without it.
    let state = link
        .filter(|l| l.get::<_, Uuid>(0) == local.id)
        .map(|l| LinkState {
            snapshot: l.get(1),
            remote_version: l.get(2),
        });
    let applied = reconcile(tx, rules, entity, &local, state.as_ref(), remote, event_id).await?;
    let sql = format!(
        "UPDATE {t} SET {key} = $2 WHERE id = $1 AND {key} IS DISTINCT FROM $2",
        t = entity.table
    );
    let stmt = tx.prepare_cached(&sql).await?;
    tx.execute(&stmt, &[&local.id, &remote.remote_id]).await?;
    Ok(applied)
}

/// The provider no longer has the object: the local row is marked deleted
/// (never dropped) and its link closed.
pub async fn mark_deleted(
    tx: &impl GenericClient,
    entity: &Entity,
    provider: ProviderName,
    remote_id: &str,
    event_id: Option<i64>,
) -> Result<Applied, DbError> {
    let Some(key) = entity.key_column else {
        return Ok(Applied::Ignored(format!(
            "{} does not mirror remote objects by id",
            entity.table
        )));
    };
    let sql = format!(
        "UPDATE {t} AS t SET deleted_at = coalesce(t.deleted_at, now()), sync_status = 'synced',
                sync_error = NULL, last_synced_at = now()
         WHERE t.{key} = $1
         RETURNING id, to_jsonb(t)",
        t = entity.table
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let Some(row) = tx.query_opt(&stmt, &[&remote_id]).await? else {
        return Ok(Applied::Ignored(format!(
            "{} {remote_id} is gone and was never mirrored",
            entity.table
        )));
    };
    let id: Uuid = row.get(0);
    let after: Value = row.get(1);
    tx.execute(
        "UPDATE sync_links SET deleted_at = coalesce(deleted_at, now()), updated_at = now()
         WHERE provider = $1 AND entity_type = $2 AND remote_id = $3",
        &[&provider.as_str(), &entity.table, &remote_id],
    )
    .await?;
    let detail = json!({"after": after, "remote_id": remote_id});
    audit(
        tx,
        entity.table,
        id,
        "DELETE",
        provider,
        event_id,
        "deleted_remotely",
        &detail,
        &["deleted_at".to_owned()],
    )
    .await?;
    Ok(Applied::Updated(id))
}

/// The parts of an [`Action::Conflict`] the conflict row records.
pub(crate) struct Conflict<'a> {
    pub fields: &'a [String],
    pub remote_fields: &'a Map<String, Value>,
    pub local_fields: &'a Map<String, Value>,
    pub base: Option<&'a Map<String, Value>>,
}

/// Writes a `manual` decision: the conflict row (see [`record_conflict`]),
/// the link's new remote version, and the conflict's id in the audit entry.
pub(crate) async fn write_conflict(
    tx: &impl GenericClient,
    entity: &Entity,
    local: &LocalRow,
    remote: &RemoteRecord<'_>,
    conflict: &Conflict<'_>,
    entry: &mut AuditEntry,
    event_id: Option<i64>,
) -> Result<Applied, DbError> {
    let id = record_conflict(
        tx,
        entity,
        local,
        remote,
        conflict.remote_fields,
        conflict.local_fields,
        conflict.base,
        conflict.fields,
        event_id,
    )
    .await?;
    set_remote_version(tx, entity, local.id, remote).await?;
    entry.detail["conflict_id"] = json!(id);
    Ok(Applied::Conflict(format!(
        "{} {}: {} changed on both sides, left for review as conflict {id}",
        entity.table,
        local.id,
        conflict.fields.join(", ")
    )))
}

/// Writes a `sync_conflicts` row (superseding any open one for the same
/// record and provider), marks the local row `conflict`, and holds its
/// pending pushes to that provider until the conflict is resolved.
#[allow(clippy::too_many_arguments)]
async fn record_conflict(
    tx: &impl GenericClient,
    entity: &Entity,
    local: &LocalRow,
    remote: &RemoteRecord<'_>,
    remote_fields: &Map<String, Value>,
    local_fields: &Map<String, Value>,
    base: Option<&Map<String, Value>>,
    fields: &[String],
    event_id: Option<i64>,
) -> Result<Uuid, DbError> {
    let stmt = tx
        .prepare_cached(
            "WITH superseded AS (
                 UPDATE sync_conflicts SET status = 'superseded', resolved_at = now(),
                        resolution_notes = 'superseded by a newer conflict'
                 WHERE entity_type = $1 AND entity_id = $2 AND provider = $3 AND status = 'open'
             ), held AS (
                 UPDATE sync_outbox SET next_attempt_at = 'infinity'
                 WHERE provider = $3 AND table_name = $1 AND record_id = $2 AND status = 'pending'
             )
             INSERT INTO sync_conflicts
                 (entity_type, entity_id, keap_data, supabase_data, conflict_fields,
                  resolution_strategy, provider, remote_id, base_data, remote_version, event_id)
             VALUES ($1, $2, $4, $5, $6, 'manual', $3, $7, $8, $9, $10)
             RETURNING id",
        )
        .await?;
    let base = base.map(|b| Value::Object(b.clone()));
    let id: Uuid = tx
        .query_one(
            &stmt,
            &[
                &entity.table,
                &local.id,
                &remote.provider.as_str(),
                &Value::Object(remote_fields.clone()),
                &Value::Object(local_fields.clone()),
                &fields,
                &remote.remote_id,
                &base,
                &remote.version,
                &event_id,
            ],
        )
        .await?
        .get(0);
    let sql = format!(
        "UPDATE {} SET sync_status = 'conflict', sync_error = $2 WHERE id = $1",
        entity.table
    );
    let note = format!("conflict {id}: {} changed on both sides", fields.join(", "));
    tx.execute(&sql, &[&local.id, &note]).await?;
    Ok(id)
}

async fn set_remote_version(
    tx: &impl GenericClient,
    entity: &Entity,
    local_id: Uuid,
    remote: &RemoteRecord<'_>,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id, remote_version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (entity_type, local_id, provider, slot) DO UPDATE SET
             remote_id = EXCLUDED.remote_id, remote_version = EXCLUDED.remote_version,
             deleted_at = NULL, updated_at = now()",
        &[
            &entity.table,
            &local_id,
            &remote.provider.as_str(),
            &remote.slot,
            &remote.remote_id,
            &remote.version,
        ],
    )
    .await?;
    Ok(())
}

/// Records the pair's new snapshot and remote version.
pub async fn upsert_link(
    tx: &impl GenericClient,
    entity: &Entity,
    local_id: Uuid,
    remote: &RemoteRecord<'_>,
    snapshot: &Value,
) -> Result<(), DbError> {
    // A link naming a local row that no longer exists (deleted while no
    // push closed its link) is taken over, not a unique violation.
    let sql = format!(
        "WITH gone AS (
             DELETE FROM sync_links l
             WHERE l.provider = $3 AND l.entity_type = $1 AND l.remote_id = $5
               AND l.local_id <> $2
               AND NOT EXISTS (SELECT 1 FROM {t} r WHERE r.id = l.local_id)
             RETURNING 1
         )
         INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id, snapshot,
                                 remote_version, last_synced_at)
         SELECT $1, $2, $3, $4, $5, $6, $7, now()
         WHERE (SELECT count(*) FROM gone) >= 0
         ON CONFLICT (entity_type, local_id, provider, slot) DO UPDATE SET
             remote_id = EXCLUDED.remote_id, snapshot = EXCLUDED.snapshot,
             remote_version = EXCLUDED.remote_version, last_synced_at = now(),
             deleted_at = NULL, updated_at = now()",
        t = entity.table
    );
    let stmt = tx.prepare_cached(&sql).await?;
    tx.execute(
        &stmt,
        &[
            &entity.table,
            &local_id,
            &remote.provider.as_str(),
            &remote.slot,
            &remote.remote_id,
            snapshot,
            &remote.version,
        ],
    )
    .await?;
    Ok(())
}

/// Queues a push of the record to `provider` (unless one is pending) and
/// rings the dispatcher's doorbell.
pub async fn enqueue_push(
    tx: &impl GenericClient,
    provider: ProviderName,
    table: &str,
    record_id: Uuid,
) -> Result<(), DbError> {
    let stmt = tx
        .prepare_cached(
            "WITH queued AS (
                 INSERT INTO sync_outbox (provider, table_name, record_id, operation, origin)
                 SELECT $1, $2, $3, 'SYNC', 'syncbridge'
                 WHERE NOT EXISTS (SELECT 1 FROM sync_outbox
                                   WHERE provider = $1 AND table_name = $2 AND record_id = $3
                                     AND status = 'pending' AND next_attempt_at <> 'infinity')
                 RETURNING id
             ), rung AS (
                 UPDATE syncbridge_doorbell SET armed = false
                 WHERE channel = 'syncbridge_outbox' AND armed AND EXISTS (SELECT 1 FROM queued)
                 RETURNING channel
             )
             SELECT pg_notify(channel, '') FROM rung",
        )
        .await?;
    tx.query(&stmt, &[&provider.as_str(), &table, &record_id])
        .await?;
    Ok(())
}

/// One audit row: the decision and both versions in `detail`.
#[allow(clippy::too_many_arguments)]
pub async fn audit(
    tx: &impl GenericClient,
    entity_type: &str,
    entity_id: Uuid,
    operation: &str,
    provider: ProviderName,
    event_id: Option<i64>,
    decision: &str,
    detail: &Value,
    changed: &[String],
) -> Result<(), DbError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sync_audit_log (entity_type, entity_id, operation, old_data, new_data,
                 changed_fields, sync_source, sync_destination, event_id, decision, detail)
             VALUES ($1, $2, $3, $4::jsonb -> 'local', coalesce($4::jsonb -> 'after', $4::jsonb -> 'remote'), $5,
                     $6, 'local', $7, $8, $4::jsonb - 'local' - 'after')",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &entity_type,
            &entity_id,
            &operation,
            detail,
            &changed,
            &provider.as_str(),
            &event_id,
            &decision,
        ],
    )
    .await?;
    Ok(())
}

/// How an operator resolves a conflict.
#[derive(Debug, Clone)]
pub enum Choice {
    /// Keep the local version; it is pushed to the provider.
    Local,
    /// Take the provider's version locally.
    Remote,
    /// Both sides get these values (synced fields only).
    Merged(Map<String, Value>),
}

impl Choice {
    pub fn name(&self) -> &'static str {
        match self {
            Choice::Local => "local",
            Choice::Remote => "remote",
            Choice::Merged(_) => "merged",
        }
    }

    pub fn strategy(&self) -> Strategy {
        match self {
            Choice::Local => Strategy::PreferLocal,
            Choice::Remote => Strategy::PreferRemote,
            Choice::Merged(_) => Strategy::Merge,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no conflict {0}")]
    NotFound(Uuid),
    #[error("conflict {0} is {1}, not open")]
    NotOpen(Uuid, String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for ResolveError {
    fn from(e: tokio_postgres::Error) -> Self {
        ResolveError::Db(e.into())
    }
}

/// Resolves an open conflict: writes the chosen version locally (with the
/// provider as origin, so other providers still receive the change), moves
/// the link's snapshot to what the provider holds, queues the push that
/// brings the provider to the chosen version, releases the record's held
/// pushes, and audits the decision. Returns the resolved conflict.
pub async fn resolve_conflict(
    client: &mut deadpool_postgres::Client,
    entities: fn(&str) -> Option<&'static Entity>,
    id: Uuid,
    choice: Choice,
    resolved_by: Option<Uuid>,
    notes: Option<&str>,
) -> Result<Value, ResolveError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT entity_type, entity_id, provider, remote_id, keap_data, supabase_data,
                    base_data, status
             FROM sync_conflicts WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(ResolveError::NotFound(id))?;
    let status: String = row.get(7);
    if status != "open" {
        return Err(ResolveError::NotOpen(id, status));
    }
    let table: String = row.get(0);
    let entity_id: Uuid = row.get(1);
    let provider_name: String = row.get(2);
    let remote_id: Option<String> = row.get(3);
    let remote_version: Value = row.get(4);
    let local_version: Value = row.get(5);
    let base: Option<Value> = row.get(6);
    let entity = entities(&table)
        .ok_or_else(|| ResolveError::Invalid(format!("{table} is not a synced entity")))?;
    let provider = ProviderName::parse(&provider_name)
        .ok_or_else(|| ResolveError::Invalid(format!("unknown provider {provider_name}")))?;
    let remote_fields = remote_version.as_object().cloned().unwrap_or_default();

    let (write, push) = match &choice {
        Choice::Local => (None, true),
        Choice::Remote => (Some(entity.restrict(&remote_fields)), false),
        Choice::Merged(m) => {
            let unknown: Vec<&str> = m
                .keys()
                .map(String::as_str)
                .filter(|k| !entity.columns.contains(k))
                .collect();
            if !unknown.is_empty() {
                return Err(ResolveError::Invalid(format!(
                    "{} does not sync {}; synced fields: {}",
                    table,
                    unknown.join(", "),
                    entity.columns.join(", ")
                )));
            }
            (Some(m.clone()), true)
        }
    };

    tx.execute(
        "SELECT set_config('syncbridge.origin', $1, true)",
        &[&provider.as_str()],
    )
    .await?;
    let locked = format!(
        "SELECT to_jsonb(t) FROM {} t WHERE id = $1 FOR NO KEY UPDATE",
        entity.table
    );
    let before: Value = tx
        .query_opt(&locked, &[&entity_id])
        .await?
        .ok_or_else(|| {
            ResolveError::Invalid(format!(
                "{table} {entity_id} no longer exists; nothing to resolve"
            ))
        })?
        .get(0);
    let status = if push { "pending" } else { "synced" };
    let after: Value = match write {
        Some(values) => {
            let stmt = tx.prepare_cached(&entity.update_sql()).await?;
            tx.query_one(&stmt, &[&entity_id, &Value::Object(values), &status])
                .await?
                .get(0)
        }
        None => {
            let sql = format!(
                "UPDATE {} SET sync_status = $2, sync_error = NULL WHERE id = $1
                 RETURNING to_jsonb({0})",
                entity.table
            );
            tx.query_one(&sql, &[&entity_id, &status]).await?.get(0)
        }
    };
    if let Some(remote_id) = &remote_id {
        // The provider holds its version until the push (if any) lands.
        tx.execute(
            "UPDATE sync_links SET snapshot = coalesce(snapshot, '{}'::jsonb) || $4,
                    last_synced_at = now(), updated_at = now()
             WHERE provider = $1 AND entity_type = $2 AND remote_id = $3",
            &[&provider.as_str(), &table, remote_id, &remote_version],
        )
        .await?;
    }
    tx.execute(
        "UPDATE sync_outbox SET next_attempt_at = now()
         WHERE provider = $1 AND table_name = $2 AND record_id = $3 AND status = 'pending'
           AND next_attempt_at = 'infinity'",
        &[&provider.as_str(), &table, &entity_id],
    )
    .await?;
    if push {
        enqueue_push(&tx, provider, &table, entity_id).await?;
    }
    let resolved = entity.local_fields(&after);
    let conflict: Value = tx
        .query_one(
            "UPDATE sync_conflicts SET status = 'resolved', resolution = $2,
                    resolution_strategy = $3, resolved_at = now(), resolved_by = $4,
                    resolution_notes = $5, resolved_data = $6
             WHERE id = $1
             RETURNING to_jsonb(sync_conflicts)",
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
    let changed: Vec<String> = entity
        .local_fields(&before)
        .iter()
        .filter(|(k, v)| resolved.get(*k).is_some_and(|w| !conflict::same(v, w)))
        .map(|(k, _)| k.clone())
        .collect();
    let detail = json!({"local": local_version, "remote": remote_version, "base": base,
                        "merged": resolved, "after": after, "conflict_id": id,
                        "resolution": choice.name(), "resolved_by": resolved_by});
    audit(
        &tx,
        &table,
        entity_id,
        "RESOLVE",
        provider,
        None,
        &format!("resolved_{}", choice.name()),
        &detail,
        &changed,
    )
    .await?;
    tx.commit().await?;
    Ok(conflict)
}

/// Conflicts for `GET /api/sync/conflicts`, newest first.
pub async fn list_conflicts(
    c: &impl GenericClient,
    status: Option<&str>,
    entity_type: Option<&str>,
    provider: Option<&str>,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Value>, DbError> {
    let rows = c
        .query(
            "SELECT to_jsonb(sc) FROM sync_conflicts sc
             WHERE ($1::text IS NULL OR status = $1)
               AND ($2::text IS NULL OR entity_type = $2)
               AND ($3::text IS NULL OR provider = $3)
               AND ($4::timestamptz IS NULL OR detected_at < $4)
             ORDER BY detected_at DESC, id
             LIMIT $5",
            &[&status, &entity_type, &provider, &before, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn get_conflict(c: &impl GenericClient, id: Uuid) -> Result<Option<Value>, DbError> {
    Ok(c.query_opt(
        "SELECT to_jsonb(sc) FROM sync_conflicts sc WHERE id = $1",
        &[&id],
    )
    .await?
    .map(|r| r.get(0)))
}

/// The rule table, most specific first.
pub async fn list_rules(c: &impl GenericClient) -> Result<Vec<Value>, DbError> {
    let rows = c
        .query(
            "SELECT jsonb_build_object('entity_type', entity_type, 'field', field,
                        'strategy', strategy, 'updated_at', updated_at)
             FROM sync_conflict_rules
             ORDER BY entity_type = '*', entity_type, field = '*', field",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Sets the strategy for (entity, field); `None` removes the rule (the
/// catch-all `('*', '*')` cannot be removed, only changed).
pub async fn set_rule(
    c: &impl GenericClient,
    entity_type: &str,
    field: &str,
    strategy: Option<Strategy>,
) -> Result<u64, DbError> {
    Ok(match strategy {
        Some(s) => {
            c.execute(
                "INSERT INTO sync_conflict_rules (entity_type, field, strategy) VALUES ($1, $2, $3)
                 ON CONFLICT (entity_type, field) DO UPDATE
                     SET strategy = EXCLUDED.strategy, updated_at = now()",
                &[&entity_type, &field, &s.as_str()],
            )
            .await?
        }
        None => {
            c.execute(
                "DELETE FROM sync_conflict_rules
                 WHERE entity_type = $1 AND field = $2 AND NOT (entity_type = '*' AND field = '*')",
                &[&entity_type, &field],
            )
            .await?
        }
    })
}
