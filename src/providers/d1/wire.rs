//! The D1 HTTP API's wire format (PROVIDERS.md §5): statements with their
//! parameters as strings, the response envelope (an error is `success:
//! false` or any `errors` entry, whatever the HTTP status), SQL error
//! classes, and the chunking that keeps every statement within D1's limits
//! (100 bound parameters, 100 KB).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Bound parameters per statement at most (D1's limit).
pub const MAX_PARAMS: usize = 100;
/// Bytes of SQL text and parameters per statement at most (D1 allows
/// 100 KB of statement; parameters are counted too, to stay clear of it).
pub const MAX_STATEMENT_BYTES: usize = 100_000;

/// One statement: SQL with `?N` placeholders and their values as strings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    pub sql: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<String>) -> Statement {
        Statement {
            sql: sql.into(),
            params,
        }
    }

    fn bytes(&self) -> usize {
        self.sql.len() + self.params.iter().map(String::len).sum::<usize>()
    }
}

/// A request body: one statement, or a batch.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Request<'a> {
    One(&'a Statement),
    Batch { batch: &'a [Statement] },
}

/// `{code, message}` of an `errors` or `messages` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Info {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// The result of one statement.
#[derive(Debug, Clone, Deserialize)]
pub struct QueryResult {
    #[serde(default)]
    pub results: Vec<Map<String, Value>>,
    #[serde(default = "yes")]
    pub success: bool,
    #[serde(default)]
    pub meta: Option<Map<String, Value>>,
    /// Set by some servers on a failed statement inside a batch.
    #[serde(default)]
    pub error: Option<String>,
}

fn yes() -> bool {
    true
}

impl QueryResult {
    /// Rows the statement changed (`meta.changes`).
    pub fn changes(&self) -> u64 {
        self.meta
            .as_ref()
            .and_then(|m| m.get("changes"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<Info>,
    #[serde(default)]
    result: Option<Vec<QueryResult>>,
}

/// What went wrong with a D1 request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum D1Error {
    /// The SQL failed (code 7500): its class and D1's message.
    #[error("D1 refused the SQL ({kind:?}): {message}")]
    Sql { kind: SqlError, message: String },
    /// Any other error entry (authentication, quota, …).
    #[error("D1 answered error {code}: {message}")]
    Api { code: i64, message: String },
    /// The answer is not D1's envelope.
    #[error("D1's answer is not its envelope: {0}")]
    Malformed(String),
}

/// The SQL errors syncbridge acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlError {
    NoSuchTable,
    /// The table lacks a column written (its columns are read again).
    NoSuchColumn,
    UniqueViolation,
    /// Too many bound parameters, or a statement or row too big.
    TooBig,
    Other,
}

impl SqlError {
    pub fn of(message: &str) -> SqlError {
        let m = message.to_ascii_lowercase();
        if m.contains("no such table") {
            SqlError::NoSuchTable
        } else if m.contains("no such column") || m.contains("has no column named") {
            SqlError::NoSuchColumn
        } else if m.contains("unique constraint failed") {
            SqlError::UniqueViolation
        } else if m.contains("too many sql variables")
            || m.contains("sqlite_toobig")
            || m.contains("too big")
        {
            SqlError::TooBig
        } else {
            SqlError::Other
        }
    }
}

/// Reads D1's answer: the statements' results, or the first error (an
/// `errors` entry or `success: false`, whatever the HTTP status; a failed
/// statement inside a batch too).
pub fn parse_answer(body: &[u8]) -> Result<Vec<QueryResult>, D1Error> {
    let e: Envelope =
        serde_json::from_slice(body).map_err(|err| D1Error::Malformed(err.to_string()))?;
    if let Some(first) = e.errors.first() {
        return Err(classify(first));
    }
    if !e.success {
        return Err(D1Error::Api {
            code: 0,
            message: "success is false and no error was given".into(),
        });
    }
    let results = e.result.unwrap_or_default();
    if let Some(failed) = results.iter().find(|r| !r.success) {
        let message = failed
            .error
            .clone()
            .unwrap_or_else(|| "a statement failed".into());
        return Err(D1Error::Sql {
            kind: SqlError::of(&message),
            message,
        });
    }
    Ok(results)
}

fn classify(info: &Info) -> D1Error {
    if info.code == 7500 {
        D1Error::Sql {
            kind: SqlError::of(&info.message),
            message: info.message.chars().take(500).collect(),
        }
    } else {
        D1Error::Api {
            code: info.code,
            message: info.message.chars().take(500).collect(),
        }
    }
}

/// A value as a D1 parameter: strings as they are, booleans as `0`/`1`,
/// numbers in their JSON form, objects and arrays as JSON text; `None` for
/// null (written as the literal `NULL`, since parameters are strings).
pub fn param(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A quoted SQLite identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Upserts of `rows` (each a value per column, in `columns`' order) into
/// `table`, keyed by `columns[0]`, as few statements as D1's limits allow:
/// multi-row `INSERT … ON CONFLICT DO UPDATE`, nulls as `NULL` literals.
pub fn upserts(table: &str, columns: &[&str], rows: &[Vec<Option<String>>]) -> Vec<Statement> {
    let Some(key) = columns.first() else {
        return Vec::new();
    };
    let head = format!(
        "INSERT INTO {} ({}) VALUES ",
        ident(table),
        columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let updates: Vec<String> = columns[1..]
        .iter()
        .map(|c| format!("{0} = excluded.{0}", ident(c)))
        .collect();
    let tail = if updates.is_empty() {
        format!(" ON CONFLICT ({}) DO NOTHING", ident(key))
    } else {
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            ident(key),
            updates.join(", ")
        )
    };
    let mut out = Vec::new();
    let mut tuples: Vec<String> = Vec::new();
    let mut params: Vec<String> = Vec::new();
    let flush = |tuples: &mut Vec<String>, params: &mut Vec<String>, out: &mut Vec<Statement>| {
        if !tuples.is_empty() {
            out.push(Statement::new(
                format!("{head}{}{tail}", tuples.join(", ")),
                std::mem::take(params),
            ));
            tuples.clear();
        }
    };
    let fixed = head.len() + tail.len();
    for row in rows {
        let bound = row.iter().filter(|v| v.is_some()).count();
        let row_bytes: usize = row.iter().flatten().map(String::len).sum::<usize>() + 8 * row.len();
        let current: usize = fixed
            + tuples.iter().map(String::len).sum::<usize>()
            + params.iter().map(String::len).sum::<usize>();
        if !tuples.is_empty()
            && (params.len() + bound > MAX_PARAMS || current + row_bytes > MAX_STATEMENT_BYTES)
        {
            flush(&mut tuples, &mut params, &mut out);
        }
        let cells: Vec<String> = row
            .iter()
            .map(|v| match v {
                Some(v) => {
                    params.push(v.clone());
                    format!("?{}", params.len())
                }
                None => "NULL".into(),
            })
            .collect();
        tuples.push(format!("({})", cells.join(", ")));
    }
    flush(&mut tuples, &mut params, &mut out);
    out
}

/// `DELETE`s of these keys from `table`, at most [`MAX_PARAMS`] a
/// statement.
pub fn deletes(table: &str, key: &str, ids: &[String]) -> Vec<Statement> {
    ids.chunks(MAX_PARAMS)
        .map(|chunk| {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
            Statement::new(
                format!(
                    "DELETE FROM {} WHERE {} IN ({})",
                    ident(table),
                    ident(key),
                    marks.join(", ")
                ),
                chunk.to_vec(),
            )
        })
        .collect()
}

/// Splits statements into batches of at most `max_bytes` (one statement
/// larger than that goes alone).
pub fn batches(statements: Vec<Statement>, max_bytes: usize) -> Vec<Vec<Statement>> {
    let mut out: Vec<Vec<Statement>> = Vec::new();
    let mut size = 0;
    for s in statements {
        let b = s.bytes();
        match out.last_mut() {
            Some(last) if size + b <= max_bytes => {
                size += b;
                last.push(s);
            }
            _ => {
                size = b;
                out.push(vec![s]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_are_errors_whatever_the_status() {
        let sql = br#"{"result":[],"success":false,"errors":[{"code":7500,"message":"UNIQUE constraint failed: leads.id: SQLITE_CONSTRAINT"}],"messages":[]}"#;
        assert!(matches!(
            parse_answer(sql),
            Err(D1Error::Sql {
                kind: SqlError::UniqueViolation,
                ..
            })
        ));
        // An error entry under success: true is still an error.
        let odd = br#"{"result":[],"success":true,"errors":[{"code":10000,"message":"Authentication error"}]}"#;
        assert!(matches!(
            parse_answer(odd),
            Err(D1Error::Api { code: 10000, .. })
        ));
        assert!(parse_answer(br#"{"success":false,"errors":[]}"#).is_err());
        assert!(matches!(
            parse_answer(b"<html>"),
            Err(D1Error::Malformed(_))
        ));
        let failed_in_batch = br#"{"success":true,"errors":[],"result":[{"success":true,"results":[]},{"success":false,"error":"no such table: nope"}]}"#;
        assert!(matches!(
            parse_answer(failed_in_batch),
            Err(D1Error::Sql {
                kind: SqlError::NoSuchTable,
                ..
            })
        ));
        let ok = br#"{"errors":[],"messages":[],"success":true,"result":[{"success":true,"results":[{"id":"L-1"}],"meta":{"changes":0}}]}"#;
        let r = parse_answer(ok).unwrap();
        assert_eq!(r[0].results[0]["id"], "L-1");
    }

    #[test]
    fn sql_errors_are_classified() {
        for (m, k) in [
            (
                "no such table: raw_mails: SQLITE_ERROR",
                SqlError::NoSuchTable,
            ),
            (
                "table prospects has no column named tier: SQLITE_ERROR",
                SqlError::NoSuchColumn,
            ),
            ("too many SQL variables", SqlError::TooBig),
            ("string or blob too big: SQLITE_TOOBIG", SqlError::TooBig),
            ("near \"x\": syntax error", SqlError::Other),
        ] {
            assert_eq!(SqlError::of(m), k, "{m}");
        }
    }

    #[test]
    fn params_are_strings_and_nulls_literals() {
        assert_eq!(param(&json!(true)).as_deref(), Some("1"));
        assert_eq!(param(&json!(false)).as_deref(), Some("0"));
        assert_eq!(param(&json!(42)).as_deref(), Some("42"));
        assert_eq!(param(&json!("a")).as_deref(), Some("a"));
        assert_eq!(param(&json!({"k": 1})).as_deref(), Some(r#"{"k":1}"#));
        assert_eq!(param(&Value::Null), None);
        let s = upserts("t", &["id", "name"], &[vec![Some("1".into()), None]]);
        assert_eq!(
            s[0].sql,
            r#"INSERT INTO "t" ("id", "name") VALUES (?1, NULL) ON CONFLICT ("id") DO UPDATE SET "name" = excluded."name""#
        );
        assert_eq!(s[0].params, ["1"]);
    }

    #[test]
    fn upserts_stay_within_the_parameter_and_size_limits() {
        let cols = ["id", "a", "b", "c", "d", "e", "f"];
        let rows: Vec<Vec<Option<String>>> = (0..1000)
            .map(|i| cols.iter().map(|c| Some(format!("{c}{i}"))).collect())
            .collect();
        let s = upserts("prospects", &cols, &rows);
        assert!(s.iter().all(|s| s.params.len() <= MAX_PARAMS));
        assert_eq!(s.iter().map(|s| s.params.len()).sum::<usize>(), 7000);
        assert_eq!(s.len(), 1000usize.div_ceil(100 / 7));
        // Large values: the statement's bytes bound it instead.
        let big: Vec<Vec<Option<String>>> = (0..10)
            .map(|i| vec![Some(i.to_string()), Some("x".repeat(30_000))])
            .collect();
        let s = upserts("t", &["id", "body"], &big);
        assert!(s.iter().all(|s| s.bytes() <= MAX_STATEMENT_BYTES));
        assert_eq!(s.iter().map(|s| s.params.len()).sum::<usize>(), 20);
        // A single row over the limit still goes (alone).
        let huge = vec![vec![Some("1".into()), Some("x".repeat(200_000))]];
        assert_eq!(upserts("t", &["id", "body"], &huge).len(), 1);
    }

    #[test]
    fn deletes_and_batches_chunk() {
        let ids: Vec<String> = (0..250).map(|i| i.to_string()).collect();
        let d = deletes("campaigns", "id", &ids);
        assert_eq!(d.len(), 3);
        assert_eq!(d[2].params.len(), 50);
        assert!(d[0].sql.ends_with("?100)"));
        let b = batches(d, 700);
        assert!(b.len() >= 2);
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 3);
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }
}
