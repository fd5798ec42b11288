//! The conflict engine end to end: a local UPDATE whose push is held back
//! (the fake OpenPhone fails it, the retry is far off) and a contact edit
//! arriving by webhook meet in the router, which decides under the rule
//! table; then the held push is released and both sides are compared.

mod common;

use std::time::Duration;

use common::fake_openphone::{FakeOpenPhone, Fault, API_KEY};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const ADMIN: &str = "conflict-admin-token";

struct Scene {
    fake: FakeOpenPhone,
    app: TestApp,
    c: tokio_postgres::Client,
    id: Uuid,
    contact_id: String,
}

impl Scene {
    /// A client synced to OpenPhone, and `rules` in the rule table.
    async fn start(rules: &[(&str, &str, &str)]) -> Scene {
        let fake = FakeOpenPhone::start().await;
        let url = fake.url.clone();
        let app = TestApp::spawn_with(move |s| {
            s.set("OPENPHONE_API_KEY", API_KEY);
            s.set("OPENPHONE_API_URL", url);
            s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN);
            // A failed push waits minutes: the test releases it by hand.
            s.set("SYNCBRIDGE_RETRY_BASE_MS", "600000");
            s.set("SYNCBRIDGE_PUSH_TIMEOUT_MS", "1000");
        })
        .await;
        let c = app.client().await;
        let id: Uuid = c
            .query_one(
                "INSERT INTO clients (first_name, last_name, email, phone, company)
                 VALUES ('Dana', 'Ortiz', 'dana@ortiz.example', '(415) 555-0142', 'Ortiz Realty')
                 RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let mut s = Scene {
            fake,
            app,
            c,
            id,
            contact_id: String::new(),
        };
        let row = s.wait_status("synced").await;
        s.contact_id = row["openphone_contact_id"].as_str().unwrap().to_owned();
        for (entity, field, strategy) in rules {
            let (st, b) = s
                .admin_put(
                    "/api/sync/conflict-rules",
                    json!({"entity_type": entity, "field": field, "strategy": strategy}),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{b}");
        }
        s
    }

    async fn row(&self) -> Value {
        self.c
            .query_one(
                "SELECT to_jsonb(c) FROM clients c WHERE id = $1",
                &[&self.id],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn wait_status(&self, want: &str) -> Value {
        for _ in 0..400 {
            let row = self.row().await;
            if row["sync_status"] == want {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("client never became {want}: {}", self.row().await);
    }

    /// A local UPDATE whose push fails once and then waits (held back).
    async fn local_edit(&self, set: &str) {
        self.fake.fail_next([Fault::Status(503)]);
        let before = self.fake.requests().len();
        self.c
            .batch_execute(&format!(
                "UPDATE clients SET {set} WHERE id = '{}'",
                self.id
            ))
            .await
            .unwrap();
        self.fake
            .wait_for("the failed push", |r| r.len() > before)
            .await;
        for _ in 0..400 {
            let attempts: i32 = self
                .c
                .query_one(
                    "SELECT coalesce(max(attempts), 0) FROM sync_outbox WHERE status = 'pending'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if attempts >= 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the failed push was not recorded");
    }

    /// A user edits the contact in OpenPhone at `at`; the webhook arrives
    /// and the router applies it.
    async fn remote_edit(&self, at: chrono::DateTime<chrono::Utc>, edit: impl FnOnce(&mut Value)) {
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let contact = self.fake.edit_contact(&self.contact_id, &at, edit);
        let body = serde_json::to_vec(&json!({
            "id": format!("EV{}", Uuid::new_v4().simple()), "object": "event",
            "apiVersion": "v3", "createdAt": at, "type": "contact.updated",
            "data": {"object": contact}
        }))
        .unwrap();
        let (s, b) = self
            .app
            .post(
                "/webhooks/openphone",
                &openphone_headers(&body, chrono::Utc::now().timestamp_millis()),
                body,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        self.app.settle().await;
    }

    /// Lets held-back pushes go now and waits for the client to be synced.
    async fn release(&self) -> Value {
        self.c
            .batch_execute(
                "UPDATE sync_outbox SET next_attempt_at = now()
                 WHERE status = 'pending' AND next_attempt_at <> 'infinity'",
            )
            .await
            .unwrap();
        self.wait_status("synced").await
    }

    fn remote(&self) -> Value {
        self.fake.contact(&self.contact_id).unwrap()
    }

    async fn admin(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.bearer_auth(ADMIN).send().await.unwrap();
        let s = resp.status();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    async fn admin_put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin(self.app.http.put(self.app.url(path)).json(&body))
            .await
    }

    async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin(self.app.http.post(self.app.url(path)).json(&body))
            .await
    }

    async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        self.admin(self.app.http.get(self.app.url(path))).await
    }

    /// The decisions audited for the client, oldest first.
    async fn decisions(&self) -> Vec<String> {
        self.c
            .query(
                "SELECT decision FROM sync_audit_log
                 WHERE entity_id = $1 AND sync_source = 'openphone' ORDER BY created_at",
                &[&self.id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

fn later() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::seconds(30)
}

fn email(c: &Value) -> Value {
    c["defaultFields"]["emails"][0]["value"].clone()
}

#[tokio::test]
async fn merge_keeps_edits_of_different_fields_from_both_sides() {
    let s = Scene::start(&[("clients", "*", "merge")]).await;
    s.local_edit("email = 'dana@new.example'").await;
    s.remote_edit(later(), |c| c["defaultFields"]["lastName"] = json!("Reyes"))
        .await;
    let row = s.row().await;
    assert_eq!(row["last_name"], "Reyes", "remote-only field taken");
    assert_eq!(row["email"], "dana@new.example", "local-only field kept");
    assert_eq!(s.decisions().await.last().unwrap(), "merge");

    let row = s.release().await;
    let remote = s.remote();
    assert_eq!(remote["defaultFields"]["lastName"], "Reyes");
    assert_eq!(email(&remote), "dana@new.example");
    assert_eq!(row["last_name"], "Reyes");
    s.app.stop().await;
}

#[tokio::test]
async fn merge_of_the_same_field_follows_the_fields_own_rule() {
    // Entity merges; last_name prefers the provider, company the local side.
    let s = Scene::start(&[
        ("clients", "*", "merge"),
        ("clients", "last_name", "prefer_remote"),
        ("clients", "company", "prefer_local"),
    ])
    .await;
    s.local_edit("last_name = 'Local', company = 'Local Co'")
        .await;
    // The remote edit is older than the local one: the rules, not the
    // clock, decide.
    s.remote_edit(
        chrono::Utc::now() - chrono::Duration::milliseconds(1),
        |c| {
            c["defaultFields"]["lastName"] = json!("Remote");
            c["defaultFields"]["company"] = json!("Remote Co");
        },
    )
    .await;
    let row = s.row().await;
    assert_eq!(row["last_name"], "Remote");
    assert_eq!(row["company"], "Local Co");
    s.release().await;
    let remote = s.remote();
    assert_eq!(remote["defaultFields"]["lastName"], "Remote");
    assert_eq!(remote["defaultFields"]["company"], "Local Co");
    let audit =
        s.c.query_one(
            "SELECT detail, old_data, new_data FROM sync_audit_log
             WHERE entity_id = $1 AND decision = 'merge'",
            &[&s.id],
        )
        .await
        .unwrap();
    let (detail, before, after): (Value, Value, Value) = (audit.get(0), audit.get(1), audit.get(2));
    assert_eq!(detail["fields"]["last_name"]["strategy"], "prefer_remote");
    assert_eq!(detail["fields"]["company"]["winner"], "local");
    assert_eq!(before["last_name"], "Local", "both versions audited");
    assert_eq!(detail["remote"]["last_name"], "Remote");
    assert_eq!(after["last_name"], "Remote");
    assert_eq!(after["company"], "Local Co");
    assert!(
        detail.get("local").is_none() && detail.get("after").is_none(),
        "old_data/new_data are not repeated in detail: {detail}"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn last_write_wins_by_default_in_both_directions() {
    // The provider's edit is later: it wins locally.
    let s = Scene::start(&[]).await;
    s.local_edit("last_name = 'Local'").await;
    s.remote_edit(later(), |c| {
        c["defaultFields"]["lastName"] = json!("Remote")
    })
    .await;
    assert_eq!(s.row().await["last_name"], "Remote");
    assert_eq!(s.decisions().await.last().unwrap(), "last_write_wins");
    s.release().await;
    assert_eq!(s.remote()["defaultFields"]["lastName"], "Remote");
    s.app.stop().await;

    // The local edit is later: it stays and is pushed.
    let s = Scene::start(&[]).await;
    let earlier = chrono::Utc::now();
    s.local_edit("last_name = 'Local'").await;
    s.remote_edit(earlier, |c| {
        c["defaultFields"]["lastName"] = json!("Remote")
    })
    .await;
    assert_eq!(s.row().await["last_name"], "Local");
    s.release().await;
    assert_eq!(s.remote()["defaultFields"]["lastName"], "Local");
    s.app.stop().await;
}

#[tokio::test]
async fn prefer_local_and_prefer_remote_ignore_the_clock() {
    let s = Scene::start(&[("clients", "*", "prefer_local")]).await;
    s.local_edit("last_name = 'Local'").await;
    s.remote_edit(later(), |c| {
        c["defaultFields"]["lastName"] = json!("Remote")
    })
    .await;
    assert_eq!(s.row().await["last_name"], "Local");
    s.release().await;
    assert_eq!(s.remote()["defaultFields"]["lastName"], "Local");
    s.app.stop().await;

    let s = Scene::start(&[("clients", "*", "keap_wins")]).await;
    let earlier = chrono::Utc::now();
    s.local_edit("last_name = 'Local'").await;
    s.remote_edit(earlier, |c| {
        c["defaultFields"]["lastName"] = json!("Remote")
    })
    .await;
    assert_eq!(
        s.row().await["last_name"],
        "Remote",
        "seed alias maps to prefer_remote"
    );
    s.release().await;
    assert_eq!(s.remote()["defaultFields"]["lastName"], "Remote");
    s.app.stop().await;
}

#[tokio::test]
async fn manual_leaves_the_record_untouched_until_resolved_through_the_api() {
    let s = Scene::start(&[("clients", "last_name", "manual")]).await;
    s.local_edit("last_name = 'Local'").await;
    s.remote_edit(later(), |c| {
        c["defaultFields"]["lastName"] = json!("Remote");
        c["defaultFields"]["company"] = json!("Remote Co");
    })
    .await;
    let row = s.row().await;
    assert_eq!(row["last_name"], "Local", "untouched");
    assert_eq!(
        row["company"], "Ortiz Realty",
        "nothing applied, not even the rest"
    );
    assert_eq!(row["sync_status"], "conflict");

    let (st, list) = s.admin_get("/api/sync/conflicts").await;
    assert_eq!(st, StatusCode::OK);
    let conflicts = list["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{list}");
    let conflict = &conflicts[0];
    assert_eq!(conflict["conflict_fields"], json!(["last_name"]));
    assert_eq!(conflict["supabase_data"]["last_name"], "Local");
    assert_eq!(conflict["keap_data"]["last_name"], "Remote");
    assert_eq!(conflict["provider"], "openphone");
    let cid = conflict["id"].as_str().unwrap().to_owned();

    // The held push stays held while the conflict is open.
    let writes = s.fake.writes().len();
    s.c.batch_execute("UPDATE sync_outbox SET next_attempt_at = now() WHERE status = 'pending'")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        s.fake.writes().len(),
        writes,
        "nothing pushed while in conflict"
    );
    assert_eq!(s.row().await["last_name"], "Local");

    // Bad resolutions are refused.
    let path = format!("/api/sync/conflicts/{cid}/resolve");
    let (st, _) = s.admin_post(&path, json!({"resolution": "both"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .admin_post(
            &path,
            json!({"resolution": "merged", "data": {"sync_status": "x"}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Merged: both sides end with the merged body.
    let (_, status) = s.admin_get("/api/sync/status").await;
    assert_eq!(status["conflicts"]["open"], 1, "{status}");
    assert_eq!(status["records"]["clients"]["conflict"], 1, "{status}");
    let (st, resolved) = s
        .admin_post(
            &path,
            json!({"resolution": "merged", "data": {"last_name": "Ortiz-Reyes", "company": "Remote Co"},
                   "notes": "checked with Dana"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolution"], "merged");
    let row = s.wait_status("synced").await;
    assert_eq!(row["last_name"], "Ortiz-Reyes");
    assert_eq!(row["company"], "Remote Co");
    let remote = s.remote();
    assert_eq!(remote["defaultFields"]["lastName"], "Ortiz-Reyes");
    assert_eq!(remote["defaultFields"]["company"], "Remote Co");

    let (st, _) = s.admin_post(&path, json!({"resolution": "local"})).await;
    assert_eq!(st, StatusCode::CONFLICT, "already resolved");
    let (_, open) = s.admin_get("/api/sync/conflicts").await;
    assert_eq!(open["conflicts"], json!([]));
    let (_, all) = s.admin_get("/api/sync/conflicts?status=all").await;
    assert_eq!(all["conflicts"].as_array().unwrap().len(), 1);
    let decisions = s.decisions().await;
    assert!(decisions.contains(&"manual".to_owned()), "{decisions:?}");
    assert!(
        decisions.contains(&"resolved_merged".to_owned()),
        "{decisions:?}"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn manual_resolved_as_remote_takes_the_providers_version() {
    let s = Scene::start(&[("clients", "*", "manual")]).await;
    s.local_edit("last_name = 'Local'").await;
    s.remote_edit(later(), |c| {
        c["defaultFields"]["lastName"] = json!("Remote")
    })
    .await;
    assert_eq!(s.row().await["sync_status"], "conflict");
    let (_, list) = s.admin_get("/api/sync/conflicts").await;
    let cid = list["conflicts"][0]["id"].as_str().unwrap().to_owned();
    let (st, b) = s
        .admin_post(
            &format!("/api/sync/conflicts/{cid}/resolve"),
            json!({"resolution": "remote"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let row = s.release().await;
    assert_eq!(row["last_name"], "Remote");
    assert_eq!(s.remote()["defaultFields"]["lastName"], "Remote");
    s.app.stop().await;
}

#[tokio::test]
async fn a_remote_only_change_is_taken_and_a_stale_one_skipped_whatever_the_rule() {
    let s = Scene::start(&[("clients", "*", "prefer_local")]).await;
    let at = later();
    s.remote_edit(at, |c| c["defaultFields"]["company"] = json!("New Co"))
        .await;
    assert_eq!(s.row().await["company"], "New Co", "fast-forward");
    // An older delivery of the contact arrives late.
    s.remote_edit(at - chrono::Duration::seconds(10), |c| {
        c["defaultFields"]["company"] = json!("Old Co")
    })
    .await;
    assert_eq!(s.row().await["company"], "New Co");
    let d = s.decisions().await;
    assert_eq!(
        &d[d.len() - 2..],
        ["fast_forward", "skipped_stale"],
        "{d:?}"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn rules_are_listed_and_validated_through_the_api() {
    let s = Scene::start(&[("clients", "email", "prefer_local")]).await;
    let (st, b) = s.admin_get("/api/sync/conflict-rules").await;
    assert_eq!(st, StatusCode::OK);
    let rules = b["rules"].as_array().unwrap();
    assert_eq!(rules[0]["entity_type"], "clients");
    assert_eq!(rules[0]["field"], "email");
    assert_eq!(rules.last().unwrap()["entity_type"], "*");
    let (st, _) = s
        .admin_put(
            "/api/sync/conflict-rules",
            json!({"entity_type": "clients", "strategy": "coin_toss"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, b) = s
        .admin_put(
            "/api/sync/conflict-rules",
            json!({"entity_type": "clients", "field": "email", "strategy": null}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["rules"].as_array().unwrap().len(), 1, "{b}");
    let (st, _) = s.admin_get("/api/sync/conflicts?status=bogus").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.app.stop().await;
}

/// Stores an OpenPhone `contact.updated` delivery in the inbox as the front
/// would (`key` is its event id and dedup key).
async fn store_contact_event(
    c: &tokio_postgres::Client,
    key: &str,
    contact_id: &str,
    at: &str,
    fields: Value,
) {
    let body = json!({
        "id": key, "object": "event", "apiVersion": "v3",
        "createdAt": at, "type": "contact.updated",
        "data": {"object": {"object": "contact", "id": contact_id,
            "defaultFields": fields, "updatedAt": at}}
    });
    c.execute(
        "INSERT INTO webhook_events (provider, dedup_key, event_type, event_id, body)
         VALUES ('openphone', $1, 'contact.updated', $1, $2)",
        &[&key, &serde_json::to_vec(&body).unwrap()],
    )
    .await
    .unwrap();
}

/// A synced client Ann A with `phone`, linked to OpenPhone contact `cid`
/// with that state as the snapshot, both two days old.
async fn linked_client(c: &tokio_postgres::Client, id: Uuid, cid: &str, phone: &str) {
    c.execute(
        "INSERT INTO clients (id, first_name, last_name, phone, openphone_contact_id,
                              sync_status, last_synced_at, updated_at)
         VALUES ($1, 'Ann', 'A', $2, $3, 'synced', now() - interval '2 days',
                 now() - interval '2 days')",
        &[&id, &phone, &cid],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id, snapshot,
                                 remote_version, last_synced_at)
         VALUES ('clients', $1, 'openphone', 'primary', $2,
                 jsonb_build_object('first_name', 'Ann', 'last_name', 'A',
                                    'company', NULL, 'email', NULL, 'phone', $3::text),
                 now() - interval '2 days', now() - interval '2 days')",
        &[&id, &cid, &phone],
    )
    .await
    .unwrap();
}

/// A router on `db` with one worker, so events stored together are one
/// batch (two or more contacts: the set-based path).
fn one_worker_router(db: &TestDb) -> syncbridge::router::Router {
    let mut settings = test_settings(&db.url);
    settings.set("SYNCBRIDGE_ROUTER_WORKERS", "1");
    let config = syncbridge::config::Config::from_settings(&settings).unwrap();
    let pool = syncbridge::db::pool(&db.url, 4).unwrap();
    let registry = syncbridge::providers::Registry::from_config(&config);
    syncbridge::router::Router::new(pool, &registry, config.router.clone())
}

/// Returns once a session of `c`'s database waits for a lock (within 20
/// s, else fails with `what`).
async fn lock_wait(c: &tokio_postgres::Client, what: &str) {
    let waiting = async {
        loop {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                     WHERE NOT l.granted AND a.datname = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect(what);
}

/// Routers decide from the link as the record's lock holder left it. A
/// dispatcher (here: a transaction playing one) holds a client's lock while
/// it records a newer synced state — the client's value and the link's
/// snapshot and remote version. A contact event older than that state,
/// claimed meanwhile, waits for the lock and must then see the link as
/// committed: it is stale, changes nothing and queues no push. Checked for
/// a lone event (one-at-a-time path) and for two in one batch (set-based
/// path).
#[tokio::test]
async fn a_contact_event_waiting_on_a_locked_client_decides_from_the_link_committed_meanwhile() {
    for contacts in [1usize, 2] {
        let db = TestDb::create().await;
        let c = db.client().await;
        // The router's own writes carry this origin: setup queues no push.
        c.batch_execute("SELECT set_config('syncbridge.origin', 'openphone', false)")
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..contacts {
            let id = Uuid::new_v4();
            let cid = format!("CLOCK{i}");
            linked_client(&c, id, &cid, &format!("+1415555010{i}")).await;
            ids.push((id, cid));
        }

        // The lock holder: clients locked, then the newer synced state
        // (last_name C, remote version an hour ago) on row and link.
        let holder = db.client().await;
        holder
            .batch_execute("BEGIN; SELECT set_config('syncbridge.origin', 'openphone', true)")
            .await
            .unwrap();
        let locked: Vec<Uuid> = ids.iter().map(|(id, _)| *id).collect();
        holder
            .execute(
                "SELECT 1 FROM clients WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&locked],
            )
            .await
            .unwrap();
        holder
            .execute(
                "UPDATE clients SET last_name = 'C', last_synced_at = now() WHERE id = ANY($1)",
                &[&locked],
            )
            .await
            .unwrap();
        holder
            .execute(
                "UPDATE sync_links SET snapshot = snapshot || '{\"last_name\": \"C\"}',
                        remote_version = now() - interval '1 hour'
                 WHERE local_id = ANY($1)",
                &[&locked],
            )
            .await
            .unwrap();

        // Contact events from a day ago (last_name B), stored as the inbox
        // stores them, and a router draining them.
        let at = (chrono::Utc::now() - chrono::Duration::days(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (n, (_, cid)) in ids.iter().enumerate() {
            let fields = json!({"firstName": "Ann", "lastName": "B",
                "phoneNumbers": [{"name": "phone", "value": format!("+1415555010{n}")}]});
            store_contact_event(&c, &format!("EVlock{n}"), cid, &at, fields).await;
        }
        let router = one_worker_router(&db);
        let drain = tokio::spawn(async move {
            router
                .drain_all(&tokio_util::sync::CancellationToken::new())
                .await
        });
        // The router claims the events and waits on the clients' locks.
        lock_wait(&c, "the router waits for the locked clients").await;
        holder.batch_execute("COMMIT").await.unwrap();
        let stats = drain.await.unwrap().unwrap();
        assert_eq!(stats.total(), contacts, "{stats:?}");

        for (id, _) in &ids {
            let name: String = c
                .query_one("SELECT last_name FROM clients WHERE id = $1", &[id])
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                name, "C",
                "the older event did not overwrite ({contacts} events)"
            );
            let decisions: Vec<String> = c
                .query(
                    "SELECT decision FROM sync_audit_log WHERE entity_id = $1 AND event_id IS NOT NULL",
                    &[id],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(decisions, ["skipped_stale"], "{contacts} events");
        }
        let statuses: Vec<String> = c
            .query("SELECT status FROM webhook_events ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(statuses, vec!["skipped_stale"; contacts]);
        let queued: i64 = c
            .query_one("SELECT count(*) FROM sync_outbox", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(queued, 0, "nothing to push: the remote already has C");
    }
}

/// A client deleted locally while no push removed its link (no OpenPhone
/// API configured) leaves a link naming a row that is gone. A later event
/// for that contact makes or finds another client and takes the link over,
/// instead of failing on the link's unique remote id. Lone event and a
/// two-event batch.
#[tokio::test]
async fn a_link_left_by_a_deleted_client_is_taken_over() {
    for contacts in [1usize, 2] {
        let db = TestDb::create().await;
        let c = db.client().await;
        let mut cids = Vec::new();
        for i in 0..contacts {
            let id = Uuid::new_v4();
            let cid = format!("CGONE{i}");
            c.execute(
                "INSERT INTO clients (id, first_name, last_name, openphone_contact_id, sync_status)
                 VALUES ($1, 'Gone', 'Client', $2, 'synced')",
                &[&id, &cid],
            )
            .await
            .unwrap();
            c.execute(
                "INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id, snapshot,
                                         remote_version, last_synced_at)
                 VALUES ('clients', $1, 'openphone', 'primary', $2,
                         '{\"first_name\": \"Gone\", \"last_name\": \"Client\"}',
                         now() - interval '2 days', now() - interval '2 days')",
                &[&id, &cid],
            )
            .await
            .unwrap();
            c.execute("DELETE FROM clients WHERE id = $1", &[&id])
                .await
                .unwrap();
            cids.push(cid);
        }
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (n, cid) in cids.iter().enumerate() {
            let fields = json!({"firstName": "Back", "lastName": format!("Again{n}")});
            store_contact_event(&c, &format!("EVgone{n}"), cid, &at, fields).await;
        }
        one_worker_router(&db)
            .drain_all(&tokio_util::sync::CancellationToken::new())
            .await
            .unwrap();
        let statuses: Vec<(String, Option<String>)> = c
            .query("SELECT status, error FROM webhook_events ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            statuses,
            vec![("processed".to_owned(), None); contacts],
            "{contacts} events"
        );
        for (n, cid) in cids.iter().enumerate() {
            let row = c
                .query_one(
                    "SELECT c.last_name, l.local_id = c.id FROM sync_links l
                     JOIN clients c ON c.openphone_contact_id = l.remote_id
                     WHERE l.provider = 'openphone' AND l.remote_id = $1",
                    &[cid],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), format!("Again{n}"));
            assert!(row.get::<_, bool>(1), "the link names the new client");
        }
    }
}

/// One batch of contacts and messages (the set-based path): a message goes
/// ahead of the contacts' pending client writes only when they cannot
/// change which client it belongs to. Client A's contact event moves A's
/// phone to a new number, and a message from that number follows in the
/// same batch: it must find A. A message from client B's number (B's
/// contact event renames B, phone unchanged) finds B, and the renames are
/// all written.
#[tokio::test]
async fn a_message_after_a_phone_move_in_the_same_batch_finds_the_moved_client() {
    let db = TestDb::create().await;
    let c = db.client().await;
    c.batch_execute("SELECT set_config('syncbridge.origin', 'openphone', false)")
        .await
        .unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (id, cid, phone) in [(a, "CMIXA", "+14155550111"), (b, "CMIXB", "+14155550122")] {
        linked_client(&c, id, cid, phone).await;
    }
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let message = |key: &str, id: &str, from: &str| {
        json!({
            "id": key, "object": "event", "apiVersion": "v3", "createdAt": at,
            "type": "message.received",
            "data": {"object": {"object": "message", "id": id, "direction": "incoming",
                "from": from, "to": "+14155550199", "body": "hello", "status": "received",
                "createdAt": at}}
        })
    };
    let store_message = async |key: &str, id: &str, from: &str| {
        c.execute(
            "INSERT INTO webhook_events (provider, dedup_key, event_type, event_id, body)
             VALUES ('openphone', $1, 'message.received', $1, $2)",
            &[&key, &serde_json::to_vec(&message(key, id, from)).unwrap()],
        )
        .await
        .unwrap();
    };
    // In claim order: B renamed, a message from B's number, A moved to a
    // new number, a message from A's new number.
    store_contact_event(
        &c,
        "EVmix1",
        "CMIXB",
        &at,
        json!({"firstName": "Bea", "lastName": "A",
               "phoneNumbers": [{"name": "phone", "value": "+14155550122"}]}),
    )
    .await;
    store_message("EVmix2", "ACMIXB", "+14155550122").await;
    store_contact_event(
        &c,
        "EVmix3",
        "CMIXA",
        &at,
        json!({"firstName": "Ann", "lastName": "A",
               "phoneNumbers": [{"name": "phone", "value": "+14155550133"}]}),
    )
    .await;
    store_message("EVmix4", "ACMIXA", "+14155550133").await;

    let router = one_worker_router(&db);
    router
        .drain_all(&tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();

    let client_of = async |msg: &str| -> Option<Uuid> {
        c.query_one(
            "SELECT client_id FROM communications WHERE openphone_message_id = $1",
            &[&msg],
        )
        .await
        .unwrap()
        .get(0)
    };
    assert_eq!(client_of("ACMIXB").await, Some(b));
    assert_eq!(
        client_of("ACMIXA").await,
        Some(a),
        "the message from A's new number finds A"
    );
    let rows = c
        .query(
            "SELECT id, first_name, phone FROM clients WHERE id = ANY($1) ORDER BY phone",
            &[&vec![a, b]],
        )
        .await
        .unwrap();
    let got: Vec<(Uuid, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            (b, "Bea".to_owned(), "+14155550122".to_owned()),
            (a, "Ann".to_owned(), "+14155550133".to_owned())
        ]
    );
    let pending: i64 = c
        .query_one(
            "SELECT count(*) FROM webhook_events WHERE status NOT IN ('processed', 'ignored')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0);
}

/// An OpenPhone backlog with every case the set-based path decides in
/// memory — calls created by a facet event, lifecycle events out of order,
/// a message redelivered older, a message older than the stored row, a
/// message before and after the contact that creates its client, a message
/// after a phone move — is applied as one batch and, in another database,
/// one event a batch (the one-at-a-time path). Both leave the same rows,
/// the same audit trail and the same outcomes.
#[tokio::test]
async fn a_batch_of_calls_messages_and_contacts_applies_as_one_event_at_a_time_would() {
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    let t = |secs: i64| {
        (base + chrono::Duration::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let envelope = |key: &str, ty: &str, at: &str, object: Value| {
        json!({"id": key, "object": "event", "apiVersion": "v3", "createdAt": at,
               "type": ty, "data": {"object": object}})
    };
    let message = |key: &str, ty: &str, id: &str, from: &str, at: &str, status: &str| {
        let object = json!({"object": "message", "id": id, "direction": "incoming",
            "from": from, "to": "+14155550199", "body": format!("{key} says hi"),
            "status": status, "createdAt": t(0)});
        envelope(key, ty, at, object)
    };
    let call = |key: &str, ty: &str, id: &str, from: &str, at: &str, status: &str| {
        let media = if ty == "call.recording.completed" {
            json!([{"url": format!("https://example.invalid/rec/{id}.mp3"),
                    "type": "audio/mpeg", "duration": 60}])
        } else {
            json!([])
        };
        let object = json!({"object": "call", "id": id, "direction": "incoming",
            "from": from, "to": "+14155550199", "status": status, "createdAt": t(0),
            "answeredAt": if status == "ringing" { Value::Null } else { json!(t(5)) },
            "completedAt": if status == "ringing" { Value::Null } else { json!(t(65)) },
            "conversationId": "CNEQ1", "phoneNumberId": "PNq8Zt3kLm", "userId": "USa1B2c3D4",
            "media": media, "voicemail": null});
        envelope(key, ty, at, object)
    };
    let contact = |key: &str, id: &str, first: &str, phone: &str, at: &str| {
        let object = json!({"object": "contact", "id": id, "updatedAt": at,
            "defaultFields": {"firstName": first, "lastName": "A",
                "phoneNumbers": [{"name": "phone", "value": phone}]}});
        envelope(key, "contact.updated", at, object)
    };
    let summary = json!({"object": "callSummary", "callId": "ACEQ1",
        "summary": ["Asked about the 2BR."], "nextSteps": [], "status": "completed"});
    let (a_phone, b_phone, n_phone, a_new) = (
        "+14155550111",
        "+14155550122",
        "+14155550177",
        "+14155550133",
    );
    let events = [
        call("EQ01", "call.ringing", "ACEQ1", b_phone, &t(10), "ringing"),
        message(
            "EQ02",
            "message.received",
            "AMEQ1",
            n_phone,
            &t(10),
            "received",
        ),
        contact("EQ03", "CEQN", "Nia", n_phone, &t(11)),
        message(
            "EQ04",
            "message.received",
            "AMEQ2",
            n_phone,
            &t(12),
            "received",
        ),
        envelope("EQ05", "call.summary.completed", &t(13), summary),
        call(
            "EQ06",
            "call.completed",
            "ACEQ1",
            b_phone,
            &t(30),
            "completed",
        ),
        call("EQ07", "call.ringing", "ACEQ1", b_phone, &t(20), "ringing"),
        message(
            "EQ08",
            "message.delivered",
            "AMEQ1",
            n_phone,
            &t(30),
            "delivered",
        ),
        message(
            "EQ09",
            "message.received",
            "AMEQ1",
            n_phone,
            &t(10),
            "received",
        ),
        contact("EQ10", "CEQA", "Ann", a_new, &t(31)),
        message(
            "EQ11",
            "message.received",
            "AMEQ3",
            a_new,
            &t(32),
            "received",
        ),
        call(
            "EQ12",
            "call.recording.completed",
            "ACEQ2",
            a_new,
            &t(33),
            "completed",
        ),
        call(
            "EQ13",
            "call.completed",
            "ACEQ2",
            a_new,
            &t(34),
            "completed",
        ),
        contact("EQ14", "CEQB", "Bea", b_phone, &t(35)),
        message(
            "EQ15",
            "message.received",
            "AMEQ4",
            b_phone,
            &t(36),
            "received",
        ),
        message(
            "EQ16",
            "message.received",
            "AMEQ0",
            b_phone,
            &t(37),
            "received",
        ),
    ];

    let mut states = Vec::new();
    for batch in ["256", "1"] {
        let db = TestDb::create().await;
        let c = db.client().await;
        c.batch_execute("SELECT set_config('syncbridge.origin', 'openphone', false)")
            .await
            .unwrap();
        for (id, cid, phone) in [
            (Uuid::new_v4(), "CEQA", a_phone),
            (Uuid::new_v4(), "CEQB", b_phone),
        ] {
            linked_client(&c, id, cid, phone).await;
        }
        // A message stored with a newer event than the one redelivered.
        c.execute(
            "INSERT INTO communications (channel, source, openphone_message_id, body, status,
                                         openphone_event_timestamp)
             VALUES ('message', 'Quo', 'AMEQ0', 'kept', 'delivered', $1::text::timestamptz)",
            &[&t(3600)],
        )
        .await
        .unwrap();
        for e in &events {
            c.execute(
                "INSERT INTO webhook_events (provider, dedup_key, event_type, event_id, body)
                 VALUES ('openphone', $1, $2, $1, $3)",
                &[
                    &e["id"].as_str().unwrap(),
                    &e["type"].as_str().unwrap(),
                    &serde_json::to_vec(e).unwrap(),
                ],
            )
            .await
            .unwrap();
        }
        let stats = drain_with_batch(&db.url, batch).await;
        // The batched run took the set-based path through and through:
        // no batch fell back to one event at a time.
        assert_eq!(stats.replayed, 0, "batch {batch}: {stats:?}");
        let text = async |sql: &str| text_rows(&c, sql).await;
        let comms = text(
            "SELECT concat_ws('|', channel, coalesce(openphone_call_id, openphone_message_id),
                    direction, from_number, status, body, answered_at, completed_at,
                    recording_url, summary, transcript, openphone_event_timestamp,
                    (SELECT k.first_name || ' ' || k.phone FROM clients k WHERE k.id = client_id))
             FROM communications ORDER BY 1",
        )
        .await;
        let clients =
            text("SELECT concat_ws('|', first_name, phone, openphone_contact_id) FROM clients ORDER BY 1")
                .await;
        let outcomes =
            text("SELECT concat_ws('|', dedup_key, status, error) FROM webhook_events ORDER BY 1")
                .await;
        let audit = text(
            "SELECT concat_ws('|', w.dedup_key, a.entity_type, a.operation, a.decision,
                    a.new_data - 'id' - 'client_id' - 'created_at' - 'updated_at',
                    a.new_data -> 'client_id' <> 'null')
             FROM sync_audit_log a JOIN webhook_events w ON w.id = a.event_id
             WHERE a.entity_type = 'communications' ORDER BY 1",
        )
        .await;
        let client_audit = text(
            "SELECT concat_ws('|', w.dedup_key, a.operation, a.decision, a.changed_fields::text)
             FROM sync_audit_log a JOIN webhook_events w ON w.id = a.event_id
             WHERE a.entity_type = 'clients' ORDER BY 1",
        )
        .await;
        states.push((comms, clients, outcomes, audit, client_audit));
    }
    let (batched, single) = (&states[0], &states[1]);
    assert_eq!(batched.0, single.0, "communications");
    assert_eq!(batched.1, single.1, "clients");
    assert_eq!(batched.2, single.2, "outcomes");
    assert_eq!(batched.3, single.3, "communications' audit");
    assert_eq!(batched.4, single.4, "clients' audit");

    // And what both leave is what the events say.
    let comm = |id: &str| {
        batched
            .0
            .iter()
            .find(|r| r.split('|').nth(1) == Some(id))
            .cloned()
            .unwrap_or_default()
    };
    // The message before its contact was stored without a client; its
    // later delivery found the client the contact created.
    let first = batched.3.iter().find(|r| r.starts_with("EQ02|")).cloned();
    assert!(
        first.as_deref().is_some_and(|r| r.ends_with("|f")),
        "{first:?}"
    );
    assert!(comm("AMEQ1").contains("|delivered|"), "{}", comm("AMEQ1"));
    assert!(
        comm("AMEQ1").ends_with("Nia +14155550177"),
        "{}",
        comm("AMEQ1")
    );
    assert!(
        comm("AMEQ2").ends_with("Nia +14155550177"),
        "{}",
        comm("AMEQ2")
    );
    assert!(
        comm("AMEQ3").ends_with("Ann +14155550133"),
        "{}",
        comm("AMEQ3")
    );
    assert!(
        comm("AMEQ4").ends_with("Bea +14155550122"),
        "{}",
        comm("AMEQ4")
    );
    assert!(comm("AMEQ0").contains("|kept|"), "{}", comm("AMEQ0"));
    let k1 = comm("ACEQ1");
    assert!(
        k1.contains("|completed|") && k1.contains("Asked about the 2BR."),
        "{k1}"
    );
    let k2 = comm("ACEQ2");
    assert!(
        k2.contains("|completed|")
            && k2.contains("rec/ACEQ2.mp3")
            && k2.ends_with("Ann +14155550133"),
        "{k2}"
    );
    let stale: Vec<&String> = batched
        .2
        .iter()
        .filter(|r| r.contains("skipped_stale"))
        .collect();
    assert_eq!(stale.len(), 3, "EQ07, EQ09 and EQ16 are stale: {stale:?}");
}

/// A call or message links to the client whose primary phone is its
/// counterpart — the oldest, when several are — before any client that
/// has the number as an alternate, and to the oldest of those when no
/// primary phone matches; numbers match in any format. The same on the
/// set-based path (a batch) and one event at a time.
#[tokio::test]
async fn a_call_or_message_links_to_a_primary_phone_first_then_the_oldest_client() {
    for batch in ["256", "1"] {
        let db = TestDb::create().await;
        let c = db.client().await;
        let mut ids = std::collections::HashMap::new();
        // name, phone, alt 1, alt 2, age in days
        for (name, phone, alt1, alt2, days) in [
            ("Alt", None, Some("+14155550144"), None, 9),
            ("Second", Some("415-555-0144"), None, None, 5),
            ("Third", Some("+1 (415) 555-0144"), None, None, 1),
            ("OldAlt", None, None, Some("(415) 555-0155"), 8),
            ("NewAlt", None, Some("+14155550155"), None, 2),
        ] {
            let id: Uuid = c
                .query_one(
                    "INSERT INTO clients (first_name, last_name, phone, alt_phone_1, alt_phone_2,
                                          created_at)
                     VALUES ($1, 'X', $2, $3, $4, now() - make_interval(days => $5))
                     RETURNING id",
                    &[&name, &phone, &alt1, &alt2, &days],
                )
                .await
                .unwrap()
                .get(0);
            ids.insert(name, id);
        }
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let events = [
            (
                "PM1",
                "message.received",
                message_event("PM1", "AMPM1", "+14155550144", "hi", &at),
            ),
            (
                "PM2",
                "message.received",
                message_event("PM2", "AMPM2", "+14155550155", "hi", &at),
            ),
            (
                "PM3",
                "message.received",
                message_event("PM3", "AMPM3", "+14155550166", "hi", &at),
            ),
        ];
        for (key, ty, body) in &events {
            c.execute(
                "INSERT INTO webhook_events (provider, dedup_key, event_type, event_id, body)
                 VALUES ('openphone', $1, $2, $1, $3)",
                &[key, ty, body],
            )
            .await
            .unwrap();
        }
        let stats = drain_with_batch(&db.url, batch).await;
        assert_eq!(
            (stats.processed, stats.replayed),
            (3, 0),
            "batch {batch}: {stats:?}"
        );
        let client_of = async |msg: &str| -> Option<Uuid> {
            c.query_one(
                "SELECT client_id FROM communications WHERE openphone_message_id = $1",
                &[&msg],
            )
            .await
            .unwrap()
            .get(0)
        };
        let name = |id: Option<Uuid>| ids.iter().find(|(_, v)| Some(**v) == id).map(|(k, _)| *k);
        assert_eq!(
            name(client_of("AMPM1").await),
            Some("Second"),
            "batch {batch}"
        );
        assert_eq!(
            name(client_of("AMPM2").await),
            Some("OldAlt"),
            "batch {batch}"
        );
        assert_eq!(client_of("AMPM3").await, None, "batch {batch}");
    }
}

/// Another process writes a message the batch read as new: the batch's
/// set-based write finds the row otherwise than it decided (an update, not
/// an insert), the batch is applied again one event at a time, and the
/// message ends as one-at-a-time apply would leave it.
#[tokio::test]
async fn a_message_written_elsewhere_after_the_batch_read_it_is_applied_one_at_a_time() {
    let db = TestDb::create().await;
    let c = db.client().await;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (key, id) in [("RC1", "AMRC1"), ("RC2", "AMRC2")] {
        c.execute(
            "INSERT INTO webhook_events (provider, dedup_key, event_type, event_id, body)
             VALUES ('openphone', $1, 'message.received', $1, $2)",
            &[
                &key,
                &message_event(key, id, "+14155550177", "from the webhook", &at),
            ],
        )
        .await
        .unwrap();
    }
    // Another writer inserts AMRC1 (older) and holds its transaction open.
    let other = db.client().await;
    other
        .batch_execute(
            "BEGIN;
             INSERT INTO communications (channel, source, openphone_message_id, body,
                                         openphone_event_timestamp)
             VALUES ('message', 'Quo', 'AMRC1', 'from elsewhere', now() - interval '1 hour')",
        )
        .await
        .unwrap();
    let url = db.url.clone();
    let drain = tokio::spawn(async move { drain_with_batch(&url, "256").await });
    // The router read no AMRC1 and now waits on the other writer's row.
    lock_wait(&c, "the router waits on the other writer").await;
    other.batch_execute("COMMIT").await.unwrap();
    let stats = drain.await.unwrap();
    assert_eq!(stats.processed, 2, "{stats:?}");
    assert_eq!(
        stats.replayed, 2,
        "the batch fell back to one event at a time: {stats:?}"
    );
    let rows = c
        .query(
            "SELECT openphone_message_id, body FROM communications ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            ("AMRC1".to_owned(), "from the webhook".to_owned()),
            ("AMRC2".to_owned(), "from the webhook".to_owned())
        ]
    );
    let ops: Vec<String> = c
        .query(
            "SELECT a.operation FROM sync_audit_log a JOIN webhook_events w ON w.id = a.event_id
             WHERE a.entity_type = 'communications' ORDER BY w.dedup_key",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ops, ["UPDATE", "INSERT"], "one audit row each, as applied");
}
