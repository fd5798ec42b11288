//! Golden final state for a fixture folder: `expected-state.json` beside
//! the fixtures names queries over the synced tables and the rows each must
//! return once the folder is replayed into a fresh database. `replay`
//! asserts them and prints a diff; `replay --write-state` records what the
//! queries return now (the golden files are updated on purpose, never by a
//! test).
//!
//! The queries are the folder owner's, run as written: one `SELECT` each,
//! in a `READ ONLY` transaction with a statement timeout, wrapped as
//! `SELECT to_jsonb(q) FROM (<query>) q` (a second statement cannot ride
//! along: the extended protocol takes one). Rows compare as a multiset of
//! JSON objects, so a query's order does not matter.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file's name in a fixture folder.
pub const FILE: &str = "expected-state.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExpectedState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub checks: Vec<StateCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateCheck {
    pub name: String,
    pub query: String,
    pub rows: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: check {name:?}: {message}")]
    Query {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub name: String,
    /// Expected, not returned.
    pub missing: Vec<Value>,
    /// Returned, not expected.
    pub extra: Vec<Value>,
    pub observed: Vec<Value>,
}

impl Outcome {
    pub fn holds(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }
}

/// The folders among `paths` that carry an `expected-state.json`.
pub fn files(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| p.join(FILE))
        .filter(|f| f.is_file())
        .collect()
}

pub fn read(path: &Path) -> Result<ExpectedState, StateError> {
    let bad = |message: String| StateError::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
}

pub fn write(path: &Path, state: &ExpectedState) -> Result<(), StateError> {
    let mut text = serde_json::to_string_pretty(state).map_err(|e| StateError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| StateError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Runs every check of `state` (read from `path`) against the database.
pub async fn verify(
    c: &mut tokio_postgres::Client,
    path: &Path,
    state: &ExpectedState,
) -> Result<Vec<Outcome>, StateError> {
    let tx = c.build_transaction().read_only(true).start().await?;
    tx.batch_execute("SET LOCAL statement_timeout = '10s'")
        .await?;
    let mut out = Vec::with_capacity(state.checks.len());
    for check in &state.checks {
        let query = check.query.trim().trim_end_matches(';');
        let observed: Vec<Value> = tx
            .query(&format!("SELECT to_jsonb(q) FROM (\n{query}\n) AS q"), &[])
            .await
            .map_err(|e| StateError::Query {
                path: path.to_owned(),
                name: check.name.clone(),
                message: e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
            })?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut extra = observed.clone();
        let mut missing = Vec::new();
        for want in &check.rows {
            match extra.iter().position(|got| got == want) {
                Some(i) => {
                    extra.remove(i);
                }
                None => missing.push(want.clone()),
            }
        }
        out.push(Outcome {
            name: check.name.clone(),
            missing,
            extra,
            observed,
        });
    }
    tx.rollback().await?;
    Ok(out)
}
