//! Postgres → D1: prospects, campaigns and mailboxes (Postgres is their
//! source of truth, D1 a read replica). The dispatcher hands over many
//! records at once ([`Provider::push_batch`](crate::providers::Provider));
//! they are written as D1 `batch` requests of multi-row
//! `INSERT … ON CONFLICT(id) DO UPDATE` and `DELETE … WHERE id IN (…)`
//! statements, each within D1's limits, many rows per request.
//!
//! Only the columns the D1 table has are written: they are read once with
//! `PRAGMA table_info` and read again after a "no such column" error, so a
//! D1 table with fewer columns than the local one works. Values go as
//! strings: booleans `0`/`1`, timestamps (`*_at`) ISO-8601 UTC with
//! milliseconds (`2026-12-02T04:11:35.123Z`, the edge's own format), JSON as
//! text, null as `NULL`.
//!
//! A request D1 refuses for its SQL (a row it will not take) is split in
//! halves until the refused row is alone: it fails, its neighbours are
//! written. Upserts and deletes are idempotent, so a request re-sent after
//! a timeout (or a non-atomic batch applied in part) changes nothing twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::api::{CallError, D1Api};
use super::wire::{self, D1Error, SqlError, Statement};
use crate::providers::{Change, PushError, Pushed};

/// The tables pushed to D1, each keyed by `id`.
pub const TABLES: &[&str] = &["prospects", "campaigns", "mailboxes"];

/// Records per `push_batch` (the dispatcher claims this many at once).
pub const BATCH: usize = 1000;

/// Bytes of statements per D1 request at most (the HTTP endpoint's own
/// limit is not documented; 1 MB keeps every request far from any).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The columns of each D1 table, read once (`PRAGMA table_info`).
#[derive(Default)]
pub struct Columns(Mutex<HashMap<String, Arc<Vec<String>>>>);

impl Columns {
    pub async fn of(&self, api: &D1Api, table: &str) -> Result<Arc<Vec<String>>, CallError> {
        if let Some(c) = self.0.lock().ok().and_then(|m| m.get(table).cloned()) {
            return Ok(c);
        }
        let cols = Arc::new(api.columns(table).await?);
        if let Ok(mut m) = self.0.lock() {
            m.insert(table.to_owned(), cols.clone());
        }
        Ok(cols)
    }

    /// Forgets what was read (after a "no such column" error).
    pub fn forget(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }
}

/// One row to write or delete in D1.
#[derive(Debug, Clone)]
pub enum Write {
    Upsert {
        table: String,
        row: Map<String, Value>,
    },
    Delete {
        table: String,
        id: String,
    },
}

impl Write {
    fn table(&self) -> &str {
        match self {
            Write::Upsert { table, .. } | Write::Delete { table, .. } => table,
        }
    }

    /// Roughly the bytes it adds to a request.
    fn size(&self) -> usize {
        match self {
            Write::Upsert { row, .. } => row.iter().map(|(k, v)| k.len() + 8 + value_len(v)).sum(),
            Write::Delete { id, .. } => id.len() + 8,
        }
    }
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        other => other.to_string().len(),
    }
}

/// What a local change writes in D1.
pub fn write_of(change: &Change) -> Result<Write, PushError> {
    if !TABLES.contains(&change.table.as_str()) {
        return Err(PushError::Permanent(format!(
            "{} is not a table syncbridge pushes to D1",
            change.table
        )));
    }
    Ok(match &change.row {
        Some(Value::Object(row)) => Write::Upsert {
            table: change.table.clone(),
            row: row.clone(),
        },
        Some(_) => {
            return Err(PushError::Permanent(
                "the record did not read as a JSON object".into(),
            ))
        }
        None => Write::Delete {
            table: change.table.clone(),
            id: change.record_id.to_string(),
        },
    })
}

/// A value as D1 stores it (see the module's note on formats).
pub fn d1_value(column: &str, v: &Value) -> Option<String> {
    if column.ends_with("_at") {
        if let Some(t) = v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        {
            return Some(
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            );
        }
    }
    wire::param(v)
}

/// The statements writing `writes` (all of one table): upserts of the
/// columns D1 has, then deletes.
fn statements(table: &str, d1_columns: &[String], writes: &[&Write]) -> Vec<Statement> {
    // The key first, then D1's other columns in its order.
    let mut columns: Vec<&str> = vec!["id"];
    columns.extend(d1_columns.iter().map(String::as_str).filter(|c| *c != "id"));
    // Only columns the local rows have: a D1 column syncbridge does not
    // know keeps its value (or default).
    let present: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| {
            writes.iter().any(|w| match w {
                Write::Upsert { row, .. } => row.contains_key(*c),
                Write::Delete { .. } => false,
            })
        })
        .collect();
    let rows: Vec<Vec<Option<String>>> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Upsert { row, .. } => Some(
                present
                    .iter()
                    .map(|c| row.get(*c).and_then(|v| d1_value(c, v)))
                    .collect(),
            ),
            Write::Delete { .. } => None,
        })
        .collect();
    let ids: Vec<String> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Delete { id, .. } => Some(id.clone()),
            Write::Upsert { .. } => None,
        })
        .collect();
    let mut out = if rows.is_empty() {
        Vec::new()
    } else {
        wire::upserts(table, &present, &rows)
    };
    out.extend(wire::deletes(table, "id", &ids));
    out
}

/// What writing a set of rows to D1 did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub requests: u64,
    pub rows: u64,
}

/// Writes `writes` to D1 in as few requests as its limits allow: one
/// result per write, in order, and how many requests it took.
pub async fn write(
    api: &D1Api,
    columns: &Columns,
    writes: &[Write],
) -> (Vec<Result<(), PushError>>, Sent) {
    let mut results: Vec<Option<Result<(), PushError>>> = vec![None; writes.len()];
    let mut sent = Sent::default();
    // Requests of about MAX_REQUEST_BYTES, in order.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for (i, w) in writes.iter().enumerate() {
        let s = w.size();
        match groups.last_mut() {
            Some(g) if size + s <= MAX_REQUEST_BYTES => {
                size += s;
                g.push(i);
            }
            _ => {
                size = s;
                groups.push(vec![i]);
            }
        }
    }
    for group in groups {
        send_group(api, columns, writes, group, &mut results, &mut sent).await;
    }
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(PushError::Transient("not sent".into()))))
        .collect();
    (results, sent)
}

/// Sends one group as a request; a group D1 refuses for its SQL is split
/// in halves until the refused write is alone.
async fn send_group(
    api: &D1Api,
    columns: &Columns,
    writes: &[Write],
    group: Vec<usize>,
    results: &mut [Option<Result<(), PushError>>],
    sent: &mut Sent,
) {
    let mut pending = vec![group];
    let mut refreshed = false;
    while let Some(group) = pending.pop() {
        let outcome = send_once(api, columns, writes, &group, sent).await;
        match outcome {
            Ok(()) => {
                sent.rows += group.len() as u64;
                for &i in &group {
                    results[i] = Some(Ok(()));
                }
            }
            Err(CallError::D1(D1Error::Sql {
                kind: SqlError::NoSuchColumn,
                ..
            })) if !refreshed => {
                // D1's columns changed since they were read: read them
                // again and send the group once more.
                refreshed = true;
                columns.forget();
                pending.push(group);
            }
            Err(CallError::D1(D1Error::Sql { kind, message })) if group.len() > 1 => {
                tracing::debug!(?kind, %message, rows = group.len(), "D1 refused a request: splitting it");
                let mut a = group;
                let b = a.split_off(a.len() / 2);
                pending.push(b);
                pending.push(a);
            }
            Err(e) => {
                let e = push_error(e);
                for &i in &group {
                    results[i] = Some(Err(e.clone()));
                }
            }
        }
    }
}

async fn send_once(
    api: &D1Api,
    columns: &Columns,
    writes: &[Write],
    group: &[usize],
    sent: &mut Sent,
) -> Result<(), CallError> {
    let mut by_table: Vec<(&str, Vec<&Write>)> = Vec::new();
    for &i in group {
        let w = &writes[i];
        match by_table.iter_mut().find(|(t, _)| *t == w.table()) {
            Some((_, ws)) => ws.push(w),
            None => by_table.push((w.table(), vec![w])),
        }
    }
    let mut stmts = Vec::new();
    for (table, ws) in &by_table {
        let cols = columns.of(api, table).await?;
        if cols.is_empty() {
            return Err(CallError::D1(D1Error::Sql {
                kind: SqlError::NoSuchTable,
                message: format!("no such table: {table} (PRAGMA table_info found no columns)"),
            }));
        }
        if !cols.iter().any(|c| c == "id") {
            return Err(CallError::D1(D1Error::Sql {
                kind: SqlError::Other,
                message: format!("the D1 table {table} has no id column to key rows by"),
            }));
        }
        stmts.extend(statements(table, &cols, ws));
    }
    if stmts.is_empty() {
        return Ok(());
    }
    for batch in wire::batches(stmts, MAX_REQUEST_BYTES) {
        sent.requests += 1;
        api.batch(&batch).await?;
    }
    Ok(())
}

/// A D1 failure as the dispatcher retries it: SQL D1 refuses is
/// permanent for that row; anything else (its API, the network) is retried.
pub fn push_error(e: CallError) -> PushError {
    match e {
        CallError::Request(e) => e,
        CallError::D1(D1Error::Sql { kind, message }) => {
            PushError::Permanent(format!("D1 refused the row ({kind:?}): {message}"))
        }
        CallError::D1(e) => PushError::Transient(e.to_string()),
    }
}

/// The dispatcher's batch: every change's write, then one result each.
pub async fn push(
    api: &D1Api,
    columns: &Columns,
    changes: &[Change],
) -> Vec<Result<Pushed, PushError>> {
    let mut out: Vec<Option<Result<Pushed, PushError>>> = vec![None; changes.len()];
    let mut writes = Vec::new();
    let mut index = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        match write_of(c) {
            Ok(w) => {
                writes.push(w);
                index.push(i);
            }
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    let (results, sent) = write(api, columns, &writes).await;
    metrics::counter!("syncbridge_d1_rows_pushed_total").increment(sent.rows);
    for (i, r) in index.into_iter().zip(results) {
        out[i] = Some(r.map(|()| Pushed::default()));
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(PushError::Transient("not sent".into()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_d1_text() {
        assert_eq!(
            d1_value("updated_at", &json!("2026-12-02T05:11:35.123456+01:00")).as_deref(),
            Some("2026-12-02T04:11:35.123Z")
        );
        // Not a timestamp column, or not a timestamp: as it is.
        assert_eq!(
            d1_value("name", &json!("2026-12-02T05:11:35+01:00")).as_deref(),
            Some("2026-12-02T05:11:35+01:00")
        );
        assert_eq!(d1_value("sent_at", &json!("soon")).as_deref(), Some("soon"));
        assert_eq!(d1_value("archived", &json!(true)).as_deref(), Some("1"));
        assert_eq!(d1_value("sent_at", &Value::Null), None);
    }

    #[test]
    fn only_the_d1_tables_columns_are_written() {
        let w = Write::Upsert {
            table: "prospects".into(),
            row: json!({"id": "a", "name": "N", "tier": "gold", "local_only": 1})
                .as_object()
                .unwrap()
                .clone(),
        };
        let d = Write::Delete {
            table: "prospects".into(),
            id: "b".into(),
        };
        let cols = vec!["name".to_string(), "id".into(), "extra".into()];
        let s = statements("prospects", &cols, &[&w, &d]);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].sql,
            r#"INSERT INTO "prospects" ("id", "name") VALUES (?1, ?2) ON CONFLICT ("id") DO UPDATE SET "name" = excluded."name""#
        );
        assert_eq!(s[1].sql, r#"DELETE FROM "prospects" WHERE "id" IN (?1)"#);
        assert_eq!(s[1].params, ["b"]);
    }
}
