//! The engine's own integrity checks, the same for every provider: what
//! syncbridge keeps about records (links, conflicts, queues, the audit
//! log's partitions) against the records themselves. Each provider adds its
//! own ([`crate::providers::Provider::integrity`]).
//!
//! Repairs touch only syncbridge's bookkeeping — a link pointing at a row
//! that is gone, a conflict about a deleted row, a change held by a
//! conflict that no longer exists, a missing partition — each in its own
//! transaction with an audit row; never a row a provider is the source of
//! truth for.

use std::time::Duration;

use deadpool_postgres::Client;

use crate::db::DbError;
use crate::domain::ProviderName;
use crate::providers::{Finding, Fix, Registry};

/// Provider label of the findings that are no provider's.
const ENGINE: &str = "engine";

/// Runs every engine check, repairing what is safe when `fix` is set.
pub async fn check(
    db: &mut Client,
    registry: &Registry,
    stuck_after: Duration,
    fix: bool,
) -> Result<Vec<Finding>, DbError> {
    let mut found = orphans(db, fix).await?;
    found.extend(link_columns(db).await?);
    found.extend(stuck(db, registry, stuck_after).await?);
    found.extend(held_without_conflict(db, fix).await?);
    found.extend(audit_partitions(db, fix).await?);
    Ok(found)
}

/// `dangling_link` and `orphaned_conflict` (`syncbridge_orphans()`).
async fn orphans(db: &mut Client, fix: bool) -> Result<Vec<Finding>, DbError> {
    let rows = db
        .query(
            "SELECT kind, entity_type, n, examples FROM syncbridge_orphans()",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let kind: String = r.get(0);
        let table: String = r.get(1);
        let count = r.get::<_, i64>(2) as u64;
        let (check, detail) = match kind.as_str() {
            "dangling_link" => (
                "dangling_link",
                format!(
                    "{count} links of {table} point at a row that no longer exists; \
                     --fix removes the links (the remote objects are untouched)"
                ),
            ),
            _ => (
                "orphaned_conflict",
                format!(
                    "{count} open conflicts are about {table} rows that no longer exist; \
                     --fix supersedes them and releases the changes they held"
                ),
            ),
        };
        let repaired = if fix {
            let tx = db.transaction().await?;
            let n: i64 = tx
                .query_one("SELECT syncbridge_fix_orphans($1, $2)", &[&kind, &table])
                .await?
                .get(0);
            tx.commit().await?;
            Some(n as u64)
        } else {
            None
        };
        out.push(Finding {
            provider: ENGINE,
            check,
            table: Some(table),
            count,
            examples: r.get(3),
            detail,
            fix: Fix::Repair(repaired.unwrap_or(0)),
        });
    }
    Ok(out)
}

/// `duplicate_remote_id` (two rows holding one remote object's id) and
/// `link_mismatch` (a row's id column disagreeing with its link), for
/// every link column every synced table declares. Which row is the real
/// one is an operator's call: reported only.
async fn link_columns(db: &Client) -> Result<Vec<Finding>, DbError> {
    let mut out = Vec::new();
    for entity in crate::providers::entities() {
        for link in entity.link_columns {
            // Table and column come from the entity's constants.
            let (t, c) = (entity.table, link.column);
            let dup = db
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce((array_agg(v ORDER BY v))[1:5], '{{}}')
                         FROM (SELECT {c}::text AS v FROM {t} WHERE {c} IS NOT NULL
                               GROUP BY {c} HAVING count(*) > 1) d"
                    ),
                    &[],
                )
                .await?;
            let n = dup.get::<_, i64>(0) as u64;
            if n > 0 {
                out.push(Finding {
                    provider: link.provider.as_str(),
                    check: "duplicate_remote_id",
                    table: Some(t.to_owned()),
                    count: n,
                    examples: dup.get(1),
                    detail: format!(
                        "{n} {} ids are held by more than one {t} row ({c}); merge or unlink the copies",
                        link.provider
                    ),
                    fix: Fix::Report,
                });
            }
            let mismatch = db
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce((array_agg(t.id::text ORDER BY t.id))[1:5], '{{}}')
                         FROM {t} t JOIN sync_links l
                           ON l.entity_type = $1 AND l.local_id = t.id
                          AND l.provider = $2 AND l.slot = $3 AND l.deleted_at IS NULL
                         WHERE t.{c}::text IS DISTINCT FROM l.remote_id"
                    ),
                    &[&t, &link.provider.as_str(), &link.slot],
                )
                .await?;
            let n = mismatch.get::<_, i64>(0) as u64;
            if n > 0 {
                out.push(Finding {
                    provider: link.provider.as_str(),
                    check: "link_mismatch",
                    table: Some(t.to_owned()),
                    count: n,
                    examples: mismatch.get(1),
                    detail: format!(
                        "{n} {t} rows hold a {} id in {c} other than the one they are linked to ({} slot)",
                        link.provider, link.slot
                    ),
                    fix: Fix::Report,
                });
            }
        }
    }
    Ok(out)
}

/// `stuck_inbox`, `stuck_outbox`, `stuck_fetch`: queue items due more than
/// `stuck_after` ago and still waiting, per provider. A queue that does not
/// move means its worker is not running, cannot keep up, or the provider
/// is not configured: the detail says which it looks like.
async fn stuck(
    db: &Client,
    registry: &Registry,
    stuck_after: Duration,
) -> Result<Vec<Finding>, DbError> {
    let secs = stuck_after.as_secs_f64();
    let queues: [(&'static str, &'static str, &str); 3] = [
        (
            "stuck_inbox",
            "webhook_events",
            "SELECT provider, count(*), (array_agg(event_id::text ORDER BY event_id))[1:5],
                    extract(epoch FROM now() - min(next_attempt_at))::float8
             FROM webhook_queue
             WHERE status = 'pending' AND next_attempt_at < now() - make_interval(secs => $1)
             GROUP BY provider ORDER BY provider",
        ),
        (
            "stuck_outbox",
            "sync_outbox",
            "SELECT provider, count(*), (array_agg(table_name || ':' || record_id ORDER BY id))[1:5],
                    extract(epoch FROM now() - min(next_attempt_at))::float8
             FROM sync_outbox
             WHERE status = 'pending' AND next_attempt_at <> 'infinity'
               AND next_attempt_at < now() - make_interval(secs => $1)
             GROUP BY provider ORDER BY provider",
        ),
        (
            "stuck_fetch",
            "sync_fetch_queue",
            "SELECT provider, count(*),
                    (array_agg(object_type || ':' || object_id ORDER BY due_at))[1:5],
                    extract(epoch FROM now() - min(due_at))::float8
             FROM sync_fetch_queue
             WHERE due_at < now() - make_interval(secs => $1)
               AND (leased_until IS NULL OR leased_until < now())
             GROUP BY provider ORDER BY provider",
        ),
    ];
    let mut out = Vec::new();
    for (check, table, sql) in queues {
        for r in db.query(sql, &[&secs]).await? {
            let name: String = r.get(0);
            let count = r.get::<_, i64>(1) as u64;
            let age = r.get::<_, f64>(3);
            let provider = ProviderName::parse(&name);
            let why = match provider.map(|p| registry.get(p)) {
                Some(Err(disabled)) => format!("{name} is not configured ({disabled})"),
                Some(Ok(_)) => "its worker is not running or cannot keep up".to_owned(),
                None => format!("no provider is called {name:?}"),
            };
            out.push(Finding {
                provider: provider.map_or(ENGINE, ProviderName::as_str),
                check,
                table: Some(table.to_owned()),
                count,
                examples: r.get(2),
                detail: format!(
                    "{count} items of {name} have waited past their due time (the oldest {}): {why}",
                    crate::ops::human_age(age)
                ),
                fix: Fix::Report,
            });
        }
    }
    Ok(out)
}

/// `held_without_conflict`: changes held for a conflict (`next_attempt_at
/// = infinity`) whose record has no open conflict any more would wait for
/// ever; `--fix` releases them.
async fn held_without_conflict(db: &mut Client, fix: bool) -> Result<Vec<Finding>, DbError> {
    const HELD: &str = "o.status = 'pending' AND o.next_attempt_at = 'infinity'
         AND NOT EXISTS (SELECT 1 FROM sync_conflicts c
                         WHERE c.status = 'open' AND c.provider = o.provider
                           AND c.entity_type = o.table_name AND c.entity_id = o.record_id)";
    let rows = db
        .query(
            &format!(
                "SELECT o.provider, count(*), (array_agg(o.table_name || ':' || o.record_id ORDER BY o.id))[1:5]
                 FROM sync_outbox o WHERE {HELD} GROUP BY o.provider ORDER BY o.provider"
            ),
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let count = r.get::<_, i64>(1) as u64;
        let repaired = if fix {
            let tx = db.transaction().await?;
            let n = tx
                .query_one(
                    &format!(
                        "WITH released AS (
                             UPDATE sync_outbox o SET next_attempt_at = now()
                             WHERE o.provider = $1 AND {HELD} RETURNING o.*),
                         audited AS (
                             INSERT INTO sync_audit_log (entity_type, entity_id, operation,
                                 old_data, sync_source, sync_destination, decision)
                             SELECT table_name, record_id, 'INTEGRITY_FIX', to_jsonb(released),
                                    'syncbridge', provider, 'held_change_released'
                             FROM released RETURNING 1)
                         SELECT count(*) FROM audited"
                    ),
                    &[&name],
                )
                .await?
                .get::<_, i64>(0);
            tx.commit().await?;
            n as u64
        } else {
            0
        };
        out.push(Finding {
            provider: ProviderName::parse(&name).map_or(ENGINE, ProviderName::as_str),
            check: "held_without_conflict",
            table: Some("sync_outbox".into()),
            count,
            examples: r.get(2),
            detail: format!(
                "{count} changes for {name} are held for a conflict that is no longer open; \
                 --fix releases them"
            ),
            fix: Fix::Repair(repaired),
        });
    }
    Ok(out)
}

/// `missing_audit_partition` (this month's or next month's partition of
/// `sync_audit_log` is absent) and `audit_in_default` (rows that fell into
/// the default partition). `--fix` creates the partitions, moving the rows
/// of their month out of the default one (`create_monthly_partition`).
async fn audit_partitions(db: &mut Client, fix: bool) -> Result<Vec<Finding>, DbError> {
    let missing: Vec<String> = db
        .query(
            "SELECT to_char(m, 'YYYY-MM') FROM unnest(ARRAY[
                 date_trunc('month', now())::date,
                 (date_trunc('month', now()) + interval '1 month')::date]) AS m
             WHERE to_regclass('sync_audit_log_' || to_char(m, 'YYYY_MM')) IS NULL
             ORDER BY m",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let strays: Vec<(String, i64)> = db
        .query(
            "SELECT to_char(date_trunc('month', created_at), 'YYYY-MM'), count(*)
             FROM sync_audit_log_default GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut months: Vec<String> = missing.clone();
    months.extend(strays.iter().map(|(m, _)| m.clone()));
    months.sort();
    months.dedup();
    let mut created = Vec::new();
    if fix {
        for m in &months {
            let tx = db.transaction().await?;
            let name: String = tx
                .query_one(
                    "SELECT create_monthly_partition('sync_audit_log', to_date($1, 'YYYY-MM'))",
                    &[m],
                )
                .await?
                .get(0);
            tx.execute(
                "INSERT INTO sync_audit_log (entity_type, operation, sync_source, decision, detail)
                 VALUES ('sync_audit_log', 'INTEGRITY_FIX', 'syncbridge', 'audit_partition_created',
                         jsonb_build_object('partition', $1::text))",
                &[&name],
            )
            .await?;
            tx.commit().await?;
            created.push(m.clone());
        }
    }
    let mut out = Vec::new();
    if !missing.is_empty() {
        out.push(Finding {
            provider: ENGINE,
            check: "missing_audit_partition",
            table: Some("sync_audit_log".into()),
            count: missing.len() as u64,
            examples: missing.clone(),
            detail: format!(
                "sync_audit_log has no partition for {}: its rows go to the default partition \
                 (the scheduler's maintenance job has not run); --fix creates them",
                missing.join(", ")
            ),
            fix: Fix::Repair(missing.iter().filter(|m| created.contains(m)).count() as u64),
        });
    }
    if !strays.is_empty() {
        let count: i64 = strays.iter().map(|(_, n)| n).sum();
        out.push(Finding {
            provider: ENGINE,
            check: "audit_in_default",
            table: Some("sync_audit_log_default".into()),
            count: count as u64,
            examples: strays.iter().map(|(m, n)| format!("{m}: {n}")).collect(),
            detail: format!(
                "{count} audit rows are in the default partition; --fix moves them into \
                 monthly partitions"
            ),
            fix: Fix::Repair(
                strays
                    .iter()
                    .filter(|(m, _)| created.contains(m))
                    .map(|(_, n)| *n as u64)
                    .sum(),
            ),
        });
    }
    Ok(out)
}
