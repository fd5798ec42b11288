//! `syncbridge replay`: sends recorded deliveries to a running server over
//! HTTP, exactly as recorded (or re-signed for now with `--resign`), and
//! compares each answer with the fixture's `expect`. Replay "without a
//! server" starts the service in-process on a loopback port and replays
//! into that, so both paths go through the same HTTP front.

use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::Utc;

use super::fixtures::{Fixture, TOKEN_PLACEHOLDER};
use crate::providers::Registry;

#[derive(Debug)]
pub struct ReplayResult {
    pub path: PathBuf,
    pub status: u16,
    /// `status` of the JSON answer (`accepted`, `duplicate`, …) or the
    /// error detail.
    pub answer: String,
    /// `None` when the fixture has no expectation or it was re-signed.
    pub as_expected: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}: the path has {{token}} but its provider's webhook token is not set")]
    NoToken(PathBuf),
    #[error("{path}: {message}")]
    Fixture { path: PathBuf, message: String },
    #[error("{path}: could not deliver to {url}: {source}")]
    Http {
        path: PathBuf,
        url: String,
        source: reqwest::Error,
    },
}

pub struct Replayer<'a> {
    pub target: String,
    pub providers: &'a Registry,
    pub resign: bool,
    /// Sent as the bearer token to `/api/…` paths (a pulled provider's
    /// deliveries are replayed through the admin API).
    pub admin_token: Option<crate::config::Secret>,
}

impl Replayer<'_> {
    pub async fn replay(
        &self,
        fixtures: &[(PathBuf, Fixture)],
    ) -> Result<Vec<ReplayResult>, ReplayError> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|source| ReplayError::Http {
                path: PathBuf::new(),
                url: self.target.clone(),
                source,
            })?;
        let mut out = Vec::with_capacity(fixtures.len());
        for (path, f) in fixtures {
            out.push(self.send(&client, path, f).await?);
        }
        Ok(out)
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        path: &Path,
        f: &Fixture,
    ) -> Result<ReplayResult, ReplayError> {
        let bad = |message: String| ReplayError::Fixture {
            path: path.to_owned(),
            message,
        };
        let body = f.body_bytes().map_err(bad)?;
        let route = if f.path.contains(TOKEN_PLACEHOLDER) {
            let token = f
                .provider()
                .and_then(|p| self.providers.get(p).ok())
                .and_then(|p| p.path_token())
                .ok_or_else(|| ReplayError::NoToken(path.to_owned()))?;
            f.path.replace(TOKEN_PLACEHOLDER, token.expose())
        } else {
            f.path.clone()
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &f.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| bad(format!("header {k:?}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| bad(format!("header {k:?}: {e}")))?;
            headers.insert(name, value);
        }
        if self.resign {
            if let Some(p) = f.provider().and_then(|p| self.providers.get(p).ok()) {
                p.resign(&mut headers, &body, Utc::now());
            }
        }
        if route.starts_with("/api/") {
            if let Some(token) = &self.admin_token {
                let value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|e| bad(format!("the admin token cannot be a header: {e}")))?;
                headers.insert(axum::http::header::AUTHORIZATION, value);
            }
        }
        let method = reqwest::Method::from_bytes(f.method.as_bytes())
            .map_err(|e| bad(format!("method {:?}: {e}", f.method)))?;
        let url = format!("{}{}", self.target.trim_end_matches('/'), route);
        let resp = client
            .request(method, &url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|source| ReplayError::Http {
                path: path.to_owned(),
                url: format!("{}{}", self.target.trim_end_matches('/'), f.path),
                source,
            })?;
        let status = resp.status().as_u16();
        let json: serde_json::Value = resp.json().await.unwrap_or_default();
        let answer = json
            .get("status")
            .or_else(|| json.get("detail"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let as_expected = match (&f.expect, self.resign) {
            (Some(e), false) => Some(
                e.status == status
                    && match e.outcome.as_deref() {
                        Some("accepted") => answer == "accepted",
                        Some("duplicate") => answer == "duplicate",
                        _ => true,
                    },
            ),
            _ => None,
        };
        Ok(ReplayResult {
            path: path.to_owned(),
            status,
            answer,
            as_expected,
        })
    }
}
