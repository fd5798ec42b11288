//! ResMan's API client (issue 14) against the fake ResMan: lead pushes
//! answered by the MITS envelope, searches that halve their window on a
//! buffer overflow, the Partners API's prospects, credentials and faults.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::fake_resman::{self, FakeResMan, Fault};
use syncbridge::config::Settings;
use syncbridge::providers::resman::api::{CallError, ResManApi, Search, Target};
use syncbridge::providers::resman::config::ResManConfig;
use syncbridge::providers::resman::wire::{EventType, Lead, Prospect};
use syncbridge::providers::PushError;

const PROPERTY: &str = "07413576-f764-44c6-be35-df4139deec01";

fn api(fake: &FakeResMan, key: &str) -> ResManApi {
    let config = ResManConfig::from_settings(&Settings::from_pairs([
        ("RESMAN_API_URL", fake.url.as_str()),
        ("RESMAN_LEGACY_API_URL", fake.url.as_str()),
        ("RESMAN_INTEGRATION_PARTNER_ID", fake_resman::PARTNER_ID),
        ("RESMAN_API_KEY", key),
        ("RESMAN_API_RATE", "1000"),
        ("RESMAN_RETRY_BASE_MS", "10"),
    ]))
    .unwrap();
    ResManApi::new(&config, Duration::from_millis(500)).unwrap()
}

fn target() -> Target {
    Target {
        account_id: fake_resman::ACCOUNT.into(),
        property_id: PROPERTY.into(),
    }
}

fn lead(prospect_id: Option<&str>) -> Lead {
    Lead {
        prospect_id: prospect_id.map(str::to_owned),
        first_name: Some("Dana".into()),
        last_name: Some("O'Neil & Sons".into()),
        email: Some("dana@ortiz.example".into()),
        phone: Some("+1 (415) 555-0142".into()),
        event: EventType::Email,
        event_date: Utc::now(),
        comments: Some("Wants a 2BR <in May>".into()),
    }
}

#[tokio::test]
async fn a_lead_is_created_then_updated_in_place() {
    let fake = FakeResMan::start().await;
    let r = api(&fake, fake_resman::API_KEY);
    let created = r.post_lead(&target(), &lead(None)).await.unwrap();
    let id = created.prospects[0].prospect_id.clone().unwrap();
    assert!(created.prospects[0].person_id.is_some());
    let mut update = lead(Some(&id));
    update.event = EventType::Appointment;
    update.first_name = Some("Dana M.".into());
    let updated = r.post_lead(&target(), &update).await.unwrap();
    assert_eq!(
        updated.prospects[0].prospect_id.as_deref(),
        Some(id.as_str())
    );
    let all = fake.prospects();
    assert_eq!(all.len(), 1, "an update never makes a second prospect");
    assert_eq!(all[0].first_name.as_deref(), Some("Dana M."));
    assert_eq!(
        all[0].last_name.as_deref(),
        Some("O'Neil & Sons"),
        "escaped and read back"
    );
    assert_eq!(
        all[0].events.last().unwrap(),
        &(
            "Appointment".to_string(),
            Some("Wants a 2BR <in May>".to_string())
        )
    );
    // The search finds it by e-mail and by phone, however written.
    let by_email = r
        .search(
            &target(),
            &Search {
                email: Some("DANA@ortiz.example".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_email[0].prospect_id.as_deref(), Some(id.as_str()));
    let by_phone = r
        .search(
            &target(),
            &Search {
                phone: Some("4155550142".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_phone.len(), 1);
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_the_key_never_recorded() {
    let fake = FakeResMan::start().await;
    let r = api(&fake, "wrong-key");
    let e = r.post_lead(&target(), &lead(None)).await.unwrap_err();
    assert!(
        matches!(e.clone().into_push(), PushError::Permanent(_)),
        "{e}"
    );
    assert!(e.to_string().contains("Invalid ApiKey"), "{e}");
    let e = r.prospects(&target(), Utc::now()).await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    assert!(fake
        .requests()
        .iter()
        .all(|q| q.fields.get("ApiKey").is_none_or(|k| k == "***")));
}

#[tokio::test]
async fn a_search_halves_its_window_on_a_buffer_overflow() {
    let fake = FakeResMan::start().await;
    // Six prospects modified five minutes apart.
    let from = Utc::now() - chrono::Duration::hours(1);
    for i in 0..6 {
        let id = fake.add(
            PROPERTY,
            &format!("P{i}"),
            &format!("p{i}@x.example"),
            "Prospect",
        );
        fake.modified_at(&id, from + chrono::Duration::minutes(5 * i));
    }
    fake.overflow_above(2);
    let r = api(&fake, fake_resman::API_KEY);
    let found = r
        .search(
            &target(),
            &Search {
                modified_from: Some(from - chrono::Duration::minutes(10)),
                modified_to: Some(from + chrono::Duration::minutes(40)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut ids: Vec<String> = found.into_iter().filter_map(|p| p.prospect_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every prospect found across the halves");
    let overflows = fake.requests().iter().filter(|q| q.status == 502).count();
    assert!(overflows >= 1);
    // A window that cannot be halved any more is an error, not a loop.
    fake.overflow_above(0);
    let e = r
        .search(
            &target(),
            &Search {
                modified_from: Some(from - chrono::Duration::seconds(10)),
                modified_to: Some(from + chrono::Duration::seconds(20)),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(e, Err(CallError::Overflow)) || e.as_ref().is_ok_and(|v| v.is_empty()),
        "{e:?}"
    );
}

#[tokio::test]
async fn prospects_are_read_since_a_time_with_faults_retried() {
    let fake = FakeResMan::start().await;
    let old = fake.add(PROPERTY, "Old", "old@x.example", "Prospect");
    fake.add("another-property", "Elsewhere", "e@x.example", "Prospect");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    fake.edit(&old, |p| {
        p.status = "Lost".into();
        p.lost_reason = Some("Rented elsewhere".into());
    });
    let r = api(&fake, fake_resman::API_KEY);
    fake.fail_next([Fault::Status(503), Fault::RateLimited(0)]);
    let got = r.prospects(&target(), since).await.unwrap();
    assert_eq!(got.len(), 1);
    let p: Prospect = serde_json::from_value(got[0].clone()).unwrap();
    assert_eq!(p.prospect_id, old);
    assert_eq!(p.status.as_deref(), Some("Lost"));
    assert_eq!(p.lost_reason.as_deref(), Some("Rented elsewhere"));
    assert_eq!(
        p.main_person().unwrap().email.as_deref(),
        Some("old@x.example")
    );
    assert!(p.modified_at().unwrap() >= since);
    let statuses: Vec<u16> = fake.requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, [503, 429, 200]);
    // A lead POST is sent once: its retry is the dispatcher's.
    fake.fail_next([Fault::Status(500)]);
    let e = r.post_lead(&target(), &lead(None)).await.unwrap_err();
    assert!(matches!(e.into_push(), PushError::Transient(_)));
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|q| q.method == "MITS/PostLeadManagement4_0")
            .count(),
        1
    );
}

// ---------------------------------------------------------------------------
// Conversations become leads: through capture, the outbox and the dispatcher
// ---------------------------------------------------------------------------

const PROPERTY_LOCAL: &str = "00000000-0000-4000-8000-00000000000a";
const CONV: &str = "00000000-0000-4000-8000-0000000c0001";
const USER: &str = "00000000-0000-4000-8000-0000000a0001";

async fn spawn(fake: &FakeResMan, extra: &[(&'static str, &str)]) -> common::TestApp {
    let url = fake.url.clone();
    let extra: Vec<(&'static str, String)> =
        extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let app = common::TestApp::spawn_with(move |s| {
        s.set("RESMAN_API_URL", url.clone());
        s.set("RESMAN_LEGACY_API_URL", url);
        s.set("RESMAN_INTEGRATION_PARTNER_ID", fake_resman::PARTNER_ID);
        s.set("RESMAN_API_KEY", fake_resman::API_KEY);
        s.set("RESMAN_API_RATE", "1000");
        s.set("RESMAN_RETRY_BASE_MS", "10");
        s.set("SYNCBRIDGE_PUSH_TIMEOUT_MS", "500");
        for (k, v) in extra {
            s.set(k, v);
        }
    })
    .await;
    app.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO property (id, name) VALUES ('{PROPERTY_LOCAL}', 'Elm Court');
             INSERT INTO resman_integration (property_id, resman_property_id, api_credentials)
             VALUES ('{PROPERTY_LOCAL}', '{PROPERTY}', '{{\"account_id\": \"{}\"}}');
             INSERT INTO \"user\" (id, first_name, last_name, email, phone)
             VALUES ('{USER}', 'Dana', 'Ortiz', 'dana@ortiz.example', '+14155550142');
             INSERT INTO conversation (id, property_id, user_id, status)
             VALUES ('{CONV}', '{PROPERTY_LOCAL}', '{USER}', 'open');",
            fake_resman::ACCOUNT
        ))
        .await
        .unwrap();
    app
}

async fn scalar(app: &common::TestApp, sql: &str) -> i64 {
    app.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn text(app: &common::TestApp, sql: &str) -> Option<String> {
    app.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits (20 s at most) until nothing is pending for ResMan.
async fn drained(app: &common::TestApp) {
    for _ in 0..400 {
        if scalar(
            app,
            "SELECT count(*) FROM sync_outbox WHERE provider = 'resman' AND status = 'pending'",
        )
        .await
            == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ResMan pushes still pending");
}

async fn exec(app: &common::TestApp, sql: &str) {
    app.client().await.batch_execute(sql).await.unwrap();
}

#[tokio::test]
async fn a_qualified_conversation_becomes_one_lead_and_updates_it_after() {
    let fake = FakeResMan::start().await;
    let app = spawn(&fake, &[]).await;
    drained(&app).await;
    // Not a lead yet: nothing sent (the polls read, they write nothing).
    assert!(fake.prospects().is_empty());
    assert!(
        fake.requests().iter().all(|r| r.method == "GET /Prospects"),
        "{:?}",
        fake.requests()
    );
    exec(&app, &format!("UPDATE conversation SET is_qualified = true, ai_intent_summary = 'Wants a 2BR' WHERE id = '{CONV}'")).await;
    drained(&app).await;
    let prospects = fake.prospects();
    assert_eq!(prospects.len(), 1);
    let id = prospects[0].prospect_id.clone();
    assert_eq!(prospects[0].email.as_deref(), Some("dana@ortiz.example"));
    assert_eq!(
        prospects[0].events[0],
        ("Email".into(), Some("Wants a 2BR".into()))
    );
    assert_eq!(
        text(
            &app,
            &format!("SELECT resman_lead_id::text FROM conversation WHERE id = '{CONV}'")
        )
        .await,
        Some(id.clone())
    );
    assert_eq!(
        text(
            &app,
            &format!("SELECT resman_sync_status::text FROM conversation WHERE id = '{CONV}'")
        )
        .await
        .as_deref(),
        Some("synced")
    );
    assert_eq!(
        text(
            &app,
            "SELECT resman_lead_id::text FROM lead_sync_mapping WHERE mapping_status = 'active'"
        )
        .await,
        Some(id.clone())
    );
    let logged = scalar(&app, "SELECT count(*) FROM lead_sync_log WHERE sync_status = 'success' AND sync_type = 'create' AND processing_time_ms IS NOT NULL").await;
    assert_eq!(logged, 1);
    // A booked tour updates the same prospect; so does the user's new phone.
    exec(
        &app,
        &format!("UPDATE conversation SET is_book_tour = true WHERE id = '{CONV}'"),
    )
    .await;
    drained(&app).await;
    exec(
        &app,
        &format!("UPDATE \"user\" SET phone = '+14155550199' WHERE id = '{USER}'"),
    )
    .await;
    drained(&app).await;
    let prospects = fake.prospects();
    assert_eq!(prospects.len(), 1, "never a second prospect");
    assert_eq!(prospects[0].events.last().unwrap().0, "Appointment");
    assert_eq!(prospects[0].phone.as_deref(), Some("+14155550199"));
    assert_eq!(
        text(
            &app,
            &format!("SELECT resman_contact_id::text FROM \"user\" WHERE id = '{USER}'")
        )
        .await,
        Some(prospects[0].person_id.clone())
    );
    // The tour: an update of the conversation's lead; the phone: the
    // user's leads enriched.
    let kinds: Vec<String> = app
        .client()
        .await
        .query(
            "SELECT sync_type::text FROM lead_sync_log ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["create", "update", "enrichment"]);
}

#[tokio::test]
async fn a_create_retried_after_a_timeout_makes_one_prospect() {
    let fake = FakeResMan::start().await;
    let app = spawn(&fake, &[]).await;
    drained(&app).await;
    // The searches (by e-mail, then phone) answer; the create is made but
    // answered too late.
    fake.fail_next([
        Fault::Pass,
        Fault::Pass,
        Fault::Slow(Duration::from_millis(1500)),
    ]);
    exec(
        &app,
        &format!("UPDATE conversation SET is_qualified = true WHERE id = '{CONV}'"),
    )
    .await;
    drained(&app).await;
    let prospects = fake.prospects();
    assert_eq!(prospects.len(), 1, "{prospects:?}");
    assert_eq!(
        text(
            &app,
            &format!("SELECT resman_lead_id::text FROM conversation WHERE id = '{CONV}'")
        )
        .await,
        Some(prospects[0].prospect_id.clone())
    );
    let posts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "MITS/PostLeadManagement4_0")
        .count();
    assert_eq!(posts, 2, "the retry updated what the first attempt made");
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM lead_sync_log WHERE sync_status = 'failed'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_paused_property_is_left_alone_and_failures_past_the_threshold_show_error() {
    let fake = FakeResMan::start().await;
    let app = spawn(
        &fake,
        &[
            ("SYNCBRIDGE_RESMAN_ERROR_THRESHOLD", "2"),
            ("SYNCBRIDGE_PUSH_MAX_ATTEMPTS", "2"),
            ("SYNCBRIDGE_RESMAN_POLL_INTERVAL_S", "3600"),
        ],
    )
    .await;
    drained(&app).await;
    // The schedule's first poll (at start) is done before faults are set.
    for _ in 0..100 {
        if scalar(&app, "SELECT count(*) FROM sync_pull_runs WHERE provider = 'resman' AND finished_at IS NOT NULL").await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exec(&app, "UPDATE resman_integration SET sync_status = 'paused'").await;
    exec(
        &app,
        &format!("UPDATE conversation SET is_qualified = true WHERE id = '{CONV}'"),
    )
    .await;
    drained(&app).await;
    assert!(
        fake.requests().iter().all(|r| r.method == "GET /Prospects"),
        "a paused property is not pushed: {:?}",
        fake.requests()
    );
    assert_eq!(
        text(&app, "SELECT error::text FROM sync_outbox WHERE provider = 'resman' AND table_name = 'conversation' AND status = 'skipped' ORDER BY id DESC LIMIT 1").await.as_deref(),
        Some("the property's ResMan integration is paused")
    );
    // Active again; ResMan fails twice: the integration shows error.
    exec(&app, "UPDATE resman_integration SET sync_status = 'active'").await;
    fake.fail_next([
        Fault::Status(500),
        Fault::Status(500),
        Fault::Status(500),
        Fault::Status(500),
        Fault::Status(500),
        Fault::Status(500),
        Fault::Status(500),
        Fault::Status(500),
    ]);
    exec(
        &app,
        &format!("UPDATE conversation SET ai_intent_summary = 'x' WHERE id = '{CONV}'"),
    )
    .await;
    drained(&app).await;
    let (status, count): (String, i32) = {
        let r = app
            .client()
            .await
            .query_one(
                "SELECT sync_status::text, error_count FROM resman_integration",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), count), ("error", 2));
    assert_eq!(
        text(
            &app,
            &format!("SELECT resman_sync_status::text FROM conversation WHERE id = '{CONV}'")
        )
        .await
        .as_deref(),
        Some("failed")
    );
    // A success brings it back.
    exec(
        &app,
        &format!("UPDATE conversation SET ai_intent_summary = 'y' WHERE id = '{CONV}'"),
    )
    .await;
    drained(&app).await;
    let (status, count): (String, i32) = {
        let r = app
            .client()
            .await
            .query_one(
                "SELECT sync_status::text, error_count FROM resman_integration",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), count), ("active", 0));
    assert_eq!(fake.prospects().len(), 1);
}

// ---------------------------------------------------------------------------
// Prospects polled back: status, people, conflicts, notifications
// ---------------------------------------------------------------------------

const ADMIN: &str = "resman-admin-token";

/// A conversation qualified and pushed: its prospect's id.
async fn mapped(app: &common::TestApp, fake: &FakeResMan) -> String {
    drained(app).await;
    exec(
        app,
        &format!("UPDATE conversation SET is_qualified = true WHERE id = '{CONV}'"),
    )
    .await;
    drained(app).await;
    fake.prospects()[0].prospect_id.clone()
}

async fn sync_all(app: &common::TestApp) -> serde_json::Value {
    let r = app
        .http
        .post(app.url("/api/resman/sync-all"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_status_change_in_resman_reaches_the_conversation_in_one_poll() {
    let fake = FakeResMan::start().await;
    let app = spawn(
        &fake,
        &[
            ("SYNCBRIDGE_ADMIN_TOKEN", ADMIN),
            ("SYNCBRIDGE_RESMAN_POLL_INTERVAL_S", "3600"),
        ],
    )
    .await;
    let id = mapped(&app, &fake).await;
    fake.edit(&id, |p| {
        p.status = "Lost".into();
        p.lost_reason = Some("Rented elsewhere".into());
    });
    // A prospect the leasing office entered: recorded, not dropped.
    let walk_in = fake.add(PROPERTY, "Kim", "kim@x.example", "Prospect");
    let s = sync_all(&app).await;
    assert_eq!(s["errors"], serde_json::json!([]), "{s}");
    let r = app
        .client()
        .await
        .query_one(
            &format!(
                "SELECT resman_status, resman_lost_reason FROM conversation WHERE id = '{CONV}'"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, Option<String>>(0).as_deref(), Some("Lost"));
    assert_eq!(
        r.get::<_, Option<String>>(1).as_deref(),
        Some("Rented elsewhere")
    );
    assert_eq!(
        text(
            &app,
            "SELECT mapping_status::text FROM lead_sync_mapping WHERE conversation_id IS NULL"
        )
        .await
        .as_deref(),
        Some("from_resman")
    );
    assert_eq!(
        text(&app, "SELECT resman_lead_id::text FROM lead_sync_mapping WHERE mapping_status = 'from_resman'").await,
        Some(walk_in)
    );
    assert_eq!(scalar(&app, "SELECT count(*) FROM lead_sync_log WHERE sync_direction = 'from_resman' AND sync_type = 'status_change'").await, 1);
    // Polled again: the overlap's repeats are duplicates, nothing changes.
    let again = sync_all(&app).await;
    assert_eq!(again["stored"], 0, "{again}");
    // The status shows the property.
    let status: serde_json::Value = app
        .http
        .get(app.url("/api/sync/status"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let property = &status["provider_status"]["resman"]["properties"][0];
    assert_eq!(property["property_name"], "Elm Court", "{status}");
    assert_eq!(property["sync_status"], "active");
    assert!(property["poll"]["cursor"].is_string(), "{property}");
    assert_eq!(
        scalar(
            &app,
            "SELECT count(*) FROM sync_outbox WHERE provider = 'resman' AND status = 'pending'"
        )
        .await,
        0,
        "no echo back"
    );
    let asked: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET /Prospects")
        .filter_map(|r| r.fields.get("modifiedSince").cloned())
        .collect();
    assert!(asked.len() >= 2);
    assert!(
        asked.windows(2).all(|w| w[0] <= w[1]),
        "the cursor never moves back: {asked:?}"
    );
    let cursor = text(
        &app,
        "SELECT position->>'cursor' FROM sync_cursors WHERE name LIKE 'resman.poll.%'",
    )
    .await;
    assert!(cursor.is_some(), "the cursor is stored after the commit");
}

#[tokio::test]
async fn a_notification_polls_its_property_at_once() {
    let fake = FakeResMan::start().await;
    let app = spawn(&fake, &[("SYNCBRIDGE_RESMAN_POLL_INTERVAL_S", "3600")]).await;
    let id = mapped(&app, &fake).await;
    // The schedule's first poll ran at start; the next is an hour away.
    for _ in 0..100 {
        if scalar(&app, "SELECT count(*) FROM sync_pull_runs WHERE provider = 'resman' AND finished_at IS NOT NULL").await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.edit(&id, |p| p.status = "Applicant".into());
    let body =
        format!(r#"{{"type":"prospect.updated","propertyId":"{PROPERTY}","prospectId":"{id}"}}"#);
    let key = syncbridge::providers::signature::HmacKey::from_whsec(common::RESMAN_WEBHOOK_SECRET)
        .unwrap();
    let ts = Utc::now().timestamp();
    let sig =
        syncbridge::providers::signature::sign_standard(&key, "msg_note_1", ts, body.as_bytes());
    let (status, _) = app
        .post(
            "/webhooks/resman",
            &[
                ("content-type", "application/json".into()),
                ("webhook-id", "msg_note_1".into()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sig),
            ],
            body,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    for _ in 0..200 {
        if text(
            &app,
            &format!("SELECT resman_status FROM conversation WHERE id = '{CONV}'"),
        )
        .await
        .as_deref()
            == Some("Applicant")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the notification did not poll the property");
}

#[tokio::test]
async fn both_sides_changed_is_decided_by_the_rules_and_on_record() {
    let fake = FakeResMan::start().await;
    let app = spawn(
        &fake,
        &[
            ("SYNCBRIDGE_ADMIN_TOKEN", ADMIN),
            ("SYNCBRIDGE_RESMAN_POLL_INTERVAL_S", "3600"),
        ],
    )
    .await;
    let id = mapped(&app, &fake).await;
    // Here: a new e-mail (not pushed: the property only syncs from ResMan
    // for now); there: another e-mail and a new last name, later.
    exec(
        &app,
        "UPDATE resman_integration SET sync_direction = 'from_resman'",
    )
    .await;
    exec(
        &app,
        &format!("UPDATE \"user\" SET email = 'dana.local@x.example' WHERE id = '{USER}'"),
    )
    .await;
    drained(&app).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    fake.edit(&id, |p| {
        p.email = Some("dana.resman@x.example".into());
        p.last_name = Some("Ortiz-Lee".into());
    });
    let s = sync_all(&app).await;
    assert_eq!(s["stored"], 1, "{s}");
    // last_write_wins (the default): ResMan's later e-mail stands; its
    // last name (changed there only) is taken.
    let r = app
        .client()
        .await
        .query_one(
            &format!("SELECT email, last_name FROM \"user\" WHERE id = '{USER}'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "dana.resman@x.example");
    assert_eq!(r.get::<_, String>(1), "Ortiz-Lee");
    let c = app
        .client()
        .await
        .query_one(
            "SELECT conflict_type::text, conflict_severity::text, resolution_status::text, resolution_strategy::text, conversation_id::text
             FROM lead_sync_conflicts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(c.get::<_, String>(0), "field_mismatch");
    assert_eq!(c.get::<_, String>(1), "medium", "a contact field");
    assert_eq!(c.get::<_, String>(2), "auto_resolved");
    assert_eq!(c.get::<_, String>(3), "resman_wins");
    assert_eq!(c.get::<_, String>(4), CONV);
    // A manual rule leaves the next one for review.
    exec(&app, "INSERT INTO sync_conflict_rules (entity_type, field, strategy) VALUES ('user', 'phone', 'manual')").await;
    exec(
        &app,
        &format!("UPDATE \"user\" SET phone = '+14155550111' WHERE id = '{USER}'"),
    )
    .await;
    fake.edit(&id, |p| p.phone = Some("+14155550122".into()));
    // (The local phone may have been pushed already: then only ResMan
    // changed it since, and it is taken; otherwise both changed.)
    let _ = sync_all(&app).await;
    let pending = scalar(
        &app,
        "SELECT count(*) FROM lead_sync_conflicts WHERE resolution_status = 'pending'",
    )
    .await;
    let phone = text(
        &app,
        &format!("SELECT phone FROM \"user\" WHERE id = '{USER}'"),
    )
    .await;
    assert!(
        (pending == 1 && phone.as_deref() == Some("+14155550111"))
            || (pending == 0 && phone.as_deref() == Some("+14155550122")),
        "{pending} {phone:?}"
    );
}

#[tokio::test]
async fn a_manual_conflict_waits_for_review_and_is_resolved_through_the_api() {
    let fake = FakeResMan::start().await;
    let app = spawn(
        &fake,
        &[
            ("SYNCBRIDGE_ADMIN_TOKEN", ADMIN),
            ("SYNCBRIDGE_RESMAN_POLL_INTERVAL_S", "3600"),
        ],
    )
    .await;
    let id = mapped(&app, &fake).await;
    exec(&app, "INSERT INTO sync_conflict_rules (entity_type, field, strategy) VALUES ('user', '*', 'manual')").await;
    exec(
        &app,
        "UPDATE resman_integration SET sync_direction = 'from_resman'",
    )
    .await;
    exec(
        &app,
        &format!("UPDATE \"user\" SET email = 'dana.here@x.example' WHERE id = '{USER}'"),
    )
    .await;
    drained(&app).await;
    fake.edit(&id, |p| p.email = Some("dana.there@x.example".into()));
    sync_all(&app).await;
    // Left as it is here, for review.
    assert_eq!(
        text(
            &app,
            &format!("SELECT email FROM \"user\" WHERE id = '{USER}'")
        )
        .await
        .as_deref(),
        Some("dana.here@x.example")
    );
    assert_eq!(
        text(
            &app,
            &format!("SELECT resman_sync_status::text FROM \"user\" WHERE id = '{USER}'")
        )
        .await
        .as_deref(),
        Some("conflict")
    );
    let conflict = text(
        &app,
        "SELECT id::text FROM lead_sync_conflicts WHERE resolution_status = 'pending'",
    )
    .await
    .unwrap();
    let listed = app
        .http
        .get(app.url("/api/sync/conflicts?provider=resman"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), reqwest::StatusCode::OK);
    // Resolved with ResMan's version.
    let r = app
        .http
        .post(app.url(&format!("/api/sync/conflicts/{conflict}/resolve")))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"resolution": "remote", "notes": "ResMan is right"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK, "{:?}", r.text().await);
    assert_eq!(
        text(
            &app,
            &format!("SELECT email FROM \"user\" WHERE id = '{USER}'")
        )
        .await
        .as_deref(),
        Some("dana.there@x.example")
    );
    assert_eq!(
        text(&app, &format!("SELECT resolution_status::text || '/' || resolution_strategy::text FROM lead_sync_conflicts WHERE id = '{conflict}'")).await.as_deref(),
        Some("resolved/resman_wins")
    );
    assert_eq!(
        scalar(&app, "SELECT count(*) FROM sync_outbox WHERE provider = 'resman' AND table_name = 'user' AND status = 'pending'").await,
        0,
        "ResMan's own version is not pushed back"
    );
    // A second resolution of the same conflict is refused.
    let again = app
        .http
        .post(app.url(&format!("/api/sync/conflicts/{conflict}/resolve")))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"resolution": "local"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), reqwest::StatusCode::CONFLICT);
}

/// Issue 14's "done when", with the real binary: `serve` against the fake
/// ResMan; `UPDATE conversation SET is_qualified = true` in psql makes one
/// lead and stores its id; a status change in ResMan reaches the
/// conversation.
#[tokio::test]
async fn serve_makes_a_lead_from_psql_and_brings_the_status_back() {
    let fake = FakeResMan::start().await;
    let db = common::TestDb::create().await;
    let c = db.client().await;
    c.batch_execute(&format!(
        "INSERT INTO property (id, name) VALUES ('{PROPERTY_LOCAL}', 'Elm Court');
         INSERT INTO resman_integration (property_id, resman_property_id, api_credentials)
         VALUES ('{PROPERTY_LOCAL}', '{PROPERTY}', '{{\"account_id\": \"{}\"}}');
         INSERT INTO \"user\" (id, first_name, last_name, email) VALUES ('{USER}', 'Dana', 'Ortiz', 'dana@ortiz.example');
         INSERT INTO conversation (id, property_id, user_id, status) VALUES ('{CONV}', '{PROPERTY_LOCAL}', '{USER}', 'open');",
        fake_resman::ACCOUNT
    ))
    .await
    .unwrap();
    let serve = common::ServeProcess::start(
        &db.url,
        &[
            ("RESMAN_API_URL", &fake.url),
            ("RESMAN_LEGACY_API_URL", &fake.url),
            ("RESMAN_INTEGRATION_PARTNER_ID", fake_resman::PARTNER_ID),
            ("RESMAN_API_KEY", fake_resman::API_KEY),
            ("RESMAN_API_RATE", "1000"),
            ("SYNCBRIDGE_RESMAN_POLL_INTERVAL_S", "1"),
            ("SYNCBRIDGE_INTEGRITY_INTERVAL_S", "0"),
        ],
    );
    serve.answers("/readyz", reqwest::StatusCode::OK).await;
    let out = tokio::process::Command::new("psql")
        .args([
            db.url.as_str(),
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            &format!("UPDATE conversation SET is_qualified = true WHERE id = '{CONV}'"),
        ])
        .output()
        .await
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lead = None;
    for _ in 0..400 {
        lead = c
            .query_one(
                &format!("SELECT resman_lead_id::text FROM conversation WHERE id = '{CONV}'"),
                &[],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0);
        if lead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lead = lead.expect("the lead's id is stored");
    assert_eq!(fake.prospects().len(), 1);
    assert_eq!(fake.prospects()[0].prospect_id, lead);
    fake.edit(&lead, |p| p.status = "Applicant".into());
    for _ in 0..400 {
        let s: Option<String> = c
            .query_one(
                &format!("SELECT resman_status FROM conversation WHERE id = '{CONV}'"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if s.as_deref() == Some("Applicant") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ResMan's status never reached the conversation");
}
