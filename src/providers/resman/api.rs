//! ResMan's two APIs (PROVIDERS.md Part B §3): the legacy form-POST methods
//! (`MITS/PostLeadManagement4_0` to push a lead, `MITS/SearchProspects` to
//! find one), answering the MITS XML envelope, and the Partners API
//! (`GET /Prospects`, JSON, Basic auth and `ResMan-Account-Id`) the polls
//! read. Requests are paced to `RESMAN_API_RATE`; reads are retried in
//! line (5xx, timeouts, 429 with its `Retry-After`); a lead POST is sent
//! once per call — its retry is the dispatcher's, which searches first.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::config::ResManConfig;
use super::wire::{self, Envelope, MitsError, MitsProspect};
use crate::config::Secret;
use crate::providers::outbound::{
    read_capped, retry_after, retrying, Pacer, PushError, MAX_RESPONSE_BYTES,
};

/// The ResMan property a call is about: its account and property ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub account_id: String,
    pub property_id: String,
}

/// Why a ResMan call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Request(#[from] PushError),
    #[error(transparent)]
    Mits(#[from] MitsError),
    /// A search window too large for ResMan (502 "buffer overflow").
    #[error("ResMan's buffer overflowed for this window")]
    Overflow,
}

impl CallError {
    /// The error as the dispatcher retries it.
    pub fn into_push(self) -> PushError {
        match self {
            CallError::Request(e) => e,
            CallError::Mits(e) if e.is_permanent() => PushError::Permanent(e.to_string()),
            CallError::Mits(e) => PushError::Transient(e.to_string()),
            CallError::Overflow => PushError::Transient(self.to_string()),
        }
    }
}

/// What a prospect search looks for.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub modified_from: Option<DateTime<Utc>>,
    pub modified_to: Option<DateTime<Utc>>,
}

pub struct ResManApi {
    http: reqwest::Client,
    config: ResManConfig,
    partner_id: String,
    key: Secret,
    pacer: Pacer,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Windows narrower than this are not halved again.
const MIN_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl ResManApi {
    /// `None` when the partner id or key is not configured.
    pub fn new(config: &ResManConfig, timeout: Duration) -> Option<ResManApi> {
        Some(ResManApi {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()
                .ok()?,
            partner_id: config.integration_partner_id.clone()?,
            key: config.api_key.clone()?,
            pacer: Pacer::per_second(config.api_rate),
            config: config.clone(),
        })
    }

    /// Pushes one lead (created, or updated when it carries its
    /// ProspectID): the prospects ResMan answers with. Sent once.
    pub async fn post_lead(
        &self,
        target: &Target,
        lead: &wire::Lead,
    ) -> Result<Envelope, CallError> {
        let xml = wire::lead_xml(lead);
        let body = self
            .legacy_once("MITS/PostLeadManagement4_0", target, &[("Xml", xml)])
            .await?;
        Ok(wire::parse_envelope(&body)?)
    }

    /// `MITS/SearchProspects`: prospects matching `search`. A time window
    /// ResMan overflows on (502 "buffer overflow") is halved, each half
    /// searched, down to a minute.
    pub async fn search(
        &self,
        target: &Target,
        search: &Search,
    ) -> Result<Vec<MitsProspect>, CallError> {
        let mut out = Vec::new();
        let mut windows = vec![(search.modified_from, search.modified_to)];
        while let Some((from, to)) = windows.pop() {
            let mut form: Vec<(&str, String)> = Vec::new();
            if let Some(e) = &search.email {
                form.push(("Email", e.clone()));
            }
            if let Some(p) = &search.phone {
                form.push(("Phone", p.clone()));
            }
            if let Some(f) = from {
                form.push(("ModifiedStartDateTime", rfc3339(f)));
            }
            if let Some(t) = to {
                form.push(("ModifiedEndDateTime", rfc3339(t)));
            }
            let answer = retrying(
                &self.config.retry,
                "ResMan SearchProspects",
                "resman",
                || self.legacy_read("MITS/SearchProspects", target, &form),
            )
            .await;
            match answer {
                Ok(Some(body)) => out.extend(wire::parse_envelope(&body)?.prospects),
                Ok(None) => match (from, to) {
                    (Some(f), Some(t)) if t - f > MIN_WINDOW => {
                        let mid = f + (t - f) / 2;
                        windows.push((Some(mid), Some(t)));
                        windows.push((Some(f), Some(mid)));
                    }
                    _ => return Err(CallError::Overflow),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// `GET /Prospects?propertyId=&modifiedSince=`: the prospects of a
    /// property modified since then, as JSON values (each parsed by the
    /// caller, so one bad prospect fails alone).
    pub async fn prospects(
        &self,
        target: &Target,
        modified_since: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, CallError> {
        let query = [
            ("propertyId", target.property_id.clone()),
            ("modifiedSince", rfc3339(modified_since)),
        ];
        let body = retrying(
            &self.config.retry,
            "ResMan GET /Prospects",
            "resman",
            || self.get_once("/Prospects", target, &query),
        )
        .await?;
        let answer: wire::ProspectsAnswer = serde_json::from_slice(&body)
            .map_err(|e| PushError::Transient(format!("ResMan's prospects are not JSON: {e}")))?;
        Ok(answer.prospects)
    }

    async fn get_once(
        &self,
        path: &str,
        target: &Target,
        query: &[(&str, String)],
    ) -> Result<Vec<u8>, PushError> {
        self.pacer.wait().await;
        let resp = self
            .http
            .get(format!("{}{path}", self.config.api_url))
            .basic_auth(&self.partner_id, Some(self.key.expose()))
            .header("ResMan-Account-Id", &target.account_id)
            .header(reqwest::header::ACCEPT, "application/json")
            .query(query)
            .send()
            .await
            .map_err(|e| PushError::from_reqwest(&e))?;
        self.answer(resp).await
    }

    /// A legacy form POST retried in line: `None` for a 502 "buffer
    /// overflow" (the caller narrows the window).
    async fn legacy_read(
        &self,
        method: &str,
        target: &Target,
        fields: &[(&str, String)],
    ) -> Result<Option<Vec<u8>>, PushError> {
        match self.legacy_once(method, target, fields).await {
            Ok(body) => Ok(Some(body)),
            Err(CallError::Overflow) => Ok(None),
            Err(CallError::Request(e)) => Err(e),
            Err(CallError::Mits(e)) => Err(PushError::Permanent(e.to_string())),
        }
    }

    /// One legacy form POST: the answer's bytes (its envelope is the
    /// caller's to read, whatever the HTTP status).
    async fn legacy_once(
        &self,
        method: &str,
        target: &Target,
        fields: &[(&str, String)],
    ) -> Result<Vec<u8>, CallError> {
        self.pacer.wait().await;
        let mut form: Vec<(&str, &str)> = vec![
            ("IntegrationPartnerID", self.partner_id.as_str()),
            ("ApiKey", self.key.expose()),
            ("AccountID", target.account_id.as_str()),
            ("PropertyID", target.property_id.as_str()),
        ];
        form.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));
        let resp = self
            .http
            .post(format!("{}/{method}", self.config.legacy_api_url))
            .form(&form)
            .send()
            .await
            .map_err(|e| PushError::from_reqwest(&e))?;
        let status = resp.status();
        metrics::counter!("syncbridge_resman_requests_total", "status" => status.as_str().to_owned())
            .increment(1);
        if status == reqwest::StatusCode::BAD_GATEWAY {
            let text = read_capped(resp, 4096).await.unwrap_or_default();
            if String::from_utf8_lossy(&text)
                .to_ascii_lowercase()
                .contains("buffer overflow")
            {
                return Err(CallError::Overflow);
            }
            return Err(PushError::Transient(format!(
                "ResMan answered 502: {}",
                String::from_utf8_lossy(&text[..text.len().min(300)])
            ))
            .into());
        }
        // The MITS envelope carries the outcome on any other status it
        // comes with; a 429 or 5xx without one is retried.
        let wait = retry_after(resp.headers());
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.pacer
                .hold_off(wait.unwrap_or(Duration::from_secs(30)))
                .await;
        }
        let body = read_capped(resp, MAX_RESPONSE_BYTES).await?;
        let enveloped = body.trim_ascii_start().starts_with(b"<")
            && !status.is_server_error()
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
        if status.is_success() || enveloped {
            return Ok(body);
        }
        Err(PushError::from_status(status, wait, &String::from_utf8_lossy(&body)).into())
    }

    async fn answer(&self, resp: reqwest::Response) -> Result<Vec<u8>, PushError> {
        let status = resp.status();
        metrics::counter!("syncbridge_resman_requests_total", "status" => status.as_str().to_owned())
            .increment(1);
        if status.is_success() {
            return read_capped(resp, MAX_RESPONSE_BYTES).await;
        }
        let wait = retry_after(resp.headers());
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.pacer
                .hold_off(wait.unwrap_or(Duration::from_secs(30)))
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
