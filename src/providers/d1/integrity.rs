//! The D1 replica's integrity checks (SPEC §4.5, §5.3): per pushed table,
//! the id sets compared in pages (rows missing in D1, rows D1 has that
//! Postgres does not) and the counts beyond a tolerance; for e-mails,
//! outbound ones without a prospect, duplicate `message_id`s on either
//! side, and e-mails D1 has held unsynced for over an hour.
//!
//! What `--fix` repairs (safe, since D1 is a cache for the pushed tables):
//! missing rows are pushed, extra rows deleted (each looked up in Postgres
//! again first), unsynced e-mails pulled again (by the generic runner,
//! [`Fix::Pull`]). Orphans and duplicates are reported: the data is the
//! application's to decide on.

use serde_json::Value;

use super::api::D1Api;
use super::push::{self, Columns, Sent};
use super::replica::{self, IdWalk};
use super::wire::Statement;
use crate::domain::ProviderName;
use crate::providers::{Finding, Fix, IntegrityCtx};

/// Ids kept as examples per finding.
const EXAMPLES: usize = 5;

fn finding(
    check: &'static str,
    table: &str,
    count: u64,
    examples: Vec<String>,
    detail: String,
    fix: Fix,
) -> Finding {
    Finding {
        provider: ProviderName::D1.as_str(),
        check,
        table: Some(table.to_owned()),
        count,
        examples,
        detail,
        fix,
    }
}

fn db_err(e: impl std::fmt::Display) -> String {
    format!("database: {e}")
}

/// Ids with changes for D1 still in the outbox: in flight, not findings.
async fn in_flight(
    db: &deadpool_postgres::Client,
    table: &str,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, String> {
    let parsed: Vec<uuid::Uuid> = ids.iter().filter_map(|s| s.parse().ok()).collect();
    Ok(db
        .query(
            "SELECT DISTINCT record_id::text FROM sync_outbox
             WHERE provider = 'd1' AND table_name = $1 AND status = 'pending'
               AND record_id = ANY($2)",
            &[&table, &parsed],
        )
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

pub async fn check(
    api: &D1Api,
    columns: &Columns,
    tolerance: u64,
    ctx: &IntegrityCtx<'_>,
) -> Result<Vec<Finding>, String> {
    let db = ctx.db;
    let mut out = Vec::new();
    for &t in push::TABLES {
        let mut walk = IdWalk::new(t);
        let (mut missing, mut extra) = (0u64, 0u64);
        let (mut missing_ex, mut extra_ex) = (Vec::new(), Vec::new());
        let (mut pushed, mut deleted) = (0u64, 0u64);
        let mut sent = Sent::default();
        let mut error = None;
        while let Some(diff) = walk.next(api, db).await? {
            let flying = in_flight(db, t, &diff.missing).await?;
            let m: Vec<String> = diff
                .missing
                .into_iter()
                .filter(|id| !flying.contains(id))
                .collect();
            let flying = in_flight(db, t, &diff.extra).await?;
            let x: Vec<String> = diff
                .extra
                .into_iter()
                .filter(|id| !flying.contains(id))
                .collect();
            missing += m.len() as u64;
            extra += x.len() as u64;
            missing_ex.extend(
                m.iter()
                    .take(EXAMPLES - missing_ex.len().min(EXAMPLES))
                    .cloned(),
            );
            extra_ex.extend(
                x.iter()
                    .take(EXAMPLES - extra_ex.len().min(EXAMPLES))
                    .cloned(),
            );
            if ctx.fix {
                let writes = replica::upserts_of(db, t, &m).await?;
                pushed += replica::apply(api, columns, &writes, &mut sent, &mut error).await;
                let writes = replica::deletes_of(db, t, &x).await?;
                deleted += replica::apply(api, columns, &writes, &mut sent, &mut error).await;
            }
        }
        let note = |e: &Option<String>| {
            e.as_ref()
                .map(|e| format!("; the fix stopped: {e}"))
                .unwrap_or_default()
        };
        if missing > 0 {
            out.push(finding(
                "missing_in_d1",
                t,
                missing,
                missing_ex,
                format!("{missing} {t} rows are in Postgres and not in D1 (none has a change waiting in the outbox){}", note(&error)),
                Fix::Repair(pushed),
            ));
        }
        if extra > 0 {
            out.push(finding(
                "extra_in_d1",
                t,
                extra,
                extra_ex,
                format!(
                    "{extra} {t} rows are in D1 and no longer in Postgres{}",
                    note(&error)
                ),
                Fix::Repair(deleted),
            ));
        }
        let (local, remote) = walk.counts();
        let gap = local.abs_diff(remote);
        if gap > tolerance {
            out.push(finding(
                "count_mismatch",
                t,
                gap,
                Vec::new(),
                format!("Postgres has {local} {t}, D1 {remote}: more apart than the tolerance of {tolerance}"),
                Fix::Repair(gap.min(pushed + deleted)),
            ));
        }
    }
    out.extend(email_checks(api, db).await?);
    Ok(out)
}

async fn d1_rows(
    api: &D1Api,
    sql: &str,
    params: Vec<String>,
) -> Result<Vec<serde_json::Map<String, Value>>, String> {
    api.query(&Statement::new(sql, params))
        .await
        .map_err(|e| format!("D1: {e}"))
}

fn text(v: Option<&Value>) -> String {
    v.and_then(super::wire::param).unwrap_or_default()
}

async fn email_checks(api: &D1Api, db: &deadpool_postgres::Client) -> Result<Vec<Finding>, String> {
    let mut out = Vec::new();
    // Outbound e-mails whose prospect Postgres does not have.
    let row = db
        .query_one(
            "SELECT count(*), (array_agg(e.id ORDER BY e.id))[1:5]
             FROM emails e
             WHERE e.direction = 'outbound'
               AND NOT EXISTS (SELECT 1 FROM prospects p WHERE p.id::text = e.prospect_id)",
            &[],
        )
        .await
        .map_err(db_err)?;
    let orphans: i64 = row.get(0);
    if orphans > 0 {
        out.push(finding(
            "orphaned_email",
            "emails",
            orphans as u64,
            row.get::<_, Option<Vec<String>>>(1).unwrap_or_default(),
            format!("{orphans} outbound e-mails name a prospect Postgres does not have"),
            Fix::Report,
        ));
    }
    // Duplicate message ids, here and in D1.
    let row = db
        .query_one(
            "SELECT count(*), (array_agg(message_id ORDER BY message_id))[1:5] FROM (
                 SELECT message_id FROM emails WHERE message_id IS NOT NULL
                 GROUP BY message_id HAVING count(*) > 1) d",
            &[],
        )
        .await
        .map_err(db_err)?;
    let dups: i64 = row.get(0);
    if dups > 0 {
        out.push(finding(
            "duplicate_message_id",
            "emails",
            dups as u64,
            row.get::<_, Option<Vec<String>>>(1).unwrap_or_default(),
            format!("{dups} message ids are on more than one e-mail in Postgres"),
            Fix::Report,
        ));
    }
    let rows = d1_rows(
        api,
        "SELECT message_id FROM emails WHERE message_id IS NOT NULL
         GROUP BY message_id HAVING count(*) > 1 ORDER BY message_id LIMIT 1000",
        Vec::new(),
    )
    .await?;
    if !rows.is_empty() {
        out.push(finding(
            "duplicate_message_id_d1",
            "emails",
            rows.len() as u64,
            rows.iter()
                .take(EXAMPLES)
                .map(|r| text(r.get("message_id")))
                .collect(),
            format!(
                "{} message ids are on more than one e-mail in D1",
                rows.len()
            ),
            Fix::Report,
        ));
    }
    // E-mails D1 has held unsynced for more than an hour.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let rows = d1_rows(
        api,
        "SELECT id FROM emails WHERE synced_to_supabase = 0 AND created_at < ?1
         ORDER BY created_at, id LIMIT 1000",
        vec![hour_ago],
    )
    .await?;
    if !rows.is_empty() {
        out.push(finding(
            "unsynced_email",
            "emails",
            rows.len() as u64,
            rows.iter()
                .take(EXAMPLES)
                .map(|r| text(r.get("id")))
                .collect(),
            format!(
                "{}{} e-mails in D1 are unsynced for more than an hour",
                if rows.len() >= 1000 { "at least " } else { "" },
                rows.len()
            ),
            Fix::Pull,
        ));
    }
    Ok(out)
}
