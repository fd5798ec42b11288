//! The D1 replica's outbound half (issue 13): prospects, campaigns and
//! mailboxes captured in Postgres reach the fake D1 (a real SQLite) through
//! the outbox and the dispatcher's batch push; the reconciliation's durable
//! cursor; integrity and its repairs; the full resync; the scheduler with
//! two processes.

mod common;

use std::time::Duration;

use common::fake_d1::{self, FakeD1, Fault};
use serde_json::{json, Value};

const ADMIN: &str = "d1-replica-admin-token";

/// The edge's tables, as a D1 database for the seed would have them.
const SCHEMA: &str = "
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

fn d1_env(fake: &FakeD1) -> Vec<(&'static str, String)> {
    vec![
        ("D1_API_URL", fake.url.clone()),
        ("D1_ACCOUNT_ID", fake_d1::ACCOUNT.into()),
        ("D1_DATABASE_ID", fake_d1::DATABASE.into()),
        ("D1_API_TOKEN", fake_d1::TOKEN.into()),
        ("D1_API_RATE_PER_MIN", "240".into()),
        ("D1_RETRY_BASE_MS", "10".into()),
        ("D1_MAX_ATTEMPTS", "2".into()),
        ("SYNCBRIDGE_D1_PULL_INTERVAL_S", "0".into()),
    ]
}

async fn spawn(fake: &FakeD1, extra: &[(&'static str, &str)]) -> common::TestApp {
    let env = d1_env(fake);
    let extra: Vec<(&'static str, String)> =
        extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    common::TestApp::spawn_with(move |s| {
        s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN);
        for (k, v) in env.into_iter().chain(extra) {
            s.set(k, v);
        }
    })
    .await
}

async fn exec(app: &common::TestApp, sql: &str) {
    app.client().await.batch_execute(sql).await.unwrap();
}

async fn scalar(app: &common::TestApp, sql: &str) -> i64 {
    app.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

fn d1_count(fake: &FakeD1, sql: &str) -> i64 {
    fake.rows(sql)[0]["n"].as_i64().unwrap()
}

/// Waits (30 s at most) until the fake's `sql` (a `count(*) AS n`) reads
/// `want`.
async fn until_d1(fake: &FakeD1, sql: &str, want: i64) {
    for _ in 0..600 {
        if d1_count(fake, sql) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("D1 never had {want} for {sql}: {}", d1_count(fake, sql));
}

async fn api(
    app: &common::TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = app.http.request(method, app.url(path)).bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn prospects_sql(from: usize, n: usize) -> String {
    format!(
        "INSERT INTO prospects (id, name, city, stage, score, email_bounced, archived)
         SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'Prospect ' || i,
                'Austin', 'new', i % 100, i % 2 = 0, false
         FROM generate_series({from}, {}) AS i;",
        from + n - 1
    )
}

fn pid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

#[tokio::test]
async fn inserts_updates_and_deletes_of_each_table_reach_d1() {
    let fake = FakeD1::start(SCHEMA).await;
    let app = spawn(&fake, &[]).await;
    exec(
        &app,
        &format!(
            "{}
             INSERT INTO mailboxes (id, email, name, status, daily_limit)
             VALUES ('10000000-0000-4000-8000-000000000001', 'sales@acme.example', 'Sales', 'active', 50);
             INSERT INTO campaigns (id, name, status, subject, mailbox_id, daily_limit)
             VALUES ('20000000-0000-4000-8000-000000000001', 'Spring', 'draft', 'Hello',
                     '10000000-0000-4000-8000-000000000001', 20);",
            prospects_sql(1, 3)
        ),
    )
    .await;
    until_d1(&fake, "SELECT count(*) AS n FROM prospects", 3).await;
    until_d1(&fake, "SELECT count(*) AS n FROM campaigns", 1).await;
    until_d1(&fake, "SELECT count(*) AS n FROM mailboxes", 1).await;
    let p = &fake.rows(&format!("SELECT * FROM prospects WHERE id = '{}'", pid(2)))[0];
    assert_eq!(p["name"], "Prospect 2");
    assert_eq!(p["email_bounced"], 1, "booleans as 0/1");
    assert_eq!(p["archived"], 0);
    let at = p["updated_at"].as_str().unwrap();
    assert!(
        at.len() == 24 && at.ends_with('Z'),
        "timestamps ISO-8601 UTC with milliseconds: {at}"
    );
    // Rapid updates coalesce into the latest state; deletes reach D1.
    for i in 0..5 {
        exec(
            &app,
            &format!(
                "UPDATE prospects SET stage = 'stage-{i}' WHERE id = '{}';",
                pid(1)
            ),
        )
        .await;
    }
    exec(
        &app,
        &format!(
            "DELETE FROM prospects WHERE id = '{}';
             UPDATE campaigns SET status = 'active';
             DELETE FROM mailboxes;",
            pid(3)
        ),
    )
    .await;
    until_d1(&fake, "SELECT count(*) AS n FROM prospects", 2).await;
    until_d1(
        &fake,
        &format!(
            "SELECT count(*) AS n FROM prospects WHERE id = '{}' AND stage = 'stage-4'",
            pid(1)
        ),
        1,
    )
    .await;
    until_d1(
        &fake,
        "SELECT count(*) AS n FROM campaigns WHERE status = 'active'",
        1,
    )
    .await;
    until_d1(&fake, "SELECT count(*) AS n FROM mailboxes", 0).await;
    // Nothing is left pending or failed.
    for _ in 0..100 {
        if scalar(
            &app,
            "SELECT count(*) FROM sync_outbox WHERE provider = 'd1' AND status <> 'done'",
        )
        .await
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM sync_outbox WHERE provider = 'd1' AND status <> 'done'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_d1_table_with_fewer_columns_gets_the_columns_it_has() {
    let fake = FakeD1::start(
        "CREATE TABLE prospects (id TEXT PRIMARY KEY, name TEXT, stage TEXT);
         CREATE TABLE campaigns (id TEXT PRIMARY KEY);
         CREATE TABLE mailboxes (id TEXT PRIMARY KEY);",
    )
    .await;
    let app = spawn(&fake, &[]).await;
    exec(&app, &prospects_sql(1, 2)).await;
    until_d1(
        &fake,
        "SELECT count(*) AS n FROM prospects WHERE name LIKE 'Prospect %'",
        2,
    )
    .await;
    // A column added to D1 later: the cached columns lack it, so a change
    // is written without it until the columns are read again — after a
    // "no such column" error (forced here by dropping a cached column), or
    // at the next reconciliation or full resync.
    fake.exec("ALTER TABLE prospects ADD COLUMN city TEXT;");
    exec(
        &app,
        &format!(
            "UPDATE prospects SET city = 'Dallas' WHERE id = '{}';",
            pid(1)
        ),
    )
    .await;
    fake.exec("ALTER TABLE prospects DROP COLUMN stage;");
    exec(
        &app,
        &format!(
            "UPDATE prospects SET name = 'Renamed' WHERE id = '{}';",
            pid(1)
        ),
    )
    .await;
    until_d1(
        &fake,
        &format!("SELECT count(*) AS n FROM prospects WHERE id = '{}' AND name = 'Renamed' AND city = 'Dallas'", pid(1)),
        1,
    )
    .await;
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM sync_outbox WHERE provider = 'd1' AND status = 'failed'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_thousand_rows_go_in_a_few_requests() {
    let fake = FakeD1::start(SCHEMA).await;
    let app = spawn(&fake, &[]).await;
    exec(&app, &prospects_sql(1, 1000)).await;
    until_d1(&fake, "SELECT count(*) AS n FROM prospects", 1000).await;
    let writes = fake
        .requests()
        .iter()
        .filter(|r| {
            r.statements
                .iter()
                .any(|s| s.starts_with("INSERT INTO \"prospects\""))
        })
        .count();
    assert!(writes <= 6, "{writes} write requests for 1,000 rows");
}

#[tokio::test]
async fn a_row_d1_refuses_fails_alone() {
    let fake = FakeD1::start(
        "CREATE TABLE prospects (id TEXT PRIMARY KEY, name TEXT, city TEXT UNIQUE);
         CREATE TABLE campaigns (id TEXT PRIMARY KEY);
         CREATE TABLE mailboxes (id TEXT PRIMARY KEY);",
    )
    .await;
    fake.exec("INSERT INTO prospects (id, name, city) VALUES ('other', 'x', 'Taken');");
    let app = spawn(&fake, &[]).await;
    exec(
        &app,
        &format!(
            "{} UPDATE prospects SET city = 'Taken' WHERE id = '{}';
             UPDATE prospects SET city = 'c-' || score WHERE id <> '{}';",
            prospects_sql(1, 40),
            pid(7),
            pid(7)
        ),
    )
    .await;
    until_d1(&fake, "SELECT count(*) AS n FROM prospects", 40).await;
    for _ in 0..200 {
        if scalar(
            &app,
            "SELECT count(*) FROM sync_outbox WHERE provider = 'd1' AND status = 'pending'",
        )
        .await
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed: String = app
        .client()
        .await
        .query_one(
            "SELECT string_agg(DISTINCT record_id::text || ' ' || error, '; ')
             FROM sync_outbox WHERE provider = 'd1' AND status = 'failed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(failed.starts_with(&pid(7)), "{failed}");
    assert!(failed.contains("UNIQUE"), "{failed}");
}

#[tokio::test]
async fn the_cursor_stays_before_a_failed_batch_and_rows_arrive_after_the_fault() {
    let fake = FakeD1::start(SCHEMA).await;
    // Rows that existed before syncbridge: no outbox rows for them.
    let app = spawn(&fake, &[]).await;
    exec(
        &app,
        &format!(
            "SET syncbridge.origin = 'd1'; {} RESET syncbridge.origin;",
            prospects_sql(1, 2500)
        ),
    )
    .await;
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM sync_outbox WHERE provider = 'd1'"
        )
        .await,
        0
    );
    // The first page (1,000 rows, one request) goes; the second fails for
    // good (every retry answers 500).
    let (status, _) = api(&app, reqwest::Method::GET, "/api/sync/status", None).await;
    assert_eq!(status, 200);
    // PRAGMA table_info, the first page, then the second page's two
    // attempts fail.
    fake.fail_next([
        Fault::Pass,
        Fault::Pass,
        Fault::Status(500),
        Fault::Status(500),
    ]);
    let run = syncbridge::scheduler::run_provider_job(
        &app.state().pool,
        &app.provider(syncbridge::domain::ProviderName::D1),
        "reconcile",
        "d1.reconcile",
        json!({}),
        None,
        Default::default(),
    )
    .await
    .unwrap();
    assert!(!run.ok, "{run:?}");
    assert!(
        run.error.as_deref().unwrap_or("").contains("cursor stays"),
        "{run:?}"
    );
    assert_eq!(d1_count(&fake, "SELECT count(*) AS n FROM prospects"), 1000);
    let cursor: String = app
        .client()
        .await
        .query_one(
            "SELECT position->>'id' FROM sync_cursors WHERE name = 'd1.reconcile.prospects'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let last_in_d1 = fake.rows("SELECT max(id) AS id FROM prospects")[0]["id"].clone();
    assert_eq!(
        json!(cursor),
        last_in_d1,
        "the cursor is at the last confirmed row"
    );
    // The status shows the failed run.
    let (_, s) = api(&app, reqwest::Method::GET, "/api/sync/status", None).await;
    assert_eq!(s["jobs"]["d1.reconcile"]["ok"], false, "{s}");
    // The fault cleared: the next run resumes from the cursor.
    let before = fake.requests().len();
    let run = syncbridge::scheduler::run_provider_job(
        &app.state().pool,
        &app.provider(syncbridge::domain::ProviderName::D1),
        "reconcile",
        "d1.reconcile",
        json!({}),
        None,
        Default::default(),
    )
    .await
    .unwrap();
    assert!(run.ok, "{run:?}");
    assert_eq!(d1_count(&fake, "SELECT count(*) AS n FROM prospects"), 2500);
    assert_eq!(run.summary["prospects"]["pushed"], 1500, "{run:?}");
    assert!(
        fake.requests().len() - before <= 4,
        "resumed, not restarted"
    );
}

#[tokio::test]
async fn integrity_names_each_seeded_problem_and_fix_repairs_the_safe_ones() {
    let fake = FakeD1::start(SCHEMA).await;
    let app = spawn(&fake, &[("SYNCBRIDGE_D1_COUNT_TOLERANCE", "1")]).await;
    exec(&app, &prospects_sql(1, 20)).await;
    until_d1(&fake, "SELECT count(*) AS n FROM prospects", 20).await;
    // Seeded problems: 5 rows missing in D1, 3 extra there, an orphaned
    // outbound e-mail, a duplicate message id on each side, an e-mail
    // unsynced for two hours.
    fake.exec(&format!(
        "DELETE FROM prospects WHERE id IN ('{}', '{}', '{}', '{}', '{}');
         INSERT INTO prospects (id, name) VALUES ('gone-1', 'x'), ('gone-2', 'x'), ('gone-3', 'x');
         INSERT INTO emails (id, message_id, direction, created_at) VALUES
             ('d-1', '<dup@d1>', 'outbound', '2026-01-01T00:00:00.000Z'),
             ('d-2', '<dup@d1>', 'outbound', '2026-01-01T00:00:00.000Z');",
        pid(1),
        pid(2),
        pid(3),
        pid(4),
        pid(5)
    ));
    fake.exec("UPDATE emails SET synced_to_supabase = 1 WHERE id = 'd-2';");
    exec(
        &app,
        &format!(
            "INSERT INTO emails (id, prospect_id, message_id, direction) VALUES
                 ('l-1', 'nobody', '<dup@pg>', 'outbound'),
                 ('l-2', '{}', '<dup@pg>', 'outbound');",
            pid(9)
        ),
    )
    .await;
    let (status, r) = api(
        &app,
        reqwest::Method::GET,
        "/api/sync/integrity?run=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let find = |r: &Value, check: &str| -> Value {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == check)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(find(&r, "missing_in_d1")["count"], 5, "{r}");
    assert_eq!(find(&r, "missing_in_d1")["examples"][0], pid(1));
    assert_eq!(find(&r, "extra_in_d1")["count"], 3, "{r}");
    assert_eq!(
        find(&r, "extra_in_d1")["examples"],
        json!(["gone-1", "gone-2", "gone-3"])
    );
    assert_eq!(
        find(&r, "count_mismatch")["count"],
        2,
        "20 here, 18 there: {r}"
    );
    assert_eq!(
        find(&r, "orphaned_email")["examples"],
        json!(["l-1"]),
        "{r}"
    );
    assert_eq!(
        find(&r, "duplicate_message_id")["examples"],
        json!(["<dup@pg>"])
    );
    assert_eq!(
        find(&r, "duplicate_message_id_d1")["examples"],
        json!(["<dup@d1>"])
    );
    assert_eq!(
        find(&r, "unsynced_email")["examples"],
        json!(["d-1"]),
        "{r}"
    );
    assert_eq!(find(&r, "unsynced_email")["fix"]["kind"], "pull");
    assert_eq!(
        d1_count(&fake, "SELECT count(*) AS n FROM prospects"),
        18,
        "a check alone repairs nothing"
    );

    // `syncbridge check --fix` repairs the safe ones and reports the rest.
    // (On the blocking pool: the fake D1 answers on this test's runtime.)
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_syncbridge"));
    cmd.args(["check", "--fix", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.db.url)
        .envs(d1_env(&fake));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "orphans and duplicates remain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fixed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        find(&fixed, "missing_in_d1")["fix"],
        json!({"kind": "repair", "fixed": 5}),
        "{fixed}"
    );
    assert_eq!(
        find(&fixed, "extra_in_d1")["fix"],
        json!({"kind": "repair", "fixed": 3})
    );
    assert_eq!(
        find(&fixed, "unsynced_email")["fix"],
        json!({"kind": "repair", "fixed": 1})
    );
    assert_eq!(find(&fixed, "orphaned_email")["fix"]["kind"], "report");
    assert_eq!(d1_count(&fake, "SELECT count(*) AS n FROM prospects"), 20);
    assert_eq!(
        d1_count(
            &fake,
            "SELECT count(*) AS n FROM prospects WHERE id LIKE 'gone-%'"
        ),
        0
    );
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM emails WHERE id = 'd-1'").await,
        1,
        "pulled"
    );
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM sync_audit_log WHERE operation = 'INTEGRITY_FIX'
               AND sync_destination = 'd1'
               AND decision IN ('missing_in_d1_repaired', 'extra_in_d1_repaired')"
        )
        .await,
        2,
        "each repair is audited"
    );
    // The next check finds only what is the application's to decide.
    let (_, r) = api(
        &app,
        reqwest::Method::GET,
        "/api/sync/integrity?run=true",
        None,
    )
    .await;
    let checks: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["check"].as_str())
        .collect();
    assert_eq!(
        checks,
        [
            "orphaned_email",
            "duplicate_message_id",
            "duplicate_message_id_d1"
        ],
        "{r}"
    );
    // Results are stored for the status API.
    let (_, s) = api(&app, reqwest::Method::GET, "/api/sync/status", None).await;
    assert_eq!(s["integrity"]["found"], 3, "{s}");
}

#[tokio::test]
async fn a_full_resync_rebuilds_without_emptying_the_table() {
    let fake = FakeD1::start(SCHEMA).await;
    let app = spawn(&fake, &[]).await;
    exec(
        &app,
        &format!(
            "SET syncbridge.origin = 'd1'; {} RESET syncbridge.origin;",
            prospects_sql(1, 3000)
        ),
    )
    .await;
    // D1 has a stale copy: an old name on every row, and rows since deleted.
    fake.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO prospects (id, name) SELECT printf('00000000-0000-4000-8000-%012d', i), 'stale' FROM n;
         INSERT INTO prospects (id, name) VALUES ('deleted-1', 'stale'), ('deleted-2', 'stale');",
    );
    let (status, r) = api(
        &app,
        reqwest::Method::POST,
        "/api/sync/full",
        Some(json!({"provider": "d1", "entity": "prospects"})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    // While it runs, readers of D1 always find the rows.
    let mut least = i64::MAX;
    let mut done = Value::Null;
    for _ in 0..1200 {
        least = least.min(d1_count(&fake, "SELECT count(*) AS n FROM prospects"));
        let (_, s) = api(&app, reqwest::Method::GET, "/api/sync/status", None).await;
        let job = &s["jobs"]["d1.resync.prospects"];
        if job["finished_at"].is_string() {
            done = job.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(done["progress"]["upserted"], 3000, "{done}");
    assert_eq!(done["progress"]["deleted"], 2, "{done}");
    assert!(least >= 3000, "D1 was emptied (down to {least} rows)");
    assert_eq!(d1_count(&fake, "SELECT count(*) AS n FROM prospects"), 3000);
    assert_eq!(
        d1_count(
            &fake,
            "SELECT count(*) AS n FROM prospects WHERE name = 'stale'"
        ),
        0
    );
}

#[tokio::test]
async fn two_processes_run_each_job_once_per_interval() {
    let fake = FakeD1::start(SCHEMA).await;
    let app = spawn(&fake, &[("SYNCBRIDGE_D1_PUSH_INTERVAL_S", "1")]).await;
    let env = d1_env(&fake);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SYNCBRIDGE_D1_PUSH_INTERVAL_S", "1"));
    let other = common::ServeProcess::start(&app.db.url, &env);
    other.answers("/readyz", reqwest::StatusCode::OK).await;
    // A row written without capture is found by the reconciliation.
    exec(
        &app,
        &format!(
            "SET syncbridge.origin = 'd1'; {} RESET syncbridge.origin;",
            prospects_sql(1, 3)
        ),
    )
    .await;
    until_d1(&fake, "SELECT count(*) AS n FROM prospects", 3).await;
    for _ in 0..100 {
        if scalar(&app, "SELECT count(*) FROM sync_job_runs WHERE job = 'd1.reconcile' AND finished_at IS NOT NULL").await >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let starts: Vec<f64> = app
        .client()
        .await
        .query(
            "SELECT extract(epoch FROM started_at)::float8 FROM sync_job_runs
             WHERE job = 'd1.reconcile' ORDER BY started_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(starts.len() >= 4, "{starts:?}");
    for w in starts.windows(2) {
        assert!(
            w[1] - w[0] >= 0.95,
            "two runs within one interval: {starts:?}"
        );
    }
    let overlapping = scalar(
        &app,
        "SELECT count(*) FROM sync_job_runs a JOIN sync_job_runs b ON a.id < b.id
         WHERE a.job = 'd1.reconcile' AND b.job = a.job AND b.started_at < a.finished_at",
    )
    .await;
    assert_eq!(overlapping, 0, "runs never side by side");
}

/// Issue 13's "done when", with the real binary: `serve` against the fake
/// D1 with short intervals; a prospect inserted with SQL appears in D1, a
/// deleted one disappears, an e-mail written at the edge appears in
/// Postgres and is marked synced there.
#[tokio::test]
async fn serve_keeps_d1_in_sync_both_ways() {
    let fake = FakeD1::start(SCHEMA).await;
    let db = common::TestDb::create().await;
    let mut env = d1_env(&fake);
    env.retain(|(k, _)| *k != "SYNCBRIDGE_D1_PULL_INTERVAL_S");
    env.push(("SYNCBRIDGE_D1_PULL_INTERVAL_S", "1".into()));
    env.push(("SYNCBRIDGE_D1_PUSH_INTERVAL_S", "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = common::ServeProcess::start(&db.url, &env);
    serve.answers("/readyz", reqwest::StatusCode::OK).await;
    let c = db.client().await;
    // As an operator would: psql.
    psql(&db.url, &prospects_sql(1, 2)).await;
    until_d1(&fake, "SELECT count(*) AS n FROM prospects", 2).await;
    psql(
        &db.url,
        &format!("DELETE FROM prospects WHERE id = '{}'", pid(1)),
    )
    .await;
    until_d1(&fake, "SELECT count(*) AS n FROM prospects", 1).await;
    fake.exec(&format!(
        "INSERT INTO emails (id, prospect_id, subject, message_id, direction, status, created_at)
         VALUES ('edge-1', '{}', 'Hi', '<edge-1@mail>', 'inbound', 'received', '2026-12-02T04:00:00.000Z');",
        pid(2)
    ));
    until_d1(
        &fake,
        "SELECT count(*) AS n FROM emails WHERE synced_to_supabase = 1",
        1,
    )
    .await;
    let stored: i64 = c
        .query_one(
            "SELECT count(*) FROM emails WHERE id = 'edge-1' AND subject = 'Hi'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
}

async fn psql(url: &str, sql: &str) {
    let out = tokio::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .await
        .expect("psql runs (the postgresql client is installed with the server)");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn resync_on_the_command_line_rebuilds_d1_in_the_foreground() {
    let fake = FakeD1::start(SCHEMA).await;
    let db = common::TestDb::create().await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "SET syncbridge.origin = 'd1'; {} RESET syncbridge.origin;",
        prospects_sql(1, 500)
    ))
    .await
    .unwrap();
    fake.exec("INSERT INTO prospects (id, name) VALUES ('deleted-1', 'stale')");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_syncbridge"));
    cmd.args(["resync", "d1", "prospects"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .envs(d1_env(&fake));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("d1.resync.prospects"), "{stdout}");
    assert_eq!(d1_count(&fake, "SELECT count(*) AS n FROM prospects"), 500);
    // A table D1 does not take is refused with what it takes.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_syncbridge"));
    cmd.args(["resync", "d1", "clients"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .envs(d1_env(&fake));
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("d1 syncs prospects, campaigns, mailboxes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
