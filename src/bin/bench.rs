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
    /// Capture overhead: the application's single-row UPDATE throughput on
    /// `clients` (pgbench, 8 clients) with the capture trigger vs without.
    Capture {
        /// Seconds per pgbench run.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
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
        #[arg(long)]
        openphone_api_url: Option<String>,
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
            Cmd::Push {
                rate,
                seconds,
                server,
            } => push(rate, seconds, server).await,
            Cmd::Capture { seconds, server } => capture(seconds, server).await,
            Cmd::Server {
                database,
                discard,
                openphone_api_url,
            } => server(database, discard, openphone_api_url).await,
        }
    })
}

async fn server(database: String, discard: bool, api: Option<String>) -> anyhow::Result<()> {
    let mut settings = Settings::from_pairs([
        ("DATABASE_URL", database.as_str()),
        ("OPENPHONE_WEBHOOK_KEY", KEY),
    ]);
    if let Some(url) = api {
        settings.set("OPENPHONE_API_URL", url);
        settings.set("OPENPHONE_API_KEY", "bench-key");
        // The fake has no 10 req/s limit; the benchmark measures our path.
        settings.set("OPENPHONE_API_RATE", "1000000");
    }
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
    spawn_server_with(database, discard, None).await
}

async fn spawn_server_with(
    database: &str,
    discard: bool,
    api: Option<&str>,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("server").arg("--database").arg(database);
    if discard {
        cmd.arg("--discard");
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
    bench.drop_db().await?;
    result
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
        let child = spawn_server_with(&bench.url, false, Some(&api)).await?;
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
        let child = spawn_server_with(&bench.url, false, Some(&api)).await?;
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
