//! Keeping the D1 tables a faithful cache of Postgres beyond what the outbox
//! carries: the reconciliation that walks a durable keyset cursor
//! `(updated_at, id)` per table (rows that existed before syncbridge,
//! restores, anything the outbox missed), the full resync that rebuilds a
//! table without emptying it, and the paged id-set comparison both they
//! and integrity use.
//!
//! Architecture invariants:
//! - The cursor is stored in Postgres (`sync_cursors`) and moves only past
//!   rows D1 confirmed: a page that fails part-way leaves it before the
//!   first row not written, so the next run writes it again.
//! - Nothing is deleted in D1 that exists in Postgres: an id D1 has and
//!   the local walk did not is looked up again just before its delete.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::api::D1Api;
use super::push::{self, Columns, Sent, Write};
use super::wire::Statement;
use crate::scheduler::JobCtx;

/// Rows per page of a walk (local and D1 alike).
pub const PAGE: i64 = 1000;

/// The local table named `table`, if it is one D1 mirrors (the whitelist
/// every statement naming a table goes through).
pub fn table(table: &str) -> Option<&'static str> {
    push::TABLES.iter().copied().find(|t| *t == table)
}

fn db_err(e: impl std::fmt::Display) -> String {
    format!("database: {e}")
}

fn cursor_name(table: &str) -> String {
    format!("d1.reconcile.{table}")
}

/// Where a table's reconciliation stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub updated_at: DateTime<Utc>,
    pub id: Uuid,
}

pub async fn load_cursor(
    db: &deadpool_postgres::Client,
    table: &str,
) -> Result<Option<Cursor>, String> {
    let row = db
        .query_opt(
            "SELECT (position->>'updated_at')::timestamptz, (position->>'id')::uuid
             FROM sync_cursors WHERE name = $1",
            &[&cursor_name(table)],
        )
        .await
        .map_err(db_err)?;
    Ok(row.map(|r| Cursor {
        updated_at: r.get(0),
        id: r.get(1),
    }))
}

async fn save_cursor(
    db: &deadpool_postgres::Client,
    table: &str,
    c: &Cursor,
) -> Result<(), String> {
    db.execute(
        "INSERT INTO sync_cursors (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
        &[
            &cursor_name(table),
            &json!({"updated_at": c.updated_at, "id": c.id}),
        ],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Local rows of `table` after `after` in `(updated_at, id)` order: each
/// row's key and its JSON.
async fn rows_after(
    db: &deadpool_postgres::Client,
    table: &'static str,
    after: Option<&Cursor>,
) -> Result<Vec<(Cursor, Map<String, Value>)>, String> {
    // The table is one of push::TABLES (a constant).
    let rows = match after {
        Some(c) => {
            let sql = format!(
                "SELECT t.updated_at, t.id, to_jsonb(t) FROM {table} t
                 WHERE (t.updated_at, t.id) > ($1, $2)
                 ORDER BY t.updated_at, t.id LIMIT $3"
            );
            db.query(&sql, &[&c.updated_at, &c.id, &PAGE]).await
        }
        None => {
            let sql = format!(
                "SELECT t.updated_at, t.id, to_jsonb(t) FROM {table} t
                 ORDER BY t.updated_at, t.id LIMIT $1"
            );
            db.query(&sql, &[&PAGE]).await
        }
    }
    .map_err(db_err)?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let Value::Object(m) = r.get::<_, Value>(2) else {
                return None;
            };
            Some((
                Cursor {
                    updated_at: r.get(0),
                    id: r.get(1),
                },
                m,
            ))
        })
        .collect())
}

/// One reconciliation run: for each table, from its cursor to the end,
/// every row upserted in D1, the cursor stored after each page at the last
/// row D1 confirmed. Stops at the first row D1 did not take (the error
/// names it); what came before stays confirmed.
pub async fn reconcile(api: &D1Api, columns: &Columns, ctx: &JobCtx) -> Result<Value, String> {
    // D1's tables are read again each run: a column added there since is
    // written from now on.
    columns.forget();
    let db = ctx.pool.get().await.map_err(db_err)?;
    let mut summary = Map::new();
    let mut sent = Sent::default();
    for &t in push::TABLES {
        let mut cursor = load_cursor(&db, t).await?;
        let mut pushed = 0u64;
        loop {
            let page = rows_after(&db, t, cursor.as_ref()).await?;
            if page.is_empty() {
                break;
            }
            let full = page.len() as i64 >= PAGE;
            let writes: Vec<Write> = page
                .iter()
                .map(|(_, row)| Write::Upsert {
                    table: t.to_owned(),
                    row: row.clone(),
                })
                .collect();
            let (results, s) = push::write(api, columns, &writes).await;
            sent.requests += s.requests;
            // The confirmed prefix: the cursor moves to its last row.
            let confirmed = results.iter().take_while(|r| r.is_ok()).count();
            pushed += confirmed as u64;
            if confirmed > 0 {
                let c = page[confirmed - 1].0.clone();
                save_cursor(&db, t, &c).await?;
                cursor = Some(c);
            }
            ctx.progress(json!({"table": t, "pushed": pushed, "requests": sent.requests}))
                .await;
            if let Some(Err(e)) = results.get(confirmed) {
                let at = &page[confirmed].0;
                return Err(format!(
                    "{t}: D1 did not take row {} (updated_at {}): {e}; the cursor stays before it",
                    at.id, at.updated_at
                ));
            }
            if !full || ctx.stop.is_cancelled() {
                break;
            }
        }
        summary.insert(
            t.to_owned(),
            json!({"pushed": pushed, "cursor": cursor.map(|c| json!({"updated_at": c.updated_at, "id": c.id}))}),
        );
    }
    summary.insert("requests".into(), json!(sent.requests));
    Ok(Value::Object(summary))
}

/// One side of an id comparison: ids in ascending byte order, a page at a
/// time. (A canonical UUID's text sorts as the UUID does, so the local
/// side pages by its index and the two orders agree.)
struct Side {
    buf: VecDeque<String>,
    after: Option<String>,
    done: bool,
    seen: u64,
}

impl Side {
    fn new() -> Side {
        Side {
            buf: VecDeque::new(),
            after: None,
            done: false,
            seen: 0,
        }
    }

    fn fill(&mut self, ids: Vec<String>) {
        self.done = (ids.len() as i64) < PAGE;
        self.seen += ids.len() as u64;
        self.after = ids.last().cloned().or(self.after.take());
        self.buf.extend(ids);
    }

    fn needs(&self) -> bool {
        self.buf.is_empty() && !self.done
    }
}

/// The ids of one table that one side has and the other does not.
#[derive(Debug, Default)]
pub struct Diff {
    /// In Postgres, not in D1.
    pub missing: Vec<String>,
    /// In D1, not in Postgres.
    pub extra: Vec<String>,
}

/// A paged comparison of a table's id sets in Postgres and in D1.
pub struct IdWalk {
    table: &'static str,
    local: Side,
    remote: Side,
}

impl IdWalk {
    pub fn new(table: &'static str) -> IdWalk {
        IdWalk {
            table,
            local: Side::new(),
            remote: Side::new(),
        }
    }

    /// Ids seen so far: (local, D1).
    pub fn counts(&self) -> (u64, u64) {
        (self.local.seen, self.remote.seen)
    }

    /// The next stretch of differences, `None` once both sides are read.
    pub async fn next(
        &mut self,
        api: &D1Api,
        db: &deadpool_postgres::Client,
    ) -> Result<Option<Diff>, String> {
        if self.local.needs() {
            let sql = format!(
                "SELECT id::text FROM {} WHERE $1::uuid IS NULL OR id > $1::uuid ORDER BY id LIMIT $2",
                self.table
            );
            let after: Option<Uuid> = self.local.after.as_deref().and_then(|s| s.parse().ok());
            let rows = db.query(&sql, &[&after, &PAGE]).await.map_err(db_err)?;
            self.local.fill(rows.iter().map(|r| r.get(0)).collect());
        }
        if self.remote.needs() {
            let rows = api
                .query(&Statement::new(
                    format!(
                        "SELECT id FROM {} WHERE id > ?1 ORDER BY id LIMIT {PAGE}",
                        super::wire::ident(self.table)
                    ),
                    vec![self.remote.after.clone().unwrap_or_default()],
                ))
                .await
                .map_err(|e| format!("D1: {e}"))?;
            self.remote.fill(
                rows.iter()
                    .filter_map(|r| r.get("id").and_then(super::wire::param))
                    .collect(),
            );
        }
        if self.local.buf.is_empty()
            && self.remote.buf.is_empty()
            && self.local.done
            && self.remote.done
        {
            return Ok(None);
        }
        let mut diff = Diff::default();
        loop {
            match (self.local.buf.front(), self.remote.buf.front()) {
                (Some(l), Some(r)) => match l.cmp(r) {
                    std::cmp::Ordering::Equal => {
                        self.local.buf.pop_front();
                        self.remote.buf.pop_front();
                    }
                    std::cmp::Ordering::Less => diff.missing.extend(self.local.buf.pop_front()),
                    std::cmp::Ordering::Greater => diff.extra.extend(self.remote.buf.pop_front()),
                },
                (Some(_), None) if self.remote.done => {
                    diff.missing.extend(self.local.buf.pop_front())
                }
                (None, Some(_)) if self.local.done => {
                    diff.extra.extend(self.remote.buf.pop_front())
                }
                _ => break,
            }
        }
        Ok(Some(diff))
    }
}

/// The local rows of `ids` as upserts (ids no longer there are skipped).
pub async fn upserts_of(
    db: &deadpool_postgres::Client,
    table: &'static str,
    ids: &[String],
) -> Result<Vec<Write>, String> {
    let ids: Vec<Uuid> = ids.iter().filter_map(|s| s.parse().ok()).collect();
    let sql = format!("SELECT to_jsonb(t) FROM {table} t WHERE t.id = ANY($1)");
    let rows = db.query(&sql, &[&ids]).await.map_err(db_err)?;
    Ok(rows
        .iter()
        .filter_map(|r| match r.get::<_, Value>(0) {
            Value::Object(row) => Some(Write::Upsert {
                table: table.to_owned(),
                row,
            }),
            _ => None,
        })
        .collect())
}

/// Deletes of the D1 rows `ids` that Postgres does not have, looked up
/// again now (a row inserted since the walk read its page is kept).
pub async fn deletes_of(
    db: &deadpool_postgres::Client,
    table: &'static str,
    ids: &[String],
) -> Result<Vec<Write>, String> {
    let parsed: Vec<Uuid> = ids.iter().filter_map(|s| s.parse().ok()).collect();
    let sql = format!("SELECT id::text FROM {table} WHERE id = ANY($1)");
    let present: std::collections::HashSet<String> = db
        .query(&sql, &[&parsed])
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(ids
        .iter()
        .filter(|id| !present.contains(*id))
        .map(|id| Write::Delete {
            table: table.to_owned(),
            id: id.clone(),
        })
        .collect())
}

/// Writes `writes`, counting what D1 confirmed; the first error is kept.
pub async fn apply(
    api: &D1Api,
    columns: &Columns,
    writes: &[Write],
    sent: &mut Sent,
    first_error: &mut Option<String>,
) -> u64 {
    if writes.is_empty() {
        return 0;
    }
    let (results, s) = push::write(api, columns, writes).await;
    sent.requests += s.requests;
    let mut ok = 0;
    for r in results {
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    ok
}

/// Rebuilds one D1 table from Postgres without emptying it: every local row
/// upserted (pages by id), then what D1 has and Postgres no longer does
/// deleted. Readers of D1 see every row throughout.
pub async fn resync(api: &D1Api, columns: &Columns, ctx: &JobCtx) -> Result<Value, String> {
    let name = ctx
        .args
        .get("entity")
        .and_then(Value::as_str)
        .ok_or("a full resync names its table (entity)")?;
    let t =
        table(name).ok_or_else(|| format!("D1 mirrors {}, not {name}", push::TABLES.join(", ")))?;
    columns.forget();
    let db = ctx.pool.get().await.map_err(db_err)?;
    let total: i64 = db
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .map_err(db_err)?
        .get(0);
    let mut sent = Sent::default();
    let mut error = None;
    let mut upserted = 0u64;
    let mut after: Option<Uuid> = None;
    loop {
        let sql = format!(
            "SELECT t.id, to_jsonb(t) FROM {t} t WHERE $1::uuid IS NULL OR t.id > $1
             ORDER BY t.id LIMIT $2"
        );
        let rows = db.query(&sql, &[&after, &PAGE]).await.map_err(db_err)?;
        let Some(last) = rows.last() else { break };
        after = Some(last.get(0));
        let writes: Vec<Write> = rows
            .iter()
            .filter_map(|r| match r.get::<_, Value>(1) {
                Value::Object(row) => Some(Write::Upsert {
                    table: t.to_owned(),
                    row,
                }),
                _ => None,
            })
            .collect();
        upserted += apply(api, columns, &writes, &mut sent, &mut error).await;
        ctx.progress(
            json!({"table": t, "phase": "upsert", "upserted": upserted, "total": total,
                            "requests": sent.requests}),
        )
        .await;
        if (rows.len() as i64) < PAGE || ctx.stop.is_cancelled() {
            break;
        }
    }
    if let Some(e) = error {
        return Err(format!(
            "{t}: {upserted} of {total} rows upserted; nothing was deleted: {e}"
        ));
    }
    let mut deleted = 0u64;
    let mut walk = IdWalk::new(t);
    while let Some(diff) = walk.next(api, &db).await? {
        let writes = deletes_of(&db, t, &diff.extra).await?;
        deleted += apply(api, columns, &writes, &mut sent, &mut error).await;
        ctx.progress(
            json!({"table": t, "phase": "delete", "upserted": upserted, "total": total,
                            "deleted": deleted, "requests": sent.requests}),
        )
        .await;
        if ctx.stop.is_cancelled() {
            break;
        }
    }
    if let Some(e) = error {
        return Err(format!("{t}: {upserted} upserted, {deleted} deleted: {e}"));
    }
    Ok(
        json!({"table": t, "upserted": upserted, "total": total, "deleted": deleted,
              "requests": sent.requests}),
    )
}
