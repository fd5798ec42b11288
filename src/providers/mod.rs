//! Providers: each is one module implementing [`Provider`] — verify a
//! delivery's raw bytes, name its dedup key, and normalise a stored event
//! into domain events. The HTTP front, the router and the dispatcher know
//! only this trait and the [`Registry`].
//!
//! Architecture invariant: `verify` runs on the raw body before any parsing
//! and rejects anything it cannot authenticate; nothing unverified reaches
//! the inbox.

pub mod d1;
pub mod edge;
pub mod keap;
pub mod openphone;
pub mod outbound;
#[cfg(test)]
mod proptests;
pub mod resman;
pub mod signature;
pub mod teli;

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::apply::engine::Entity;
use crate::apply::Applied;
use crate::config::{Config, ConfigError, Settings};
use crate::conflict::Rules;
use crate::db::DbError;
use crate::domain::{DedupKey, ProviderName};
use crate::events::DomainEvent;

/// One incoming webhook request, as the HTTP front saw it.
pub struct WebhookRequest<'a> {
    /// The `{token}` path segment, for providers that authenticate by URL.
    pub token: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The raw body; a verified delivery keeps it without a copy.
    pub body: &'a bytes::Bytes,
    pub now: DateTime<Utc>,
    /// A recorded pulled delivery (`POST /api/{name}/deliveries`, behind
    /// the admin token), not a webhook.
    pub pulled: bool,
}

/// What a verified request is.
#[derive(Debug)]
pub enum Verified {
    /// A subscription handshake: answer 200 echoing this header; store
    /// nothing.
    Handshake {
        header: HeaderName,
        value: HeaderValue,
    },
    Delivery(Delivery),
}

/// A verified delivery, ready for the inbox.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub provider: ProviderName,
    pub dedup_key: DedupKey,
    /// Per-object keys for batched hints (Keap); empty otherwise. A delivery
    /// whose object keys were all seen before is a duplicate.
    pub object_keys: Vec<DedupKey>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// The headers worth keeping to replay and re-verify the delivery.
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: bytes::Bytes,
}

/// Why a request was refused, mapped to a status by the HTTP front.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    /// 401: missing, forged or expired credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 400: authentic but unparseable.
    #[error("{0}")]
    BadRequest(String),
}

/// A stored inbox row, as the router hands it to `normalise`.
#[derive(Debug, Clone)]
pub struct StoredEvent<'a> {
    pub id: i64,
    pub provider: ProviderName,
    pub event_type: Option<&'a str>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub body: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum NormaliseError {
    #[error("body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
}

/// A local change to push: the record's current row (`None` once it is
/// deleted) and, for a delete, the row as it was.
#[derive(Debug, Clone)]
pub struct Change {
    pub table: String,
    pub record_id: uuid::Uuid,
    pub row: Option<serde_json::Value>,
    pub deleted_row: Option<serde_json::Value>,
    /// The version of the remote object syncbridge last applied or wrote:
    /// a provider that can read before it writes refuses to overwrite a
    /// newer one ([`PushError::RemoteChanged`]).
    pub remote_version: Option<DateTime<Utc>>,
    /// The columns the claimed changes changed (none for an insert).
    pub changed: Vec<String>,
    /// Whether an insert is among the claimed changes.
    pub created: bool,
    /// What the provider read for the push beyond the row
    /// ([`Provider::push_context`]), `null` if nothing.
    pub context: serde_json::Value,
}

/// How a push ended, for the provider's own bookkeeping
/// ([`Provider::after_push`]).
#[derive(Debug)]
pub enum PushOutcome<'a> {
    Pushed(&'a Pushed),
    /// Not pushed, on purpose (`PushError::Skipped`).
    Skipped(&'a str),
    /// Failed; `last` when no retry follows.
    Failed {
        error: &'a str,
        last: bool,
    },
}

/// What a successful push left on the provider's side.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    /// Remote ids by slot (`primary`, `alt_1`, …); `None` removes a link.
    pub links: Vec<(&'static str, Option<String>)>,
    /// The state syncbridge last wrote, per slot: a webhook echoing exactly
    /// this is recognised and dropped.
    pub snapshots: Vec<(&'static str, serde_json::Value)>,
    /// The remote version the write produced, per slot, where the provider
    /// reports one: a later fetch of that same version is stale.
    pub versions: Vec<(&'static str, DateTime<Utc>)>,
    /// Set when the write went over a state read just before it, on a
    /// provider without conditional updates: an edit made there between the
    /// read and the write, to one of these fields, is overwritten unseen.
    /// The dispatcher audits the window (`pushed_over_read`), so such a loss
    /// is a declared decision, never a silent one.
    pub write_window: Option<WriteWindow>,
}

/// The versions around a read-before-write push and what it wrote.
#[derive(Debug, Clone)]
pub struct WriteWindow {
    /// The remote version the push read.
    pub read_version: DateTime<Utc>,
    /// The remote version its write produced.
    pub written_version: DateTime<Utc>,
    /// The local columns it wrote.
    pub fields: Vec<String>,
    /// The write's answer was lost and the values are not all in place:
    /// it may have landed (over edits made up to `written_version`) or not.
    pub in_doubt: bool,
}

/// A write whose answer was lost ([`PushError::InDoubt`]): the version it
/// was made over and the local values it wrote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InDoubtWrite {
    pub read_version: DateTime<Utc>,
    /// Local column → the value written.
    pub values: serde_json::Map<String, serde_json::Value>,
}

/// An object read from a provider's API, as the fields of the local table
/// mirroring it.
#[derive(Debug, Clone)]
pub struct RemoteObject {
    pub table: &'static str,
    pub remote_id: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub version: DateTime<Utc>,
}

/// What fetching a hinted object found.
#[derive(Debug, Clone)]
pub enum Fetched {
    Found(RemoteObject),
    /// The provider no longer has it (404).
    Gone {
        table: &'static str,
    },
}

pub type MaintainFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<String>, PushError>> + Send + 'a>,
>;

pub type FetchFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Fetched, PushError>> + Send + 'a>>;

pub use outbound::PushError;

pub type ApplyFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, DbError>> + Send + 'a>>;

pub type PrepareFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Option<Box<dyn BatchWrites>>, DbError>> + Send + 'a,
    >,
>;

pub type BatchApplyFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<Applied>, DbError>> + Send + 'a>,
>;

pub type ContextFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<serde_json::Value, DbError>> + Send + 'a>,
>;

pub type FlushFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DbError>> + Send + 'a>>;

/// What a provider's domain events are applied with inside the router's
/// transaction (which has `syncbridge.origin` set to the provider).
pub struct ApplyCtx<'a, 't> {
    pub tx: &'a deadpool_postgres::Transaction<'t>,
    /// The conflict rules as of this batch.
    pub rules: &'a Rules,
    /// The inbox event being applied (audit rows name it).
    pub inbox_id: i64,
}

/// A provider's set-based writes for one batch (e.g. OpenPhone's contact
/// events: read and locked together, decided in memory, written in a few
/// statements). The router offers every event to it first.
pub trait BatchWrites: Send {
    /// Applies `event` in memory, or `None` when it is not one this batch
    /// takes: then the batch has written what a one-at-a-time write of the
    /// event could read, and the router applies it through
    /// [`Provider::apply_event`].
    fn apply<'a, 't: 'a>(
        &'a mut self,
        ctx: &'a ApplyCtx<'a, 't>,
        event: &'a DomainEvent,
    ) -> BatchApplyFuture<'a>;

    /// Writes what is pending.
    fn flush<'a, 't: 'a>(
        &'a mut self,
        tx: &'a deadpool_postgres::Transaction<'t>,
    ) -> FlushFuture<'a>;
}

/// What one run of a provider's pull is asked for.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Only what changed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Report what a real run would do and write nothing.
    pub dry_run: bool,
    /// Run only if the last real run started at least this long ago
    /// (checked under the run's lock: a scheduled job runs once per
    /// interval across every process).
    pub due_after: Option<std::time::Duration>,
    /// Cancelled: the run stops after the page in hand (shutdown).
    pub stop: tokio_util::sync::CancellationToken,
}

/// How a run ended: the provider's summary (its own keys) and whether it
/// completed without errors.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub summary: serde_json::Value,
    pub ok: bool,
}

/// Why a pull or its audit could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Api(PushError),
}

pub type PullFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<PullReport, PullError>> + Send + 'a>>;

pub type AuditFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<serde_json::Value, PullError>> + Send + 'a>,
>;

/// A provider's pull: pages through its API and hands what it finds to
/// the pipeline ([`crate::pull::PullRun`]) as deliveries, which the inbox
/// stores and the router applies like any webhook's.
pub trait Pull: Send + Sync {
    /// What the progress counts (`calls`).
    fn unit(&self) -> &'static str;

    /// Why a run cannot start (credentials not configured), if it cannot.
    fn ready(&self) -> Result<(), &'static str>;

    /// How often the scheduler runs it, if it does.
    fn every(&self) -> Option<std::time::Duration> {
        None
    }

    /// Rung when a run is wanted now (a notification named something to
    /// pull): the scheduler then runs it without waiting for the interval.
    fn wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// One run. Errors of single items and of the provider's API belong in
    /// the report (`ok: false`); `Err` is for a run that could not go on.
    fn pull<'a, 'r>(&'a self, run: &'a mut crate::pull::PullRun<'r>) -> PullFuture<'a>
    where
        'r: 'a;

    /// Compares what the provider holds with what is stored.
    fn audit<'a>(&'a self, db: &'a deadpool_postgres::Client) -> AuditFuture<'a>;
}

pub type ResolveFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Value, crate::apply::engine::ResolveError>>
            + Send
            + 'a,
    >,
>;

pub type JobFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, String>> + Send + 'a>>;

/// A provider's job run by the scheduler at its interval and on demand
/// (the D1 replica's reconciliation and full resync): once per interval
/// across every process, never two at once ([`crate::scheduler::run_job`]).
pub trait Job: Send + Sync {
    /// Its name, unique within the provider: runs are recorded as
    /// `<provider>.<name>`.
    fn name(&self) -> &'static str;

    /// How often the scheduler runs it, if it does.
    fn every(&self) -> Option<std::time::Duration>;

    /// One run: its summary, or why it failed (retried at the next
    /// interval; the error shows in `/api/sync/status`). `ctx.args` holds
    /// what an on-demand run was asked for.
    fn run<'a>(&'a self, ctx: &'a crate::scheduler::JobCtx) -> JobFuture<'a>;
}

pub type IntegrityFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Finding>, String>> + Send + 'a>>;

/// One integrity finding (SPEC §5.3): what, where, how many, a few
/// examples, and what `--fix` did or can do about it.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Finding {
    pub provider: &'static str,
    /// The check (`missing_in_d1`, `duplicate_message_id`, …).
    pub check: &'static str,
    pub table: Option<String>,
    pub count: u64,
    /// A few of the ids concerned.
    pub examples: Vec<String>,
    pub detail: String,
    pub fix: Fix,
}

/// What can be done about a finding.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind", content = "fixed")]
pub enum Fix {
    /// Nothing safe: an operator decides.
    Report,
    /// `--fix` repairs it; with it, how many were repaired.
    Repair(u64),
    /// Running the provider's pull repairs it (the runner does, with
    /// `--fix`).
    Pull,
}

/// What an integrity check reads and may repair with.
pub struct IntegrityCtx<'a> {
    pub db: &'a deadpool_postgres::Client,
    /// Repair what is safe.
    pub fix: bool,
}

pub type PushFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Pushed, PushError>> + Send + 'a>>;

pub type BatchPushFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Vec<Result<Pushed, PushError>>> + Send + 'a>,
>;

pub trait Provider: Send + Sync + 'static {
    fn name(&self) -> ProviderName;

    /// `Some(reason)` when this provider's webhook route is disabled.
    fn webhooks_disabled(&self) -> Option<&'static str> {
        None
    }

    /// The local tables this provider pushes, or why it pushes nothing.
    fn pushes(&self) -> Result<&'static [&'static str], &'static str> {
        Err("this provider has no outbound sync")
    }

    /// Pushes one record's latest state (or its deletion).
    fn push<'a>(&'a self, _change: &'a Change) -> PushFuture<'a> {
        Box::pin(async { Err(PushError::Disabled("this provider has no outbound sync")) })
    }

    /// Whether a push may end [`PushError::InDoubt`]: then every push that
    /// writes nothing looks for an earlier in-doubt write the remote state
    /// may show (one audit query). Providers with conditional writes, or
    /// none that write over a read, leave it `false`.
    fn writes_in_doubt(&self) -> bool {
        false
    }

    /// How many records one [`push_batch`](Provider::push_batch) takes; 1
    /// (the default) pushes each record with its own `push`.
    fn push_batch_size(&self) -> usize {
        1
    }

    /// Pushes many records' latest states (or deletions) at once, for a
    /// provider whose API writes many rows per request: one result per
    /// change, in order. A change the provider refuses fails alone, never
    /// its neighbours in the batch.
    fn push_batch<'a>(&'a self, changes: &'a [Change]) -> BatchPushFuture<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(changes.len());
            for c in changes {
                out.push(self.push(c).await);
            }
            out
        })
    }

    /// Reads what a push of `change` needs beyond the record's row, in the
    /// dispatcher's transaction (so with the claim's locks held); it
    /// arrives as `Change::context`.
    fn push_context<'a, 't: 'a>(
        &'a self,
        _tx: &'a deadpool_postgres::Transaction<'t>,
        _change: &'a Change,
    ) -> ContextFuture<'a> {
        Box::pin(async { Ok(serde_json::Value::Null) })
    }

    /// The provider's own bookkeeping of a push's end (its status columns,
    /// its log, its health), in the dispatcher's transaction with
    /// `syncbridge.origin` set to the provider.
    fn after_push<'a, 't: 'a>(
        &'a self,
        _tx: &'a deadpool_postgres::Transaction<'t>,
        _change: &'a Change,
        _outcome: PushOutcome<'a>,
        _took: std::time::Duration,
    ) -> FlushFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    /// Whether this provider's hints are fetched (`fetch` works).
    fn fetches(&self) -> bool {
        false
    }

    /// Reads one object a hint named, with syncbridge's own credentials.
    fn fetch<'a>(&'a self, _object_type: &'a str, _id: &'a str) -> FetchFuture<'a> {
        Box::pin(async { Err(PushError::Disabled("this provider has no fetch API")) })
    }

    /// Keeps the provider's webhook subscriptions pointing at
    /// `public_url` and active; `Ok(None)` when the provider has none to
    /// keep, else a summary of what was done.
    fn ensure_subscriptions<'a>(&'a self, _public_url: &'a str) -> MaintainFuture<'a> {
        Box::pin(async { Ok(None) })
    }

    /// The token in this provider's webhook URL, for providers whose
    /// webhooks are [`Webhook::PathToken`] (replay fills it in).
    fn path_token(&self) -> Option<&crate::config::Secret> {
        None
    }

    /// Authenticates the raw request and extracts the dedup key.
    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Reject>;

    /// Whether the router turns this provider's stored events into domain
    /// events yet; deliveries of providers that do not stay `pending`.
    fn routes_events(&self) -> bool {
        false
    }

    /// Turns a stored delivery into domain events. An event type the
    /// provider does not handle is `DomainEvent::Ignored`, not an error.
    fn normalise(&self, _event: &StoredEvent<'_>) -> Result<Vec<DomainEvent>, NormaliseError> {
        Ok(Vec::new())
    }

    /// Prepares set-based writes for a batch's domain events, or `None`
    /// to apply each one at a time.
    fn prepare_batch<'a, 't: 'a>(
        &'a self,
        _tx: &'a deadpool_postgres::Transaction<'t>,
        _events: &'a [&'a DomainEvent],
    ) -> PrepareFuture<'a> {
        Box::pin(async { Ok(None) })
    }

    /// Applies one of its domain events (fetch hints and ignored events
    /// are the router's own): upserts and audit rows, in the router's
    /// transaction.
    fn apply_event<'a, 't: 'a>(
        &'a self,
        _ctx: &'a ApplyCtx<'a, 't>,
        event: &'a DomainEvent,
    ) -> ApplyFuture<'a> {
        let name = self.name();
        Box::pin(async move {
            Ok(Applied::Ignored(format!(
                "{name} applies no {} events",
                event.kind()
            )))
        })
    }

    /// The provider's pull (what has no webhooks), if it has one: run by
    /// `syncbridge pull <name>` and `POST /api/<name>/sync-all`.
    fn puller(&self) -> Option<&dyn Pull> {
        None
    }

    /// What the status API shows of this provider beyond the generic
    /// counts (ResMan: each property), or `null`.
    fn status<'a>(&'a self, _db: &'a deadpool_postgres::Client) -> AuditFuture<'a> {
        Box::pin(async { Ok(Value::Null) })
    }

    /// Whether this provider resolves its own conflicts on tables that are
    /// not engine entities ([`Provider::resolve_conflict`]).
    fn resolves_conflicts(&self) -> bool {
        false
    }

    /// Resolves one of its conflicts (an operator's choice through the
    /// admin API) on a table the provider writes itself.
    fn resolve_conflict<'a>(
        &'a self,
        _client: &'a mut deadpool_postgres::Client,
        id: uuid::Uuid,
        _choice: crate::apply::engine::Choice,
        _resolved_by: Option<uuid::Uuid>,
        _notes: Option<&'a str>,
    ) -> ResolveFuture<'a> {
        Box::pin(async move {
            Err(crate::apply::engine::ResolveError::Invalid(format!(
                "conflict {id} is not one this provider resolves"
            )))
        })
    }

    /// The provider's jobs (reconciliation, full resync), if it has any.
    fn jobs(&self) -> Vec<Box<dyn Job + '_>> {
        Vec::new()
    }

    /// The provider's integrity checks (SPEC §5.3): what its side and the
    /// local tables disagree on; with `ctx.fix`, what is safe repaired.
    fn integrity<'a>(&'a self, _ctx: &'a IntegrityCtx<'a>) -> IntegrityFuture<'a> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Re-signs a recorded delivery for replay (`replay --resign`):
    /// replaces the signature headers with fresh ones for `now`, or says
    /// why it cannot (the secret of the delivery's scheme is not set).
    /// Providers whose deliveries carry no signature leave them as they are.
    fn resign(
        &self,
        _headers: &mut HeaderMap,
        _body: &[u8],
        _now: DateTime<Utc>,
    ) -> Result<(), &'static str> {
        Ok(())
    }
}

/// Headers worth storing with a delivery, lower-cased. A header sent on
/// several lines is kept as one list (signature lists joined the way their
/// scheme separates entries), so the stored delivery re-verifies.
pub(crate) fn keep_headers(
    headers: &HeaderMap,
    names: &[&str],
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for name in names {
        let values: Vec<&str> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            continue;
        }
        let sep = if *name == "webhook-signature" {
            " "
        } else {
            ", "
        };
        out.insert(
            (*name).to_owned(),
            serde_json::Value::String(values.join(sep)),
        );
    }
    out
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every provider, enabled or not: a disabled one carries the reason its
/// route answers 503 with.
#[derive(Clone, Default)]
pub struct Registry {
    providers: HashMap<ProviderName, Result<Arc<dyn Provider>, &'static str>>,
}

/// What generic code knows about a provider: its name, the local tables
/// it syncs (enabled or not: migrations, integrity and admin queries cover
/// them all), and how it is built from the configuration. One line per
/// provider in [`PROVIDERS`].
pub struct Plugin {
    pub name: ProviderName,
    /// Parses (and so validates) its section of the configuration.
    pub check: fn(&Settings) -> Result<(), ConfigError>,
    /// How its webhooks arrive, if it sends any.
    pub webhook: Webhook,
    pub entities: &'static [&'static Entity],
    /// Event types of deliveries its pull stores though its webhooks are
    /// signed (ResMan's polled prospects): they replay to
    /// `/api/{name}/deliveries`.
    pub pulled_kinds: &'static [&'static str],
    pub build: fn(&Config) -> Result<Arc<dyn Provider>, &'static str>,
}

/// The route a provider's webhooks take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhook {
    /// No webhooks (pulled providers).
    None,
    /// `POST /webhooks/{name}`, authenticated by a signature.
    Signed,
    /// `POST /webhooks/{name}/{token}`, authenticated by the unguessable
    /// token in the URL ([`Provider::path_token`]).
    PathToken,
    /// No webhooks: the provider's [`Pull`] fetches its deliveries. A
    /// recorded one is replayed to `POST /api/{name}/deliveries`, behind the
    /// admin token, and goes through `verify` like a webhook.
    Pulled,
}

/// The placeholder a fixture's path holds for the URL token.
pub const TOKEN_PLACEHOLDER: &str = "{token}";

impl Plugin {
    /// The path a stored delivery of this type replays to.
    pub fn replay_path(&self, event_type: Option<&str>) -> Option<String> {
        match event_type {
            Some(t) if self.pulled_kinds.contains(&t) => {
                Some(format!("/api/{}/deliveries", self.name))
            }
            _ => self.webhook_path(),
        }
    }

    /// The path a provider's webhooks arrive on (with the token
    /// placeholder for [`Webhook::PathToken`]).
    pub fn webhook_path(&self) -> Option<String> {
        match self.webhook {
            Webhook::None => None,
            Webhook::Signed => Some(format!("/webhooks/{}", self.name)),
            Webhook::PathToken => Some(format!("/webhooks/{}/{TOKEN_PLACEHOLDER}", self.name)),
            Webhook::Pulled => Some(format!("/api/{}/deliveries", self.name)),
        }
    }
}

/// The registry line of `name`.
pub fn plugin(name: ProviderName) -> Option<&'static Plugin> {
    PROVIDERS.iter().find(|p| p.name == name)
}

fn built<P: Provider>(p: Result<P, &'static str>) -> Result<Arc<dyn Provider>, &'static str> {
    p.map(|p| Arc::new(p) as Arc<dyn Provider>)
}

/// Every provider syncbridge has. Adding one is one line here.
pub const PROVIDERS: &[Plugin] = &[
    Plugin {
        name: ProviderName::OpenPhone,
        check: |s| openphone::config::OpenPhoneConfig::from_settings(s).map(drop),
        webhook: Webhook::Signed,
        entities: openphone::entities::ENTITIES,
        pulled_kinds: &[],
        build: |c| built(openphone::OpenPhone::from_config(c)),
    },
    Plugin {
        name: ProviderName::Keap,
        check: |s| keap::config::KeapConfig::from_settings(s).map(drop),
        webhook: Webhook::PathToken,
        entities: keap::entities::ENTITIES,
        pulled_kinds: &[],
        build: |c| built(keap::Keap::from_config(c)),
    },
    Plugin {
        name: ProviderName::Teli,
        check: |s| teli::config::TeliConfig::from_settings(s).map(drop),
        webhook: Webhook::Pulled,
        entities: &[],
        pulled_kinds: &[],
        build: |c| built(teli::Teli::from_config(c)),
    },
    Plugin {
        name: ProviderName::D1,
        check: |s| d1::config::D1Config::from_settings(s).map(drop),
        webhook: Webhook::Pulled,
        entities: &[],
        pulled_kinds: &[],
        build: |c| built(d1::D1::from_config(c)),
    },
    Plugin {
        name: ProviderName::ResMan,
        check: |s| resman::config::ResManConfig::from_settings(s).map(drop),
        webhook: Webhook::Signed,
        entities: &[],
        pulled_kinds: &["prospect"],
        build: |c| built(resman::ResMan::from_config(c)),
    },
];

/// Validates every provider's section of the configuration.
pub fn check_settings(s: &Settings) -> Result<(), ConfigError> {
    PROVIDERS.iter().try_for_each(|p| (p.check)(s))
}

/// Every table any provider syncs.
pub fn entities() -> impl Iterator<Item = &'static Entity> {
    PROVIDERS.iter().flat_map(|p| p.entities.iter().copied())
}

/// The synced table named `table`, if one is: the whitelist every query
/// that names a table from data goes through.
pub fn entity(table: &str) -> Option<&'static Entity> {
    entities().find(|e| e.table == table)
}

impl Registry {
    pub fn from_config(config: &Config) -> Registry {
        Registry {
            providers: PROVIDERS
                .iter()
                .map(|p| (p.name, (p.build)(config)))
                .collect(),
        }
    }

    /// The provider, or why it is disabled.
    pub fn get(&self, name: ProviderName) -> Result<&Arc<dyn Provider>, &'static str> {
        match self.providers.get(&name) {
            Some(Ok(p)) => Ok(p),
            Some(Err(why)) => Err(why),
            None => Err("this provider has no webhook route"),
        }
    }

    /// The provider if its webhook route is enabled, or why not.
    pub fn webhooks(&self, name: ProviderName) -> Result<&Arc<dyn Provider>, &'static str> {
        let p = self.get(name)?;
        match p.webhooks_disabled() {
            Some(why) => Err(why),
            None => Ok(p),
        }
    }

    /// Each provider that takes webhooks, and whether its route is enabled
    /// (or why not), in registry order.
    pub fn webhook_routes(&self) -> Vec<(ProviderName, Result<(), &'static str>)> {
        PROVIDERS
            .iter()
            .filter(|p| matches!(p.webhook, Webhook::Signed | Webhook::PathToken))
            .map(|p| (p.name, self.webhooks(p.name).map(|_| ())))
            .collect()
    }

    /// Enabled providers with outbound sync.
    pub fn pushers(&self) -> Vec<Arc<dyn Provider>> {
        self.enabled_where(|p| p.pushes().is_ok())
    }

    /// Every enabled provider.
    pub fn enabled(&self) -> Vec<Arc<dyn Provider>> {
        self.enabled_where(|_| true)
    }

    /// Enabled providers whose hinted objects are fetched.
    pub fn fetchers(&self) -> Vec<Arc<dyn Provider>> {
        self.enabled_where(|p| p.fetches())
    }

    /// Enabled providers whose events the router applies.
    pub fn routed(&self) -> Vec<Arc<dyn Provider>> {
        self.enabled_where(|p| p.routes_events())
    }

    /// Enabled providers matching `keep`, in name order.
    fn enabled_where(&self, keep: impl Fn(&dyn Provider) -> bool) -> Vec<Arc<dyn Provider>> {
        let mut out: Vec<_> = self
            .providers
            .values()
            .filter_map(|p| p.as_ref().ok())
            .filter(|p| keep(p.as_ref()))
            .cloned()
            .collect();
        out.sort_by_key(|p| p.name().as_str());
        out
    }
}
