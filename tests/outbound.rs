//! Change capture and outbound sync: local changes to `clients` reach the
//! fake OpenPhone API exactly as they should, once, and never bounce back.

mod common;

use std::time::Duration;

use common::fake_openphone::{FakeOpenPhone, Fault, Recorded, API_KEY};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn spawn(fake: &FakeOpenPhone) -> TestApp {
    spawn_on(fake, TestDb::create().await, |_| {}).await
}

async fn spawn_on(
    fake: &FakeOpenPhone,
    db: TestDb,
    tweak: impl FnOnce(&mut syncbridge::config::Settings),
) -> TestApp {
    let url = fake.url.clone();
    TestApp::spawn_on(db, move |s| {
        s.set("OPENPHONE_API_KEY", API_KEY);
        s.set("OPENPHONE_API_URL", url);
        s.set("SYNCBRIDGE_RETRY_BASE_MS", "50");
        s.set("SYNCBRIDGE_PUSH_TIMEOUT_MS", "1000");
        tweak(s);
    })
    .await
}

async fn insert_client(c: &tokio_postgres::Client, first: &str, phone: &str) -> uuid::Uuid {
    c.query_one(
        "INSERT INTO clients (first_name, last_name, email, phone) VALUES ($1, 'Ortiz', 'd@o.example', $2) RETURNING id",
        &[&first, &phone],
    )
    .await
    .unwrap()
    .get(0)
}

async fn client_row(c: &tokio_postgres::Client, id: uuid::Uuid) -> Value {
    c.query_one("SELECT to_jsonb(c) FROM clients c WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

/// Waits until the client's sync status is `want` (10 s at most).
async fn wait_status(c: &tokio_postgres::Client, id: uuid::Uuid, want: &str) -> Value {
    for _ in 0..400 {
        let row = client_row(c, id).await;
        if row["sync_status"] == want {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("client never became {want}: {}", client_row(c, id).await);
}

async fn outbox_pending(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM sync_outbox WHERE status = 'pending'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

fn writes_for<'a>(reqs: &'a [Recorded], method: &str) -> Vec<&'a Recorded> {
    reqs.iter()
        .filter(|r| r.method == method && r.status < 300)
        .collect()
}

#[tokio::test]
async fn insert_update_delete_make_exactly_the_right_calls() {
    let fake = FakeOpenPhone::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;

    // Insert: look up by external id, then create; the id is stored.
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    let row = wait_status(&c, id, "synced").await;
    let contact_id = row["openphone_contact_id"].as_str().unwrap().to_owned();
    let reqs = fake.requests();
    assert_eq!(reqs[0].method, "GET", "looks up before creating");
    assert_eq!(reqs[0].query["externalIds"], id.to_string());
    let posts = writes_for(&reqs, "POST");
    assert_eq!(posts.len(), 1);
    let body = posts[0].body.as_ref().unwrap();
    assert_eq!(body["externalId"], id.to_string());
    assert_eq!(body["defaultFields"]["firstName"], "Dana");
    assert_eq!(
        body["defaultFields"]["phoneNumbers"][0]["value"],
        "+14155550142"
    );
    assert!(row["last_synced_at"].is_string());
    assert_eq!(row["sync_error"], Value::Null);

    // Update: PATCH the stored id, no new contact.
    let before = fake.requests().len();
    c.execute(
        "UPDATE clients SET last_name = 'Ortiz-Reyes' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    fake.wait_for("the PATCH", |r| writes_for(r, "PATCH").len() == 1)
        .await;
    let patch = writes_for(&fake.requests(), "PATCH")[0].clone();
    assert_eq!(patch.path, format!("/v1/contacts/{contact_id}"));
    assert_eq!(
        patch.body.unwrap()["defaultFields"]["lastName"],
        "Ortiz-Reyes"
    );
    assert_eq!(
        fake.requests().len(),
        before + 1,
        "an update with a stored id is one call"
    );
    wait_status(&c, id, "synced").await;

    // Alternate numbers become their own contacts; removing one deletes it.
    c.execute(
        "UPDATE clients SET alt_phone_1 = '212-555-0187' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    fake.wait_for("the alternate", |r| writes_for(r, "POST").len() == 2)
        .await;
    let row = wait_status(&c, id, "synced").await;
    let alt = loop {
        let row = client_row(&c, id).await;
        if let Some(a) = row["openphone_alt_contact_1_id"].as_str() {
            break a.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let _ = row;
    assert_eq!(
        fake.contacts_with_external_id(&format!("{id}:alt1")).len(),
        1
    );
    c.execute(
        "UPDATE clients SET alt_phone_1 = NULL WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    fake.wait_for("the alternate's deletion", |r| {
        writes_for(r, "DELETE")
            .iter()
            .any(|d| d.path.ends_with(&alt))
    })
    .await;

    // Delete: the contact goes too.
    c.execute("DELETE FROM clients WHERE id = $1", &[&id])
        .await
        .unwrap();
    fake.wait_for("the contact's deletion", |r| {
        writes_for(r, "DELETE")
            .iter()
            .any(|d| d.path.ends_with(&contact_id))
    })
    .await;
    assert!(fake.contacts().is_empty(), "{:?}", fake.contacts());
    app.stop().await;
}

#[tokio::test]
async fn quick_updates_coalesce_into_one_push_of_the_final_state() {
    let fake = FakeOpenPhone::start().await;
    let db = TestDb::create().await;
    let c = db.client().await;
    // The changes happen while syncbridge is not running.
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    for name in ["Ortiz-1", "Ortiz-2", "Ortiz-3"] {
        c.execute(
            "UPDATE clients SET last_name = $2 WHERE id = $1",
            &[&id, &name],
        )
        .await
        .unwrap();
    }
    assert_eq!(outbox_pending(&c).await, 4);
    let app = spawn_on(&fake, db, |_| {}).await;
    let c = app.client().await;
    wait_status(&c, id, "synced").await;
    let writes = fake.writes();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(
        writes[0].body.as_ref().unwrap()["defaultFields"]["lastName"],
        "Ortiz-3"
    );
    assert_eq!(outbox_pending(&c).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn provider_errors_retry_then_fail_and_the_retry_endpoint_requeues() {
    let fake = FakeOpenPhone::start().await;
    let app = spawn_on(&fake, TestDb::create().await, |s| {
        s.set("SYNCBRIDGE_PUSH_MAX_ATTEMPTS", "3");
        s.set("SYNCBRIDGE_ADMIN_TOKEN", "admin-test-token");
    })
    .await;
    let c = app.client().await;
    fake.fail_next([Fault::Status(500), Fault::Status(503), Fault::Status(500)]);
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    let row = wait_status(&c, id, "failed").await;
    assert!(row["sync_error"].as_str().unwrap().contains("500"), "{row}");
    let (status, attempts): (String, i32) = {
        let r = c
            .query_one("SELECT status, attempts FROM sync_outbox", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), attempts), ("failed", 3));
    assert!(fake.writes().is_empty());

    // The operator re-queues it; the provider is healthy again.
    let resp = app
        .http
        .post(app.url("/api/sync/retry"))
        .bearer_auth("admin-test-token")
        .json(&json!({"provider": "openphone", "entity": "clients"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["requeued"], 1);
    wait_status(&c, id, "synced").await;
    assert_eq!(fake.writes().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_429_is_honoured_with_its_retry_after() {
    let fake = FakeOpenPhone::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    fake.fail_next([Fault::RateLimited(1)]);
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    wait_status(&c, id, "synced").await;
    let reqs = fake.requests();
    let limited = reqs.iter().position(|r| r.status == 429).unwrap();
    let next = &reqs[limited + 1];
    let waited = next.at.duration_since(reqs[limited].at);
    assert!(
        waited >= Duration::from_millis(950),
        "retried after only {waited:?}"
    );
    assert_eq!(fake.writes().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_create_retried_after_a_timeout_or_a_dropped_connection_makes_one_contact() {
    let fake = FakeOpenPhone::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    // The lookup answers; the create is applied but its answer comes after
    // our 1 s timeout. Then a lookup whose connection drops.
    fake.fail_next([
        Fault::Slow(Duration::ZERO),
        Fault::Slow(Duration::from_millis(1500)),
        Fault::Drop,
    ]);
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    let row = wait_status(&c, id, "synced").await;
    let contacts = fake.contacts_with_external_id(&id.to_string());
    assert_eq!(contacts.len(), 1, "{contacts:#?}");
    assert_eq!(row["openphone_contact_id"], contacts[0]["id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_pushed_change_echoed_back_by_webhook_pushes_nothing_more() {
    let fake = FakeOpenPhone::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    let row = wait_status(&c, id, "synced").await;
    let contact_id = row["openphone_contact_id"].as_str().unwrap().to_owned();
    let contact = fake.contact(&contact_id).unwrap();
    let calls = fake.requests().len();

    // OpenPhone tells us about the contact we just wrote.
    let body = serde_json::to_vec(&json!({
        "id": "EVecho1", "object": "event", "apiVersion": "v3",
        "createdAt": contact["updatedAt"], "type": "contact.updated",
        "data": {"object": contact}
    }))
    .unwrap();
    let (s, b) = app
        .post(
            "/webhooks/openphone",
            &openphone_headers(&body, chrono::Utc::now().timestamp_millis()),
            body,
        )
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    app.settle().await;
    let event: (String, Option<String>) = {
        let r = c
            .query_one("SELECT status, error FROM webhook_events", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(event.0, "ignored", "{event:?}");
    assert!(event.1.unwrap().contains("echo"));
    assert_eq!(client_row(&c, id).await["last_name"], "Ortiz");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(outbox_pending(&c).await, 0);
    assert_eq!(fake.requests().len(), calls, "no further call to OpenPhone");
    app.stop().await;
}

#[tokio::test]
async fn a_change_made_by_the_router_is_never_pushed_back_to_openphone() {
    let fake = FakeOpenPhone::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    let row = wait_status(&c, id, "synced").await;
    let mut contact = fake
        .contact(row["openphone_contact_id"].as_str().unwrap())
        .unwrap();
    let calls = fake.requests().len();
    // A user renames the contact in OpenPhone, later than our write.
    contact["defaultFields"]["lastName"] = json!("Reyes");
    let later = (chrono::Utc::now() + chrono::Duration::seconds(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    contact["updatedAt"] = json!(later);
    let body = serde_json::to_vec(&json!({
        "id": "EVuser1", "object": "event", "apiVersion": "v3", "createdAt": later,
        "type": "contact.updated", "data": {"object": contact}
    }))
    .unwrap();
    let (s, _) = app
        .post(
            "/webhooks/openphone",
            &openphone_headers(&body, chrono::Utc::now().timestamp_millis()),
            body,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.settle().await;
    assert_eq!(
        client_row(&c, id).await["last_name"],
        "Reyes",
        "applied locally"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let origins: Vec<String> = c
        .query(
            "SELECT origin FROM sync_outbox WHERE provider = 'openphone'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        origins,
        ["local"],
        "only the original insert was captured for OpenPhone"
    );
    assert_eq!(fake.requests().len(), calls, "nothing pushed back");
    app.stop().await;
}

#[tokio::test]
async fn the_listener_reconnects_and_drains_what_changed_meanwhile() {
    let fake = FakeOpenPhone::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let ready = |app: &TestApp| {
        let url = app.url("/readyz");
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().status() }
    };
    // Wait until ready (the listener connects at start).
    for _ in 0..200 {
        if ready(&app).await == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ready(&app).await, StatusCode::OK);
    let killed: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[&syncbridge::listener::APPLICATION_NAME],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    // A change while the listener is down.
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    let mut saw_unready = false;
    for _ in 0..200 {
        match ready(&app).await {
            StatusCode::SERVICE_UNAVAILABLE => saw_unready = true,
            StatusCode::OK if saw_unready => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_unready, "/readyz reported the lost listener");
    assert_eq!(ready(&app).await, StatusCode::OK, "and recovered");
    wait_status(&c, id, "synced").await;
    assert_eq!(fake.writes().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn full_sync_backfills_rows_that_predate_syncbridge() {
    let fake = FakeOpenPhone::start().await;
    let db = TestDb::create().await;
    let c = db.client().await;
    // Rows written before capture existed: no outbox rows for them.
    c.batch_execute(
        "ALTER TABLE clients DISABLE TRIGGER syncbridge_capture;
         INSERT INTO clients (first_name, phone) VALUES ('Old', '+14155550001'), ('Older', '+14155550002');
         INSERT INTO clients (first_name, phone, last_synced_at, updated_at)
              VALUES ('Synced', '+14155550003', now(), now() - interval '1 minute');
         ALTER TABLE clients ENABLE TRIGGER syncbridge_capture;",
    )
    .await
    .unwrap();
    assert_eq!(outbox_pending(&c).await, 0);
    let app = spawn_on(&fake, db, |s| s.set("SYNCBRIDGE_ADMIN_TOKEN", "t0ken")).await;
    let full = |body: Value| {
        app.http
            .post(app.url("/api/sync/full"))
            .bearer_auth("t0ken")
            .json(&body)
            .send()
    };
    let r = full(json!({"entity": "clients", "provider": "openphone"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["queued"], 2, "only the never-synced rows: {b}");
    for _ in 0..400 {
        if fake.contacts().len() == 2 && outbox_pending(&c).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(fake.contacts().len(), 2);
    // Asking again queues nothing: everything is synced.
    let b: Value = full(json!({"entity": "clients", "provider": "openphone"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["queued"], 0);
    let r = full(json!({"entity": "communications", "provider": "openphone"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_shows_status_and_events() {
    let fake = FakeOpenPhone::start().await;
    // Unset token: 503 with the reason.
    let app = spawn(&fake).await;
    let r = app
        .http
        .get(app.url("/api/sync/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let b: Value = r.json().await.unwrap();
    assert!(b["detail"]
        .as_str()
        .unwrap()
        .contains("SYNCBRIDGE_ADMIN_TOKEN"));
    app.stop().await;

    let app = spawn_on(&fake, TestDb::create().await, |s| {
        s.set("SYNCBRIDGE_ADMIN_TOKEN", "s3cret")
    })
    .await;
    for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
        let mut req = app.http.get(app.url("/api/sync/status"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let b: Value = r.json().await.unwrap();
        assert!(!b.to_string().contains("s3cret"));
    }
    let c = app.client().await;
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    wait_status(&c, id, "synced").await;
    app.post_fixture("openphone/message-received.json").await;
    app.settle().await;

    let get = |path: &str| app.http.get(app.url(path)).bearer_auth("s3cret").send();
    let s: Value = get("/api/sync/status").await.unwrap().json().await.unwrap();
    assert_eq!(s["records"]["clients"]["synced"], 1, "{s}");
    assert_eq!(s["outbound"]["openphone"]["clients"]["done"], 1, "{s}");
    assert_eq!(s["inbound"]["openphone"]["processed"], 1, "{s}");
    assert!(s["outbound"]["openphone"]["clients"]["last_pushed_at"].is_string());
    assert_eq!(s["backlog"], 0);
    assert!(s["health"]["listener"].is_string());

    let list: Value = get("/api/sync/events?provider=openphone")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ev = &list["events"][0];
    assert_eq!(ev["event_type"], "message.received");
    assert!(ev.get("body").is_none(), "lists carry no bodies");
    let id = ev["id"].as_i64().unwrap();
    let one: Value = get(&format!("/api/sync/events/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(one["body"]
        .as_str()
        .unwrap()
        .contains("Is the 2BR still available?"));
    assert!(one["headers"]["openphone-signature"].is_string());
    assert_eq!(one["audit"][0]["entity_type"], "communications");
    assert_eq!(
        get("/api/sync/events/999999").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // Replay: applied again, idempotently.
    let r = app
        .http
        .post(app.url(&format!("/api/sync/events/{id}/replay")))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.settle().await;
    let status: String = c
        .query_one("SELECT status FROM webhook_events WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "processed");
    let n: i64 = c
        .query_one("SELECT count(*) FROM communications", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_local_change_shows_pending_until_it_is_pushed() {
    let fake = FakeOpenPhone::start().await;
    let app = spawn(&fake).await;
    let c = app.client().await;
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    wait_status(&c, id, "synced").await;
    // The provider is slow to answer the next push: the change waits.
    fake.fail_next([Fault::Slow(Duration::from_millis(600))]);
    c.execute(
        "UPDATE clients SET company = 'Ortiz Realty' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    assert_eq!(client_row(&c, id).await["sync_status"], "pending");
    wait_status(&c, id, "synced").await;
    // Bookkeeping-only writes and the router's own writes do not.
    c.execute(
        "UPDATE clients SET sync_error = 'note' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    assert_eq!(client_row(&c, id).await["sync_status"], "synced");
    app.stop().await;
}

#[tokio::test]
async fn pending_changes_of_an_untracked_table_are_held_not_pushed_as_deletes() {
    let fake = FakeOpenPhone::start().await;
    let db = TestDb::create().await;
    let c = db.client().await;
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    // The operator stops syncing clients while a change is pending.
    c.execute(
        "SELECT syncbridge_untrack_table('clients', 'openphone')",
        &[],
    )
    .await
    .unwrap();
    let app = spawn_on(&fake, db, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(fake.writes().is_empty(), "{:#?}", fake.writes());
    assert_eq!(outbox_pending(&c).await, 1, "held for the operator");
    assert!(client_row(&c, id).await["first_name"] == "Dana");
    // Tracking again resumes it.
    c.execute("SELECT syncbridge_track_table('clients', 'openphone')", &[])
        .await
        .unwrap();
    wait_status(&c, id, "synced").await;
    assert_eq!(writes_for(&fake.requests(), "POST").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn retracking_a_table_keeps_its_bookkeeping_columns() {
    let db = TestDb::create().await;
    let c = db.client().await;
    c.batch_execute(
        "SELECT syncbridge_untrack_table('clients', 'openphone');
         SELECT syncbridge_track_table('clients', 'openphone');",
    )
    .await
    .unwrap();
    let id = insert_client(&c, "Dana", "(415) 555-0142").await;
    c.execute(
        "UPDATE clients SET sync_error = 'x', last_synced_at = now() WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_outbox WHERE operation = 'UPDATE'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "bookkeeping-only updates are still not changes");
}

#[tokio::test]
async fn a_lookup_answered_with_another_contact_never_merges_two_clients() {
    let fake = FakeOpenPhone::start().await;
    let app = spawn_on(&fake, TestDb::create().await, |_| {}).await;
    let c = app.client().await;
    let dana = insert_client(&c, "Dana", "+14155550142").await;
    wait_status(&c, dana, "synced").await;
    // A proxy (or a broken API) now ignores `externalIds` and answers
    // Dana's contact to every look-up.
    fake.ignore_filters();
    let lee = insert_client(&c, "Lee", "+12125550187").await;
    wait_status(&c, lee, "synced").await;
    let contacts = fake.contacts();
    assert_eq!(
        contacts.len(),
        2,
        "Lee got a contact of his own: {contacts:?}"
    );
    let dana_contact = fake.contacts_with_external_id(&dana.to_string());
    assert_eq!(dana_contact.len(), 1);
    assert_eq!(
        dana_contact[0]["defaultFields"]["firstName"], "Dana",
        "Dana's contact untouched"
    );
    assert_eq!(fake.contacts_with_external_id(&lee.to_string()).len(), 1);
    let patches = fake.writes().iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(patches, 0, "nothing was overwritten");
    app.stop().await;
}
