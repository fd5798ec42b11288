//! Set-based writes checked against the decisions made in memory.
//!
//! A provider's batch (OpenPhone's calls and messages, Teli's calls) reads
//! the rows its events upsert once, decides each event from that read —
//! which are stale, which insert, which update — and writes them all in
//! one statement. The statement's `RETURNING` is then held against the
//! decisions: a row written otherwise (another process wrote it since the
//! read) is [`DbError::Mispredicted`], and the router applies the batch
//! again one event at a time.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::Applied;
use crate::db::DbError;

/// One row a set-based upsert wrote: its provider key, its row id, whether
/// it was inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    pub key: String,
    pub id: Uuid,
    pub inserted: bool,
}

impl Upserted {
    /// From a `(key, id, inserted)` row.
    pub fn from_row(r: &tokio_postgres::Row) -> Upserted {
        Upserted {
            key: r.get(0),
            id: r.get(1),
            inserted: r.get(2),
        }
    }

    /// The one row of a guarded upsert of one; none means the guard (an
    /// equal or newer state already applied) held.
    pub fn single(written: Vec<Upserted>, stale: impl FnOnce() -> String) -> Applied {
        match written.into_iter().next() {
            Some(u) if u.inserted => Applied::Inserted(u.id),
            Some(u) => Applied::Updated(u.id),
            None => Applied::Stale(stale()),
        }
    }
}

/// A stored row as a batch read it and leaves it: its id and version.
#[derive(Debug, Clone, Copy)]
pub struct Known<V> {
    pub id: Uuid,
    pub version: V,
}

/// What a pending write must come back as.
#[derive(Debug)]
pub struct Expect {
    pub id: Uuid,
    pub inserted: bool,
    /// Decided stale: the guard must hold it back.
    pub stale: bool,
}

impl Expect {
    /// The decision for an event whose row is `known` (or new, to get
    /// `new_id`); the outcome the router records for it.
    pub fn decide<V>(
        known: Option<&Known<V>>,
        new_id: Uuid,
        stale: bool,
        why: impl FnOnce() -> String,
    ) -> (Expect, Applied) {
        let id = known.map_or(new_id, |k| k.id);
        let inserted = known.is_none();
        let applied = if stale {
            Applied::Stale(why())
        } else if inserted {
            Applied::Inserted(id)
        } else {
            Applied::Updated(id)
        };
        (
            Expect {
                id,
                inserted,
                stale,
            },
            applied,
        )
    }
}

/// One kind of row a batch upserts: the rows as read and as the batch's
/// decisions leave them, and the decisions waiting for their write.
pub struct Ledger<V> {
    rows: HashMap<String, Known<V>>,
    pending: HashMap<String, Expect>,
}

impl<V: Copy> Ledger<V> {
    pub fn new(rows: HashMap<String, Known<V>>) -> Ledger<V> {
        Ledger {
            rows,
            pending: HashMap::new(),
        }
    }

    /// The row `key` names, as the batch leaves it.
    pub fn row(&self, key: &str) -> Option<Known<V>> {
        self.rows.get(key).copied()
    }

    /// Whether a decision about `key` waits for its write.
    pub fn is_pending(&self, key: &str) -> bool {
        self.pending.contains_key(key)
    }

    /// Records the decision about `key` (stale, or written and left at
    /// `version`): the id a new row gets, and the outcome to record.
    pub fn decide(
        &mut self,
        key: &str,
        stale: bool,
        version: V,
        why: impl FnOnce() -> String,
    ) -> (Uuid, Applied) {
        let new_id = Uuid::new_v4();
        let (expect, applied) = Expect::decide(self.rows.get(key), new_id, stale, why);
        if !stale {
            let row = Known {
                id: expect.id,
                version,
            };
            self.rows.insert(key.to_owned(), row);
        }
        self.pending.insert(key.to_owned(), expect);
        (new_id, applied)
    }

    /// Holds a write of the pending decisions against them ([`check`]).
    pub fn check(&mut self, kind: &str, written: &[Upserted]) -> Result<(), DbError> {
        check(kind, &std::mem::take(&mut self.pending), written)
    }
}

/// Whether a write came back as decided: each fresh row as the insert or
/// update of the row it was decided for, no stale one.
pub fn check(
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

    #[test]
    fn the_decision_names_the_known_row_or_the_new_one() {
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        let known = Known {
            id: old,
            version: (),
        };
        let (e, a) = Expect::decide(Some(&known), new, false, String::new);
        assert_eq!((e.id, e.inserted, a), (old, false, Applied::Updated(old)));
        let (e, a) = Expect::decide::<()>(None, new, false, String::new);
        assert_eq!((e.id, e.inserted, a), (new, true, Applied::Inserted(new)));
        let (e, a) = Expect::decide(Some(&known), new, true, || "older".into());
        assert!(e.stale);
        assert_eq!(a, Applied::Stale("older".into()));
    }
}
