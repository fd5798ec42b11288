//! The Cloudflare D1 edge replica (seed 002, SPEC §4.5). Built so far: the
//! D1 API client (`api`), its wire format and the statement chunking that
//! keeps within D1's limits (`wire`), the configuration, and the e-mail
//! pull D1 → Postgres (`emails`: `syncbridge pull d1`,
//! `POST /api/d1/sync-all`). Prospects, campaigns and mailboxes out, the
//! cursor, integrity and the schedule build on them.

pub mod api;
pub mod config;
pub mod emails;
pub mod integrity;
pub mod push;
pub mod replica;
pub mod wire;

use serde_json::Value;

use super::{
    ApplyCtx, ApplyFuture, AuditFuture, BatchPushFuture, Change, IntegrityCtx, IntegrityFuture,
    Job, JobFuture, NormaliseError, Provider, Pull, PullError, PullFuture, PushError, PushFuture,
    Reject, StoredEvent, Verified, WebhookRequest,
};
use crate::apply::Applied;
use crate::config::Config;
use crate::domain::ProviderName;
use crate::events::DomainEvent;
use crate::scheduler::JobCtx;

pub struct D1 {
    pub api: Option<api::D1Api>,
    pull_every: Option<std::time::Duration>,
    /// The D1 tables' columns, as read.
    columns: push::Columns,
    push_every: Option<std::time::Duration>,
    count_tolerance: u64,
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
            columns: push::Columns::default(),
            push_every: config.push_every,
            count_tolerance: config.count_tolerance,
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

    fn pushes(&self) -> Result<&'static [&'static str], &'static str> {
        match self.api {
            Some(_) => Ok(push::TABLES),
            None => Err("the D1 API client could not be built"),
        }
    }

    fn push<'a>(&'a self, change: &'a Change) -> PushFuture<'a> {
        Box::pin(async move {
            self.push_batch(std::slice::from_ref(change))
                .await
                .pop()
                .unwrap_or_else(|| Err(PushError::Transient("not sent".into())))
        })
    }

    fn push_batch_size(&self) -> usize {
        push::BATCH
    }

    fn push_batch<'a>(&'a self, changes: &'a [Change]) -> BatchPushFuture<'a> {
        Box::pin(async move {
            match &self.api {
                Some(api) => push::push(api, &self.columns, changes).await,
                None => changes
                    .iter()
                    .map(|_| Err(PushError::Disabled("the D1 API client could not be built")))
                    .collect(),
            }
        })
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

    fn jobs(&self) -> Vec<Box<dyn Job + '_>> {
        vec![Box::new(Reconcile(self)), Box::new(Resync(self))]
    }

    fn integrity<'a>(&'a self, ctx: &'a IntegrityCtx<'a>) -> IntegrityFuture<'a> {
        Box::pin(async move {
            let api = self
                .api
                .as_ref()
                .ok_or("the D1 API client could not be built")?;
            integrity::check(api, &self.columns, self.count_tolerance, ctx).await
        })
    }
}

/// The reconciliation: every `SYNCBRIDGE_D1_PUSH_INTERVAL_S`, the pushed
/// tables walked from their cursors ([`replica::reconcile`]).
struct Reconcile<'a>(&'a D1);

impl Job for Reconcile<'_> {
    fn name(&self) -> &'static str {
        "reconcile"
    }

    fn every(&self) -> Option<std::time::Duration> {
        self.0.push_every
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let api = self
                .0
                .api
                .as_ref()
                .ok_or("the D1 API client could not be built")?;
            replica::reconcile(api, &self.0.columns, ctx).await
        })
    }
}

/// A full resync of one table (`POST /api/sync/full`,
/// [`replica::resync`]).
struct Resync<'a>(&'a D1);

impl Job for Resync<'_> {
    fn name(&self) -> &'static str {
        "resync"
    }

    fn every(&self) -> Option<std::time::Duration> {
        None
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let api = self
                .0
                .api
                .as_ref()
                .ok_or("the D1 API client could not be built")?;
            replica::resync(api, &self.0.columns, ctx).await
        })
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
