//! The router's set-based path for a batch's contact events.
//!
//! Applying a contact one statement at a time costs ~100–150 µs of server
//! time per statement (partition routing of the audit insert, index upkeep,
//! per-statement setup), six statements an event. Here a batch reads every
//! link and candidate client it needs in two statements (locking the
//! clients), decides each event in memory with the same
//! [`engine::decide`] and the same matching rules as
//! [`super::store::apply_contact`], keeps the state each decision leaves for
//! the next event of the same record, and writes the results in four
//! statements: the client updates, the links, the queued pushes, the audit
//! rows. Rare cases — a new contact, a `manual` conflict — are written at
//! once, as the one-at-a-time path does.
//!
//! The router uses it only in its optimistic pass: if anything fails, the
//! batch is rolled back and re-applied one event at a time with a savepoint
//! each, so the two paths must decide alike.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::comms::CommsBatch;
use super::entities::CLIENTS;
use super::store::{insert_client, Slot};
use crate::apply::engine::{self, Action, Conflict, LinkState, LocalRow, RemoteRecord};
use crate::apply::Applied;
use crate::conflict::Rules;
use crate::db::DbError;
use crate::domain::{E164Phone, ProviderName};
use crate::events::DomainEvent;
use crate::events::RemoteContact;
use crate::providers::{ApplyCtx, BatchApplyFuture, BatchWrites, FlushFuture};

struct Cached {
    row: Value,
    changed_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

#[derive(Default)]
struct PendingUpdate {
    values: Map<String, Value>,
    status: Option<&'static str>,
    contact_id: Option<String>,
}

struct LinkWrite {
    slot: Slot,
    remote_id: String,
    snapshot: Value,
    version: DateTime<Utc>,
}

pub struct ContactBatch {
    provider: ProviderName,
    /// The transaction's time: what `updated_at` becomes on a write.
    now: DateTime<Utc>,
    clients: HashMap<Uuid, Cached>,
    /// Links by remote id, as this batch leaves them.
    links: HashMap<String, (Uuid, Slot, LinkState)>,
    updates: HashMap<Uuid, PendingUpdate>,
    link_writes: HashMap<(Uuid, Slot), LinkWrite>,
    audits: Vec<Value>,
    pushes: Vec<Uuid>,
    /// Remote ids whose link names a client that no longer exists.
    dangling: Vec<String>,
    /// The E.164 numbers a pending update moves a phone column from or to:
    /// a call or message with one of them as its counterpart would match
    /// another client once the updates are written.
    phones_moving: HashSet<String>,
    /// A pending update moves a phone column from or to a value that does
    /// not parse as a number: every call and message waits for the flush.
    phone_unparsed: bool,
}

/// The columns calls and messages match clients by (`store::match_client`).
const PHONE_COLUMNS: [&str; 3] = ["phone", "alt_phone_1", "alt_phone_2"];

/// Notes in `moving` the numbers an update of `before` with `values`
/// moves phone columns between (`unparsed` when one is not a number).
fn note_phone_moves(
    moving: &mut HashSet<String>,
    unparsed: &mut bool,
    before: &Value,
    values: &Map<String, Value>,
) {
    for col in PHONE_COLUMNS {
        let Some(new) = values.get(col) else {
            continue;
        };
        let old = before.get(col).unwrap_or(&Value::Null);
        if old == new {
            continue;
        }
        for v in [old, new] {
            if let Some(s) = v.as_str().map(str::trim).filter(|s| !s.is_empty()) {
                match E164Phone::parse(s) {
                    Some(p) => {
                        moving.insert(p.as_str().to_owned());
                    }
                    None => *unparsed = true,
                }
            }
        }
    }
}

impl ContactBatch {
    /// Reads the links and locks the clients the batch's contacts may
    /// belong to.
    pub async fn prefetch(
        tx: &impl GenericClient,
        provider: ProviderName,
        contacts: &[&RemoteContact],
    ) -> Result<ContactBatch, DbError> {
        let remote_ids: Vec<&str> = contacts.iter().map(|c| c.remote_id.as_str()).collect();
        let phones: Vec<Option<&str>> = contacts
            .iter()
            .map(|c| c.phone.as_ref().map(E164Phone::as_str))
            .collect();
        let ids: Vec<Uuid> = contacts
            .iter()
            .filter_map(|c| c.external_id.as_deref())
            .filter_map(|s| Uuid::parse_str(s).ok())
            .collect();
        // Clients first, links after: whoever changes a link (the
        // dispatcher after a push, another router) holds its client's lock,
        // so links read once the clients are locked are the ones to decide
        // from. Locked in id order, as every batch does. A contact whose
        // link names an existing client needs nothing else (`find` stops
        // there); only the others are looked for by contact id and phone.
        let stmt = tx.prepare_cached(&prefetch_sql()).await?;
        let rows = tx
            .query(&stmt, &[&ids, &remote_ids, &phones, &provider.as_str()])
            .await?;
        let stmt = tx
            .prepare_cached(
                "SELECT remote_id, local_id, slot, snapshot, remote_version, now() FROM sync_links
                 WHERE provider = $1 AND entity_type = 'clients' AND remote_id = ANY($2)
                   AND deleted_at IS NULL",
            )
            .await?;
        let link_rows = tx.query(&stmt, &[&provider.as_str(), &remote_ids]).await?;
        let mut links = HashMap::new();
        for r in &link_rows {
            links.insert(
                r.get::<_, String>(0),
                (
                    r.get::<_, Uuid>(1),
                    Slot::parse(r.get(2)),
                    LinkState {
                        snapshot: r.get(3),
                        remote_version: r.get(4),
                    },
                ),
            );
        }
        let mut now = None;
        let clients = rows
            .iter()
            .map(|r| {
                now = Some(r.get(4));
                (
                    r.get(0),
                    Cached {
                        row: r.get(1),
                        changed_at: r.get(2),
                        created_at: r.get(3),
                    },
                )
            })
            .collect();
        let clients: HashMap<Uuid, Cached> = clients;
        // A link whose client is not among the locked ones names a client
        // that no longer exists (a live one would have been locked through
        // `linked`).
        let dangling = links
            .iter()
            .filter(|(_, (local, _, _))| !clients.contains_key(local))
            .map(|(remote_id, _)| remote_id.clone())
            .collect();
        let now = match now.or_else(|| link_rows.first().map(|r| r.get(5))) {
            Some(t) => t,
            None => tx.query_one("SELECT now()", &[]).await?.get(0),
        };
        Ok(ContactBatch {
            provider,
            now,
            clients,
            links,
            updates: HashMap::new(),
            link_writes: HashMap::new(),
            audits: Vec::new(),
            pushes: Vec::new(),
            dangling,
            phones_moving: HashSet::new(),
            phone_unparsed: false,
        })
    }

    /// Whether writes are waiting for [`flush`](Self::flush).
    pub fn is_dirty(&self) -> bool {
        !self.updates.is_empty()
            || !self.link_writes.is_empty()
            || !self.audits.is_empty()
            || !self.pushes.is_empty()
    }

    /// Whether a call or message with this counterpart must see the
    /// pending client updates written first: one of them moves a phone
    /// column from or to its number. Updates to other columns leave its
    /// match (`store::match_client`: phone columns, then age) as it is.
    pub fn may_match(&self, counterpart: Option<&E164Phone>) -> bool {
        if self.updates.is_empty() {
            return false;
        }
        match counterpart {
            None => false,
            Some(p) => self.phone_unparsed || self.phones_moving.contains(p.as_str()),
        }
    }

    /// The client a contact belongs to, by the rules of
    /// `apply::find_client`: its link, a contact-id column (primary first),
    /// the external id, then an unlinked client with its phone number.
    fn find(&self, c: &RemoteContact) -> Option<(Uuid, Slot, Option<LinkState>)> {
        if let Some((id, slot, link)) = self.links.get(&c.remote_id) {
            if self.clients.contains_key(id) {
                return Some((*id, *slot, Some(link.clone())));
            }
        }
        let external = c
            .external_id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok());
        let phone = c.phone.as_ref().map(E164Phone::as_str);
        let text = |row: &Value, k: &str| row.get(k).and_then(Value::as_str).map(str::to_owned);
        self.clients
            .iter()
            .filter_map(|(id, cached)| {
                let row = &cached.row;
                let primary = text(row, "openphone_contact_id");
                let rank = if primary.as_deref() == Some(c.remote_id.as_str()) {
                    0
                } else if text(row, "openphone_alt_contact_1_id").as_deref()
                    == Some(c.remote_id.as_str())
                    || text(row, "openphone_alt_contact_2_id").as_deref()
                        == Some(c.remote_id.as_str())
                {
                    1
                } else if external == Some(*id) {
                    2
                } else if phone.is_some()
                    && primary.is_none()
                    && text(row, "phone")
                        .as_deref()
                        .and_then(E164Phone::parse)
                        .as_ref()
                        .map(E164Phone::as_str)
                        == phone
                {
                    3
                } else {
                    return None;
                };
                Some((rank, cached.created_at, *id))
            })
            .min()
            .map(|(_, _, id)| {
                let row = &self.clients[&id].row;
                let slot = if text(row, "openphone_alt_contact_1_id").as_deref()
                    == Some(c.remote_id.as_str())
                {
                    Slot::Alt1
                } else if text(row, "openphone_alt_contact_2_id").as_deref()
                    == Some(c.remote_id.as_str())
                {
                    Slot::Alt2
                } else {
                    Slot::Primary
                };
                (id, slot, None)
            })
    }

    /// Applies one contact event: decided now, written at [`flush`](Self::flush).
    /// What it writes at once (a new client, a conflict) is written after
    /// the calls and messages pending in `comms`, which came before it.
    pub async fn apply(
        &mut self,
        tx: &impl GenericClient,
        rules: &Rules,
        c: &RemoteContact,
        event_id: i64,
        comms: &mut CommsBatch,
    ) -> Result<Applied, DbError> {
        let Some((id, slot, link)) = self.find(c) else {
            comms.flush(tx).await?;
            return self.insert(tx, c, event_id).await;
        };
        let remote = RemoteRecord {
            provider: self.provider,
            slot: slot.as_str(),
            remote_id: &c.remote_id,
            fields: c.local_fields(slot.phone_column()),
            version: c.version,
        };
        let cached = &self.clients[&id];
        let local = LocalRow {
            id,
            row: cached.row.clone(),
            changed_at: cached.changed_at,
        };
        let decision = engine::decide(rules, &CLIENTS, &local, link.as_ref(), &remote);
        let mut audit = decision.audit;
        let mut applied = decision.applied;
        match decision.action {
            Action::Stale => {}
            Action::Conflict {
                fields,
                remote_fields,
                local_fields,
                base,
            } => {
                // Rare: written at once, after what is pending.
                comms.flush(tx).await?;
                self.flush(tx).await?;
                applied = engine::write_conflict(
                    tx,
                    &CLIENTS,
                    &local,
                    &remote,
                    &Conflict {
                        fields: &fields,
                        remote_fields: &remote_fields,
                        local_fields: &local_fields,
                        base: base.as_ref(),
                    },
                    &mut audit,
                    Some(event_id),
                )
                .await?;
                if let Some(cached) = self.clients.get_mut(&id) {
                    cached.row["sync_status"] = json!("conflict");
                }
                let state = LinkState {
                    snapshot: link.and_then(|l| l.snapshot),
                    remote_version: Some(c.version),
                };
                self.links.insert(c.remote_id.clone(), (id, slot, state));
            }
            Action::Apply {
                values,
                status,
                snapshot,
                push,
            } => {
                let set_contact_id = slot == Slot::Primary
                    && local
                        .row
                        .get("openphone_contact_id")
                        .and_then(Value::as_str)
                        != Some(c.remote_id.as_str());
                let wrote_values = !values.is_empty();
                if wrote_values || set_contact_id {
                    if let Some(cached) = self.clients.get(&id) {
                        note_phone_moves(
                            &mut self.phones_moving,
                            &mut self.phone_unparsed,
                            &cached.row,
                            &values,
                        );
                    }
                    let pending = self.updates.entry(id).or_default();
                    if wrote_values {
                        pending.values.extend(values.clone());
                        pending.status = Some(status);
                    }
                    if set_contact_id {
                        pending.contact_id = Some(c.remote_id.clone());
                    }
                    let now = self.now;
                    if let Some(cached) = self.clients.get_mut(&id) {
                        if let Some(obj) = cached.row.as_object_mut() {
                            obj.extend(values);
                            if wrote_values {
                                obj.insert("sync_status".into(), json!(status));
                            }
                            if set_contact_id {
                                obj.insert("openphone_contact_id".into(), json!(c.remote_id));
                            }
                        }
                        cached.changed_at = now;
                    }
                }
                let snapshot = Value::Object(snapshot);
                self.links.insert(
                    c.remote_id.clone(),
                    (
                        id,
                        slot,
                        LinkState {
                            snapshot: Some(snapshot.clone()),
                            remote_version: Some(c.version),
                        },
                    ),
                );
                self.link_writes.insert(
                    (id, slot),
                    LinkWrite {
                        slot,
                        remote_id: c.remote_id.clone(),
                        snapshot,
                        version: c.version,
                    },
                );
                if push && !self.pushes.contains(&id) {
                    self.pushes.push(id);
                }
            }
        }
        self.audits.push(json!({
            "entity_id": id, "operation": audit.operation, "decision": audit.decision,
            "detail": audit.detail, "changed": audit.changed, "event_id": event_id,
        }));
        Ok(applied)
    }

    /// A contact no client matches becomes a new client (written at once).
    async fn insert(
        &mut self,
        tx: &impl GenericClient,
        c: &RemoteContact,
        event_id: i64,
    ) -> Result<Applied, DbError> {
        let new = insert_client(tx, c).await?;
        let (id, after) = (new.id, new.row);
        let fields = c.local_fields(Slot::Primary.phone_column());
        let snapshot = Value::Object(fields.clone());
        self.clients.insert(
            id,
            Cached {
                row: after.clone(),
                changed_at: new.updated_at,
                created_at: new.created_at,
            },
        );
        self.links.insert(
            c.remote_id.clone(),
            (
                id,
                Slot::Primary,
                LinkState {
                    snapshot: Some(snapshot.clone()),
                    remote_version: Some(c.version),
                },
            ),
        );
        self.link_writes.insert(
            (id, Slot::Primary),
            LinkWrite {
                slot: Slot::Primary,
                remote_id: c.remote_id.clone(),
                snapshot,
                version: c.version,
            },
        );
        self.audits.push(json!({
            "entity_id": id, "operation": "INSERT", "decision": "applied",
            "detail": {"remote": fields, "after": after},
            "changed": fields.keys().collect::<Vec<_>>(), "event_id": event_id,
        }));
        Ok(Applied::Inserted(id))
    }

    /// Writes everything pending: client updates, links, pushes, audit rows.
    pub async fn flush(&mut self, tx: &impl GenericClient) -> Result<(), DbError> {
        self.phones_moving.clear();
        self.phone_unparsed = false;
        if !self.updates.is_empty() {
            let rows: Vec<Value> = self
                .updates
                .drain()
                .map(|(id, u)| {
                    json!({"id": id, "v": u.values, "status": u.status, "cid": u.contact_id})
                })
                .collect();
            let stmt = tx.prepare_cached(&update_sql()).await?;
            tx.execute(&stmt, &[&Value::Array(rows)]).await?;
        }
        if !self.dangling.is_empty() {
            // Links naming clients that no longer exist (deleted while no
            // push closed them): taken over by the links written next.
            let remote_ids = std::mem::take(&mut self.dangling);
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM sync_links l
                     WHERE l.provider = $1 AND l.entity_type = 'clients' AND l.remote_id = ANY($2)
                       AND NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = l.local_id)",
                )
                .await?;
            tx.execute(&stmt, &[&self.provider.as_str(), &remote_ids])
                .await?;
        }
        if !self.link_writes.is_empty() {
            let rows: Vec<Value> = self
                .link_writes
                .drain()
                .map(|((id, _), l)| {
                    json!({"local_id": id, "slot": l.slot.as_str(), "remote_id": l.remote_id,
                           "snapshot": l.snapshot, "remote_version": l.version})
                })
                .collect();
            let stmt = tx
                .prepare_cached(
                    // Existing links are updated in place (no speculative
                    // insertion, no extra row lock); the rest inserted.
                    "WITH x AS (
                         SELECT * FROM jsonb_to_recordset($1) AS x(local_id uuid, slot text,
                             remote_id text, snapshot jsonb, remote_version timestamptz)
                     ), updated AS (
                         UPDATE sync_links l SET
                             remote_id = x.remote_id, snapshot = x.snapshot,
                             remote_version = x.remote_version, last_synced_at = now(),
                             deleted_at = NULL, updated_at = now()
                         FROM x
                         WHERE l.entity_type = 'clients' AND l.local_id = x.local_id
                           AND l.provider = $2 AND l.slot = x.slot
                         RETURNING l.local_id, l.slot
                     )
                     INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id,
                                             snapshot, remote_version, last_synced_at)
                     SELECT 'clients', x.local_id, $2, x.slot, x.remote_id, x.snapshot,
                            x.remote_version, now()
                     FROM x
                     WHERE NOT EXISTS (SELECT 1 FROM updated u
                                       WHERE u.local_id = x.local_id AND u.slot = x.slot)
                     ON CONFLICT (entity_type, local_id, provider, slot) DO UPDATE SET
                         remote_id = EXCLUDED.remote_id, snapshot = EXCLUDED.snapshot,
                         remote_version = EXCLUDED.remote_version, last_synced_at = now(),
                         deleted_at = NULL, updated_at = now()",
                )
                .await?;
            tx.execute(&stmt, &[&Value::Array(rows), &self.provider.as_str()])
                .await?;
        }
        if !self.pushes.is_empty() {
            let ids = std::mem::take(&mut self.pushes);
            let stmt = tx
                .prepare_cached(
                    "WITH queued AS (
                         INSERT INTO sync_outbox (provider, table_name, record_id, operation, origin)
                         SELECT $1, 'clients', r, 'SYNC', 'syncbridge' FROM unnest($2::uuid[]) AS r
                         WHERE NOT EXISTS (SELECT 1 FROM sync_outbox o
                                           WHERE o.provider = $1 AND o.table_name = 'clients'
                                             AND o.record_id = r AND o.status = 'pending'
                                             AND o.next_attempt_at <> 'infinity')
                         RETURNING id
                     ), rung AS (
                         UPDATE syncbridge_doorbell SET armed = false
                         WHERE channel = 'syncbridge_outbox' AND armed
                           AND EXISTS (SELECT 1 FROM queued)
                         RETURNING channel
                     )
                     SELECT pg_notify(channel, '') FROM rung",
                )
                .await?;
            tx.query(&stmt, &[&self.provider.as_str(), &ids]).await?;
        }
        if !self.audits.is_empty() {
            let rows = Value::Array(std::mem::take(&mut self.audits));
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO sync_audit_log (entity_type, entity_id, operation, old_data,
                         new_data, changed_fields, sync_source, sync_destination, event_id,
                         decision, detail)
                     SELECT 'clients', a.entity_id, a.operation, a.detail -> 'local',
                            coalesce(a.detail -> 'after', a.detail -> 'remote'),
                            a.changed,
                            $2, 'local', a.event_id, a.decision, a.detail - 'local' - 'after'
                     FROM jsonb_to_recordset($1) AS a(entity_id uuid, operation text,
                          decision text, detail jsonb, changed text[], event_id bigint)",
                )
                .await?;
            tx.execute(&stmt, &[&rows, &self.provider.as_str()]).await?;
        }
        Ok(())
    }
}

/// The batch's read of its clients (locked, in id order): the synced
/// columns, the contact ids and the status, all `find` and the engine read.
fn prefetch_sql() -> String {
    let synced: String = CLIENTS
        .columns
        .iter()
        .map(|c| format!("'{c}', {c}, "))
        .collect();
    format!(
        "WITH linked AS (
                     SELECT l.remote_id, l.local_id FROM sync_links l
                     WHERE l.provider = $4 AND l.entity_type = 'clients'
                       AND l.remote_id = ANY($2) AND l.deleted_at IS NULL
                       AND EXISTS (SELECT 1 FROM clients x WHERE x.id = l.local_id)
                 ), unlinked AS (
                     SELECT w.remote_id, w.phone FROM unnest($2::text[], $3::text[]) AS w(remote_id, phone)
                     WHERE NOT EXISTS (SELECT 1 FROM linked k WHERE k.remote_id = w.remote_id)
                 )
                 SELECT id,
                        jsonb_build_object({synced}
                            'openphone_contact_id', openphone_contact_id,
                            'openphone_alt_contact_1_id', openphone_alt_contact_1_id,
                            'openphone_alt_contact_2_id', openphone_alt_contact_2_id,
                            'sync_status', sync_status),
                        updated_at, created_at, now()
                 FROM clients c
                 WHERE id = ANY($1)
                    OR id = ANY(ARRAY(SELECT local_id FROM linked))
                    OR openphone_contact_id = ANY(ARRAY(SELECT remote_id FROM unlinked))
                    OR openphone_alt_contact_1_id = ANY(ARRAY(SELECT remote_id FROM unlinked))
                    OR openphone_alt_contact_2_id = ANY(ARRAY(SELECT remote_id FROM unlinked))
                    OR (syncbridge_e164(phone) = ANY(ARRAY(SELECT phone FROM unlinked
                                                           WHERE phone IS NOT NULL))
                        AND openphone_contact_id IS NULL)
                 ORDER BY id
                 FOR NO KEY UPDATE OF c"
    )
}

/// The set-based client update: each row's `v` names the synced columns
/// it sets; `status` (when set) is the new `sync_status`; `cid` the
/// primary contact id to remember.
fn update_sql() -> String {
    let sets: Vec<String> = CLIENTS
        .columns
        .iter()
        .map(|c| format!("{c} = CASE WHEN u.v ? '{c}' THEN r.{c} ELSE c.{c} END"))
        .collect();
    format!(
        "UPDATE clients AS c SET {},
                openphone_contact_id = coalesce(u.cid, c.openphone_contact_id),
                sync_status = coalesce(u.status, c.sync_status),
                last_synced_at = CASE WHEN u.status IS NULL THEN c.last_synced_at ELSE now() END,
                sync_error = CASE WHEN u.status IS NULL THEN c.sync_error END
         FROM jsonb_to_recordset($1) AS u(id uuid, v jsonb, status text, cid text),
              LATERAL jsonb_populate_record(NULL::clients, u.v) AS r
         WHERE c.id = u.id",
        sets.join(", ")
    )
}

/// The router's view of a batch's set-based writes: contact updates
/// ([`ContactBatch`], when the batch has two or more) and calls and messages
/// ([`CommsBatch`]) are decided in memory. Calls and messages go ahead of
/// pending contact updates (written first at a flush) unless one of those
/// moves a phone column to or from their number: then what is pending is
/// written first. A contact deletion writes what is pending and ends the
/// contacts' set-based path for the rest of the batch; any event the batch
/// does not take writes what is pending before the router applies it.
pub struct Batched {
    contacts: Option<ContactBatch>,
    comms: CommsBatch,
    closed: bool,
}

impl Batched {
    pub fn new(contacts: Option<ContactBatch>, comms: CommsBatch) -> Batched {
        Batched {
            contacts,
            comms,
            closed: false,
        }
    }

    /// Writes everything pending: calls and messages first (they went
    /// ahead), then the contacts' writes.
    async fn flush_all(&mut self, tx: &impl GenericClient) -> Result<(), DbError> {
        self.comms.flush(tx).await?;
        match self.contacts.as_mut() {
            Some(b) if b.is_dirty() => b.flush(tx).await,
            _ => Ok(()),
        }
    }

    /// Whether pending contact updates could change the client a call or
    /// message with this counterpart matches.
    fn may_match(&self, counterpart: Option<&E164Phone>) -> bool {
        self.contacts
            .as_ref()
            .is_some_and(|b| b.may_match(counterpart))
    }
}

impl BatchWrites for Batched {
    fn apply<'a, 't: 'a>(
        &'a mut self,
        ctx: &'a ApplyCtx<'a, 't>,
        event: &'a DomainEvent,
    ) -> BatchApplyFuture<'a> {
        Box::pin(async move {
            match (event, self.contacts.as_mut()) {
                (DomainEvent::ContactUpserted(c), Some(batch)) if !self.closed => batch
                    .apply(ctx.tx, ctx.rules, c, ctx.inbox_id, &mut self.comms)
                    .await
                    .map(Some),
                (DomainEvent::ContactDeleted { .. }, _) => {
                    self.flush_all(ctx.tx).await?;
                    self.closed = true;
                    Ok(None)
                }
                (DomainEvent::Call(c), _) => {
                    if self.may_match(c.counterpart.as_ref()) {
                        self.flush_all(ctx.tx).await?;
                    }
                    self.comms.call(ctx.tx, c, ctx.inbox_id).await.map(Some)
                }
                (DomainEvent::Message(m), _) => {
                    if self.may_match(m.counterpart.as_ref()) {
                        self.flush_all(ctx.tx).await?;
                    }
                    self.comms.message(ctx.tx, m, ctx.inbox_id).await.map(Some)
                }
                _ => {
                    self.flush_all(ctx.tx).await?;
                    Ok(None)
                }
            }
        })
    }

    fn flush<'a, 't: 'a>(
        &'a mut self,
        tx: &'a deadpool_postgres::Transaction<'t>,
    ) -> FlushFuture<'a> {
        Box::pin(async move { self.flush_all(tx).await })
    }
}
