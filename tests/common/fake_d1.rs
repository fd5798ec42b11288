//! A fake Cloudflare D1 query endpoint (PROVIDERS.md §5) over a real
//! SQLite (`rusqlite`, bundled): `POST /client/v4/accounts/{a}/d1/database/{d}/query`
//! with `{sql, params}` or `{batch: [...]}`, `Authorization: Bearer`
//! checked, parameters bound as TEXT (D1 types them as strings), the exact
//! envelope (`errors`, `messages`, `result[{results, success, meta}]`,
//! `success`), SQL errors as 400 with code 7500 and SQLite's message (`no
//! such table`, `UNIQUE constraint failed`, more than 100 bound parameters
//! in a statement, a statement over 100 KB), a batch applied all or nothing,
//! and injectable 429 (`retry-after`), 5xx, slow answers and dropped
//! connections.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rusqlite::types::ValueRef;
use serde_json::{json, Map, Value};

pub const TOKEN: &str = "d1-test-token-0123456789";
pub const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
pub const DATABASE: &str = "1d3f6a2b-7c8e-4f90-a1b2-c3d4e5f60718";

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and an API error envelope.
    Status(u16),
    /// 429 with `retry-after: secs`.
    RateLimited(u64),
    /// Run the request, answer after this long.
    Slow(Duration),
    /// Close the connection without answering (nothing is run).
    Drop,
    /// Answer this request normally (to fail a later one).
    Pass,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub statements: Vec<String>,
    pub status: u16,
    pub at: Instant,
}

struct Inner {
    db: rusqlite::Connection,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
}

#[derive(Clone)]
pub struct FakeD1 {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

fn envelope_error(status: u16, code: i64, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"result": [], "success": false,
                    "errors": [{"code": code, "message": message}], "messages": []})),
    )
        .into_response()
}

impl FakeD1 {
    /// Starts the fake on a loopback port; `schema` is run first.
    pub async fn start(schema: &str) -> FakeD1 {
        let db = rusqlite::Connection::open_in_memory().expect("an in-memory SQLite");
        db.execute_batch(schema).expect("the fake D1's schema");
        let mut fake = FakeD1 {
            inner: Arc::new(Mutex::new(Inner {
                db,
                requests: Vec::new(),
                faults: VecDeque::new(),
            })),
            url: String::new(),
        };
        let app = Router::new()
            .route(
                "/client/v4/accounts/{account}/d1/database/{database}/query",
                post(query),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        fake.url = format!("http://{}/client/v4", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// Runs SQL directly (as the edge worker would).
    pub fn exec(&self, sql: &str) {
        self.inner
            .lock()
            .unwrap()
            .db
            .execute_batch(sql)
            .expect("fake D1 SQL");
    }

    /// Rows of a query, as JSON objects.
    pub fn rows(&self, sql: &str) -> Vec<Map<String, Value>> {
        let inner = self.inner.lock().unwrap();
        run(&inner.db, sql, &[]).expect("fake D1 query").0
    }

    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }
}

/// Runs one statement: its rows and `meta`.
fn run(
    db: &rusqlite::Connection,
    sql: &str,
    params: &[String],
) -> Result<(Vec<Map<String, Value>>, Value), String> {
    if params.len() > 100 {
        return Err("too many SQL variables: SQLITE_ERROR".into());
    }
    if sql.len() > 100_000 {
        return Err("statement too long: SQLITE_TOOBIG".into());
    }
    let started = Instant::now();
    let mut stmt = db.prepare(sql).map_err(|e| format!("{e}: SQLITE_ERROR"))?;
    let names: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let before = db.total_changes();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(|e| format!("{e}: SQLITE_ERROR"))?;
    let mut out = Vec::new();
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                let kind = if e.to_string().contains("UNIQUE") {
                    "SQLITE_CONSTRAINT"
                } else {
                    "SQLITE_ERROR"
                };
                return Err(format!("{e}: {kind}"));
            }
        };
        let mut m = Map::new();
        for (i, name) in names.iter().enumerate() {
            let v = match row.get_ref(i).map_err(|e| e.to_string())? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => json!(n),
                ValueRef::Real(f) => json!(f),
                ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => json!(b),
            };
            m.insert(name.clone(), v);
        }
        out.push(m);
    }
    drop(rows);
    let changes = db.total_changes() - before;
    let meta = json!({
        "changed_db": changes > 0, "changes": changes,
        "duration": started.elapsed().as_secs_f64() * 1000.0,
        "last_row_id": db.last_insert_rowid(), "rows_read": out.len(),
        "rows_written": changes, "served_by_primary": true, "served_by_region": "WNAM",
        "size_after": 16384, "timings": {"sql_duration_ms": 0.1},
    });
    Ok((out, meta))
}

fn statement(v: &Value) -> Result<(String, Vec<String>), String> {
    let sql = v
        .get("sql")
        .and_then(Value::as_str)
        .ok_or("a statement needs sql")?
        .to_owned();
    let params = match v.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| match p {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("params must be strings, not {other}")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("params must be an array".into()),
    };
    Ok((sql, params))
}

async fn query(
    State(fake): State<FakeD1>,
    Path((account, database)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    let parsed: Result<Vec<(String, Vec<String>)>, String> = serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("the body is not JSON: {e}"))
        .and_then(|v| match v.get("batch") {
            Some(Value::Array(items)) => items.iter().map(statement).collect(),
            Some(_) => Err("batch must be an array".into()),
            None => statement(&v).map(|s| vec![s]),
        });
    let slow = {
        let mut inner = fake.inner.lock().unwrap();
        let statements: Vec<String> = parsed
            .as_ref()
            .map(|p| p.iter().map(|(s, _)| s.clone()).collect())
            .unwrap_or_default();
        let mut record = |status: u16| {
            inner.requests.push(Recorded {
                statements: statements.clone(),
                status,
                at: Instant::now(),
            })
        };
        if !authorized {
            record(401);
            return envelope_error(401, 10000, "Authentication error");
        }
        if account != ACCOUNT || database != DATABASE {
            record(404);
            return envelope_error(404, 7404, "Could not route to the database");
        }
        match inner.faults.pop_front() {
            Some(Fault::Status(s)) => {
                inner.requests.push(Recorded {
                    statements,
                    status: s,
                    at: Instant::now(),
                });
                return envelope_error(s, 7000, "Internal error");
            }
            Some(Fault::RateLimited(secs)) => {
                inner.requests.push(Recorded {
                    statements,
                    status: 429,
                    at: Instant::now(),
                });
                let mut r = envelope_error(
                    429,
                    971,
                    "Please wait and consider throttling your request speed",
                );
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().expect("a number"));
                return r;
            }
            Some(Fault::Drop) => {
                inner.requests.push(Recorded {
                    statements,
                    status: 0,
                    at: Instant::now(),
                });
                drop(inner);
                // Hyper closes the connection when the handler panics.
                panic!("fake D1: dropping the connection as instructed");
            }
            Some(Fault::Slow(d)) => Some(d),
            Some(Fault::Pass) | None => None,
        }
    };
    let statements = match parsed {
        Ok(s) => s,
        Err(e) => return envelope_error(400, 7400, &e),
    };
    let answer = {
        let mut inner = fake.inner.lock().unwrap();
        let batch = statements.len() > 1;
        let result = (|| {
            if batch {
                inner.db.execute_batch("BEGIN").map_err(|e| e.to_string())?;
            }
            let mut results = Vec::new();
            for (sql, params) in &statements {
                match run(&inner.db, sql, params) {
                    Ok((rows, meta)) => {
                        results.push(json!({"results": rows, "success": true, "meta": meta}))
                    }
                    Err(e) => {
                        if batch {
                            let _ = inner.db.execute_batch("ROLLBACK");
                        }
                        return Err(e);
                    }
                }
            }
            if batch {
                inner
                    .db
                    .execute_batch("COMMIT")
                    .map_err(|e| e.to_string())?;
            }
            Ok(results)
        })();
        let status = if result.is_ok() { 200 } else { 400 };
        inner.requests.push(Recorded {
            statements: statements.iter().map(|(s, _)| s.clone()).collect(),
            status,
            at: Instant::now(),
        });
        result
    };
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    match answer {
        Ok(results) => {
            Json(json!({"errors": [], "messages": [], "success": true, "result": results}))
                .into_response()
        }
        Err(e) => envelope_error(400, 7500, &e),
    }
}
