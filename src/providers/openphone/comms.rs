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
use crate::apply::checked::{Known, Ledger};
use crate::apply::Applied;
use crate::db::DbError;
use crate::events::{CallEvent, CallFacet, DomainEvent, MessageEvent};

/// The last lifecycle event applied (`openphone_event_timestamp`).
type Row = Known<Option<DateTime<Utc>>>;

pub struct CommsBatch {
    calls: Ledger<Option<DateTime<Utc>>>,
    messages: Ledger<Option<DateTime<Utc>>>,
    pending_calls: Vec<(CallEvent, i64, Uuid)>,
    pending_messages: Vec<(MessageEvent, i64, Uuid)>,
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
        let (mut calls, mut messages) = (HashMap::new(), HashMap::new());
        let batch = |calls, messages| CommsBatch {
            calls: Ledger::new(calls),
            messages: Ledger::new(messages),
            pending_calls: Vec::new(),
            pending_messages: Vec::new(),
        };
        if call_ids.is_empty() && message_ids.is_empty() {
            return Ok(batch(calls, messages));
        }
        let stmt = tx
            .prepare_cached(
                "SELECT openphone_call_id, openphone_message_id, id, openphone_event_timestamp
                 FROM communications
                 WHERE openphone_call_id = ANY($1) OR openphone_message_id = ANY($2)",
            )
            .await?;
        for r in tx.query(&stmt, &[&call_ids, &message_ids]).await? {
            let known: Row = Known {
                id: r.get(2),
                version: r.get(3),
            };
            if let Some(call) = r.get::<_, Option<String>>(0) {
                calls.insert(call, known);
            }
            if let Some(message) = r.get::<_, Option<String>>(1) {
                messages.insert(message, known);
            }
        }
        Ok(batch(calls, messages))
    }

    /// Takes a call: decided now, written at [`flush`](Self::flush).
    pub async fn call(
        &mut self,
        tx: &impl GenericClient,
        ev: &CallEvent,
        event_id: i64,
    ) -> Result<Applied, DbError> {
        if self.calls.is_pending(&ev.call_id) {
            self.flush(tx).await?;
        }
        let lifecycle = matches!(ev.facet, CallFacet::Lifecycle);
        let last = self.calls.row(&ev.call_id).and_then(|k| k.version);
        // `upsert_calls`' guard: a lifecycle event older than the last one
        // applied changes nothing.
        let stale = lifecycle && last.is_some_and(|at| at > ev.event_at);
        let version = if lifecycle { Some(ev.event_at) } else { last };
        let (new_id, applied) = self.calls.decide(&ev.call_id, stale, version, || {
            format!("call {} already has a newer event applied", ev.call_id)
        });
        self.pending_calls.push((ev.clone(), event_id, new_id));
        Ok(applied)
    }

    /// Takes a message: decided now, written at [`flush`](Self::flush).
    pub async fn message(
        &mut self,
        tx: &impl GenericClient,
        ev: &MessageEvent,
        event_id: i64,
    ) -> Result<Applied, DbError> {
        if self.messages.is_pending(&ev.message_id) {
            self.flush(tx).await?;
        }
        let last = self.messages.row(&ev.message_id).and_then(|k| k.version);
        // `upsert_messages`' guard: newest event wins.
        let stale = last.is_some_and(|at| at > ev.event_at);
        let (new_id, applied) =
            self.messages
                .decide(&ev.message_id, stale, Some(ev.event_at), || {
                    format!(
                        "message {} already has a newer event applied",
                        ev.message_id
                    )
                });
        self.pending_messages.push((ev.clone(), event_id, new_id));
        Ok(applied)
    }

    /// Writes the pending calls and messages and checks each came back as
    /// decided.
    pub async fn flush(&mut self, tx: &impl GenericClient) -> Result<(), DbError> {
        if !self.pending_calls.is_empty() {
            let pending = std::mem::take(&mut self.pending_calls);
            let rows: Vec<(&CallEvent, i64, Uuid)> =
                pending.iter().map(|(e, i, n)| (e, *i, *n)).collect();
            let written = store::upsert_calls(tx, &rows).await?;
            self.calls.check("call", &written)?;
        }
        if !self.pending_messages.is_empty() {
            let pending = std::mem::take(&mut self.pending_messages);
            let rows: Vec<(&MessageEvent, i64, Uuid)> =
                pending.iter().map(|(e, i, n)| (e, *i, *n)).collect();
            let written = store::upsert_messages(tx, &rows).await?;
            self.messages.check("message", &written)?;
        }
        Ok(())
    }
}
