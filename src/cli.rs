//! The command line (SPEC §1): `serve`, `migrate`, `replay`,
//! `export-fixtures`, `pull`, `check`. This is the binary's edge: errors
//! become `anyhow` here and exit codes are decided here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::app::{App, POOL_SIZE};
use crate::config::Config;
use crate::db::{self, migrate, Database};
use crate::domain::{parse_provider_time, ProviderName};
use crate::ops::fixtures::{self, Fixture};
use crate::ops::replay::Replayer;
use crate::providers::Registry;
use crate::router::Router;
use crate::{scheduler, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "syncbridge",
    version,
    about = "Keeps Postgres and your SaaS tools in sync, both ways."
)]
pub struct Cli {
    /// A TOML file with the same keys as the environment variables
    /// (the environment wins).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then run the HTTP front, router and
    /// scheduler until SIGINT/SIGTERM.
    Serve,
    /// Schema migrations.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Send recorded webhook deliveries (files or folders of fixtures) to a
    /// running server, or straight into the pipeline when none is running.
    Replay {
        /// Fixture files or folders (folders are read recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Server to send to (default: the configured listen address when a
        /// server answers there; otherwise an in-process pipeline).
        #[arg(long, value_name = "URL")]
        target: Option<String>,
        /// Re-sign each delivery expected to verify with the configured
        /// secret and the current time (recorded signatures expire after the
        /// tolerance); one expected to fail verification goes as recorded.
        #[arg(long)]
        resign: bool,
        /// Record what each folder's `expected-state.json` queries return
        /// now as its expected rows, instead of asserting them.
        #[arg(long)]
        write_state: bool,
    },
    /// Write stored inbox deliveries as fixture files.
    ExportFixtures {
        /// Only this provider's deliveries.
        #[arg(long, value_name = "P")]
        provider: Option<String>,
        /// Only deliveries received at or after this time (RFC 3339).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Folder to write `<provider>/<id>-<type>.json` into.
        dir: PathBuf,
    },
    /// Pull what has no webhooks (`teli`: the organisation-wide call sync).
    Pull {
        /// The provider to pull.
        provider: String,
        /// Only what changed at or after this time (RFC 3339).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Report what a run would do; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the summary alone, as JSON, on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Full resync of one synced table to one provider: D1 rebuilds its
    /// copy here, with a progress bar; other providers get every row queued
    /// for the dispatcher of a running `serve`.
    Resync {
        /// The provider (`d1`, `openphone`, `keap`, `resman`).
        provider: String,
        /// The synced table (`prospects`, `clients`, `sync_contacts`, …).
        entity: String,
    },
    /// Integrity checks; exit 1 when issues remain.
    Check {
        /// Repair what is safe to repair.
        #[arg(long)]
        fix: bool,
        /// Print the report alone, as JSON, on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration (the default).
    Up,
    /// Revert the N most recent migrations.
    Down {
        /// How many to revert.
        n: usize,
    },
    /// List migrations and whether each is applied.
    Status,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref()).context("configuration")?;
    telemetry::init_logging(config.log_format);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate { action } => {
            migrate_cmd(config, action.unwrap_or(MigrateAction::Up)).await
        }
        Command::Replay {
            paths,
            target,
            resign,
            write_state,
        } => replay(config, paths, target, resign, write_state).await,
        Command::Resync { provider, entity } => resync(config, provider, entity).await,
        Command::ExportFixtures {
            provider,
            since,
            dir,
        } => export(config, provider, since, dir).await,
        Command::Pull {
            provider,
            since,
            dry_run,
            json,
        } => pull(config, provider, since, dry_run, json).await,
        Command::Check { fix, json } => check(config, fix, json).await,
    }
}

/// Opens the database (embedded if needed) and applies migrations.
async fn prepare(config: &mut Config) -> anyhow::Result<(Database, db::Pool)> {
    let database = Database::open(config)
        .await
        .context("starting the embedded PostgreSQL")?;
    // Everything after this (the change listener too) uses the database
    // actually opened, embedded or not.
    config.database_url = Some(crate::config::Secret::new(database.url.clone()));
    let mut client = db::connect(&database.url)
        .await
        .context("connecting to the database (check DATABASE_URL)")?;
    let ran = migrate::up(&mut client)
        .await
        .context("applying migrations")?;
    if !ran.is_empty() {
        tracing::info!(applied = ?ran, "migrations applied");
    }
    let pool = db::pool(&database.url, POOL_SIZE)?;
    scheduler::ensure_partitions(&pool)
        .await
        .context("creating the audit log partitions")?;
    Ok((database, pool))
}

async fn serve(mut config: Config) -> anyhow::Result<ExitCode> {
    for (provider, state) in Registry::from_config(&config).webhook_routes() {
        match state {
            Ok(()) => tracing::info!(%provider, "webhooks enabled"),
            Err(why) => tracing::warn!(%provider, "webhooks disabled: {why}"),
        }
    }
    let (database, pool) = prepare(&mut config).await?;
    // On the embedded default, a token of its own (kept in the data
    // directory), so there is a dashboard to open; never with a real
    // DATABASE_URL. The token itself is never logged.
    let mut generated = None;
    if let (None, Some(pg)) = (&config.admin_token, &database.embedded) {
        let (token, made) = crate::ops::admin_token::read_or_generate(pg.data_dir())
            .context("keeping the admin token in the data directory")?;
        config.admin_token = Some(crate::config::Secret::new(token));
        generated = Some((crate::ops::admin_token::path(pg.data_dir()), made));
    }
    if config.admin_token.is_none() {
        tracing::warn!("SYNCBRIDGE_ADMIN_TOKEN is unset: the admin API answers 503");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} (SYNCBRIDGE_LISTEN)", config.listen))?;
    let app = App::start(config, pool, listener).await?;
    tracing::info!(addr = %app.addr(), "syncbridge is serving");
    if let Some((path, made)) = generated {
        tracing::info!(
            token_file = %path.display(),
            "{} admin token (SYNCBRIDGE_ADMIN_TOKEN is unset): open http://{}/ and paste the token \
             from `cat {}`",
            if made { "generated an" } else { "using the generated" },
            app.addr(),
            path.display()
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight work");
    app.shutdown().await;
    database.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn migrate_cmd(config: Config, action: MigrateAction) -> anyhow::Result<ExitCode> {
    let database = Database::open(&config)
        .await
        .context("starting the embedded PostgreSQL")?;
    let mut client = db::connect(&database.url)
        .await
        .context("connecting to the database")?;
    match action {
        MigrateAction::Up => {
            let ran = migrate::up(&mut client).await?;
            if ran.is_empty() {
                println!("nothing to apply: the schema is up to date");
            }
            for m in ran {
                println!("applied  {m}");
            }
        }
        MigrateAction::Down { n } => {
            let ran = migrate::down(&mut client, n).await?;
            if ran.is_empty() {
                println!("nothing to revert");
            }
            for m in ran {
                println!("reverted {m}");
            }
        }
        MigrateAction::Status => {
            for s in migrate::status(&client).await? {
                let state = match (s.applied_at, s.modified) {
                    (Some(at), false) => format!("applied {}", at.to_rfc3339()),
                    (Some(at), true) => {
                        format!("applied {} (script changed since!)", at.to_rfc3339())
                    }
                    (None, _) => "pending".to_owned(),
                };
                println!("{:04}  {:<28} {state}", s.version, s.name);
            }
        }
    }
    drop(client);
    database.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn replay(
    mut config: Config,
    paths: Vec<PathBuf>,
    target: Option<String>,
    resign: bool,
    write_state: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;

    let fixtures = fixtures::load(&paths)?;
    let states = crate::ops::state::files(&paths);
    let registry = Registry::from_config(&config);
    let configured = format!("http://{}", config.listen);
    let running = tokio::net::TcpStream::connect(config.listen).await.is_ok();

    // A server to send to: the one named, the configured one if it answers,
    // or the pipeline started here for the duration.
    let (target, local) = match target {
        Some(t) => (t, None),
        None if running => (configured, None),
        None => {
            let (database, pool) = prepare(&mut config).await?;
            // Pulled providers' deliveries are replayed through the admin
            // API: the in-process server gets a token of its own if none is
            // configured.
            if config.admin_token.is_none() {
                config.admin_token =
                    Some(crate::config::Secret::new(uuid::Uuid::new_v4().to_string()));
            }
            // Stored first, applied after in arrival order by one drain
            // (below): the final state is the same on every run.
            config.router.workers = 0;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let app = App::start(config.clone(), pool.clone(), listener).await?;
            eprintln!(
                "no server at {}: replaying into an in-process pipeline",
                config.listen
            );
            (
                format!("http://{}", app.addr()),
                Some((database, pool, app)),
            )
        }
    };

    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(fixtures.len() as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} deliveries {msg}")
        {
            bar.set_style(style);
        }
        bar
    });
    let replayer = Replayer {
        target,
        providers: &registry,
        resign,
        admin_token: config.admin_token.clone(),
        progress: progress.clone(),
    };
    let results = replayer.replay(&fixtures).await?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let mut mismatches = 0;
    for r in &results {
        let mark = match r.as_expected {
            Some(true) => "ok  ",
            Some(false) => {
                mismatches += 1;
                "DIFF"
            }
            None => "    ",
        };
        let mut line = format!("{mark} {} {:<10} {}", r.status, r.answer, r.path.display());
        if r.as_expected == Some(false) {
            if let Some(e) = &r.expected {
                line.push_str(&format!(" (expected {e})"));
            }
        }
        if let Some(note) = r.note.as_ref().filter(|n| !r.answer.contains(n.as_str())) {
            line.push_str(&format!(": {note}"));
        }
        println!("{line}");
    }

    let mut state_failures = 0;
    match local {
        Some((database, pool, app)) => {
            // Apply what was stored, once nothing arrives any more.
            app.shutdown().await;
            let router = Router::new(pool, &registry, config.router.clone());
            let stats = router
                .drain_all(&tokio_util::sync::CancellationToken::new())
                .await?;
            println!(
                "applied {} events ({} ignored, {} stale, {} to retry, {} failed)",
                stats.processed, stats.ignored, stats.stale, stats.retried, stats.failed
            );
            if !states.is_empty() {
                let mut c = db::connect(&database.url).await?;
                state_failures = final_states(&mut c, &states, write_state).await?;
            }
            database.close().await;
        }
        None if !states.is_empty() => {
            // The server applies on its own: wait for its inbox to drain,
            // then read the state from the configured database.
            let database = Database::open(&config)
                .await
                .context("opening the database to check the final state")?;
            let mut c = db::connect(&database.url).await?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let pending: i64 = c
                    .query_one(
                        "SELECT count(*) FROM webhook_queue WHERE status = 'pending'",
                        &[],
                    )
                    .await?
                    .get(0);
                if pending == 0 || std::time::Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            state_failures = final_states(&mut c, &states, write_state).await?;
            drop(c);
            database.close().await;
        }
        None => {}
    }
    println!(
        "{} deliveries replayed, {mismatches} not as expected",
        results.len()
    );
    if !states.is_empty() && !write_state {
        println!("final state: {state_failures} checks do not hold");
    }
    Ok(if mismatches == 0 && state_failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `syncbridge resync <provider> <entity>`: a provider's own resync job run
/// here with a progress bar on a terminal (exit 1 when it fails), or every
/// row queued in the outbox.
async fn resync(mut config: Config, provider: String, entity: String) -> anyhow::Result<ExitCode> {
    use crate::ops::resync::Target;
    use std::io::IsTerminal;

    let name = crate::domain::ProviderName::parse(&provider)
        .with_context(|| format!("no provider is called {provider:?}"))?;
    let (database, pool) = prepare(&mut config).await?;
    let registry = Registry::from_config(&config);
    let target = crate::ops::resync::target(&registry, name, &entity)?;
    let code = match target {
        Target::Queue => {
            let c = pool.get().await?;
            let queued = db::admin::full_resync(&c, &entity, name.as_str()).await?;
            println!(
                "queued {queued} {entity} rows for {name}: a running `serve` pushes them \
                 (see /api/sync/status)"
            );
            ExitCode::SUCCESS
        }
        Target::Job { provider, key } => {
            let stop = tokio_util::sync::CancellationToken::new();
            let args = serde_json::json!({"entity": entity});
            let job = {
                let (pool, key, stop) = (pool.clone(), key.clone(), stop.clone());
                tokio::spawn(async move {
                    scheduler::run_provider_job(&pool, &provider, "resync", &key, args, None, stop)
                        .await
                })
            };
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = indicatif::ProgressBar::new(0);
                if let Ok(style) =
                    indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} rows {msg}")
                {
                    bar.set_style(style);
                }
                bar
            });
            let c = pool.get().await?;
            while !job.is_finished() {
                if let (Some(bar), Ok(runs)) = (&bar, scheduler::last_runs(&c).await) {
                    let p = &runs
                        .get(&key)
                        .map(|r| r["progress"].clone())
                        .unwrap_or_default();
                    if let Some(total) = p["total"].as_u64() {
                        bar.set_length(total);
                    }
                    bar.set_position(p["upserted"].as_u64().unwrap_or(0));
                    bar.set_message(p["phase"].as_str().unwrap_or_default().to_owned());
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            drop(c);
            let run = job.await.context("the resync task")??;
            match &run.error {
                None => {
                    println!("{key}: {}", run.summary);
                    ExitCode::SUCCESS
                }
                Some(e) => {
                    println!("{key} failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    database.close().await;
    Ok(code)
}

/// Asserts (or, with `write`, records) each folder's golden final state;
/// returns the checks that do not hold, each printed with its diff.
async fn final_states(
    c: &mut tokio_postgres::Client,
    files: &[PathBuf],
    write: bool,
) -> anyhow::Result<usize> {
    use crate::ops::state;
    let mut failures = 0;
    for path in files {
        let mut expected = state::read(path)?;
        let outcomes = state::verify(c, path, &expected).await?;
        if write {
            for (check, o) in expected.checks.iter_mut().zip(&outcomes) {
                check.rows = o.observed.clone();
            }
            state::write(path, &expected)?;
            println!("wrote {} ({} checks)", path.display(), outcomes.len());
            continue;
        }
        for o in outcomes {
            if o.holds() {
                println!("ok   state {} ({} rows)", o.name, o.observed.len());
                continue;
            }
            failures += 1;
            println!("DIFF state {} ({}):", o.name, path.display());
            for row in &o.missing {
                println!("  - {row}");
            }
            for row in &o.extra {
                println!("  + {row}");
            }
        }
    }
    Ok(failures)
}

/// `syncbridge pull <provider>`: the run with a progress bar on a terminal,
/// then its summary; exit 0 when it completed without errors.
/// `syncbridge check [--fix] [--json]`: every provider's integrity checks;
/// exit 1 while findings remain (not repaired), 0 when none do.
async fn check(mut config: Config, fix: bool, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;

    let (database, pool) = prepare(&mut config).await?;
    let registry = Registry::from_config(&config);
    let bar = (std::io::stdout().is_terminal() && !json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(if fix {
            "checking and repairing"
        } else {
            "checking"
        });
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let verb = if fix {
        "checking and repairing"
    } else {
        "checking"
    };
    let report = crate::ops::integrity::run_showing(&pool, &registry, &config, fix, &|what| {
        if let Some(bar) = &bar {
            bar.set_message(format!("{verb} {what}"));
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    database.close().await;
    let report = report.context("running the integrity checks")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            let state = match f.fix {
                crate::providers::Fix::Report => "report only".to_owned(),
                crate::providers::Fix::Pull => "--fix pulls again".to_owned(),
                crate::providers::Fix::Repair(n) if fix => format!("repaired {n}"),
                crate::providers::Fix::Repair(_) => "--fix repairs".to_owned(),
            };
            println!(
                "{:<5} {:<24} {:<10} {:>7}  {}  [{state}]{}",
                f.provider,
                f.check,
                f.table.as_deref().unwrap_or("-"),
                f.count,
                f.detail,
                if f.examples.is_empty() {
                    String::new()
                } else {
                    format!(" e.g. {}", f.examples.join(", "))
                }
            );
        }
        for e in &report.errors {
            println!("error: {e}");
        }
        println!(
            "{} findings, {} repaired, {} remaining{}",
            report.findings.len(),
            report.fixed(),
            report.remaining(),
            if report.errors.is_empty() {
                ""
            } else {
                "; some checks could not run"
            }
        );
    }
    Ok(if report.remaining() == 0 && report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn pull(
    mut config: Config,
    provider: String,
    since: Option<String>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;

    let pulled = || {
        crate::providers::PROVIDERS
            .iter()
            .filter(|p| p.webhook == crate::providers::Webhook::Pulled)
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let name = ProviderName::parse(&provider)
        .with_context(|| format!("unknown provider {provider:?}: pull one of {}", pulled()))?;
    let since = match since {
        Some(s) => Some(
            parse_provider_time(&s)
                .with_context(|| format!("--since {s:?} is not an RFC 3339 time"))?,
        ),
        None => None,
    };
    let (database, pool) = prepare(&mut config).await?;
    let registry = Registry::from_config(&config);
    let runs = crate::pull::Runs::default();
    let bar = (std::io::stdout().is_terminal() && !json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let options = crate::providers::PullOptions {
        since,
        dry_run,
        ..Default::default()
    };
    let run = {
        let (pool, registry, router, runs) = (
            pool.clone(),
            registry.clone(),
            config.router.clone(),
            runs.clone(),
        );
        tokio::spawn(async move {
            crate::pull::run(&pool, &registry, &router, &runs, name, options).await
        })
    };
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            r = &mut run => break r?,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                if let (Some(bar), Some(p)) = (&bar, runs.get(name)) {
                    bar.set_message(format!("{} pages fetched, {} {} seen", p.pages, p.seen, p.unit));
                }
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    drop(pool);
    database.close().await;
    let (progress, ok) = match result {
        Ok(r) => r,
        Err(crate::pull::RunError::Busy(p)) => {
            bail!(
                "a {name} pull is already running (started {}, {} pages so far)",
                p.started_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                p.pages
            )
        }
        Err(e) => return Err(e.into()),
    };
    let Some(summary) = progress.summary else {
        bail!(
            "the {name} pull stopped: {}",
            progress.error.unwrap_or_default()
        );
    };
    if json {
        println!("{summary}");
    } else {
        println!(
            "{name} pull{}: {} pages, {} {} listed",
            if dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            },
            progress.pages,
            progress.seen,
            progress.unit
        );
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The names of the providers that take webhooks.
fn webhook_providers() -> impl Iterator<Item = &'static str> {
    crate::providers::PROVIDERS
        .iter()
        .filter(|p| p.webhook != crate::providers::Webhook::None)
        .map(|p| p.name.as_str())
}

async fn export(
    config: Config,
    provider: Option<String>,
    since: Option<String>,
    dir: PathBuf,
) -> anyhow::Result<ExitCode> {
    let provider = match provider {
        Some(p) => Some(ProviderName::parse(&p).with_context(|| {
            let names: Vec<&str> = webhook_providers().collect();
            format!("unknown provider {p:?}: use {}", names.join(", "))
        })?),
        None => None,
    };
    let since: Option<DateTime<Utc>> = match since {
        Some(s) => Some(
            parse_provider_time(&s)
                .with_context(|| format!("--since {s:?} is not an RFC 3339 time"))?,
        ),
        None => None,
    };
    let database = Database::open(&config).await?;
    let client = db::connect(&database.url).await?;
    let rows = client
        .query(
            "SELECT id, provider, event_type, headers, body, received_at FROM webhook_events
             WHERE ($1::text IS NULL OR provider = $1)
               AND ($2::timestamptz IS NULL OR received_at >= $2)
             ORDER BY id",
            &[&provider.map(|p| p.as_str()), &since],
        )
        .await?;
    let mut written = 0;
    for row in rows {
        let id: i64 = row.get(0);
        let Some(p) = ProviderName::parse(row.get(1)) else {
            continue;
        };
        let kind: Option<String> = row.get(2);
        let headers: serde_json::Value = row.get(3);
        let headers = headers
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let body: Vec<u8> = row.get(4);
        let fixture = Fixture::from_stored(p, kind.as_deref(), headers, &body, row.get(5));
        let safe_kind: String = kind
            .unwrap_or_else(|| "event".into())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let folder = dir.join(p.as_str());
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let path = folder.join(format!("{id:08}-{safe_kind}.json"));
        std::fs::write(&path, fixture.to_file_text())
            .with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    drop(client);
    database.close().await;
    println!("wrote {written} fixtures to {}", dir.display());
    if written == 0 && provider.is_some() {
        bail!("no stored deliveries matched");
    }
    Ok(ExitCode::SUCCESS)
}
