//! Integrity (SPEC §5.3), written once for every provider: the engine's
//! checks ([`engine`]) and each enabled provider's
//! ([`crate::providers::Provider::integrity`]) run, with `fix` what is safe
//! is repaired (a finding repaired by the provider's pull gets that pull),
//! and the results are stored (`sync_integrity_runs`) for `syncbridge
//! check`, the status API and the dashboard.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

pub mod engine;

use crate::config::Config;
use crate::db::{DbError, Pool};
use crate::providers::{Finding, Fix, IntegrityCtx, PullOptions, Registry};

/// One integrity run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub fix: bool,
    pub findings: Vec<Finding>,
    /// Providers whose checks could not run, and why.
    pub errors: Vec<String>,
}

impl Report {
    /// Findings not fully repaired.
    pub fn remaining(&self) -> usize {
        self.findings.iter().filter(|f| !repaired(f)).count()
    }

    pub fn fixed(&self) -> usize {
        self.findings.iter().filter(|f| repaired(f)).count()
    }
}

fn repaired(f: &Finding) -> bool {
    matches!(f.fix, Fix::Repair(n) if n >= f.count)
}

/// Runs every enabled provider's checks (and, with `fix`, their repairs)
/// and stores the result.
pub async fn run(
    pool: &Pool,
    registry: &Registry,
    config: &Config,
    fix: bool,
) -> Result<Report, DbError> {
    run_showing(pool, registry, config, fix, &|_| {}).await
}

/// [`run`], telling `step` what it checks as it goes (a command line's
/// progress display).
pub async fn run_showing(
    pool: &Pool,
    registry: &Registry,
    config: &Config,
    fix: bool,
    step: &(dyn Fn(&str) + Sync),
) -> Result<Report, DbError> {
    let started_at = Utc::now();
    let mut errors = Vec::new();
    let mut db = pool.get().await?;
    step("the engine's links, conflicts, queues and partitions");
    let mut findings = engine::check(&mut db, registry, config.stuck_after, fix).await?;
    for p in registry.enabled() {
        step(p.name().as_str());
        let ctx = IntegrityCtx { db: &db, fix };
        match p.integrity(&ctx).await {
            Ok(mut found) => {
                if fix && found.iter().any(|f| f.fix == Fix::Pull) {
                    // Repaired by the provider's pull: run it now.
                    let runs = crate::pull::Runs::default();
                    match crate::pull::run(
                        pool,
                        registry,
                        &config.router,
                        &runs,
                        p.name(),
                        PullOptions::default(),
                    )
                    .await
                    {
                        Ok((progress, ok)) => {
                            for f in found.iter_mut().filter(|f| f.fix == Fix::Pull) {
                                f.fix = Fix::Repair(if ok { f.count } else { 0 });
                                if !ok {
                                    f.detail.push_str(&format!(
                                        "; the pull ran with errors: {:?}",
                                        progress.summary
                                    ));
                                }
                            }
                        }
                        Err(e) => errors.push(format!(
                            "{}: the pull to repair with could not run: {e}",
                            p.name()
                        )),
                    }
                }
                // A provider's repairs (D1's are writes to D1) are audited
                // here, one row a finding; the engine's audit each row.
                for f in found
                    .iter()
                    .filter(|f| matches!(f.fix, Fix::Repair(n) if n > 0))
                {
                    audit_repair(&db, f).await?;
                }
                findings.extend(found);
            }
            Err(e) => errors.push(format!("{}: {e}", p.name())),
        }
    }
    let report = Report {
        started_at,
        finished_at: Utc::now(),
        fix,
        findings,
        errors,
    };
    // A check that found nothing this time reads 0, not its last count.
    static SEEN: std::sync::Mutex<Vec<(&'static str, &'static str)>> =
        std::sync::Mutex::new(Vec::new());
    if let Ok(mut seen) = SEEN.lock() {
        for (provider, check) in seen.iter() {
            if !report
                .findings
                .iter()
                .any(|f| f.provider == *provider && f.check == *check)
            {
                metrics::gauge!("syncbridge_integrity_issues", "provider" => *provider, "check" => *check)
                    .set(0.0);
            }
        }
        for f in &report.findings {
            metrics::gauge!("syncbridge_integrity_issues", "provider" => f.provider, "check" => f.check)
                .set(f.count as f64);
            if !seen.contains(&(f.provider, f.check)) {
                seen.push((f.provider, f.check));
            }
        }
    }
    db.execute(
        "INSERT INTO sync_integrity_runs (started_at, finished_at, fix, found, fixed, findings)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &report.started_at,
            &report.finished_at,
            &fix,
            &(report.findings.len() as i32),
            &(report.fixed() as i32),
            &json!({"findings": report.findings, "errors": report.errors}),
        ],
    )
    .await?;
    Ok(report)
}

/// One audit row for a provider's repair of `f`.
async fn audit_repair(db: &deadpool_postgres::Client, f: &Finding) -> Result<(), DbError> {
    let fixed = match f.fix {
        Fix::Repair(n) => n,
        _ => 0,
    };
    db.execute(
        "INSERT INTO sync_audit_log (entity_type, operation, sync_source, sync_destination,
             decision, detail)
         VALUES ($1, 'INTEGRITY_FIX', 'syncbridge', $2, $3, $4)",
        &[
            &f.table.as_deref().unwrap_or("integrity"),
            &f.provider,
            &format!("{}_repaired", f.check),
            &json!({"check": f.check, "count": f.count, "fixed": fixed,
                    "examples": f.examples, "detail": f.detail}),
        ],
    )
    .await?;
    Ok(())
}

/// The last stored run, if any.
pub async fn last(c: &deadpool_postgres::Client) -> Result<Option<Value>, DbError> {
    Ok(c.query_opt(
        "SELECT jsonb_build_object('started_at', started_at, 'finished_at', finished_at,
                        'fix', fix, 'found', found, 'fixed', fixed)
                    || findings
             FROM sync_integrity_runs ORDER BY started_at DESC, id DESC LIMIT 1",
        &[],
    )
    .await?
    .map(|r| r.get(0)))
}
