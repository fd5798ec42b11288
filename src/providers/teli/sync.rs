//! The organisation-wide call sync (seed 003, SPEC §4.4): every call of
//! the organisation (`is_admin=true`), newest first, paged backwards by the
//! before-date filter until a short page or `since`. Per page:
//!
//! 1. one read: which listed calls are stored and at which version, which
//!    agents a business answers for, which deliveries the inbox holds;
//! 2. a call stored at the listed version or newer is a duplicate (no
//!    request); a call from an agent no business answers for is stored as
//!    listed (no detail request) and the apply skips it; any other call's
//!    detail is fetched — unless the inbox holds that version already, which
//!    is applied again instead;
//! 3. the page's deliveries go through the inbox and the router's apply in
//!    one transaction; the summary is counted from their outcomes and audit
//!    rows.

use std::collections::{BTreeMap, HashMap};

use futures_util::stream::{self, StreamExt};

use serde_json::{json, Value};

use super::api::{Pager, TeliApi};
use super::store;
use super::wire::Listed;
use crate::db::inbox::Outcome;
use crate::providers::{Delivery, PullError, PullReport};
use crate::pull::{Applied, PullRun};

/// The seed's summary, in its own keys.
#[derive(Debug, Default)]
struct Summary {
    total: u64,
    synced: u64,
    new_customers: u64,
    duplicates: u64,
    skipped: u64,
    by_business: BTreeMap<String, u64>,
    errors: Vec<String>,
}

impl Summary {
    fn json(&self) -> Value {
        json!({
            "totalCalls": self.total,
            "syncedCalls": self.synced,
            "newCustomers": self.new_customers,
            "duplicateCalls": self.duplicates,
            "skippedCalls": self.skipped,
            "callsByBusiness": self.by_business,
            "errors": self.errors,
        })
    }

    /// Errors past this many are counted, not listed.
    fn error(&mut self, e: String) {
        const MAX_LISTED: usize = 100;
        tracing::warn!(error = %e, "Teli sync");
        match self.errors.len() {
            n if n < MAX_LISTED => self.errors.push(e),
            n if n == MAX_LISTED => self.errors.push("further errors are in the log".into()),
            _ => {}
        }
    }
}

/// Call details fetched at once, at most (the pacer still spaces them to
/// `TELI_API_RATE`): enough to keep the rate when Teli answers slowly.
pub const DETAILS_IN_FLIGHT: usize = 4;

/// Body bytes of fetched details stored in one transaction at most (a
/// single larger detail goes alone).
const STORE_BYTES: usize = 4 << 20;

/// One listed call's fate before the apply.
enum Plan {
    /// Stored at this version or newer.
    Duplicate,
    /// Its delivery is in the inbox: apply it again.
    Again(String),
    /// Store this delivery and apply it.
    New(Delivery),
}

pub async fn run(api: &TeliApi, run: &mut PullRun<'_>) -> Result<PullReport, PullError> {
    let since = run.options.since;
    let mut summary = Summary::default();
    let mut pages = Pager::new(api, since);
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                summary.error(format!("listing calls: {e}"));
                break;
            }
        };
        page.errors.into_iter().for_each(|e| summary.error(e));
        summary.total += page.calls.len() as u64;
        run.page_done(page.calls.len() as u64).await;
        if let Err(e) = sync_page(api, run, &page.calls, &mut summary).await {
            summary.error(format!("storing a page of calls: {e}"));
            break;
        }
        if run.stopping() {
            summary.error("stopped by shutdown before the last page".into());
            break;
        }
    }
    Ok(PullReport {
        ok: summary.errors.is_empty(),
        summary: summary.json(),
    })
}

/// A call's detail as a delivery.
async fn fetch_delivery(api: &TeliApi, call_id: String) -> Result<Delivery, String> {
    let body = api
        .detail(&call_id)
        .await
        .map_err(|e| format!("call {call_id}: fetching its detail: {e}"))?;
    super::wire::delivery(body).map_err(|e| format!("call {call_id}: {e}"))
}

async fn sync_page(
    api: &TeliApi,
    run: &mut PullRun<'_>,
    calls: &[Listed],
    summary: &mut Summary,
) -> Result<(), PullError> {
    if calls.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = calls.iter().map(|c| c.call_id.as_str()).collect();
    let agents: Vec<&str> = calls.iter().flat_map(|c| c.agents()).collect();
    let keys: Vec<String> = calls
        .iter()
        .flat_map(|c| [c.key(), c.listed_key()])
        .collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (stored, known, in_inbox) = {
        let tx = run.begin().await?;
        let stored = store::stored_versions(&tx, &ids).await?;
        let known = store::known_agents(&tx, &agents).await?;
        let in_inbox =
            crate::db::inbox::existing_keys(&tx, crate::domain::ProviderName::Teli, &key_refs)
                .await?;
        tx.commit().await.map_err(crate::db::DbError::from)?;
        (stored, known, in_inbox)
    };

    // Decided from the read alone; the details to fetch are then fetched a
    // few at a time (the pacer keeps the rate), in the page's order.
    let mut decided = Vec::with_capacity(calls.len());
    for c in calls {
        let newer = match stored.get(&c.call_id) {
            None => true,
            Some(have) => match (c.updated_at, have) {
                (Some(listed), Some(have)) => listed > *have,
                (Some(_), None) => true,
                (None, _) => false,
            },
        };
        if !newer {
            decided.push((c, Some(Plan::Duplicate)));
            continue;
        }
        let answered = c.agents().iter().any(|a| known.contains(*a));
        let key = if answered { c.key() } else { c.listed_key() };
        decided.push(match (in_inbox.contains(&key), answered) {
            (true, _) => (c, Some(Plan::Again(key))),
            // Its detail is fetched below.
            (false, true) => (c, None),
            (false, false) => match c.delivery() {
                Ok(d) => (c, Some(Plan::New(d))),
                Err(e) => {
                    summary.error(format!("call {}: {e}", c.call_id));
                    continue;
                }
            },
        });
    }
    // Stored (and so freed) in groups of at most STORE_BYTES of bodies: a
    // page of large details never sits in memory whole.
    let mut plans = Vec::with_capacity(decided.len());
    let mut fetching = Vec::new();
    for (c, plan) in decided {
        match plan {
            Some(p) => plans.push((c, p)),
            None => fetching.push(c),
        }
    }
    let ids: Vec<String> = fetching.iter().map(|c| c.call_id.clone()).collect();
    let mut details = stream::iter(ids)
        .map(|id| fetch_delivery(api, id))
        .buffered(DETAILS_IN_FLIGHT);
    let mut bytes = 0;
    let mut next = fetching.into_iter();
    while let Some(fetched) = details.next().await {
        let Some(c) = next.next() else { break };
        match fetched {
            Ok(d) => {
                if bytes > 0 && bytes + d.body.len() > STORE_BYTES {
                    store_group(run, std::mem::take(&mut plans), summary).await?;
                    bytes = 0;
                }
                bytes += d.body.len();
                plans.push((c, Plan::New(d)));
            }
            Err(e) => summary.error(e),
        }
    }
    store_group(run, plans, summary).await
}

/// Stores and applies a group of a page's calls, and counts them.
async fn store_group(
    run: &mut PullRun<'_>,
    plans: Vec<(&Listed, Plan)>,
    summary: &mut Summary,
) -> Result<(), PullError> {
    let new: Vec<Delivery> = plans
        .iter()
        .filter_map(|(_, p)| match p {
            Plan::New(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    let again: Vec<&str> = plans
        .iter()
        .filter_map(|(_, p)| match p {
            Plan::Again(k) => Some(k.as_str()),
            _ => None,
        })
        .collect();
    let applied: HashMap<String, Applied> = run
        .store_and_apply(&new, &again)
        .await?
        .into_iter()
        .collect();
    drop(new);
    let processed: Vec<i64> = applied
        .values()
        .filter(|a| matches!(a.outcome, Outcome::Processed))
        .map(|a| a.inbox_id)
        .collect();
    let audited = if processed.is_empty() {
        HashMap::new()
    } else {
        let tx = run.begin().await?;
        let a = store::applied_calls(&tx, &processed).await?;
        tx.commit().await.map_err(crate::db::DbError::from)?;
        a
    };
    for (c, plan) in &plans {
        let key = match plan {
            Plan::Duplicate => {
                summary.duplicates += 1;
                continue;
            }
            Plan::Again(k) => k.as_str(),
            Plan::New(d) => d.dedup_key.as_str(),
        };
        let Some(a) = applied.get(key) else {
            summary.error(format!("call {}: its delivery was not applied", c.call_id));
            continue;
        };
        match &a.outcome {
            Outcome::Processed => {
                summary.synced += 1;
                if let Some((business, new_customer)) = audited.get(&a.inbox_id) {
                    *summary
                        .by_business
                        .entry(business.clone().unwrap_or_else(|| "(unnamed)".into()))
                        .or_default() += 1;
                    summary.new_customers += u64::from(*new_customer);
                }
            }
            Outcome::Ignored(_) => summary.skipped += 1,
            Outcome::SkippedStale(_) => summary.duplicates += 1,
            Outcome::Failed { error, retry_at } => summary.error(format!(
                "call {}: {error}{}",
                c.call_id,
                if retry_at.is_some() {
                    " (inbox event retried by the router)"
                } else {
                    ""
                }
            )),
        }
    }
    Ok(())
}
