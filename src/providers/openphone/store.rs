//! OpenPhone's writes when the router applies its domain events: calls and
//! messages upserted into `communications` (linked to clients by E.164
//! phone), contact changes applied to `clients` through the conflict
//! engine, each with its audit row in the same statement or transaction.
//! Every function here runs inside the router's transaction, after it has
//! set `syncbridge.origin` to the event's provider.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use serde_json::{json, Value};
use uuid::Uuid;

use super::entities::CLIENTS;
use crate::apply::checked::Upserted;
use crate::apply::engine::{self, LinkState, LocalRow, RemoteRecord};
use crate::apply::Applied;
use crate::conflict::Rules;
use crate::db::DbError;
use crate::domain::ProviderName;
use crate::events::{CallEvent, CallFacet, MessageEvent, RemoteContact};

/// The client whose phone (or alternate phone) is `party` (an E.164
/// expression): the oldest whose primary phone it is, else the oldest that
/// has it as an alternate. Calls and messages link by it
/// (`x.counterpart`), and the integrity check finds what it would link.
pub(crate) fn match_client(party: &str) -> String {
    format!(
        "coalesce(
            (SELECT c.id FROM clients c WHERE syncbridge_e164(c.phone) = {party}
             ORDER BY c.created_at LIMIT 1),
            (SELECT c.id FROM clients c
             WHERE syncbridge_e164(c.alt_phone_1) = {party} OR syncbridge_e164(c.alt_phone_2) = {party}
             ORDER BY c.created_at LIMIT 1))"
    )
}

/// Upserts calls by `openphone_call_id`, each with its audit row, in one
/// statement; `calls` name distinct calls, each with the inbox event it
/// comes from and the row id a new call gets. Lifecycle events overwrite a
/// call's state only when they are at least as new as the last one applied
/// (`openphone_event_timestamp`, which only lifecycle events set: a row
/// whose incoming timestamp is NULL is a facet event's); facet events
/// (recording, summary, transcript) fill their own columns and only fill
/// gaps in the rest. A call the guard holds back is not among the result.
pub async fn upsert_calls(
    tx: &impl GenericClient,
    calls: &[(&CallEvent, i64, Uuid)],
) -> Result<Vec<Upserted>, DbError> {
    // The update's "this is a lifecycle event" test, on EXCLUDED.
    const LIFE: &str = "EXCLUDED.openphone_event_timestamp IS NOT NULL";
    let match_client = match_client("x.counterpart");
    let sql = format!(
        "WITH x AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::timestamptz[], $7::timestamptz[], $8::timestamptz[],
                                 $9::int[], $10::text[], $11::text[], $12::text[], $13::text[],
                                 $14::text[], $15::text[], $16::jsonb[], $17::timestamptz[],
                                 $18::text[], $19::bigint[], $20::uuid[])
                AS x(call_id, direction, from_number, to_number, status, occurred_at,
                     answered_at, completed_at, duration_seconds, conversation_id,
                     phone_number_id, user_id, recording_url, voicemail_url, summary,
                     transcript, lifecycle_at, counterpart, event_id, new_id)
         ), up AS (
            INSERT INTO communications AS c
                (id, channel, source, openphone_call_id, direction, from_number, to_number,
                 status, occurred_at, answered_at, completed_at, duration_seconds,
                 openphone_conversation_id, openphone_phone_number_id, openphone_user_id,
                 recording_url, voicemail_url, summary, transcript,
                 openphone_event_timestamp, client_id)
            SELECT x.new_id, 'call', 'Quo', x.call_id, x.direction, x.from_number, x.to_number,
                   x.status, x.occurred_at, x.answered_at, x.completed_at, x.duration_seconds,
                   x.conversation_id, x.phone_number_id, x.user_id, x.recording_url,
                   x.voicemail_url, x.summary, x.transcript, x.lifecycle_at, {match_client}
            FROM x
            ON CONFLICT (openphone_call_id) DO UPDATE SET
                direction        = CASE WHEN {LIFE} THEN COALESCE(EXCLUDED.direction, c.direction) ELSE COALESCE(c.direction, EXCLUDED.direction) END,
                from_number      = CASE WHEN {LIFE} THEN COALESCE(EXCLUDED.from_number, c.from_number) ELSE COALESCE(c.from_number, EXCLUDED.from_number) END,
                to_number        = CASE WHEN {LIFE} THEN COALESCE(EXCLUDED.to_number, c.to_number) ELSE COALESCE(c.to_number, EXCLUDED.to_number) END,
                status           = CASE WHEN {LIFE} THEN COALESCE(EXCLUDED.status, c.status) ELSE COALESCE(c.status, EXCLUDED.status) END,
                occurred_at      = COALESCE(c.occurred_at, EXCLUDED.occurred_at),
                answered_at      = COALESCE(EXCLUDED.answered_at, c.answered_at),
                completed_at     = COALESCE(EXCLUDED.completed_at, c.completed_at),
                duration_seconds = CASE WHEN {LIFE} THEN COALESCE(EXCLUDED.duration_seconds, c.duration_seconds) ELSE COALESCE(c.duration_seconds, EXCLUDED.duration_seconds) END,
                openphone_conversation_id = COALESCE(c.openphone_conversation_id, EXCLUDED.openphone_conversation_id),
                openphone_phone_number_id = COALESCE(c.openphone_phone_number_id, EXCLUDED.openphone_phone_number_id),
                openphone_user_id = COALESCE(c.openphone_user_id, EXCLUDED.openphone_user_id),
                recording_url    = COALESCE(EXCLUDED.recording_url, c.recording_url),
                voicemail_url    = COALESCE(EXCLUDED.voicemail_url, c.voicemail_url),
                summary          = COALESCE(EXCLUDED.summary, c.summary),
                transcript       = COALESCE(EXCLUDED.transcript, c.transcript),
                openphone_event_timestamp = COALESCE(EXCLUDED.openphone_event_timestamp, c.openphone_event_timestamp),
                client_id        = COALESCE(c.client_id, EXCLUDED.client_id)
            WHERE NOT {LIFE} OR c.openphone_event_timestamp IS NULL
               OR c.openphone_event_timestamp <= EXCLUDED.openphone_event_timestamp
            RETURNING c.*, (xmax = 0) AS inserted
         ), audit AS (
            INSERT INTO sync_audit_log
                (entity_type, entity_id, operation, new_data, sync_source, sync_destination, event_id, decision)
            SELECT 'communications', up.id, CASE WHEN up.inserted THEN 'INSERT' ELSE 'UPDATE' END,
                   to_jsonb(up) - 'inserted', 'openphone', 'local', x.event_id, 'applied'
            FROM up JOIN x ON x.call_id = up.openphone_call_id
            ORDER BY x.event_id
         )
         SELECT openphone_call_id, id, inserted FROM up"
    );
    let mut cols = CallColumns::default();
    for (ev, event_id, new_id) in calls {
        cols.push(ev, *event_id, *new_id);
    }
    let stmt = tx.prepare_cached(&sql).await?;
    let c = &cols;
    let rows = tx
        .query(
            &stmt,
            &[
                &c.call_id,
                &c.direction,
                &c.from,
                &c.to,
                &c.status,
                &c.occurred_at,
                &c.answered_at,
                &c.completed_at,
                &c.duration_seconds,
                &c.conversation_id,
                &c.phone_number_id,
                &c.user_id,
                &c.recording_url,
                &c.voicemail_url,
                &c.summary,
                &c.transcript,
                &c.lifecycle_at,
                &c.counterpart,
                &c.event_id,
                &c.new_id,
            ],
        )
        .await?;
    Ok(rows.iter().map(Upserted::from_row).collect())
}

/// [`upsert_calls`]' parameters, one array a column.
#[derive(Default)]
struct CallColumns<'a> {
    call_id: Vec<&'a str>,
    direction: Vec<Option<&'static str>>,
    from: Vec<Option<&'a str>>,
    to: Vec<Option<&'a str>>,
    status: Vec<Option<&'a str>>,
    occurred_at: Vec<Option<DateTime<Utc>>>,
    answered_at: Vec<Option<DateTime<Utc>>>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    duration_seconds: Vec<Option<i32>>,
    conversation_id: Vec<Option<&'a str>>,
    phone_number_id: Vec<Option<&'a str>>,
    user_id: Vec<Option<&'a str>>,
    recording_url: Vec<Option<&'a str>>,
    voicemail_url: Vec<Option<&'a str>>,
    summary: Vec<Option<&'a str>>,
    transcript: Vec<Option<&'a Value>>,
    lifecycle_at: Vec<Option<DateTime<Utc>>>,
    counterpart: Vec<Option<&'a str>>,
    event_id: Vec<i64>,
    new_id: Vec<Uuid>,
}

impl<'a> CallColumns<'a> {
    fn push(&mut self, ev: &'a CallEvent, event_id: i64, new_id: Uuid) {
        let (summary, transcript) = match &ev.facet {
            CallFacet::Summary(s) => (Some(s.as_str()), None),
            CallFacet::Transcript(t) => (None, Some(t)),
            _ => (None, None),
        };
        let lifecycle = matches!(ev.facet, CallFacet::Lifecycle);
        self.call_id.push(&ev.call_id);
        self.direction.push(ev.direction.map(|d| d.as_str()));
        self.from.push(ev.from.as_deref());
        self.to.push(ev.to.as_deref());
        self.status.push(ev.status.as_deref());
        self.occurred_at.push(ev.started_at.or(Some(ev.event_at)));
        self.answered_at.push(ev.answered_at);
        self.completed_at.push(ev.completed_at);
        self.duration_seconds.push(ev.duration_seconds);
        self.conversation_id.push(ev.conversation_id.as_deref());
        self.phone_number_id.push(ev.phone_number_id.as_deref());
        self.user_id.push(ev.user_id.as_deref());
        self.recording_url.push(ev.recording_url.as_deref());
        self.voicemail_url.push(ev.voicemail_url.as_deref());
        self.summary.push(summary);
        self.transcript.push(transcript);
        self.lifecycle_at.push(lifecycle.then_some(ev.event_at));
        self.counterpart
            .push(ev.counterpart.as_ref().map(|p| p.as_str()));
        self.event_id.push(event_id);
        self.new_id.push(new_id);
    }
}

/// Upserts one call ([`upsert_calls`] of one).
pub async fn upsert_call(
    tx: &Transaction<'_>,
    ev: &CallEvent,
    event_id: i64,
) -> Result<Applied, DbError> {
    let written = upsert_calls(tx, &[(ev, event_id, Uuid::new_v4())]).await?;
    Ok(Upserted::single(written, || {
        format!("call {} already has a newer event applied", ev.call_id)
    }))
}

/// Upserts messages by `openphone_message_id`, each with its audit row, in
/// one statement, newest event wins; `messages` name distinct messages,
/// each with the inbox event it comes from and the row id a new message
/// gets. A message the guard holds back is not among the result.
pub async fn upsert_messages(
    tx: &impl GenericClient,
    messages: &[(&MessageEvent, i64, Uuid)],
) -> Result<Vec<Upserted>, DbError> {
    let match_client = match_client("x.counterpart");
    let sql = format!(
        "WITH x AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::timestamptz[], $8::text[], $9::text[],
                                 $10::text[], $11::timestamptz[], $12::text[], $13::bigint[],
                                 $14::uuid[])
                AS x(message_id, direction, from_number, to_number, body, status, occurred_at,
                     conversation_id, phone_number_id, user_id, event_at, counterpart,
                     event_id, new_id)
         ), up AS (
            INSERT INTO communications AS c
                (id, channel, source, openphone_message_id, direction, from_number, to_number,
                 body, status, occurred_at, openphone_conversation_id,
                 openphone_phone_number_id, openphone_user_id, openphone_event_timestamp,
                 client_id)
            SELECT x.new_id, 'message', 'Quo', x.message_id, x.direction, x.from_number,
                   x.to_number, x.body, x.status, x.occurred_at, x.conversation_id,
                   x.phone_number_id, x.user_id, x.event_at, {match_client}
            FROM x
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
            SELECT 'communications', up.id, CASE WHEN up.inserted THEN 'INSERT' ELSE 'UPDATE' END,
                   to_jsonb(up) - 'inserted', 'openphone', 'local', x.event_id, 'applied'
            FROM up JOIN x ON x.message_id = up.openphone_message_id
            ORDER BY x.event_id
         )
         SELECT openphone_message_id, id, inserted FROM up"
    );
    let n = messages.len();
    let col = |f: fn(&MessageEvent) -> Option<&str>| -> Vec<Option<&str>> {
        messages.iter().map(|(m, _, _)| f(m)).collect()
    };
    let ids: Vec<&str> = messages
        .iter()
        .map(|(m, _, _)| m.message_id.as_str())
        .collect();
    let direction: Vec<Option<&str>> = messages
        .iter()
        .map(|(m, _, _)| m.direction.map(|d| d.as_str()))
        .collect();
    let occurred: Vec<Option<DateTime<Utc>>> = messages
        .iter()
        .map(|(m, _, _)| m.sent_at.or(Some(m.event_at)))
        .collect();
    let event_at: Vec<DateTime<Utc>> = messages.iter().map(|(m, _, _)| m.event_at).collect();
    let counterpart = col(|m| m.counterpart.as_ref().map(|p| p.as_str()));
    let mut event_ids = Vec::with_capacity(n);
    let mut new_ids = Vec::with_capacity(n);
    for (_, e, id) in messages {
        event_ids.push(*e);
        new_ids.push(*id);
    }
    let stmt = tx.prepare_cached(&sql).await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &ids,
                &direction,
                &col(|m| m.from.as_deref()),
                &col(|m| m.to.as_deref()),
                &col(|m| m.text.as_deref()),
                &col(|m| m.status.as_deref()),
                &occurred,
                &col(|m| m.conversation_id.as_deref()),
                &col(|m| m.phone_number_id.as_deref()),
                &col(|m| m.user_id.as_deref()),
                &event_at,
                &counterpart,
                &event_ids,
                &new_ids,
            ],
        )
        .await?;
    Ok(rows.iter().map(Upserted::from_row).collect())
}

/// Upserts one message ([`upsert_messages`] of one).
pub async fn upsert_message(
    tx: &Transaction<'_>,
    ev: &MessageEvent,
    event_id: i64,
) -> Result<Applied, DbError> {
    let written = upsert_messages(tx, &[(ev, event_id, Uuid::new_v4())]).await?;
    Ok(Upserted::single(written, || {
        format!(
            "message {} already has a newer event applied",
            ev.message_id
        )
    }))
}

/// Which OpenPhone contact of a client a remote contact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Slot {
    Primary,
    Alt1,
    Alt2,
}

impl Slot {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Slot::Primary => "primary",
            Slot::Alt1 => "alt_1",
            Slot::Alt2 => "alt_2",
        }
    }

    /// The `clients` column holding this contact's number.
    pub(crate) fn phone_column(self) -> &'static str {
        match self {
            Slot::Primary => "phone",
            Slot::Alt1 => "alt_phone_1",
            Slot::Alt2 => "alt_phone_2",
        }
    }

    pub(crate) fn parse(s: &str) -> Slot {
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
    link: Option<LinkState>,
    before: Value,
    updated_at: DateTime<Utc>,
}

/// Finds (and locks) the client a remote contact belongs to: through the
/// link table, the contact-id columns, the external id (which syncbridge
/// sets to the client id), or finally the contact's phone number.
///
/// The link is read again once the client is locked: whoever changes a
/// link (the dispatcher after a push, another router) holds its client's
/// lock, so only the read after the lock sees the snapshot this decision
/// must start from.
async fn find_client(
    tx: &Transaction<'_>,
    provider: ProviderName,
    remote_id: &str,
    external_id: Option<&str>,
    phone: Option<&str>,
) -> Result<Option<LocalMatch>, DbError> {
    let external = external_id.and_then(|s| Uuid::parse_str(s).ok());
    let stmt = tx
        .prepare_cached(
            "WITH l AS (
                 SELECT local_id FROM sync_links
                 WHERE provider = $1 AND entity_type = 'clients' AND remote_id = $2
                   AND deleted_at IS NULL
             )
             SELECT id,
                    CASE WHEN openphone_alt_contact_1_id = $2 THEN 'alt_1'
                         WHEN openphone_alt_contact_2_id = $2 THEN 'alt_2'
                         ELSE 'primary' END,
                    to_jsonb(c), updated_at
             FROM clients c
             WHERE id = (SELECT local_id FROM l)
                OR openphone_contact_id = $2
                OR openphone_alt_contact_1_id = $2 OR openphone_alt_contact_2_id = $2
                OR id = $3
                OR ($4::text IS NOT NULL AND syncbridge_e164(phone) = $4
                    AND openphone_contact_id IS NULL)
             ORDER BY (id = (SELECT local_id FROM l)) IS TRUE DESC,
                      (openphone_contact_id = $2) IS TRUE DESC,
                      (openphone_alt_contact_1_id = $2 OR openphone_alt_contact_2_id = $2) IS TRUE DESC,
                      (id = $3) IS TRUE DESC, created_at
             LIMIT 1
             FOR NO KEY UPDATE",
        )
        .await?;
    let Some(row) = tx
        .query_opt(&stmt, &[&provider.as_str(), &remote_id, &external, &phone])
        .await?
    else {
        return Ok(None);
    };
    let client_id: Uuid = row.get(0);
    let stmt = tx
        .prepare_cached(
            "SELECT local_id, slot, remote_version, snapshot FROM sync_links
             WHERE provider = $1 AND entity_type = 'clients' AND remote_id = $2
               AND deleted_at IS NULL",
        )
        .await?;
    // A link to another client (left by a deleted one, or moved meanwhile)
    // is not this client's history.
    let link = tx
        .query_opt(&stmt, &[&provider.as_str(), &remote_id])
        .await?
        .filter(|l| l.get::<_, Uuid>(0) == client_id);
    Ok(Some(LocalMatch {
        client_id,
        slot: Slot::parse(match &link {
            Some(l) => l.get(1),
            None => row.get(1),
        }),
        link: link.as_ref().map(|l| LinkState {
            snapshot: l.get(3),
            remote_version: l.get(2),
        }),
        before: row.get(2),
        updated_at: row.get(3),
    }))
}

/// Applies a remote contact to `clients` through the conflict engine
/// (`db::engine::reconcile`, rules for entity `clients`): the contact's
/// fields are compared with the client's and the last-synced snapshot, and
/// what the rules decide is written (SPEC §2.4). Unknown contacts become
/// new clients.
pub async fn apply_contact(
    tx: &Transaction<'_>,
    rules: &Rules,
    provider: ProviderName,
    c: &RemoteContact,
    event_id: i64,
) -> Result<Applied, DbError> {
    let phone = c.phone.as_ref().map(|p| p.as_str());
    let found = find_client(tx, provider, &c.remote_id, c.external_id.as_deref(), phone).await?;

    let Some(m) = found else {
        let NewClient { id, row: after, .. } = insert_client(tx, c).await?;
        let remote = RemoteRecord {
            provider,
            slot: Slot::Primary.as_str(),
            remote_id: &c.remote_id,
            fields: c.local_fields(Slot::Primary.phone_column()),
            version: c.version,
        };
        engine::upsert_link(
            tx,
            &CLIENTS,
            id,
            &remote,
            &Value::Object(remote.fields.clone()),
        )
        .await?;
        let detail = json!({"remote": remote.fields, "after": after});
        engine::audit(
            tx,
            "clients",
            id,
            "INSERT",
            provider,
            Some(event_id),
            "applied",
            &detail,
            &remote.fields.keys().cloned().collect::<Vec<_>>(),
        )
        .await?;
        return Ok(Applied::Inserted(id));
    };

    let remote = RemoteRecord {
        provider,
        slot: m.slot.as_str(),
        remote_id: &c.remote_id,
        fields: c.local_fields(m.slot.phone_column()),
        version: c.version,
    };
    let local = LocalRow {
        id: m.client_id,
        row: m.before,
        changed_at: m.updated_at,
    };
    let applied = engine::reconcile(
        tx,
        rules,
        &CLIENTS,
        &local,
        m.link.as_ref(),
        &remote,
        Some(event_id),
    )
    .await?;
    if m.slot == Slot::Primary {
        // Found by phone or external id: remember the contact on the client.
        let stmt = tx
            .prepare_cached(
                "UPDATE clients SET openphone_contact_id = $2
                 WHERE id = $1 AND openphone_contact_id IS DISTINCT FROM $2",
            )
            .await?;
        tx.execute(&stmt, &[&m.client_id, &c.remote_id]).await?;
    }
    Ok(applied)
}

/// A client created from a contact no client matched.
pub(crate) struct NewClient {
    pub id: Uuid,
    /// `to_jsonb(clients)` of the new row.
    pub row: Value,
    pub updated_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Inserts a new, synced client holding the contact's fields, remembering
/// the contact as its primary OpenPhone contact.
pub(crate) async fn insert_client(
    tx: &impl GenericClient,
    c: &RemoteContact,
) -> Result<NewClient, DbError> {
    let phone = c.phone.as_ref().map(|p| p.as_str());
    let stmt = tx
        .prepare_cached(
            "INSERT INTO clients (first_name, last_name, company, email, phone,
                                  openphone_contact_id, last_synced_at, sync_status)
             VALUES ($1, $2, $3, $4, $5, $6, now(), 'synced')
             RETURNING id, to_jsonb(clients), updated_at, created_at",
        )
        .await?;
    let row = tx
        .query_one(
            &stmt,
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
    Ok(NewClient {
        id: row.get(0),
        row: row.get(1),
        updated_at: row.get(2),
        created_at: row.get(3),
    })
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
    let detail = json!({"local": m.before, "after": after, "remote_id": remote_id});
    engine::audit(
        tx,
        "clients",
        m.client_id,
        "UNLINK",
        provider,
        Some(event_id),
        "applied",
        &detail,
        &[],
    )
    .await?;
    Ok(Applied::Updated(m.client_id))
}
