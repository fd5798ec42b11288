//! The Teli call sync (issue 12, SPEC §4.4) against the fake Teli API and
//! the real Postgres, through the real HTTP front (`POST /api/teli/sync-all`)
//! and the real binary (`pull teli --json`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::fake_teli::{self, make_call, FakeTeli, Fault};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "teli-admin-token";
const JOE: &str = "agent_abc123";
const PIZZA: &str = "agent_xyz789";
const STRANGER: &str = "agent_unknown";
/// 2025-03-14T16:00:00Z.
const T0: i64 = 1_741_968_000_000;

async fn spawn(fake: &FakeTeli) -> TestApp {
    spawn_on(fake, TestDb::create().await).await
}

async fn spawn_on(fake: &FakeTeli, db: TestDb) -> TestApp {
    spawn_tweaked(fake, db, |_| {}).await
}

async fn spawn_tweaked(
    fake: &FakeTeli,
    db: TestDb,
    tweak: impl FnOnce(&mut syncbridge::config::Settings),
) -> TestApp {
    let url = fake.url.clone();
    TestApp::spawn_on(db, |s| {
        s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN);
        s.set("TELI_API_KEY", fake_teli::API_KEY);
        s.set("TELI_API_URL", url);
        s.set("TELI_ORGANIZATION_ID", fake_teli::ORG);
        s.set("TELI_API_RATE", "1000");
        s.set("TELI_RETRY_BASE_MS", "20");
        tweak(s);
    })
    .await
}

async fn businesses(c: &tokio_postgres::Client) {
    c.batch_execute(&format!(
        "INSERT INTO businesses (name, teli_agent_id) VALUES
             ('Joe''s Barber', '{JOE}'), ('Pizza Palace', '{PIZZA}')"
    ))
    .await
    .unwrap();
}

fn call(n: i64, agent: &str, phone: Option<&str>) -> Value {
    make_call(
        &format!("call_{n:04}"),
        agent,
        "inbound",
        phone,
        Some("+14155550100"),
        T0 + n * 60_000,
        json!({}),
    )
}

async fn sync(app: &TestApp, query: &str) -> (StatusCode, Value) {
    let r = app
        .http
        .post(app.url(&format!("/api/teli/sync-all{query}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let r = app
        .http
        .get(app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

fn summary(total: u64, synced: u64, new: u64, dup: u64, skipped: u64) -> Value {
    json!([total, synced, new, dup, skipped])
}

fn counts(s: &Value) -> Value {
    json!([
        s["totalCalls"],
        s["syncedCalls"],
        s["newCustomers"],
        s["duplicateCalls"],
        s["skippedCalls"]
    ])
}

#[tokio::test]
async fn the_seeds_test_results_then_a_second_run_of_all_duplicates() {
    let fake = FakeTeli::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    businesses(&c).await;
    // Six calls stored by an earlier run: four to Joe from two callers, two
    // to Pizza Palace from one.
    for (n, agent, phone) in [
        (1, JOE, "+14155550101"),
        (2, JOE, "+14155550101"),
        (3, JOE, "+14155550102"),
        (4, JOE, "+14155550102"),
        (5, PIZZA, "+14155550103"),
        (6, PIZZA, "+14155550103"),
    ] {
        fake.add(call(n, agent, Some(phone)));
    }
    let (status, first) = sync(&app, "").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(counts(&first), summary(6, 6, 3, 0, 0), "{first}");

    // Then: five new calls (one from a known customer, four from three new
    // ones) and two from an agent no business answers for.
    for (n, agent, phone) in [
        (7, JOE, "+14155550101"),
        (8, JOE, "+14155550104"),
        (9, JOE, "+14155550104"),
        (10, PIZZA, "+14155550105"),
        (11, PIZZA, "(415) 555-0106"),
        (12, STRANGER, "+14155550107"),
        (13, STRANGER, "+14155550108"),
    ] {
        fake.add(call(n, agent, Some(phone)));
    }
    let (status, s) = sync(&app, "").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    // The seed: 13 fetched, 5 synced, 3 new customers, 6 duplicates, 2
    // skipped (unknown agent).
    assert_eq!(counts(&s), summary(13, 5, 3, 6, 2), "{s}");
    assert_eq!(
        s["callsByBusiness"],
        json!({"Joe's Barber": 3, "Pizza Palace": 2})
    );
    assert_eq!(s["errors"], json!([]));
    let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "exactly the summary's keys: {keys:?}");

    // The second sync: nothing new, every stored call a duplicate.
    let (_, again) = sync(&app, "").await;
    assert_eq!(counts(&again), summary(13, 0, 0, 11, 2), "{again}");
    assert_eq!(again["callsByBusiness"], json!({}));

    assert_eq!(count(&c, "SELECT count(*) FROM messages").await, 11);
    assert_eq!(count(&c, "SELECT count(*) FROM customers").await, 6);
    // E.164 on the way in: '(415) 555-0106' is one customer.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM customers WHERE phone_number = '+14155550106'"
        )
        .await,
        1
    );
    // Pulled calls are inbox deliveries like any other: one per call
    // version, unknown agents' stored as listed and ignored with a reason.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM webhook_events WHERE provider = 'teli'"
        )
        .await,
        13
    );
    let ignored = c
        .query(
            "SELECT error FROM webhook_events WHERE provider = 'teli' AND status = 'ignored'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ignored.len(), 2);
    for r in ignored {
        let why: String = r.get(0);
        assert!(
            why.contains("unknown agent") && why.contains(STRANGER),
            "{why}"
        );
    }
    // Unknown agents' details were never fetched.
    assert!(!fake
        .requests()
        .iter()
        .any(|r| r.path.ends_with("call_0012") || r.path.ends_with("call_0013")));
    // One audit row per applied call, naming its inbox event.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sync_audit_log WHERE sync_source = 'teli' AND entity_type = 'messages'"
        )
        .await,
        11
    );
    let (_, events) = get(&app, "/api/sync/events?provider=teli").await;
    assert_eq!(events["events"].as_array().unwrap().len(), 13);

    // The progress endpoint shows the last run, finished, with its summary.
    let (status, p) = get(&app, "/api/teli/sync-all").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["running"], false);
    assert_eq!(p["summary"], again);
    assert_eq!(p["seen"], 13);
    assert!(p["finishedAt"].is_string());
    let (_, status) = get(&app, "/api/sync/status").await;
    assert_eq!(status["pulls"]["teli"]["summary"], again, "{status}");
}

#[tokio::test]
async fn two_hundred_fifty_calls_in_three_pages() {
    let fake = FakeTeli::start().await;
    for n in 0..250 {
        fake.add(call(n, JOE, Some(&format!("+1415555{:04}", n % 40))));
    }
    let app = spawn(&fake).await;
    let c = app.client().await;
    businesses(&c).await;
    let (status, s) = sync(&app, "").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(counts(&s), summary(250, 250, 40, 0, 0), "{s}");
    let lists: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/voice/calls")
        .collect();
    assert_eq!(lists.len(), 3, "{lists:#?}");
    for l in &lists {
        assert_eq!(l.query["is_admin"], "true");
        assert_eq!(l.query["limit"], "100");
        assert_eq!(l.query["organization_id"], fake_teli::ORG);
    }
    assert!(!lists[0].query.contains_key("end_date"));
    assert!(lists[1].query.contains_key("end_date"));
    assert_eq!(count(&c, "SELECT count(*) FROM messages").await, 250);
    let (_, p) = get(&app, "/api/teli/sync-all").await;
    assert_eq!(p["pages"], 3);
}

#[tokio::test]
async fn since_limits_the_window() {
    let fake = FakeTeli::start().await;
    for n in 0..10 {
        fake.add(call(n, JOE, Some("+14155550101")));
    }
    let app = spawn(&fake).await;
    businesses(&app.client().await).await;
    // Calls 0..10 start a minute apart from T0: since T0 + 6 min leaves 4.
    let (status, s) = sync(&app, "?since=2025-03-14T16:06:00Z").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(counts(&s), summary(4, 4, 1, 0, 0), "{s}");
    let list = &fake.requests()[0];
    assert_eq!(list.query["start_date"], "2025-03-14T16:06:00.000Z");
    let (status, bad) = sync(&app, "?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(bad["error"].is_string());
}

#[tokio::test]
async fn a_dry_run_reports_the_real_summary_and_writes_nothing() {
    let fake = FakeTeli::start().await;
    for n in 0..120 {
        let agent = if n % 10 == 0 { STRANGER } else { JOE };
        fake.add(call(n, agent, Some(&format!("+1415555{:04}", n % 7))));
    }
    fake.add(call(500, PIZZA, None));
    let app = spawn(&fake).await;
    let c = app.client().await;
    businesses(&c).await;
    let tables = "SELECT (SELECT count(*) FROM webhook_events) + (SELECT count(*) FROM messages)
                       + (SELECT count(*) FROM customers) + (SELECT count(*) FROM sync_audit_log)
                       + (SELECT count(*) FROM sync_pull_runs)";
    let (status, dry) = sync(&app, "?dryRun=true").await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(count(&c, tables).await, 0, "a dry run wrote rows");
    let (_, p) = get(&app, "/api/teli/sync-all").await;
    assert_eq!(p["dryRun"], true);
    let (_, real) = sync(&app, "").await;
    assert_eq!(dry, real, "the dry run's summary is the real one's");
    assert_eq!(counts(&real), summary(121, 108, 7, 0, 13), "{real}");
}

#[tokio::test]
async fn the_business_name_comes_from_the_database_and_the_customer_name_from_the_extraction() {
    let fake = FakeTeli::start().await;
    let mut c1 = call(1, JOE, Some("+14155550101"));
    c1["extracted_fields"] =
        json!({"business_name": "Jo's Barbers (misheard)", "customer_name": "Ada Lovelace"});
    fake.add(c1);
    let mut out = call(2, PIZZA, Some("+14155550100"));
    out["direction"] = json!("outbound");
    out["to_number"] = json!("+12125550187");
    out["extracted_fields"] = Value::Null;
    fake.add(out);
    let app = spawn(&fake).await;
    let c = app.client().await;
    businesses(&c).await;
    let (_, s) = sync(&app, "").await;
    assert_eq!(counts(&s), summary(2, 2, 2, 0, 0), "{s}");
    let row = c
        .query_one(
            "SELECT m.teli_data -> 'extracted_fields' ->> 'business_name', cu.name, cu.phone_number
             FROM messages m JOIN customers cu ON cu.id = m.customer_id
             WHERE m.teli_data ->> 'call_id' = 'call_0001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Joe's Barber");
    assert_eq!(row.get::<_, String>(1), "Ada Lovelace");
    assert_eq!(row.get::<_, String>(2), "+14155550101");
    // Outbound: the customer is the number called; no extraction, no name.
    let row = c
        .query_one(
            "SELECT m.teli_data -> 'extracted_fields' ->> 'business_name', cu.name, cu.phone_number
             FROM messages m JOIN customers cu ON cu.id = m.customer_id
             WHERE m.teli_data ->> 'call_id' = 'call_0002'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Pizza Palace");
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(row.get::<_, String>(2), "+12125550187");
}

#[tokio::test]
async fn a_call_analysed_later_is_refreshed_once_not_duplicated() {
    let fake = FakeTeli::start().await;
    fake.add(call(1, JOE, Some("+14155550101")));
    fake.add(call(2, JOE, Some("+14155550102")));
    let app = spawn(&fake).await;
    let c = app.client().await;
    businesses(&c).await;
    let (_, s) = sync(&app, "").await;
    assert_eq!(counts(&s), summary(2, 2, 2, 0, 0), "{s}");
    let later = chrono::Utc::now();
    fake.update("call_0001", later, |c| {
        c["extracted_fields"] = json!({"customer_name": "Dana Whitfield"});
        c["call_analysis"]["call_summary"] = json!("Wants a 2BR in April.");
    });
    let details_before = fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/voice/calls/"))
        .count();
    let (_, s) = sync(&app, "").await;
    assert_eq!(counts(&s), summary(2, 1, 0, 1, 0), "{s}");
    let details_after = fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/voice/calls/"))
        .count();
    assert_eq!(
        details_after - details_before,
        1,
        "only the changed call is fetched"
    );
    assert_eq!(count(&c, "SELECT count(*) FROM messages").await, 2);
    let row = c
        .query_one(
            "SELECT m.teli_data -> 'call_analysis' ->> 'call_summary', cu.name
             FROM messages m JOIN customers cu ON cu.id = m.customer_id
             WHERE m.teli_data ->> 'call_id' = 'call_0001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Wants a 2BR in April.");
    assert_eq!(row.get::<_, String>(1), "Dana Whitfield");
    let refreshed = count(
        &c,
        "SELECT count(*) FROM sync_audit_log WHERE sync_source = 'teli' AND decision = 'refreshed'",
    )
    .await;
    assert_eq!(refreshed, 1);
    let (_, s) = sync(&app, "").await;
    assert_eq!(counts(&s), summary(2, 0, 0, 2, 0), "{s}");
}

#[tokio::test]
async fn rate_limits_are_waited_out_and_server_errors_retried() {
    let fake = FakeTeli::start().await;
    for n in 0..5 {
        fake.add(call(n, JOE, Some("+14155550101")));
    }
    let app = spawn_tweaked(&fake, TestDb::create().await, |s| {
        s.set("SYNCBRIDGE_PUSH_TIMEOUT_MS", "300")
    })
    .await;
    businesses(&app.client().await).await;
    // A 429 and a 500 on the list, then a dropped connection and an answer
    // slower than the timeout on the first detail.
    fake.fail_next([
        Fault::RateLimited(1),
        Fault::Status(500),
        Fault::Slow(Duration::ZERO),
        Fault::Drop,
        Fault::Slow(Duration::from_secs(2)),
    ]);
    let started = std::time::Instant::now();
    let (status, s) = sync(&app, "").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(counts(&s), summary(5, 5, 1, 0, 0), "{s}");
    assert_eq!(s["errors"], json!([]));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After was honoured"
    );
    let statuses: Vec<(u16, &str)> = fake
        .requests()
        .iter()
        .map(|r| {
            (
                r.status,
                if r.path == "/v1/voice/calls" {
                    "list"
                } else {
                    "detail"
                },
            )
        })
        .collect();
    assert_eq!(
        &statuses[..6],
        &[
            (429, "list"),
            (500, "list"),
            (200, "list"),
            (0, "detail"),
            (200, "detail"),
            (200, "detail")
        ],
        "the dropped and the timed-out detail were retried: {statuses:?}"
    );
}

#[tokio::test]
async fn a_failure_that_outlasts_the_retries_ends_in_errors_and_keeps_what_was_stored() {
    let fake = FakeTeli::start().await;
    for n in 0..150 {
        fake.add(call(n, JOE, Some("+14155550101")));
    }
    let app = spawn(&fake).await;
    let c = app.client().await;
    businesses(&c).await;
    // One call's detail always fails; the second list page fails five
    // times (every attempt).
    fake.fail_detail("call_0140", 502);
    let (status, s) = sync(&app, "").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{s}");
    assert!(errors[0].as_str().unwrap().contains("call_0140"), "{s}");
    assert_eq!(s["syncedCalls"], 149);

    // Now the list itself fails past the retries on its second page: the
    // first page's calls stay stored.
    let fresh = FakeTeli::start().await;
    for n in 0..150 {
        fresh.add(call(n, JOE, Some("+14155550101")));
    }
    let app2 = spawn(&fresh).await;
    businesses(&app2.client().await).await;
    // First page and its 100 details pass; then every attempt fails.
    let mut faults = Vec::new();
    faults.extend(std::iter::repeat_n(Fault::Slow(Duration::ZERO), 101));
    faults.extend(std::iter::repeat_n(Fault::Status(503), 5));
    fresh.fail_next(faults);
    let (_, s) = sync(&app2, "").await;
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{s}");
    assert!(errors[0].as_str().unwrap().contains("listing calls"), "{s}");
    assert!(!errors[0].as_str().unwrap().contains(fake_teli::API_KEY));
    assert_eq!(s["syncedCalls"], 100);
    assert_eq!(
        count(&app2.client().await, "SELECT count(*) FROM messages").await,
        100
    );
}

#[tokio::test]
async fn a_second_run_while_one_is_running_answers_409_with_its_progress() {
    let fake = FakeTeli::start().await;
    for n in 0..3 {
        fake.add(call(n, JOE, Some("+14155550101")));
    }
    let app = spawn(&fake).await;
    businesses(&app.client().await).await;
    fake.fail_next([Fault::Slow(Duration::from_millis(1500))]);
    let first = sync(&app, "");
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let busy = sync(&app, "").await;
        let progress = get(&app, "/api/teli/sync-all").await;
        (busy, progress)
    };
    let ((s1, first), ((s2, busy), (_, progress))) = tokio::join!(first, second);
    assert_eq!(s1, StatusCode::OK, "{first}");
    assert_eq!(counts(&first), summary(3, 3, 1, 0, 0));
    assert_eq!(s2, StatusCode::CONFLICT, "{busy}");
    assert_eq!(busy["error"], "already running");
    assert_eq!(busy["progress"]["running"], true);
    assert!(busy["progress"]["startedAt"].is_string());
    assert_eq!(progress["running"], true);
}

#[tokio::test]
async fn the_audit_finds_a_deleted_messages_call_and_its_orphaned_customer() {
    let fake = FakeTeli::start().await;
    fake.add(call(1, JOE, Some("+14155550101")));
    fake.add(call(2, JOE, Some("+14155550102")));
    fake.add(call(3, STRANGER, Some("+14155550103")));
    let app = spawn(&fake).await;
    let c = app.client().await;
    businesses(&c).await;
    sync(&app, "").await;
    c.execute(
        "DELETE FROM messages WHERE teli_data ->> 'call_id' = 'call_0002'",
        &[],
    )
    .await
    .unwrap();
    let orphan: uuid::Uuid = c
        .query_one(
            "SELECT id FROM customers WHERE phone_number = '+14155550102'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (status, a) = get(&app, "/api/teli/audit").await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["teliCallCount"], 3);
    assert_eq!(a["localCallCount"], 1);
    let mut missing: Vec<&str> = a["missingLocally"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    missing.sort();
    assert_eq!(missing, ["call_0002", "call_0003"]);
    assert_eq!(a["orphanedCustomers"], json!([orphan.to_string()]));

    // The next run restores the deleted message from the stored delivery,
    // without fetching its detail again.
    let details = |f: &FakeTeli| {
        f.requests()
            .iter()
            .filter(|r| r.path == "/v1/voice/calls/call_0002")
            .count()
    };
    let before = details(&fake);
    let (_, s) = sync(&app, "").await;
    assert_eq!(counts(&s), summary(3, 1, 0, 1, 1), "{s}");
    assert_eq!(details(&fake), before);
    let (_, a) = get(&app, "/api/teli/audit").await;
    assert_eq!(a["orphanedCustomers"], json!([]));
}

#[tokio::test]
async fn admin_routes_check_the_token_the_provider_and_the_query() {
    let fake = FakeTeli::start().await;
    let app = spawn(&fake).await;
    let r = app
        .http
        .post(app.url("/api/teli/sync-all"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, v) = sync(&app, "?dryRun=maybe").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let r = app
        .http
        .post(app.url("/api/openphone/sync-all"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .http
        .post(app.url("/api/nosuch/sync-all"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());

    // Without credentials the pull says what to set.
    let bare = TestApp::spawn_with(|s| s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN)).await;
    let (status, v) = sync(&bare, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("TELI_API_KEY"));
}

#[tokio::test]
async fn replayed_teli_fixtures_land_as_pulled_ones() {
    // One router worker: with several, the analysed version can be applied
    // before the first one, which is then (rightly) `skipped_stale`; the
    // statuses below are those of arrival order.
    let app = TestApp::spawn_with(|s| {
        s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN);
        s.set("SYNCBRIDGE_ROUTER_WORKERS", "1");
    })
    .await;
    let c = app.client().await;
    c.batch_execute(
        "INSERT INTO businesses (name, teli_agent_id)
         VALUES ('Harbor View Leasing', 'agent_0f1e2d3c4b5a69788796a5b4c3')",
    )
    .await
    .unwrap();
    let all = syncbridge::ops::fixtures::load(&[fixtures_dir().join("teli")]).unwrap();
    for r in app.replay(&all).await {
        assert_eq!(
            r.as_expected,
            Some(true),
            "{} answered {} {}",
            r.path.display(),
            r.status,
            r.answer
        );
    }
    app.settle().await;
    let rows = c
        .query(
            "SELECT m.teli_data ->> 'call_id', cu.phone_number, cu.name,
                    m.teli_data -> 'extracted_fields' ->> 'business_name'
             FROM messages m JOIN customers cu ON cu.id = m.customer_id ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, Option<String>, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        [
            (
                "call_a1b2c3d4e5f60718293a4b5c6d7".to_owned(),
                "+14155550142".to_owned(),
                Some("Dana Whitfield".to_owned()),
                "Harbor View Leasing".to_owned()
            ),
            (
                "call_b2c3d4e5f60718293a4b5c6d7e8".to_owned(),
                "+12125550187".to_owned(),
                Some("Lee Park".to_owned()),
                "Harbor View Leasing".to_owned()
            ),
        ]
    );
    let statuses = c
        .query(
            "SELECT event_type, status, coalesce(error, '') FROM webhook_events
             WHERE provider = 'teli' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String)> = statuses
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0].1, "processed");
    assert_eq!(got[1].1, "processed", "the analysed version refreshes");
    assert!(got[3].2.contains("no phone number"), "{got:?}");
    assert_eq!(got[4].0, "call.listed");
    assert!(got[4].2.contains("unknown agent"), "{got:?}");
}

#[tokio::test]
async fn pull_teli_json_prints_the_summary_and_a_second_run_all_duplicates() {
    let fake = FakeTeli::start().await;
    for n in 0..4 {
        fake.add(call(n, JOE, Some("+14155550101")));
    }
    fake.add(call(9, STRANGER, Some("+14155550101")));
    let db = TestDb::create().await;
    // Migrate first, so the businesses table exists.
    let app = spawn_on(&fake, db).await;
    businesses(&app.client().await).await;
    let url = app.db.url.clone();
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (url, api) = (url.clone(), fake.url.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_syncbridge"))
                .args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("DATABASE_URL", url)
                .env("TELI_API_KEY", fake_teli::API_KEY)
                .env("TELI_API_URL", api)
                .env("TELI_ORGANIZATION_ID", fake_teli::ORG)
                .env("TELI_API_RATE", "1000")
                .env("TELI_RETRY_BASE_MS", "20")
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        })
    };
    let o = run(&["pull", "teli", "--json"]).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).expect("stdout is the summary alone");
    assert_eq!(counts(&s), summary(5, 4, 1, 0, 1), "{s}");
    let o = run(&["pull", "teli", "--json"]).await.unwrap();
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(counts(&s), summary(5, 0, 0, 4, 1), "{s}");
    // The human form, not on a terminal: no progress bar, the summary.
    let o = run(&["pull", "teli", "--dry-run"]).await.unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("dry run") && out.contains("\"duplicateCalls\": 4"),
        "{out}"
    );
    // Pulled calls export as fixtures and replay into another database
    // to the same rows.
    let dir =
        std::env::temp_dir().join(format!("sb-teli-export-{}", uuid::Uuid::new_v4().simple()));
    let dir_arg = dir.to_string_lossy().into_owned();
    let o = run(&["export-fixtures", "--provider", "teli", &dir_arg])
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exported = syncbridge::ops::fixtures::load(std::slice::from_ref(&dir)).unwrap();
    assert_eq!(exported.len(), 5);
    assert!(exported
        .iter()
        .all(|(_, f)| f.path == "/api/teli/deliveries"));
    let other = TestApp::spawn_with(|s| s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN)).await;
    businesses(&other.client().await).await;
    for r in other.replay(&exported).await {
        assert_eq!(
            (r.status, r.answer.as_str()),
            (200, "accepted"),
            "{}",
            r.path.display()
        );
    }
    other.settle().await;
    let ids = "SELECT string_agg(teli_data ->> 'call_id', ',' ORDER BY teli_data ->> 'call_id') FROM messages";
    let a: String = app.client().await.query_one(ids, &[]).await.unwrap().get(0);
    let b: String = other
        .client()
        .await
        .query_one(ids, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a, b);
    let _ = std::fs::remove_dir_all(&dir);

    // A failing run exits 1.
    fake.fail_detail("call_0003", 500);
    app.client()
        .await
        .execute("DELETE FROM messages", &[])
        .await
        .unwrap();
    app.client()
        .await
        .execute("DELETE FROM webhook_events", &[])
        .await
        .unwrap();
    let o = run(&["pull", "teli", "--json"]).await.unwrap();
    assert_eq!(o.status.code(), Some(1));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["errors"].as_array().unwrap().len(), 1, "{s}");
}

/// The "done when", on the real binary: `serve` against the fake,
/// `POST /api/teli/sync-all` answers the summary and the rows are there; a
/// second run reports all duplicates.
#[tokio::test]
async fn serve_syncs_all_calls_and_a_second_run_is_all_duplicates() {
    let fake = FakeTeli::start().await;
    for n in 0..30 {
        fake.add(call(
            n,
            if n % 3 == 0 { PIZZA } else { JOE },
            Some(&format!("+1415555{:04}", n % 9)),
        ));
    }
    let db = TestDb::create().await;
    let serve = ServeProcess::start(
        &db.url,
        &[
            ("SYNCBRIDGE_ADMIN_TOKEN", ADMIN),
            ("TELI_API_KEY", fake_teli::API_KEY),
            ("TELI_API_URL", &fake.url),
            ("TELI_ORGANIZATION_ID", fake_teli::ORG),
            ("TELI_PAGE_SIZE", "10"),
        ],
    );
    serve.answers("/readyz", StatusCode::OK).await;
    businesses(&db.client().await).await;
    let http = reqwest::Client::new();
    let post = async || {
        let r = http
            .post(serve.url("/api/teli/sync-all"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()
    };
    let first = post().await;
    assert_eq!(counts(&first), summary(30, 30, 9, 0, 0), "{first}");
    assert_eq!(
        first["callsByBusiness"],
        json!({"Joe's Barber": 20, "Pizza Palace": 10})
    );
    let c = db.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM messages").await, 30);
    assert_eq!(count(&c, "SELECT count(*) FROM customers").await, 9);
    let second = post().await;
    assert_eq!(counts(&second), summary(30, 0, 0, 30, 0), "{second}");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sync_pull_runs WHERE finished_at IS NOT NULL AND error IS NULL"
        )
        .await,
        2
    );
}

/// A page of large details is stored in groups of at most 4 MiB of bodies
/// (one transaction each), never held whole.
#[tokio::test]
async fn a_page_of_large_calls_is_stored_in_byte_bounded_groups() {
    let fake = FakeTeli::start().await;
    for n in 0..10 {
        let mut c = call(n, JOE, Some("+14155550101"));
        c["transcript"] = json!("x".repeat(900_000));
        fake.add(c);
    }
    let app = spawn(&fake).await;
    let c = app.client().await;
    businesses(&c).await;
    let (_, s) = sync(&app, "").await;
    assert_eq!(counts(&s), summary(10, 10, 1, 0, 0), "{s}");
    // Every inbox row of one transaction has its start time.
    let groups = count(
        &c,
        "SELECT count(DISTINCT received_at) FROM webhook_events WHERE provider = 'teli'",
    )
    .await;
    assert!(groups >= 3, "{groups} transactions for 9 MB of calls");
}

/// The fake answers as PROVIDERS.md §4 says Teli does.
#[tokio::test]
async fn the_fake_speaks_telis_wire_format() {
    let fake = FakeTeli::start().await;
    for n in 0..60 {
        fake.add(call(n, JOE, Some("+14155550101")));
    }
    let mut other = call(99, JOE, Some("+14155550101"));
    other["user_id"] = json!("someone_else");
    fake.add(other);
    let http = reqwest::Client::new();
    let list = async |query: &str, key: Option<&str>| {
        let mut req = http.get(format!("{}/v1/voice/calls?{query}", fake.url));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let org = format!("organization_id={}", fake_teli::ORG);
    let key = Some(fake_teli::API_KEY);
    let (s, v) = list(&format!("{org}&is_admin=true"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = list("is_admin=true", key).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("organization_id"));
    let (s, _) = list(&org, key).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "user_id is required for non-admins"
    );
    let (s, v) = list(&format!("{org}&user_id={}&limit=100", fake_teli::USER), key).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["calls"].as_array().unwrap().len(),
        60,
        "only that user's calls"
    );
    let (s, _) = list(&format!("{org}&is_admin=true&limit=101"), key).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = list(&format!("{org}&is_admin=true"), key).await;
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 50, "limit defaults to 50");
    assert_eq!(
        (
            v["success"].clone(),
            v["count"].clone(),
            v["powered_by"].clone()
        ),
        (json!(true), json!(50), json!("Teli"))
    );
    let starts: Vec<i64> = calls
        .iter()
        .map(|c| c["start_timestamp"].as_i64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert!(calls[0].get("from_number").is_none() && calls[0].get("extracted_fields").is_none());
    assert!(
        calls[0]["updated_at"].as_str().unwrap().len() == 26,
        "naive ISO with microseconds"
    );
    let (_, v) = list(
        &format!(
            "{org}&is_admin=true&start_date=2025-03-14T16:10:00Z&end_date=2025-03-14T16:20:00.000Z"
        ),
        key,
    )
    .await;
    assert_eq!(
        v["calls"].as_array().unwrap().len(),
        10,
        "after, inclusive; before, exclusive"
    );
    let r = http
        .get(format!("{}/v1/voice/calls/call_0001", fake.url))
        .header("X-API-Key", fake_teli::API_KEY)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["call"]["from_number"], "+14155550101");
    assert!(v["call"]["transcript_object"].is_array());
    let r = http
        .get(format!("{}/v1/voice/calls/call_nope", fake.url))
        .header("X-API-Key", fake_teli::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Pulled calls with every case the set-based path decides in memory — a
/// customer calling twice (the older call keeps the newer name), a call
/// refreshed and then listed again older, a call older than its stored
/// message, an unknown agent, a caller number that is no number — applied
/// as one batch and, in another database, one event a batch (the
/// one-at-a-time path) leave the same rows, audit trail and outcomes.
#[tokio::test]
async fn a_batch_of_calls_applies_as_one_call_at_a_time_would() {
    let t0 = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let call =
        |id: &str, agent: &str, from: &str, start_s: i64, name: Option<&str>, updated: &str| {
            let extracted = match name {
                Some(n) => json!({"customer_name": n}),
                None => json!({}),
            };
            let mut c = make_call(
                id,
                agent,
                "inbound",
                Some(from),
                Some("+14155550100"),
                t0 + start_s * 1000,
                extracted,
            );
            c["updated_at"] = json!(updated);
            c
        };
    let calls = [
        call(
            "eq_c1",
            "agent_eq_a",
            "+14155550101",
            100,
            Some("Ann"),
            "2026-01-01T10:00:00",
        ),
        call(
            "eq_c2",
            "agent_eq_a",
            "+14155550101",
            50,
            Some("Annie"),
            "2026-01-01T10:00:00",
        ),
        call(
            "eq_c3",
            "agent_eq_b",
            "+14155550102",
            200,
            Some("Bob"),
            "2026-01-01T10:00:00",
        ),
        call(
            "eq_c1",
            "agent_eq_a",
            "+14155550101",
            100,
            Some("Ann B"),
            "2026-01-01T11:00:00",
        ),
        call(
            "eq_c1",
            "agent_eq_a",
            "+14155550101",
            100,
            Some("Ann C"),
            "2026-01-01T10:30:00",
        ),
        call(
            "eq_c4",
            "agent_eq_zzz",
            "+14155550104",
            10,
            Some("Zed"),
            "2026-01-01T10:00:00",
        ),
        call(
            "eq_c5",
            "agent_eq_a",
            "not a phone",
            10,
            Some("Nobody"),
            "2026-01-01T10:00:00",
        ),
        call(
            "eq_c6",
            "agent_eq_b",
            "+14155550106",
            10,
            Some("Old"),
            "2026-01-01T10:00:00",
        ),
        call(
            "eq_c7",
            "agent_eq_a",
            "+14155550103",
            300,
            None,
            "2026-01-01T10:00:00",
        ),
        call(
            "eq_c8",
            "agent_eq_b",
            "+14155550101",
            400,
            Some("Ann at B"),
            "2026-01-01T10:00:00",
        ),
    ];
    let mut states = Vec::new();
    for batch in ["256", "1"] {
        let db = TestDb::create().await;
        let c = db.client().await;
        c.batch_execute(
            "INSERT INTO businesses (name, teli_agent_id)
             VALUES ('Clinic A', 'agent_eq_a'), ('Clinic B', 'agent_eq_b');
             WITH cu AS (
                 INSERT INTO customers (business_id, phone_number, name)
                 SELECT id, '+14155550106', 'Stored' FROM businesses WHERE teli_agent_id = 'agent_eq_b'
                 RETURNING id)
             INSERT INTO messages (customer_id, teli_data, teli_updated_at)
             SELECT id, '{\"call_id\": \"eq_c6\"}', '2026-01-02T00:00:00Z' FROM cu",
        )
        .await
        .unwrap();
        for (i, call) in calls.iter().enumerate() {
            let key = format!("{}@{i}", call["call_id"].as_str().unwrap());
            let body = serde_json::to_vec(&json!({"success": true, "call": call})).unwrap();
            c.execute(
                "INSERT INTO webhook_events (provider, dedup_key, event_type, event_id, body)
                 VALUES ('teli', $1, 'call', $2, $3)",
                &[&key, &call["call_id"].as_str().unwrap(), &body],
            )
            .await
            .unwrap();
        }
        let stats = drain_with_batch(&db.url, batch).await;
        // The batched run took the set-based path through and through:
        // no batch fell back to one event at a time.
        assert_eq!(stats.replayed, 0, "batch {batch}: {stats:?}");
        let text = async |sql: &str| text_rows(&c, sql).await;
        let customers = text(
            "SELECT concat_ws('|', b.name, cu.phone_number, cu.name, cu.last_call_at)
             FROM customers cu JOIN businesses b ON b.id = cu.business_id ORDER BY 1",
        )
        .await;
        let messages = text(
            "SELECT concat_ws('|', m.teli_data ->> 'call_id', cu.phone_number, m.teli_updated_at,
                    m.teli_data -> 'extracted_fields')
             FROM messages m JOIN customers cu ON cu.id = m.customer_id ORDER BY 1",
        )
        .await;
        let outcomes =
            text("SELECT concat_ws('|', dedup_key, status, error) FROM webhook_events ORDER BY 1")
                .await;
        let audit = text(
            "SELECT concat_ws('|', w.dedup_key, a.operation, a.decision, a.detail,
                    a.new_data ->> 'call_id')
             FROM sync_audit_log a JOIN webhook_events w ON w.id = a.event_id
             WHERE a.entity_type = 'messages' ORDER BY 1",
        )
        .await;
        states.push((customers, messages, outcomes, audit));
    }
    let (batched, single) = (&states[0], &states[1]);
    assert_eq!(batched.0, single.0, "customers");
    assert_eq!(batched.1, single.1, "messages");
    assert_eq!(batched.2, single.2, "outcomes");
    assert_eq!(batched.3, single.3, "audit");

    // And what both leave is what the calls say.
    let row = |rows: &[String], prefix: &str| {
        rows.iter()
            .find(|r| r.starts_with(prefix))
            .cloned()
            .unwrap_or_default()
    };
    // The older call (eq_c2) keeps the name of the newer one; the stale
    // listing of eq_c1 leaves its message but, as the latest call of its
    // customer, still names the customer.
    assert!(
        row(&batched.0, "Clinic A|+14155550101|").contains("|Ann C|"),
        "{:?}",
        batched.0
    );
    assert!(
        row(&batched.1, "eq_c1|").contains("Ann B"),
        "{:?}",
        batched.1
    );
    assert!(
        row(&batched.2, "eq_c1@4|").contains("skipped_stale"),
        "{:?}",
        batched.2
    );
    assert!(
        row(&batched.2, "eq_c6@7|").contains("skipped_stale"),
        "{:?}",
        batched.2
    );
    assert!(
        row(&batched.2, "eq_c4@5|").contains("ignored"),
        "{:?}",
        batched.2
    );
    assert!(
        row(&batched.2, "eq_c5@6|").contains("ignored"),
        "{:?}",
        batched.2
    );
    assert!(
        row(&batched.3, "eq_c8@9|").contains("\"newCustomer\": true"),
        "the same number at another business is a new customer: {:?}",
        batched.3
    );
    assert!(
        row(&batched.3, "eq_c2@1|").contains("\"newCustomer\": false"),
        "{:?}",
        batched.3
    );
    assert_eq!(
        batched.0.len(),
        5,
        "A:0101, A:0103, B:0101, B:0102, B:0106: {:?}",
        batched.0
    );
}
