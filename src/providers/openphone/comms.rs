//! The router's set-based path for a batch's calls and messages.
//!
//! One at a time, each call or message is one statement (the upsert with
//! its audit row). Here a batch reads, in one statement, the rows its
//! calls and messages upsert (row id, last lifecycle timestamp), decides
//! in memory which are stale by the same guards as [`store::upsert_calls`]
//! and [`store::upsert_messages`], and writes them in one statement per
//! kind at [`CommsBatch::flush`], checked against the decisions
//! ([`checked`]). A call or message whose id is already pending is
//! written after a flush: one statement names each row once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::store;
use crate::apply::checked::{self, Expect, Known};
use crate::apply::Applied;
use crate::db::DbError;
use crate::events::{CallEvent, CallFacet, DomainEvent, MessageEvent};

/// The last lifecycle event applied (`openphone_event_timestamp`).
type Row = Known<Option<DateTime<Utc>>>;

struct Pending<E> {
    events: Vec<(E, i64, Uuid)>,
    expect: HashMap<String, Expect>,
}

impl<E> Default for Pending<E> {
    fn default() -> Self {
        Pending {
            events: Vec::new(),
            expect: HashMap::new(),
        }
    }
}

#[derive(Default)]
pub struct CommsBatch {
    calls: HashMap<String, Row>,
    messages: HashMap<String, Row>,
    pending_calls: Pending<CallEvent>,
    pending_messages: Pending<MessageEvent>,
}

impl CommsBatch {
    /// Reads the rows the batch's calls and messages upsert (no lock: a
    /// row another process writes meanwhile shows at the write's check).
    pub async fn prefetch(
        tx: &impl GenericClient,
        events: &[&DomainEvent],
    ) -> Result<CommsBatch, DbError> {
        let mut call_ids: Vec<&str> = Vec::new();
        let mut message_ids: Vec<&str> = Vec::new();
        for e in events {
            match e {
                DomainEvent::Call(c) => call_ids.push(&c.call_id),
                DomainEvent::Message(m) => message_ids.push(&m.message_id),
                _ => {}
            }
        }
        let mut batch = CommsBatch::default();
        if call_ids.is_empty() && message_ids.is_empty() {
            return Ok(batch);
        }
        let stmt = tx
            .prepare_cached(
                "SELECT openphone_call_id, openphone_message_id, id, openphone_event_timestamp
                 FROM communications
                 WHERE openphone_call_id = ANY($1) OR openphone_message_id = ANY($2)",
            )
            .await?;
        for r in tx.query(&stmt, &[&call_ids, &message_ids]).await? {
            let known = Known {
                id: r.get(2),
                version: r.get(3),
            };
            if let Some(call) = r.get::<_, Option<String>>(0) {
                batch.calls.insert(call, known);
            }
            if let Some(message) = r.get::<_, Option<String>>(1) {
                batch.messages.insert(message, known);
            }
        }
        Ok(batch)
    }

    /// Takes a call: decided now, written at [`flush`](Self::flush).
    pub async fn call(
        &mut self,
        tx: &impl GenericClient,
        ev: &CallEvent,
        event_id: i64,
    ) -> Result<Applied, DbError> {
        if self.pending_calls.expect.contains_key(&ev.call_id) {
            self.flush(tx).await?;
        }
        let lifecycle = matches!(ev.facet, CallFacet::Lifecycle);
        let known = self.calls.get(&ev.call_id).copied();
        let last = known.and_then(|k| k.version);
        // `upsert_calls`' guard: a lifecycle event older than the last one
        // applied changes nothing.
        let stale = lifecycle && last.is_some_and(|at| at > ev.event_at);
        let new_id = Uuid::new_v4();
        let (expect, applied) = Expect::decide(known.as_ref(), new_id, stale, || {
            format!("call {} already has a newer event applied", ev.call_id)
        });
        if !stale {
            let version = if lifecycle { Some(ev.event_at) } else { last };
            let row = Known {
                id: expect.id,
                version,
            };
            self.calls.insert(ev.call_id.clone(), row);
        }
        let pending = &mut self.pending_calls;
        pending.expect.insert(ev.call_id.clone(), expect);
        pending.events.push((ev.clone(), event_id, new_id));
        Ok(applied)
    }

    /// Takes a message: decided now, written at [`flush`](Self::flush).
    pub async fn message(
        &mut self,
        tx: &impl GenericClient,
        ev: &MessageEvent,
        event_id: i64,
    ) -> Result<Applied, DbError> {
        if self.pending_messages.expect.contains_key(&ev.message_id) {
            self.flush(tx).await?;
        }
        let known = self.messages.get(&ev.message_id).copied();
        // `upsert_messages`' guard: newest event wins.
        let stale = known
            .and_then(|k| k.version)
            .is_some_and(|at| at > ev.event_at);
        let new_id = Uuid::new_v4();
        let (expect, applied) = Expect::decide(known.as_ref(), new_id, stale, || {
            format!(
                "message {} already has a newer event applied",
                ev.message_id
            )
        });
        if !stale {
            let row = Known {
                id: expect.id,
                version: Some(ev.event_at),
            };
            self.messages.insert(ev.message_id.clone(), row);
        }
        let pending = &mut self.pending_messages;
        pending.expect.insert(ev.message_id.clone(), expect);
        pending.events.push((ev.clone(), event_id, new_id));
        Ok(applied)
    }

    /// Writes the pending calls and messages and checks each came back as
    /// decided.
    pub async fn flush(&mut self, tx: &impl GenericClient) -> Result<(), DbError> {
        if !self.pending_calls.events.is_empty() {
            let pending = std::mem::take(&mut self.pending_calls);
            let rows: Vec<(&CallEvent, i64, Uuid)> =
                pending.events.iter().map(|(e, i, n)| (e, *i, *n)).collect();
            let written = store::upsert_calls(tx, &rows).await?;
            checked::check("call", &pending.expect, &written)?;
        }
        if !self.pending_messages.events.is_empty() {
            let pending = std::mem::take(&mut self.pending_messages);
            let rows: Vec<(&MessageEvent, i64, Uuid)> =
                pending.events.iter().map(|(e, i, n)| (e, *i, *n)).collect();
            let written = store::upsert_messages(tx, &rows).await?;
            checked::check("message", &pending.expect, &written)?;
        }
        Ok(())
    }
}
