//! D1 → Postgres: e-mails written at the edge (SPEC §4.5). A pull pages
//! through D1's `emails WHERE synced_to_supabase = 0` in `(created_at, id)`
//! order; each row is an inbox delivery (dedup key: its id at its state)
//! applied by the router into `emails`; only after that commit is the row
//! marked `synced_to_supabase = 1` in D1 — and only if its state is still
//! the one stored, so an edge update made meanwhile is pulled next time
//! instead of being marked away. A failed mark (or a crash before it)
//! delivers the row again next time; its apply then changes nothing.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::api::D1Api;
use super::wire::{self, Statement};
use crate::apply::engine;
use crate::apply::Applied;
use crate::db::inbox::Outcome;
use crate::db::DbError;
use crate::domain::{parse_provider_time, DedupKey, ProviderName};
use crate::providers::edge::check_text;
use crate::providers::{ApplyCtx, Delivery, PullError, PullReport};
use crate::pull::PullRun;

/// The `emails` columns mirrored, the key first.
pub const COLUMNS: &[&str] = &[
    "id",
    "prospect_id",
    "campaign_id",
    "subject",
    "body",
    "to_email",
    "from_email",
    "message_id",
    "direction",
    "status",
    "sent_at",
    "opened_at",
    "clicked_at",
    "replied_at",
    "bounced_at",
    "created_at",
];

/// What an edge update of a pulled e-mail changes: the mark holds only
/// while these are as stored.
const STATE: &[&str] = &[
    "status",
    "opened_at",
    "clicked_at",
    "replied_at",
    "bounced_at",
];

/// Rows per D1 page.
const PAGE: usize = 100;

/// The namespace of the audit rows' entity ids (an e-mail's id is D1's
/// text; the audit log's `entity_id` is a UUID v5 of it).
const AUDIT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5e1f_d1e0_0000_4000_8000_656d_6169_6c73);

/// An e-mail row as D1 answered it, as a delivery: the row's JSON, keyed
/// by `<id>@<hash of the row>`.
pub fn delivery(row: &Map<String, Value>) -> Result<Delivery, String> {
    let id = id_of(row)?;
    let body = serde_json::to_vec(row).map_err(|e| e.to_string())?;
    let digest = Sha256::digest(&body);
    let state: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(Delivery {
        provider: ProviderName::D1,
        dedup_key: DedupKey::new(&format!("{id}@{state}")).ok_or("the e-mail has no id")?,
        object_keys: Vec::new(),
        event_type: Some("email".into()),
        event_id: Some(id),
        occurred_at: row
            .get("created_at")
            .and_then(Value::as_str)
            .and_then(parse_provider_time),
        headers: Map::new(),
        body: Bytes::from(body),
    })
}

fn id_of(row: &Map<String, Value>) -> Result<String, String> {
    let id = match row.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("an e-mail row has no id".into()),
    };
    check_text("id", &id, 200)?;
    Ok(id)
}

/// The upsert of one e-mail from its JSON (only the mirrored columns; a
/// row whose mirrored columns are unchanged returns nothing).
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let cols = COLUMNS.join(", ");
    let rest = &COLUMNS[1..];
    let select: Vec<String> = COLUMNS
        .iter()
        .map(|c| match *c {
            "created_at" => "coalesce(r.created_at, now())".to_owned(),
            c => format!("r.{c}"),
        })
        .collect();
    format!(
        "INSERT INTO emails ({cols})
         SELECT {} FROM jsonb_populate_record(NULL::emails, $1::jsonb) r
         ON CONFLICT (id) DO UPDATE SET ({}) = ({})
         WHERE ({}) IS DISTINCT FROM ({})
         RETURNING (xmax = 0)",
        select.join(", "),
        rest.join(", "),
        rest.iter()
            .map(|c| format!("EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        rest.iter()
            .map(|c| format!("emails.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        rest.iter()
            .map(|c| format!("EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
});

/// The router's apply of a pulled e-mail.
pub async fn apply(ctx: &ApplyCtx<'_, '_>, row: &Value) -> Result<Applied, DbError> {
    let Some(obj) = row.as_object() else {
        return Ok(Applied::Ignored("not an e-mail row".into()));
    };
    let id = match id_of(obj) {
        Ok(id) => id,
        Err(why) => return Ok(Applied::Ignored(why)),
    };
    let mirrored: Map<String, Value> = COLUMNS
        .iter()
        .filter_map(|c| Some(((*c).to_owned(), obj.get(*c)?.clone())))
        .map(|(k, v)| match (k.as_str(), v) {
            // Numbers in text columns (ids) keep their digits.
            ("id" | "prospect_id" | "campaign_id", Value::Number(n)) => {
                (k, Value::String(n.to_string()))
            }
            (_, v) => (k, v),
        })
        .collect();
    let stmt = ctx.tx.prepare_cached(&UPSERT).await?;
    let Some(row) = ctx.tx.query_opt(&stmt, &[&Value::Object(mirrored)]).await? else {
        return Ok(Applied::Stale(format!("e-mail {id} is stored as it is")));
    };
    let inserted: bool = row.get(0);
    let entity = uuid::Uuid::new_v5(&AUDIT_NAMESPACE, id.as_bytes());
    engine::audit(
        ctx.tx,
        "emails",
        entity,
        if inserted { "insert" } else { "update" },
        ProviderName::D1,
        Some(ctx.inbox_id),
        if inserted { "inserted" } else { "updated" },
        &json!({"after": {"id": id}}),
        &[],
    )
    .await?;
    Ok(if inserted {
        Applied::Inserted(entity)
    } else {
        Applied::Updated(entity)
    })
}

/// A D1 page of unsynced e-mails after the keyset `(created_at, id)`.
fn page_query(after: &(String, String)) -> Statement {
    Statement::new(
        format!(
            "SELECT * FROM emails WHERE synced_to_supabase = 0
               AND (coalesce(created_at, ''), id) > (?1, ?2)
             ORDER BY coalesce(created_at, ''), id LIMIT {PAGE}"
        ),
        vec![after.0.clone(), after.1.clone()],
    )
}

/// The mark of one stored row: conditional on its state being as stored.
fn mark(row: &Map<String, Value>) -> Option<Statement> {
    let id = id_of(row).ok()?;
    let mut params = vec![id];
    let mut conds = vec!["id = ?1".to_owned()];
    for c in STATE {
        match row.get(*c).and_then(wire::param) {
            Some(v) if row.contains_key(*c) => {
                params.push(v);
                conds.push(format!("{} IS ?{}", wire::ident(c), params.len()));
            }
            None if row.contains_key(*c) => conds.push(format!("{} IS NULL", wire::ident(c))),
            _ => {}
        }
    }
    Some(Statement::new(
        format!(
            "UPDATE emails SET synced_to_supabase = 1 WHERE {}",
            conds.join(" AND ")
        ),
        params,
    ))
}

#[derive(Debug, Default)]
struct Summary {
    pulled: u64,
    stored: u64,
    unchanged: u64,
    marked: u64,
    errors: Vec<String>,
}

/// One run of the e-mail pull.
pub async fn pull(api: &D1Api, run: &mut PullRun<'_>) -> Result<PullReport, PullError> {
    let mut s = Summary::default();
    let mut after = (String::new(), String::new());
    loop {
        let rows = match api.query(&page_query(&after)).await {
            Ok(r) => r,
            Err(e) => {
                s.errors.push(format!("reading unsynced e-mails: {e}"));
                break;
            }
        };
        let full = rows.len() >= PAGE;
        let Some(last) = rows.last() else { break };
        after = (
            last.get("created_at")
                .and_then(wire::param)
                .unwrap_or_default(),
            id_of(last).unwrap_or_default(),
        );
        s.pulled += rows.len() as u64;
        run.page_done(rows.len() as u64).await;
        if let Err(e) = store_page(api, run, &rows, &mut s).await {
            s.errors.push(format!("storing a page of e-mails: {e}"));
            break;
        }
        if !full || run.stopping() {
            break;
        }
    }
    // What still waits in D1 (the inbound half's pending, for the status).
    let waiting = match api
        .query(&Statement::new(
            "SELECT count(*) AS n FROM emails WHERE synced_to_supabase = 0",
            vec![],
        ))
        .await
    {
        Ok(rows) => rows.first().and_then(|r| r.get("n")).cloned(),
        Err(e) => {
            s.errors.push(format!("counting unsynced e-mails: {e}"));
            None
        }
    };
    Ok(PullReport {
        ok: s.errors.is_empty(),
        summary: json!({
            "pulledEmails": s.pulled,
            "storedEmails": s.stored,
            "unchangedEmails": s.unchanged,
            "markedSynced": s.marked,
            "unsyncedInD1": waiting,
            "errors": s.errors,
        }),
    })
}

async fn store_page(
    api: &D1Api,
    run: &mut PullRun<'_>,
    rows: &[Map<String, Value>],
    s: &mut Summary,
) -> Result<(), PullError> {
    let mut deliveries = Vec::with_capacity(rows.len());
    for r in rows {
        match delivery(r) {
            Ok(d) => deliveries.push((r, d)),
            Err(e) => s.errors.push(e),
        }
    }
    let keys: Vec<&str> = deliveries
        .iter()
        .map(|(_, d)| d.dedup_key.as_str())
        .collect();
    let seen = {
        let tx = run.begin().await?;
        let seen = crate::db::inbox::existing_keys(&tx, ProviderName::D1, &keys).await?;
        tx.commit().await.map_err(DbError::from)?;
        seen
    };
    let (again, new): (Vec<_>, Vec<_>) = deliveries
        .iter()
        .partition(|(_, d)| seen.contains(d.dedup_key.as_str()));
    let new: Vec<Delivery> = new.into_iter().map(|(_, d)| d.clone()).collect();
    let again: Vec<&str> = again.iter().map(|(_, d)| d.dedup_key.as_str()).collect();
    let applied: HashMap<String, crate::pull::Applied> = run
        .store_and_apply(&new, &again)
        .await?
        .into_iter()
        .collect();
    let mut marks = Vec::new();
    for (row, d) in &deliveries {
        match applied.get(d.dedup_key.as_str()).map(|a| &a.outcome) {
            Some(Outcome::Processed) => s.stored += 1,
            Some(Outcome::SkippedStale(_)) => s.unchanged += 1,
            Some(Outcome::Ignored(why)) => {
                s.errors.push(format!(
                    "e-mail {}: {why}",
                    d.event_id.as_deref().unwrap_or("?")
                ));
                continue;
            }
            Some(Outcome::Failed { error, .. }) => {
                s.errors.push(format!(
                    "e-mail {}: {error}",
                    d.event_id.as_deref().unwrap_or("?")
                ));
                continue;
            }
            None => continue,
        }
        marks.extend(mark(row));
    }
    // Marked only once stored; a dry run marks nothing.
    if run.options.dry_run || marks.is_empty() {
        return Ok(());
    }
    match api.batch(&marks).await {
        Ok(results) => s.marked += results.iter().map(|r| r.changes()).sum::<u64>(),
        Err(e) => s.errors.push(format!(
            "marking {} stored e-mails as synced in D1 (they come again next time): {e}",
            marks.len()
        )),
    }
    Ok(())
}

/// E-mails in D1 against the stored ones: counts, what D1 has that is not
/// stored (the first 1,000), and what waits unsynced.
pub async fn audit(api: &D1Api, db: &deadpool_postgres::Client) -> Result<Value, PullError> {
    let local: std::collections::HashSet<String> = db
        .query("SELECT id FROM emails", &[])
        .await
        .map_err(DbError::from)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut after = String::new();
    let mut remote = 0u64;
    let mut missing = Vec::new();
    loop {
        let rows = api
            .query(&Statement::new(
                "SELECT id FROM emails WHERE id > ?1 ORDER BY id LIMIT 1000",
                vec![after.clone()],
            ))
            .await
            .map_err(|e| PullError::Api(crate::providers::PushError::Transient(e.to_string())))?;
        let Some(last) = rows.last() else { break };
        after = id_of(last).unwrap_or_default();
        remote += rows.len() as u64;
        for r in &rows {
            if let Ok(id) = id_of(r) {
                if !local.contains(&id) && missing.len() < 1000 {
                    missing.push(id);
                }
            }
        }
        if rows.len() < 1000 {
            break;
        }
    }
    let unsynced = api
        .query(&Statement::new(
            "SELECT count(*) AS n FROM emails WHERE synced_to_supabase = 0",
            vec![],
        ))
        .await
        .map_err(|e| PullError::Api(crate::providers::PushError::Transient(e.to_string())))?;
    Ok(json!({
        "d1EmailCount": remote,
        "localEmailCount": local.len(),
        "missingLocally": missing,
        "unsyncedInD1": unsynced.first().and_then(|r| r.get("n")).cloned().unwrap_or(json!(0)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_keyed_by_its_state_and_marked_only_in_it() {
        let row: Map<String, Value> = serde_json::from_value(json!({
            "id": "e-1", "status": "sent", "opened_at": null, "subject": "Hi",
            "created_at": "2025-03-14T15:00:00.000Z", "synced_to_supabase": 0
        }))
        .unwrap();
        let d = delivery(&row).unwrap();
        assert!(d.dedup_key.as_str().starts_with("e-1@"));
        let mut opened = row.clone();
        opened.insert("opened_at".into(), json!("2025-03-14T16:00:00.000Z"));
        assert_ne!(delivery(&opened).unwrap().dedup_key, d.dedup_key);
        let m = mark(&row).unwrap();
        assert_eq!(
            m.sql,
            r#"UPDATE emails SET synced_to_supabase = 1 WHERE id = ?1 AND "status" IS ?2 AND "opened_at" IS NULL"#
        );
        assert_eq!(m.params, ["e-1", "sent"]);
        assert!(delivery(&Map::new()).is_err());
        assert!(UPSERT.contains("ON CONFLICT (id) DO UPDATE"));
    }
}
