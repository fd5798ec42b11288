//! Process-level reliability (SPEC §9): the real binary killed mid-push and
//! restarted; two `serve` processes on one database; Postgres restarted
//! under webhook load; the binary killed under webhook load.

mod common;

use std::time::Duration;

use common::fake_openphone::{FakeOpenPhone, Fault, API_KEY};
use common::*;

/// `serve` pushing to the fake OpenPhone.
fn serve(db_url: &str, fake: &FakeOpenPhone) -> ServeProcess {
    ServeProcess::start(
        db_url,
        &[
            ("OPENPHONE_API_KEY", API_KEY),
            ("OPENPHONE_API_URL", &fake.url),
            ("OPENPHONE_WEBHOOK_KEY", OPENPHONE_WEBHOOK_KEY),
            ("SYNCBRIDGE_RETRY_BASE_MS", "100"),
            ("SYNCBRIDGE_PUSH_TIMEOUT_MS", "10000"),
        ],
    )
}

/// One delivery's event id and its answer (a status, or why none came).
type Answer = (String, Result<u16, String>);

/// Senders posting distinct signed deliveries to `base` until told to
/// stop; what each was answered.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Answer>>>,
}

impl Load {
    fn start(base: &str, senders: usize, run: &str) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let tasks = (0..senders)
            .map(|s| {
                let (stop, client) = (stop.clone(), client.clone());
                let url = format!("{base}/webhooks/openphone");
                let run = run.to_owned();
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let id = format!("EV{run}s{s}n{n}");
                        let body = message_event(
                            &id,
                            &format!("AC{run}s{s}n{n}"),
                            "+14155550142",
                            "load",
                            "2025-03-14T16:05:00.000Z",
                        );
                        let mut req = client.post(&url).body(body.clone());
                        for (k, v) in
                            openphone_headers(&body, chrono::Utc::now().timestamp_millis())
                        {
                            req = req.header(k, v);
                        }
                        let answer = match req.send().await {
                            Ok(r) => Ok(r.status().as_u16()),
                            Err(e) => Err(e.to_string()),
                        };
                        if answer.is_err() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        answers.push((id, answer));
                    }
                    answers
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

/// Every delivery answered 200 is in the inbox.
async fn assert_acknowledged_stored(c: &tokio_postgres::Client, answers: &[Answer]) {
    let acked: Vec<&str> = answers
        .iter()
        .filter(|(_, a)| *a == Ok(200))
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(!acked.is_empty(), "no delivery was acknowledged");
    let stored: Vec<String> = c
        .query(
            "SELECT event_id FROM webhook_events WHERE event_id = ANY($1)",
            &[&acked],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stored: std::collections::HashSet<&str> = stored.iter().map(String::as_str).collect();
    let lost: Vec<&&str> = acked.iter().filter(|id| !stored.contains(**id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged deliveries lost: {lost:?}",
        lost.len()
    );
}

#[tokio::test]
async fn postgres_restarted_under_webhook_load_loses_no_acknowledged_delivery() {
    use syncbridge::db::embedded::{EmbeddedOptions, EmbeddedPostgres};
    let fake = FakeOpenPhone::start().await;
    let dir = std::env::temp_dir().join(format!("sb-pg-restart-{}", uuid::Uuid::new_v4().simple()));
    let opts = EmbeddedOptions {
        data_dir: dir.join("data"),
        port: Some(free_port()),
        database: "syncbridge".into(),
    };
    let pg = EmbeddedPostgres::start(opts.clone())
        .await
        .expect("a private cluster from the installed PostgreSQL binaries (initdb, pg_ctl)");
    let url = pg.url();
    let serve = serve(&url, &fake);
    serve.answers("/readyz", reqwest::StatusCode::OK).await;

    let load = Load::start(&serve.base, 8, "pg");
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.stop().await.expect("pg_ctl stop -m fast");
    serve
        .answers("/readyz", reqwest::StatusCode::SERVICE_UNAVAILABLE)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pg = EmbeddedPostgres::start(opts)
        .await
        .expect("the cluster starts again");
    serve.answers("/readyz", reqwest::StatusCode::OK).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers = load.finish().await;

    let c = syncbridge::db::connect(&url).await.unwrap();
    assert_acknowledged_stored(&c, &answers).await;
    let refused = answers.iter().filter(|(_, a)| *a == Ok(503)).count();
    let acked = answers.iter().filter(|(_, a)| *a == Ok(200)).count();
    eprintln!(
        "Postgres restart under load: {acked} acknowledged (all stored), {refused} answered 503"
    );
    assert!(
        refused > 0,
        "deliveries during the outage were answered 503"
    );
    let other: Vec<_> = answers
        .iter()
        .filter(|(_, a)| !matches!(a, Ok(200) | Ok(503)))
        .collect();
    assert!(
        other.is_empty(),
        "only 200 or 503: {:?}",
        &other[..other.len().min(5)]
    );

    // The listener reconnected (readyz says so) and a local change made
    // after the restart is pushed.
    c.execute(
        "INSERT INTO clients (first_name, phone) VALUES ('After', '+14155550777')",
        &[],
    )
    .await
    .unwrap();
    fake.wait_for("the push after the restart", |r| {
        r.iter().any(|r| r.method == "POST" && r.status < 300)
    })
    .await;
    drop(c);
    drop(serve);
    pg.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serve_killed_under_webhook_load_loses_no_acknowledged_delivery() {
    let fake = FakeOpenPhone::start().await;
    let db = TestDb::create().await;
    let mut serve = serve(&db.url, &fake);
    serve.answers("/readyz", reqwest::StatusCode::OK).await;
    let load = Load::start(&serve.base, 8, "kill");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    serve.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = load.finish().await;
    let c = db.client().await;
    assert_acknowledged_stored(&c, &answers).await;
    assert!(
        answers.iter().any(|(_, a)| a.is_err()),
        "the kill happened under load"
    );
}

async fn scalar(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn killed_mid_push_then_restarted_pushes_once_without_a_duplicate_contact() {
    let fake = FakeOpenPhone::start().await;
    let db = TestDb::create().await;
    let c = db.client().await;
    // The look-up answers at once; the create is applied by OpenPhone but
    // its answer takes 5 s — the process dies while waiting for it.
    fake.fail_next([
        Fault::Slow(Duration::ZERO),
        Fault::Slow(Duration::from_secs(5)),
    ]);
    let mut first = serve(&db.url, &fake);
    let id: uuid::Uuid = c
        .query_one(
            "INSERT INTO clients (first_name, phone) VALUES ('Dana', '(415) 555-0142') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    fake.wait_for("the create", |r| r.iter().any(|r| r.method == "POST"))
        .await;
    first.kill();

    // Nothing was recorded as done: the claim's transaction died with it.
    wait_until("the killed session's rollback", async || {
        scalar(
            &c,
            "SELECT count(*) FROM sync_outbox WHERE status = 'pending'",
        )
        .await
            == 1
    })
    .await;
    let stored: Option<String> = c
        .query_one(
            "SELECT openphone_contact_id FROM clients WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, None);

    let _second = serve(&db.url, &fake);
    wait_until("the client to be synced", async || {
        let s: Option<String> = c
            .query_one("SELECT sync_status FROM clients WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        s.as_deref() == Some("synced")
    })
    .await;
    let contacts = fake.contacts_with_external_id(&id.to_string());
    assert_eq!(contacts.len(), 1, "one contact, not two: {contacts:#?}");
    let posts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(
        posts, 1,
        "the restart found the contact by external id instead of creating again"
    );
    let stored: Option<String> = c
        .query_one(
            "SELECT openphone_contact_id FROM clients WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.as_deref(), contacts[0]["id"].as_str());
}

#[tokio::test]
async fn two_serve_processes_never_push_a_change_twice() {
    let fake = FakeOpenPhone::start().await;
    let db = TestDb::create().await;
    let c = db.client().await;
    let _a = serve(&db.url, &fake);
    let _b = serve(&db.url, &fake);

    // A stream of changes: six clients, each updated four times.
    let mut ids = Vec::new();
    for i in 0..6 {
        let id: uuid::Uuid = c
            .query_one(
                "INSERT INTO clients (first_name, last_name, phone) VALUES ($1, '0', $2) RETURNING id",
                &[&format!("client{i}"), &format!("+1415555{:04}", 100 + i)],
            )
            .await
            .unwrap()
            .get(0);
        ids.push(id);
    }
    for round in 1..=4 {
        for id in &ids {
            c.execute(
                "UPDATE clients SET last_name = $2 WHERE id = $1",
                &[id, &round.to_string()],
            )
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    wait_until("every change to be pushed", async || {
        scalar(
            &c,
            "SELECT count(*) FROM sync_outbox WHERE status <> 'done'",
        )
        .await
            == 0
            && scalar(
                &c,
                "SELECT count(*) FROM clients WHERE sync_status <> 'synced'",
            )
            .await
                == 0
    })
    .await;

    // A change needs a second attempt only when its record's request was
    // refused (two processes share one API key's 10 req/s, so OpenPhone
    // answers 429). Any other retried change would mean double processing.
    let mut refused_records = std::collections::HashSet::new();
    for r in fake.requests().iter().filter(|r| r.status == 429) {
        let by_query = r.query.get("externalIds").cloned();
        let by_body = r
            .body
            .as_ref()
            .and_then(|b| b["externalId"].as_str().map(str::to_owned));
        let by_path = match r.path.strip_prefix("/v1/contacts/") {
            Some(contact) => c
                .query_opt(
                    "SELECT id::text FROM clients WHERE openphone_contact_id = $1",
                    &[&contact],
                )
                .await
                .unwrap()
                .map(|r| r.get::<_, String>(0)),
            None => None,
        };
        refused_records.extend(by_query.or(by_body).or(by_path));
    }
    let retried: Vec<String> = c
        .query(
            "SELECT DISTINCT record_id::text FROM sync_outbox WHERE attempts > 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for r in &retried {
        assert!(
            refused_records.contains(r),
            "{r} was retried without a refusal: processed twice?"
        );
    }

    // One contact per client, and per contact the pushed states only move
    // forward: no state was pushed twice.
    assert_eq!(fake.contacts().len(), ids.len());
    for id in &ids {
        assert_eq!(fake.contacts_with_external_id(&id.to_string()).len(), 1);
        let contact_id: String = c
            .query_one(
                "SELECT openphone_contact_id FROM clients WHERE id = $1",
                &[id],
            )
            .await
            .unwrap()
            .get(0);
        let states: Vec<i64> = fake
            .writes()
            .iter()
            .filter(|w| {
                w.path.ends_with(&contact_id)
                    || w.body
                        .as_ref()
                        .is_some_and(|b| b["externalId"] == id.to_string())
            })
            .filter_map(|w| {
                w.body.as_ref()?["defaultFields"]["lastName"]
                    .as_str()?
                    .parse()
                    .ok()
            })
            .collect();
        assert!(
            states.windows(2).all(|w| w[0] < w[1]),
            "{id}: pushed states {states:?}"
        );
        assert_eq!(states.last(), Some(&4), "{id}: the final state arrived");
    }
}
