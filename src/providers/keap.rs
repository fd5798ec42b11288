//! Keap REST hooks. Keap signs nothing: the hook URL carries an unguessable
//! token (`/webhooks/keap/{token}`, compared in constant time with
//! `KEAP_WEBHOOK_TOKEN`), the `X-Hook-Secret` handshake is echoed only on a
//! valid token, and a delivery is a hint — up to 1000 object ids — that the
//! router turns into fetches with syncbridge's own credentials. Deliveries
//! dedupe per object key (`event_key|id|timestamp`), PROVIDERS.md Part A.

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::{header, keep_headers, Delivery, Provider, Reject, Verified, WebhookRequest};
use crate::config::{Config, Secret};
use crate::domain::{parse_provider_time, DedupKey, ProviderName};

const HOOK_SECRET: &str = "x-hook-secret";
const MAX_OBJECT_KEYS: usize = 1000;

pub struct Keap {
    token: Secret,
}

impl Keap {
    pub fn from_config(c: &Config) -> Result<Keap, &'static str> {
        let token = c
            .keap
            .webhook_token
            .clone()
            .ok_or("Keap webhooks are disabled: set KEAP_WEBHOOK_TOKEN")?;
        Ok(Keap { token })
    }
}

#[derive(Debug, Deserialize)]
struct HookDelivery {
    event_key: String,
    #[allow(dead_code)]
    object_type: Option<String>,
    object_keys: Vec<ObjectKey>,
}

#[derive(Debug, Deserialize)]
struct ObjectKey {
    id: Value,
    timestamp: Option<String>,
}

impl Provider for Keap {
    fn name(&self) -> ProviderName {
        ProviderName::Keap
    }

    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Reject> {
        let token = req.token.unwrap_or_default();
        if !self.token.matches(token) {
            return Err(Reject::Unauthorized("unknown hook token".into()));
        }
        if let Some(secret) = header(req.headers, HOOK_SECRET) {
            let value = HeaderValue::from_str(secret).map_err(|_| {
                Reject::BadRequest("X-Hook-Secret is not a valid header value".into())
            })?;
            return Ok(Verified::Handshake {
                header: HeaderName::from_static(HOOK_SECRET),
                value,
            });
        }
        let hook: HookDelivery = serde_json::from_slice(req.body).map_err(|e| {
            Reject::BadRequest(format!(
                "body is not a Keap hook delivery {{event_key, object_type, object_keys}}: {e}"
            ))
        })?;
        if hook.object_keys.is_empty() || hook.object_keys.len() > MAX_OBJECT_KEYS {
            return Err(Reject::BadRequest(format!(
                "a delivery carries 1 to {MAX_OBJECT_KEYS} object keys, this one {}",
                hook.object_keys.len()
            )));
        }
        let mut object_keys = Vec::with_capacity(hook.object_keys.len());
        let mut latest = None;
        for k in &hook.object_keys {
            let id = match &k.id {
                Value::Number(n) => n.to_string(),
                Value::String(s) if !s.is_empty() => s.clone(),
                _ => return Err(Reject::BadRequest("object key without an id".into())),
            };
            let ts = k.timestamp.as_deref().unwrap_or_default();
            if let Some(t) = parse_provider_time(ts) {
                latest = latest.max(Some(t));
            }
            let key = format!("{}|{id}|{ts}", hook.event_key);
            object_keys.extend(DedupKey::new(&key));
        }
        Ok(Verified::Delivery(Delivery {
            provider: ProviderName::Keap,
            dedup_key: DedupKey::of_bytes(req.body),
            object_keys,
            event_type: Some(hook.event_key),
            event_id: None,
            occurred_at: latest,
            headers: keep_headers(req.headers, &["content-type", "user-agent"]),
            body: bytes::Bytes::copy_from_slice(req.body),
        }))
    }
}
