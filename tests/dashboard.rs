//! The operator dashboard (SPEC §5.4) in a real headless Chromium, driven
//! through chromedriver (WebDriver, `fantoccini`), against the real
//! `syncbridge serve` binary, a fresh database and the fake providers.
//! Every page state the tests reach is saved as a screenshot under
//! `target/tmp/dashboard/` for a reviewer to look at.
//!
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` (or `CHROMIUM`
//! / `CHROMEDRIVER`) the browser tests print why and pass; with
//! `SYNCBRIDGE_REQUIRE_BROWSER=1` (CI) they fail instead.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_d1::{self, FakeD1};
use common::fake_openphone::{self, FakeOpenPhone};
use common::fake_teli::{self, make_call, FakeTeli};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const ADMIN: &str = "dashboard-admin-token-7c1e";
/// The conflicting last name a webhook brings: markup, to be shown as text.
const REMOTE_NAME: &str = "Remote <img src=x onerror=\"window.pwned=1\">";
/// How long any one thing may take to show up (a generous deadline, not
/// a measurement).
const WAIT: Duration = Duration::from_secs(60);

/// Evaluates `$body` (an `Option`) until it is `Some`, or panics naming
/// `$what` after [`WAIT`].
macro_rules! eventually {
    ($what:expr, $body:expr) => {{
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = $body {
                break v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {}", $what);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

// ---- the browser ---------------------------------------------------------

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
}

fn find_binary(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    path.is_file().then_some(path)
}

/// A laptop-sized WebDriver session, and on demand a second one emulating
/// a phone, both from one chromedriver.
struct Browser {
    page: Page,
    driver: Driver,
}

/// Chromedriver, in a process group of its own with the Chromium
/// processes it starts: dropping it kills the group, whatever state the
/// test ended in, and removes the profiles.
struct Driver {
    child: Child,
    port: u16,
    chromium: PathBuf,
    profiles: Vec<PathBuf>,
}

/// One WebDriver session.
struct Page {
    client: Client,
    /// Grow the window to the page's height for a screenshot (not under
    /// phone emulation, whose viewport is fixed).
    fit: bool,
}

impl std::ops::Deref for Browser {
    type Target = Page;
    fn deref(&self) -> &Page {
        &self.page
    }
}

const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

impl Browser {
    /// `None` (after saying why) when no browser is installed and CI does
    /// not require one.
    async fn start() -> Option<Browser> {
        let chromium = find_binary("CHROMIUM", "/usr/bin/chromium");
        let driver = find_binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let (Some(chromium), Some(driver_path)) = (chromium, driver) else {
            let why = "no chromium and chromedriver at /usr/bin (or at $CHROMIUM, $CHROMEDRIVER): apt-get install chromium chromium-driver";
            if std::env::var("SYNCBRIDGE_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                panic!("SYNCBRIDGE_REQUIRE_BROWSER=1 but {why}");
            }
            eprintln!("skipping the dashboard browser test: {why}");
            return None;
        };
        // Chromedriver takes no port 0: a free port is picked, and picked
        // again if another test's server took it first (chromedriver then
        // exits, or something else answers its status).
        let mut driver = None;
        for _ in 0..5 {
            if let Some(d) = Driver::start(&driver_path, &chromium).await {
                driver = Some(d);
                break;
            }
        }
        let mut driver = driver.expect("chromedriver starts on a free port");
        std::fs::create_dir_all(screenshot_dir()).expect("the screenshot directory");
        let page = driver.session(None).await;
        Some(Browser { page, driver })
    }

    /// A second session, a phone's screen (390 CSS pixels wide; tall, so
    /// one screenshot shows most of the page).
    async fn phone(&mut self) -> Page {
        self.driver
            .session(Some(json!({"width": 390, "height": 2400, "pixelRatio": 1})))
            .await
    }

    /// Ends the session (Chromium quits), then the drop stops chromedriver.
    async fn quit(self) {
        let _ = self.page.client.clone().close().await;
    }
}

impl Driver {
    /// Chromedriver on a port that was free; `None` when the port turned
    /// out to be someone else's.
    async fn start(path: &std::path::Path, chromium: &std::path::Path) -> Option<Driver> {
        let port = free_port();
        let mut cmd = Command::new(path);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // Dropped (the group killed) on every way out but success.
        let mut driver = Driver {
            child: cmd.spawn().expect("chromedriver starts"),
            port,
            chromium: chromium.to_owned(),
            profiles: Vec::new(),
        };
        let status = format!("http://127.0.0.1:{port}/status");
        let ready = eventually!("chromedriver to answer", {
            if let Ok(Some(_)) = driver.child.try_wait() {
                return None;
            }
            match reqwest::get(&status).await {
                Ok(r) => Some(r.json::<Value>().await.unwrap_or(Value::Null)),
                Err(_) => None,
            }
        });
        // Ours only if it is still running and answers as chromedriver.
        let ours = matches!(driver.child.try_wait(), Ok(None)) && ready["value"]["ready"] == true;
        ours.then_some(driver)
    }

    /// A new session on a fresh profile; `phone`: emulating that screen.
    async fn session(&mut self, phone: Option<Value>) -> Page {
        let profile = std::env::temp_dir().join(format!("sb-chromium-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).expect("a profile directory");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        self.profiles.push(profile);
        let mut options = json!({"binary": self.chromium});
        match &phone {
            Some(metrics) => options["mobileEmulation"] = json!({"deviceMetrics": metrics}),
            None => args.push("--window-size=1280,900".into()),
        }
        options["args"] = json!(args);
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session in Chromium");
        Page {
            client,
            fit: phone.is_none(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: a plain kill(2) of the group this test started.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        for p in &self.profiles {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

impl Page {
    async fn close(self) {
        let _ = self.client.close().await;
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// The element's rendered text, if it is there.
    async fn text(&self, css: &str) -> Option<String> {
        let e = self.client.find(Locator::Css(css)).await.ok()?;
        e.text().await.ok()
    }

    async fn displayed(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    async fn script(&self, js: &str) -> Value {
        self.client
            .execute(js, vec![])
            .await
            .unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    /// Waits until `css` shows exactly `want`.
    async fn wait_text(&self, css: &str, want: &str) {
        let mut last: Option<String>;
        eventually!(format!("{css} to read {want:?} (last: {last:?})"), {
            last = self.text(css).await;
            (last.as_deref() == Some(want)).then_some(())
        });
    }

    /// Clicks `css` once it is there and enabled (an element redrawn
    /// between finding and clicking is found again).
    async fn click(&self, css: &str) {
        eventually!(format!("{css} to be clickable"), {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) if e.is_enabled().await.unwrap_or(false) => e.click().await.ok(),
                _ => None,
            }
        });
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|_| panic!("{css} is on the page"));
        e.clear().await.expect("the field clears");
        e.send_keys(text).await.expect("the field takes keys");
    }

    /// Saves the page from its top as `name`.png (the whole page: the
    /// window grown to its height, unless emulating a phone).
    async fn shot(&self, name: &str) {
        self.script("window.scrollTo(0, 0)").await;
        if self.fit {
            let height = self
                .script("return document.documentElement.scrollHeight")
                .await
                .as_u64()
                .unwrap_or(900)
                .clamp(600, 5000);
            let _ = self.client.set_window_size(1280, height as u32).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot is written");
        eprintln!("screenshot: {}", path.display());
    }

    /// Enters the admin token at the prompt.
    async fn sign_in(&self, token: &str) {
        self.type_into("#token", token).await;
        self.click("#login-submit").await;
    }
}

// ---- the service ---------------------------------------------------------

/// `syncbridge serve`, the real binary, listening on a port it picks itself
/// (`127.0.0.1:0`, read back from its "syncbridge is serving" log line), so
/// no other test's server can take the port between picking and binding.
/// Killed when dropped.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    async fn start(db_url: &str, env: &[(&str, &str)]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncbridge"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("SYNCBRIDGE_LISTEN", "127.0.0.1:0")
            .env("SYNCBRIDGE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("syncbridge serve starts");
        let stderr = child.stderr.take().expect("serve's stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log to its end (a full pipe would stall the server).
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["message"] == "syncbridge is serving" {
                    if let Some(addr) = v["addr"].as_str() {
                        let _ = tx.send(addr.to_owned());
                    }
                }
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT))
            .await
            .unwrap()
            .expect("serve logs the address it listens on");
        let serve = Serve {
            child,
            base: format!("http://{addr}"),
        };
        let ready = serve.url("/readyz");
        eventually!("serve to be ready", {
            reqwest::get(&ready)
                .await
                .ok()
                .filter(|r| r.status() == StatusCode::OK)
        });
        serve
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn admin_put(serve: &Serve, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .put(serve.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn client_row(c: &tokio_postgres::Client, id: Uuid) -> Value {
    c.query_one("SELECT to_jsonb(c) FROM clients c WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

async fn wait_client_status(c: &tokio_postgres::Client, id: Uuid, want: &str) -> Value {
    eventually!(format!("client {id} to be {want}"), {
        let row = client_row(c, id).await;
        (row["sync_status"] == want).then_some(row)
    })
}

async fn insert_client(c: &tokio_postgres::Client, first: &str, last: &str, phone: &str) -> Uuid {
    c.query_one(
        "INSERT INTO clients (first_name, last_name, email, phone, company)
         VALUES ($1, $2, lower($1) || '@example.com', $3, 'Ortiz Realty') RETURNING id",
        &[&first, &last, &phone],
    )
    .await
    .unwrap()
    .get(0)
}

/// A client whose push OpenPhone refuses for good (422): `failed`.
async fn failed_push(fake: &FakeOpenPhone, c: &tokio_postgres::Client, first: &str) -> Uuid {
    fake.fail_next([fake_openphone::Fault::Status(422)]);
    let id = insert_client(c, first, "Park", "(212) 555-0187").await;
    wait_client_status(c, id, "failed").await;
    id
}

fn serve_env<'a>(op: &'a str, teli: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("SYNCBRIDGE_ADMIN_TOKEN", ADMIN),
        ("OPENPHONE_API_KEY", fake_openphone::API_KEY),
        ("OPENPHONE_API_URL", op),
        ("OPENPHONE_WEBHOOK_KEY", OPENPHONE_WEBHOOK_KEY),
        // A failed push waits (the test decides what happens next).
        ("SYNCBRIDGE_RETRY_BASE_MS", "600000"),
        ("SYNCBRIDGE_PUSH_TIMEOUT_MS", "2000"),
        ("SYNCBRIDGE_INTEGRITY_INTERVAL_S", "0"),
        ("SYNCBRIDGE_D1_PUSH_INTERVAL_S", "0"),
        ("TELI_API_KEY", fake_teli::API_KEY),
        ("TELI_API_URL", teli),
        ("TELI_ORGANIZATION_ID", fake_teli::ORG),
        ("TELI_API_RATE", "1000"),
        ("TELI_RETRY_BASE_MS", "20"),
    ]
}

/// The numbers the page must show, read from the database itself.
async fn expected_counts(c: &tokio_postgres::Client) -> Value {
    json!({
        "pending": count(c, "SELECT (SELECT count(*) FROM webhook_events WHERE status = 'pending')
                                  + (SELECT count(*) FROM sync_outbox WHERE status = 'pending')").await,
        "failed": count(c, "SELECT (SELECT count(*) FROM webhook_events WHERE status = 'failed')
                                 + (SELECT count(*) FROM sync_outbox WHERE status = 'failed')").await,
        "conflicts": count(c, "SELECT count(*) FROM sync_conflicts WHERE status = 'open'").await,
        "clients": {
            "synced": count(c, "SELECT count(*) FROM clients WHERE sync_status = 'synced'").await,
            "pending": count(c, "SELECT count(*) FROM clients WHERE coalesce(sync_status, 'pending') = 'pending'").await,
            "failed": count(c, "SELECT count(*) FROM clients WHERE sync_status = 'failed'").await,
            "conflict": count(c, "SELECT count(*) FROM clients WHERE sync_status = 'conflict'").await,
        },
    })
}

async fn shown_counts(b: &Browser) -> Value {
    let n = |s: Option<String>| s.and_then(|s| s.trim().parse::<i64>().ok());
    let cell = |k: &str| format!("#record-rows tr[data-table=\"clients\"] td[data-status=\"{k}\"]");
    json!({
        "pending": n(b.text("#count-pending").await),
        "failed": n(b.text("#count-failed").await),
        "conflicts": n(b.text("#count-conflicts").await),
        "clients": {
            "synced": n(b.text(&cell("synced")).await),
            "pending": n(b.text(&cell("pending")).await),
            "failed": n(b.text(&cell("failed")).await),
            "conflict": n(b.text(&cell("conflict")).await),
        },
    })
}

// ---- the tests -----------------------------------------------------------

#[tokio::test]
async fn the_page_asks_for_the_token_shows_the_databases_counts_and_resolves_a_conflict_by_clicking(
) {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let op = FakeOpenPhone::start().await;
    let teli = FakeTeli::start().await;
    let db = TestDb::create().await;
    let c = db.client().await;
    let serve = Serve::start(&db.url, &serve_env(&op.url, &teli.url)).await;
    admin_put(
        &serve,
        "/api/sync/conflict-rules",
        json!({"entity_type": "clients", "field": "last_name", "strategy": "manual"}),
    )
    .await;

    // Dana is synced to OpenPhone; Lee's push is refused for good.
    let dana = insert_client(&c, "Dana", "Ortiz", "(415) 555-0142").await;
    let row = wait_client_status(&c, dana, "synced").await;
    let contact_id = row["openphone_contact_id"].as_str().unwrap().to_owned();
    failed_push(&op, &c, "Lee").await;

    // Dana's last name is edited here (the push fails once and waits) and
    // in OpenPhone: a conflict the rule leaves to the operator.
    op.fail_next([fake_openphone::Fault::Status(503)]);
    let before = op.requests().len();
    c.execute(
        "UPDATE clients SET last_name = 'Local' WHERE id = $1",
        &[&dana],
    )
    .await
    .unwrap();
    op.wait_for("the held push", |r| r.len() > before).await;
    eventually!("the held push to be recorded", {
        (count(
            &c,
            "SELECT count(*) FROM sync_outbox WHERE status = 'pending' AND attempts > 0",
        )
        .await
            > 0)
        .then_some(())
    });
    let at = (chrono::Utc::now() + chrono::Duration::seconds(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let contact = op.edit_contact(&contact_id, &at, |c| {
        // Outsiders' text: it must reach the page as text, never markup.
        c["defaultFields"]["lastName"] = json!(REMOTE_NAME);
        c["defaultFields"]["company"] = json!("Remote Co");
    });
    let body = serde_json::to_vec(&json!({
        "id": format!("EV{}", Uuid::new_v4().simple()), "object": "event",
        "apiVersion": "v3", "createdAt": at, "type": "contact.updated",
        "data": {"object": contact}
    }))
    .unwrap();
    let mut req = reqwest::Client::new()
        .post(serve.url("/webhooks/openphone"))
        .body(body.clone());
    for (k, v) in openphone_headers(&body, chrono::Utc::now().timestamp_millis()) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
    wait_client_status(&c, dana, "conflict").await;

    // Without the token the page is the prompt and nothing else.
    browser.goto(&serve.url("/")).await;
    eventually!(
        "the token prompt",
        browser.displayed("#token").await.then_some(())
    );
    assert!(
        !browser.displayed("#dashboard").await,
        "no data before the token"
    );
    let rows: i64 = browser
        .client
        .execute(
            "return document.querySelectorAll('#dashboard tbody tr, #conflicts article').length",
            vec![],
        )
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert_eq!(rows, 0, "nothing from the API is in the page");
    browser.shot("01-token-prompt").await;

    // A wrong token is refused and the prompt stays.
    browser.sign_in("not-the-token").await;
    eventually!("the refusal", {
        browser
            .text("#login-error")
            .await
            .filter(|t| t.contains("refused"))
    });
    assert!(!browser.displayed("#dashboard").await);

    // The right one: the counts are the database's.
    browser.sign_in(ADMIN).await;
    eventually!(
        "the dashboard",
        browser.displayed("#dashboard").await.then_some(())
    );
    let stored: Value = browser
        .client
        .execute(
            "return sessionStorage.getItem('syncbridge.adminToken')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!(ADMIN), "the token is kept for the tab");
    let local: Value = browser
        .client
        .execute("return localStorage.length", vec![])
        .await
        .unwrap();
    assert_eq!(local, json!(0), "and nowhere else");
    let mut last: Value;
    eventually!(
        format!("the page to show the database's counts (last: {last})"),
        {
            let want = expected_counts(&c).await;
            last = shown_counts(&browser).await;
            (last == want).then_some(())
        }
    );
    assert_eq!(last["conflicts"], 1, "{last}");
    assert_eq!(last["clients"]["failed"], 1, "{last}");
    assert_eq!(last["clients"]["conflict"], 1, "{last}");
    // The last sync of each direction is listed per provider.
    eventually!("openphone's rows in the last-sync table", {
        let inbound = browser
            .text("#sync-rows tr[data-provider=\"openphone\"][data-direction=\"inbound\"]")
            .await;
        let outbound = browser
            .text("#sync-rows tr[data-provider=\"openphone\"][data-direction=\"outbound\"]")
            .await;
        (inbound.is_some() && outbound.is_some()).then_some(())
    });
    browser.shot("02-overview").await;

    // The conflict shows both versions field by field.
    let card = "#conflicts article[data-id]";
    eventually!(
        "the conflict card",
        browser.displayed(card).await.then_some(())
    );
    let field = "#conflicts tr[data-field=\"last_name\"]";
    assert_eq!(
        browser.text(&format!("{field} td.local")).await.as_deref(),
        Some("Local")
    );
    assert_eq!(
        browser.text(&format!("{field} td.remote")).await.as_deref(),
        Some(REMOTE_NAME)
    );
    assert_eq!(
        browser
            .script("return [document.querySelectorAll('#dashboard img').length, window.pwned === undefined]")
            .await,
        json!([0, true]),
        "the payload stayed text"
    );
    // An edited merge, saved by clicking.
    browser
        .type_into(
            &format!("{field} input[data-field=\"last_name\"]"),
            "Ortiz-Reyes",
        )
        .await;
    browser.shot("03-conflict-resolving").await;
    browser
        .click("#conflicts button[data-action=\"merged\"]")
        .await;
    let row = eventually!("the merge in Postgres", {
        let row = client_row(&c, dana).await;
        (row["last_name"] == "Ortiz-Reyes").then_some(row)
    });
    assert_ne!(row["sync_status"], "conflict", "{row}");
    let resolution: (String, Option<String>) = {
        let r = c
            .query_one(
                "SELECT status, resolution FROM sync_conflicts WHERE entity_id = $1",
                &[&dana],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        resolution,
        ("resolved".to_owned(), Some("merged".to_owned()))
    );
    browser.wait_text("#count-conflicts", "0").await;
    eventually!(
        "the card to go",
        (!browser.displayed(card).await).then_some(())
    );
    browser.shot("03b-conflict-resolved").await;

    // The same page on a phone: its own tab (the token again), one
    // column, nothing wider than the screen.
    let phone = browser.phone().await;
    phone.goto(&serve.url("/")).await;
    phone.sign_in(ADMIN).await;
    phone.wait_text("#count-conflicts", "0").await;
    phone.wait_text("#count-failed", "1").await;
    assert_eq!(phone.script("return window.innerWidth").await, json!(390));
    assert_eq!(
        phone
            .script("return document.documentElement.scrollWidth > window.innerWidth")
            .await,
        json!(false),
        "the page fits a phone's width"
    );
    phone.shot("02b-overview-phone").await;
    phone.close().await;

    browser.quit().await;
    drop(serve);
}

#[tokio::test]
async fn sync_all_calls_shows_progress_and_the_summary_and_a_failed_push_is_retried_by_clicking() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let op = FakeOpenPhone::start().await;
    let teli = FakeTeli::start().await;
    const JOE: &str = "agent_abc123";
    const PIZZA: &str = "agent_xyz789";
    let t0 = 1_741_968_000_000_i64;
    for n in 0..5 {
        teli.add(make_call(
            &format!("call_{n:04}"),
            if n < 3 { JOE } else { PIZZA },
            "inbound",
            Some(if n % 2 == 0 {
                "+14155550101"
            } else {
                "+14155550102"
            }),
            Some("+14155550100"),
            t0 + n * 60_000,
            json!({}),
        ));
    }
    teli.add(make_call(
        "call_0099",
        "agent_unknown",
        "inbound",
        Some("+14155550103"),
        Some("+14155550100"),
        t0,
        json!({}),
    ));
    let db = TestDb::create().await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "INSERT INTO businesses (name, teli_agent_id) VALUES
             ('Joe''s Barber', '{JOE}'), ('Pizza Palace', '{PIZZA}')"
    ))
    .await
    .unwrap();
    let serve = Serve::start(&db.url, &serve_env(&op.url, &teli.url)).await;
    let lee = failed_push(&op, &c, "Lee").await;

    browser.goto(&serve.url("/")).await;
    browser.sign_in(ADMIN).await;
    browser.wait_text("#sync-all-teli", "Sync all calls").await;

    // The run is slowed down by the fake so the page has a run to follow.
    teli.fail_next((0..4).map(|_| fake_teli::Fault::Slow(Duration::from_millis(1500))));
    browser.click("#sync-all-teli").await;
    eventually!("the run's progress", {
        browser
            .text("[data-pull=\"teli\"] .progress-text")
            .await
            .filter(|t| t.starts_with("Running"))
    });
    browser.shot("04a-sync-all-running").await;
    let total = "[data-pull=\"teli\"] dd[data-key=\"totalCalls\"]";
    browser.wait_text(total, "6").await;
    let synced = count(&c, "SELECT count(*) FROM messages").await;
    assert_eq!(synced, 5, "the five calls of known agents are stored");
    let customers = count(&c, "SELECT count(*) FROM customers").await;
    let summary = |key: &str| format!("[data-pull=\"teli\"] dd[data-key=\"{key}\"]");
    browser
        .wait_text(&summary("syncedCalls"), &synced.to_string())
        .await;
    browser
        .wait_text(&summary("newCustomers"), &customers.to_string())
        .await;
    browser.wait_text(&summary("skippedCalls"), "1").await;
    browser.wait_text(&summary("duplicateCalls"), "0").await;
    let mut by_business: Option<String>;
    eventually!(format!("the calls by business (last: {by_business:?})"), {
        by_business = browser.text(&summary("callsByBusiness")).await;
        by_business
            .as_deref()
            .is_some_and(|t| t.contains("Joe's Barber: 3") && t.contains("Pizza Palace: 2"))
            .then_some(())
    });
    assert!(
        browser.displayed("#sync-all-teli:enabled").await,
        "the button is back"
    );
    browser.shot("04-sync-all-finished").await;

    // The failed push is listed; retry sends it again (OpenPhone is fine
    // now) and it leaves the list.
    let row = format!("#failed-rows tr[data-record-id=\"{lee}\"]");
    eventually!(
        "the failed push in the list",
        browser.displayed(&row).await.then_some(())
    );
    let mut error: Option<String>;
    eventually!(
        format!("the provider's error under the row (last: {error:?})"),
        {
            error = browser.text(&format!("{row} + tr .error-cell")).await;
            error
                .as_deref()
                .is_some_and(|t| t.contains("422"))
                .then_some(())
        }
    );
    browser.shot("05-failed-push").await;
    browser
        .click(&format!("{row} button[data-action=\"retry\"]"))
        .await;
    let status: String = eventually!("the retried push in the outbox", {
        let s: String = c
            .query_one(
                "SELECT status FROM sync_outbox WHERE record_id = $1 ORDER BY id DESC LIMIT 1",
                &[&lee],
            )
            .await
            .unwrap()
            .get(0);
        (s != "failed").then_some(s)
    });
    assert!(["pending", "done"].contains(&status.as_str()), "{status}");
    wait_client_status(&c, lee, "synced").await;
    assert!(
        op.writes().iter().any(|w| w.method == "POST"
            && w.body
                .as_ref()
                .is_some_and(|b| b["defaultFields"]["firstName"] == "Lee")),
        "the contact reached OpenPhone: {:?}",
        op.writes()
    );
    eventually!(
        "the row to leave the list",
        (!browser.displayed(&row).await).then_some(())
    );
    browser.wait_text("#failed-count", "0").await;
    browser.shot("06-failed-push-retried").await;

    // Recent events: the pulled calls; replaying one sends it through the
    // router again.
    let (event_id, processed_at): (i64, chrono::DateTime<chrono::Utc>) = eventually!(
        "a processed teli event",
        c.query_opt(
            "SELECT id, processed_at FROM webhook_events
             WHERE provider = 'teli' AND status = 'processed' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
    );
    let event_row = format!("#event-rows tr[data-event-id=\"{event_id}\"]");
    eventually!(
        "the event in the list",
        browser.displayed(&event_row).await.then_some(())
    );
    browser
        .click(&format!("{event_row} button[data-action=\"replay\"]"))
        .await;
    eventually!("the replayed event to be applied again", {
        let r = c
            .query_one(
                "SELECT status, processed_at FROM webhook_events WHERE id = $1",
                &[&event_id],
            )
            .await
            .unwrap();
        let at: Option<chrono::DateTime<chrono::Utc>> = r.get(1);
        (r.get::<_, String>(0) != "pending" && at.is_some_and(|at| at > processed_at)).then_some(())
    });
    let status: String = c
        .query_one(
            "SELECT status FROM webhook_events WHERE id = $1",
            &[&event_id],
        )
        .await
        .unwrap()
        .get(0);
    browser
        .wait_text(&format!("{event_row} .badge"), &status)
        .await;
    eventually!("the replay note", {
        browser
            .text("#events-note")
            .await
            .filter(|t| t.contains(&format!("#{event_id}")))
    });
    // Its stored body opens below the list, as text.
    browser
        .click(&format!("{event_row} button[data-action=\"view\"]"))
        .await;
    eventually!("the event's body", {
        browser
            .text("#event-detail-body")
            .await
            .filter(|t| t.contains("call_"))
    });
    browser.shot("07-event-replayed").await;

    browser.quit().await;
    drop(serve);
}

/// The replica's tables in the fake D1 (as `tests/d1_replica.rs` has them).
const D1_SCHEMA: &str = "
    CREATE TABLE prospects (id TEXT PRIMARY KEY, name TEXT, city TEXT, country TEXT,
        contact_name TEXT, contact_email TEXT, contact_title TEXT, phone TEXT, website TEXT,
        linkedin_url TEXT, stage TEXT, tier TEXT, score INTEGER, lead_source TEXT,
        email_bounced INTEGER DEFAULT 0, archived INTEGER DEFAULT 0, created_at TEXT,
        updated_at TEXT);
    CREATE TABLE campaigns (id TEXT PRIMARY KEY, name TEXT, status TEXT, subject TEXT,
        mailbox_id TEXT, daily_limit INTEGER, created_at TEXT, updated_at TEXT);
    CREATE TABLE mailboxes (id TEXT PRIMARY KEY, email TEXT, name TEXT, status TEXT,
        daily_limit INTEGER, created_at TEXT, updated_at TEXT);
    CREATE TABLE emails (id TEXT PRIMARY KEY, prospect_id TEXT, campaign_id TEXT, subject TEXT,
        body TEXT, to_email TEXT, from_email TEXT, message_id TEXT, direction TEXT, status TEXT,
        sent_at TEXT, opened_at TEXT, clicked_at TEXT, replied_at TEXT, bounced_at TEXT,
        created_at TEXT, synced_to_supabase INTEGER NOT NULL DEFAULT 0);";

fn d1_count(fake: &FakeD1, sql: &str) -> i64 {
    fake.rows(sql)[0]["n"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn integrity_findings_are_listed_and_the_fix_button_repairs_the_safe_ones() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let d1 = FakeD1::start(D1_SCHEMA).await;
    let db = TestDb::create().await;
    let c = db.client().await;
    let serve = Serve::start(
        &db.url,
        &[
            ("SYNCBRIDGE_ADMIN_TOKEN", ADMIN),
            ("D1_API_URL", &d1.url),
            ("D1_ACCOUNT_ID", fake_d1::ACCOUNT),
            ("D1_DATABASE_ID", fake_d1::DATABASE),
            ("D1_API_TOKEN", fake_d1::TOKEN),
            ("D1_API_RATE_PER_MIN", "240"),
            ("D1_RETRY_BASE_MS", "10"),
            ("SYNCBRIDGE_D1_PULL_INTERVAL_S", "0"),
            ("SYNCBRIDGE_D1_PUSH_INTERVAL_S", "0"),
            ("SYNCBRIDGE_INTEGRITY_INTERVAL_S", "0"),
        ],
    )
    .await;
    // Three prospects reach D1; then D1 loses one and gains one of its own.
    c.batch_execute(
        "INSERT INTO prospects (id, name, city, stage, score, email_bounced, archived)
         SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid,
                'Prospect ' || i, 'Austin', 'new', i, false, false
         FROM generate_series(1, 3) AS i",
    )
    .await
    .unwrap();
    eventually!("the prospects in D1", {
        (d1_count(&d1, "SELECT count(*) AS n FROM prospects") == 3).then_some(())
    });
    d1.exec(
        "DELETE FROM prospects WHERE id = '00000000-0000-4000-8000-000000000002';
         INSERT INTO prospects (id, name) VALUES ('gone-1', 'not in Postgres');",
    );

    browser.goto(&serve.url("/")).await;
    browser.sign_in(ADMIN).await;
    browser
        .wait_text("#integrity-summary", "Integrity has not run yet.")
        .await;
    browser.click("#integrity-run").await;
    let missing = "#integrity-rows tr[data-check=\"missing_in_d1\"]";
    let extra = "#integrity-rows tr[data-check=\"extra_in_d1\"]";
    eventually!("the findings", {
        (browser.displayed(missing).await && browser.displayed(extra).await).then_some(())
    });
    let mut row: Option<String>;
    eventually!(format!("the missing row's finding (last: {row:?})"), {
        row = browser.text(missing).await;
        row.as_deref()
            .is_some_and(|t| t.contains("d1") && t.contains("safe to fix"))
            .then_some(())
    });
    eventually!(format!("the extra row's example id (last: {row:?})"), {
        row = browser.text(extra).await;
        row.as_deref()
            .is_some_and(|t| t.contains("e.g. gone-1"))
            .then_some(())
    });
    browser.wait_text(&format!("{missing} td.num"), "1").await;
    assert_eq!(
        d1_count(&d1, "SELECT count(*) AS n FROM prospects"),
        3,
        "a check repairs nothing"
    );
    browser.shot("08-integrity-findings").await;

    browser.click("#integrity-fix").await;
    eventually!("the fixed results", {
        browser
            .text("#integrity-summary")
            .await
            .filter(|t| t.starts_with("Last run with fixes"))
    });
    eventually!("the repairs on the page", {
        browser
            .text(&format!("{missing} td:last-child"))
            .await
            .filter(|t| t == "fixed 1")
    });
    let ids: Vec<String> = d1
        .rows("SELECT id FROM prospects ORDER BY id")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        ids,
        (1..=3)
            .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
            .collect::<Vec<_>>(),
        "the missing row is pushed, the extra one deleted"
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM sync_integrity_runs WHERE fix").await,
        1
    );
    browser.shot("09-integrity-fixed").await;

    browser.quit().await;
    drop(serve);
}

// ---- without a browser: headers and the failed-push list -------------------

/// Whether an HTML text has an `on…=` attribute (an inline handler).
fn has_inline_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    })
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_without_the_token_under_a_strict_policy() {
    let app = TestApp::spawn_with(|s| s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN)).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/dashboard.js", "text/javascript"),
        ("/assets/dashboard.css", "text/css"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        let header = |k: &str| {
            h.get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }
    let html = app.get_text("/").await;
    // Every script is a file of this origin: nothing inline, no CDN.
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=\"/assets/").count()
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no outside assets"
    );
    assert!(!has_inline_handler(&html), "no inline handlers");
    let js = app.get_text("/assets/dashboard.js").await;
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "localStorage",
    ] {
        assert!(!js.contains(banned), "the script uses {banned}");
    }
    // The data stays behind the token.
    let r = app
        .http
        .get(app.url("/api/sync/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn the_outbox_endpoint_lists_failed_pushes_for_the_retry_button() {
    let fake = FakeOpenPhone::start().await;
    let url = fake.url.clone();
    let app = TestApp::spawn_with(move |s| {
        s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN);
        s.set("OPENPHONE_API_KEY", fake_openphone::API_KEY);
        s.set("OPENPHONE_API_URL", url);
        s.set("SYNCBRIDGE_PUSH_TIMEOUT_MS", "2000");
    })
    .await;
    let c = app.client().await;
    let get = |path: &str, token: Option<&str>| {
        let mut req = app.http.get(app.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, _) = get("/api/sync/outbox", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = get("/api/sync/outbox", Some(ADMIN)).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::OK,
            json!({"changes": [], "next_before_id": null})
        )
    );

    let ok = insert_client(&c, "Dana", "Ortiz", "(415) 555-0142").await;
    wait_client_status(&c, ok, "synced").await;
    let lee = failed_push(&fake, &c, "Lee").await;
    let (s, b) = get("/api/sync/outbox", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let changes = b["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{b}");
    let change = &changes[0];
    assert_eq!(change["record_id"], json!(lee.to_string()));
    assert_eq!(change["provider"], "openphone");
    assert_eq!(change["table_name"], "clients");
    assert_eq!(change["status"], "failed");
    assert!(
        change["error"].as_str().unwrap().contains("422"),
        "{change}"
    );
    assert!(change.get("old_row").is_none(), "no row images");

    let (s, b) = get("/api/sync/outbox?status=done", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["changes"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["changes"][0]["record_id"], json!(ok.to_string()));
    let (s, b) = get("/api/sync/outbox?status=failed&provider=keap", Some(ADMIN)).await;
    assert_eq!((s, b["changes"].clone()), (StatusCode::OK, json!([])));
    let (s, b) = get("/api/sync/outbox?limit=1&status=done", Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["next_before_id"], b["changes"][0]["id"]);
    for bad in [
        "/api/sync/outbox?status=bogus",
        "/api/sync/outbox?provider=nobody",
        "/api/sync/outbox?limit=0",
        "/api/sync/outbox?before_id=0",
    ] {
        let (s, b) = get(bad, Some(ADMIN)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(b["detail"].is_string(), "{b}");
    }
    app.stop().await;
}
