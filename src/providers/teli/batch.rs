//! The router's set-based path for a batch of pulled calls.
//!
//! One at a time, a call is two statements: its business by agent, then
//! its customer, message and audit row. Here a batch reads the businesses
//! of all its agents and the messages of all its calls (two statements),
//! decides each call in memory — ignored, stale, new or a refresh — and
//! writes them in one statement ([`store::write_calls`]) at the flush,
//! checked against the decisions ([`checked`]). A call whose call id or
//! customer is already pending is written after a flush: one statement
//! names each customer and each message once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use uuid::Uuid;

use super::store::{self, ReadyCall};
use crate::apply::checked::{Known, Ledger};
use crate::apply::Applied;
use crate::db::DbError;
use crate::events::DomainEvent;
use crate::providers::{ApplyCtx, BatchApplyFuture, BatchWrites, FlushFuture};

pub struct CallBatch {
    businesses: HashMap<String, (Uuid, Option<String>)>,
    /// Messages by call id as the batch leaves them (`teli_updated_at`).
    messages: Ledger<Option<DateTime<Utc>>>,
    pending: Vec<(ReadyCall, i64, Uuid)>,
    customers: HashSet<(Uuid, String)>,
}

/// The pulled calls among a batch's events.
fn calls<'a>(events: &'a [&'a DomainEvent]) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter_map(|e| match e {
        DomainEvent::Record {
            kind: "call",
            value,
        } => Some(value),
        _ => None,
    })
}

impl CallBatch {
    /// Reads the businesses the batch's calls name and the messages they
    /// upsert (no lock: a message another process writes meanwhile shows
    /// at the write's check).
    pub async fn prefetch(
        tx: &impl GenericClient,
        events: &[&DomainEvent],
    ) -> Result<Option<CallBatch>, DbError> {
        if calls(events).take(2).count() < 2 {
            return Ok(None);
        }
        let mut agents: Vec<String> = calls(events).flat_map(store::agents_of).collect();
        agents.sort_unstable();
        agents.dedup();
        let agents: Vec<&str> = agents.iter().map(String::as_str).collect();
        let businesses = store::businesses(tx, &agents).await?;
        let call_ids: Vec<&str> = calls(events)
            .filter_map(|c| c.get("call_id").and_then(Value::as_str))
            .map(str::trim)
            .collect();
        let messages = store::stored_messages(tx, &call_ids)
            .await?
            .into_iter()
            .map(|(call, (id, version))| (call, Known { id, version }))
            .collect();
        Ok(Some(CallBatch {
            businesses,
            messages: Ledger::new(messages),
            pending: Vec::new(),
            customers: HashSet::new(),
        }))
    }

    /// Takes a call: decided now, written at [`flush`](Self::flush).
    async fn call(
        &mut self,
        tx: &impl GenericClient,
        call: &Value,
        event_id: i64,
    ) -> Result<Applied, DbError> {
        let call = match store::ready(call, &self.businesses) {
            Ok(c) => c,
            Err(ignored) => return Ok(ignored),
        };
        let customer = (call.customer().0, call.phone.clone());
        if self.messages.is_pending(&call.call_id) || self.customers.contains(&customer) {
            self.flush(tx).await?;
        }
        // `write_calls`' guard: the message is refreshed only by a newer
        // version (or over one stored without a version).
        let stale =
            self.messages
                .row(&call.call_id)
                .is_some_and(|k| match (k.version, call.updated_at) {
                    (None, _) => false,
                    (Some(stored), Some(new)) => new <= stored,
                    (Some(_), None) => true,
                });
        let (new_id, applied) = self
            .messages
            .decide(&call.call_id, stale, call.updated_at, || call.stale());
        self.customers.insert(customer);
        self.pending.push((call, event_id, new_id));
        Ok(applied)
    }

    /// Writes the pending calls and checks each came back as decided.
    async fn flush(&mut self, tx: &impl GenericClient) -> Result<(), DbError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.customers.clear();
        let rows: Vec<(&ReadyCall, i64, Uuid)> =
            pending.iter().map(|(c, e, n)| (c, *e, *n)).collect();
        let written = store::write_calls(tx, &rows).await?;
        self.messages.check("Teli call", &written)
    }
}

impl BatchWrites for CallBatch {
    fn apply<'a, 't: 'a>(
        &'a mut self,
        ctx: &'a ApplyCtx<'a, 't>,
        event: &'a DomainEvent,
    ) -> BatchApplyFuture<'a> {
        Box::pin(async move {
            match event {
                DomainEvent::Record {
                    kind: "call",
                    value,
                } => self.call(ctx.tx, value, ctx.inbox_id).await.map(Some),
                _ => {
                    self.flush(ctx.tx).await?;
                    Ok(None)
                }
            }
        })
    }

    fn flush<'a, 't: 'a>(
        &'a mut self,
        tx: &'a deadpool_postgres::Transaction<'t>,
    ) -> FlushFuture<'a> {
        Box::pin(async move { CallBatch::flush(self, tx).await })
    }
}
