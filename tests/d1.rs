//! The D1 client (issue 13, the first part) against the fake D1 over a
//! real SQLite: statements and batches, D1's limits, its error envelope,
//! rate limits and faults.

mod common;

use std::time::{Duration, Instant};

use common::fake_d1::{self, FakeD1, Fault};
use serde_json::json;
use syncbridge::config::Settings;
use syncbridge::providers::d1::api::{CallError, D1Api};
use syncbridge::providers::d1::config::D1Config;
use syncbridge::providers::d1::wire::{self, D1Error, SqlError, Statement};

const SCHEMA: &str = "
    CREATE TABLE prospects (id TEXT PRIMARY KEY, name TEXT, score INTEGER, email_bounced INTEGER,
                            updated_at TEXT);
    CREATE TABLE emails (id TEXT PRIMARY KEY, message_id TEXT UNIQUE, synced_to_supabase INTEGER DEFAULT 0);";

fn api(fake: &FakeD1, token: &str) -> D1Api {
    let config = D1Config::from_settings(&Settings::from_pairs([
        ("D1_API_URL", fake.url.as_str()),
        ("D1_ACCOUNT_ID", fake_d1::ACCOUNT),
        ("D1_DATABASE_ID", fake_d1::DATABASE),
        ("D1_API_TOKEN", token),
        ("D1_API_RATE_PER_MIN", "240"),
        ("D1_RETRY_BASE_MS", "10"),
    ]))
    .unwrap();
    D1Api::new(&config, Duration::from_millis(500)).unwrap()
}

fn row(i: usize) -> Vec<Option<String>> {
    vec![
        Some(format!("p-{i:04}")),
        Some(format!("Prospect {i}")),
        Some((i % 100).to_string()),
        wire::param(&json!(i % 2 == 0)),
        if i % 5 == 0 {
            None
        } else {
            Some("2025-03-14T15:00:00.000Z".into())
        },
    ]
}

const COLUMNS: [&str; 5] = ["id", "name", "score", "email_bounced", "updated_at"];

#[tokio::test]
async fn a_thousand_upserts_go_in_a_few_batches_and_read_back_typed() {
    let fake = FakeD1::start(SCHEMA).await;
    let d1 = api(&fake, fake_d1::TOKEN);
    let rows: Vec<_> = (0..1000).map(row).collect();
    let statements = wire::upserts("prospects", &COLUMNS, &rows);
    assert_eq!(statements.len(), 50, "20 rows of 5 parameters a statement");
    let batches = wire::batches(statements, 900_000);
    for b in &batches {
        let results = d1.batch(b).await.unwrap();
        assert_eq!(results.len(), b.len());
    }
    assert!(
        fake.requests().len() <= 2,
        "{} requests",
        fake.requests().len()
    );
    let got = d1
        .query(&Statement::new(
            "SELECT count(*) AS n, sum(email_bounced) AS bounced, count(updated_at) AS dated FROM prospects",
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(got[0]["n"], 1000);
    assert_eq!(got[0]["bounced"], 500, "booleans as 0/1");
    assert_eq!(got[0]["dated"], 800, "nulls stay NULL");
    let one = d1
        .query(&Statement::new(
            "SELECT score FROM prospects WHERE id = ?1",
            vec!["p-0042".into()],
        ))
        .await
        .unwrap();
    assert_eq!(
        one[0]["score"], 42,
        "text parameters take the column's affinity"
    );

    // Upserting again updates in place.
    let again = wire::upserts(
        "prospects",
        &["id", "name"],
        &[vec![Some("p-0001".into()), Some("Renamed".into())]],
    );
    d1.batch(&again).await.unwrap();
    assert_eq!(
        fake.rows("SELECT name FROM prospects WHERE id = 'p-0001'")[0]["name"],
        "Renamed"
    );
    assert_eq!(
        fake.rows("SELECT count(*) AS n FROM prospects")[0]["n"],
        1000
    );

    let ids: Vec<String> = (0..250).map(|i| format!("p-{i:04}")).collect();
    d1.batch(&wire::deletes("prospects", "id", &ids))
        .await
        .unwrap();
    assert_eq!(
        fake.rows("SELECT count(*) AS n FROM prospects")[0]["n"],
        750
    );
}

#[tokio::test]
async fn columns_are_read_with_pragma_table_info() {
    let fake = FakeD1::start(SCHEMA).await;
    let d1 = api(&fake, fake_d1::TOKEN);
    assert_eq!(d1.columns("prospects").await.unwrap(), COLUMNS);
    assert!(d1.columns("mailboxes").await.unwrap().is_empty());
}

#[tokio::test]
async fn sql_errors_are_typed_and_a_failed_batch_applies_nothing() {
    let fake = FakeD1::start(SCHEMA).await;
    let d1 = api(&fake, fake_d1::TOKEN);
    fn sql_error<T>(r: Result<T, CallError>) -> SqlError {
        match r {
            Err(CallError::D1(D1Error::Sql { kind, .. })) => kind,
            Err(e) => panic!("not a SQL error: {e}"),
            Ok(_) => panic!("not an error"),
        }
    }
    let missing = d1
        .query(&Statement::new("SELECT * FROM raw_mails", vec![]))
        .await;
    assert_eq!(sql_error(missing), SqlError::NoSuchTable);
    let no_column = d1
        .batch(&wire::upserts(
            "prospects",
            &["id", "tier"],
            &[vec![Some("x".into()), Some("A".into())]],
        ))
        .await;
    assert_eq!(sql_error(no_column), SqlError::NoSuchColumn);
    let marks: Vec<String> = (1..=101).map(|i| format!("?{i}")).collect();
    let too_many = d1
        .query(&Statement::new(
            format!("SELECT {}", marks.join(", ")),
            (0..101).map(|i| i.to_string()).collect(),
        ))
        .await;
    assert_eq!(sql_error(too_many), SqlError::TooBig);
    // A batch whose second statement fails leaves the first unapplied.
    let batch = vec![
        Statement::new(
            "INSERT INTO emails (id, message_id) VALUES (?1, ?2)",
            vec!["e1".into(), "m1".into()],
        ),
        Statement::new(
            "INSERT INTO emails (id, message_id) VALUES (?1, ?2)",
            vec!["e2".into(), "m1".into()],
        ),
    ];
    assert_eq!(sql_error(d1.batch(&batch).await), SqlError::UniqueViolation);
    assert_eq!(fake.rows("SELECT count(*) AS n FROM emails")[0]["n"], 0);
    // SQL errors are not retried.
    assert_eq!(
        fake.requests().iter().filter(|r| r.status == 400).count(),
        4
    );
}

#[tokio::test]
async fn rate_limits_and_server_faults_are_retried_and_a_bad_token_is_not() {
    let fake = FakeD1::start(SCHEMA).await;
    let d1 = api(&fake, fake_d1::TOKEN);
    fake.fail_next([
        Fault::RateLimited(1),
        Fault::Status(502),
        Fault::Drop,
        Fault::Slow(Duration::from_secs(2)),
    ]);
    let started = Instant::now();
    let rows = d1
        .query(&Statement::new("SELECT 1 AS one", vec![]))
        .await
        .unwrap();
    assert_eq!(rows[0]["one"], 1);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retry-after honoured"
    );
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [429, 502, 0, 200, 200],
        "the timed-out answer was retried too"
    );

    let bad = api(&fake, "wrong-token");
    match bad.query(&Statement::new("SELECT 1", vec![])).await {
        Err(CallError::D1(D1Error::Api { code: 10000, .. })) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(fake.requests().last().unwrap().status, 401);
    assert_eq!(
        fake.requests().iter().filter(|r| r.status == 401).count(),
        1,
        "authentication errors are not retried"
    );
}

const EMAILS: &str = "
    CREATE TABLE emails (id TEXT PRIMARY KEY, prospect_id TEXT, campaign_id TEXT, subject TEXT,
        body TEXT, to_email TEXT, from_email TEXT, message_id TEXT, direction TEXT, status TEXT,
        sent_at TEXT, opened_at TEXT, clicked_at TEXT, replied_at TEXT, bounced_at TEXT,
        created_at TEXT, synced_to_supabase INTEGER NOT NULL DEFAULT 0);";
const ADMIN: &str = "d1-admin-token";

fn insert_emails(fake: &FakeD1, from: usize, n: usize) {
    let mut sql = String::new();
    for i in from..from + n {
        sql.push_str(&format!(
            "INSERT INTO emails (id, prospect_id, subject, to_email, message_id, direction, status,
                                 sent_at, created_at)
             VALUES ('em-{i:05}', 'p-{}', 'Hello {i}', 'x{i}@example.com', '<m{i}@mail>',
                     'outbound', 'sent', '2025-03-14T15:00:00.000Z',
                     '2025-03-14T15:{:02}:{:02}.000Z');",
            i % 7,
            (i / 60) % 60,
            i % 60
        ));
    }
    fake.exec(&sql);
}

async fn spawn(fake: &FakeD1) -> common::TestApp {
    let url = fake.url.clone();
    common::TestApp::spawn_with(|s| {
        s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN);
        s.set("D1_API_URL", url);
        s.set("D1_ACCOUNT_ID", fake_d1::ACCOUNT);
        s.set("D1_DATABASE_ID", fake_d1::DATABASE);
        s.set("D1_API_TOKEN", fake_d1::TOKEN);
        s.set("D1_API_RATE_PER_MIN", "240");
        s.set("D1_RETRY_BASE_MS", "10");
        // Pulled by the tests, not the schedule.
        s.set("SYNCBRIDGE_D1_PULL_INTERVAL_S", "0");
    })
    .await
}

async fn pull(app: &common::TestApp, query: &str) -> serde_json::Value {
    let r = app
        .http
        .post(app.url(&format!("/api/d1/sync-all{query}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    r.json().await.unwrap()
}

async fn scalar(app: &common::TestApp, sql: &str) -> i64 {
    app.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn emails_are_pulled_stored_once_and_marked_only_after_the_commit() {
    let fake = FakeD1::start(EMAILS).await;
    insert_emails(&fake, 0, 250);
    let app = spawn(&fake).await;

    // A dry run stores nothing and marks nothing.
    let dry = pull(&app, "?dryRun=true").await;
    assert_eq!(dry["pulledEmails"], 250, "{dry}");
    assert_eq!(dry["markedSynced"], 0);
    assert_eq!(scalar(&app, "SELECT count(*) FROM emails").await, 0);
    assert_eq!(
        fake.rows("SELECT count(*) AS n FROM emails WHERE synced_to_supabase = 1")[0]["n"],
        0
    );

    let s = pull(&app, "").await;
    assert_eq!(
        (
            s["pulledEmails"].clone(),
            s["storedEmails"].clone(),
            s["markedSynced"].clone()
        ),
        (json!(250), json!(250), json!(250)),
        "{s}"
    );
    assert_eq!(s["errors"], json!([]));
    assert_eq!(scalar(&app, "SELECT count(*) FROM emails").await, 250);
    // An e-mail of a prospect unknown here is stored, not dropped.
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM emails WHERE prospect_id = 'p-3'"
        )
        .await,
        36
    );
    let row = app
        .client()
        .await
        .query_one(
            "SELECT subject, sent_at = '2025-03-14T15:00:00Z', message_id FROM emails WHERE id = 'em-00042'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Hello 42");
    assert!(row.get::<_, bool>(1), "ISO timestamps become timestamptz");
    assert_eq!(row.get::<_, String>(2), "<m42@mail>");
    assert_eq!(
        fake.rows("SELECT count(*) AS n FROM emails WHERE synced_to_supabase = 0")[0]["n"],
        0
    );
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM webhook_events WHERE provider = 'd1' AND status = 'processed'"
        )
        .await,
        250
    );
    // Nothing left: the next run pulls nothing.
    let again = pull(&app, "").await;
    assert_eq!(again["pulledEmails"], 0, "{again}");
}

#[tokio::test]
async fn a_failed_mark_delivers_the_page_again_and_changes_nothing() {
    let fake = FakeD1::start(EMAILS).await;
    insert_emails(&fake, 0, 30);
    let app = spawn(&fake).await;
    // The page reads; the mark fails on every attempt.
    fake.fail_next(
        std::iter::once(Fault::Slow(Duration::ZERO))
            .chain(std::iter::repeat_n(Fault::Status(503), 5)),
    );
    let s = pull(&app, "").await;
    assert_eq!(s["storedEmails"], 30, "{s}");
    assert_eq!(s["markedSynced"], 0);
    assert!(
        s["errors"][0].as_str().unwrap().contains("come again"),
        "{s}"
    );
    assert_eq!(
        fake.rows("SELECT count(*) AS n FROM emails WHERE synced_to_supabase = 0")[0]["n"],
        30
    );

    let s = pull(&app, "").await;
    assert_eq!(
        (
            s["pulledEmails"].clone(),
            s["storedEmails"].clone(),
            s["unchangedEmails"].clone(),
            s["markedSynced"].clone()
        ),
        (json!(30), json!(0), json!(30), json!(30)),
        "{s}"
    );
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM emails").await,
        30,
        "no duplicate"
    );
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM webhook_events WHERE provider = 'd1'"
        )
        .await,
        30,
        "the same state is the same delivery"
    );
}

#[tokio::test]
async fn an_edge_update_between_the_read_and_the_mark_is_pulled_next_time() {
    let fake = FakeD1::start(EMAILS).await;
    insert_emails(&fake, 0, 3);
    let app = spawn(&fake).await;
    // The page's answer is slow; meanwhile (once the page has been read:
    // waited for, not timed) the edge records an open.
    fake.fail_next([Fault::Slow(Duration::from_millis(1000))]);
    let run = pull(&app, "");
    let edit = async {
        let read = |f: &FakeD1| {
            f.requests().iter().any(|r| {
                r.statements.iter().any(|s| {
                    s.to_ascii_lowercase()
                        .trim_start()
                        .starts_with("select * from emails")
                })
            })
        };
        for _ in 0..2000 {
            if read(&fake) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(read(&fake), "the pull read the page");
        fake.exec("UPDATE emails SET status = 'opened', opened_at = '2025-03-14T16:00:00.000Z' WHERE id = 'em-00001'");
    };
    let (s, ()) = tokio::join!(run, edit);
    assert_eq!(s["markedSynced"], 2, "the changed row is not marked: {s}");
    let s = pull(&app, "").await;
    assert_eq!(
        (s["pulledEmails"].clone(), s["storedEmails"].clone()),
        (json!(1), json!(1)),
        "{s}"
    );
    let status: String = app
        .client()
        .await
        .query_one("SELECT status FROM emails WHERE id = 'em-00001'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "opened");
    let (_, audit) = {
        let r = app
            .http
            .get(app.url("/api/d1/audit"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(audit["d1EmailCount"], 3, "{audit}");
    assert_eq!(audit["localEmailCount"], 3);
    assert_eq!(audit["unsyncedInD1"], 0);
    assert_eq!(audit["missingLocally"], json!([]));
}

/// The scheduler pulls e-mails every `SYNCBRIDGE_D1_PULL_INTERVAL_S`; with
/// two processes (here an in-process app and the real binary) the job runs
/// once per interval, never side by side.
#[tokio::test]
async fn two_processes_pull_once_per_interval() {
    let fake = FakeD1::start(EMAILS).await;
    insert_emails(&fake, 0, 20);
    let url = fake.url.clone();
    let app = common::TestApp::spawn_with(|s| {
        s.set("D1_API_URL", url.clone());
        s.set("D1_ACCOUNT_ID", fake_d1::ACCOUNT);
        s.set("D1_DATABASE_ID", fake_d1::DATABASE);
        s.set("D1_API_TOKEN", fake_d1::TOKEN);
        s.set("D1_API_RATE_PER_MIN", "240");
        s.set("SYNCBRIDGE_D1_PULL_INTERVAL_S", "1");
    })
    .await;
    let other = common::ServeProcess::start(
        &app.db.url,
        &[
            ("D1_API_URL", &url),
            ("D1_ACCOUNT_ID", fake_d1::ACCOUNT),
            ("D1_DATABASE_ID", fake_d1::DATABASE),
            ("D1_API_TOKEN", fake_d1::TOKEN),
            ("D1_API_RATE_PER_MIN", "240"),
            ("SYNCBRIDGE_D1_PULL_INTERVAL_S", "1"),
            ("SYNCBRIDGE_D1_PUSH_INTERVAL_S", "0"),
            ("SYNCBRIDGE_INTEGRITY_INTERVAL_S", "0"),
        ],
    );
    other.answers("/readyz", reqwest::StatusCode::OK).await;
    // New e-mails at the edge are picked up by the schedule.
    insert_emails(&fake, 20, 5);
    let mut waited = 0;
    while scalar(&app, "SELECT count(*) FROM emails").await < 25
        || scalar(
            &app,
            "SELECT count(*) FROM sync_pull_runs WHERE finished_at IS NOT NULL",
        )
        .await
            < 3
    {
        assert!(waited < 300, "the schedule did not pull within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(scalar(&app, "SELECT count(*) FROM emails").await, 25);
    let starts: Vec<f64> = app
        .client()
        .await
        .query(
            "SELECT extract(epoch FROM started_at)::float8 FROM sync_pull_runs
             WHERE provider = 'd1' ORDER BY started_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(starts.len() >= 3, "{starts:?}");
    for w in starts.windows(2) {
        assert!(
            w[1] - w[0] >= 0.95,
            "two runs within one interval: {starts:?}"
        );
    }
    let overlapping = scalar(
        &app,
        "SELECT count(*) FROM sync_pull_runs a JOIN sync_pull_runs b ON a.id < b.id
         WHERE a.provider = 'd1' AND b.provider = 'd1' AND b.started_at < a.finished_at",
    )
    .await;
    assert_eq!(overlapping, 0, "runs never side by side");
}
