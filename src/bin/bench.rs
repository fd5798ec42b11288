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
    /// Internal: the server process the ingest benchmark drives.
    #[command(hide = true)]
    Server {
        #[arg(long)]
        database: String,
        #[arg(long)]
        discard: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
            Cmd::Server { database, discard } => server(database, discard).await,
        }
    })
}

async fn server(database: String, discard: bool) -> anyhow::Result<()> {
    let settings = Settings::from_pairs([
        ("DATABASE_URL", database.as_str()),
        ("OPENPHONE_WEBHOOK_KEY", KEY),
    ]);
    let config = Config::from_settings(&settings)?;
    let pool = db::pool(&database, POOL_SIZE)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mode = if discard {
        InboxMode::Discard
    } else {
        InboxMode::Postgres
    };
    let app = App::start_with(config, pool, listener, mode).await?;
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

async fn spawn_server(database: &str, discard: bool) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("server").arg("--database").arg(database);
    if discard {
        cmd.arg("--discard");
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

async fn load(
    addr: &str,
    senders: usize,
    seconds: u64,
    run_id: &str,
    pid: u32,
) -> anyhow::Result<Run> {
    let key = HmacKey::from_base64(KEY).context("bench key")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(senders)
        .http1_only()
        .build()?;
    let url = format!("http://{addr}/webhooks/openphone");
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
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
        peak = peak.max(rss_kib(pid).0);
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let (rss, hwm) = rss_kib(pid);
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

async fn ingest(senders: usize, seconds: u64, server: Option<String>) -> anyhow::Result<()> {
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
    let db_url = match admin_url.rfind('/') {
        Some(i) => format!("{}/{}", &admin_url[..i], name),
        None => bail!("server URL has no database part"),
    };
    let result = async {
        migrate::up(&mut db::connect(&db_url).await?).await?;
        let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
        let sync: String = admin.query_one("SHOW synchronous_commit", &[]).await?.get(0);
        let fsync: String = admin.query_one("SHOW fsync", &[]).await?.get(0);
        println!(
            "ingest benchmark: {senders} senders, {seconds}s per mode, {} cores, PostgreSQL {version} (fsync={fsync}, synchronous_commit={sync})",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );

        let base = spawn_server(&db_url, true).await?;
        let pid = base.proc.id().unwrap_or(0);
        let b = load(&base.addr, senders, seconds, "b", pid).await?;
        drop(base);

        let real = spawn_server(&db_url, false).await?;
        let pid = real.proc.id().unwrap_or(0);
        let r = load(&real.addr, senders, seconds, "r", pid).await?;
        let metrics = reqwest::get(format!("http://{}/metrics", real.addr)).await?.text().await?;
        drop(real);

        let c = db::connect(&db_url).await?;
        let stored: i64 = c
            .query_one("SELECT count(*) FROM webhook_events WHERE event_id LIKE 'EVr%'", &[])
            .await?
            .get(0);
        let metric = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let batch = metric("syncbridge_inbox_batch_size_sum") / metric("syncbridge_inbox_batch_size_count").max(1.0);

        println!("{:<34} {:>10} {:>9} {:>9} {:>8} {:>9}", "mode", "acks/s", "p50 ms", "p99 ms", "errors", "RSS MiB");
        for (label, x) in [("baseline: verify, no store", &b), ("syncbridge: verify + durable inbox", &r)] {
            println!(
                "{:<34} {:>10.0} {:>9.2} {:>9.2} {:>8} {:>9.1}",
                label, x.acks_per_s, x.p50_ms, x.p99_ms, x.errors, x.rss_mib
            );
        }
        println!("ratio (durable / baseline): {:.2}", r.acks_per_s / b.acks_per_s.max(1.0));
        println!("server peak RSS (VmHWM): baseline {:.1} MiB, durable {:.1} MiB", b.peak_mib, r.peak_mib);
        println!("mean deliveries per inbox commit: {batch:.1}");
        println!(
            "durability check: {} acknowledged in the window, {} stored in total (>= acknowledged)",
            r.acked, stored
        );
        if (stored as u64) < r.acked {
            bail!("acknowledged deliveries are missing from the database");
        }
        anyhow::Ok(())
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .await?;
    result
}
