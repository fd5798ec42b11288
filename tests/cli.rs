//! The binary's commands, run as a user would: `migrate`, `replay` with and
//! without a server, `export-fixtures` round-tripping byte for byte, and
//! `--help` on every command.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

fn syncbridge(db_url: &str, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncbridge"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("OPENPHONE_WEBHOOK_KEY", OPENPHONE_WEBHOOK_KEY)
        .env("OPENPHONE_WEBHOOK_SECRET", OPENPHONE_WEBHOOK_SECRET)
        .env("KEAP_WEBHOOK_TOKEN", KEAP_WEBHOOK_TOKEN)
        .env("RESMAN_WEBHOOK_SECRET", RESMAN_WEBHOOK_SECRET)
        .env("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", "0")
        .env("RUST_LOG", "warn");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["migrate", "down", "--help"],
        vec!["replay", "--help"],
        vec!["export-fixtures", "--help"],
        vec!["pull", "teli", "--help"],
        vec!["check", "--help"],
    ] {
        let o = syncbridge("postgres://unused", &args, &[]);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn bad_configuration_names_the_variable() {
    let o = syncbridge(
        "postgres://unused",
        &["migrate", "status"],
        &[("OPENPHONE_WEBHOOK_KEY", "not base64 at all!")],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("OPENPHONE_WEBHOOK_KEY"), "{err}");
    assert!(
        !err.contains("not base64 at all"),
        "the secret is not echoed: {err}"
    );
}

#[tokio::test]
async fn migrate_down_to_zero_leaves_nothing_and_up_restores() {
    let db = TestDb::create().await;
    let url = db.url.clone();
    let o = tokio::task::spawn_blocking({
        let url = url.clone();
        move || syncbridge(&url, &["migrate", "status"], &[])
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("0004_engine"));

    let n = syncbridge::db::migrate::MIGRATIONS.len().to_string();
    let o = tokio::task::spawn_blocking({
        let url = url.clone();
        move || syncbridge(&url, &["migrate", "down", &n], &[])
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let c = db.client().await;
    let left: Vec<String> = c
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
             UNION ALL
             SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
             UNION ALL
             SELECT nspname::text FROM pg_namespace WHERE nspname = 'auth'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    let o = tokio::task::spawn_blocking(move || syncbridge(&url, &["migrate"], &[]))
        .await
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("applied  0004_engine"));
}

#[tokio::test]
async fn migrations_keep_an_existing_application_table_and_its_data() {
    let db = TestDb::create().await;
    let c = db.client().await;
    // Undo everything, then make `clients` the application's own table.
    syncbridge::db::migrate::down(&mut db.client().await, 99)
        .await
        .unwrap();
    c.batch_execute(
        "CREATE TABLE clients (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), first_name text,
                               phone text, notes text);
         INSERT INTO clients (first_name, phone, notes) VALUES ('Ann', '(555) 000-1111', 'vip');",
    )
    .await
    .unwrap();
    syncbridge::db::migrate::up(&mut db.client().await)
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT notes, sync_status, syncbridge_e164(phone) FROM clients",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "vip");
    assert_eq!(row.get::<_, String>(1), "pending", "backfilled");
    assert_eq!(row.get::<_, String>(2), "+15550001111");
    syncbridge::db::migrate::down(&mut db.client().await, 99)
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE notes = 'vip') FROM clients",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (1, 1),
        "the application's table and rows stay"
    );
    let cols: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'clients' AND column_name = 'sync_status'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cols, 0, "our columns are gone");
}

/// The Teli seed's tables, when the application has them already (with
/// columns of its own and the seed's `name`/`phone_number`): migrate adds
/// only what is missing, and down removes only that.
#[tokio::test]
async fn teli_tables_of_the_application_keep_their_columns_and_rows() {
    let db = TestDb::create().await;
    let c = db.client().await;
    syncbridge::db::migrate::down(&mut db.client().await, 99)
        .await
        .unwrap();
    c.batch_execute(
        "CREATE TABLE businesses (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text,
                                  owner_email text);
         CREATE TABLE customers (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                                 business_id uuid REFERENCES businesses (id), phone_number text,
                                 name text, loyalty int);
         CREATE TABLE messages (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                                customer_id uuid REFERENCES customers (id), teli_data jsonb);
         INSERT INTO businesses (name, owner_email) VALUES ('Joe''s Barber', 'joe@example.com');
         INSERT INTO customers (business_id, phone_number, name, loyalty)
             SELECT id, '+14155550101', 'Ann', 7 FROM businesses;
         INSERT INTO messages (customer_id, teli_data)
             SELECT id, '{\"call_id\": \"call_old\"}' FROM customers;",
    )
    .await
    .unwrap();
    syncbridge::db::migrate::up(&mut db.client().await)
        .await
        .unwrap();
    let added: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name IN ('businesses', 'customers', 'messages')
               AND column_name IN ('teli_agent_id', 'last_call_at', 'teli_updated_at')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(added, 3);
    // The seed's dedup is the database's now.
    let dup = c
        .execute(
            "INSERT INTO messages (customer_id, teli_data)
             SELECT customer_id, teli_data FROM messages",
            &[],
        )
        .await;
    assert!(dup.is_err(), "a second message for call_old was stored");
    syncbridge::db::migrate::down(&mut db.client().await, 99)
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT b.owner_email, cu.name, cu.loyalty, m.teli_data ->> 'call_id'
             FROM businesses b JOIN customers cu ON cu.business_id = b.id
             JOIN messages m ON m.customer_id = cu.id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "joe@example.com");
    assert_eq!(row.get::<_, String>(1), "Ann");
    assert_eq!(row.get::<_, i32>(2), 7);
    assert_eq!(row.get::<_, String>(3), "call_old");
    let ours: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name IN ('businesses', 'customers', 'messages')
               AND column_name IN ('teli_agent_id', 'last_call_at', 'teli_updated_at', 'updated_at')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        ours, 0,
        "the columns syncbridge added are gone, the application's stay"
    );
}

/// The D1 seed's tables, when the application has them: the seed's
/// columns are added where missing and removed again by down; the
/// application's columns and rows stay.
#[tokio::test]
async fn d1_tables_of_the_application_keep_their_columns_and_rows() {
    let db = TestDb::create().await;
    let c = db.client().await;
    syncbridge::db::migrate::down(&mut db.client().await, 99)
        .await
        .unwrap();
    c.batch_execute(
        "CREATE TABLE prospects (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text, owner text);
         CREATE TABLE emails (id text PRIMARY KEY, subject text, label text);
         INSERT INTO prospects (name, owner) VALUES ('Acme', 'sam');
         INSERT INTO emails VALUES ('e-1', 'Hello', 'inbox');",
    )
    .await
    .unwrap();
    syncbridge::db::migrate::up(&mut db.client().await)
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT p.owner, p.email_bounced, e.label, e.message_id IS NULL
             FROM prospects p, emails e",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "sam");
    assert!(
        !row.get::<_, bool>(1),
        "the seed's columns, with their defaults"
    );
    assert_eq!(row.get::<_, String>(2), "inbox");
    assert!(row.get::<_, bool>(3));
    // updated_at is kept by the trigger.
    let before: chrono::DateTime<chrono::Utc> = c
        .query_one("SELECT updated_at FROM prospects", &[])
        .await
        .unwrap()
        .get(0);
    let after: chrono::DateTime<chrono::Utc> = c
        .query_one(
            "UPDATE prospects SET name = 'Acme Inc' RETURNING updated_at",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(after > before);
    syncbridge::db::migrate::down(&mut db.client().await, 99)
        .await
        .unwrap();
    let cols: Vec<String> = c
        .query(
            "SELECT table_name || '.' || column_name FROM information_schema.columns
             WHERE table_name IN ('prospects', 'emails') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        cols,
        [
            "emails.id",
            "emails.label",
            "emails.subject",
            "prospects.id",
            "prospects.name",
            "prospects.owner"
        ]
    );
    assert_eq!(
        c.query_one("SELECT count(*) FROM prospects", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
}

/// Without a running server, replay feeds the pipeline itself; replaying
/// again changes nothing; export writes the stored deliveries back out
/// with the same bytes.
#[tokio::test]
async fn replay_without_a_server_then_export_round_trips_byte_for_byte() {
    let db = TestDb::create().await;
    seed_clients(&db.client().await).await;
    let url = db.url.clone();
    let listen = format!("127.0.0.1:{}", free_port());
    let fixtures = fixtures_dir().join("openphone");
    let run = |args: Vec<String>| {
        let url = url.clone();
        let listen = listen.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            syncbridge(&url, &args, &[("SYNCBRIDGE_LISTEN", &listen)])
        })
    };

    let o = run(vec!["replay".into(), fixtures.display().to_string()])
        .await
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(", 0 not as expected"), "{out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("in-process pipeline"));

    let c = db.client().await;
    let linked: i64 = c
        .query_one(
            "SELECT count(*) FROM communications WHERE openphone_message_id = 'AC9f8e7d6c5b4a39281706f5e4d3c2b1a0' AND client_id = $1::text::uuid",
            &[&DANA],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(linked, 1, "applied and linked to its client");
    let before: i64 = c
        .query_one("SELECT count(*) FROM communications", &[])
        .await
        .unwrap()
        .get(0);

    // Again, as recorded: every delivery is a duplicate, nothing changes.
    // (The fixtures' expectations describe a first replay, so the command
    // reports the differences and exits 1.)
    let o = run(vec!["replay".into(), fixtures.display().to_string()])
        .await
        .unwrap();
    for line in String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("/fixtures/"))
    {
        assert!(
            line.contains(" 200 duplicate ") || line.contains(" 401 "),
            "{line}"
        );
    }
    let after: i64 = c
        .query_one("SELECT count(*) FROM communications", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);

    // Recorded signatures are long expired; --resign signs them for now,
    // so they pass a live 300 s tolerance (and dedupe as the same events).
    let one = fixtures.join("message-received.json").display().to_string();
    let strict = |args: Vec<&'static str>| {
        let url = url.clone();
        let listen = listen.clone();
        let one = one.clone();
        tokio::task::spawn_blocking(move || {
            let mut a: Vec<&str> = vec!["replay"];
            a.extend(args);
            a.push(&one);
            syncbridge(
                &url,
                &a,
                &[
                    ("SYNCBRIDGE_LISTEN", &listen),
                    ("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", "300"),
                ],
            )
        })
    };
    let o = strict(vec![]).await.unwrap();
    assert!(
        !o.status.success(),
        "an expired recording is refused: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("401"),
        "{}",
        text(&o)
    );
    // Re-signed, it verifies: a duplicate of what is stored. The fixture
    // expects `accepted` (its expectation is for an empty inbox), so the
    // run reports it as not as expected.
    let o = strict(vec!["--resign"]).await.unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("DIFF 200 duplicate"),
        "{}",
        text(&o)
    );

    // Export and compare with the originals.
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("export-{}", uuid::Uuid::new_v4()));
    let o = run(vec![
        "export-fixtures".into(),
        "--provider".into(),
        "openphone".into(),
        dir.display().to_string(),
    ])
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let exported = syncbridge::ops::fixtures::load(std::slice::from_ref(&dir)).unwrap();
    let originals = syncbridge::ops::fixtures::load(&[fixtures]).unwrap();
    let accepted: Vec<_> = originals
        .iter()
        .filter(|(_, f)| f.expect.as_ref().and_then(|e| e.outcome.as_deref()) == Some("accepted"))
        .collect();
    assert_eq!(exported.len(), accepted.len());
    for (_, orig) in accepted {
        let body = orig.body_bytes().unwrap();
        let twin = exported
            .iter()
            .find(|(_, e)| e.body_bytes().unwrap() == body)
            .unwrap_or_else(|| panic!("no exported twin for {:?}", orig.description));
        assert_eq!(twin.1.headers, orig.headers, "headers round-trip");
        assert_eq!(twin.1.path, orig.path);
    }
    // The exported files replay into a fresh database with the same result.
    let db2 = TestDb::create().await;
    let url2 = db2.url.clone();
    let exported_dir = dir.clone();
    let o = tokio::task::spawn_blocking(move || {
        let listen = format!("127.0.0.1:{}", free_port());
        syncbridge(
            &url2,
            &["replay", &exported_dir.display().to_string()],
            &[("SYNCBRIDGE_LISTEN", &listen)],
        )
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let n: i64 = db2
        .client()
        .await
        .query_one("SELECT count(*) FROM communications", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn resman_tables_of_the_application_keep_their_columns_and_rows() {
    let db = TestDb::create().await;
    let c = db.client().await;
    syncbridge::db::migrate::down(&mut db.client().await, 99)
        .await
        .unwrap();
    c.batch_execute(
        "CREATE TABLE property (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text, units int);
         CREATE TABLE \"user\" (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), first_name text,
                                email text, avatar_url text);
         CREATE TABLE conversation (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                                    property_id uuid REFERENCES property (id),
                                    user_id uuid REFERENCES \"user\" (id), channel text,
                                    is_qualified boolean NOT NULL DEFAULT false);
         INSERT INTO property (name, units) VALUES ('Elm Court', 40);
         INSERT INTO \"user\" (first_name, email, avatar_url) VALUES ('Dana', 'd@x.example', 'a.png');
         INSERT INTO conversation (property_id, user_id, channel, is_qualified)
             SELECT p.id, u.id, 'sms', true FROM property p, \"user\" u;",
    )
    .await
    .unwrap();
    syncbridge::db::migrate::up(&mut db.client().await)
        .await
        .unwrap();
    let added: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name IN ('conversation', 'user')
               AND column_name IN ('resman_lead_id', 'resman_sync_status', 'resman_contact_id',
                                   'ai_intent_summary', 'resman_status')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // resman_sync_status on both.
    assert_eq!(added, 6);
    // Captured for ResMan from now on.
    c.batch_execute("UPDATE conversation SET channel = 'web'")
        .await
        .unwrap();
    let queued: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE provider = 'resman' AND table_name = 'conversation'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 1);
    syncbridge::db::migrate::down(&mut db.client().await, 99)
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT p.units, u.avatar_url, c.channel, c.is_qualified
             FROM conversation c JOIN property p ON p.id = c.property_id JOIN \"user\" u ON u.id = c.user_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 40);
    assert_eq!(row.get::<_, String>(1), "a.png");
    assert_eq!(row.get::<_, String>(2), "web");
    assert!(row.get::<_, bool>(3));
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name IN ('conversation', 'user', 'property') AND column_name LIKE 'resman%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "only syncbridge's columns are removed");
}

/// `serve` with nothing configured, on the embedded default, as a new user
/// runs it; stopped with SIGTERM (which stops the cluster it started).
struct EmbeddedServe {
    child: std::process::Child,
    base: String,
    log: PathBuf,
}

impl EmbeddedServe {
    fn start(data_dir: &std::path::Path, log: PathBuf) -> EmbeddedServe {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_syncbridge"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SYNCBRIDGE_DATA_DIR", data_dir)
            .env("SYNCBRIDGE_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("serve starts");
        EmbeddedServe {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    async fn ready(&self) {
        for _ in 0..1200 {
            if reqwest::get(format!("{}/readyz", self.base))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "serve never became ready:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[tokio::test]
async fn serve_on_the_embedded_default_makes_an_admin_token_once_and_a_real_database_none() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("sb-first-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.join("data");
    let http = reqwest::Client::new();

    let serve = EmbeddedServe::start(&data, dir.join("serve-1.log"));
    serve.ready().await;
    let token_file = data.join("admin-token");
    let token = std::fs::read_to_string(&token_file)
        .expect("the token is kept in the data directory")
        .trim()
        .to_owned();
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner reads it");
    let status = http
        .get(format!("{}/api/sync/status", serve.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), reqwest::StatusCode::OK);
    let base = serve.base.clone();
    let log = serve.stop();
    assert!(
        log.contains("generated an admin token") && log.contains(&format!("open {base}/")),
        "the log says where to look: {log}"
    );
    assert!(!log.contains(&token), "the token itself is never logged");

    // The next start keeps the same token.
    let serve = EmbeddedServe::start(&data, dir.join("serve-2.log"));
    serve.ready().await;
    let status = http
        .get(format!("{}/api/sync/status", serve.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), reqwest::StatusCode::OK);
    let log = serve.stop();
    assert!(log.contains("using the generated admin token"), "{log}");

    // With a real DATABASE_URL nothing is generated: the admin API is off.
    let db = TestDb::create().await;
    let mut serve = ServeProcess::start(
        &db.url,
        &[("SYNCBRIDGE_DATA_DIR", &dir.join("unused").to_string_lossy())],
    );
    serve.answers("/readyz", reqwest::StatusCode::OK).await;
    let r = http
        .get(serve.url("/api/sync/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    serve.kill();
    assert!(!dir.join("unused").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `replay --resign fixtures/` as the README has it: every fixture as
/// expected (the bad signatures still refused), the golden final state of
/// `fixtures/expected-state.json` holding; with a secret unset, exit 1 and
/// why; a state that does not hold printed as a diff.
#[tokio::test]
async fn replay_resign_keeps_expectations_and_asserts_the_final_state() {
    let listen = format!("127.0.0.1:{}", free_port());
    let run = |db: String, args: Vec<String>, extra: Vec<(&'static str, String)>| {
        let listen = listen.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut env: Vec<(&str, &str)> = vec![
                ("SYNCBRIDGE_LISTEN", listen.as_str()),
                // The default tolerance: recorded signatures are stale.
                ("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", "300"),
            ];
            env.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
            syncbridge(&db, &args, &env)
        })
    };
    let all = fixtures_dir().display().to_string();

    let db = TestDb::create().await;
    let o = run(
        db.url.clone(),
        vec!["replay".into(), "--resign".into(), all.clone()],
        vec![],
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains(" deliveries replayed, 0 not as expected"),
        "{out}"
    );
    assert!(out.contains("final state: 0 checks do not hold"), "{out}");
    // A bad signature is not re-signed: it still gets its 401.
    let tampered = out
        .lines()
        .find(|l| l.contains("bad-signature-tampered.json"))
        .unwrap();
    assert!(tampered.starts_with("ok   401"), "{tampered}");
    drop(db);

    // Without the beta secret: the beta fixtures are not as expected, and
    // the lines say why.
    let db = TestDb::create().await;
    let mut cmd_env = vec![("OPENPHONE_WEBHOOK_SECRET", String::new())];
    cmd_env.push(("RUST_LOG", "error".into()));
    let o = run(
        db.url.clone(),
        vec!["replay".into(), "--resign".into(), all.clone()],
        cmd_env,
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let beta: Vec<&str> = out.lines().filter(|l| l.contains("/beta-")).collect();
    assert!(!beta.is_empty());
    for line in &beta {
        if line.contains("beta-bad-signature") {
            assert!(line.starts_with("ok   401"), "{line}");
        } else {
            assert!(
                line.starts_with("DIFF 401") && line.contains("OPENPHONE_WEBHOOK_SECRET"),
                "{line}"
            );
        }
    }
    assert!(out.contains(", 3 not as expected"), "{out}");
    assert!(
        out.contains("DIFF state"),
        "the final state differs too: {out}"
    );
    drop(db);

    // A folder whose golden state does not hold: the diff names the rows.
    let dir = std::env::temp_dir().join(format!("sb-golden-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["message-received.json", "message-received-duplicate.json"] {
        std::fs::copy(fixtures_dir().join("openphone").join(name), dir.join(name)).unwrap();
    }
    std::fs::write(
        dir.join("expected-state.json"),
        serde_json::to_string_pretty(&serde_json::json!({"checks": [{
            "name": "messages",
            "query": "SELECT body FROM communications",
            "rows": [{"body": "Is the 3BR still available?"}],
        }]}))
        .unwrap(),
    )
    .unwrap();
    let db = TestDb::create().await;
    let o = run(
        db.url.clone(),
        vec![
            "replay".into(),
            "--resign".into(),
            dir.display().to_string(),
        ],
        vec![],
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        out.contains("2 deliveries replayed, 0 not as expected"),
        "{out}"
    );
    assert!(out.contains("DIFF state messages"), "{out}");
    assert!(
        out.contains(r#"  - {"body":"Is the 3BR still available?"}"#),
        "{out}"
    );
    assert!(
        out.contains(r#"  + {"body":"Is the 2BR still available?"}"#),
        "{out}"
    );
    // --write-state records what is there; then it holds.
    let db2 = TestDb::create().await;
    let o = run(
        db2.url.clone(),
        vec![
            "replay".into(),
            "--resign".into(),
            "--write-state".into(),
            dir.display().to_string(),
        ],
        vec![],
    )
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let golden = std::fs::read_to_string(dir.join("expected-state.json")).unwrap();
    assert!(golden.contains("Is the 2BR still available?"), "{golden}");
    std::fs::remove_dir_all(&dir).unwrap();
}
