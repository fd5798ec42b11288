//! `syncbridge check [--fix] [--json]` on the real binary, on a database
//! seeded with one of each problem the engine's checks and Keap's count
//! check look for (D1's own checks: tests/d1_replica.rs).

mod common;

use common::fake_keap::{FakeKeap, API_KEY};
use common::*;
use serde_json::{json, Value};

/// Runs `syncbridge check` with `args` against `db`, Keap at `keap`.
async fn check(db: &TestDb, keap: &FakeKeap, args: &[&str]) -> (i32, Value) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_syncbridge"));
    cmd.arg("check")
        .args(args)
        .arg("--json")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("KEAP_API_KEY", API_KEY)
        .env("KEAP_API_URL", &keap.url);
    // On the blocking pool: the fake answers on this test's runtime.
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn finding<'a>(r: &'a Value, check: &str) -> &'a Value {
    r["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["check"] == check))
        .unwrap_or_else(|| panic!("no {check} finding: {r:#}"))
}

/// What `integrity::run` needs, for the test settings on `db`.
fn runner(
    db: &TestDb,
) -> (
    syncbridge::db::Pool,
    syncbridge::providers::Registry,
    syncbridge::config::Config,
) {
    let config = syncbridge::config::Config::from_settings(&test_settings(&db.url)).unwrap();
    let pool = syncbridge::db::pool(&db.url, 2).unwrap();
    let registry = syncbridge::providers::Registry::from_config(&config);
    (pool, registry, config)
}

fn checks(r: &Value) -> Vec<String> {
    let mut c: Vec<String> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap().to_owned())
        .collect();
    c.sort();
    c
}

#[tokio::test]
async fn check_reports_one_of_each_problem_and_fix_repairs_the_safe_ones() {
    let keap = FakeKeap::start().await;
    let ids: Vec<i64> = (0..8)
        .map(|i| {
            keap.put_contact(json!({"given_name": format!("K{i}"),
                "email_addresses": [{"email": format!("k{i}@keap.example"), "field": "EMAIL1"}]}))
                ["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let db = TestDb::create().await;
    let c = db.client().await;
    let ghost = uuid::Uuid::new_v4();
    c.batch_execute(&format!(
        "-- two linked contacts; the second's keap_id disagrees with its link
         INSERT INTO sync_contacts (id, email, keap_id) VALUES
             ('00000000-0000-4000-8000-000000000001', 'a@x.example', '{a}'),
             ('00000000-0000-4000-8000-000000000002', 'b@x.example', '{b}');
         INSERT INTO sync_links (entity_type, local_id, provider, remote_id) VALUES
             ('sync_contacts', '00000000-0000-4000-8000-000000000001', 'keap', '{a}'),
             ('sync_contacts', '00000000-0000-4000-8000-000000000002', 'keap', 'k-other'),
             -- a link to a contact that is gone
             ('sync_contacts', '{ghost}', 'keap', 'k-ghost');
         -- two clients holding one OpenPhone contact id
         INSERT INTO clients (first_name, openphone_contact_id) VALUES ('Dup', 'CT-dup'), ('Dup', 'CT-dup');
         DELETE FROM sync_outbox;
         -- an open conflict about the contact that is gone, holding its change
         INSERT INTO sync_conflicts (entity_type, entity_id, keap_data, supabase_data, provider)
             VALUES ('sync_contacts', '{ghost}', '{{}}', '{{}}', 'keap');
         INSERT INTO sync_outbox (provider, table_name, record_id, operation, next_attempt_at)
             VALUES ('keap', 'sync_contacts', '{ghost}', 'UPDATE', 'infinity');
         -- a change held for a conflict that does not exist
         INSERT INTO sync_outbox (provider, table_name, record_id, operation, next_attempt_at)
             VALUES ('keap', 'sync_contacts', '00000000-0000-4000-8000-000000000001', 'UPDATE', 'infinity');
         -- one stuck item in each queue
         INSERT INTO webhook_events (provider, dedup_key, body, next_attempt_at)
             VALUES ('openphone', 'stuck-1', '\\x7b7d', now() - interval '2 hours');
         INSERT INTO sync_outbox (provider, table_name, record_id, operation, next_attempt_at)
             VALUES ('openphone', 'clients', '00000000-0000-4000-8000-00000000000c', 'UPDATE',
                     now() - interval '3 hours');
         INSERT INTO sync_fetch_queue (provider, object_type, object_id, due_at)
             VALUES ('keap', 'contact', '404404', now() - interval '1 hour');
         -- next month's audit partition is missing and a row fell into the
         -- default one: every command makes the partitions first (this one
         -- used to fail there: Postgres refuses a partition whose rows sit
         -- in the default one)
         DO $$ BEGIN
             EXECUTE format('DROP TABLE %I', 'sync_audit_log_'
                 || to_char(date_trunc('month', now()) + interval '1 month', 'YYYY_MM'));
         END $$;
         INSERT INTO sync_audit_log (entity_type, operation, sync_source, created_at)
             VALUES ('sync_contacts', 'UPDATE', 'local', date_trunc('month', now()) + interval '1 month 1 day');",
        a = ids[0],
        b = ids[1],
    ))
    .await
    .unwrap();

    let (code, r) = check(&db, &keap, &[]).await;
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(
        checks(&r),
        [
            "count_mismatch",
            "dangling_link",
            "duplicate_remote_id",
            "held_without_conflict",
            "link_mismatch",
            "orphaned_conflict",
            "stuck_fetch",
            "stuck_inbox",
            "stuck_outbox",
        ],
        "{r:#}"
    );
    let dangling = finding(&r, "dangling_link");
    assert_eq!(dangling["count"], 1);
    assert_eq!(dangling["examples"], json!(["keap:k-ghost"]));
    assert_eq!(dangling["table"], "sync_contacts");
    assert_eq!(finding(&r, "orphaned_conflict")["count"], 1);
    assert_eq!(
        finding(&r, "duplicate_remote_id")["examples"],
        json!(["CT-dup"])
    );
    assert_eq!(finding(&r, "duplicate_remote_id")["provider"], "openphone");
    assert_eq!(
        finding(&r, "link_mismatch")["examples"],
        json!(["00000000-0000-4000-8000-000000000002"])
    );
    assert_eq!(
        finding(&r, "held_without_conflict")["examples"],
        json!(["sync_contacts:00000000-0000-4000-8000-000000000001"])
    );
    let inbox = finding(&r, "stuck_inbox");
    assert_eq!(inbox["provider"], "openphone");
    assert!(
        inbox["detail"]
            .as_str()
            .unwrap()
            .contains("openphone is not configured"),
        "{inbox}"
    );
    assert_eq!(finding(&r, "stuck_outbox")["count"], 1);
    assert_eq!(
        finding(&r, "stuck_fetch")["examples"],
        json!(["contact:404404"])
    );
    let moved: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_audit_log WHERE created_at >= date_trunc('month', now()) + interval '1 month'
               AND NOT EXISTS (SELECT 1 FROM sync_audit_log_default)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        moved, 1,
        "the partition was made and the stray row moved in"
    );
    let count = finding(&r, "count_mismatch");
    assert_eq!(count["provider"], "keap");
    // 8 in Keap, 2 linked here; 2 changes and 1 fetch on their way.
    assert_eq!(count["count"], 6, "{count}");
    // A check alone changes nothing.
    for f in r["findings"].as_array().unwrap() {
        assert!(
            f["fix"] == json!({"kind": "report"})
                || f["fix"] == json!({"kind": "repair", "fixed": 0}),
            "{f}"
        );
    }
    let links: i64 = c
        .query_one("SELECT count(*) FROM sync_links", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(links, 3);

    // --fix repairs syncbridge's own bookkeeping and reports the rest.
    let (code, r) = check(&db, &keap, &["--fix"]).await;
    assert_eq!(
        code, 1,
        "duplicates, mismatches and stuck items remain: {r:#}"
    );
    for (check, fixed) in [
        ("dangling_link", 1),
        ("orphaned_conflict", 1),
        ("held_without_conflict", 1),
    ] {
        assert_eq!(
            finding(&r, check)["fix"],
            json!({"kind": "repair", "fixed": fixed}),
            "{check}: {r:#}"
        );
    }
    for check in [
        "duplicate_remote_id",
        "link_mismatch",
        "stuck_inbox",
        "count_mismatch",
    ] {
        assert_eq!(
            finding(&r, check)["fix"],
            json!({"kind": "report"}),
            "{check}"
        );
    }
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM sync_links WHERE remote_id = 'k-ghost'),
                    (SELECT status FROM sync_conflicts),
                    (SELECT count(*) FROM sync_outbox WHERE next_attempt_at = 'infinity'),
                    (SELECT array_agg(decision ORDER BY decision) FROM sync_audit_log WHERE operation = 'INTEGRITY_FIX')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "the dangling link is gone");
    assert_eq!(row.get::<_, String>(1), "superseded");
    assert_eq!(row.get::<_, i64>(2), 0, "no change is held any more");
    assert_eq!(
        row.get::<_, Vec<String>>(3),
        [
            "dangling_link_removed",
            "held_change_released",
            "orphaned_conflict_superseded",
        ],
        "every repair is audited"
    );

    // An operator settles the rest; then the check is clean and exits 0.
    c.batch_execute(
        "UPDATE clients SET openphone_contact_id = NULL
          WHERE id = (SELECT min(id::text)::uuid FROM clients);
         UPDATE sync_links SET remote_id = (SELECT keap_id FROM sync_contacts
                                            WHERE id = '00000000-0000-4000-8000-000000000002')
          WHERE remote_id = 'k-other';
         DELETE FROM webhook_events; DELETE FROM sync_outbox; DELETE FROM sync_fetch_queue;",
    )
    .await
    .unwrap();
    for id in &ids[2..] {
        keap.delete_contact(*id);
    }
    let (code, r) = check(&db, &keap, &[]).await;
    assert_eq!(r["findings"], json!([]), "{r:#}");
    assert_eq!(code, 0);
}

/// The partition checks, on a database whose partitions go missing while
/// the service runs (every command makes them at start, so `check` on the
/// command line meets them already repaired).
#[tokio::test]
async fn a_missing_audit_partition_is_found_and_fixed_with_its_stray_rows() {
    let db = TestDb::create().await;
    let c = db.client().await;
    let (pool, registry, config) = runner(&db);
    c.batch_execute(
        "DO $$ BEGIN
             EXECUTE format('DROP TABLE %I', 'sync_audit_log_'
                 || to_char(date_trunc('month', now()) + interval '1 month', 'YYYY_MM'));
         END $$;
         INSERT INTO sync_audit_log (entity_type, operation, sync_source, created_at)
         SELECT 'sync_contacts', 'UPDATE', 'local', date_trunc('month', now()) + interval '1 month 1 day'
         FROM generate_series(1, 3);",
    )
    .await
    .unwrap();
    let found = syncbridge::ops::integrity::run(&pool, &registry, &config, false)
        .await
        .unwrap();
    let report = serde_json::to_value(&found).unwrap();
    assert_eq!(
        checks(&report),
        ["audit_in_default", "missing_audit_partition"]
    );
    let next: String = c
        .query_one(
            "SELECT to_char(date_trunc('month', now()) + interval '1 month', 'YYYY-MM')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        finding(&report, "missing_audit_partition")["examples"],
        json!([next])
    );
    assert_eq!(finding(&report, "audit_in_default")["count"], 3);
    assert_eq!(found.remaining(), 2);

    let fixed = syncbridge::ops::integrity::run(&pool, &registry, &config, true)
        .await
        .unwrap();
    assert_eq!(fixed.remaining(), 0, "{:#?}", fixed.findings);
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM sync_audit_log_default),
                    (SELECT count(*) FROM sync_audit_log
                     WHERE created_at >= date_trunc('month', now()) + interval '1 month'),
                    (SELECT count(*) FROM sync_audit_log WHERE decision = 'audit_partition_created')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    assert_eq!(row.get::<_, i64>(1), 3, "the rows moved, none lost");
    assert_eq!(row.get::<_, i64>(2), 1, "audited");
    let again = syncbridge::ops::integrity::run(&pool, &registry, &config, false)
        .await
        .unwrap();
    assert!(again.findings.is_empty(), "{:#?}", again.findings);
}

/// OpenPhone's own check: a call stored before its client existed is found
/// and linked by `--fix`, a stranger's call is left alone.
#[tokio::test]
async fn a_call_stored_before_its_client_is_linked_by_fix() {
    let db = TestDb::create().await;
    let c = db.client().await;
    let (pool, registry, config) = runner(&db);
    c.batch_execute(
        "INSERT INTO communications (id, channel, direction, from_number, to_number, openphone_call_id)
         VALUES ('00000000-0000-4000-8000-0000000000c1', 'call', 'incoming', '+14155550142', '+14155550199', 'AC1'),
                ('00000000-0000-4000-8000-0000000000c2', 'call', 'outgoing', '+14155550199', '+13105550123', 'AC2');
         INSERT INTO clients (id, first_name, phone)
         VALUES ('00000000-0000-4000-8000-00000000da7a', 'Dana', '(415) 555-0142');",
    )
    .await
    .unwrap();
    let found = syncbridge::ops::integrity::run(&pool, &registry, &config, false)
        .await
        .unwrap();
    let r = serde_json::to_value(&found).unwrap();
    assert_eq!(checks(&r), ["unlinked_communication"], "{r:#}");
    let f = finding(&r, "unlinked_communication");
    assert_eq!(f["provider"], "openphone");
    assert_eq!(
        f["examples"],
        json!(["00000000-0000-4000-8000-0000000000c1"])
    );
    let fixed = syncbridge::ops::integrity::run(&pool, &registry, &config, true)
        .await
        .unwrap();
    assert_eq!(fixed.remaining(), 0, "{:#?}", fixed.findings);
    let linked: Vec<Option<uuid::Uuid>> = c
        .query("SELECT client_id FROM communications ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        linked,
        [
            Some("00000000-0000-4000-8000-00000000da7a".parse().unwrap()),
            None
        ]
    );
    let audited: i64 = c
        .query_one(
            "SELECT count(*) FROM sync_audit_log WHERE decision = 'communication_linked'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
}

/// ResMan's own check: a conversation whose `resman_lead_id` is not the lead
/// it is linked to is reported, and only that one.
#[tokio::test]
async fn a_conversation_holding_another_lead_id_is_reported() {
    let db = TestDb::create().await;
    let c = db.client().await;
    let (pool, registry, config) = runner(&db);
    c.batch_execute(
        "INSERT INTO conversation (id, resman_lead_id) VALUES
             ('00000000-0000-4000-8000-0000000000a1', 'L-1'),
             ('00000000-0000-4000-8000-0000000000a2', 'L-typo');
         INSERT INTO sync_links (entity_type, local_id, provider, remote_id) VALUES
             ('conversation', '00000000-0000-4000-8000-0000000000a1', 'resman', 'L-1'),
             ('conversation', '00000000-0000-4000-8000-0000000000a2', 'resman', 'L-2');",
    )
    .await
    .unwrap();
    let found = syncbridge::ops::integrity::run(&pool, &registry, &config, true)
        .await
        .unwrap();
    let r = serde_json::to_value(&found).unwrap();
    assert_eq!(checks(&r), ["lead_mismatch"], "{r:#}");
    let f = finding(&r, "lead_mismatch");
    assert_eq!(f["provider"], "resman");
    assert_eq!(
        f["examples"],
        json!(["00000000-0000-4000-8000-0000000000a2"])
    );
    assert_eq!(
        f["fix"],
        json!({"kind": "report"}),
        "never repaired by itself"
    );
    assert_eq!(found.remaining(), 1);
}
