//! `/metrics` holds what SPEC §5.1 lists, read back with a Prometheus
//! text-format parser: deliveries, conflicts by strategy, outbound attempts
//! by provider and result, queue depths and oldest-pending ages per queue,
//! end-to-end push latency, pull runs and rows, integrity issues by check.

mod common;

use std::time::Duration;

use common::fake_keap::{FakeKeap, API_KEY};
use common::fake_teli::{self, make_call, FakeTeli};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "metrics-admin-token";

async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let text = app.get_text("/metrics").await;
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The sample of `name` whose labels include `labels`, as a number (a
/// histogram: its count).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
    let r = app
        .http
        .request(method, app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn hint(app: &TestApp, id: i64) {
    let body = serde_json::to_vec(&json!({
        "event_key": "contact.edit", "object_type": "contact",
        "object_keys": [{"id": id, "apiUrl": "",
                         "timestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()}],
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

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn metrics_hold_every_series_the_spec_lists() {
    let keap = FakeKeap::start().await;
    let teli = FakeTeli::start().await;
    let (keap_url, teli_url) = (keap.url.clone(), teli.url.clone());
    let app = TestApp::spawn_with(move |s| {
        s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN);
        s.set("KEAP_API_KEY", API_KEY);
        s.set("KEAP_API_URL", keap_url);
        s.set("SYNCBRIDGE_FETCH_DEBOUNCE_MS", "50");
        s.set("TELI_API_KEY", fake_teli::API_KEY);
        s.set("TELI_API_URL", teli_url);
        s.set("TELI_ORGANIZATION_ID", fake_teli::ORG);
        s.set("TELI_API_RATE", "1000");
    })
    .await;
    let c = app.client().await;

    // A Keap contact mirrored through a hook.
    let id = keap.put_contact(json!({"given_name": "Ana", "family_name": "Ruiz",
        "email_addresses": [{"email": "ana@ruiz.example", "field": "EMAIL1"}]}))["id"]
        .as_i64()
        .unwrap();
    hint(&app, id).await;
    wait_for("the contact mirrored", async || {
        c.query_opt(
            "SELECT 1 FROM sync_contacts WHERE keap_id = $1 AND sync_status = 'synced'",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .is_some()
    })
    .await;
    // Both sides change her first name: the push's read finds Keap's edit,
    // and the rule (last write wins) decides: a conflict, then a push.
    keap.edit_contact(id, |c| c["given_name"] = json!("Anita"));
    c.execute(
        "UPDATE sync_contacts SET first_name = 'Ana María' WHERE keap_id = $1",
        &[&id.to_string()],
    )
    .await
    .unwrap();
    wait_for("both sides agree", async || {
        let local: String = c
            .query_one(
                "SELECT coalesce(first_name, '') FROM sync_contacts WHERE keap_id = $1 AND sync_status = 'synced'",
                &[&id.to_string()],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or_default();
        keap.contact(id).is_some_and(|k| k["given_name"] == json!(local))
            && c.query_one(
                "SELECT count(*) FROM sync_outbox WHERE provider = 'keap' AND status = 'pending'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                == 0
    })
    .await;

    // A Teli organisation sync of two calls.
    c.batch_execute("INSERT INTO businesses (name, teli_agent_id) VALUES ('Joe''s', 'agent_joe')")
        .await
        .unwrap();
    for n in 0..2 {
        teli.add(make_call(
            &format!("call_{n}"),
            "agent_joe",
            "inbound",
            Some("+14155550101"),
            Some("+14155550100"),
            1_741_968_000_000 + n * 60_000,
            json!({}),
        ));
    }
    let (s, sum) = admin(&app, reqwest::Method::POST, "/api/teli/sync-all").await;
    assert_eq!(s, StatusCode::OK, "{sum}");

    // A change nobody pushes (D1 is not configured here) waits in the
    // outbox, and an integrity run reports it once it is old.
    c.batch_execute(
        "INSERT INTO sync_outbox (provider, table_name, record_id, operation, created_at, next_attempt_at)
         VALUES ('d1', 'prospects', gen_random_uuid(), 'INSERT', now() - interval '2 hours',
                 now() - interval '2 hours')",
    )
    .await
    .unwrap();
    let (s, r) = admin(&app, reqwest::Method::GET, "/api/sync/integrity?run=true").await;
    assert_eq!(s, StatusCode::OK, "{r}");

    // The queue gauges are sampled every few seconds.
    let mut m = scrape(&app).await;
    for _ in 0..100 {
        if value(
            &m,
            "syncbridge_queue_depth",
            &[("queue", "outbox"), ("provider", "d1")],
        ) == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = scrape(&app).await;
    }
    let at_least = |name: &str, labels: &[(&str, &str)], min: f64| {
        let v = value(&m, name, labels);
        assert!(
            v.is_some_and(|v| v >= min),
            "{name}{labels:?} = {v:?}, want ≥ {min}; have: {:?}",
            m.samples
                .iter()
                .filter(|s| s.metric.starts_with(name))
                .map(|s| (&s.metric, &s.labels, &s.value))
                .collect::<Vec<_>>()
        );
    };
    at_least(
        "syncbridge_webhook_deliveries_total",
        &[("provider", "keap"), ("result", "accepted")],
        1.0,
    );
    at_least("syncbridge_events_total", &[("provider", "keap")], 1.0);
    at_least(
        "syncbridge_conflicts_total",
        &[("entity", "sync_contacts"), ("strategy", "last_write_wins")],
        1.0,
    );
    at_least(
        "syncbridge_pushes_total",
        &[("provider", "keap"), ("result", "pushed")],
        1.0,
    );
    at_least(
        "syncbridge_change_to_push_seconds_count",
        &[("provider", "keap")],
        1.0,
    );
    at_least(
        "syncbridge_ingest_seconds_count",
        &[("provider", "keap")],
        1.0,
    );
    at_least("syncbridge_apply_seconds_count", &[], 1.0);
    at_least(
        "syncbridge_pull_runs_total",
        &[("provider", "teli"), ("result", "ok")],
        1.0,
    );
    at_least("syncbridge_pull_rows_total", &[("provider", "teli")], 2.0);
    at_least(
        "syncbridge_queue_depth",
        &[("queue", "outbox"), ("provider", "d1")],
        1.0,
    );
    at_least(
        "syncbridge_queue_oldest_seconds",
        &[("queue", "outbox"), ("provider", "d1")],
        3600.0,
    );
    at_least(
        "syncbridge_integrity_issues",
        &[("provider", "d1"), ("check", "stuck_outbox")],
        1.0,
    );
    // Drained queues read 0, not their last depth.
    c.batch_execute("DELETE FROM sync_outbox WHERE provider = 'd1'")
        .await
        .unwrap();
    for _ in 0..100 {
        m = scrape(&app).await;
        if value(
            &m,
            "syncbridge_queue_depth",
            &[("queue", "outbox"), ("provider", "d1")],
        ) == Some(0.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        value(
            &m,
            "syncbridge_queue_depth",
            &[("queue", "outbox"), ("provider", "d1")]
        ),
        Some(0.0)
    );
    app.stop().await;
}
