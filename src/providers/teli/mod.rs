//! Teli (teli.ai voice agents): no webhooks, so its calls are pulled
//! (`pull teli`, `POST /api/teli/sync-all`) and stored as inbox deliveries
//! like any webhook's; the router applies each to `businesses` /
//! `customers` / `messages` (seed 003). See `sync` for the pull and `wire`
//! for what is stored.

pub mod api;
mod batch;
pub mod config;
pub mod store;
pub mod sync;
pub mod wire;

use serde_json::{json, Value};

use super::{
    ApplyCtx, ApplyFuture, AuditFuture, BatchWrites, NormaliseError, PrepareFuture, Provider, Pull,
    PullError, PullFuture, Reject, StoredEvent, Verified, WebhookRequest,
};
use crate::apply::Applied;
use crate::config::Config;
use crate::domain::ProviderName;
use crate::events::DomainEvent;
use api::TeliApi;

pub struct Teli {
    /// `None` when the API is not configured: stored calls still apply and
    /// replay, the pull refuses to run.
    api: Option<TeliApi>,
    missing: Option<&'static str>,
}

impl Teli {
    pub fn from_config(c: &Config) -> Result<Teli, &'static str> {
        // Validated when the configuration was built (check_settings).
        let config = config::TeliConfig::from_settings(&c.settings)
            .map_err(|_| "the Teli configuration is invalid")?;
        Ok(Teli {
            api: TeliApi::new(&config, c.push_timeout),
            missing: config.missing(),
        })
    }
}

impl Provider for Teli {
    fn name(&self) -> ProviderName {
        ProviderName::Teli
    }

    /// A pulled call replayed through `POST /api/teli/deliveries` (behind
    /// the admin token): its body is checked and keyed like a pulled one.
    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Reject> {
        wire::delivery(req.body.clone())
            .map(Verified::Delivery)
            .map_err(|e| Reject::BadRequest(format!("not a pulled Teli call: {e}")))
    }

    fn routes_events(&self) -> bool {
        true
    }

    fn normalise(&self, event: &StoredEvent<'_>) -> Result<Vec<DomainEvent>, NormaliseError> {
        let mut v: Value = serde_json::from_slice(event.body)?;
        let call = v
            .get_mut("call")
            .map(Value::take)
            .ok_or_else(|| NormaliseError::Invalid("the body has no call object".into()))?;
        Ok(vec![DomainEvent::Record {
            kind: "call",
            value: call,
        }])
    }

    fn prepare_batch<'a, 't: 'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'t>,
        events: &'a [&'a DomainEvent],
    ) -> PrepareFuture<'a> {
        Box::pin(async move {
            Ok(batch::CallBatch::prefetch(tx, events)
                .await?
                .map(|b| Box::new(b) as Box<dyn BatchWrites>))
        })
    }

    fn apply_event<'a, 't: 'a>(
        &'a self,
        ctx: &'a ApplyCtx<'a, 't>,
        event: &'a DomainEvent,
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            match event {
                DomainEvent::Record {
                    kind: "call",
                    value,
                } => store::apply_call(ctx, value).await,
                other => Ok(Applied::Ignored(format!(
                    "teli applies no {} events",
                    other.kind()
                ))),
            }
        })
    }

    fn puller(&self) -> Option<&dyn Pull> {
        Some(self)
    }
}

impl Teli {
    fn api(&self) -> Result<&TeliApi, PullError> {
        self.api
            .as_ref()
            .ok_or(PullError::Api(super::PushError::Disabled(
                self.missing.unwrap_or(
                    "the Teli pull is disabled: set TELI_API_KEY and TELI_ORGANIZATION_ID",
                ),
            )))
    }
}

impl Pull for Teli {
    fn unit(&self) -> &'static str {
        "calls"
    }

    fn ready(&self) -> Result<(), &'static str> {
        match self.missing {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn pull<'a, 'r>(&'a self, run: &'a mut crate::pull::PullRun<'r>) -> PullFuture<'a>
    where
        'r: 'a,
    {
        Box::pin(async move { sync::run(self.api()?, run).await })
    }

    /// Every call Teli lists for the organisation against the stored ones:
    /// `{teliCallCount, localCallCount, missingLocally, orphanedCustomers}`.
    fn audit<'a>(&'a self, db: &'a deadpool_postgres::Client) -> AuditFuture<'a> {
        Box::pin(async move {
            let api = self.api()?;
            let mut remote: Vec<String> = Vec::new();
            let mut pages = api::Pager::new(api, None);
            while let Some(page) = pages.next().await {
                let page = page.map_err(PullError::Api)?;
                remote.extend(page.calls.into_iter().map(|c| c.call_id));
            }
            let (local, orphans) = store::local_calls(db).await?;
            let missing: Vec<&String> = remote.iter().filter(|id| !local.contains(*id)).collect();
            Ok(json!({
                "teliCallCount": remote.len(),
                "localCallCount": local.len(),
                "missingLocally": missing,
                "orphanedCustomers": orphans,
            }))
        })
    }
}
