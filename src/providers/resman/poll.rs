//! Inbound: ResMan publishes no webhooks, so each enabled property is polled
//! (`GET /Prospects?propertyId=&modifiedSince=`) on its frequency —
//! `realtime` every `SYNCBRIDGE_RESMAN_POLL_INTERVAL_S`, `hourly`, `daily` —
//! or at once when a relay's notification flagged it. Each poll asks from
//! its stored cursor less `SYNCBRIDGE_RESMAN_POLL_OVERLAP_S` (late commits,
//! clock skew); the prospects enter the inbox as deliveries (dedup key
//! `<prospectId>@<lastModified>`: an overlap's repeats are duplicates) and
//! the router applies them in the same transaction; only after that commit
//! does the cursor move, to the time the request was made. A property whose
//! poll fails keeps its cursor, counts the failure on its integration, and
//! the others go on.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::api::{ResManApi, Target};
use super::apply::cursor_name;
use super::config::ResManConfig;
use super::push::Integration;
use super::store;
use crate::db::DbError;
use crate::domain::{DedupKey, ProviderName};
use crate::providers::{Delivery, PullError, PullReport};
use crate::pull::PullRun;

/// A polled prospect as a delivery.
pub fn delivery(value: &Value) -> Result<Delivery, String> {
    let id = value
        .get("prospectId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("a prospect without prospectId")?;
    let modified = value
        .get("lastModified")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("prospect {id} has no lastModified"))?;
    let at = super::wire::parse_time(modified)
        .ok_or_else(|| format!("prospect {id}: lastModified {modified:?} is not a time"))?;
    let body = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    Ok(Delivery {
        provider: ProviderName::ResMan,
        dedup_key: DedupKey::new(&format!(
            "{id}@{}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ))
        .ok_or("the prospect's key is empty")?,
        object_keys: Vec::new(),
        event_type: Some("prospect".into()),
        event_id: Some(id.to_owned()),
        occurred_at: Some(at),
        headers: serde_json::Map::new(),
        body: Bytes::from(body),
    })
}

/// A property to poll now.
struct Due {
    property: uuid::Uuid,
    integration: Integration,
    since: DateTime<Utc>,
}

/// The properties to poll: on a scheduled round those due by their
/// frequency or flagged by a notification; on demand (`sync-all`, a
/// notification's wake) every enabled one.
async fn due(run: &mut PullRun<'_>, config: &ResManConfig) -> Result<Vec<Due>, DbError> {
    let everything = run.options.due_after.is_none();
    let tx = run.begin().await?;
    let rows = tx
        .query(
            "SELECT to_jsonb(i), i.property_id, i.sync_frequency, i.created_at,
                    (c.position ->> 'cursor')::timestamptz,
                    (c.position ->> 'polled_at')::timestamptz,
                    coalesce((c.position ->> 'due')::boolean, false)
             FROM resman_integration i
             LEFT JOIN sync_cursors c ON c.name = 'resman.poll.' || i.property_id
             WHERE i.property_id IS NOT NULL AND i.sync_enabled
               AND i.sync_status NOT IN ('paused', 'disconnected')
               AND i.sync_direction <> 'to_resman'
             ORDER BY i.property_id",
            &[],
        )
        .await?;
    tx.commit().await?;
    let now = Utc::now();
    let overlap = chrono::Duration::from_std(config.poll_overlap).unwrap_or_default();
    let mut out = Vec::new();
    for r in rows {
        let Ok(integration) = serde_json::from_value::<Integration>(r.get(0)) else {
            continue;
        };
        let every = match r.get::<_, String>(2).as_str() {
            "hourly" => Duration::from_secs(3600),
            "daily" => Duration::from_secs(86_400),
            _ => config.poll_every,
        };
        let polled: Option<DateTime<Utc>> = r.get(5);
        let flagged: bool = r.get(6);
        let is_due = flagged
            || polled.is_none_or(|p| {
                // A little early rather than a whole interval late.
                now - p + chrono::Duration::milliseconds(500)
                    >= chrono::Duration::from_std(every).unwrap_or_default()
            });
        if !is_due && !everything {
            continue;
        }
        let cursor: Option<DateTime<Utc>> = r.get(4);
        let created: DateTime<Utc> = r.get(3);
        out.push(Due {
            property: r.get(1),
            integration,
            since: cursor.unwrap_or(created) - overlap,
        });
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct Summary {
    properties: u64,
    prospects: u64,
    stored: u64,
    duplicates: u64,
    errors: Vec<String>,
}

/// One poll of every due property.
pub async fn run(
    api: &ResManApi,
    config: &ResManConfig,
    run: &mut PullRun<'_>,
) -> Result<PullReport, PullError> {
    let mut s = Summary::default();
    for d in due(run, config).await? {
        if run.stopping() {
            break;
        }
        s.properties += 1;
        if let Err(e) = poll_property(api, config, run, &d, &mut s).await {
            let error = format!("property {}: {e}", d.integration.resman_property_id);
            if !run.options.dry_run {
                let tx = run.begin().await?;
                store::record_failure(&tx, d.property, &error, config.error_threshold).await?;
                tx.commit().await.map_err(DbError::from)?;
            }
            s.errors.push(error);
        }
    }
    Ok(PullReport {
        ok: s.errors.is_empty(),
        summary: json!({
            "properties": s.properties,
            "prospects": s.prospects,
            "stored": s.stored,
            "duplicates": s.duplicates,
            "errors": s.errors,
        }),
    })
}

async fn poll_property(
    api: &ResManApi,
    config: &ResManConfig,
    run: &mut PullRun<'_>,
    d: &Due,
    s: &mut Summary,
) -> Result<(), PullError> {
    let target: Target = d
        .integration
        .target(config.account_id.as_deref())
        .map_err(PullError::Api)?;
    // The cursor moves to when the request was made: what changes while
    // it is answered is in the next window.
    let requested = Utc::now();
    let since = d.since.min(requested);
    let listed = api
        .prospects(&target, since)
        .await
        .map_err(|e| PullError::Api(e.into_push()))?;
    run.page_done(listed.len() as u64).await;
    s.prospects += listed.len() as u64;
    let mut deliveries = Vec::with_capacity(listed.len());
    for v in &listed {
        match delivery(v) {
            Ok(d) => deliveries.push(d),
            Err(e) => s.errors.push(e),
        }
    }
    let keys: Vec<&str> = deliveries.iter().map(|d| d.dedup_key.as_str()).collect();
    let seen: HashSet<String> = {
        let tx = run.begin().await?;
        let seen = crate::db::inbox::existing_keys(&tx, ProviderName::ResMan, &keys).await?;
        tx.commit().await.map_err(DbError::from)?;
        seen.into_iter().collect()
    };
    let new: Vec<Delivery> = deliveries
        .iter()
        .filter(|d| !seen.contains(d.dedup_key.as_str()))
        .cloned()
        .collect();
    s.duplicates += (deliveries.len() - new.len()) as u64;
    let applied = run.store_and_apply(&new, &[]).await?;
    s.stored += applied.len() as u64;
    // Committed: the cursor and the integration's health move on.
    if !run.options.dry_run {
        let tx = run.begin().await?;
        tx.execute(
            "INSERT INTO sync_cursors (name, position) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
            &[
                &cursor_name(d.property),
                &json!({"cursor": requested, "polled_at": Utc::now(), "due": false}),
            ],
        )
        .await
        .map_err(DbError::from)?;
        tx.execute(
            "UPDATE resman_integration SET error_count = 0, last_error = NULL,
                 sync_status = CASE WHEN sync_status = 'error' THEN 'active' ELSE sync_status END,
                 last_sync_at = now(), last_successful_sync_at = now()
             WHERE property_id = $1",
            &[&d.property],
        )
        .await
        .map_err(DbError::from)?;
        tx.commit().await.map_err(DbError::from)?;
    }
    Ok(())
}
