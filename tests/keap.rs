//! Keap both ways against the fake Keap API: thin REST-hook deliveries
//! become debounced, rate-limited fetches applied under the conflict rules;
//! local changes to `sync_contacts` are pushed; deletions are marked.

mod common;

use std::time::Duration;

use common::fake_keap::{FakeKeap, Fault, API_KEY};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn spawn(fake: &FakeKeap) -> TestApp {
    spawn_retrying(fake, 100).await
}

/// `retry_base_ms` large holds a failed push back until the test releases it.
async fn spawn_retrying(fake: &FakeKeap, retry_base_ms: u64) -> TestApp {
    let url = fake.url.clone();
    TestApp::spawn_with(move |s| {
        s.set("KEAP_API_KEY", API_KEY);
        s.set("KEAP_API_URL", url);
        s.set("SYNCBRIDGE_FETCH_DEBOUNCE_MS", "300");
        s.set("SYNCBRIDGE_RETRY_BASE_MS", retry_base_ms.to_string());
        s.set("SYNCBRIDGE_PUSH_TIMEOUT_MS", "1000");
    })
    .await
}

/// Posts one REST-hook delivery naming `ids`, as Keap sends it.
async fn hint(app: &TestApp, event_key: &str, ids: &[i64]) {
    let at = chrono::Utc::now();
    let keys: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"id": id, "apiUrl": "",
                   "timestamp": (at + chrono::Duration::milliseconds(i as i64))
                       .format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()})
        })
        .collect();
    let body = serde_json::to_vec(&json!({
        "event_key": event_key,
        "object_type": event_key.split('.').next().unwrap(),
        "object_keys": keys,
    }))
    .unwrap();
    let (s, b) = app
        .post(
            &format!("/webhooks/keap/{KEAP_WEBHOOK_TOKEN}"),
            &[("content-type", "application/json".into())],
            body,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn contact_row(c: &tokio_postgres::Client, keap_id: i64) -> Option<Value> {
    c.query_opt(
        "SELECT to_jsonb(c) FROM sync_contacts c WHERE keap_id = $1",
        &[&keap_id.to_string()],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

/// Waits (10 s at most) until `pred` holds for the contact's local row.
async fn wait_contact(
    c: &tokio_postgres::Client,
    keap_id: i64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..400 {
        if let Some(row) = contact_row(c, keap_id).await {
            if pred(&row) {
                return row;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "contact {keap_id} never became {what}: {:?}",
        contact_row(c, keap_id).await
    );
}

/// Waits until the local contact has its Keap id (10 s at most).
async fn wait_pushed(c: &tokio_postgres::Client, local: uuid::Uuid) -> i64 {
    for _ in 0..400 {
        let r: Option<String> = c
            .query_one("SELECT keap_id FROM sync_contacts WHERE id = $1", &[&local])
            .await
            .unwrap()
            .get(0);
        if let Some(id) = r {
            return id.parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("contact {local} was never pushed");
}

/// Lets held-back pushes go now.
async fn release(c: &tokio_postgres::Client) {
    c.batch_execute(
        "UPDATE sync_outbox SET next_attempt_at = now()
         WHERE status = 'pending' AND next_attempt_at <> 'infinity'",
    )
    .await
    .unwrap();
}

async fn queue_len(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM sync_fetch_queue", &[])
        .await
        .unwrap()
        .get(0)
}

fn dana() -> Value {
    json!({
        "given_name": "Dana", "family_name": "Ortiz",
        "email_addresses": [{"email": "dana@ortiz.example", "field": "EMAIL1"}],
        "phone_numbers": [{"number": "+14155550142", "extension": "", "field": "PHONE1", "type": "Mobile"}],
        "tag_ids": [204, 101],
        "custom_fields": [{"id": 182, "content": "qualified"}],
    })
}

#[tokio::test]
async fn ten_hints_within_the_window_make_one_fetch_and_the_contact_is_mirrored() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let id = fake.put_contact(dana())["id"].as_i64().unwrap();
    for _ in 0..10 {
        hint(&app, "contact.edit", &[id]).await;
    }
    let row = wait_contact(&c, id, "mirrored", |_| true).await;
    assert_eq!(row["first_name"], "Dana");
    assert_eq!(row["email"], "dana@ortiz.example");
    assert_eq!(row["phone"], "+14155550142");
    assert_eq!(row["tags"], json!([101, 204]));
    assert_eq!(row["custom_fields"], json!({"182": "qualified"}));
    assert_eq!(row["source_system"], "keap");
    assert_eq!(row["sync_status"], "synced");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        fake.gets_of(&format!("/contacts/{id}")),
        1,
        "ten hints, one fetch"
    );
    assert_eq!(queue_len(&c).await, 0);
    // Keap's own key was used, and nothing was pushed back.
    assert!(fake.requests().iter().all(|r| r.status != 401));
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    let events: Vec<String> = c
        .query("SELECT status FROM webhook_events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, vec!["processed"; 10]);
    app.stop().await;
}

#[tokio::test]
async fn a_large_delivery_is_fetched_within_keaps_rate_limits() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let ids: Vec<i64> = (0..14)
        .map(|i| {
            let mut d = dana();
            d["email_addresses"][0]["email"] = json!(format!("p{i}@example.com"));
            fake.put_contact(d)["id"].as_i64().unwrap()
        })
        .collect();
    hint(&app, "contact.add", &ids).await;
    for id in &ids {
        wait_contact(&c, *id, "mirrored", |_| true).await;
    }
    assert_eq!(fake.throttled(), 0, "never throttled");
    assert!(
        fake.max_requests_in(Duration::from_secs(1)) <= 5,
        "at most 5 requests in any second, saw {}",
        fake.max_requests_in(Duration::from_secs(1))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_429_is_honoured_and_a_server_error_retried() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let id = fake.put_contact(dana())["id"].as_i64().unwrap();
    fake.fail_next([Fault::RateLimited(1), Fault::Status(503)]);
    let t0 = std::time::Instant::now();
    hint(&app, "contact.edit", &[id]).await;
    wait_contact(&c, id, "mirrored", |_| true).await;
    let gets: Vec<std::time::Instant> = fake
        .requests()
        .iter()
        .filter(|r| r.path == format!("/contacts/{id}"))
        .map(|r| r.at)
        .collect();
    assert_eq!(gets.len(), 3, "429, 503, then the fetch");
    assert!(
        gets[1] - gets[0] >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert!(t0.elapsed() >= Duration::from_secs(1));
    app.stop().await;
}

#[tokio::test]
async fn a_contact_deleted_in_keap_is_marked_deleted_not_dropped() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let id = fake.put_contact(dana())["id"].as_i64().unwrap();
    hint(&app, "contact.add", &[id]).await;
    wait_contact(&c, id, "mirrored", |_| true).await;
    fake.delete_contact(id);
    hint(&app, "contact.delete", &[id]).await;
    let row = wait_contact(&c, id, "deleted", |r| !r["deleted_at"].is_null()).await;
    assert_eq!(row["first_name"], "Dana", "kept");
    let decision: String = c
        .query_one(
            "SELECT decision FROM sync_audit_log WHERE entity_type = 'sync_contacts'
             ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(decision, "deleted_remotely");
    assert!(fake.writes().is_empty(), "no DELETE pushed back");
    app.stop().await;
}

#[tokio::test]
async fn local_contacts_are_pushed_once_and_keaps_echo_changes_nothing() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let local: uuid::Uuid = c
        .query_one(
            "INSERT INTO sync_contacts (email, first_name, last_name, phone)
             VALUES ('lee@park.example', 'Lee', 'Park', '+12125550187') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Created in Keap (looked up by email first), id stored locally.
    let keap_id = wait_pushed(&c, local).await;
    let created = fake.contact(keap_id).unwrap();
    assert_eq!(created["given_name"], "Lee");
    assert_eq!(created["email_addresses"][0]["email"], "lee@park.example");
    let row = wait_contact(&c, keap_id, "synced", |r| r["sync_status"] == "synced").await;
    assert_eq!(row["id"], json!(local));
    let lookups = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/contacts")
        .count();
    assert_eq!(lookups, 1);

    // Keap's hook for our own write: fetched, recognised, nothing written.
    let writes = fake.writes().len();
    hint(&app, "contact.add", &[keap_id]).await;
    fake.wait_for("the echo fetch", |r| {
        r.iter().any(|r| r.path == format!("/contacts/{keap_id}"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.writes().len(), writes, "the echo pushed nothing");
    let origins: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE provider = 'keap' AND origin = 'keap'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(origins, 0);

    // A local edit is a PATCH of the stored id.
    c.execute(
        "UPDATE sync_contacts SET last_name = 'Park-Lee' WHERE id = $1",
        &[&local],
    )
    .await
    .unwrap();
    fake.wait_for("the PATCH", |r| {
        r.iter()
            .any(|r| r.method == "PATCH" && r.path == format!("/contacts/{keap_id}"))
    })
    .await;
    wait_contact(&c, keap_id, "synced", |r| r["sync_status"] == "synced").await;
    assert_eq!(fake.contact(keap_id).unwrap()["family_name"], "Park-Lee");
    app.stop().await;
}

#[tokio::test]
async fn a_hint_for_a_contact_changed_locally_meanwhile_follows_the_rules() {
    let fake = FakeKeap::start().await;
    let app = spawn_retrying(&fake, 600_000).await;
    let c = app.client().await;
    c.batch_execute(
        "INSERT INTO sync_conflict_rules (entity_type, field, strategy)
         VALUES ('sync_contacts', '*', 'merge'), ('sync_contacts', 'first_name', 'manual')",
    )
    .await
    .unwrap();
    let id = fake.put_contact(dana())["id"].as_i64().unwrap();
    hint(&app, "contact.add", &[id]).await;
    wait_contact(&c, id, "mirrored", |_| true).await;

    // Local edit whose push fails and waits; Keap edits another field.
    fake.fail_next([Fault::Status(503)]);
    c.execute(
        "UPDATE sync_contacts SET last_name = 'Ortiz-Local' WHERE keap_id = $1",
        &[&id.to_string()],
    )
    .await
    .unwrap();
    fake.wait_for("the failed push", |r| r.iter().any(|r| r.status == 503))
        .await;
    fake.edit_contact(id, |v| {
        v["phone_numbers"][0]["number"] = json!("+14155550199");
    });
    hint(&app, "contact.edit", &[id]).await;
    // Merge: the local last name stays, Keap's phone comes in; the push
    // then brings Keap the last name.
    let row = wait_contact(&c, id, "merged", |r| r["phone"] == "+14155550199").await;
    assert_eq!(row["last_name"], "Ortiz-Local");
    release(&c).await;
    fake.wait_for("the retried push", |r| {
        r.iter().any(|r| r.method == "PATCH" && r.status == 200)
    })
    .await;
    wait_contact(&c, id, "synced", |r| r["sync_status"] == "synced").await;
    let remote = fake.contact(id).unwrap();
    assert_eq!(remote["family_name"], "Ortiz-Local");
    assert_eq!(remote["phone_numbers"][0]["number"], "+14155550199");

    // Both sides change the first name: manual, left for review.
    fake.fail_next([Fault::Status(503)]);
    c.execute(
        "UPDATE sync_contacts SET first_name = 'Danielle' WHERE keap_id = $1",
        &[&id.to_string()],
    )
    .await
    .unwrap();
    fake.wait_for("the second failed push", |r| {
        r.iter().filter(|r| r.status == 503).count() >= 2
    })
    .await;
    fake.edit_contact(id, |v| v["given_name"] = json!("Dee"));
    hint(&app, "contact.edit", &[id]).await;
    let row = wait_contact(&c, id, "in conflict", |r| r["sync_status"] == "conflict").await;
    assert_eq!(row["first_name"], "Danielle", "untouched");
    let conflict: (Value, Value) = {
        let r = c
            .query_one(
                "SELECT keap_data, supabase_data FROM sync_conflicts WHERE status = 'open'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(conflict.0["first_name"], "Dee");
    assert_eq!(conflict.1["first_name"], "Danielle");
    app.stop().await;
}

#[tokio::test]
async fn hook_subscriptions_are_created_verified_and_reactivated() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let registry = syncbridge::providers::Registry::from_config(&app.config);
    let keap = registry
        .get(syncbridge::domain::ProviderName::Keap)
        .unwrap()
        .clone();
    let public = format!("http://{}", app.addr);
    let summary = keap.ensure_subscriptions(&public).await.unwrap().unwrap();
    let hooks = fake.hooks();
    let url = format!("{public}/webhooks/keap/{KEAP_WEBHOOK_TOKEN}");
    let keys: Vec<&str> = hooks
        .iter()
        .filter(|h| h["hookUrl"] == url.as_str() && h["status"] == "Verified")
        .filter_map(|h| h["eventKey"].as_str())
        .collect();
    for k in [
        "contact.add",
        "contact.edit",
        "contact.delete",
        "order.add",
        "subscription.edit",
    ] {
        assert!(
            keys.contains(&k),
            "{k} not subscribed and verified: {hooks:#?}"
        );
    }
    assert!(
        !keys.contains(&"invoice.add"),
        "only what syncbridge applies"
    );
    assert!(summary.contains("created"), "{summary}");

    // A second round changes nothing; an Inactive hook is verified again.
    let n = hooks.len();
    let contact_edit = hooks
        .iter()
        .find(|h| h["eventKey"] == "contact.edit")
        .and_then(|h| h["key"].as_str())
        .unwrap()
        .to_owned();
    fake.set_hook_status(&contact_edit, "Inactive");
    let summary = keap.ensure_subscriptions(&public).await.unwrap().unwrap();
    assert!(summary.contains("0 created, 1 asked"), "{summary}");
    assert_eq!(fake.hooks().len(), n);
    assert!(fake.hooks().iter().all(|h| h["status"] == "Verified"));
    // The handshakes stored nothing.
    let c = app.client().await;
    let stored: i64 = c
        .query_one("SELECT count(*) FROM webhook_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    app.stop().await;
}

#[tokio::test]
async fn full_resync_and_retry_work_for_keap_contacts_as_for_clients() {
    let fake = FakeKeap::start().await;
    let db = TestDb::create().await;
    let c = db.client().await;
    // Contacts written before capture existed: no outbox rows for them.
    c.batch_execute(
        "ALTER TABLE sync_contacts DISABLE TRIGGER syncbridge_capture;
         INSERT INTO sync_contacts (email, first_name, last_name)
              VALUES ('old@one.example', 'Old', 'One'), ('old@two.example', 'Old', 'Two');
         ALTER TABLE sync_contacts ENABLE TRIGGER syncbridge_capture;",
    )
    .await
    .unwrap();
    let url = fake.url.clone();
    let app = TestApp::spawn_on(db, move |s| {
        s.set("KEAP_API_KEY", API_KEY);
        s.set("KEAP_API_URL", url);
        s.set("SYNCBRIDGE_ADMIN_TOKEN", "t0ken");
        s.set("SYNCBRIDGE_PUSH_TIMEOUT_MS", "1000");
    })
    .await;
    let admin = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            let r = app
                .http
                .post(app.url(path))
                .bearer_auth("t0ken")
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = admin(
        "/api/sync/full",
        json!({"entity": "sync_contacts", "provider": "keap"}),
    )
    .await;
    assert_eq!((s, &b["queued"]), (StatusCode::OK, &json!(2)), "{b}");
    fake.wait_for("both contacts created", |r| {
        r.iter()
            .filter(|r| r.method == "POST" && r.status < 300)
            .count()
            == 2
    })
    .await;
    let synced = || async {
        c.query_one(
            "SELECT count(*) FROM sync_contacts WHERE sync_status = 'synced' AND keap_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    for _ in 0..400 {
        if synced().await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(synced().await, 2);
    let (_, b) = admin(
        "/api/sync/full",
        json!({"entity": "sync_contacts", "provider": "keap"}),
    )
    .await;
    assert_eq!(b["queued"], 0, "everything is synced: {b}");
    // A table the provider does not push is a 400 naming why.
    let (s, b) = admin(
        "/api/sync/full",
        json!({"entity": "clients", "provider": "keap"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // A push refused for good (a 400 on the read before the write) ends
    // failed; the retry endpoint re-queues it and it goes through.
    fake.fail_next([Fault::Status(400)]);
    c.execute(
        "UPDATE sync_contacts SET last_name = 'Uno' WHERE email = 'old@one.example'",
        &[],
    )
    .await
    .unwrap();
    let status = || async {
        c.query_one(
            "SELECT sync_status FROM sync_contacts WHERE email = 'old@one.example'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0)
    };
    for _ in 0..400 {
        if status().await == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status().await, "failed");
    let (s, b) = admin(
        "/api/sync/retry",
        json!({"provider": "keap", "entity": "sync_contacts"}),
    )
    .await;
    assert_eq!((s, &b["outbound"]), (StatusCode::OK, &json!(1)), "{b}");
    for _ in 0..400 {
        if status().await == "synced" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status().await, "synced");
    let id = c
        .query_one(
            "SELECT keap_id FROM sync_contacts WHERE email = 'old@one.example'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(
        fake.contact(id.parse().unwrap()).unwrap()["family_name"],
        "Uno"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_email_lookup_answered_with_another_contact_never_merges_two_people() {
    let fake = FakeKeap::start().await;
    let dana = fake.put_contact(dana());
    fake.ignore_filters();
    let app = spawn(&fake).await;
    let c = app.client().await;
    let local: uuid::Uuid = c
        .query_one(
            "INSERT INTO sync_contacts (email, first_name, last_name)
             VALUES ('lee@park.example', 'Lee', 'Park') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let keap_id = wait_pushed(&c, local).await;
    let dana_id = dana["id"].as_i64().unwrap();
    assert_ne!(keap_id, dana_id, "Lee was not written onto Dana");
    assert_eq!(fake.contact(dana_id).unwrap()["given_name"], "Dana");
    assert_eq!(fake.contact(keap_id).unwrap()["given_name"], "Lee");
    assert!(
        !fake.writes().iter().any(|r| r.method == "PATCH"),
        "nothing was overwritten"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_second_edit_under_the_same_keap_timestamp_is_applied_not_skipped() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let id = fake.put_contact(dana())["id"].as_i64().unwrap();
    hint(&app, "contact.add", &[id]).await;
    wait_contact(&c, id, "mirrored", |r| r["first_name"] == "Dana").await;
    // A second edit whose `last_updated` equals the one already applied.
    fake.edit_contact_in_the_same_tick(id, |c| c["given_name"] = json!("Dee"));
    hint(&app, "contact.edit", &[id]).await;
    let row = wait_contact(&c, id, "the edit applied", |r| r["first_name"] == "Dee").await;
    assert_eq!(row["last_name"], "Ortiz");
    // The same state fetched again under that version is stale.
    hint(&app, "contact.edit", &[id]).await;
    let c2 = &c;
    for _ in 0..400 {
        let stale: i64 = c2
            .query_one(
                "SELECT count(*) FROM sync_audit_log WHERE decision = 'skipped_stale'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if stale > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stale: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_audit_log WHERE decision = 'skipped_stale'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stale, 1, "the repeat of the same state is skipped");
    app.stop().await;
}

/// A contact created here and pushed to Keap, synced: its local and Keap ids.
async fn pushed_contact(
    c: &tokio_postgres::Client,
    email: &str,
    first: &str,
    last: &str,
) -> (uuid::Uuid, i64) {
    let local: uuid::Uuid = c
        .query_one(
            "INSERT INTO sync_contacts (email, first_name, last_name)
             VALUES ($1, $2, $3) RETURNING id",
            &[&email, &first, &last],
        )
        .await
        .unwrap()
        .get(0);
    let keap_id = wait_pushed(c, local).await;
    wait_contact(c, keap_id, "synced", |r| r["sync_status"] == "synced").await;
    (local, keap_id)
}

/// The record's declared write windows (`pushed_over_read` details),
/// waiting up to 10 s for the first.
async fn windows(c: &tokio_postgres::Client, local: uuid::Uuid) -> Vec<Value> {
    let mut found = Vec::new();
    for _ in 0..400 {
        found = c
            .query(
                "SELECT detail FROM sync_audit_log
                 WHERE entity_id = $1 AND decision = 'pushed_over_read'",
                &[&local],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    found
}

/// A window's versions, read and written.
fn window_versions(w: &Value) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    let at = |k: &str| w[k].as_str().unwrap().parse().unwrap();
    (at("read_version"), at("written_version"))
}

/// A PATCH whose answer is lost (a timeout) may have landed over a Keap
/// edit made between the push's read and its write: the push reads again,
/// finds its write there, and declares the window like any write over a
/// read (`pushed_over_read`), never leaving the overwrite unrecorded.
#[tokio::test]
async fn a_patch_answered_too_late_still_declares_its_window() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let (local, keap_id) = pushed_contact(&c, "ana@ruiz.example", "Ana", "Ruiz").await;
    // A Keap user renames her between the push's GET and its PATCH; the
    // PATCH lands but is answered after the push's 1 s timeout.
    fake.on_next_patch(
        keap_id,
        |c| c["given_name"] = json!("Anita"),
        Duration::from_millis(1500),
    );
    c.execute(
        "UPDATE sync_contacts SET first_name = 'Ana María' WHERE id = $1",
        &[&local],
    )
    .await
    .unwrap();
    let window = windows(&c, local).await.into_iter().next();
    let window = window.expect("the write over the read is declared");
    assert_eq!(window["fields"], json!(["first_name"]), "{window}");
    let (read, written) = window_versions(&window);
    assert!(read < written, "{window}");
    assert_eq!(fake.contact(keap_id).unwrap()["given_name"], "Ana María");
    wait_contact(&c, keap_id, "synced", |r| r["sync_status"] == "synced").await;
    app.stop().await;
}

#[tokio::test]
async fn a_patch_whose_answer_shows_another_edit_still_declares_its_window() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let (local, keap_id) = pushed_contact(&c, "eva@luna.example", "Eva", "Luna").await;
    // Between the push's GET and its PATCH a Keap user edits both names:
    // the PATCH (last name only) goes over her last name, and its answer
    // shows her first name. The first name is reconciled; the overwritten
    // last name must be declared, not lost silently.
    fake.on_next_patch(
        keap_id,
        |c| {
            c["given_name"] = json!("Evita");
            c["family_name"] = json!("Luna-Keap");
        },
        Duration::ZERO,
    );
    c.execute(
        "UPDATE sync_contacts SET last_name = 'Luna Local' WHERE id = $1",
        &[&local],
    )
    .await
    .unwrap();
    let row = wait_contact(&c, keap_id, "first name reconciled", |r| {
        r["first_name"] == "Evita" && r["sync_status"] == "synced"
    })
    .await;
    assert_eq!(row["last_name"], "Luna Local");
    let windows = windows(&c, local).await;
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0]["fields"], json!(["last_name"]), "{windows:?}");
    let (read, written) = window_versions(&windows[0]);
    assert!(read < written, "{windows:?}");
    let remote = fake.contact(keap_id).unwrap();
    assert_eq!(remote["given_name"], "Evita");
    assert_eq!(remote["family_name"], "Luna Local");
    app.stop().await;
}

#[tokio::test]
async fn a_patch_whose_answer_and_re_read_are_both_lost_declares_its_window_on_the_next_attempt() {
    let fake = FakeKeap::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let (local, keap_id) = pushed_contact(&c, "ines@vega.example", "Inés", "Vega").await;
    // A Keap user renames her between the push's GET and its PATCH; the
    // PATCH lands but is answered after the push's 1 s timeout, and the
    // read that would tell whether it landed fails too (a 503).
    let landed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = landed.clone();
    fake.on_next_patch_then(
        keap_id,
        |c| c["given_name"] = json!("Inesita"),
        Duration::from_millis(1500),
        move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst),
    );
    c.execute(
        "UPDATE sync_contacts SET first_name = 'Inés María' WHERE id = $1",
        &[&local],
    )
    .await
    .unwrap();
    for _ in 0..400 {
        if landed.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        landed.load(std::sync::atomic::Ordering::SeqCst),
        "the PATCH came"
    );
    fake.fail_next([Fault::Status(503)]);
    let window = windows(&c, local).await.into_iter().next();
    let doubt: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_audit_log WHERE entity_id = $1 AND decision = 'push_in_doubt'",
            &[&local],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(doubt, 1, "the lost write was recorded");
    let window = window.expect("the write over the read is declared on the next attempt");
    assert_eq!(window["fields"], json!(["first_name"]), "{window}");
    assert_eq!(window["in_doubt"], false, "its value is there: {window}");
    let (read, written) = window_versions(&window);
    assert!(read < written, "{window}");
    assert_eq!(fake.contact(keap_id).unwrap()["given_name"], "Inés María");
    wait_contact(&c, keap_id, "synced", |r| r["sync_status"] == "synced").await;
    app.stop().await;
}
