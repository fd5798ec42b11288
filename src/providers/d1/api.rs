//! The D1 query endpoint (`POST {D1_API_URL}/accounts/{a}/d1/database/{d}/query`,
//! `Authorization: Bearer`): one statement or a batch, paced to
//! `D1_API_RATE_PER_MIN`, a 429 waited out for its `retry-after`, 5xx and
//! timeouts retried with backoff; D1's error envelope is an error whatever
//! the HTTP status.

use std::time::Duration;

use serde_json::{Map, Value};

use super::config::D1Config;
use super::wire::{self, D1Error, QueryResult, Request, Statement};
use crate::config::Secret;
use crate::providers::outbound::{read_capped, retry_after, retrying, Pacer, PushError};

/// D1's answers are read up to this many bytes (a page of 100 rows of at
/// most 2 MB each fits; a larger answer is an error, not an allocation).
const MAX_ANSWER_BYTES: usize = 64 << 20;

pub struct D1Api {
    http: reqwest::Client,
    url: String,
    token: Secret,
    pacer: Pacer,
    config: D1Config,
}

/// Why a D1 call failed: the request (after its retries), or D1's answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Request(#[from] PushError),
    #[error(transparent)]
    D1(#[from] D1Error),
}

impl D1Api {
    /// `None` when the account, database or token is not configured.
    pub fn new(config: &D1Config, timeout: Duration) -> Option<D1Api> {
        Some(D1Api {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()
                .ok()?,
            url: format!(
                "{}/accounts/{}/d1/database/{}/query",
                config.api_url,
                config.account_id.as_deref()?,
                config.database_id.as_deref()?
            ),
            token: config.api_token.clone()?,
            pacer: Pacer::per_minute(config.rate_per_min),
            config: config.clone(),
        })
    }

    /// Runs one statement and returns its rows.
    pub async fn query(&self, statement: &Statement) -> Result<Vec<Map<String, Value>>, CallError> {
        let results = self.send(&Request::One(statement)).await?;
        Ok(results
            .into_iter()
            .next()
            .map(|r| r.results)
            .unwrap_or_default())
    }

    /// Runs statements as one batch request: each one's result, in order.
    pub async fn batch(&self, statements: &[Statement]) -> Result<Vec<QueryResult>, CallError> {
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        self.send(&Request::Batch { batch: statements }).await
    }

    /// The columns of `table` (`PRAGMA table_info`); empty when it does not
    /// exist.
    pub async fn columns(&self, table: &str) -> Result<Vec<String>, CallError> {
        let rows = self
            .query(&Statement::new(
                format!("PRAGMA table_info({})", wire::ident(table)),
                Vec::new(),
            ))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    async fn send(&self, request: &Request<'_>) -> Result<Vec<QueryResult>, CallError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| PushError::Permanent(format!("encoding the D1 request: {e}")))?;
        let answer = retrying(&self.config.retry, "D1 query", "d1", || {
            self.send_once(&body)
        })
        .await?;
        Ok(wire::parse_answer(&answer)?)
    }

    /// One request: D1's answer bytes for a 2xx or a 4xx carrying its
    /// envelope (a SQL error is a 400 with `errors`), a retryable error for
    /// 429 and 5xx.
    async fn send_once(&self, body: &[u8]) -> Result<Vec<u8>, PushError> {
        self.pacer.wait().await;
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| PushError::from_reqwest(&e))?;
        let status = resp.status();
        metrics::counter!("syncbridge_d1_requests_total", "status" => status.as_str().to_owned())
            .increment(1);
        if status.is_success() || (status.is_client_error() && status.as_u16() != 429) {
            let bytes = read_capped(resp, MAX_ANSWER_BYTES).await?;
            if !status.is_success() && serde_json::from_slice::<Value>(&bytes).is_err() {
                return Err(PushError::Permanent(format!(
                    "D1 answered {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                )));
            }
            return Ok(bytes);
        }
        let wait = retry_after(resp.headers());
        if status.as_u16() == 429 {
            self.pacer
                .hold_off(wait.unwrap_or(Duration::from_secs(60)))
                .await;
        }
        let text = read_capped(resp, 4096).await.unwrap_or_default();
        Err(PushError::from_status(
            status,
            wait,
            &String::from_utf8_lossy(&text),
        ))
    }
}
