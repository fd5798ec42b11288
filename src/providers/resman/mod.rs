//! ResMan publishes no webhooks; deployments whose relay forwards change
//! notifications sign them per Standard Webhooks with
//! `RESMAN_WEBHOOK_SECRET`. A notification is a hint naming a prospect or
//! property; it triggers an immediate poll (the primary path is polling).
//! Dedup key: `webhook-id`.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Deserialize;

pub mod api;
pub mod apply;
pub mod config;
mod integrity;
pub mod poll;
pub mod push;
pub mod store;
pub mod wire;

use super::signature::{self, HmacKey};
use super::{
    header, keep_headers, ApplyCtx, ApplyFuture, AuditFuture, Change, ContextFuture, Delivery,
    FlushFuture, IntegrityCtx, IntegrityFuture, NormaliseError, Provider, Pull, PullError,
    PullFuture, PushError, PushFuture, PushOutcome, Reject, ResolveFuture, StoredEvent, Verified,
    WebhookRequest,
};
use crate::apply::Applied;
use crate::config::Config;
use crate::domain::{parse_provider_time, DedupKey, ProviderName};
use crate::events::DomainEvent;

const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

pub struct ResMan {
    key: Option<HmacKey>,
    tolerance: Option<std::time::Duration>,
    api: Option<api::ResManApi>,
    config: config::ResManConfig,
    /// Rung by a notification: poll now.
    wake: std::sync::Arc<tokio::sync::Notify>,
}

const WEBHOOKS_DISABLED: &str = "ResMan notifications are disabled: set RESMAN_WEBHOOK_SECRET";

impl ResMan {
    pub fn from_config(c: &Config) -> Result<ResMan, &'static str> {
        // Validated when the configuration was built (check_settings).
        let config = config::ResManConfig::from_settings(&c.settings)
            .map_err(|_| "the ResMan configuration is invalid")?;
        let api = api::ResManApi::new(&config, c.push_timeout);
        if config.webhook_secret.is_none() && api.is_none() {
            return Err("ResMan is disabled: set RESMAN_INTEGRATION_PARTNER_ID and RESMAN_API_KEY (and RESMAN_WEBHOOK_SECRET for a relay's notifications)");
        }
        Ok(ResMan {
            key: config.webhook_secret.clone(),
            tolerance: c.signature_tolerance,
            api,
            config,
            wake: Default::default(),
        })
    }

    fn api(&self) -> Result<&api::ResManApi, PushError> {
        self.api.as_ref().ok_or(PushError::Disabled(
            "ResMan's API is not configured: set RESMAN_INTEGRATION_PARTNER_ID and RESMAN_API_KEY",
        ))
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

    fn webhooks_disabled(&self) -> Option<&'static str> {
        self.key.is_none().then_some(WEBHOOKS_DISABLED)
    }

    fn routes_events(&self) -> bool {
        true
    }

    /// A polled prospect (`prospect`) or a relay's notification (any other
    /// type: it names a property to poll).
    fn normalise(&self, event: &StoredEvent<'_>) -> Result<Vec<DomainEvent>, NormaliseError> {
        let value: serde_json::Value = serde_json::from_slice(event.body)?;
        Ok(vec![DomainEvent::Record {
            kind: if event.event_type == Some("prospect") {
                "prospect"
            } else {
                "notification"
            },
            value,
        }])
    }

    fn apply_event<'a, 't: 'a>(
        &'a self,
        ctx: &'a ApplyCtx<'a, 't>,
        event: &'a DomainEvent,
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            match event {
                DomainEvent::Record {
                    kind: "prospect",
                    value,
                } => apply::prospect(ctx, value).await,
                DomainEvent::Record {
                    kind: "notification",
                    value,
                } => apply::notification(ctx, value, &self.wake).await,
                other => Ok(Applied::Ignored(format!(
                    "resman applies no {} events",
                    other.kind()
                ))),
            }
        })
    }

    /// Each property: its integration's state, queue and conflicts
    /// (`property_sync_status`), and where its polls stand.
    fn status<'a>(&'a self, db: &'a deadpool_postgres::Client) -> AuditFuture<'a> {
        Box::pin(async move {
            let row = db
                .query_one(
                    "SELECT coalesce(jsonb_agg(to_jsonb(s) || jsonb_build_object(
                         'resman_property_id', i.resman_property_id,
                         'sync_direction', i.sync_direction, 'sync_frequency', i.sync_frequency,
                         'last_error', i.last_error, 'poll', c.position)
                         ORDER BY s.property_name, s.property_id), '[]')
                     FROM property_sync_status s
                     JOIN resman_integration i ON i.property_id = s.property_id
                     LEFT JOIN sync_cursors c ON c.name = 'resman.poll.' || s.property_id",
                    &[],
                )
                .await
                .map_err(|e| PullError::Db(e.into()))?;
            Ok(serde_json::json!({"properties": row.get::<_, serde_json::Value>(0)}))
        })
    }

    fn resolves_conflicts(&self) -> bool {
        true
    }

    fn resolve_conflict<'a>(
        &'a self,
        client: &'a mut deadpool_postgres::Client,
        id: uuid::Uuid,
        choice: crate::apply::engine::Choice,
        resolved_by: Option<uuid::Uuid>,
        notes: Option<&'a str>,
    ) -> ResolveFuture<'a> {
        Box::pin(apply::resolve(client, id, choice, resolved_by, notes))
    }

    fn puller(&self) -> Option<&dyn Pull> {
        self.api.is_some().then_some(self as &dyn Pull)
    }

    fn pushes(&self) -> Result<&'static [&'static str], &'static str> {
        match self.api {
            Some(_) => Ok(&["conversation", "user"]),
            None => Err("ResMan's API is not configured: set RESMAN_INTEGRATION_PARTNER_ID and RESMAN_API_KEY"),
        }
    }

    fn push<'a>(&'a self, change: &'a Change) -> PushFuture<'a> {
        Box::pin(async move {
            let api = self.api()?;
            let account = self.config.account_id.as_deref();
            match change.table.as_str() {
                "conversation" => push::conversation(api, account, change).await,
                "user" => push::user(api, account, change).await,
                other => Err(PushError::Permanent(format!(
                    "{other} is not a table syncbridge pushes to ResMan"
                ))),
            }
        })
    }

    fn push_context<'a, 't: 'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'t>,
        change: &'a Change,
    ) -> ContextFuture<'a> {
        Box::pin(store::push_context(tx, change))
    }

    fn after_push<'a, 't: 'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'t>,
        change: &'a Change,
        outcome: PushOutcome<'a>,
        took: std::time::Duration,
    ) -> FlushFuture<'a> {
        Box::pin(store::after_push(
            tx,
            change,
            outcome,
            took,
            self.config.error_threshold,
        ))
    }

    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Reject> {
        if req.pulled {
            // A recorded polled prospect (behind the admin token).
            let value: serde_json::Value = serde_json::from_slice(req.body)
                .map_err(|e| Reject::BadRequest(format!("not a ResMan prospect: {e}")))?;
            return poll::delivery(&value)
                .map(Verified::Delivery)
                .map_err(Reject::BadRequest);
        }
        let Some(key) = &self.key else {
            return Err(Reject::Unauthorized(WEBHOOKS_DISABLED.into()));
        };
        signature::verify_standard_headers(key, req.headers, req.body, req.now, self.tolerance)
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

    fn integrity<'a>(&'a self, ctx: &'a IntegrityCtx<'a>) -> IntegrityFuture<'a> {
        Box::pin(integrity::check(ctx))
    }

    fn resign(
        &self,
        headers: &mut HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), &'static str> {
        let Some(id) = header(headers, "webhook-id").map(str::to_owned) else {
            return Ok(());
        };
        let key = self.key.as_ref().ok_or("RESMAN_WEBHOOK_SECRET is unset")?;
        let ts = now.timestamp();
        let sig = signature::sign_standard(key, &id, ts, body);
        super::openphone::set(headers, "webhook-timestamp", &ts.to_string());
        super::openphone::set(headers, "webhook-signature", &sig);
        Ok(())
    }
}

impl Pull for ResMan {
    fn unit(&self) -> &'static str {
        "prospects"
    }

    fn ready(&self) -> Result<(), &'static str> {
        self.config.api_missing().map_or(Ok(()), Err)
    }

    /// Each round polls the properties that are due (their own frequency,
    /// or flagged by a notification).
    fn every(&self) -> Option<std::time::Duration> {
        Some(self.config.poll_every)
    }

    fn wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.wake.clone())
    }

    fn pull<'a, 'r>(&'a self, run: &'a mut crate::pull::PullRun<'r>) -> PullFuture<'a>
    where
        'r: 'a,
    {
        Box::pin(async move {
            let api = self.api().map_err(PullError::Api)?;
            poll::run(api, &self.config, run).await
        })
    }

    /// The mapped and unmapped prospects and the conversations waiting for
    /// a lead: `{mappedProspects, unmappedProspects, unpushedLeads}`.
    fn audit<'a>(&'a self, db: &'a deadpool_postgres::Client) -> AuditFuture<'a> {
        Box::pin(async move {
            let r = db
                .query_one(
                    "SELECT (SELECT count(*) FROM lead_sync_mapping WHERE mapping_status = 'active'),
                            (SELECT count(*) FROM lead_sync_mapping WHERE mapping_status = 'from_resman'),
                            (SELECT count(*) FROM conversation
                             WHERE (is_qualified OR is_book_tour) AND resman_lead_id IS NULL)",
                    &[],
                )
                .await
                .map_err(|e| PullError::Db(e.into()))?;
            Ok(serde_json::json!({
                "mappedProspects": r.get::<_, i64>(0),
                "unmappedProspects": r.get::<_, i64>(1),
                "unpushedLeads": r.get::<_, i64>(2),
            }))
        })
    }
}
