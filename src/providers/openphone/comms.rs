//! The router's set-based path for a batch's calls and messages.
//!
//! One at a time, each call or message is one statement (the upsert with
//! its audit row). Here a batch reads, in one statement, the state its
//! calls and messages find (row id, last lifecycle timestamp), decides in
//! memory which are stale by the same guards as [`store::upsert_calls`] and
//! [`store::upsert_messages`], and writes the rest in one statement per
//! kind at [`CommsBatch::flush`]. A call or message whose id is already
//! pending is written after a flush: one statement names each row once.
//!
//! The write checks the decisions: every event decided fresh must come
//! back, as the insert or update it was decided to be, and no stale one
//! may. Anything else (another process wrote one of the rows since the
//! read) is [`DbError::Mispredicted`], and the router applies the batch
//! again one event at a time.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::store::{self, Upserted};
use crate::apply::Applied;
use crate::db::DbError;
use crate::events::{CallEvent, CallFacet, DomainEvent, MessageEvent};

/// A call's or message's row as the batch leaves it.
#[derive(Clone, Copy)]
struct Known {
    id: Uuid,
    /// The last lifecycle event applied (`openphone_event_timestamp`).
    at: Option<DateTime<Utc>>,
}

/// What a pending write must come back as.
struct Expect {
    id: Uuid,
    inserted: bool,
    /// Decided stale: the guard must hold it back.
    stale: bool,
}

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

impl<E> Pending<E> {
    fn holds(&self, key: &str) -> bool {
        self.expect.contains_key(key)
    }
}

pub struct CommsBatch {
    calls: HashMap<String, Known>,
    messages: HashMap<String, Known>,
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
        let mut batch = CommsBatch {
            calls: HashMap::new(),
            messages: HashMap::new(),
            pending_calls: Pending::default(),
            pending_messages: Pending::default(),
        };
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
                at: r.get(3),
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

    pub fn is_dirty(&self) -> bool {
        !self.pending_calls.events.is_empty() || !self.pending_messages.events.is_empty()
    }

    /// Takes a call: decided now, written at [`flush`](Self::flush).
    pub async fn call(
        &mut self,
        tx: &impl GenericClient,
        ev: &CallEvent,
        event_id: i64,
    ) -> Result<Applied, DbError> {
        if self.pending_calls.holds(&ev.call_id) {
            self.flush(tx).await?;
        }
        let lifecycle = matches!(ev.facet, CallFacet::Lifecycle);
        let known = self.calls.get(&ev.call_id).copied();
        // `upsert_calls`' guard: a lifecycle event older than the last one
        // applied changes nothing.
        let stale = lifecycle && known.and_then(|k| k.at).is_some_and(|at| at > ev.event_at);
        let new_id = Uuid::new_v4();
        let id = known.map_or(new_id, |k| k.id);
        if !stale {
            let at = if lifecycle {
                Some(ev.event_at)
            } else {
                known.and_then(|k| k.at)
            };
            self.calls.insert(ev.call_id.clone(), Known { id, at });
        }
        self.pending_calls
            .events
            .push((ev.clone(), event_id, new_id));
        self.pending_calls.expect.insert(
            ev.call_id.clone(),
            Expect {
                id,
                inserted: known.is_none(),
                stale,
            },
        );
        Ok(decided(known.is_none(), stale, id, || {
            format!("call {} already has a newer event applied", ev.call_id)
        }))
    }

    /// Takes a message: decided now, written at [`flush`](Self::flush).
    pub async fn message(
        &mut self,
        tx: &impl GenericClient,
        ev: &MessageEvent,
        event_id: i64,
    ) -> Result<Applied, DbError> {
        if self.pending_messages.holds(&ev.message_id) {
            self.flush(tx).await?;
        }
        let known = self.messages.get(&ev.message_id).copied();
        // `upsert_messages`' guard: newest event wins.
        let stale = known.and_then(|k| k.at).is_some_and(|at| at > ev.event_at);
        let new_id = Uuid::new_v4();
        let id = known.map_or(new_id, |k| k.id);
        if !stale {
            self.messages.insert(
                ev.message_id.clone(),
                Known {
                    id,
                    at: Some(ev.event_at),
                },
            );
        }
        self.pending_messages
            .events
            .push((ev.clone(), event_id, new_id));
        self.pending_messages.expect.insert(
            ev.message_id.clone(),
            Expect {
                id,
                inserted: known.is_none(),
                stale,
            },
        );
        Ok(decided(known.is_none(), stale, id, || {
            format!(
                "message {} already has a newer event applied",
                ev.message_id
            )
        }))
    }

    /// Writes the pending calls and messages and checks each came back as
    /// decided.
    pub async fn flush(&mut self, tx: &impl GenericClient) -> Result<(), DbError> {
        if !self.pending_calls.events.is_empty() {
            let pending = std::mem::take(&mut self.pending_calls);
            let rows: Vec<(&CallEvent, i64, Uuid)> =
                pending.events.iter().map(|(e, i, n)| (e, *i, *n)).collect();
            let written = store::upsert_calls(tx, &rows).await?;
            check("call", &pending.expect, &written)?;
        }
        if !self.pending_messages.events.is_empty() {
            let pending = std::mem::take(&mut self.pending_messages);
            let rows: Vec<(&MessageEvent, i64, Uuid)> =
                pending.events.iter().map(|(e, i, n)| (e, *i, *n)).collect();
            let written = store::upsert_messages(tx, &rows).await?;
            check("message", &pending.expect, &written)?;
        }
        Ok(())
    }
}

fn decided(inserted: bool, stale: bool, id: Uuid, why: impl FnOnce() -> String) -> Applied {
    if stale {
        Applied::Stale(why())
    } else if inserted {
        Applied::Inserted(id)
    } else {
        Applied::Updated(id)
    }
}

/// Whether a write came back as decided: each fresh row as the insert or
/// update of the row it was decided for, no stale one.
fn check(
    kind: &str,
    expect: &HashMap<String, Expect>,
    written: &[Upserted],
) -> Result<(), DbError> {
    let mut seen = HashSet::with_capacity(written.len());
    for w in written {
        match expect.get(&w.key) {
            Some(e) if !e.stale && e.id == w.id && e.inserted == w.inserted => {
                seen.insert(w.key.as_str());
            }
            _ => {
                return Err(DbError::Mispredicted(format!(
                    "{kind} {} was written otherwise than the batch decided",
                    w.key
                )))
            }
        }
    }
    let fresh = expect.values().filter(|e| !e.stale).count();
    if seen.len() != fresh {
        return Err(DbError::Mispredicted(format!(
            "{} of {fresh} {kind}s decided fresh were written",
            seen.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(id: Uuid, inserted: bool, stale: bool) -> Expect {
        Expect {
            id,
            inserted,
            stale,
        }
    }

    fn written(key: &str, id: Uuid, inserted: bool) -> Upserted {
        Upserted {
            key: key.into(),
            id,
            inserted,
        }
    }

    #[test]
    fn a_write_as_decided_passes_the_check() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let expect = HashMap::from([
            ("A".to_owned(), expect(a, true, false)),
            ("B".to_owned(), expect(b, false, false)),
            ("C".to_owned(), expect(c, false, true)),
        ]);
        let got = [written("A", a, true), written("B", b, false)];
        assert!(check("message", &expect, &got).is_ok());
    }

    #[test]
    fn a_write_other_than_decided_fails_the_check() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let expect = HashMap::from([
            ("A".to_owned(), expect(a, true, false)),
            ("B".to_owned(), expect(b, false, true)),
        ]);
        // Another process inserted A meanwhile: an update of its row.
        let other = Uuid::new_v4();
        assert!(check("message", &expect, &[written("A", other, false)]).is_err());
        // A decided fresh but held back by the guard.
        assert!(check("message", &expect, &[]).is_err());
        // B decided stale but written.
        let got = [written("A", a, true), written("B", b, false)];
        assert!(check("message", &expect, &got).is_err());
    }
}
