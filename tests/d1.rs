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
