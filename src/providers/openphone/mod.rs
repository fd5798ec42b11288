//! OpenPhone (Quo): legacy `openphone-signature` webhooks and the beta
//! Standard Webhooks ones on the same route, told apart by their headers;
//! `call.*` and `message.*` events become communications, `contact.*`
//! events become client changes. Payload shapes: PROVIDERS.md §1.4, §1.7;
//! the beta `data.resource` is read like the legacy `data.object`.

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use serde::Deserialize;

pub mod batch;
mod comms;
pub mod config;
pub mod entities;
mod integrity;
mod push;
pub mod store;
mod wire;

pub use wire::normalise;

use push::{push_client, Api};

use super::edge::AnyObject;
use super::outbound::{JsonApi, Pacer, PushError};
use super::signature::{self, HmacKey};
use super::{
    header, keep_headers, Change, Delivery, IntegrityCtx, IntegrityFuture, NormaliseError,
    Provider, PushFuture, Reject, StoredEvent, Verified, WebhookRequest,
};
use super::{ApplyCtx, ApplyFuture, BatchWrites, PrepareFuture};
use crate::apply::Applied;
use crate::config::Config;
use crate::domain::{parse_provider_time, DedupKey, ProviderName};
use crate::events::{DomainEvent, RemoteContact};

const LEGACY_HEADER: &str = "openphone-signature";
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    LEGACY_HEADER,
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-quo-api-version",
];

const WEBHOOKS_DISABLED: &str =
    "OpenPhone webhooks are disabled: set OPENPHONE_WEBHOOK_KEY (legacy) \
                                 or OPENPHONE_WEBHOOK_SECRET (beta)";
const PUSH_DISABLED: &str = "OpenPhone outbound sync is disabled: set OPENPHONE_API_KEY";

pub struct OpenPhone {
    legacy_key: Option<HmacKey>,
    standard_key: Option<HmacKey>,
    tolerance: Option<std::time::Duration>,
    api: Option<Api>,
}

impl OpenPhone {
    pub fn from_config(c: &Config) -> Result<OpenPhone, &'static str> {
        // Validated when the configuration was built (check_settings).
        let Ok(op) = config::OpenPhoneConfig::from_settings(&c.settings) else {
            return Err(WEBHOOKS_DISABLED);
        };
        let api = op.api_key.clone().map(|key| {
            Api(JsonApi::new(
                c.push_timeout,
                op.api_url.clone(),
                "Authorization",
                key,
                Pacer::per_second(op.api_rate),
            ))
        });
        if op.webhook_key.is_none() && op.webhook_secret.is_none() && api.is_none() {
            return Err(WEBHOOKS_DISABLED);
        }
        Ok(OpenPhone {
            legacy_key: op.webhook_key.clone(),
            standard_key: op.webhook_secret.clone(),
            tolerance: c.signature_tolerance,
            api,
        })
    }

    /// Accepts a delivery when either scheme it carries verifies: a
    /// sender mid-migration may sign with both, and one bad or unconfigured
    /// scheme must not refuse a delivery the other authenticates. At most
    /// two schemes' worth of HMACs (see `signature`) before the answer.
    fn check_signature(&self, req: &WebhookRequest<'_>) -> Result<(), Reject> {
        let standard = req.headers.contains_key("webhook-signature");
        let legacy = req.headers.contains_key(LEGACY_HEADER);
        if !standard && !legacy {
            return Err(Reject::Unauthorized(
                "missing signature: expected openphone-signature or webhook-signature".into(),
            ));
        }
        type Verify = fn(
            &HmacKey,
            &HeaderMap,
            &[u8],
            DateTime<Utc>,
            Option<std::time::Duration>,
        ) -> Result<(), signature::SignatureError>;
        let schemes: [(bool, Option<&HmacKey>, Verify, &str); 2] = [
            (
                standard,
                self.standard_key.as_ref(),
                signature::verify_standard_headers,
                "Standard Webhooks signature received but OPENPHONE_WEBHOOK_SECRET is not set",
            ),
            (
                legacy,
                self.legacy_key.as_ref(),
                signature::verify_openphone_headers,
                "openphone-signature received but OPENPHONE_WEBHOOK_KEY is not set",
            ),
        ];
        let mut refused = Vec::new();
        for (present, key, verify, unset) in schemes {
            if !present {
                continue;
            }
            match key {
                None => refused.push(unset.to_owned()),
                Some(key) => match verify(key, req.headers, req.body, req.now, self.tolerance) {
                    Ok(()) => return Ok(()),
                    Err(e) => refused.push(e.to_string()),
                },
            }
        }
        Err(Reject::Unauthorized(refused.join("; ")))
    }
}

/// Only what `verify` needs from the envelope: the data is checked to be
/// an object holding `object` (legacy) or `resource` (beta), not parsed.
#[derive(Debug, Deserialize)]
struct EnvelopeHead {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "createdAt")]
    created_at: Option<String>,
    data: Option<DataHead>,
}

#[derive(Debug, Deserialize)]
struct DataHead {
    object: Option<AnyObject>,
    resource: Option<AnyObject>,
}

impl Provider for OpenPhone {
    fn name(&self) -> ProviderName {
        ProviderName::OpenPhone
    }

    fn webhooks_disabled(&self) -> Option<&'static str> {
        (self.legacy_key.is_none() && self.standard_key.is_none()).then_some(WEBHOOKS_DISABLED)
    }

    fn pushes(&self) -> Result<&'static [&'static str], &'static str> {
        match self.api {
            Some(_) => Ok(&["clients"]),
            None => Err(PUSH_DISABLED),
        }
    }

    fn push<'a>(&'a self, change: &'a Change) -> PushFuture<'a> {
        Box::pin(async move {
            let api = self
                .api
                .as_ref()
                .ok_or(PushError::Disabled(PUSH_DISABLED))?;
            match change.table.as_str() {
                "clients" => push_client(api, change).await,
                other => Err(PushError::Permanent(format!(
                    "OpenPhone does not sync table {other}"
                ))),
            }
        })
    }

    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Reject> {
        self.check_signature(req)?;
        let env: EnvelopeHead = serde_json::from_slice(req.body)
            .map_err(|e| Reject::BadRequest(format!("body is not a JSON event envelope: {e}")))?;
        let id = env
            .id
            .as_deref()
            .ok_or_else(|| Reject::BadRequest("event envelope has no id".into()))?;
        let dedup_key = DedupKey::new(id)
            .ok_or_else(|| Reject::BadRequest("event envelope id is empty".into()))?;
        let kind = env
            .kind
            .clone()
            .ok_or_else(|| Reject::BadRequest("event envelope has no type".into()))?;
        let occurred_at = env
            .created_at
            .as_deref()
            .and_then(parse_provider_time)
            .ok_or_else(|| {
                Reject::BadRequest("event envelope has no createdAt timestamp (RFC 3339)".into())
            })?;
        if !env
            .data
            .as_ref()
            .is_some_and(|d| d.object.is_some() || d.resource.is_some())
        {
            return Err(Reject::BadRequest(
                "event envelope has no data.object (or data.resource) object".into(),
            ));
        }
        Ok(Verified::Delivery(Delivery {
            provider: ProviderName::OpenPhone,
            dedup_key,
            object_keys: Vec::new(),
            event_type: Some(kind),
            event_id: Some(id.to_owned()),
            occurred_at: Some(occurred_at),
            headers: keep_headers(req.headers, KEPT_HEADERS),
            body: req.body.clone(),
        }))
    }

    fn routes_events(&self) -> bool {
        true
    }

    fn normalise(&self, event: &StoredEvent<'_>) -> Result<Vec<DomainEvent>, NormaliseError> {
        normalise(event.body)
    }

    fn prepare_batch<'a, 't: 'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'t>,
        events: &'a [&'a DomainEvent],
    ) -> PrepareFuture<'a> {
        Box::pin(async move {
            let contacts: Vec<&RemoteContact> = events
                .iter()
                .filter_map(|d| match d {
                    DomainEvent::ContactUpserted(c) => Some(c),
                    _ => None,
                })
                .collect();
            let comms = events
                .iter()
                .filter(|d| matches!(d, DomainEvent::Call(_) | DomainEvent::Message(_)))
                .count();
            if contacts.len() < 2 && comms < 2 {
                return Ok(None);
            }
            let contacts = match contacts.len() {
                0 | 1 => None,
                _ => Some(
                    batch::ContactBatch::prefetch(tx, ProviderName::OpenPhone, &contacts).await?,
                ),
            };
            let comms = comms::CommsBatch::prefetch(tx, events).await?;
            Ok(Some(
                Box::new(batch::Batched::new(contacts, comms)) as Box<dyn BatchWrites>
            ))
        })
    }

    fn apply_event<'a, 't: 'a>(
        &'a self,
        ctx: &'a ApplyCtx<'a, 't>,
        event: &'a DomainEvent,
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let (tx, id) = (ctx.tx, ctx.inbox_id);
            match event {
                DomainEvent::Call(c) => store::upsert_call(tx, c, id).await,
                DomainEvent::Message(m) => store::upsert_message(tx, m, id).await,
                DomainEvent::ContactUpserted(c) => {
                    store::apply_contact(tx, ctx.rules, ProviderName::OpenPhone, c, id).await
                }
                DomainEvent::ContactDeleted { remote_id } => {
                    store::unlink_contact(tx, ProviderName::OpenPhone, remote_id, id).await
                }
                other => Ok(Applied::Ignored(format!(
                    "OpenPhone applies no {} events",
                    other.kind()
                ))),
            }
        })
    }

    fn integrity<'a>(&'a self, ctx: &'a IntegrityCtx<'a>) -> IntegrityFuture<'a> {
        Box::pin(integrity::check(ctx))
    }

    fn resign(
        &self,
        headers: &mut HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), &'static str> {
        if headers.contains_key("webhook-signature") {
            let key = self
                .standard_key
                .as_ref()
                .ok_or("OPENPHONE_WEBHOOK_SECRET is unset (beta webhooks)")?;
            if let Some(id) = header(headers, "webhook-id").map(str::to_owned) {
                let ts = now.timestamp();
                let sig = signature::sign_standard(key, &id, ts, body);
                set(headers, "webhook-timestamp", &ts.to_string());
                set(headers, "webhook-signature", &sig);
            }
        } else if headers.contains_key(LEGACY_HEADER) {
            let key = self
                .legacy_key
                .as_ref()
                .ok_or("OPENPHONE_WEBHOOK_KEY is unset (legacy webhooks)")?;
            let sig = signature::sign_openphone_legacy(key, now.timestamp_millis(), body);
            set(headers, LEGACY_HEADER, &sig);
        }
        Ok(())
    }
}

pub(crate) fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}
