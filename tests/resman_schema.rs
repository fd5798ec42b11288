//! The ResMan seed schema (issue 14, its first part) on a freshly migrated
//! database: the seed's triggers feeding the outbox, the control tables as
//! views over the engine's, the archiving functions moving only what they
//! should, and each monitoring view's figures on seeded data.

mod common;

use common::*;

const PROPERTY_A: &str = "00000000-0000-4000-8000-00000000000a";
const PROPERTY_B: &str = "00000000-0000-4000-8000-00000000000b";

fn conv(i: u32) -> String {
    format!("00000000-0000-4000-8000-0000000c{i:04}")
}

fn user(i: u32) -> String {
    format!("00000000-0000-4000-8000-0000000a{i:04}")
}

async fn scalar(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// Two properties, conversations 1–3 at A and 4 at B, each with a user.
async fn seed(c: &tokio_postgres::Client) {
    let mut sql = format!(
        "INSERT INTO property (id, name) VALUES ('{PROPERTY_A}', 'Elm Court'), ('{PROPERTY_B}', 'Oak Park');
         INSERT INTO resman_integration (property_id, resman_property_id, api_credentials)
         VALUES ('{PROPERTY_A}', '07413576-f764-44c6-be35-df4139deec01', '{{\"account_id\": \"400\"}}');"
    );
    for i in 1..=4 {
        let property = if i < 4 { PROPERTY_A } else { PROPERTY_B };
        sql.push_str(&format!(
            "INSERT INTO \"user\" (id, first_name, last_name, email) VALUES ('{}', 'U{i}', 'L', 'u{i}@x.example');
             INSERT INTO conversation (id, property_id, user_id, status) VALUES ('{}', '{property}', '{}', 'open');",
            user(i),
            conv(i),
            user(i)
        ));
    }
    c.batch_execute(&sql).await.unwrap();
}

#[tokio::test]
async fn the_seed_triggers_reset_the_status_and_queue_one_push() {
    let db = TestDb::create().await;
    let c = db.client().await;
    seed(&c).await;
    // Inserts are captured for ResMan (the push decides what is a lead).
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM sync_outbox WHERE provider = 'resman' AND table_name = 'conversation'").await,
        4
    );
    c.batch_execute(&format!(
        "UPDATE sync_outbox SET status = 'done';
         UPDATE conversation SET resman_sync_status = 'synced', resman_lead_id = 'P-1' WHERE id = '{}';",
        conv(1)
    ))
    .await
    .unwrap();
    // Bookkeeping is not a change.
    assert_eq!(
        scalar(
            &c,
            "SELECT count(*) FROM sync_outbox WHERE status = 'pending'"
        )
        .await,
        0
    );
    // A first summary (NULL before: the seed's != never saw it) resets the
    // status, moves the version on, and queues exactly one push.
    c.batch_execute(&format!(
        "UPDATE conversation SET ai_intent_summary = 'Wants a 2BR in May' WHERE id = '{}'",
        conv(1)
    ))
    .await
    .unwrap();
    let r = c
        .query_one(
            &format!(
                "SELECT resman_sync_status, resman_sync_version FROM conversation WHERE id = '{}'",
                conv(1)
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "not_synced");
    assert_eq!(r.get::<_, i32>(1), 1);
    assert_eq!(
        scalar(
            &c,
            "SELECT count(*) FROM lead_sync_queue WHERE status = 'pending'"
        )
        .await,
        1
    );
    // The seed's own INSERT INTO lead_sync_queue joins the pending push.
    let row = c
        .query_one(
            "INSERT INTO lead_sync_queue (conversation_id, sync_operation, sync_data, priority)
             VALUES ($1::text::uuid, 'push', '{}', 3) RETURNING id, status",
            &[&conv(1)],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(1), "pending");
    assert_eq!(
        scalar(
            &c,
            "SELECT count(*) FROM sync_outbox WHERE status = 'pending'"
        )
        .await,
        1
    );
    // A user's contact change resets a synced user.
    c.batch_execute(&format!(
        "UPDATE \"user\" SET resman_sync_status = 'synced', resman_contact_id = 'PER-1' WHERE id = '{0}';
         UPDATE \"user\" SET phone = '+14155550142' WHERE id = '{0}';",
        user(1)
    ))
    .await
    .unwrap();
    let (status, version): (String, i32) = {
        let r = c
            .query_one(
                &format!(
                    "SELECT resman_sync_status, resman_sync_version FROM \"user\" WHERE id = '{}'",
                    user(1)
                ),
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), version), ("not_synced", 1));
    // "synced" needs the ResMan id; a secret never goes in api_credentials.
    let e = c
        .batch_execute(&format!(
            "UPDATE conversation SET resman_sync_status = 'synced' WHERE id = '{}'",
            conv(2)
        ))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("chk_resman_sync_mapping")
            || format!("{e:?}").contains("chk_resman_sync_mapping"),
        "{e:?}"
    );
    let e = c
        .batch_execute(&format!(
            "UPDATE resman_integration SET api_credentials = '{{\"account_id\": \"400\", \"api_key\": \"k\"}}'
             WHERE property_id = '{PROPERTY_A}'"
        ))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("check"), "{e:?}");
}

#[tokio::test]
async fn the_archiving_functions_move_only_what_they_should() {
    let db = TestDb::create().await;
    let c = db.client().await;
    seed(&c).await;
    c.batch_execute(&format!(
        "-- Audit rows: two old ResMan ones, one recent, one old of another provider.
         INSERT INTO sync_audit_log (entity_type, entity_id, operation, sync_source, sync_destination, created_at, detail)
         VALUES ('conversation', '{c1}', 'PUSH', 'local', 'resman', now() - interval '100 days', '{{\"processing_time_ms\": 40}}'),
                ('conversation', '{c1}', 'UPDATE', 'resman', NULL, now() - interval '91 days', '{{}}'),
                ('conversation', '{c1}', 'PUSH', 'local', 'resman', now() - interval '1 day', '{{}}'),
                ('clients', NULL, 'PUSH', 'local', 'openphone', now() - interval '100 days', '{{}}');
         -- Conflicts: resolved long ago (moves), resolved lately, open and old, another provider's.
         INSERT INTO sync_conflicts (entity_type, entity_id, keap_data, supabase_data, conflict_fields,
                                     provider, status, resolved_at, detected_at, resolution_strategy)
         VALUES ('conversation', '{c1}', '{{}}', '{{}}', ARRAY['status'], 'resman', 'resolved', now() - interval '40 days', now() - interval '41 days', 'prefer_remote'),
                ('conversation', '{c2}', '{{}}', '{{}}', ARRAY['status'], 'resman', 'resolved', now() - interval '2 days', now() - interval '3 days', 'prefer_local'),
                ('conversation', '{c3}', '{{}}', '{{}}', ARRAY['email'], 'resman', 'open', NULL, now() - interval '60 days', NULL),
                ('sync_contacts', '{c3}', '{{}}', '{{}}', ARRAY['email'], 'keap', 'resolved', now() - interval '60 days', now() - interval '61 days', 'prefer_local');
         -- Outbox: the seeded inserts are pending; age two done ones and a failed one.
         UPDATE sync_outbox SET status = 'done', created_at = now() - interval '8 days'
         WHERE record_id IN ('{c1}', '{c2}') AND table_name = 'conversation';
         UPDATE sync_outbox SET status = 'failed', created_at = now() - interval '10 days'
         WHERE record_id = '{c3}' AND table_name = 'conversation';
         UPDATE sync_outbox SET created_at = now() - interval '30 days'
         WHERE record_id = '{c4}' AND table_name = 'conversation';",
        c1 = conv(1),
        c2 = conv(2),
        c3 = conv(3),
        c4 = conv(4)
    ))
    .await
    .unwrap();
    c.batch_execute(
        "SELECT archive_old_sync_logs(); SELECT archive_resolved_conflicts(); SELECT cleanup_old_queue_items();",
    )
    .await
    .unwrap();
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM lead_sync_log_archive").await,
        2
    );
    assert_eq!(scalar(&c, "SELECT count(*) FROM lead_sync_log").await, 1);
    assert_eq!(
        scalar(
            &c,
            "SELECT count(*) FROM sync_audit_log WHERE sync_destination = 'openphone'"
        )
        .await,
        1,
        "another provider's audit rows stay"
    );
    assert_eq!(
        scalar(&c, "SELECT processing_time_ms::bigint FROM lead_sync_log_archive WHERE processing_time_ms IS NOT NULL").await,
        40
    );
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM lead_sync_conflicts_archive").await,
        1
    );
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM sync_conflicts").await,
        3,
        "recent, open and other providers' conflicts stay"
    );
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM lead_sync_queue_archive").await,
        3
    );
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM sync_outbox WHERE provider = 'resman' AND table_name = 'conversation'").await,
        1,
        "the old pending push stays"
    );
    // Running them again moves nothing more.
    c.batch_execute(
        "SELECT archive_old_sync_logs(); SELECT archive_resolved_conflicts(); SELECT cleanup_old_queue_items();",
    )
    .await
    .unwrap();
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM lead_sync_log_archive").await,
        2
    );
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM lead_sync_queue_archive").await,
        3
    );
}

#[tokio::test]
async fn the_monitoring_views_count_right() {
    let db = TestDb::create().await;
    let c = db.client().await;
    seed(&c).await;
    c.batch_execute(&format!(
        "-- Pushes today at property A: 3 successes (10, 20, 30 ms) and a failure; one at B.
         INSERT INTO sync_audit_log (entity_type, entity_id, operation, sync_source, sync_destination, decision, error, detail)
         VALUES ('conversation', '{c1}', 'PUSH', 'local', 'resman', 'pushed', NULL, '{{\"processing_time_ms\": 10, \"sync_type\": \"create\"}}'),
                ('conversation', '{c2}', 'PUSH', 'local', 'resman', 'pushed', NULL, '{{\"processing_time_ms\": 20, \"sync_type\": \"create\"}}'),
                ('conversation', '{c3}', 'PUSH', 'local', 'resman', 'pushed', NULL, '{{\"processing_time_ms\": 30, \"sync_type\": \"create\"}}'),
                ('conversation', '{c3}', 'PUSH', 'local', 'resman', 'failed', 'timeout', '{{\"processing_time_ms\": 10000, \"sync_type\": \"create\"}}'),
                ('conversation', '{c4}', 'PUSH', 'local', 'resman', 'pushed', NULL, '{{\"processing_time_ms\": 5, \"sync_type\": \"create\"}}');
         -- Three pending conflicts at A (status: high; email: medium; a note: low), one resolved.
         INSERT INTO sync_conflicts (entity_type, entity_id, keap_data, supabase_data, conflict_fields, provider, status,
                                     resolved_at, resolution_strategy, remote_id)
         VALUES ('conversation', '{c1}', '{{\"status\": \"Lost\"}}', '{{\"status\": \"open\"}}', ARRAY['status'], 'resman', 'open', NULL, NULL, 'P-1'),
                ('user', '{u2}', '{{\"email\": \"a@x\"}}', '{{\"email\": \"b@x\"}}', ARRAY['email', 'first_name'], 'resman', 'open', NULL, NULL, 'P-2'),
                ('conversation', '{c3}', '{{}}', '{{}}', ARRAY['ai_intent_summary'], 'resman', 'open', NULL, NULL, 'P-3'),
                ('conversation', '{c3}', '{{}}', '{{}}', ARRAY['status'], 'resman', 'resolved', now(), 'prefer_remote', 'P-3');",
        c1 = conv(1),
        c2 = conv(2),
        c3 = conv(3),
        c4 = conv(4),
        u2 = user(2)
    ))
    .await
    .unwrap();
    // Success rates per property.
    let r = c
        .query_one(
            &format!("SELECT total_operations, successful_operations, success_rate::float8, avg_processing_time::float8
                      FROM sync_success_rates WHERE property_id = '{PROPERTY_A}'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 4);
    assert_eq!(r.get::<_, i64>(1), 3);
    assert_eq!(r.get::<_, f64>(2), 75.0);
    assert_eq!(r.get::<_, f64>(3), 2515.0);
    // Conflicts with the seed's types and severities.
    let rows = c
        .query(
            "SELECT conflict_type::text, conflict_severity::text, resolution_status::text, coalesce(resolution_strategy::text, '-'),
                    conversation_id::text
             FROM lead_sync_conflicts ORDER BY resman_lead_id, resolution_status DESC",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let want = |t: &str, s: &str, r: &str, st: &str, conv: String| {
        (
            t.to_owned(),
            s.to_owned(),
            r.to_owned(),
            st.to_owned(),
            conv,
        )
    };
    assert_eq!(
        got,
        vec![
            want("status_conflict", "high", "pending", "-", conv(1)),
            want("data_conflict", "medium", "pending", "-", conv(2)),
            want("field_mismatch", "low", "pending", "-", conv(3)),
            want(
                "status_conflict",
                "high",
                "auto_resolved",
                "resman_wins",
                conv(3)
            ),
        ]
    );
    // The severity table is configurable.
    c.batch_execute("UPDATE lead_sync_severity SET severity = 'critical' WHERE field = 'email'")
        .await
        .unwrap();
    assert_eq!(
        scalar(
            &c,
            "SELECT count(*) FROM lead_sync_conflicts WHERE conflict_severity = 'critical'"
        )
        .await,
        1
    );
    let stats = scalar(
        &c,
        "SELECT total_conflicts FROM conflict_resolution_stats
         WHERE conflict_type = 'status_conflict' AND resolution_status = 'pending'",
    )
    .await;
    assert_eq!(stats, 1);
    // Per property: 3 pending pushes and 3 pending conflicts at A — counted,
    // not multiplied (the seed's joins gave 9 of each).
    let r = c
        .query_one(
            &format!(
                "SELECT pending_queue_items, pending_conflicts, sync_status::text
                      FROM property_sync_status WHERE property_id = '{PROPERTY_A}'"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (3, 3));
    assert_eq!(r.get::<_, String>(2), "active");
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM property_sync_status").await,
        2,
        "one row per property"
    );
    let health: Vec<(String, i64)> = c
        .query(
            "SELECT metric, count FROM sync_health_monitoring ORDER BY metric",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        health,
        [
            ("pending_conflicts".to_string(), 3),
            ("queue_backlog".to_string(), 8),
            ("sync_failures".to_string(), 1)
        ]
    );
    let q = scalar(
        &c,
        "SELECT queue_items FROM queue_performance_metrics WHERE status = 'pending'",
    )
    .await;
    assert_eq!(q, 8, "4 conversations and 4 users inserted");
    // Mapping: a link, and a prospect no conversation maps to.
    c.batch_execute(&format!(
        "INSERT INTO sync_links (entity_type, local_id, provider, remote_id, last_synced_at)
         VALUES ('conversation', '{}', 'resman', 'P-1', now());
         INSERT INTO resman_prospects (prospect_id, property_id, status, data)
         VALUES ('P-1', '{PROPERTY_A}', 'Prospect', '{{}}'), ('P-9', '{PROPERTY_A}', 'Prospect', '{{}}');",
        conv(1)
    ))
    .await
    .unwrap();
    let rows = c
        .query(
            "SELECT resman_lead_id::text, mapping_status::text, conversation_id IS NULL FROM lead_sync_mapping ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            ("P-1".to_string(), "active".to_string(), false),
            ("P-9".to_string(), "from_resman".to_string(), true)
        ]
    );
    // Unique both ways.
    let e = c
        .batch_execute(&format!(
            "INSERT INTO sync_links (entity_type, local_id, provider, remote_id) VALUES ('conversation', '{}', 'resman', 'P-1')",
            conv(2)
        ))
        .await;
    assert!(e.is_err());
}
