//! The ingest path end to end: signed deliveries through the real HTTP
//! front into the real Postgres, and the router's effects on the tables.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// Every communications and clients row, minus the touch timestamp.
async fn snapshot(c: &tokio_postgres::Client) -> (Vec<Value>, Vec<Value>) {
    let rows = |sql: &'static str| async move {
        c.query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, Value>(0))
            .collect::<Vec<_>>()
    };
    (
        rows("SELECT to_jsonb(x) - 'updated_at' FROM (SELECT * FROM communications ORDER BY id) x")
            .await,
        rows("SELECT to_jsonb(x) - 'updated_at' FROM (SELECT * FROM clients ORDER BY id) x").await,
    )
}

async fn inbox_count(app: &TestApp) -> i64 {
    count(&app.client().await, "SELECT count(*) FROM webhook_events").await
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn five_concurrent_deliveries_of_one_event_have_one_effect() {
    let app = TestApp::spawn().await;
    seed_clients(&app.client().await).await;
    let body = message_event(
        "EVconc1",
        "ACconc1",
        "+14155550142",
        "hello",
        "2025-03-14T16:05:00.000Z",
    );
    let headers = openphone_headers(&body, now_ms());
    let sends = (0..5).map(|_| app.post("/webhooks/openphone", &headers, body.clone()));
    let answers = futures_util::future::join_all(sends).await;
    let mut statuses: Vec<String> = answers
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, StatusCode::OK, "{b}");
            b["status"].as_str().unwrap().to_owned()
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "accepted",
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate"
        ]
    );
    app.settle().await;
    let c = app.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM webhook_events").await, 1);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM communications WHERE openphone_message_id = 'ACconc1'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sync_audit_log WHERE entity_type = 'communications'"
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn an_older_event_after_a_newer_one_leaves_the_newer_state() {
    let app = TestApp::spawn().await;
    // call.completed (16:02:11) arrives before call.ringing (16:01:40).
    let (s, _) = app
        .post_fixture("openphone/call-completed-voicemail.json")
        .await;
    assert_eq!(s, StatusCode::OK);
    app.settle().await;
    let (s, _) = app.post_fixture("openphone/call-ringing.json").await;
    assert_eq!(s, StatusCode::OK);
    app.settle().await;
    let c = app.client().await;
    let row = c
        .query_one(
            "SELECT status, voicemail_url, openphone_event_timestamp::text FROM communications
             WHERE openphone_call_id = 'AC5be0c1d2e3f44a5b8c9d0e1f2a3b4c5d'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "completed");
    assert!(row.get::<_, Option<String>>(1).is_some());
    let stale: Vec<String> = c
        .query(
            "SELECT event_type FROM webhook_events WHERE status = 'skipped_stale'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stale, ["call.ringing"]);
    app.stop().await;
}

#[tokio::test]
async fn forged_missing_expired_and_tampered_signatures_are_401_and_store_nothing() {
    let app = TestApp::spawn_with(|s| s.set("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", "300")).await;
    let body = message_event(
        "EVsig1",
        "ACsig1",
        "+14155550142",
        "hi",
        "2025-03-14T16:05:00.000Z",
    );

    // Missing.
    let (s, b) = app
        .post(
            "/webhooks/openphone",
            &[("content-type", "application/json".into())],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("missing signature"));

    // Expired: signed ten minutes ago, tolerance five.
    let old = openphone_headers(&body, now_ms() - 600_000);
    let (s, b) = app.post("/webhooks/openphone", &old, body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["detail"].as_str().unwrap().contains("tolerance"), "{b}");

    // Tampered: valid signature, one byte of the body changed.
    let fresh = openphone_headers(&body, now_ms());
    let mut tampered = body.clone();
    let i = tampered.iter().position(|&c| c == b'h').unwrap();
    tampered[i] = b'H';
    let (s, _) = app.post("/webhooks/openphone", &fresh, tampered).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Forged: signed with another key.
    let forged_key =
        syncbridge::providers::signature::HmacKey::from_base64("Zm9yZ2VkLWtleS1mb3JnZWQta2V5")
            .unwrap();
    let forged =
        syncbridge::providers::signature::sign_openphone_legacy(&forged_key, now_ms(), &body);
    let (s, _) = app
        .post(
            "/webhooks/openphone",
            &[("openphone-signature", forged)],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Garbage header.
    let (s, _) = app
        .post(
            "/webhooks/openphone",
            &[("openphone-signature", "hmac;1;abc".into())],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Standard Webhooks, expired and forged.
    use syncbridge::providers::signature::{sign_standard, HmacKey};
    let key = HmacKey::from_whsec(OPENPHONE_WEBHOOK_SECRET).unwrap();
    let ts = chrono::Utc::now().timestamp() - 900;
    let sw = vec![
        ("webhook-id", "msg_x1".to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            sign_standard(&key, "msg_x1", ts, &body),
        ),
    ];
    let (s, _) = app.post("/webhooks/openphone", &sw, body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let ts = chrono::Utc::now().timestamp();
    let sw = vec![
        ("webhook-id", "msg_x2".to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            sign_standard(&key, "msg_x2", ts, b"{}"),
        ),
    ];
    let (s, _) = app.post("/webhooks/openphone", &sw, body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // ResMan and Keap refuse too.
    let (s, _) = app.post("/webhooks/resman", &[], body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app
        .post("/webhooks/keap/wrong-token", &[], body.clone())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    assert_eq!(inbox_count(&app).await, 0);

    // The server keeps serving: a valid one is accepted.
    let (s, b) = app
        .post(
            "/webhooks/openphone",
            &openphone_headers(&body, now_ms()),
            body.clone(),
        )
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    assert_eq!(inbox_count(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused_and_the_server_keeps_serving() {
    let app = TestApp::spawn_with(|s| s.set("SYNCBRIDGE_MAX_BODY_BYTES", "4096")).await;
    let good = message_event(
        "EVok1",
        "ACok1",
        "+14155550142",
        "first",
        "2025-03-14T16:05:00.000Z",
    );
    let (s, _) = app
        .post(
            "/webhooks/openphone",
            &openphone_headers(&good, now_ms()),
            good.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Validly signed, not JSON.
    let junk = b"{\"id\": \"EVbad\", oops".to_vec();
    let (s, b) = app
        .post(
            "/webhooks/openphone",
            &openphone_headers(&junk, now_ms()),
            junk.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "bad request");

    // Validly signed JSON without an event id.
    let noid = br#"{"type":"message.received","data":{"object":{}}}"#.to_vec();
    let (s, _) = app
        .post(
            "/webhooks/openphone",
            &openphone_headers(&noid, now_ms()),
            noid.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Over the limit.
    let big = message_event(
        "EVbig",
        "ACbig",
        "+14155550142",
        &"x".repeat(8000),
        "2025-03-14T16:05:00.000Z",
    );
    let (s, b) = app
        .post(
            "/webhooks/openphone",
            &openphone_headers(&big, now_ms()),
            big.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(b["detail"]
        .as_str()
        .unwrap()
        .contains("SYNCBRIDGE_MAX_BODY_BYTES"));

    // Keap: authentic token, not a hook delivery.
    let (s, _) = app
        .post(
            &format!("/webhooks/keap/{KEAP_WEBHOOK_TOKEN}"),
            &[],
            b"[1,2]".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Still serving, and what was accepted before is still there.
    let after = message_event(
        "EVok2",
        "ACok2",
        "+14155550142",
        "second",
        "2025-03-14T16:06:00.000Z",
    );
    let (s, _) = app
        .post(
            "/webhooks/openphone",
            &openphone_headers(&after, now_ms()),
            after.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.settle().await;
    let c = app.client().await;
    let ids: Vec<String> = c
        .query("SELECT event_id FROM webhook_events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, ["EVok1", "EVok2"]);
    assert_eq!(count(&c, "SELECT count(*) FROM communications").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn unknown_event_types_are_stored_and_ignored() {
    let app = TestApp::spawn().await;
    let (s, b) = app
        .post_fixture("openphone/call-unknown-event-type.json")
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    app.settle().await;
    let c = app.client().await;
    let row = c
        .query_one("SELECT status, error, event_type FROM webhook_events", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ignored");
    assert!(row.get::<_, String>(1).contains("call.menu.selected"));
    assert_eq!(count(&c, "SELECT count(*) FROM communications").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_event_that_cannot_be_applied_is_retried_then_failed() {
    let app = TestApp::spawn_with(|s| {
        s.set("SYNCBRIDGE_MAX_ATTEMPTS", "3");
        s.set("SYNCBRIDGE_RETRY_BASE_MS", "10");
    })
    .await;
    // Verifies (it has an id and a type) but has no message object id.
    let body = br#"{"id":"EVbroken","object":"event","createdAt":"2025-03-14T16:05:00.000Z","type":"message.received","data":{"object":{"text":"no id"}}}"#.to_vec();
    // A good event in the same batch is applied regardless.
    let good = message_event(
        "EVgood",
        "ACgood",
        "+14155550142",
        "fine",
        "2025-03-14T16:05:00.000Z",
    );
    let (hb, hg) = (
        openphone_headers(&body, now_ms()),
        openphone_headers(&good, now_ms()),
    );
    let (a, b) = tokio::join!(
        app.post("/webhooks/openphone", &hb, body.clone()),
        app.post("/webhooks/openphone", &hg, good.clone()),
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    let c = app.client().await;
    let mut row = None;
    for _ in 0..200 {
        let r = c
            .query_one(
                "SELECT status, attempts, error FROM webhook_events WHERE event_id = 'EVbroken'",
                &[],
            )
            .await
            .unwrap();
        if r.get::<_, String>(0) == "failed" {
            row = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let row = row.expect("the event ends failed");
    assert_eq!(row.get::<_, i32>(1), 3);
    assert!(row.get::<_, String>(2).contains("without a message id"));
    let good: String = c
        .query_one(
            "SELECT status FROM webhook_events WHERE event_id = 'EVgood'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(good, "processed");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM communications WHERE openphone_message_id = 'ACgood'"
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_provider_answers_503_with_the_reason() {
    let app = TestApp::spawn_with(|s| {
        s.set("RESMAN_WEBHOOK_SECRET", "");
        s.set("KEAP_WEBHOOK_TOKEN", "");
    })
    .await;
    let (s, b) = app.post("/webhooks/resman", &[], b"{}".to_vec()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b["detail"]
        .as_str()
        .unwrap()
        .contains("RESMAN_WEBHOOK_SECRET"));
    let (s, b) = app
        .post("/webhooks/keap/anything", &[], b"{}".to_vec())
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b["detail"].as_str().unwrap().contains("KEAP_WEBHOOK_TOKEN"));
    app.stop().await;
}

#[tokio::test]
async fn keap_handshake_is_echoed_only_on_the_right_token() {
    let app = TestApp::spawn().await;
    let secret = "6c1b0f7e-9a2d-4f4e-8e51-5c2b7a9d1e33";
    let resp = app
        .http
        .post(app.url(&format!("/webhooks/keap/{KEAP_WEBHOOK_TOKEN}")))
        .header("x-hook-secret", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-hook-secret"], secret);
    let resp = app
        .http
        .post(app.url("/webhooks/keap/not-the-token"))
        .header("x-hook-secret", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("x-hook-secret").is_none());
    assert_eq!(inbox_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn keap_batches_dedupe_per_object_key() {
    let app = TestApp::spawn().await;
    let path = format!("/webhooks/keap/{KEAP_WEBHOOK_TOKEN}");
    let batch = |ids: &[(u32, &str)]| {
        serde_json::to_vec(&json!({
            "event_key": "contact.edit", "object_type": "contact",
            "object_keys": ids.iter().map(|(id, ts)| json!({"id": id, "timestamp": ts})).collect::<Vec<_>>()
        }))
        .unwrap()
    };
    let (_, b) = app
        .post(
            &path,
            &[],
            batch(&[(1, "2025-03-14T16:00:00Z"), (2, "2025-03-14T16:00:00Z")]),
        )
        .await;
    assert_eq!(b["status"], "accepted");
    // Different bytes, same object keys (reordered): a duplicate.
    let (_, b) = app
        .post(
            &path,
            &[],
            batch(&[(2, "2025-03-14T16:00:00Z"), (1, "2025-03-14T16:00:00Z")]),
        )
        .await;
    assert_eq!(b["status"], "duplicate");
    // One new key among old ones: accepted, and owns only the new key.
    let (_, b) = app
        .post(
            &path,
            &[],
            batch(&[(1, "2025-03-14T16:00:00Z"), (3, "2025-03-14T16:00:00Z")]),
        )
        .await;
    assert_eq!(b["status"], "accepted");
    let c = app.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM webhook_events").await, 2);
    assert_eq!(
        count(&c, "SELECT count(*) FROM webhook_event_keys").await,
        3
    );
    // Keap deliveries wait for their issue's router: still pending.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM webhook_events WHERE status = 'pending'"
        )
        .await,
        2
    );
    app.stop().await;
}

/// Replays every shipped fixture, in arrival order, through the real front;
/// checks each answer against its `expect` and the final database state;
/// then replays them all again and checks that nothing changed.
#[tokio::test]
async fn every_fixture_replays_to_the_expected_state_and_replaying_again_changes_nothing() {
    // One router worker: with several, the late older contact update can be
    // claimed while the newer one is still being applied, take the client's
    // lock first and apply (the newer then wins anyway), so its status
    // would depend on timing instead of saying `skipped_stale`.
    // The admin token: Teli's pulled deliveries replay through the admin API.
    // ResMan's API credentials: its polled prospects replay through its
    // pull's delivery route (nothing is ever sent to ResMan: no property
    // has an integration).
    let app = TestApp::spawn_with(|s| {
        s.set("SYNCBRIDGE_ROUTER_WORKERS", "1");
        s.set("SYNCBRIDGE_ADMIN_TOKEN", "replay-admin-token");
        s.set("RESMAN_INTEGRATION_PARTNER_ID", "1000");
        s.set("RESMAN_API_KEY", "replay-resman-key");
        s.set("RESMAN_API_URL", "http://127.0.0.1:9");
        s.set("RESMAN_LEGACY_API_URL", "http://127.0.0.1:9");
    })
    .await;
    let c = app.client().await;
    seed_clients(&c).await;
    let all = syncbridge::ops::fixtures::load(&[fixtures_dir()]).unwrap();
    let results = app.replay(&all).await;
    for r in &results {
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

    // Calls: one row per call id, linked by phone number.
    let call = |id: &'static str| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT status, client_id::text, source, recording_url, summary, transcript IS NOT NULL,
                        voicemail_url, direction, duration_seconds
                 FROM communications WHERE openphone_call_id = $1",
                &[&id],
            )
            .await
            .unwrap()
        }
    };
    let call1 = call("AC5be0c1d2e3f44a5b8c9d0e1f2a3b4c5d").await;
    assert_eq!(
        call1.get::<_, String>(0),
        "completed",
        "the late ringing event did not win"
    );
    assert_eq!(call1.get::<_, Option<String>>(1).as_deref(), Some(DANA));
    assert_eq!(call1.get::<_, String>(2), "Quo");
    assert!(
        call1.get::<_, Option<String>>(6).is_some(),
        "voicemail kept"
    );
    assert_eq!(call1.get::<_, String>(7), "incoming");
    let call2 = call("AC6eb3079f1b244219dce5c66ca3382106").await;
    assert_eq!(
        call2.get::<_, Option<String>>(1).as_deref(),
        Some(LEE),
        "outgoing call links the callee"
    );
    assert!(call2.get::<_, Option<String>>(3).is_some(), "recording");
    assert!(call2.get::<_, Option<String>>(4).is_some(), "summary");
    assert!(call2.get::<_, bool>(5), "transcript");
    let call3 = call("AC4966d5306a067979ebdfd988948b8ba7").await;
    assert_eq!(
        call3.get::<_, Option<String>>(1).as_deref(),
        Some(LEE),
        "beta shape"
    );
    assert_eq!(call3.get::<_, Option<i32>>(8), Some(95));

    // Messages: the duplicate stored once; unknown numbers unlinked.
    let msg = |id: &'static str| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT body, client_id::text, openphone_conversation_id FROM communications WHERE openphone_message_id = $1",
                &[&id],
            )
            .await
            .unwrap()
        }
    };
    let m1 = msg("AC9f8e7d6c5b4a39281706f5e4d3c2b1a0").await;
    assert_eq!(
        m1.get::<_, String>(0),
        "Is the 2BR still available?",
        "the tampered copy was refused"
    );
    assert_eq!(m1.get::<_, Option<String>>(1).as_deref(), Some(DANA));
    assert_eq!(
        m1.get::<_, Option<String>>(2).as_deref(),
        Some("CN0a1b2c3d4e5f40718293a4b5c6d7e8f9")
    );
    let m2 = msg("AC78e3105736cbc4fabd86c52fa6a15ad9").await;
    assert_eq!(
        m2.get::<_, Option<String>>(1).as_deref(),
        Some(DANA),
        "outgoing message links the recipient"
    );
    let m3 = msg("AC637326f592ff53b465950bc5813f1c80").await;
    assert_eq!(m3.get::<_, Option<String>>(1), None);
    let m4 = msg("AC1c931d227568afe40b811fa0da6b6f93").await;
    assert_eq!(m4.get::<_, Option<String>>(1).as_deref(), Some(LEE));
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM communications WHERE channel = 'message'"
        )
        .await,
        6
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM communications WHERE channel = 'call'"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM communications WHERE source <> 'Quo'"
        )
        .await,
        0
    );

    // Contacts: the newer update stands, the late older one was skipped;
    // the deleted contact is unlinked, the client kept.
    let dana = c
        .query_one("SELECT last_name, openphone_contact_id, sync_status FROM clients WHERE id = $1::text::uuid", &[&DANA])
        .await
        .unwrap();
    assert_eq!(dana.get::<_, String>(0), "Ortiz-Reyes");
    assert_eq!(
        dana.get::<_, Option<String>>(1).as_deref(),
        Some("664d0db69fcac7cf2e6ec001")
    );
    assert_eq!(dana.get::<_, String>(2), "synced");
    let lee = c
        .query_one(
            "SELECT last_name, openphone_contact_id FROM clients WHERE id = $1::text::uuid",
            &[&LEE],
        )
        .await
        .unwrap();
    assert_eq!(lee.get::<_, String>(0), "Park");
    assert_eq!(lee.get::<_, Option<String>>(1), None);
    let statuses: Vec<(String, String)> = c
        .query(
            "SELECT event_id, status FROM webhook_events WHERE provider = 'openphone' AND status <> 'processed' ORDER BY status",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        [
            (
                "EV956dcb637e77f1fa5dfdac49b423ff18".to_owned(),
                "ignored".to_owned()
            ),
            (
                "EV84784d0ece4f4ecb0d0548a364067352".to_owned(),
                "skipped_stale".to_owned()
            ),
        ],
        "only the late older contact update is stale and only the unknown type ignored"
    );
    // Nothing rejected was stored; every accepted one was, once.
    // The polled prospect is recorded though no conversation maps to it.
    assert_eq!(
        c.query_one(
            "SELECT status || '/' || lost_reason FROM resman_prospects
             WHERE prospect_id = '3f1d9a52-1c0b-4e2a-9c1e-0d3b8c7a6e11'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0),
        "Lost/Rented elsewhere"
    );
    let accepted = results.iter().filter(|r| r.answer == "accepted").count() as i64;
    assert_eq!(
        count(&c, "SELECT count(*) FROM webhook_events").await,
        accepted
    );
    // Audit: every applied change left a row naming its event.
    assert!(
        count(
            &c,
            "SELECT count(*) FROM sync_audit_log WHERE event_id IS NULL"
        )
        .await
            == 0
    );

    let before = snapshot(&c).await;
    let again = app.replay(&all).await;
    for r in &again {
        assert!(
            r.status != 200 || r.answer == "duplicate" || r.path.ends_with("handshake.json"),
            "{} answered {} the second time",
            r.path.display(),
            r.answer
        );
    }
    app.settle().await;
    assert_eq!(
        snapshot(&c).await,
        before,
        "replaying again changed nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn standard_webhooks_signatures_from_the_reference_library_verify() {
    let app = TestApp::spawn_with(|s| s.set("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", "300")).await;
    let body = message_event(
        "EVsw1",
        "ACsw1",
        "+14155550142",
        "via svix",
        "2025-03-14T16:05:00.000Z",
    );
    let wh = standardwebhooks::Webhook::new(OPENPHONE_WEBHOOK_SECRET).unwrap();
    let ts = chrono::Utc::now().timestamp();
    let sig = wh.sign("msg_ref_1", ts, &body).unwrap();
    let headers = vec![
        ("webhook-id", "msg_ref_1".to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sig),
    ];
    let (s, b) = app
        .post("/webhooks/openphone", &headers, body.clone())
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    // And ours signs what the reference library verifies.
    let key =
        syncbridge::providers::signature::HmacKey::from_whsec(OPENPHONE_WEBHOOK_SECRET).unwrap();
    let ours = syncbridge::providers::signature::sign_standard(&key, "msg_ref_2", ts, &body);
    let mut hm = http::HeaderMap::new();
    hm.insert("webhook-id", "msg_ref_2".parse().unwrap());
    hm.insert("webhook-timestamp", ts.to_string().parse().unwrap());
    hm.insert("webhook-signature", ours.parse().unwrap());
    wh.verify(&body, &hm).unwrap();
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Ready once the change listener has connected.
    let mut r = app.http.get(app.url("/readyz")).send().await.unwrap();
    for _ in 0..200 {
        if r.status() == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        r = app.http.get(app.url("/readyz")).send().await.unwrap();
    }
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    app.post_fixture("openphone/message-received.json").await;
    app.post_fixture("openphone/message-received-duplicate.json")
        .await;
    app.post_fixture("openphone/bad-signature-tampered.json")
        .await;
    app.settle().await;
    let text = app.get_text("/metrics").await;
    for needle in [
        "syncbridge_webhook_deliveries_total{provider=\"openphone\",result=\"accepted\"",
        "syncbridge_webhook_deliveries_total{provider=\"openphone\",result=\"duplicate\"",
        "syncbridge_webhook_deliveries_total{provider=\"openphone\",result=\"rejected\",reason=\"signature\"}",
        "syncbridge_ingest_seconds_bucket",
        "syncbridge_events_total{provider=\"openphone\",result=\"applied\"}",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let r = app.http.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"].is_string() && b["detail"].is_string());
    app.stop().await;
}
