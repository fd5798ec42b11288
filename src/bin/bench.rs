//! `syncbridge-bench`: the SPEC §8 benchmarks, reported with their same-run
//! baselines. Run with `cargo run --release --bin syncbridge-bench -- ingest`.
//!
//! `ingest`: 64 concurrent senders post distinct, validly signed OpenPhone
//! `message.received` deliveries over keep-alive connections to a server
//! running in a child process — first one that acknowledges without storing
//! (the baseline), then the real one (verify → group-committed inbox →
//! router applying the events). Reports acknowledgements per second for
//! each, their ratio, the server's resident memory, the mean inbox batch,
//! and checks that every acknowledged delivery is in the database.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use syncbridge::app::{App, InboxMode, POOL_SIZE};
use syncbridge::config::{Config, Settings};
use syncbridge::db::{self, migrate};
use syncbridge::providers::signature::{sign_openphone_legacy, HmacKey};
use tokio::net::TcpListener;

/// The tests' fake Teli API, served in-process for `teli`.
#[allow(dead_code)]
#[path = "../../tests/common/fake_teli.rs"]
mod fake_teli;

/// The tests' fake D1 (a real SQLite), served in-process for `d1` (built
/// with `--features bench-d1`: it needs `rusqlite`).
#[cfg(feature = "bench-d1")]
#[allow(dead_code)]
#[path = "../../tests/common/fake_d1.rs"]
mod fake_d1;

const KEY: &str = "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMzI=";

#[derive(Parser)]
#[command(name = "syncbridge-bench", about = "syncbridge's SPEC §8 benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Webhook ingest: durable acks/s vs. the same server not storing.
    Ingest {
        /// Concurrent senders.
        #[arg(long, default_value_t = 64)]
        senders: usize,
        /// Measured seconds per mode (after a 2 s warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Postgres server to create the benchmark database on
        /// (default: $SYNCBRIDGE_TEST_DATABASE_URL or 127.0.0.1:5432).
        #[arg(long)]
        server: Option<String>,
    },
    /// Change to push: local UPDATE committed → the (fake) provider
    /// receives the push, at a steady rate; baseline: commit → a bare
    /// LISTEN session receives the NOTIFY.
    Push {
        /// Changes per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        server: Option<String>,
    },
    /// Sustained drain: N changes queued at once (one UPDATE of N linked
    /// clients, through capture), pushed by a fresh `serve` to the fake
    /// OpenPhone with its rate limit lifted, until every one has arrived;
    /// baseline: the same N PATCHes sent straight to the same fake by 8
    /// concurrent requests, nothing read or written in Postgres.
    Drain {
        #[arg(long, default_value_t = 20_000)]
        changes: usize,
        #[arg(long)]
        server: Option<String>,
    },
    /// Scaling out on one Postgres: 1, 2 and 3 `serve` processes (rounds
    /// alternate 1, 2, 3, 1, 2, 3): webhook ingest with the senders spread
    /// over them, and the drain of a backlog of N `message.received` events
    /// by their routers; baseline: one process, in the same run.
    Scale {
        /// Events in each apply round's backlog.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 64)]
        senders: usize,
        /// Measured seconds per ingest round.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Most processes.
        #[arg(long, default_value_t = 3)]
        servers: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long)]
        server: Option<String>,
    },
    /// Capture overhead: the application's single-row UPDATE throughput on
    /// `clients` (pgbench, 8 clients) with the capture trigger vs without.
    Capture {
        /// Seconds per pgbench run.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        #[arg(long)]
        server: Option<String>,
    },
    /// Router apply with conflict checks and audit: pending OpenPhone
    /// `contact.updated` events for linked clients (remote-only changes,
    /// both-sides changes decided by the rules, echoes) drained by the
    /// router; baseline: the same number of `message.received` events
    /// (one upsert and an audit row each, no conflict engine). Then, each
    /// in a fresh database: contacts, messages and calls interleaved in
    /// one backlog; Teli's pulled calls; ResMan's polled prospects.
    Apply {
        /// Events per mode.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Events per router transaction (SYNCBRIDGE_ROUTER_BATCH).
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Router workers side by side (SYNCBRIDGE_ROUTER_WORKERS; unset:
        /// the service's default).
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long)]
        server: Option<String>,
    },
    /// Conflict detection per record: `conflict::resolve` over generated
    /// local/remote/snapshot triples under a mixed rule table (p50/p99/max);
    /// baseline: a plain field-by-field equality check of the same records.
    Conflict {
        #[arg(long, default_value_t = 200_000)]
        records: usize,
    },
    /// Memory under large events: a backlog of N pending ~1 MB events
    /// drained by a fresh `serve`, then N more posted by 64 concurrent
    /// senders; the server's resident memory sampled throughout (baseline:
    /// the same server idle after start).
    Backlog {
        /// Events per phase.
        #[arg(long, default_value_t = 400)]
        events: usize,
        /// Bytes of each event's body.
        #[arg(long, default_value_t = 1_000_000)]
        bytes: usize,
        #[arg(long)]
        server: Option<String>,
    },
    /// The Teli pull: N calls through the fake Teli API (the tests'),
    /// listed, fetched, stored in the inbox and applied, then pulled again
    /// (all duplicates); baseline: the same calls fetched from the same
    /// fake with nothing stored. Alternated over rounds.
    Teli {
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long)]
        server: Option<String>,
    },
    /// The D1 replica's push: N prospect changes committed (UPDATEs from
    /// 4 connections, 100 rows a transaction) until D1 has them all,
    /// through capture, the outbox and the dispatcher's batch push at the
    /// service's pacing (`D1_API_RATE_PER_MIN`, at most 240); baseline: the
    /// same rows written straight to the same fake D1 by the same writer,
    /// unpaced. Alternated over rounds. Needs `--features bench-d1`.
    D1 {
        #[arg(long, default_value_t = 10_000)]
        changes: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// D1 requests per minute for the service (1-240).
        #[arg(long, default_value_t = 240)]
        rate: u32,
        #[arg(long)]
        server: Option<String>,
    },
    /// Internal: the server process the benchmarks drive.
    #[command(hide = true)]
    Server {
        #[arg(long)]
        database: String,
        #[arg(long)]
        discard: bool,
        /// Store deliveries but run no router workers: the ingest path
        /// alone, without the router's work competing for the machine.
        #[arg(long)]
        no_router: bool,
        #[arg(long)]
        openphone_api_url: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    syncbridge::app::release_large_buffers();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.command {
            Cmd::Ingest {
                senders,
                seconds,
                server,
            } => ingest(senders, seconds, server).await,
            Cmd::Push {
                rate,
                seconds,
                server,
            } => push(rate, seconds, server).await,
            Cmd::Capture { seconds, server } => capture(seconds, server).await,
            Cmd::Drain { changes, server } => drain_bench(changes, server).await,
            Cmd::Scale {
                events,
                senders,
                seconds,
                servers,
                rounds,
                server,
            } => scale(events, senders, seconds, servers, rounds, server).await,
            Cmd::Apply {
                events,
                batch,
                workers,
                server,
            } => apply(events, batch, workers, server).await,
            Cmd::Conflict { records } => conflict_bench(records),
            Cmd::Backlog {
                events,
                bytes,
                server,
            } => backlog(events, bytes, server).await,
            Cmd::Teli {
                calls,
                rounds,
                server,
            } => teli_bench(calls, rounds, server).await,
            Cmd::D1 {
                changes,
                rounds,
                rate,
                server,
            } => d1_bench(changes, rounds, rate, server).await,
            Cmd::Server {
                database,
                discard,
                no_router,
                openphone_api_url,
            } => {
                let mode = match (discard, no_router) {
                    (true, _) => ServerMode::Discard,
                    (false, true) => ServerMode::IngestOnly,
                    (false, false) => ServerMode::Serve,
                };
                server(database, mode, openphone_api_url).await
            }
        }
    })
}

/// What a benchmark's server process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerMode {
    /// Verify and acknowledge without storing (the ingest baseline).
    Discard,
    /// Verify and store, no router workers: the ingest path alone.
    IngestOnly,
    /// What `serve` runs.
    Serve,
}

async fn server(database: String, mode: ServerMode, api: Option<String>) -> anyhow::Result<()> {
    let mut settings = Settings::from_pairs([
        ("DATABASE_URL", database.as_str()),
        ("OPENPHONE_WEBHOOK_KEY", KEY),
    ]);
    // The service's own tuning knobs pass through, to compare settings
    // (e.g. SYNCBRIDGE_INBOX_WRITERS=2 syncbridge-bench ingest).
    for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("SYNCBRIDGE_")) {
        settings.set(&k, v);
    }
    if let Some(url) = api {
        settings.set("OPENPHONE_API_URL", url);
        settings.set("OPENPHONE_API_KEY", "bench-key");
        // The fake has no 10 req/s limit; the benchmark measures our path.
        settings.set("OPENPHONE_API_RATE", "1000000");
    }
    let mut config = Config::from_settings(&settings)?;
    if mode == ServerMode::IngestOnly {
        config.router.workers = 0;
    }
    let pool = db::pool(&database, POOL_SIZE)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let inbox = if mode == ServerMode::Discard {
        InboxMode::Discard
    } else {
        InboxMode::Postgres
    };
    let app = App::start_with(config, pool, listener, inbox).await?;
    // The parent reads the address from the first line.
    println!("{}", app.addr());
    let mut line = String::new();
    // Runs until the parent closes stdin.
    let _ = tokio::io::AsyncBufReadExt::read_line(
        &mut tokio::io::BufReader::new(tokio::io::stdin()),
        &mut line,
    )
    .await;
    app.shutdown().await;
    Ok(())
}

struct Child {
    proc: tokio::process::Child,
    addr: String,
}

async fn spawn_server(database: &str, mode: ServerMode) -> anyhow::Result<Child> {
    spawn_server_with(database, mode, None).await
}

async fn spawn_server_with(
    database: &str,
    mode: ServerMode,
    api: Option<&str>,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("server").arg("--database").arg(database);
    match mode {
        ServerMode::Discard => {
            cmd.arg("--discard");
        }
        ServerMode::IngestOnly => {
            cmd.arg("--no-router");
        }
        ServerMode::Serve => {}
    }
    if let Some(url) = api {
        cmd.arg("--openphone-api-url").arg(url);
    }
    cmd.env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut proc = cmd.spawn()?;
    let stdout = proc.stdout.take().context("child stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let addr = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("server did not start")??
        .context("server exited")?;
    Ok(Child { proc, addr })
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Run {
    acks_per_s: f64,
    acked: u64,
    errors: u64,
    rss_mib: f64,
    peak_mib: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `senders` concurrent senders posting signed OpenPhone events for
/// `seconds` (after a 2 s warm-up), spread evenly over `addrs`; the RSS is
/// the sum over `pids`.
async fn load(
    addrs: &[&str],
    senders: usize,
    seconds: u64,
    run_id: &str,
    pids: &[u32],
) -> anyhow::Result<Run> {
    let rss = || {
        pids.iter()
            .map(|&p| rss_kib(p))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let key = HmacKey::from_base64(KEY).context("bench key")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(senders)
        .http1_only()
        .build()?;

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in 0..senders {
        let url = format!("http://{}/webhooks/openphone", addrs[s % addrs.len()]);
        let (client, key) = (client.clone(), key.clone());
        let (measuring, stop, acked, errors) = (
            measuring.clone(),
            stop.clone(),
            acked.clone(),
            errors.clone(),
        );
        let run_id = run_id.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = format!(
                    r#"{{"id":"EV{run_id}s{s}n{n}","object":"event","apiVersion":"v4","createdAt":"2025-03-14T16:05:00.731Z","type":"message.received","data":{{"object":{{"object":"message","id":"AC{run_id}s{s}n{n}","direction":"incoming","from":"+14155550142","to":"+14155550199","text":"Is the 2BR still available?","status":"received","createdAt":"2025-03-14T16:04:59.980Z","userId":"USa1B2c3D4","phoneNumberId":"PNq8Zt3kLm"}}}}}}"#
                );
                let sig = sign_openphone_legacy(&key, chrono::Utc::now().timestamp_millis(), body.as_bytes());
                let started = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("openphone-signature", sig)
                    .body(body)
                    .send()
                    .await;
                let ok = match r {
                    Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        acked.fetch_add(1, Ordering::Relaxed);
                        latencies.push(started.elapsed());
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut peak = 0;
    for _ in 0..seconds * 4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss().0);
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let (rss, hwm) = rss();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let n = acked.load(Ordering::Relaxed);
    Ok(Run {
        acks_per_s: n as f64 / elapsed,
        acked: n,
        errors: errors.load(Ordering::Relaxed),
        rss_mib: rss.max(peak) as f64 / 1024.0,
        peak_mib: hwm as f64 / 1024.0,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// A fresh, migrated database for one benchmark, dropped afterwards.
struct BenchDb {
    admin: tokio_postgres::Client,
    quoted: String,
    url: String,
}

impl BenchDb {
    async fn create(server: Option<String>) -> anyhow::Result<BenchDb> {
        let admin_url = server
            .or_else(|| std::env::var("SYNCBRIDGE_TEST_DATABASE_URL").ok())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = db::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url} (pass --server URL)"))?;
        let name = format!("syncbridge_bench_{}", uuid::Uuid::new_v4().simple());
        let quoted = postgres_protocol::escape::escape_identifier(&name);
        admin
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await?;
        let url = match admin_url.rfind('/') {
            Some(i) => format!("{}/{}", &admin_url[..i], name),
            None => bail!("server URL has no database part"),
        };
        migrate::up(&mut db::connect(&url).await?).await?;
        Ok(BenchDb { admin, quoted, url })
    }

    async fn drop_db(self) -> anyhow::Result<()> {
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.quoted
            ))
            .await?;
        Ok(())
    }
}

async fn ingest(senders: usize, seconds: u64, server: Option<String>) -> anyhow::Result<()> {
    let bench = BenchDb::create(server).await?;
    let db_url = bench.url.clone();
    let admin = &bench.admin;
    let result = async {
        let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
        let sync: String = admin.query_one("SHOW synchronous_commit", &[]).await?.get(0);
        let fsync: String = admin.query_one("SHOW fsync", &[]).await?.get(0);
        println!(
            "ingest benchmark: {senders} senders, {seconds}s per mode, {} cores, PostgreSQL {version} (fsync={fsync}, synchronous_commit={sync})",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );

        // Each mode: a fresh server process; its CPU and that of its
        // Postgres backends over the mode (warm-up included).
        let c = db::connect(&db_url).await?;
        let mut runs = Vec::new();
        let mut metrics = String::new();
        for (mode, tag) in [
            (ServerMode::Discard, "b"),
            (ServerMode::IngestOnly, "i"),
            (ServerMode::Serve, "r"),
        ] {
            let child = spawn_server(&db_url, mode).await?;
            let pid = child.proc.id().unwrap_or(0);
            let t0 = Instant::now();
            let run = load(&[&child.addr], senders, seconds, tag, &[pid]).await?;
            let service_cpu = cpu_seconds(&pid.to_string());
            let postgres_cpu = backends_cpu(&c).await?;
            let wall = t0.elapsed().as_secs_f64();
            if mode == ServerMode::Serve {
                metrics = reqwest::get(format!("http://{}/metrics", child.addr)).await?.text().await?;
            }
            drop(child);
            runs.push((run, service_cpu, postgres_cpu, wall));
        }
        let [(b, b_cpu, b_pg, b_wall), (i, i_cpu, i_pg, i_wall), (r, r_cpu, r_pg, r_wall)] =
            <[_; 3]>::try_from(runs).map_err(|_| anyhow::anyhow!("three modes"))?;

        let stored = c
            .query_one(
                "SELECT count(*) FILTER (WHERE event_id LIKE 'EVi%'),
                        count(*) FILTER (WHERE event_id LIKE 'EVr%')
                 FROM webhook_events",
                &[],
            )
            .await?;
        let (stored_i, stored_r): (i64, i64) = (stored.get(0), stored.get(1));
        let metric = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let batch = metric("syncbridge_inbox_batch_size_sum") / metric("syncbridge_inbox_batch_size_count").max(1.0);

        println!(
            "{:<40} {:>9} {:>8} {:>8} {:>7} {:>8} {:>22}",
            "mode", "acks/s", "p50 ms", "p99 ms", "errors", "RSS MiB", "CPU % service/Postgres"
        );
        for (label, x, cpu, pg, wall) in [
            ("baseline: verify, no store", &b, b_cpu, b_pg, b_wall),
            ("durable inbox, no router (ingest alone)", &i, i_cpu, i_pg, i_wall),
            ("durable inbox + router (as served)", &r, r_cpu, r_pg, r_wall),
        ] {
            println!(
                "{:<40} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>8.1} {:>14.0} / {:>5.0}",
                label,
                x.acks_per_s,
                x.p50_ms,
                x.p99_ms,
                x.errors,
                x.rss_mib,
                100.0 * cpu / wall,
                100.0 * pg / wall
            );
        }
        println!(
            "ratio to baseline: ingest alone {:.2}, with the router {:.2}",
            i.acks_per_s / b.acks_per_s.max(1.0),
            r.acks_per_s / b.acks_per_s.max(1.0)
        );
        println!(
            "server peak RSS (VmHWM): baseline {:.1} MiB, ingest alone {:.1} MiB, with the router {:.1} MiB",
            b.peak_mib, i.peak_mib, r.peak_mib
        );
        println!("mean deliveries per inbox commit: {batch:.1}");
        println!(
            "durability check: acknowledged in the window / stored in total (>= acknowledged): ingest alone {} / {}, with the router {} / {}",
            i.acked, stored_i, r.acked, stored_r
        );
        if (stored_i as u64) < i.acked || (stored_r as u64) < r.acked {
            bail!("acknowledged deliveries are missing from the database");
        }
        anyhow::Ok(())
    }
    .await;
    bench.drop_db().await?;
    result
}

/// A `message.received` event whose text makes the body about `bytes` long.
fn large_event(id: &str, bytes: usize) -> Vec<u8> {
    let text = "x".repeat(bytes.saturating_sub(400));
    format!(
        r#"{{"id":"EV{id}","object":"event","apiVersion":"v4","createdAt":"2025-03-14T16:05:00.731Z","type":"message.received","data":{{"object":{{"object":"message","id":"AC{id}","direction":"incoming","from":"+14155550142","to":"+14155550199","text":"{text}","status":"received","createdAt":"2025-03-14T16:04:59.980Z","userId":"USa1B2c3D4","phoneNumberId":"PNq8Zt3kLm"}}}}}}"#
    )
    .into_bytes()
}

/// Samples `pid`'s RSS every 20 ms until `done` resolves; the highest.
async fn peak_rss_while<T>(pid: u32, done: impl std::future::Future<Output = T>) -> (T, u64) {
    let mut peak = rss_kib(pid).0;
    tokio::pin!(done);
    loop {
        tokio::select! {
            out = &mut done => return (out, peak.max(rss_kib(pid).0)),
            _ = tokio::time::sleep(Duration::from_millis(20)) => peak = peak.max(rss_kib(pid).0),
        }
    }
}

async fn backlog(events: usize, bytes: usize, server: Option<String>) -> anyhow::Result<()> {
    let bench = BenchDb::create(server).await?;
    let db_url = bench.url.clone();
    let result = async {
        println!(
            "backlog benchmark: {events} events of {bytes} bytes per phase, {} cores",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        let c = db::connect(&db_url).await?;
        for i in 0..events {
            let id = format!("b{i}");
            c.execute(
                "INSERT INTO webhook_events (provider, dedup_key, event_type, event_id, headers, body)
                 VALUES ('openphone', $1, 'message.received', $1, '{}', $2)",
                &[&format!("EV{id}"), &large_event(&id, bytes)],
            )
            .await?;
        }
        let pending = || async {
            let n: i64 = c
                .query_one("SELECT count(*) FROM webhook_events WHERE status = 'pending'", &[])
                .await?
                .get(0);
            anyhow::Ok(n)
        };
        // Baseline: the same server idle, on an empty database of its own
        // (the one under test finds its backlog as it starts).
        let empty = BenchDb::create(Some(bench_admin_url(&db_url)?)).await?;
        let idle = spawn_server(&empty.url, ServerMode::Serve).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_kib = rss_kib(idle.proc.id().unwrap_or(0)).0;
        drop(idle);
        empty.drop_db().await?;

        let started = Instant::now();
        let real = spawn_server(&db_url, ServerMode::Serve).await?;
        let pid = real.proc.id().unwrap_or(0);
        let (drained, drain_peak) = peak_rss_while(pid, async {
            while pending().await? > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(started.elapsed())
        })
        .await;
        let drained = drained?;
        let after_drain = rss_kib(pid).0;

        // Phase 2: the same volume posted by 64 senders while the router
        // applies it.
        let key = HmacKey::from_base64(KEY).context("bench key")?;
        let client = reqwest::Client::builder().http1_only().build()?;
        let url = format!("http://{}/webhooks/openphone", real.addr);
        let next = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let posting = async {
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let (client, url, key, next, acked) =
                    (client.clone(), url.clone(), key.clone(), next.clone(), acked.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= events {
                            return;
                        }
                        let body = large_event(&format!("p{i}"), bytes);
                        let sig = sign_openphone_legacy(&key, chrono::Utc::now().timestamp_millis(), &body);
                        let ok = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("openphone-signature", sig)
                            .body(body)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if ok {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            while pending().await? > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(t0.elapsed())
        };
        let (ingested, ingest_peak) = peak_rss_while(pid, posting).await;
        let ingested = ingested?;
        let (rss, hwm) = rss_kib(pid);
        drop(real);
        let processed: i64 = c
            .query_one("SELECT count(*) FROM webhook_events WHERE status = 'processed'", &[])
            .await?
            .get(0);

        let mib = |k: u64| k as f64 / 1024.0;
        println!("{:<44} {:>10} {:>10} {:>12}", "phase", "seconds", "events/s", "peak RSS MiB");
        println!("{:<44} {:>10} {:>10} {:>12.1}", "baseline: serve idle, empty database", "-", "-", mib(idle_kib));
        println!(
            "{:<44} {:>10.1} {:>10.1} {:>12.1}",
            format!("drain a backlog of {events} pending events"),
            drained.as_secs_f64(),
            events as f64 / drained.as_secs_f64(),
            mib(drain_peak)
        );
        println!(
            "{:<44} {:>10.1} {:>10.1} {:>12.1}",
            format!("{events} posted by 64 senders, applied"),
            ingested.as_secs_f64(),
            events as f64 / ingested.as_secs_f64(),
            mib(ingest_peak)
        );
        println!(
            "RSS after the drain {:.1} MiB, at the end {:.1} MiB, VmHWM {:.1} MiB; {} of {} posted acknowledged; {processed} processed",
            mib(after_drain),
            mib(rss),
            mib(hwm),
            acked.load(Ordering::Relaxed),
            events
        );
        if processed < (events as i64) + acked.load(Ordering::Relaxed) as i64 {
            bail!("not every stored event was processed");
        }
        anyhow::Ok(())
    }
    .await;
    bench.drop_db().await?;
    result
}

/// The server URL (its `postgres` database) a benchmark database lives on.
fn bench_admin_url(db_url: &str) -> anyhow::Result<String> {
    match db_url.rfind('/') {
        Some(i) => Ok(format!("{}/postgres", &db_url[..i])),
        None => bail!("database URL has no database part"),
    }
}

/// Percentiles of a sorted list of milliseconds.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// A minimal OpenPhone contacts endpoint that notes when each pushed state
/// (`lastName` carries the change's sequence number) arrives.
async fn fake_provider(
    arrivals: Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>>,
) -> anyhow::Result<String> {
    use axum::routing::patch;
    let app = axum::Router::new().route(
        "/v1/contacts/{id}",
        patch(
            move |axum::extract::Path(id): axum::extract::Path<String>,
                  axum::Json(body): axum::Json<serde_json::Value>| {
                let arrivals = arrivals.clone();
                async move {
                    let now = Instant::now();
                    if let Some(seq) = body["defaultFields"]["lastName"]
                        .as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        if let Ok(mut a) = arrivals.lock() {
                            a.entry(seq).or_insert(now);
                        }
                    }
                    axum::Json(serde_json::json!({"data": {"id": id}}))
                }
            },
        ),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

async fn push(rate: u32, seconds: u64, server: Option<String>) -> anyhow::Result<()> {
    let bench = BenchDb::create(server).await?;
    let result = async {
        let c = db::connect(&bench.url).await?;
        // Clients already linked to their contacts, so each change is one
        // PATCH; created without capture so nothing is queued yet.
        let clients = (rate as usize * 2).max(100);
        c.batch_execute(&format!(
            "ALTER TABLE clients DISABLE TRIGGER syncbridge_capture;
             INSERT INTO clients (first_name, last_name, phone, openphone_contact_id, sync_status, last_synced_at)
             SELECT 'bench', '0', '+1415555' || lpad(g::text, 4, '0'), 'c' || g, 'synced', now()
             FROM generate_series(1, {clients}) g;
             ALTER TABLE clients ENABLE TRIGGER syncbridge_capture;"
        ))
        .await?;
        let ids: Vec<uuid::Uuid> = c
            .query("SELECT id FROM clients ORDER BY phone", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();

        // Baseline: commit → NOTIFY at a bare listener, same rate.
        let notify_ms = {
            let (listener, mut conn) = tokio_postgres::connect(&bench.url, tokio_postgres::NoTls).await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                use futures_util::StreamExt;
                while let Some(Ok(m)) = stream.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(n) = m {
                        let _ = tx.send((Instant::now(), n.payload().to_owned()));
                    }
                }
            });
            listener.batch_execute("LISTEN bench_baseline").await?;
            let mut committed = Vec::new();
            let interval = Duration::from_secs_f64(1.0 / rate as f64);
            let mut tick = tokio::time::interval(interval);
            let n = (rate as u64 * seconds.min(5)) as usize;
            for i in 0..n {
                tick.tick().await;
                c.execute("SELECT pg_notify('bench_baseline', $1)", &[&i.to_string()]).await?;
                committed.push(Instant::now());
            }
            let mut lat = Vec::new();
            while lat.len() < n {
                let Ok(Some((at, payload))) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await else { break };
                if let Ok(i) = payload.parse::<usize>() {
                    lat.push(at.saturating_duration_since(committed[i]).as_secs_f64() * 1000.0);
                }
            }
            lat.sort_by(f64::total_cmp);
            lat
        };

        let arrivals = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let api = fake_provider(arrivals.clone()).await?;
        let child = spawn_server_with(&bench.url, ServerMode::Serve, Some(&api)).await?;
        let pid = child.proc.id().unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(1)).await;

        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let total = rate as u64 * seconds;
        let mut committed = Vec::with_capacity(total as usize);
        let stmt = c.prepare("UPDATE clients SET last_name = $2 WHERE id = $1").await?;
        let started = Instant::now();
        let mut peak = 0;
        for seq in 0..total {
            tick.tick().await;
            let id = ids[seq as usize % ids.len()];
            c.execute(&stmt, &[&id, &seq.to_string()]).await?;
            committed.push(Instant::now());
            if seq % 500 == 0 {
                peak = peak.max(rss_kib(pid).0);
            }
        }
        let achieved = total as f64 / started.elapsed().as_secs_f64();
        // Let the last pushes land.
        for _ in 0..100 {
            if arrivals.lock().map(|a| a.len() as u64).unwrap_or(0) >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(child);
        let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
        let mut lat: Vec<f64> = (0..total)
            .filter_map(|seq| {
                let at = arrivals.get(&seq)?;
                Some(at.saturating_duration_since(committed[seq as usize]).as_secs_f64() * 1000.0)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        println!(
            "change-to-push benchmark: {rate} changes/s requested ({achieved:.0}/s achieved) for {seconds}s over {} clients, 2 cores",
            ids.len()
        );
        println!("{:<44} {:>9} {:>9} {:>9} {:>9}", "path", "n", "p50 ms", "p99 ms", "max ms");
        println!(
            "{:<44} {:>9} {:>9.2} {:>9.2} {:>9.2}",
            "baseline: commit -> NOTIFY at a listener",
            notify_ms.len(),
            pct(&notify_ms, 0.5),
            pct(&notify_ms, 0.99),
            notify_ms.last().copied().unwrap_or(f64::NAN)
        );
        println!(
            "{:<44} {:>9} {:>9.2} {:>9.2} {:>9.2}",
            "syncbridge: commit -> provider receives push",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN)
        );
        println!(
            "pushes received for {} of {total} changes (the rest coalesced into a later push of the same record)",
            lat.len()
        );
        println!("server RSS (sampled peak): {:.1} MiB", peak as f64 / 1024.0);
        anyhow::Ok(())
    }
    .await;
    bench.drop_db().await?;
    result
}

async fn scale(
    events: usize,
    senders: usize,
    seconds: u64,
    servers: usize,
    rounds: usize,
    server: Option<String>,
) -> anyhow::Result<()> {
    let bench = BenchDb::create(server).await?;
    let result = async {
        let c = db::connect(&bench.url).await?;
        let servers = servers.max(1);
        let mut ingest: Vec<Vec<f64>> = vec![Vec::new(); servers];
        let mut apply: Vec<Vec<f64>> = vec![Vec::new(); servers];
        let mut rss: Vec<f64> = vec![0.0; servers];
        for round in 0..rounds {
            for k in 1..=servers {
                // Ingest: k processes (each with its router applying what
                // it stores), the senders spread over them.
                let mut children = Vec::new();
                for _ in 0..k {
                    children.push(spawn_server(&bench.url, ServerMode::Serve).await?);
                }
                let addrs: Vec<&str> = children.iter().map(|c| c.addr.as_str()).collect();
                let pids: Vec<u32> = children.iter().map(|c| c.proc.id().unwrap_or(0)).collect();
                let run = load(&addrs, senders, seconds, &format!("k{k}r{round}"), &pids).await?;
                anyhow::ensure!(run.errors == 0, "{} deliveries failed with {k} processes", run.errors);
                ingest[k - 1].push(run.acks_per_s);
                rss[k - 1] = rss[k - 1].max(run.rss_mib);
                drop(children);
                // Whatever the ingest left pending is drained before the
                // apply round, by one process.
                let one = spawn_server(&bench.url, ServerMode::Serve).await?;
                wait_inbox_drained(&c).await?;
                drop(one);
                c.batch_execute("VACUUM webhook_events, webhook_queue, communications").await?;

                // Apply: a backlog of `events`, drained by k processes.
                let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let bodies: Vec<Vec<u8>> = (0..events)
                    .map(|i| {
                        serde_json::to_vec(&serde_json::json!({
                            "id": format!("EVk{k}r{round}i{i}"), "object": "event", "apiVersion": "v3",
                            "createdAt": at, "type": "message.received",
                            "data": {"object": {"object": "message", "id": format!("ACk{k}r{round}i{i}"),
                                "direction": "incoming", "from": format!("+1415{:07}", i % 5000),
                                "to": "+14155550199", "body": "hello", "status": "received",
                                "createdAt": at}}
                        }))
                        .expect("serialisable")
                    })
                    .collect();
                store_events(&c, "message.received", &bodies).await?;
                let t0 = Instant::now();
                let mut children = Vec::new();
                for _ in 0..k {
                    children.push(spawn_server(&bench.url, ServerMode::Serve).await?);
                }
                wait_inbox_drained(&c).await?;
                let took = t0.elapsed();
                drop(children);
                apply[k - 1].push(events as f64 / took.as_secs_f64());
                c.batch_execute("VACUUM webhook_events, webhook_queue, communications").await?;
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "scale-out benchmark: 1..{servers} serve processes on one PostgreSQL, {} cores, {rounds} rounds alternated; \
             ingest {senders} senders x {seconds} s; apply {events} message.received events from process start to an empty inbox",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        println!("{:<12} {:>14} {:>10} {:>16} {:>10} {:>14}", "processes", "ingest acks/s", "vs 1", "apply events/s", "vs 1", "RSS MiB (sum)");
        for k in 0..servers {
            println!(
                "{:<12} {:>14.0} {:>10.2} {:>16.0} {:>10.2} {:>14.1}   ingest {:?} apply {:?}",
                k + 1,
                mean(&ingest[k]),
                mean(&ingest[k]) / mean(&ingest[0]),
                mean(&apply[k]),
                mean(&apply[k]) / mean(&apply[0]),
                rss[k],
                ingest[k].iter().map(|v| v.round()).collect::<Vec<_>>(),
                apply[k].iter().map(|v| v.round()).collect::<Vec<_>>(),
            );
        }
        anyhow::Ok(())
    }
    .await;
    bench.drop_db().await?;
    result
}

/// The server's WAL position in bytes.
async fn wal_lsn(c: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(
        c.query_one("SELECT (pg_current_wal_lsn() - '0/0')::bigint", &[])
            .await?
            .get(0),
    )
}

/// CPU seconds of the other backends connected to `c`'s database.
async fn backends_cpu(c: &tokio_postgres::Client) -> anyhow::Result<f64> {
    let rows = c
        .query(
            "SELECT pid::text FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| cpu_seconds(r.get(0))).sum())
}

/// Waits until the inbox has nothing pending (600 s at most).
async fn wait_inbox_drained(c: &tokio_postgres::Client) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let pending: i64 = c
            .query_one(
                "SELECT count(*) FROM webhook_queue WHERE status = 'pending'",
                &[],
            )
            .await?
            .get(0);
        if pending == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "inbox not drained in 600 s ({pending} pending)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn drain_bench(changes: usize, server: Option<String>) -> anyhow::Result<()> {
    use futures_util::{StreamExt, TryStreamExt};
    let bench = BenchDb::create(server).await?;
    let result = async {
        let c = db::connect(&bench.url).await?;
        c.batch_execute(&format!(
            "ALTER TABLE clients DISABLE TRIGGER syncbridge_capture;
             INSERT INTO clients (first_name, last_name, phone, openphone_contact_id, sync_status, last_synced_at)
             SELECT 'bench', '0', '+1415' || lpad(g::text, 7, '0'), 'c' || g, 'synced', now()
             FROM generate_series(1, {changes}) g;
             ALTER TABLE clients ENABLE TRIGGER syncbridge_capture;"
        ))
        .await?;
        c.batch_execute("VACUUM ANALYZE clients").await?;

        // Baseline: the same PATCHes straight to the fake, 8 at a time.
        let arrivals = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let api = fake_provider(arrivals.clone()).await?;
        let http = reqwest::Client::new();
        let t0 = Instant::now();
        futures_util::stream::iter(0..changes)
            .map(|i| {
                let http = http.clone();
                let url = format!("{api}/v1/contacts/c{i}");
                async move {
                    http.patch(url)
                        .json(&serde_json::json!({"defaultFields": {"lastName": i.to_string()}}))
                        .send()
                        .await?
                        .error_for_status()?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        let bare = t0.elapsed();
        arrivals.lock().map(|mut a| a.clear()).ok();

        // The changes, all queued before the server starts.
        c.batch_execute(
            "UPDATE clients SET last_name = substr(openphone_contact_id, 2)",
        )
        .await?;
        let queued: i64 = c
            .query_one("SELECT count(*) FROM sync_outbox WHERE status = 'pending'", &[])
            .await?
            .get(0);
        anyhow::ensure!(queued as usize == changes, "{queued} changes queued, {changes} expected");
        let w0 = wal_lsn(&c).await?;
        let t0 = Instant::now();
        let child = spawn_server_with(&bench.url, ServerMode::Serve, Some(&api)).await?;
        let pid = child.proc.id().unwrap_or(0);
        let mut peak = 0;
        loop {
            let pending: i64 = c
                .query_one("SELECT count(*) FROM sync_outbox WHERE status = 'pending'", &[])
                .await?
                .get(0);
            let arrived = arrivals.lock().map(|a| a.len()).unwrap_or(0);
            peak = peak.max(rss_kib(pid).0);
            if pending == 0 && arrived >= changes {
                break;
            }
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(600), "not drained in 600 s: {pending} pending, {arrived} arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = t0.elapsed();
        let service_cpu = cpu_seconds(&pid.to_string());
        let postgres_cpu = backends_cpu(&c).await?;
        let wal_per_change = (wal_lsn(&c).await? - w0) / changes as i64;
        drop(child);
        let rate = changes as f64 / took.as_secs_f64();
        let bare_rate = changes as f64 / bare.as_secs_f64();
        println!("dispatcher drain benchmark: {changes} changes queued on {changes} linked clients, fake OpenPhone with no rate limit, 2 cores");
        println!("baseline: the same PATCHes sent straight to the fake, 8 at a time: {:.2} s, {bare_rate:.0} requests/s", bare.as_secs_f64());
        println!(
            "syncbridge: server start -> every change pushed and closed: {:.2} s, {rate:.0} changes/s ({:.2}x the baseline)",
            took.as_secs_f64(),
            rate / bare_rate
        );
        println!(
            "CPU {service_cpu:.2} s service ({:.0}% of a core) + {postgres_cpu:.2} s Postgres backends ({:.0}%); WAL {wal_per_change} B/change; server RSS (sampled peak) {:.1} MiB",
            100.0 * service_cpu / took.as_secs_f64(),
            100.0 * postgres_cpu / took.as_secs_f64(),
            peak as f64 / 1024.0
        );
        anyhow::Ok(())
    }
    .await;
    bench.drop_db().await?;
    result
}

async fn capture(seconds: u64, server: Option<String>) -> anyhow::Result<()> {
    let bench = BenchDb::create(server).await?;
    let result = async {
        let c = db::connect(&bench.url).await?;
        c.batch_execute(
            "ALTER TABLE clients DISABLE TRIGGER syncbridge_capture;
             INSERT INTO clients (first_name, last_name, phone)
             SELECT 'bench', 'row' || g, '+1415555' || lpad(g::text, 4, '0') FROM generate_series(1, 10000) g;
             CREATE TABLE bench_ids (n int PRIMARY KEY, id uuid NOT NULL);
             INSERT INTO bench_ids SELECT row_number() OVER (ORDER BY id), id FROM clients;
             ALTER TABLE clients ENABLE TRIGGER syncbridge_capture;",
        )
        .await?;
        // VACUUM cannot run inside the implicit transaction of a batch.
        c.batch_execute("VACUUM ANALYZE clients").await?;
        let script = std::env::temp_dir().join(format!("syncbridge-capture-{}.sql", std::process::id()));
        std::fs::write(
            &script,
            "\\set n random(1, 10000)\n\\set v random(1, 1000000000)\n             UPDATE clients SET company = 'c' || :v WHERE id = (SELECT id FROM bench_ids WHERE n = :n);\n",
        )?;
        let run = |label: &'static str| {
            let script = script.clone();
            let url = bench.url.clone();
            async move {
                let out = tokio::process::Command::new("pgbench")
                    .args(["-n", "-c", "8", "-j", "2", "-T", &seconds.to_string(), "-f"])
                    .arg(&script)
                    .arg(&url)
                    .output()
                    .await
                    .context("running pgbench (install the postgresql-client package)")?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let tps = text
                    .lines()
                    .find(|l| l.starts_with("tps"))
                    .and_then(|l| l.split_whitespace().nth(2))
                    .and_then(|v| v.parse::<f64>().ok())
                    .with_context(|| format!("pgbench output for {label}: {text}{}", String::from_utf8_lossy(&out.stderr)))?;
                anyhow::Ok(tps)
            }
        };
        // Alternate to even out drift: off, on, off, on.
        let mut off = Vec::new();
        let mut on = Vec::new();
        for _ in 0..2 {
            c.batch_execute(
                "ALTER TABLE clients DISABLE TRIGGER syncbridge_capture;
                 ALTER TABLE clients DISABLE TRIGGER syncbridge_mark_pending;",
            )
            .await?;
            off.push(run("without capture").await?);
            c.batch_execute(
                "ALTER TABLE clients ENABLE TRIGGER syncbridge_capture;
                 ALTER TABLE clients ENABLE TRIGGER syncbridge_mark_pending;
                 TRUNCATE sync_outbox",
            )
            .await?;
            c.batch_execute("VACUUM clients").await?;
            on.push(run("with capture").await?);
            c.batch_execute("TRUNCATE sync_outbox").await?;
            c.batch_execute("VACUUM clients").await?;
        }
        // And with syncbridge running: its dispatcher drains the outbox to a
        // fake provider and re-arms the doorbell before every drain, so
        // NOTIFY rings as often as a live deployment makes it ring. Its own
        // work shares the two cores with pgbench and Postgres.
        let arrivals = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let api = fake_provider(arrivals).await?;
        c.batch_execute(
            "ALTER TABLE clients DISABLE TRIGGER syncbridge_capture;
             UPDATE clients SET openphone_contact_id = 'c' || phone, sync_status = 'synced', last_synced_at = now();
             ALTER TABLE clients ENABLE TRIGGER syncbridge_capture;",
        )
        .await?;
        c.batch_execute("VACUUM clients").await?;
        let child = spawn_server_with(&bench.url, ServerMode::Serve, Some(&api)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let live = run("with capture, syncbridge draining").await?;
        drop(child);
        let rings: i64 = c
            .query_one("SELECT count(*) FROM sync_outbox WHERE status = 'done'", &[])
            .await?
            .get(0);
        let _ = std::fs::remove_file(&script);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!("capture overhead benchmark: pgbench -c 8 -j 2 -T {seconds}, single-row UPDATE of clients, 2 rounds each");
        println!("without capture triggers: {:.0} tps ({:?})", mean(&off), off.iter().map(|t| t.round()).collect::<Vec<_>>());
        println!("with capture triggers:    {:.0} tps ({:?})", mean(&on), on.iter().map(|t| t.round()).collect::<Vec<_>>());
        println!("ratio (with / without):  {:.2}", mean(&on) / mean(&off));
        println!(
            "with capture while syncbridge drains to a fake provider: {live:.0} tps, ratio {:.2} ({rings} changes pushed meanwhile)",
            live / mean(&off)
        );
        anyhow::Ok(())
    }
    .await;
    bench.drop_db().await?;
    result
}

/// Stores `bodies` as pending OpenPhone inbox events.
async fn store_events(
    c: &tokio_postgres::Client,
    kind: &str,
    bodies: &[Vec<u8>],
) -> anyhow::Result<()> {
    for chunk in bodies.chunks(5000) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|_| format!("EV{}", uuid::Uuid::new_v4().simple()))
            .collect();
        let bodies: Vec<&[u8]> = chunk.iter().map(|b| b.as_slice()).collect();
        c.execute(
            "INSERT INTO webhook_events (provider, dedup_key, event_type, event_id, body)
             SELECT 'openphone', k, $3, k, b FROM unnest($1::text[], $2::bytea[]) AS x(k, b)",
            &[&keys, &bodies, &kind],
        )
        .await?;
    }
    Ok(())
}

/// One drain of the inbox by a fresh router (its own pool), measured.
struct Drain {
    events: usize,
    time: Duration,
    /// WAL the server wrote meanwhile (cluster-wide: a quiet server makes
    /// it this run's), per event.
    wal_per_event: i64,
    /// CPU seconds of this process (the router) and of the router's
    /// Postgres backends.
    service_cpu: f64,
    postgres_cpu: f64,
    /// `webhook_events` updates in the drain, and how many were HOT.
    inbox_updates: i64,
    inbox_hot: i64,
    /// Batches rolled back by a deadlock or serialization failure and
    /// applied again (as `serve`'s workers do, after their backoff).
    retried: usize,
}

impl Drain {
    fn split(&self) -> String {
        let cpu = self.service_cpu + self.postgres_cpu;
        let busy = |c: f64| 100.0 * c / self.time.as_secs_f64();
        format!(
            "CPU {:.2} s service ({:.0}% of a core) + {:.2} s Postgres backends ({:.0}%), {:.0}/{:.0}% of the CPU time; \
             inbox closes {} updates, {} HOT ({:.0}%){}",
            self.service_cpu,
            busy(self.service_cpu),
            self.postgres_cpu,
            busy(self.postgres_cpu),
            100.0 * self.service_cpu / cpu.max(1e-9),
            100.0 * self.postgres_cpu / cpu.max(1e-9),
            self.inbox_updates,
            self.inbox_hot,
            100.0 * self.inbox_hot as f64 / self.inbox_updates.max(1) as f64,
            match self.retried {
                0 => String::new(),
                n => format!("; {n} batches rolled back (deadlock) and retried"),
            }
        )
    }
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`
/// (0 where there is no procfs).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here; Linux
    // counts them in USER_HZ = 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

/// Drains the inbox with a router of its own and measures it: WAL, CPU of
/// this process and of the Postgres backends of the bench database (read
/// before the pool closes), and the inbox's HOT updates (read once the
/// router's backends have exited, which flushes their statistics).
async fn drain_measured(
    c: &tokio_postgres::Client,
    bench: &BenchDb,
    registry: &syncbridge::providers::Registry,
    config: &Config,
    events: usize,
) -> anyhow::Result<Drain> {
    let inbox_stats = async || -> anyhow::Result<(i64, i64)> {
        c.batch_execute("SELECT pg_stat_clear_snapshot()").await?;
        let r = c
            .query_one(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
                 WHERE relname = 'webhook_events'",
                &[],
            )
            .await?;
        Ok((r.get(0), r.get(1)))
    };
    let (u0, h0) = inbox_stats().await?;
    let pool = db::pool(&bench.url, POOL_SIZE)?;
    let router = syncbridge::router::Router::new(pool.clone(), registry, config.router.clone());
    let w0 = wal_lsn(c).await?;
    let s0 = cpu_seconds("self");
    let (n, retried, time) = drain_timed(&router, registry, config.router.workers).await?;
    let service_cpu = cpu_seconds("self") - s0;
    let wal_per_event = (wal_lsn(c).await? - w0) / events.max(1) as i64;
    // The pool's connections were opened for the drain: their CPU is its.
    let postgres_cpu = backends_cpu(c).await?;
    drop(router);
    pool.close();
    // The closed backends flush their statistics as they exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut u1, mut h1) = inbox_stats().await?;
    while u1 - u0 < n as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (u1, h1) = inbox_stats().await?;
    }
    Ok(Drain {
        events: n,
        time,
        wal_per_event,
        service_cpu,
        postgres_cpu,
        inbox_updates: u1 - u0,
        inbox_hot: h1 - h0,
        retried,
    })
}

/// Drains the inbox as `serve`'s router workers do: `workers` side by
/// side, each applying batch after batch of every routed provider
/// (`Router::apply_batch`, as `Router::drain`) until a pass finds nothing;
/// a batch that fails for a deadlock or a serialization failure was
/// rolled back whole, and the worker goes on after the service's backoff
/// (`worker::drain_loop`: 100 ms, doubling) instead of failing the drain.
/// Returns the events applied, the batches retried, and the time.
async fn drain_timed(
    router: &syncbridge::router::Router,
    registry: &syncbridge::providers::Registry,
    workers: usize,
) -> anyhow::Result<(usize, usize, Duration)> {
    let providers = registry.routed();
    let t0 = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (router, providers) = (router.clone(), providers.clone());
        runs.spawn(async move {
            let (mut applied, mut retried) = (0usize, 0usize);
            let mut backoff = Duration::from_millis(100);
            loop {
                let mut pass = 0;
                let mut failed = false;
                for p in &providers {
                    match router.apply_batch(p.as_ref()).await {
                        Ok(stats) => pass += stats.total(),
                        Err(e) if e.is_transient() => {
                            retried += 1;
                            failed = true;
                        }
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
                applied += pass;
                if failed {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                } else if pass == 0 {
                    return Ok((applied, retried));
                } else {
                    backoff = Duration::from_millis(100);
                }
            }
        });
    }
    let (mut applied, mut retried) = (0, 0);
    while let Some(run) = runs.join_next().await {
        let (a, r) = run??;
        applied += a;
        retried += r;
    }
    Ok((applied, retried, t0.elapsed()))
}

async fn apply(
    events: usize,
    batch: usize,
    workers: Option<usize>,
    server: Option<String>,
) -> anyhow::Result<()> {
    let router = (batch, workers);
    // Each workload in a fresh database of its own, dropped whatever
    // happens: the OpenPhone messages and contacts (one database, as
    // before), the mixed OpenPhone backlog, Teli's calls, ResMan's
    // prospects.
    let mut runs = fresh(&server, async |b| apply_on(b, events, router).await).await?;
    runs.push(fresh(&server, async |b| apply_mixed_on(b, events, router).await).await?);
    runs.push(fresh(&server, async |b| apply_teli_on(b, events, router).await).await?);
    runs.push(fresh(&server, async |b| apply_resman_on(b, events, router).await).await?);

    let (batch, workers) = runs.first().map(|w| w.router).unwrap_or_default();
    println!("router apply, {events} events per workload (batch {batch}, {workers} workers):");
    let base_rate = runs.first().map_or(0.0, |w| w.rate());
    for (i, w) in runs.iter().enumerate() {
        let d = &w.drain;
        let rate = w.rate();
        let label = format!("{}:", w.label);
        if i == 0 {
            println!(
                "  {label:<56}{rate:>9.0} events/s  ({} B of WAL/event)",
                d.wal_per_event
            );
        } else {
            println!(
                "  {label:<56}{rate:>9.0} events/s  ({:.2}x baseline, {:.1} µs/event, {} B of WAL/event)",
                rate / base_rate.max(1e-9),
                d.time.as_secs_f64() * 1e6 / d.events.max(1) as f64,
                d.wal_per_event
            );
        }
    }
    for w in &runs {
        println!("  {}: {}", w.name, w.drain.split());
    }
    for w in runs.iter().filter(|w| !w.decisions.is_empty()) {
        print!("  decisions ({}):", w.name);
        for (d, n) in &w.decisions {
            print!(" {d}={n}");
        }
        println!();
    }
    let problems: Vec<String> = runs
        .iter()
        .flat_map(|w| w.problems.iter().map(move |p| format!("{}: {p}", w.name)))
        .collect();
    if !problems.is_empty() {
        bail!("events not applied: {}", problems.join("; "));
    }
    Ok(())
}

/// Runs `run` on a fresh, migrated database, dropped afterwards whatever
/// happens.
async fn fresh<T>(
    server: &Option<String>,
    run: impl AsyncFnOnce(&BenchDb) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let bench = BenchDb::create(server.clone()).await?;
    let result = run(&bench).await;
    bench.drop_db().await?;
    result
}

/// One workload of `apply`: its drain, and what was not as expected.
struct Workload {
    /// Its figure's line.
    label: &'static str,
    /// Its name in the CPU split and the decisions.
    name: &'static str,
    drain: Drain,
    /// SYNCBRIDGE_ROUTER_BATCH and _WORKERS as the router ran.
    router: (i64, usize),
    /// The audit log's decisions, by entity where several are written.
    decisions: Vec<(String, i64)>,
    /// Events not applied, or effects missing: the bench fails.
    problems: Vec<String>,
}

impl Workload {
    fn rate(&self) -> f64 {
        self.drain.events as f64 / self.drain.time.as_secs_f64().max(1e-9)
    }
}

/// The service's configuration for an `apply` workload: the router's batch
/// and workers as asked, OpenPhone's webhook key, and `extra`.
fn apply_config(
    url: &str,
    (batch, workers): (usize, Option<usize>),
    extra: &[(&str, &str)],
) -> anyhow::Result<Config> {
    let batch = batch.to_string();
    let workers = workers.map(|w| w.to_string());
    let mut pairs = vec![
        ("DATABASE_URL", url),
        ("OPENPHONE_WEBHOOK_KEY", KEY),
        ("SYNCBRIDGE_ROUTER_BATCH", batch.as_str()),
    ];
    if let Some(w) = &workers {
        pairs.push(("SYNCBRIDGE_ROUTER_WORKERS", w.as_str()));
    }
    pairs.extend_from_slice(extra);
    Ok(Config::from_settings(&Settings::from_pairs(pairs))?)
}

/// Earlier runs' dirty pages written out before this one starts, not by
/// a checkpoint in the middle of the measurement (needs superuser or
/// pg_checkpoint; without, the run goes on with a note).
async fn checkpoint(c: &tokio_postgres::Client) {
    if let Err(e) = c.batch_execute("CHECKPOINT").await {
        eprintln!("no CHECKPOINT before the run ({e}): figures may include one");
    }
}

/// Events of the inbox neither processed nor ignored.
async fn not_applied(c: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(c.query_one(
        "SELECT count(*) FROM webhook_events WHERE status NOT IN ('processed', 'ignored')",
        &[],
    )
    .await?
    .get(0))
}

/// The audit log's decisions, as `entity:decision`.
async fn decisions(c: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(c.query(
        "SELECT entity_type || ':' || decision, count(*) FROM sync_audit_log
             GROUP BY 1 ORDER BY 1",
        &[],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

/// The count of `sql` (a `SELECT count(*)`) against what it should be.
async fn expect_count(
    c: &tokio_postgres::Client,
    what: &str,
    sql: &str,
    want: usize,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let n: i64 = c.query_one(sql, &[]).await?.get(0);
    if n != want as i64 {
        problems.push(format!("{n} {what}, expected {want}"));
    }
    Ok(())
}

/// Stores `deliveries` ([`store_deliveries`]), drains them with a router
/// of its own ([`drain_measured`]) and notes the events not applied.
async fn store_and_drain(
    c: &tokio_postgres::Client,
    bench: &BenchDb,
    registry: &syncbridge::providers::Registry,
    config: &Config,
    events: usize,
    deliveries: Vec<syncbridge::providers::Delivery>,
) -> anyhow::Result<(Drain, Vec<String>)> {
    store_deliveries(c, &bench.url, &deliveries).await?;
    drop(deliveries);
    let drain = drain_measured(c, bench, registry, config, events).await?;
    let mut problems = Vec::new();
    let failed = not_applied(c).await?;
    if failed > 0 || drain.events != events {
        problems.push(format!(
            "{failed} events not applied ({}/{events} drained)",
            drain.events
        ));
    }
    Ok((drain, problems))
}

/// Stores deliveries in the inbox as the service does — the inbox
/// writer's own insert (`db::inbox::insert_batch`), in groups of 512 a
/// transaction as its writer commits them — on a connection of its own,
/// then waits for that backend to exit (the drain counts the CPU of every
/// backend of the database but `c`'s).
async fn store_deliveries(
    c: &tokio_postgres::Client,
    url: &str,
    deliveries: &[syncbridge::providers::Delivery],
) -> anyhow::Result<()> {
    let pool = db::pool(url, 1)?;
    let stored = async {
        let mut client = pool.get().await?;
        for group in deliveries.chunks(512) {
            let tx = client.transaction().await?;
            let refs: Vec<&syncbridge::providers::Delivery> = group.iter().collect();
            let ids = syncbridge::db::inbox::insert_batch(&tx, &refs).await?;
            tx.commit().await?;
            let duplicates = ids.iter().filter(|id| id.is_none()).count();
            anyhow::ensure!(duplicates == 0, "{duplicates} deliveries were duplicates");
        }
        anyhow::Ok(())
    }
    .await;
    pool.close();
    stored?;
    let t0 = Instant::now();
    loop {
        let others: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await?
            .get(0);
        if others == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(10),
            "the storing connection is still open after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` linked, synced clients (OpenPhone contacts `C1`…), a fifth of them
/// changed locally since (`last_name`), the rules `merge` with `email`
/// `prefer_local`, and capture on as in production. Set up with capture
/// off, so the setup itself queues no pushes.
async fn linked_clients(c: &tokio_postgres::Client, n: i64) -> anyhow::Result<()> {
    c.batch_execute("SELECT syncbridge_untrack_table('clients', 'openphone')")
        .await?;
    c.execute(
        "INSERT INTO clients (id, first_name, last_name, company, email, phone,
                              openphone_contact_id, last_synced_at, sync_status, updated_at)
         SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid,
                'First' || i, 'Last' || i, 'Co' || i, 'p' || i || '@example.com',
                '+1415' || lpad(i::text, 7, '0'), 'C' || i, now(), 'synced',
                now() - interval '1 day'
         FROM generate_series(1, $1::bigint) AS i",
        &[&n],
    )
    .await?;
    c.execute(
        "INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id, snapshot,
                                 remote_version, last_synced_at)
         SELECT 'clients', id, 'openphone', 'primary', openphone_contact_id,
                jsonb_build_object('first_name', first_name, 'last_name', last_name,
                                   'company', company, 'email', email, 'phone', phone),
                now() - interval '1 day', now()
         FROM clients",
        &[],
    )
    .await?;
    // A fifth changed locally since (both sides then change last_name).
    c.execute(
        "UPDATE clients SET last_name = last_name || '-local', updated_at = now() - interval '1 hour'
         WHERE right(openphone_contact_id, 1) IN ('1', '5')",
        &[],
    )
    .await?;
    c.batch_execute(
        "INSERT INTO sync_conflict_rules (entity_type, field, strategy) VALUES
            ('clients', '*', 'merge'), ('clients', 'email', 'prefer_local')",
    )
    .await?;
    // Capture back on, as in production (the router's writes carry the
    // provider as origin, so they queue nothing for it).
    c.batch_execute("SELECT syncbridge_track_table('clients', 'openphone')")
        .await?;
    Ok(())
}

/// `contact.updated` for contact `C{i}` (linked to client `i`): every 4th
/// an echo of the snapshot, the rest rename.
fn contact_event(i: usize, at: &str) -> serde_json::Value {
    let last = if i % 4 == 0 {
        format!("Last{i}")
    } else {
        format!("Remote{i}")
    };
    serde_json::json!({
        "id": format!("EVc{i}"), "object": "event", "apiVersion": "v3",
        "createdAt": at, "type": "contact.updated",
        "data": {"object": {"object": "contact", "id": format!("C{i}"),
            "defaultFields": {"firstName": format!("First{i}"), "lastName": last,
                "company": format!("Co{i}"),
                "emails": [{"name": "email", "value": format!("p{i}@example.com")}],
                "phoneNumbers": [{"name": "phone", "value": format!("+1415{i:07}")}]},
            "updatedAt": at}}
    })
}

/// `message.received` `AC{i}` from client `from`'s number.
fn message_event(i: usize, from: usize, at: &str) -> serde_json::Value {
    serde_json::json!({
        "id": format!("EVm{i}"), "object": "event", "apiVersion": "v3",
        "createdAt": at, "type": "message.received",
        "data": {"object": {"object": "message", "id": format!("AC{i}"),
            "direction": "incoming", "from": format!("+1415{from:07}"),
            "to": "+14155550199", "body": "hello", "status": "received",
            "createdAt": at}}
    })
}

/// `call.completed` `ACk{i}`, an answered incoming call from client
/// `from`'s number (the fixtures' shape, `call-completed-outgoing.json`).
fn call_event(i: usize, from: usize, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let t = |secs: i64| {
        (now - chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    serde_json::json!({
        "id": format!("EVk{i}"), "object": "event", "apiVersion": "v3",
        "createdAt": t(0), "type": "call.completed",
        "data": {"object": {"object": "call", "id": format!("ACk{i}"),
            "direction": "incoming", "from": format!("+1415{from:07}"),
            "to": "+14155550199", "status": "completed",
            "createdAt": t(330), "answeredAt": t(320), "completedAt": t(1),
            "conversationId": format!("CN{from}"), "phoneNumberId": "PNq8Zt3kLm",
            "userId": "USa1B2c3D4", "media": [], "voicemail": null}}
    })
}

/// OpenPhone events as the webhook front stores them: signed (legacy
/// scheme), verified by the provider and checked at the edge.
fn openphone_deliveries(
    registry: &syncbridge::providers::Registry,
    events: &[serde_json::Value],
) -> anyhow::Result<Vec<syncbridge::providers::Delivery>> {
    use axum::http::{HeaderMap, HeaderValue};
    use syncbridge::providers::{Verified, WebhookRequest};
    let provider = registry
        .get(syncbridge::domain::ProviderName::OpenPhone)
        .map_err(|why| anyhow::anyhow!("OpenPhone: {why}"))?;
    let key = HmacKey::from_base64(KEY).context("bench key")?;
    let now = chrono::Utc::now();
    events
        .iter()
        .map(|e| {
            let body = bytes::Bytes::from(serde_json::to_vec(e)?);
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            headers.insert(
                "user-agent",
                HeaderValue::from_static("OpenPhone-Webhooks/1.0"),
            );
            headers.insert(
                "openphone-signature",
                HeaderValue::from_str(&sign_openphone_legacy(&key, now.timestamp_millis(), &body))?,
            );
            let req = WebhookRequest {
                token: None,
                headers: &headers,
                body: &body,
                now,
                pulled: false,
            };
            match provider.verify(&req) {
                Ok(Verified::Delivery(d)) => {
                    d.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(d)
                }
                Ok(other) => bail!("not a delivery: {other:?}"),
                Err(e) => bail!("refused: {e}"),
            }
        })
        .collect()
}

/// The existing pair, in one database: N `message.received` (the
/// baseline: one upsert and an audit row each) then N `contact.updated`
/// for linked clients through the conflict engine.
async fn apply_on(
    bench: &BenchDb,
    events: usize,
    router: (usize, Option<usize>),
) -> anyhow::Result<Vec<Workload>> {
    let c = db::connect(&bench.url).await?;
    checkpoint(&c).await;
    linked_clients(&c, events as i64).await?;
    c.batch_execute("VACUUM ANALYZE").await?;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = |v: serde_json::Value| serde_json::to_vec(&v).expect("serialisable");
    let contacts: Vec<Vec<u8>> = (1..=events).map(|i| body(contact_event(i, &at))).collect();
    let messages: Vec<Vec<u8>> = (1..=events)
        .map(|i| body(message_event(i, i, &at)))
        .collect();

    let config = apply_config(&bench.url, router, &[])?;
    let registry = syncbridge::providers::Registry::from_config(&config);
    let shape = (config.router.batch_size, config.router.workers);

    store_events(&c, "message.received", &messages).await?;
    let base = drain_measured(&c, bench, &registry, &config, events).await?;
    let base_failed = not_applied(&c).await?;
    store_events(&c, "contact.updated", &contacts).await?;
    let contact = drain_measured(&c, bench, &registry, &config, events).await?;
    let contact_failed = not_applied(&c).await? - base_failed;

    let decisions = c
        .query(
            "SELECT decision, count(*) FROM sync_audit_log
             WHERE entity_type = 'clients' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let problems = |failed: i64, applied: usize| {
        let mut p = Vec::new();
        if failed > 0 || applied != events {
            p.push(format!(
                "{failed} events not applied ({applied}/{events} drained)"
            ));
        }
        p
    };
    Ok(vec![
        Workload {
            label: "baseline  message.received (upsert + audit)",
            name: "messages",
            problems: problems(base_failed, base.events),
            drain: base,
            router: shape,
            decisions: Vec::new(),
        },
        Workload {
            label: "contact.updated through the conflict engine + audit",
            name: "contacts",
            problems: problems(contact_failed, contact.events),
            drain: contact,
            router: shape,
            decisions,
        },
    ])
}

/// OpenPhone's three kinds in one backlog, drained by one router:
/// `contact.updated` (as in `apply_on`), `message.received` and
/// `call.completed` from the linked clients' numbers, interleaved one of
/// each in turn, stored as the webhook front stores them.
async fn apply_mixed_on(
    bench: &BenchDb,
    events: usize,
    router: (usize, Option<usize>),
) -> anyhow::Result<Workload> {
    let c = db::connect(&bench.url).await?;
    checkpoint(&c).await;
    linked_clients(&c, events as i64).await?;
    c.batch_execute("VACUUM ANALYZE").await?;
    let config = apply_config(&bench.url, router, &[])?;
    let registry = syncbridge::providers::Registry::from_config(&config);
    let now = chrono::Utc::now();
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // Event i is about client (i + 2) / 3: a contact, a message, a call.
    let mixed: Vec<serde_json::Value> = (1..=events)
        .map(|i| {
            let client = i.div_ceil(3);
            match i % 3 {
                1 => contact_event(client, &at),
                2 => message_event(i, client, &at),
                _ => call_event(i, client, now),
            }
        })
        .collect();
    let deliveries = openphone_deliveries(&registry, &mixed)?;
    drop(mixed);
    let (drain, mut problems) =
        store_and_drain(&c, bench, &registry, &config, events, deliveries).await?;
    let (contacts, messages) = (events.div_ceil(3), (events + 1) / 3);
    let calls = events - contacts - messages;
    expect_count(
        &c,
        "messages stored",
        "SELECT count(*) FROM communications WHERE openphone_message_id IS NOT NULL AND client_id IS NOT NULL",
        messages,
        &mut problems,
    )
    .await?;
    expect_count(
        &c,
        "calls stored",
        "SELECT count(*) FROM communications WHERE openphone_call_id IS NOT NULL AND client_id IS NOT NULL",
        calls,
        &mut problems,
    )
    .await?;
    Ok(Workload {
        label: "mixed contact/message/call, interleaved, one backlog",
        name: "mixed",
        drain,
        router: (config.router.batch_size, config.router.workers),
        decisions: decisions(&c).await?,
        problems,
    })
}

/// Teli's pulled calls, applied by the router's `apply_claimed` and
/// `teli::store::apply_call` (business by agent, customer upsert, one
/// message per call, an audit row) — what `PullRun::store_and_apply` runs
/// on each page of a pull. The calls are those of the `teli` bench (the
/// tests' `make_call`, 2 agents, 2,000 callers), each stored as the pull
/// stores a fetched detail (`teli::wire::delivery`, the inbox writer's
/// insert); here they are drained by the router's batches instead of
/// one transaction a page.
async fn apply_teli_on(
    bench: &BenchDb,
    events: usize,
    router: (usize, Option<usize>),
) -> anyhow::Result<Workload> {
    use serde_json::json;
    let c = db::connect(&bench.url).await?;
    checkpoint(&c).await;
    c.batch_execute(
        "INSERT INTO businesses (name, teli_agent_id)
         VALUES ('Bench A', 'agent_bench_a'), ('Bench B', 'agent_bench_b')",
    )
    .await?;
    c.batch_execute("VACUUM ANALYZE").await?;
    let config = apply_config(&bench.url, router, &[])?;
    let registry = syncbridge::providers::Registry::from_config(&config);
    let agents = ["agent_bench_a", "agent_bench_b"];
    let t0 = chrono::Utc::now().timestamp_millis() - events as i64 * 1000;
    let deliveries = (0..events)
        .map(|n| {
            let call = fake_teli::make_call(
                &format!("call_{n:06}"),
                agents[n % 2],
                "inbound",
                Some(&format!("+1415{:07}", n % 2000)),
                Some("+14155550100"),
                t0 + n as i64 * 1000,
                json!({"customer_name": format!("Caller {}", n % 2000)}),
            );
            // The detail as Teli answers it.
            let body =
                serde_json::to_vec(&json!({"success": true, "powered_by": "Teli", "call": call}))?;
            syncbridge::providers::teli::wire::delivery(bytes::Bytes::from(body))
                .map_err(|e| anyhow::anyhow!("call {n}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (drain, mut problems) =
        store_and_drain(&c, bench, &registry, &config, events, deliveries).await?;
    expect_count(
        &c,
        "messages stored",
        "SELECT count(*) FROM messages",
        events,
        &mut problems,
    )
    .await?;
    expect_count(
        &c,
        "customers stored",
        "SELECT count(*) FROM customers",
        events.min(2000),
        &mut problems,
    )
    .await?;
    Ok(Workload {
        label: "Teli pulled calls (customer, message + audit)",
        name: "teli",
        drain,
        router: (config.router.batch_size, config.router.workers),
        decisions: decisions(&c).await?,
        problems,
    })
}

/// ResMan's Standard Webhooks secret for the bench (`whsec_` + base64).
const RESMAN_SECRET: &str = "whsec_YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMzI=";
/// The bench's ResMan property (ResMan's id) and its local one.
const RESMAN_PROPERTY: &str = "07413576-f764-44c6-be35-df4139deec01";
const LOCAL_PROPERTY: &str = "00000000-0000-4000-8000-00000000000a";

/// ResMan's polled prospects (`event_type` `prospect`, built by
/// `resman::poll::delivery` as the poll and the pulled-delivery route do),
/// each mapped to a conversation and its user: the router applies them
/// with `resman::apply::prospect` (the `resman_prospects` mirror, the
/// conversation's status, the main person onto the user under the rules
/// of entity `user`, the link's snapshot, an audit row). A third change
/// status, three in four rename, a fifth of the users were changed here
/// too (both sides: the rules decide).
async fn apply_resman_on(
    bench: &BenchDb,
    events: usize,
    router: (usize, Option<usize>),
) -> anyhow::Result<Workload> {
    use serde_json::json;
    let c = db::connect(&bench.url).await?;
    checkpoint(&c).await;
    let n = events as i64;
    // Set up as ResMan's own writes (origin resman), so capture queues no
    // pushes for the setup.
    c.batch_execute(&format!(
        "SELECT set_config('syncbridge.origin', 'resman', false);
         INSERT INTO property (id, name) VALUES ('{LOCAL_PROPERTY}', 'Bench Court');
         INSERT INTO resman_integration (property_id, resman_property_id, api_credentials)
         VALUES ('{LOCAL_PROPERTY}', '{RESMAN_PROPERTY}', '{{\"account_id\": \"400\"}}');"
    ))
    .await?;
    c.execute(
        "INSERT INTO \"user\" (id, first_name, last_name, email, phone, resman_contact_id,
                              resman_sync_status, updated_at)
         SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid,
                'First' || i, 'Last' || i, 'p' || i || '@example.com',
                '+1415' || lpad(i::text, 7, '0'), 'PE' || i, 'synced', now() - interval '1 day'
         FROM generate_series(1, $1::bigint) AS i",
        &[&n],
    )
    .await?;
    c.execute(
        "INSERT INTO conversation (id, property_id, user_id, status, resman_lead_id,
                                  resman_sync_status, resman_status, updated_at)
         SELECT ('00000000-0000-4000-9000-' || lpad(i::text, 12, '0'))::uuid, $2::uuid,
                ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'open',
                'PR' || i, 'synced', 'Prospect', now() - interval '1 day'
         FROM generate_series(1, $1::bigint) AS i",
        &[&n, &LOCAL_PROPERTY.parse::<uuid::Uuid>()?],
    )
    .await?;
    c.batch_execute(
        "INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id, snapshot,
                                 remote_version, last_synced_at)
         SELECT 'conversation', c.id, 'resman', 'primary', c.resman_lead_id,
                jsonb_build_object('first_name', u.first_name, 'last_name', u.last_name,
                                   'email', u.email, 'phone', u.phone),
                now() - interval '1 day', now()
         FROM conversation c JOIN \"user\" u ON u.id = c.user_id;
         UPDATE \"user\" SET last_name = last_name || '-local'
         WHERE right(resman_contact_id, 1) IN ('1', '5');
         INSERT INTO sync_conflict_rules (entity_type, field, strategy) VALUES
             ('user', '*', 'merge'), ('user', 'email', 'prefer_local');
         SELECT set_config('syncbridge.origin', '', false);",
    )
    .await?;
    c.batch_execute("VACUUM ANALYZE").await?;
    let config = apply_config(
        &bench.url,
        router,
        &[("RESMAN_WEBHOOK_SECRET", RESMAN_SECRET)],
    )?;
    let registry = syncbridge::providers::Registry::from_config(&config);
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let deliveries = (1..=events)
        .map(|i| {
            let last = if i % 4 == 0 {
                format!("Last{i}")
            } else {
                format!("Remote{i}")
            };
            // The shape of the fixtures' polled prospect.
            let prospect = json!({
                "prospectId": format!("PR{i}"), "propertyId": RESMAN_PROPERTY,
                "mainPersonId": format!("PE{i}"), "lastModified": at,
                "prospectSourceId": "a1", "prospectSourceName": "Website",
                "status": if i % 3 == 0 { "Applicant" } else { "Prospect" },
                "firstContactMethod": "Email", "firstContactDate": at,
                "leasingAgent": {"personId": "e7", "firstName": "Sam", "lastName": "Lee"},
                "people": [{"personId": format!("PE{i}"), "firstName": format!("First{i}"),
                    "lastName": last, "email": format!("p{i}@example.com"),
                    "phone": format!("415{i:07}"), "phoneType": "Mobile",
                    "isMainContact": true, "isHeadOfHousehold": true, "isLeaseSigner": false,
                    "isGuarantor": false, "isDependent": false, "isExcludedFromOccupancy": false}]
            });
            syncbridge::providers::resman::poll::delivery(&prospect)
                .map_err(|e| anyhow::anyhow!("prospect {i}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (drain, mut problems) =
        store_and_drain(&c, bench, &registry, &config, events, deliveries).await?;
    expect_count(
        &c,
        "prospects mapped to their conversation",
        "SELECT count(*) FROM resman_prospects WHERE conversation_id IS NOT NULL",
        events,
        &mut problems,
    )
    .await?;
    Ok(Workload {
        label: "ResMan polled prospects (mirror, user rules + audit)",
        name: "resman",
        drain,
        router: (config.router.batch_size, config.router.workers),
        decisions: decisions(&c).await?,
        problems,
    })
}

fn conflict_bench(records: usize) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    use serde_json::{json, Map, Value};
    use syncbridge::conflict::{self, Rules, Side, Strategy};

    let fields = [
        "first_name",
        "last_name",
        "company",
        "email",
        "phone",
        "tags",
        "custom_fields",
    ];
    let rules = Rules::new([
        ("*".to_owned(), "*".to_owned(), Strategy::LastWriteWins),
        ("sync_contacts".to_owned(), "*".to_owned(), Strategy::Merge),
        (
            "sync_contacts".to_owned(),
            "email".to_owned(),
            Strategy::PreferLocal,
        ),
        (
            "sync_contacts".to_owned(),
            "tags".to_owned(),
            Strategy::PreferRemote,
        ),
    ]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let value = |f: &str, v: u32| -> Value {
        match f {
            "tags" => json!([v, v + 1, v + 2]),
            "custom_fields" => json!({"182": format!("c{v}"), "183": v}),
            _ => json!(format!("{f}-{v}")),
        }
    };
    // (snapshot, local, remote) per record.
    type Case = (Map<String, Value>, Map<String, Value>, Map<String, Value>);
    let cases: Vec<Case> = (0..records)
        .map(|_| {
            let mut base = Map::new();
            let mut local = Map::new();
            let mut remote = Map::new();
            for f in fields {
                let b = rng.random_range(0..1000u32);
                base.insert(f.into(), value(f, b));
                let l = if rng.random_bool(0.2) { b + 1 } else { b };
                let r = if rng.random_bool(0.3) { b + 2 } else { b };
                local.insert(f.into(), value(f, l));
                remote.insert(f.into(), value(f, r));
            }
            (base, local, remote)
        })
        .collect();
    let t_local = chrono::Utc::now();
    let t_remote = t_local + chrono::Duration::seconds(1);

    // Baseline: the cheapest detection there is, equality field by field.
    let mut base_ns = Vec::with_capacity(records);
    let mut differing = 0usize;
    for (_, l, r) in &cases {
        let t0 = Instant::now();
        let d = r.iter().filter(|(k, v)| l.get(*k) != Some(*v)).count();
        base_ns.push(t0.elapsed().as_nanos() as f64);
        differing += d;
    }
    let mut ns = Vec::with_capacity(records);
    let mut outcomes = std::collections::BTreeMap::<&'static str, usize>::new();
    for (b, l, r) in &cases {
        let t0 = Instant::now();
        let res = conflict::resolve(
            &rules,
            "sync_contacts",
            Some(b),
            Side {
                fields: l,
                changed_at: t_local,
            },
            Side {
                fields: r,
                changed_at: t_remote,
            },
        );
        ns.push(t0.elapsed().as_nanos() as f64);
        *outcomes.entry(res.outcome.decision()).or_default() += 1;
    }
    base_ns.sort_by(f64::total_cmp);
    ns.sort_by(f64::total_cmp);
    println!(
        "conflict detection, {records} records of {} fields ({differing} differing fields):",
        fields.len()
    );
    println!(
        "  baseline  equality check:  p50 {:>7.2} µs  p99 {:>7.2} µs  max {:>8.2} µs",
        pct(&base_ns, 0.5) / 1e3,
        pct(&base_ns, 0.99) / 1e3,
        base_ns.last().copied().unwrap_or_default() / 1e3
    );
    println!(
        "  conflict::resolve:         p50 {:>7.2} µs  p99 {:>7.2} µs  max {:>8.2} µs",
        pct(&ns, 0.5) / 1e3,
        pct(&ns, 0.99) / 1e3,
        ns.last().copied().unwrap_or_default() / 1e3
    );
    println!("  outcomes: {outcomes:?}");
    Ok(())
}

/// `teli`: the Teli pull end to end (list, detail, inbox, router apply,
/// audit) against the fake Teli API, alternated with the raw fetch of the
/// same calls from the same fake with nothing stored.
async fn teli_bench(calls: usize, rounds: usize, server: Option<String>) -> anyhow::Result<()> {
    use futures_util::stream::{self, StreamExt};
    use serde_json::json;
    use syncbridge::providers::teli::api::{Pager, TeliApi};
    use syncbridge::providers::teli::config::TeliConfig;
    use syncbridge::providers::teli::sync::DETAILS_IN_FLIGHT;

    let fake = fake_teli::FakeTeli::start().await;
    let agents = ["agent_bench_a", "agent_bench_b"];
    let t0 = 1_741_968_000_000i64;
    for n in 0..calls {
        fake.add(fake_teli::make_call(
            &format!("call_{n:06}"),
            agents[n % 2],
            "inbound",
            Some(&format!("+1415{:07}", n % 2000)),
            Some("+14155550100"),
            t0 + n as i64 * 1000,
            json!({"customer_name": format!("Caller {}", n % 2000)}),
        ));
    }
    let settings = |db: &str| {
        Settings::from_pairs([
            ("DATABASE_URL", db),
            ("TELI_API_KEY", fake_teli::API_KEY),
            ("TELI_API_URL", fake.url.as_str()),
            ("TELI_ORGANIZATION_ID", fake_teli::ORG),
            ("TELI_API_RATE", "1000000"),
        ])
    };
    println!("teli pull: {calls} calls through the fake Teli API, {rounds} rounds alternated");
    let mut raw = Vec::new();
    let mut e2e = Vec::new();
    let mut again = Vec::new();
    for round in 1..=rounds {
        // Baseline: every page and every detail, nothing stored.
        let config = TeliConfig::from_settings(&settings("postgres://unused"))?;
        let api = TeliApi::new(&config, Duration::from_secs(10)).context("the Teli API")?;
        let started = Instant::now();
        // As the pull fetches them: DETAILS_IN_FLIGHT at a time.
        let mut pages = Pager::new(&api, None);
        let mut fetched = 0;
        while let Some(page) = pages.next().await {
            let ids: Vec<String> = page?.calls.into_iter().map(|c| c.call_id).collect();
            let api = &api;
            let bodies: Vec<_> = stream::iter(ids)
                .map(|id| async move { api.detail(&id).await })
                .buffered(DETAILS_IN_FLIGHT)
                .collect()
                .await;
            for b in bodies {
                b?;
                fetched += 1;
            }
        }
        let took = started.elapsed();
        anyhow::ensure!(fetched == calls, "the baseline fetched {fetched} calls");
        raw.push(calls as f64 / took.as_secs_f64());

        // End to end into a fresh database, then again (all duplicates).
        let bench = BenchDb::create(server.clone()).await?;
        let result = async {
            let config = Config::from_settings(&settings(&bench.url))?;
            let pool = db::pool(&bench.url, POOL_SIZE)?;
            pool.get()
                .await?
                .batch_execute(
                    "INSERT INTO businesses (name, teli_agent_id)
                     VALUES ('Bench A', 'agent_bench_a'), ('Bench B', 'agent_bench_b')",
                )
                .await?;
            let registry = syncbridge::providers::Registry::from_config(&config);
            let runs = syncbridge::pull::Runs::default();
            let mut rates = Vec::new();
            for _ in 0..2 {
                let started = Instant::now();
                let (progress, ok) = syncbridge::pull::run(
                    &pool,
                    &registry,
                    &config.router,
                    &runs,
                    syncbridge::domain::ProviderName::Teli,
                    Default::default(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                let took = started.elapsed();
                anyhow::ensure!(ok, "the pull reported errors: {:?}", progress.summary);
                rates.push((calls as f64 / took.as_secs_f64(), progress.summary));
            }
            let stored: i64 = pool
                .get()
                .await?
                .query_one("SELECT count(*) FROM messages", &[])
                .await?
                .get(0);
            anyhow::ensure!(stored as usize == calls, "{stored} messages stored");
            Ok::<_, anyhow::Error>(rates)
        }
        .await;
        bench.drop_db().await?;
        let mut rates = result?.into_iter();
        let (first, summary) = rates.next().context("a first run")?;
        let (second, dup) = rates.next().context("a second run")?;
        anyhow::ensure!(
            summary.as_ref().and_then(|s| s["syncedCalls"].as_u64()) == Some(calls as u64)
                && dup.as_ref().and_then(|s| s["duplicateCalls"].as_u64()) == Some(calls as u64),
            "unexpected summaries: {summary:?} then {dup:?}"
        );
        e2e.push(first);
        again.push(second);
        println!(
            "  round {round}: raw fetch {:>8.0} calls/s | pull, stored {:>8.0} calls/s | pull again, all duplicates {:>8.0} calls/s",
            raw[round - 1], first, second
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "mean: raw fetch {:.0} calls/s, stored {:.0} calls/s (ratio {:.2}), again {:.0} calls/s",
        mean(&raw),
        mean(&e2e),
        mean(&e2e) / mean(&raw),
        mean(&again)
    );
    Ok(())
}

#[cfg(not(feature = "bench-d1"))]
async fn d1_bench(_: usize, _: usize, _: u32, _: Option<String>) -> anyhow::Result<()> {
    bail!("the D1 benchmark serves the tests' fake D1 over SQLite: build with --features bench-d1")
}

/// `d1`: prospect changes through capture → outbox → the dispatcher's
/// batch push → the fake D1, alternated with the same rows written straight
/// to the fake by the same writer.
#[cfg(feature = "bench-d1")]
async fn d1_bench(
    changes: usize,
    rounds: usize,
    rate: u32,
    server: Option<String>,
) -> anyhow::Result<()> {
    use syncbridge::providers::d1::api::D1Api;
    use syncbridge::providers::d1::config::D1Config;
    use syncbridge::providers::d1::push::{self, Columns, Write};

    const SCHEMA: &str = "
        CREATE TABLE prospects (id TEXT PRIMARY KEY, name TEXT, city TEXT, country TEXT,
            contact_name TEXT, contact_email TEXT, contact_title TEXT, phone TEXT, website TEXT,
            linkedin_url TEXT, stage TEXT, tier TEXT, score INTEGER, lead_source TEXT,
            email_bounced INTEGER DEFAULT 0, archived INTEGER DEFAULT 0, created_at TEXT,
            updated_at TEXT);
        CREATE TABLE campaigns (id TEXT PRIMARY KEY);
        CREATE TABLE mailboxes (id TEXT PRIMARY KEY);";
    let settings = |db: &str, url: &str| {
        Settings::from_pairs([
            ("DATABASE_URL", db),
            ("D1_API_URL", url),
            ("D1_ACCOUNT_ID", fake_d1::ACCOUNT),
            ("D1_DATABASE_ID", fake_d1::DATABASE),
            ("D1_API_TOKEN", fake_d1::TOKEN),
            ("D1_API_RATE_PER_MIN", &rate.to_string()),
            ("SYNCBRIDGE_D1_PULL_INTERVAL_S", "0"),
            ("SYNCBRIDGE_D1_PUSH_INTERVAL_S", "0"),
            ("SYNCBRIDGE_INTEGRITY_INTERVAL_S", "0"),
        ])
    };
    println!(
        "d1 push: {changes} prospect changes, the service paced at {rate} requests/min, {rounds} rounds alternated"
    );
    let row = |i: usize, score: usize| -> serde_json::Map<String, serde_json::Value> {
        let v = serde_json::json!({
            "id": format!("00000000-0000-4000-8000-{i:012}"), "name": format!("Prospect {i}"),
            "city": "Austin", "country": "US", "contact_name": format!("Contact {i}"),
            "contact_email": format!("c{i}@example.com"), "contact_title": "Owner",
            "phone": format!("+1512555{:04}", i % 10_000), "website": "https://example.com",
            "linkedin_url": null, "stage": "new", "tier": "b", "score": score,
            "lead_source": "bench", "email_bounced": i % 2 == 0, "archived": false,
            "created_at": "2026-12-02T04:00:00.123456+00:00",
            "updated_at": "2026-12-02T04:00:00.123456+00:00"});
        v.as_object().cloned().unwrap_or_default()
    };
    let mut bare = Vec::new();
    let mut piped = Vec::new();
    for round in 1..=rounds {
        // Baseline: the same rows straight to the fake, unpaced.
        let fake = fake_d1::FakeD1::start(SCHEMA).await;
        let mut config = D1Config::from_settings(&settings("postgres://unused", &fake.url))?;
        config.rate_per_min = u32::MAX;
        let api = D1Api::new(&config, Duration::from_secs(30)).context("the D1 API")?;
        let writes: Vec<Write> = (0..changes)
            .map(|i| Write::Upsert {
                table: "prospects".into(),
                row: row(i, 1),
            })
            .collect();
        let started = Instant::now();
        let (results, sent) = push::write(&api, &Columns::default(), &writes).await;
        let took = started.elapsed();
        anyhow::ensure!(
            results.iter().all(|r| r.is_ok()),
            "the baseline's writes failed"
        );
        bare.push((changes as f64 / took.as_secs_f64(), sent.requests));

        // The service: capture, outbox, dispatcher, batch push.
        let fake = fake_d1::FakeD1::start(SCHEMA).await;
        let bench = BenchDb::create(server.clone()).await?;
        let result = async {
            let config = Config::from_settings(&settings(&bench.url, &fake.url))?;
            let pool = db::pool(&bench.url, POOL_SIZE)?;
            // The rows exist (without capture); the changes are measured.
            pool.get()
                .await?
                .batch_execute(&format!(
                    "SET syncbridge.origin = 'd1';
                     INSERT INTO prospects (id, name, city, country, contact_name, contact_email,
                         contact_title, phone, website, stage, tier, score, lead_source,
                         email_bounced, archived)
                     SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid,
                            'Prospect ' || i, 'Austin', 'US', 'Contact ' || i,
                            'c' || i || '@example.com', 'Owner', '+1512555' || lpad((i % 10000)::text, 4, '0'),
                            'https://example.com', 'new', 'b', 0, 'bench', i % 2 = 0, false
                     FROM generate_series(0, {}) AS i;
                     RESET syncbridge.origin;",
                    changes - 1
                ))
                .await?;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let app = App::start(config, pool.clone(), listener).await?;
            let before = fake.requests().len();
            let started = Instant::now();
            let per = changes.div_ceil(4);
            let mut writers = Vec::new();
            for w in 0..4 {
                let pool = pool.clone();
                writers.push(tokio::spawn(async move {
                    let c = pool.get().await?;
                    let (lo, hi) = (w * per, ((w + 1) * per).min(changes));
                    let mut at = lo;
                    while at < hi {
                        let end = (at + 100).min(hi);
                        c.execute(
                            "UPDATE prospects SET score = score + 1
                             WHERE id IN (SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid
                                          FROM generate_series($1::int, $2::int) AS i)",
                            &[&(at as i32), &(end as i32 - 1)],
                        )
                        .await?;
                        at = end;
                    }
                    Ok::<_, anyhow::Error>(())
                }));
            }
            for w in writers {
                w.await??;
            }
            let committed = started.elapsed();
            let c = pool.get().await?;
            loop {
                let left: i64 = c
                    .query_one(
                        "SELECT count(*) FROM sync_outbox WHERE provider = 'd1' AND status <> 'done'",
                        &[],
                    )
                    .await?
                    .get(0);
                if left == 0 {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(600),
                    "{left} changes still not pushed after 10 minutes"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let took = started.elapsed();
            app.shutdown().await;
            let in_d1 = fake.rows("SELECT count(*) AS n FROM prospects WHERE score = 1")[0]["n"]
                .as_i64()
                .unwrap_or(0);
            anyhow::ensure!(in_d1 as usize == changes, "D1 has {in_d1} of the changes");
            let requests = fake.requests()[before..]
                .iter()
                .filter(|r| r.statements.iter().any(|s| s.starts_with("INSERT")))
                .count();
            Ok::<_, anyhow::Error>((changes as f64 / took.as_secs_f64(), requests, committed, took))
        }
        .await;
        bench.drop_db().await?;
        let (rate_e2e, requests, committed, took) = result?;
        piped.push((rate_e2e, requests as u64));
        println!(
            "  round {round}: bare D1 fake {:>8.0} rows/s in {} requests | syncbridge {:>8.0} rows/s in {} write requests (committed in {:.2} s, in D1 after {:.2} s)",
            bare[round - 1].0,
            bare[round - 1].1,
            rate_e2e,
            requests,
            committed.as_secs_f64(),
            took.as_secs_f64()
        );
    }
    let mean = |v: &[(f64, u64)]| v.iter().map(|x| x.0).sum::<f64>() / v.len() as f64;
    let floor = 60.0 / rate as f64;
    println!(
        "mean: bare {:.0} rows/s, syncbridge {:.0} rows/s (ratio {:.2}); the pacing alone allows one request every {:.2} s",
        mean(&bare),
        mean(&piped),
        mean(&piped) / mean(&bare),
        floor
    );
    Ok(())
}
