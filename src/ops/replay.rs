//! `syncbridge replay`: sends recorded deliveries to a running server over
//! HTTP, exactly as recorded (or re-signed for now with `--resign`), and
//! compares each answer with the fixture's `expect`, re-signed or not.
//! `--resign` re-signs only what is expected to verify: a fixture expected
//! to get 401 (a bad or missing signature) goes as recorded and must still
//! get its 401. A delivery whose provider cannot verify it here (its secret
//! is unset) is not as expected, and the result says why. Replay "without
//! a server" starts the service in-process on a loopback port and replays
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
    /// `None` when the fixture has no expectation.
    pub as_expected: Option<bool>,
    /// The expectation, as `200 accepted`.
    pub expected: Option<String>,
    /// Why it is not as expected, when syncbridge can tell (a secret that
    /// is unset, a provider that is disabled).
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
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
    /// Advanced once per delivery (a progress bar on a terminal).
    pub progress: Option<indicatif::ProgressBar>,
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
            if let Some(bar) = &self.progress {
                bar.inc(1);
            }
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
        let provider = f.provider().map(|p| (p, self.providers.get(p)));
        let expected = f.expect.as_ref().map(|e| match &e.outcome {
            Some(o) => format!("{} {o}", e.status),
            None => e.status.to_string(),
        });
        let unsent = |note: String| ReplayResult {
            path: path.to_owned(),
            status: 0,
            answer: "not sent".into(),
            as_expected: f.expect.as_ref().map(|_| false),
            expected: expected.clone(),
            note: Some(note),
        };
        let route = if f.path.contains(TOKEN_PLACEHOLDER) {
            let token = provider
                .as_ref()
                .and_then(|(_, p)| p.as_ref().ok())
                .and_then(|p| p.path_token());
            match token {
                Some(token) => f.path.replace(TOKEN_PLACEHOLDER, token.expose()),
                None => {
                    let name = provider.map_or("its provider".into(), |(p, _)| p.to_string());
                    return Ok(unsent(format!(
                        "the path has {TOKEN_PLACEHOLDER} but {name}'s webhook token is not set"
                    )));
                }
            }
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
        // Whether this provider could sign the delivery here (its secret is
        // set): re-signing a copy tells, without touching what is sent.
        let unsignable = match &provider {
            Some((_, Ok(p))) => p
                .resign(&mut headers.clone(), &body, Utc::now())
                .err()
                .map(str::to_owned),
            Some((_, Err(why))) => Some((*why).to_owned()),
            None => None,
        };
        // Only a delivery expected to verify is re-signed: a bad signature
        // stays bad.
        let verifies = f.expect.as_ref().is_none_or(|e| e.status != 401);
        if self.resign && verifies {
            if let Some((_, Ok(p))) = &provider {
                let _ = p.resign(&mut headers, &body, Utc::now());
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
        let as_expected = f.expect.as_ref().map(|e| {
            e.status == status
                && match e.outcome.as_deref() {
                    Some("accepted") => answer == "accepted",
                    Some("duplicate") => answer == "duplicate",
                    _ => true,
                }
        });
        let note = match as_expected {
            Some(false) => unsignable.or_else(|| {
                (self.resign && !verifies)
                    .then(|| "sent as recorded (expected not to verify)".to_owned())
            }),
            _ => None,
        };
        Ok(ReplayResult {
            path: path.to_owned(),
            status,
            answer,
            as_expected,
            expected,
            note,
        })
    }
}
