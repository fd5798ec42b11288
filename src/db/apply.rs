//! The writes the router makes when it applies a domain event: each upsert
//! writes its audit row in the same statement or transaction. Every
//! function here runs inside the router's transaction, after it has set
//! `syncbridge.origin` to the event's provider.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::Value;
use uuid::Uuid;

use super::DbError;
use crate::domain::ProviderName;
use crate::events::{CallEvent, CallFacet, MessageEvent, RemoteContact};

/// What applying one event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Inserted(Uuid),
    Updated(Uuid),
    /// Nothing written: an equal or newer state was already applied.
    Stale(String),
    /// Nothing to apply it to.
    Ignored(String),
}

/// The client whose phone (or alternate phone) is `$1`, primary phone
/// first. Shared by calls and messages.
const MATCH_CLIENT: &str = "(SELECT id FROM clients
      WHERE $1::text IS NOT NULL
        AND (syncbridge_e164(phone) = $1 OR syncbridge_e164(alt_phone_1) = $1
             OR syncbridge_e164(alt_phone_2) = $1)
      ORDER BY (syncbridge_e164(phone) = $1) DESC, created_at
      LIMIT 1)";

/// Upserts a call by `openphone_call_id`. Lifecycle events overwrite the
/// call's state only when they are at least as new as the last one applied
/// (`openphone_event_timestamp`); facet events (recording, summary,
/// transcript) fill their own columns and only fill gaps in the rest.
pub async fn upsert_call(
    tx: &Transaction<'_>,
    ev: &CallEvent,
    event_id: i64,
) -> Result<Applied, DbError> {
    let sql = format!(
        "WITH up AS (
            INSERT INTO communications AS c
                (channel, source, openphone_call_id, direction, from_number, to_number, status,
                 occurred_at, answered_at, completed_at, duration_seconds,
                 openphone_conversation_id, openphone_phone_number_id, openphone_user_id,
                 recording_url, voicemail_url, summary, transcript,
                 openphone_event_timestamp, client_id)
            VALUES ('call', 'Quo', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                    $14, $15, $16, $17, CASE WHEN $18 THEN $19::timestamptz END, {MATCH_CLIENT})
            ON CONFLICT (openphone_call_id) DO UPDATE SET
                direction        = CASE WHEN $18 THEN COALESCE(EXCLUDED.direction, c.direction) ELSE COALESCE(c.direction, EXCLUDED.direction) END,
                from_number      = CASE WHEN $18 THEN COALESCE(EXCLUDED.from_number, c.from_number) ELSE COALESCE(c.from_number, EXCLUDED.from_number) END,
                to_number        = CASE WHEN $18 THEN COALESCE(EXCLUDED.to_number, c.to_number) ELSE COALESCE(c.to_number, EXCLUDED.to_number) END,
                status           = CASE WHEN $18 THEN COALESCE(EXCLUDED.status, c.status) ELSE COALESCE(c.status, EXCLUDED.status) END,
                occurred_at      = COALESCE(c.occurred_at, EXCLUDED.occurred_at),
                answered_at      = COALESCE(EXCLUDED.answered_at, c.answered_at),
                completed_at     = COALESCE(EXCLUDED.completed_at, c.completed_at),
                duration_seconds = CASE WHEN $18 THEN COALESCE(EXCLUDED.duration_seconds, c.duration_seconds) ELSE COALESCE(c.duration_seconds, EXCLUDED.duration_seconds) END,
                openphone_conversation_id = COALESCE(c.openphone_conversation_id, EXCLUDED.openphone_conversation_id),
                openphone_phone_number_id = COALESCE(c.openphone_phone_number_id, EXCLUDED.openphone_phone_number_id),
                openphone_user_id = COALESCE(c.openphone_user_id, EXCLUDED.openphone_user_id),
                recording_url    = COALESCE(EXCLUDED.recording_url, c.recording_url),
                voicemail_url    = COALESCE(EXCLUDED.voicemail_url, c.voicemail_url),
                summary          = COALESCE(EXCLUDED.summary, c.summary),
                transcript       = COALESCE(EXCLUDED.transcript, c.transcript),
                openphone_event_timestamp = CASE WHEN $18 THEN EXCLUDED.openphone_event_timestamp ELSE c.openphone_event_timestamp END,
                client_id        = COALESCE(c.client_id, EXCLUDED.client_id)
            WHERE NOT $18 OR c.openphone_event_timestamp IS NULL
               OR c.openphone_event_timestamp <= EXCLUDED.openphone_event_timestamp
            RETURNING c.*, (xmax = 0) AS inserted
         ), audit AS (
            INSERT INTO sync_audit_log
                (entity_type, entity_id, operation, new_data, sync_source, sync_destination, event_id, decision)
            SELECT 'communications', id, CASE WHEN inserted THEN 'INSERT' ELSE 'UPDATE' END,
                   to_jsonb(up) - 'inserted', 'openphone', 'local', $20, 'applied'
            FROM up
         )
         SELECT id, inserted FROM up"
    );
    let lifecycle = matches!(ev.facet, CallFacet::Lifecycle);
    let (summary, transcript) = match &ev.facet {
        CallFacet::Summary(s) => (Some(s.as_str()), None),
        CallFacet::Transcript(t) => (None, Some(t)),
        _ => (None, None),
    };
    let counterpart = ev.counterpart.as_ref().map(|p| p.as_str());
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(
            &stmt,
            &[
                &counterpart,
                &ev.call_id,
                &ev.direction.map(|d| d.as_str()),
                &ev.from,
                &ev.to,
                &ev.status,
                &ev.started_at.or(Some(ev.event_at)),
                &ev.answered_at,
                &ev.completed_at,
                &ev.duration_seconds,
                &ev.conversation_id,
                &ev.phone_number_id,
                &ev.user_id,
                &ev.recording_url,
                &ev.voicemail_url,
                &summary,
                &transcript,
                &lifecycle,
                &ev.event_at,
                &event_id,
            ],
        )
        .await?;
    Ok(upserted(row, || {
        format!("call {} already has a newer event applied", ev.call_id)
    }))
}

/// Upserts a message by `openphone_message_id`, newest event wins.
pub async fn upsert_message(
    tx: &Transaction<'_>,
    ev: &MessageEvent,
    event_id: i64,
) -> Result<Applied, DbError> {
    let sql = format!(
        "WITH up AS (
            INSERT INTO communications AS c
                (channel, source, openphone_message_id, direction, from_number, to_number, body,
                 status, occurred_at, openphone_conversation_id, openphone_phone_number_id,
                 openphone_user_id, openphone_event_timestamp, client_id)
            VALUES ('message', 'Quo', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, {MATCH_CLIENT})
            ON CONFLICT (openphone_message_id) DO UPDATE SET
                direction   = COALESCE(EXCLUDED.direction, c.direction),
                from_number = COALESCE(EXCLUDED.from_number, c.from_number),
                to_number   = COALESCE(EXCLUDED.to_number, c.to_number),
                body        = COALESCE(EXCLUDED.body, c.body),
                status      = COALESCE(EXCLUDED.status, c.status),
                occurred_at = COALESCE(c.occurred_at, EXCLUDED.occurred_at),
                openphone_conversation_id = COALESCE(EXCLUDED.openphone_conversation_id, c.openphone_conversation_id),
                openphone_phone_number_id = COALESCE(EXCLUDED.openphone_phone_number_id, c.openphone_phone_number_id),
                openphone_user_id = COALESCE(EXCLUDED.openphone_user_id, c.openphone_user_id),
                openphone_event_timestamp = EXCLUDED.openphone_event_timestamp,
                client_id   = COALESCE(c.client_id, EXCLUDED.client_id)
            WHERE c.openphone_event_timestamp IS NULL
               OR c.openphone_event_timestamp <= EXCLUDED.openphone_event_timestamp
            RETURNING c.*, (xmax = 0) AS inserted
         ), audit AS (
            INSERT INTO sync_audit_log
                (entity_type, entity_id, operation, new_data, sync_source, sync_destination, event_id, decision)
            SELECT 'communications', id, CASE WHEN inserted THEN 'INSERT' ELSE 'UPDATE' END,
                   to_jsonb(up) - 'inserted', 'openphone', 'local', $13, 'applied'
            FROM up
         )
         SELECT id, inserted FROM up"
    );
    let counterpart = ev.counterpart.as_ref().map(|p| p.as_str());
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(
            &stmt,
            &[
                &counterpart,
                &ev.message_id,
                &ev.direction.map(|d| d.as_str()),
                &ev.from,
                &ev.to,
                &ev.text,
                &ev.status,
                &ev.sent_at.or(Some(ev.event_at)),
                &ev.conversation_id,
                &ev.phone_number_id,
                &ev.user_id,
                &ev.event_at,
                &event_id,
            ],
        )
        .await?;
    Ok(upserted(row, || {
        format!(
            "message {} already has a newer event applied",
            ev.message_id
        )
    }))
}

/// An `(id, inserted)` row from a guarded upsert; no row means the guard
/// (a newer state already applied) held.
fn upserted(row: Option<tokio_postgres::Row>, stale: impl FnOnce() -> String) -> Applied {
    match row {
        Some(r) if r.get::<_, bool>(1) => Applied::Inserted(r.get(0)),
        Some(r) => Applied::Updated(r.get(0)),
        None => Applied::Stale(stale()),
    }
}

/// Which OpenPhone contact of a client a remote contact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Primary,
    Alt1,
    Alt2,
}

impl Slot {
    fn as_str(self) -> &'static str {
        match self {
            Slot::Primary => "primary",
            Slot::Alt1 => "alt_1",
            Slot::Alt2 => "alt_2",
        }
    }

    fn parse(s: &str) -> Slot {
        match s {
            "alt_1" => Slot::Alt1,
            "alt_2" => Slot::Alt2,
            _ => Slot::Primary,
        }
    }
}

struct LocalMatch {
    client_id: Uuid,
    slot: Slot,
    applied_version: Option<DateTime<Utc>>,
    /// What syncbridge last synced for this contact (pushed or applied).
    snapshot: Option<Value>,
    before: Value,
    updated_at: DateTime<Utc>,
    last_synced_at: Option<DateTime<Utc>>,
}

/// Finds (and locks) the client a remote contact belongs to: through the
/// link table, the contact-id columns, the external id (which syncbridge
/// sets to the client id), or finally the contact's phone number.
async fn find_client(
    tx: &Transaction<'_>,
    provider: ProviderName,
    remote_id: &str,
    external_id: Option<&str>,
    phone: Option<&str>,
) -> Result<Option<LocalMatch>, DbError> {
    let link = tx
        .query_opt(
            "SELECT local_id, slot, remote_version, snapshot FROM sync_links
             WHERE provider = $1 AND entity_type = 'clients' AND remote_id = $2
               AND deleted_at IS NULL",
            &[&provider.as_str(), &remote_id],
        )
        .await?;
    let (client_id, slot, applied_version): (Option<Uuid>, Slot, Option<DateTime<Utc>>) =
        match &link {
            Some(r) => (Some(r.get(0)), Slot::parse(r.get(1)), r.get(2)),
            None => (None, Slot::Primary, None),
        };
    let external = external_id.and_then(|s| Uuid::parse_str(s).ok());
    let row = tx
        .query_opt(
            "SELECT id,
                    CASE WHEN openphone_alt_contact_1_id = $2 THEN 'alt_1'
                         WHEN openphone_alt_contact_2_id = $2 THEN 'alt_2'
                         ELSE 'primary' END,
                    to_jsonb(c), updated_at, last_synced_at
             FROM clients c
             WHERE id = $1
                OR ($1::uuid IS NULL AND (openphone_contact_id = $2
                    OR openphone_alt_contact_1_id = $2 OR openphone_alt_contact_2_id = $2))
                OR ($1::uuid IS NULL AND id = $3)
                OR ($1::uuid IS NULL AND $4::text IS NOT NULL AND syncbridge_e164(phone) = $4
                    AND openphone_contact_id IS NULL)
             ORDER BY (id = $1) DESC, (openphone_contact_id = $2) DESC, (id = $3) DESC, created_at
             LIMIT 1
             FOR UPDATE",
            &[&client_id, &remote_id, &external, &phone],
        )
        .await?;
    Ok(row.map(|r| LocalMatch {
        client_id: r.get(0),
        slot: if link.is_some() {
            slot
        } else {
            Slot::parse(r.get(1))
        },
        applied_version,
        snapshot: link.as_ref().and_then(|l| l.get(3)),
        before: r.get(2),
        updated_at: r.get(3),
        last_synced_at: r.get(4),
    }))
}

/// Applies a remote contact to `clients`, last write wins by the contact's
/// own version: older than the version last applied → stale; changed
/// locally since the last sync, and more recently than the remote change →
/// the local state stands (stale). Unknown contacts become new clients.
pub async fn apply_contact(
    tx: &Transaction<'_>,
    provider: ProviderName,
    c: &RemoteContact,
    event_id: i64,
) -> Result<Applied, DbError> {
    let phone = c.phone.as_ref().map(|p| p.as_str());
    let found = find_client(tx, provider, &c.remote_id, c.external_id.as_deref(), phone).await?;
    let snapshot = c.fields();

    let Some(m) = found else {
        let row = tx
            .query_one(
                "INSERT INTO clients (first_name, last_name, company, email, phone,
                                      openphone_contact_id, last_synced_at, sync_status)
                 VALUES ($1, $2, $3, $4, $5, $6, now(), 'synced')
                 RETURNING id, to_jsonb(clients)",
                &[
                    &c.first_name,
                    &c.last_name,
                    &c.company,
                    &c.email,
                    &phone,
                    &c.remote_id,
                ],
            )
            .await?;
        let id: Uuid = row.get(0);
        let after: Value = row.get(1);
        upsert_link(
            tx,
            provider,
            id,
            Slot::Primary,
            &c.remote_id,
            &snapshot,
            c.version,
        )
        .await?;
        audit(
            tx,
            "clients",
            id,
            "INSERT",
            None,
            Some(&after),
            provider,
            event_id,
            "applied",
        )
        .await?;
        return Ok(Applied::Inserted(id));
    };

    // An echo: the provider reports exactly what was last synced (usually
    // our own push). Nothing to apply, nothing to push back.
    if m.snapshot.as_ref() == Some(&snapshot) {
        audit(
            tx,
            "clients",
            m.client_id,
            "SKIP",
            Some(&m.before),
            Some(&snapshot),
            provider,
            event_id,
            "echo",
        )
        .await?;
        return Ok(Applied::Ignored(format!(
            "echo: contact {} equals the last synced snapshot",
            c.remote_id
        )));
    }
    let changed_locally = m.last_synced_at.is_none_or(|s| m.updated_at > s);
    let skip = if m.applied_version.is_some_and(|v| v >= c.version) {
        Some((
            format!(
                "contact {} version {} is not newer than the version already applied",
                c.remote_id, c.version
            ),
            "skipped_stale",
        ))
    } else if changed_locally && m.updated_at > c.version {
        Some((
            format!(
                "client changed locally at {} after the remote change at {}: last write wins",
                m.updated_at, c.version
            ),
            "local_newer",
        ))
    } else {
        None
    };
    if let Some((why, decision)) = skip {
        audit(
            tx,
            "clients",
            m.client_id,
            "SKIP",
            Some(&m.before),
            Some(&snapshot),
            provider,
            event_id,
            decision,
        )
        .await?;
        return Ok(Applied::Stale(why));
    }

    let after: Value = match m.slot {
        Slot::Primary => tx
            .query_one(
                "UPDATE clients SET first_name = $2, last_name = $3, company = $4,
                        email = COALESCE($5, email), phone = COALESCE($6, phone),
                        openphone_contact_id = $7, last_synced_at = now(),
                        sync_status = 'synced', sync_error = NULL
                 WHERE id = $1 RETURNING to_jsonb(clients)",
                &[&m.client_id, &c.first_name, &c.last_name, &c.company, &c.email, &phone, &c.remote_id],
            )
            .await?
            .get(0),
        Slot::Alt1 | Slot::Alt2 => tx
            .query_one(
                "UPDATE clients SET
                        alt_phone_1 = CASE WHEN $2 THEN COALESCE($3, alt_phone_1) ELSE alt_phone_1 END,
                        alt_phone_2 = CASE WHEN $2 THEN alt_phone_2 ELSE COALESCE($3, alt_phone_2) END,
                        last_synced_at = now(), sync_status = 'synced', sync_error = NULL
                 WHERE id = $1 RETURNING to_jsonb(clients)",
                &[&m.client_id, &(m.slot == Slot::Alt1), &phone],
            )
            .await?
            .get(0),
    };
    upsert_link(
        tx,
        provider,
        m.client_id,
        m.slot,
        &c.remote_id,
        &snapshot,
        c.version,
    )
    .await?;
    audit(
        tx,
        "clients",
        m.client_id,
        "UPDATE",
        Some(&m.before),
        Some(&after),
        provider,
        event_id,
        "applied",
    )
    .await?;
    Ok(Applied::Updated(m.client_id))
}

/// A remote contact was deleted: the client stays (the phone system is not
/// the record of who a client is), its link to that contact is cleared.
pub async fn unlink_contact(
    tx: &Transaction<'_>,
    provider: ProviderName,
    remote_id: &str,
    event_id: i64,
) -> Result<Applied, DbError> {
    let Some(m) = find_client(tx, provider, remote_id, None, None).await? else {
        return Ok(Applied::Ignored(format!(
            "no local client is linked to contact {remote_id}"
        )));
    };
    let after: Value = tx
        .query_one(
            "UPDATE clients SET
                 openphone_contact_id = CASE WHEN openphone_contact_id = $2 THEN NULL ELSE openphone_contact_id END,
                 openphone_alt_contact_1_id = CASE WHEN openphone_alt_contact_1_id = $2 THEN NULL ELSE openphone_alt_contact_1_id END,
                 openphone_alt_contact_2_id = CASE WHEN openphone_alt_contact_2_id = $2 THEN NULL ELSE openphone_alt_contact_2_id END,
                 last_synced_at = now()
             WHERE id = $1 RETURNING to_jsonb(clients)",
            &[&m.client_id, &remote_id],
        )
        .await?
        .get(0);
    tx.execute(
        "UPDATE sync_links SET deleted_at = now(), updated_at = now()
         WHERE provider = $1 AND entity_type = 'clients' AND remote_id = $2",
        &[&provider.as_str(), &remote_id],
    )
    .await?;
    audit(
        tx,
        "clients",
        m.client_id,
        "UNLINK",
        Some(&m.before),
        Some(&after),
        provider,
        event_id,
        "applied",
    )
    .await?;
    Ok(Applied::Updated(m.client_id))
}

async fn upsert_link(
    tx: &Transaction<'_>,
    provider: ProviderName,
    local_id: Uuid,
    slot: Slot,
    remote_id: &str,
    snapshot: &Value,
    version: DateTime<Utc>,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id, snapshot,
                                 remote_version, last_synced_at)
         VALUES ('clients', $1, $2, $3, $4, $5, $6, now())
         ON CONFLICT (entity_type, local_id, provider, slot) DO UPDATE SET
             remote_id = EXCLUDED.remote_id, snapshot = EXCLUDED.snapshot,
             remote_version = EXCLUDED.remote_version, last_synced_at = now(),
             deleted_at = NULL, updated_at = now()",
        &[
            &local_id,
            &provider.as_str(),
            &slot.as_str(),
            &remote_id,
            snapshot,
            &version,
        ],
    )
    .await?;
    Ok(())
}

/// The fields whose values differ between two row images.
fn changed_fields(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    let empty = serde_json::Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let mut out: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .filter(|k| k != "updated_at")
        .collect();
    out.sort();
    out
}

#[allow(clippy::too_many_arguments)]
async fn audit(
    tx: &Transaction<'_>,
    entity_type: &str,
    entity_id: Uuid,
    operation: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    provider: ProviderName,
    event_id: i64,
    decision: &str,
) -> Result<(), DbError> {
    let fields = changed_fields(before, after);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sync_audit_log (entity_type, entity_id, operation, old_data, new_data,
                 changed_fields, sync_source, sync_destination, event_id, decision)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'local', $8, $9)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &entity_type,
            &entity_id,
            &operation,
            &before,
            &after,
            &fields,
            &provider.as_str(),
            &event_id,
            &decision,
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_fields_diff_both_ways_and_ignore_updated_at() {
        let b = json!({"a": 1, "b": 2, "gone": 1, "updated_at": "x"});
        let a = json!({"a": 1, "b": 3, "new": 1, "updated_at": "y"});
        assert_eq!(changed_fields(Some(&b), Some(&a)), vec!["b", "gone", "new"]);
        assert_eq!(changed_fields(None, Some(&json!({"a": 1}))), vec!["a"]);
    }
}
