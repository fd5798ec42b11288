//! ResMan publishes no webhooks; deployments whose relay forwards change
//! notifications sign them per Standard Webhooks with
//! `RESMAN_WEBHOOK_SECRET`. A notification is a hint naming a prospect or
//! property; it triggers an immediate poll (the primary path is polling).
//! Dedup key: `webhook-id`.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Deserialize;

pub mod api;
pub mod config;
pub mod wire;

use super::signature::{self, HmacKey};
use super::{header, keep_headers, Delivery, Provider, Reject, Verified, WebhookRequest};
use crate::config::Config;
use crate::domain::{parse_provider_time, DedupKey, ProviderName};

const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

pub struct ResMan {
    key: HmacKey,
    tolerance: Option<std::time::Duration>,
}

impl ResMan {
    pub fn from_config(c: &Config) -> Result<ResMan, &'static str> {
        // Validated when the configuration was built (check_settings).
        let key = config::ResManConfig::from_settings(&c.settings)
            .ok()
            .and_then(|r| r.webhook_secret)
            .clone()
            .ok_or("ResMan notifications are disabled: set RESMAN_WEBHOOK_SECRET")?;
        Ok(ResMan {
            key,
            tolerance: c.signature_tolerance,
        })
    }
}

/// The relay's notification: `{"type", "accountId", "propertyId",
/// "prospectId"?, "occurredAt"?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    #[serde(rename = "type")]
    kind: String,
    #[allow(dead_code)]
    property_id: Option<String>,
    occurred_at: Option<String>,
}

impl Provider for ResMan {
    fn name(&self) -> ProviderName {
        ProviderName::ResMan
    }

    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Reject> {
        signature::verify_standard_headers(
            &self.key,
            req.headers,
            req.body,
            req.now,
            self.tolerance,
        )
        .map_err(|e| Reject::Unauthorized(e.to_string()))?;
        let id = header(req.headers, "webhook-id").unwrap_or_default();
        let n: Notification = serde_json::from_slice(req.body).map_err(|e| {
            Reject::BadRequest(format!("body is not a ResMan change notification: {e}"))
        })?;
        Ok(Verified::Delivery(Delivery {
            provider: ProviderName::ResMan,
            dedup_key: DedupKey::new(id)
                .ok_or_else(|| Reject::BadRequest("webhook-id is empty".into()))?,
            object_keys: Vec::new(),
            event_type: Some(n.kind),
            event_id: Some(id.to_owned()),
            occurred_at: n.occurred_at.as_deref().and_then(parse_provider_time),
            headers: keep_headers(req.headers, KEPT_HEADERS),
            body: req.body.clone(),
        }))
    }

    fn resign(&self, headers: &mut HeaderMap, body: &[u8], now: DateTime<Utc>) {
        if let Some(id) = header(headers, "webhook-id").map(str::to_owned) {
            let ts = now.timestamp();
            let sig = signature::sign_standard(&self.key, &id, ts, body);
            super::openphone::set(headers, "webhook-timestamp", &ts.to_string());
            super::openphone::set(headers, "webhook-signature", &sig);
        }
    }
}
