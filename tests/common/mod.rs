//! Test harness: `TestApp::spawn()` starts the real service on a loopback
//! port against a fresh database cloned from a migrated template, with the
//! fixtures' test keys configured. Each test gets its own database, so tests
//! run in parallel; the database is dropped when the test's app is.
//!
//! The Postgres server: `SYNCBRIDGE_TEST_DATABASE_URL` if set, else the one
//! at 127.0.0.1:5432 (user postgres) if it answers, else a private cluster
//! started from the installed binaries under `target/test-postgres`.

#![allow(dead_code)]

pub mod fake_d1;
pub mod fake_keap;
pub mod fake_openphone;
pub mod fake_resman;
pub mod fake_teli;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use syncbridge::app::{App, POOL_SIZE};
use syncbridge::config::{Config, Settings};
use syncbridge::db::{self, embedded, migrate};
use syncbridge::ops::fixtures::{self, Fixture};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;

pub const OPENPHONE_WEBHOOK_KEY: &str = "bG9jYWwtdGVzdC1vcGVucGhvbmUtc2lnbmluZy1rZXktMzJiIQ==";
pub const OPENPHONE_WEBHOOK_SECRET: &str =
    "whsec_bG9jYWwtcXVvLWJldGEtdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OWFi";
pub const KEAP_WEBHOOK_TOKEN: &str = "test-keap-token-3f0c8e1a9b7d4c2e5a6b";
pub const RESMAN_WEBHOOK_SECRET: &str = "whsec_bG9jYWwtcmVzbWFuLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODk=";

/// The server tests create their databases on (a URL to its `postgres`
/// database), resolved once per test binary.
pub async fn server_url() -> &'static str {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("SYNCBRIDGE_TEST_DATABASE_URL") {
            return url;
        }
        let local = "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), db::connect(&local)).await {
            return local;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-postgres");
        let pg = embedded::EmbeddedPostgres::start(embedded::EmbeddedOptions {
            data_dir: dir,
            port: None,
            database: "postgres".into(),
        })
        .await
        .expect("no Postgres reachable and the embedded cluster failed to start");
        let url = pg.url();
        // Left running for the other test binaries; the next run reuses it.
        std::mem::forget(pg);
        url
    })
    .await
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn with_database(url: &str, name: &str) -> String {
    match url.rfind('/') {
        Some(i) => format!("{}/{}", &url[..i], name),
        None => format!("{url}/{name}"),
    }
}

fn quote(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// The migrated template for this build's migrations, created once.
async fn template() -> &'static str {
    static NAME: OnceCell<String> = OnceCell::const_new();
    NAME.get_or_init(|| async {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for m in migrate::MIGRATIONS {
            h.update(m.up.as_bytes());
            h.update(m.down.as_bytes());
        }
        let hash: String = h
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("syncbridge_tpl_{hash}");
        let admin = db::connect(server_url().await)
            .await
            .expect("connect to test server");
        // One creator across parallel test binaries.
        admin
            .execute("SELECT pg_advisory_lock(7261584)", &[])
            .await
            .unwrap();
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .unwrap()
            .is_some();
        if !exists {
            let building = format!("{name}_building");
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote(&building)
                ))
                .await
                .unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {}", quote(&building)))
                .await
                .unwrap();
            {
                let mut c = db::connect(&with_database(server_url().await, &building))
                    .await
                    .unwrap();
                migrate::up(&mut c)
                    .await
                    .expect("migrations apply to a fresh database");
            }
            // Old templates of other migration sets are no longer needed;
            // the two newest stay, so a run of another checkout (a worktree,
            // another branch) cloning from its own at this moment goes on.
            let stale = admin
                .query(
                    "SELECT datname FROM pg_database
                     WHERE datname LIKE 'syncbridge_tpl_%' AND datname NOT LIKE '%_building'
                     ORDER BY oid DESC OFFSET 2",
                    &[],
                )
                .await
                .unwrap();
            for row in stale {
                let old: String = row.get(0);
                let _ = admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote(&old)
                    ))
                    .await;
            }
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote(&building),
                    quote(&name)
                ))
                .await
                .unwrap();
        }
        admin
            .execute("SELECT pg_advisory_unlock(7261584)", &[])
            .await
            .unwrap();
        name
    })
    .await
}

/// A fresh, migrated database, dropped when this is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let tpl = template().await;
        let name = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
        let admin = db::connect(server_url().await).await.unwrap();
        // CREATE DATABASE … TEMPLATE fails while another clone is being
        // made from the same template; retry briefly.
        let mut tries = 0;
        loop {
            match admin
                .batch_execute(&format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    quote(&name),
                    quote(tpl)
                ))
                .await
            {
                Ok(()) => break,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50 + tries * 10)).await;
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        TestDb {
            url: with_database(server_url().await, &name),
            admin_url: server_url().await.to_owned(),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        db::connect(&self.url).await.unwrap()
    }

    /// A placeholder owning no database (dropping it drops nothing).
    fn detached() -> TestDb {
        TestDb {
            name: String::new(),
            url: String::new(),
            admin_url: String::new(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let name = self.name.clone();
        let url = self.admin_url.clone();
        // Drop needs async I/O; do it on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = db::connect(&url).await {
                    let _ = admin
                        .batch_execute(&format!(
                            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                            quote(&name)
                        ))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The settings every test app starts with: the fixtures' keys, and the
/// timestamp check off so recorded fixtures verify as recorded.
pub fn test_settings(db_url: &str) -> Settings {
    Settings::from_pairs([
        ("DATABASE_URL", db_url),
        ("OPENPHONE_WEBHOOK_KEY", OPENPHONE_WEBHOOK_KEY),
        ("OPENPHONE_WEBHOOK_SECRET", OPENPHONE_WEBHOOK_SECRET),
        ("KEAP_WEBHOOK_TOKEN", KEAP_WEBHOOK_TOKEN),
        ("RESMAN_WEBHOOK_SECRET", RESMAN_WEBHOOK_SECRET),
        ("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", "0"),
        ("SYNCBRIDGE_RETRY_BASE_MS", "20"),
        // Scheduled only where a test asks for them.
        ("SYNCBRIDGE_INTEGRITY_INTERVAL_S", "0"),
        ("SYNCBRIDGE_D1_PUSH_INTERVAL_S", "0"),
    ])
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub config: Config,
    settings: Settings,
    pub http: reqwest::Client,
    app: Option<App>,
    // Last: dropped after the app has stopped using it.
    pub db: TestDb,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// Starts the service with the test settings, adjusted by `tweak`.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::spawn_on(TestDb::create().await, tweak).await
    }

    /// Starts the service on an existing test database.
    pub async fn spawn_on(db: TestDb, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = test_settings(&db.url);
        tweak(&mut settings);
        TestApp::start(db, settings).await
    }

    async fn start(db: TestDb, settings: Settings) -> TestApp {
        let config = Config::from_settings(&settings).expect("test configuration is valid");
        let pool = db::pool(&db.url, POOL_SIZE).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App::start(config.clone(), pool, listener).await.unwrap();
        TestApp {
            addr: app.addr(),
            config,
            settings,
            http: reqwest::Client::new(),
            app: Some(app),
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The body of an unauthenticated `GET path` (`/metrics`, `/`), as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The running service's state (its pool, its providers).
    pub fn state(&self) -> &syncbridge::http::AppState {
        &self.app.as_ref().expect("the app is running").state
    }

    /// An enabled provider of the running service.
    pub fn provider(
        &self,
        name: syncbridge::domain::ProviderName,
    ) -> std::sync::Arc<dyn syncbridge::providers::Provider> {
        self.state()
            .providers
            .get(name)
            .expect("the provider is enabled")
            .clone()
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.db.client().await
    }

    /// Posts raw bytes with the given headers.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let json = resp.json().await.unwrap_or(Value::Null);
        (status, json)
    }

    /// Posts a shipped fixture (`fixtures/<name>`) exactly as recorded.
    pub async fn post_fixture(&self, name: &str) -> (StatusCode, Value) {
        let f = fixture(name);
        let path = f
            .path
            .replace(fixtures::TOKEN_PLACEHOLDER, KEAP_WEBHOOK_TOKEN);
        let headers: Vec<(&str, String)> = f
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.post(&path, &headers, f.body_bytes().unwrap()).await
    }

    /// Waits until the router has nothing due (no pending event of a
    /// provider it routes is due now), twice in a row 30 ms apart so an
    /// in-flight batch has committed.
    pub async fn settle(&self) {
        let c = self.client().await;
        let routed: Vec<&str> = syncbridge::providers::Registry::from_config(&self.config)
            .routed()
            .iter()
            .map(|p| p.name().as_str())
            .collect();
        let mut quiet = 0;
        for _ in 0..400 {
            let due: i64 = c
                .query_one(
                    "SELECT count(*) FROM webhook_events
                     WHERE status = 'pending' AND provider = ANY($1) AND next_attempt_at <= now()",
                    &[&routed],
                )
                .await
                .unwrap()
                .get(0);
            quiet = if due == 0 { quiet + 1 } else { 0 };
            if quiet == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(if due == 0 { 30 } else { 25 })).await;
        }
        panic!("the router did not settle within 10s");
    }

    /// Replays fixtures to this app as `syncbridge replay` does (the admin
    /// token for pulled providers' `/api/…` paths): each one's answer.
    pub async fn replay(
        &self,
        fixtures: &[(PathBuf, Fixture)],
    ) -> Vec<syncbridge::ops::replay::ReplayResult> {
        let registry = syncbridge::providers::Registry::from_config(&self.config);
        syncbridge::ops::replay::Replayer {
            target: self.url(""),
            providers: &registry,
            resign: false,
            admin_token: self.config.admin_token.clone(),
            progress: None,
        }
        .replay(fixtures)
        .await
        .expect("the fixtures replay")
    }

    /// Stops the service (as a deploy would) and starts a new one on the
    /// same database with the same settings, on a new port.
    pub async fn restart(mut self) -> TestApp {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        let settings = self.settings.clone();
        // Moving the database out of `self` keeps it from being dropped.
        let db = std::mem::replace(&mut self.db, TestDb::detached());
        TestApp::start(db, settings).await
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

/// Drains every due event of the database at `db_url` with a router of one worker claiming
/// `batch` events a transaction (1: each event applied on its own, the
/// one-at-a-time path); what it did.
pub async fn drain_with_batch(db_url: &str, batch: &str) -> syncbridge::router::PassStats {
    let mut settings = test_settings(db_url);
    settings.set("SYNCBRIDGE_ROUTER_WORKERS", "1");
    settings.set("SYNCBRIDGE_ROUTER_BATCH", batch);
    let config = syncbridge::config::Config::from_settings(&settings).unwrap();
    let pool = syncbridge::db::pool(db_url, 4).unwrap();
    let registry = syncbridge::providers::Registry::from_config(&config);
    let router = syncbridge::router::Router::new(pool, &registry, config.router.clone());
    router
        .drain_all(&tokio_util::sync::CancellationToken::new())
        .await
        .unwrap()
}

/// The first column of each row of `sql`, as text.
pub async fn text_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

pub fn fixture(name: &str) -> Fixture {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Seeds the clients the fixtures talk about, as they were before the
/// recorded events (updated 2025-03-01).
pub async fn seed_clients(c: &tokio_postgres::Client) {
    c.batch_execute(
        "INSERT INTO clients (id, first_name, last_name, email, phone, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-00000000da7a', 'Dana', 'Ortiz', 'dana@ortiz.example',
                 '(415) 555-0142', '2025-03-01', '2025-03-01');
         INSERT INTO clients (id, first_name, last_name, phone, openphone_contact_id, created_at, updated_at)
         VALUES ('00000000-0000-4000-8000-0000000001ee', 'Lee', 'Park', '212.555.0187',
                 '664d0db69fcac7cf2e6ec002', '2025-03-01', '2025-03-01');",
    )
    .await
    .unwrap();
}

pub const DANA: &str = "00000000-0000-4000-8000-00000000da7a";
pub const LEE: &str = "00000000-0000-4000-8000-0000000001ee";

/// Signs an OpenPhone legacy delivery with the test key at `ts_millis`.
pub fn openphone_headers(body: &[u8], ts_millis: i64) -> Vec<(&'static str, String)> {
    use syncbridge::providers::signature::{sign_openphone_legacy, HmacKey};
    let key = HmacKey::from_base64(OPENPHONE_WEBHOOK_KEY).unwrap();
    vec![
        ("content-type", "application/json".into()),
        (
            "openphone-signature",
            sign_openphone_legacy(&key, ts_millis, body),
        ),
    ]
}

/// A compact legacy `message.received` envelope.
pub fn message_event(
    event_id: &str,
    message_id: &str,
    from: &str,
    text: &str,
    at: &str,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": event_id, "object": "event", "apiVersion": "v4", "createdAt": at,
        "type": "message.received",
        "data": {"object": {"object": "message", "id": message_id, "direction": "incoming",
            "from": from, "to": "+14155550199", "text": text, "status": "received",
            "createdAt": at, "userId": "USa1B2c3D4", "phoneNumberId": "PNq8Zt3kLm"}}
    }))
    .unwrap()
}

/// `syncbridge serve`, the real binary, as a child process on a free
/// loopback port with only the given environment (and `PATH`); killed when
/// dropped.
pub struct ServeProcess {
    child: std::process::Child,
    pub base: String,
}

impl ServeProcess {
    pub fn start(db_url: &str, env: &[(&str, &str)]) -> ServeProcess {
        let port = free_port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_syncbridge"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("SYNCBRIDGE_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        ServeProcess {
            child: cmd.spawn().expect("syncbridge serve starts"),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `path` answers `want` (30 s at most).
    pub async fn answers(&self, path: &str, want: StatusCode) {
        let url = self.url(path);
        for _ in 0..600 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("serve: {path} did not answer {want}");
    }

    /// SIGKILL: no graceful shutdown, no chance to commit or roll back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
