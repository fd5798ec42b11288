//! The Keap seed schema's own functions, as its "Testing Approach" asks,
//! on a freshly migrated database: batch upserts of 1000+ contacts, conflict
//! detection, the update trigger, the queue view, the monthly partitions.

mod common;

use chrono::Datelike;
use common::*;
use serde_json::{json, Value};

fn contacts(n: usize, suffix: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"keap_id": format!("{}", 10_000 + i), "email": format!("c{i}@example.com"),
                   "first_name": format!("First{i}"), "last_name": format!("Last{i}{suffix}"),
                   "phone": "+14155550142", "tags": ["lead"], "custom_fields": {"182": "x"}})
        })
        .collect()
}

async fn batch(c: &tokio_postgres::Client, rows: &[Value]) -> (i32, i32, i32) {
    let r = c
        .query_one("SELECT * FROM batch_upsert_contacts($1::jsonb[])", &[&rows])
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test]
async fn batch_upsert_contacts_takes_a_thousand_and_reports_what_it_did() {
    let db = TestDb::create().await;
    let c = db.client().await;
    assert_eq!(batch(&c, &contacts(1000, "")).await, (1000, 0, 0));
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_contacts WHERE sync_status = 'synced' AND source_system = 'keap'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
    let links: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_links WHERE provider = 'keap' AND entity_type = 'sync_contacts'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(links, 1000, "every row linked to its Keap contact");
    let echoes: i64 = c
        .query_one("SELECT count(*) FROM sync_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(echoes, 0, "Keap's own rows are not pushed back to Keap");

    // Again with changes: updated, versions bumped.
    assert_eq!(batch(&c, &contacts(1000, "-v2")).await, (1000, 0, 0));
    let v: i32 = c
        .query_one(
            "SELECT min(version) FROM sync_contacts WHERE last_name LIKE '%-v2'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2);

    // A contact changed locally and not yet pushed conflicts; invalid rows
    // fail with an audit row each.
    c.execute(
        "UPDATE sync_contacts SET first_name = 'Local' WHERE keap_id = '10000'",
        &[],
    )
    .await
    .unwrap();
    let mut rows = contacts(2, "-v3");
    rows.push(json!({"email": "no-id@example.com"}));
    rows.push(json!({"keap_id": "10005", "email": "not an email"}));
    assert_eq!(batch(&c, &rows).await, (1, 2, 1));
    let (first, status): (String, String) = {
        let r = c
            .query_one(
                "SELECT first_name, sync_status FROM sync_contacts WHERE keap_id = '10000'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((first.as_str(), status.as_str()), ("Local", "conflict"));
    let open: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_conflicts WHERE status = 'open' AND entity_type = 'sync_contacts'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 1);
    let errors: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_audit_log WHERE error IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(errors, 2);

    // The seed's monitoring views read the engine's tables.
    let status: (String, String) = {
        let r = c
            .query_one(
                "SELECT last_sync_status::text, keap_id::text FROM sync_status
                 WHERE entity_type = 'sync_contacts' AND keap_id = '10000'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status.0, "conflict");
    let synced: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_status WHERE entity_type = 'sync_contacts'
               AND last_sync_status = 'synced'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(synced, 999);
    let health = c.query("SELECT * FROM sync_health", &[]).await.unwrap();
    assert!(!health.is_empty());
}

#[tokio::test]
async fn detect_sync_conflict_returns_an_id_for_differing_data_only() {
    let db = TestDb::create().await;
    let c = db.client().await;
    let id = uuid::Uuid::new_v4();
    let detect = |keap: Value, local: Value| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT detect_sync_conflict('sync_contacts', $1, $2, $3)",
                &[&id, &keap, &local],
            )
            .await
            .unwrap()
            .get::<_, Option<uuid::Uuid>>(0)
        }
    };
    let first = detect(
        json!({"email": "a@x", "first_name": "A"}),
        json!({"email": "b@x", "first_name": "A"}),
    )
    .await
    .expect("differing data is a conflict");
    let fields: Vec<String> = c
        .query_one(
            "SELECT conflict_fields FROM sync_conflicts WHERE id = $1",
            &[&first],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fields, ["email"]);
    assert_eq!(
        detect(json!({"email": "a@x"}), json!({"email": "a@x"})).await,
        None
    );
    let second = detect(json!({"email": "c@x"}), json!({"email": "b@x"}))
        .await
        .unwrap();
    let status: String = c
        .query_one("SELECT status FROM sync_conflicts WHERE id = $1", &[&first])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "superseded", "one open conflict per record");
    assert_ne!(first, second);
}

#[tokio::test]
async fn the_update_trigger_versions_and_audits_with_the_real_origin() {
    let db = TestDb::create().await;
    let c = db.client().await;
    assert_eq!(batch(&c, &contacts(1, "")).await, (1, 0, 0));
    c.execute("UPDATE sync_contacts SET first_name = 'Dana'", &[])
        .await
        .unwrap();
    let (version, status): (i32, String) = {
        let r = c
            .query_one("SELECT version, sync_status FROM sync_contacts", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((version, status.as_str()), (2, "pending"));
    let sources: Vec<String> = c
        .query(
            "SELECT sync_source FROM sync_audit_log WHERE entity_type = 'sync_contacts'
               AND operation = 'UPDATE' ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sources, ["supabase"], "a local change, audited as local");
    // One outbox row for the push, not a second one from the seed's queue
    // insert; and the seed's sync_queue view shows it.
    let queued: Vec<(String, String)> = c
        .query("SELECT operation, status FROM sync_queue", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(queued, [("update".to_owned(), "pending".to_owned())]);
}

#[tokio::test]
async fn the_audit_log_always_has_this_and_next_months_partition() {
    let db = TestDb::create().await;
    let c = db.client().await;
    c.batch_execute("SELECT create_monthly_partition(); SELECT create_monthly_partition();")
        .await
        .unwrap();
    let parts: Vec<String> = c
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'sync_audit_log'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let this = chrono::Utc::now()
        .format("sync_audit_log_%Y_%m")
        .to_string();
    let next = (chrono::Utc::now().date_naive().with_day(1).unwrap() + chrono::Months::new(1))
        .format("sync_audit_log_%Y_%m")
        .to_string();
    assert!(parts.contains(&this) && parts.contains(&next), "{parts:?}");
}
