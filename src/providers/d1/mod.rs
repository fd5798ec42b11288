//! The Cloudflare D1 edge replica (seed 002, SPEC §4.5). Built so far: the
//! D1 API client (`api`), its wire format and the statement chunking that
//! keeps within D1's limits (`wire`), the configuration, and the e-mail
//! pull D1 → Postgres (`emails`: `syncbridge pull d1`,
//! `POST /api/d1/sync-all`). Prospects, campaigns and mailboxes out, the
//! cursor, integrity and the schedule build on them.

pub mod api;
pub mod config;
pub mod emails;
pub mod wire;

use serde_json::Value;

use super::{
    ApplyCtx, ApplyFuture, AuditFuture, NormaliseError, Provider, Pull, PullError, PullFuture,
    Reject, StoredEvent, Verified, WebhookRequest,
};
use crate::apply::Applied;
use crate::config::Config;
use crate::domain::ProviderName;
use crate::events::DomainEvent;

pub struct D1 {
    pub api: Option<api::D1Api>,
    pull_every: Option<std::time::Duration>,
}

impl D1 {
    pub fn from_config(c: &Config) -> Result<D1, &'static str> {
        // Validated when the configuration was built (check_settings).
        let config = config::D1Config::from_settings(&c.settings)
            .map_err(|_| "the D1 configuration is invalid")?;
        if let Some(why) = config.missing() {
            return Err(why);
        }
        Ok(D1 {
            api: api::D1Api::new(&config, c.push_timeout),
            pull_every: config.pull_every,
        })
    }

    fn api(&self) -> Result<&api::D1Api, PullError> {
        self.api
            .as_ref()
            .ok_or(PullError::Api(super::PushError::Disabled(
                "the D1 API client could not be built",
            )))
    }
}

impl Provider for D1 {
    fn name(&self) -> ProviderName {
        ProviderName::D1
    }

    /// A pulled e-mail replayed through `POST /api/d1/deliveries` (behind
    /// the admin token): a D1 `emails` row as JSON.
    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Reject> {
        let row: serde_json::Map<String, Value> = serde_json::from_slice(req.body)
            .map_err(|e| Reject::BadRequest(format!("not a D1 e-mail row: {e}")))?;
        emails::delivery(&row)
            .map(Verified::Delivery)
            .map_err(Reject::BadRequest)
    }

    fn routes_events(&self) -> bool {
        true
    }

    fn normalise(&self, event: &StoredEvent<'_>) -> Result<Vec<DomainEvent>, NormaliseError> {
        Ok(vec![DomainEvent::Record {
            kind: "email",
            value: serde_json::from_slice(event.body)?,
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
                    kind: "email",
                    value,
                } => emails::apply(ctx, value).await,
                other => Ok(Applied::Ignored(format!(
                    "d1 applies no {} events",
                    other.kind()
                ))),
            }
        })
    }

    fn puller(&self) -> Option<&dyn Pull> {
        Some(self)
    }
}

impl Pull for D1 {
    fn unit(&self) -> &'static str {
        "emails"
    }

    fn ready(&self) -> Result<(), &'static str> {
        match self.api {
            Some(_) => Ok(()),
            None => Err("the D1 API client could not be built"),
        }
    }

    fn every(&self) -> Option<std::time::Duration> {
        self.pull_every
    }

    fn pull<'a, 'r>(&'a self, run: &'a mut crate::pull::PullRun<'r>) -> PullFuture<'a>
    where
        'r: 'a,
    {
        Box::pin(async move { emails::pull(self.api()?, run).await })
    }

    fn audit<'a>(&'a self, db: &'a deadpool_postgres::Client) -> AuditFuture<'a> {
        Box::pin(async move { emails::audit(self.api()?, db).await })
    }
}
