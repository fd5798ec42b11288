//! The front as an attacker and a careless provider meet it (SPEC §9):
//! bounded work before authentication (counted in HMACs, on the real
//! binary), a poison delivery failing alone beside concurrent clean
//! senders, edge validation, typed admin input, one JSON error shape, slow
//! clients dropped, memory bounded by bytes, and lenient matching where the
//! standards are.

mod common;

use std::time::Duration;

use common::fake_openphone::{FakeOpenPhone, API_KEY};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use syncbridge::providers::signature::{sign_openphone_legacy, sign_standard, HmacKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "admin-token-for-tests";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

fn legacy_key() -> HmacKey {
    HmacKey::from_base64(OPENPHONE_WEBHOOK_KEY).unwrap()
}

fn beta_key() -> HmacKey {
    HmacKey::from_whsec(OPENPHONE_WEBHOOK_SECRET).unwrap()
}

/// `serve` as a child process: its `/metrics` counts only its own work.
struct Serve(ServeProcess);

impl std::ops::Deref for Serve {
    type Target = ServeProcess;
    fn deref(&self) -> &ServeProcess {
        &self.0
    }
}

impl Serve {
    async fn start(db_url: &str) -> Serve {
        let serve = ServeProcess::start(
            db_url,
            &[
                ("OPENPHONE_WEBHOOK_KEY", OPENPHONE_WEBHOOK_KEY),
                ("OPENPHONE_WEBHOOK_SECRET", OPENPHONE_WEBHOOK_SECRET),
                ("RESMAN_WEBHOOK_SECRET", RESMAN_WEBHOOK_SECRET),
                ("KEAP_WEBHOOK_TOKEN", KEAP_WEBHOOK_TOKEN),
            ],
        );
        serve.answers("/healthz", StatusCode::OK).await;
        Serve(serve)
    }

    /// The body HMACs the process has computed so far.
    async fn hmacs(&self) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("syncbridge_signature_hmacs_total "))
            .map(|v| v.trim().parse::<f64>().unwrap() as u64)
            .unwrap_or(0)
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> StatusCode {
        match self.try_post(path, headers, body).await {
            Ok(s) => s,
            Err(e) => panic!("{path}: {e}"),
        }
    }

    async fn try_post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<StatusCode, String> {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send()
            .await
            .map(|r| r.status())
            .map_err(|e| format!("{e:?}"))
    }
}

#[tokio::test]
async fn unauthenticated_requests_cost_at_most_a_few_hmacs_whatever_their_headers() {
    let db = TestDb::create().await;
    let serve = Serve::start(&db.url).await;
    let body = vec![b'x'; 1 << 20];
    let ts = now_ms();
    let bogus = |t: i64| format!("hmac;1;{t};AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");

    // 10,000 signature entries (650 KB of header) over a 1 MB body: hyper
    // refuses the head past its 64 KiB buffer (431), before any handler.
    let flood = vec![bogus(ts); 10_000].join(",");
    let before = serve.hmacs().await;
    let flood_headers = [("openphone-signature", flood.clone())];
    // The server answers 431 and closes as soon as the head outgrows its
    // buffer, possibly while the client is still writing it.
    let (a, b, health) = tokio::join!(
        serve.try_post("/webhooks/openphone", &flood_headers, b"{}".to_vec()),
        serve.try_post("/webhooks/openphone", &flood_headers, b"{}".to_vec()),
        reqwest::get(format!("{}/healthz", serve.base)),
    );
    for r in [a, b] {
        match r {
            Ok(s) => assert_eq!(s, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            Err(e) => assert!(
                e.contains("BrokenPipe") || e.contains("ConnectionReset"),
                "{e}"
            ),
        }
    }
    assert_eq!(health.unwrap().status(), StatusCode::OK);
    // 900 entries (59 KB) reach the verifier: refused by its caps before
    // any HMAC.
    let flood_headers = [("openphone-signature", vec![bogus(ts); 900].join(","))];
    let (a, b, health) = tokio::join!(
        serve.post("/webhooks/openphone", &flood_headers, body.clone()),
        serve.post("/webhooks/openphone", &flood_headers, body.clone()),
        reqwest::get(format!("{}/healthz", serve.base)),
    );
    assert_eq!((a, b), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(health.unwrap().status(), StatusCode::OK);
    assert_eq!(
        serve.hmacs().await - before,
        0,
        "a flood header costs no HMAC"
    );

    // Eight entries (the most considered): one HMAC per distinct
    // timestamp, i.e. per distinct signed message.
    let before = serve.hmacs().await;
    let same_ts = vec![bogus(ts); 8].join(",");
    assert_eq!(
        serve
            .post(
                "/webhooks/openphone",
                &[("openphone-signature", same_ts)],
                body.clone()
            )
            .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        serve.hmacs().await - before,
        1,
        "eight entries, one message"
    );
    let before = serve.hmacs().await;
    let distinct: Vec<String> = (0..8).map(|i| bogus(ts - i)).collect();
    assert_eq!(
        serve
            .post(
                "/webhooks/openphone",
                &[("openphone-signature", distinct.join(","))],
                body.clone()
            )
            .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(serve.hmacs().await - before, 8);
    // Nine entries, or expired ones: no HMAC at all.
    let before = serve.hmacs().await;
    let nine = vec![bogus(ts); 9].join(",");
    let expired = vec![bogus(ts - 3_600_000); 8].join(",");
    for h in [nine, expired] {
        assert_eq!(
            serve
                .post(
                    "/webhooks/openphone",
                    &[("openphone-signature", h)],
                    body.clone()
                )
                .await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(serve.hmacs().await - before, 0);

    // Standard Webhooks (OpenPhone beta, ResMan) with a current timestamp.
    let now_s = (ts / 1000).to_string();
    let v1 = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for path in ["/webhooks/openphone", "/webhooks/resman"] {
        let std_headers = |sig: String| {
            vec![
                ("webhook-id", "msg_flood".to_owned()),
                ("webhook-timestamp", now_s.clone()),
                ("webhook-signature", sig),
            ]
        };
        let before = serve.hmacs().await;
        let flood = vec![v1; 1_000].join(" ");
        assert_eq!(
            serve.post(path, &std_headers(flood), body.clone()).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(serve.hmacs().await - before, 0, "{path}: flood");
        let before = serve.hmacs().await;
        let eight = [v1; 8].join(" ");
        assert_eq!(
            serve.post(path, &std_headers(eight), body.clone()).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(serve.hmacs().await - before, 1, "{path}: one message");
    }
    // A delivery signed with both OpenPhone schemes, both wrong: two HMACs
    // (one per scheme), not more.
    let before = serve.hmacs().await;
    let both = vec![
        ("webhook-id", "msg_both".to_owned()),
        ("webhook-timestamp", now_s.clone()),
        ("webhook-signature", [v1; 8].join(" ")),
        ("openphone-signature", vec![bogus(ts); 8].join(",")),
    ];
    assert_eq!(
        serve.post("/webhooks/openphone", &both, body.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(serve.hmacs().await - before, 2);

    let c = db.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM webhook_events").await, 0);
}

/// A signed legacy OpenPhone delivery of `body`.
fn signed(body: &[u8]) -> Vec<(&'static str, String)> {
    openphone_headers(body, now_ms())
}

fn poison_bodies(i: usize) -> Vec<Vec<u8>> {
    let good = String::from_utf8(message_event(
        &format!("EVpoison{i}"),
        &format!("ACpoison{i}"),
        "+14155550142",
        "hello",
        "2025-03-14T16:05:00.000Z",
    ))
    .unwrap();
    vec![
        good.replace(
            &format!("\"EVpoison{i}\""),
            &format!("\"EVpoison{i}\\u0000\""),
        ),
        good.replace("\"message.received\"", "\"message.rec\\u0000eived\""),
        good.replace("\"hello\"", "\"hel\\u0000lo\""),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

#[tokio::test]
async fn a_poison_delivery_fails_alone_and_no_clean_delivery_beside_it_fails() {
    let app = TestApp::spawn().await;
    let senders = 8;
    let per_sender = 60;
    let clean = async {
        let runs = (0..senders).map(|s| {
            let app = &app;
            async move {
                let mut failures = Vec::new();
                for i in 0..per_sender {
                    let body = message_event(
                        &format!("EVclean{s}x{i}"),
                        &format!("ACclean{s}x{i}"),
                        "+14155550142",
                        "clean",
                        "2025-03-14T16:05:00.000Z",
                    );
                    let (status, answer) =
                        app.post("/webhooks/openphone", &signed(&body), body).await;
                    if status != StatusCode::OK || answer["status"] != "accepted" {
                        failures.push((status, answer));
                    }
                }
                failures
            }
        });
        futures_util::future::join_all(runs).await
    };
    let poison = async {
        let mut answers = Vec::new();
        for i in 0..per_sender {
            for body in poison_bodies(i) {
                answers.push(app.post("/webhooks/openphone", &signed(&body), body).await);
            }
            let keap = format!(
                r#"{{"event_key":"contact.e\u0000dit","object_type":"contact","object_keys":[{{"id":{i},"apiUrl":"","timestamp":"2025-03-14T16:05:00.000Z"}}]}}"#
            )
            .into_bytes();
            let path = format!("/webhooks/keap/{KEAP_WEBHOOK_TOKEN}");
            answers.push(
                app.post(&path, &[("content-type", "application/json".into())], keap)
                    .await,
            );
        }
        answers
    };
    let (clean, poison) = tokio::join!(clean, poison);
    let failed: Vec<_> = clean.into_iter().flatten().collect();
    assert!(failed.is_empty(), "clean deliveries failed: {failed:?}");
    for (status, answer) in &poison {
        assert_eq!(*status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains("U+0000"),
            "{answer}"
        );
    }
    let c = app.client().await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM webhook_events").await,
        (senders * per_sender) as i64,
        "every clean delivery stored, no poison"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_inbox_stores_a_refused_group_row_by_row_so_only_the_bad_row_fails() {
    use syncbridge::domain::{DedupKey, ProviderName};
    use syncbridge::inbox::{Inbox, InboxError, Stored};
    use syncbridge::providers::Delivery;

    let db = TestDb::create().await;
    let pool = syncbridge::db::pool(&db.url, 4).unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let (inbox, writers) = Inbox::start(
        pool,
        1,
        std::sync::Arc::new(tokio::sync::Notify::new()),
        cancel.clone(),
    );
    // Past the edge checks (as a bug or a new provider might let through):
    // the database itself refuses a NUL in a text column.
    let delivery = |i: usize, poison: bool| Delivery {
        provider: ProviderName::OpenPhone,
        dedup_key: DedupKey::new(&format!("EVrow{i}")).unwrap(),
        object_keys: Vec::new(),
        event_type: Some(
            if poison {
                "bad\0type"
            } else {
                "message.received"
            }
            .to_owned(),
        ),
        event_id: Some(format!("EVrow{i}")),
        occurred_at: None,
        headers: serde_json::Map::new(),
        body: bytes::Bytes::from_static(b"{}"),
    };
    let submissions = (0..300).map(|i| {
        let inbox = inbox.clone();
        let poison = i % 30 == 7;
        async move { (poison, inbox.submit(delivery(i, poison)).await) }
    });
    let results = futures_util::future::join_all(submissions).await;
    for (poison, r) in &results {
        if *poison {
            assert!(matches!(r, Err(InboxError::Refused(_))), "{r:?}");
        } else {
            assert!(matches!(r, Ok(Stored::Accepted(_))), "{r:?}");
        }
    }
    let c = db.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM webhook_events").await, 290);
    cancel.cancel();
    for w in writers {
        w.await.unwrap();
    }
}

#[tokio::test]
async fn deliveries_the_router_could_not_use_are_400_at_the_door_and_stored_nowhere() {
    let app = TestApp::spawn().await;
    let good = message_event(
        "EVedge",
        "ACedge",
        "+14155550142",
        "x",
        "2025-03-14T16:05:00.000Z",
    );
    let text = String::from_utf8(good.clone()).unwrap();
    let mut invalid_utf8 = good.clone();
    let at = text.find("\"x\"").unwrap() + 1;
    invalid_utf8[at] = 0xff;
    let deep = format!(
        r#"{{"id":"EVdeep","type":"message.received","createdAt":"2025-03-14T16:05:00.000Z","data":{{"object":{{"deep":{}1{}}}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid UTF-8", invalid_utf8, "JSON"),
        ("10,000-deep JSON", deep.into_bytes(), "128"),
        (
            "no createdAt",
            br#"{"id":"EVnotime","type":"message.received","data":{"object":{"id":"AC1"}}}"#.to_vec(),
            "createdAt",
        ),
        (
            "createdAt not a time",
            br#"{"id":"EVbadtime","type":"message.received","createdAt":"yesterday","data":{"object":{"id":"AC1"}}}"#.to_vec(),
            "createdAt",
        ),
        (
            "no data.object",
            br#"{"id":"EVnodata","type":"message.received","createdAt":"2025-03-14T16:05:00.000Z","data":{}}"#.to_vec(),
            "data.object",
        ),
        (
            "an event type of 200 bytes",
            text.replace("message.received", &"m".repeat(200)).into_bytes(),
            "event type",
        ),
        ("NUL in a text", text.replace("\"x\"", "\"\\u0000\"").into_bytes(), "U+0000"),
        ("trailing garbage", [good.as_slice(), b" {}"].concat(), "JSON"),
    ];
    for (what, body, reason) in cases {
        let (status, answer) = app.post("/webhooks/openphone", &signed(&body), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        assert!(
            answer["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{what}: {answer}"
        );
    }
    // A Keap delivery with a NUL in its event key, a ResMan one with a
    // 2,000-byte webhook id.
    let path = format!("/webhooks/keap/{KEAP_WEBHOOK_TOKEN}");
    let keap = br#"{"event_key":"contact.\u0000add","object_type":"contact","object_keys":[{"id":1,"timestamp":"2025-03-14T16:05:00.000Z"}]}"#.to_vec();
    let (status, _) = app.post(&path, &[], keap).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let rm = HmacKey::from_whsec(RESMAN_WEBHOOK_SECRET).unwrap();
    let rbody = br#"{"type":"prospect.updated","propertyId":"p1"}"#.to_vec();
    let id = "m".repeat(2000);
    let ts = now_ms() / 1000;
    let (status, _) = app
        .post(
            "/webhooks/resman",
            &[
                ("webhook-id", id.clone()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sign_standard(&rm, &id, ts, &rbody)),
            ],
            rbody,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an over-long webhook-id is not a signature"
    );

    let c = app.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM webhook_events").await, 0);
    // The server kept serving, and a good delivery still goes in.
    let (status, answer) = app.post("/webhooks/openphone", &signed(&good), good).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    app.stop().await;
}

#[tokio::test]
async fn repeated_signature_headers_and_either_openphone_scheme_are_accepted() {
    let app = TestApp::spawn().await;
    let c = app.client().await;
    let bad_legacy = "hmac;1;1;AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned();
    let mut n = 0;
    let mut next = || {
        n += 1;
        message_event(
            &format!("EVlenient{n}"),
            &format!("AClenient{n}"),
            "+14155550142",
            "x",
            "2025-03-14T16:05:00.000Z",
        )
    };
    let beta = |body: &[u8], key: &HmacKey| {
        let ts = now_ms() / 1000;
        vec![
            ("webhook-id", format!("msg_{ts}_{}", body.len())),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                sign_standard(key, &format!("msg_{ts}_{}", body.len()), ts, body),
            ),
        ]
    };
    let wrong_beta =
        HmacKey::from_whsec("whsec_d3JvbmctcXVvLWJldGEtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY=").unwrap();

    // Two openphone-signature lines, the good one second.
    let body = next();
    let good = sign_openphone_legacy(&legacy_key(), now_ms(), &body);
    let (s, a) = app
        .post(
            "/webhooks/openphone",
            &[
                ("openphone-signature", bad_legacy.clone()),
                ("openphone-signature", good),
            ],
            body,
        )
        .await;
    assert_eq!(
        (s, a["status"].as_str()),
        (StatusCode::OK, Some("accepted")),
        "{a}"
    );

    // Both schemes: a bad beta signature beside a good legacy one, and a
    // good beta one beside a bad legacy one.
    let body = next();
    let mut h = beta(&body, &wrong_beta);
    h.push((
        "openphone-signature",
        sign_openphone_legacy(&legacy_key(), now_ms(), &body),
    ));
    let (s, a) = app.post("/webhooks/openphone", &h, body).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let body = next();
    let mut h = beta(&body, &beta_key());
    h.push(("openphone-signature", bad_legacy.clone()));
    let (s, a) = app.post("/webhooks/openphone", &h, body).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    // Both bad: 401 naming both.
    let body = next();
    let mut h = beta(&body, &wrong_beta);
    h.push(("openphone-signature", bad_legacy.clone()));
    let (s, a) = app.post("/webhooks/openphone", &h, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{a}");
    assert!(a["detail"].as_str().unwrap().contains(';'), "{a}");
    // Two webhook-signature lines, the good one second.
    let body = next();
    let mut h = beta(&body, &beta_key());
    let good = h.pop().unwrap();
    h.push((
        "webhook-signature",
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
    ));
    h.push(good);
    let (s, a) = app.post("/webhooks/openphone", &h, body).await;
    assert_eq!(s, StatusCode::OK, "{a}");

    assert_eq!(count(&c, "SELECT count(*) FROM webhook_events").await, 4);
    // The stored headers keep both lines, so the delivery re-verifies.
    let kept: Value = c
        .query_one(
            "SELECT headers FROM webhook_events WHERE event_id = 'EVlenient1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        kept["openphone-signature"].as_str().unwrap().contains(", "),
        "{kept}"
    );
    app.stop().await;
}

async fn admin_app() -> TestApp {
    TestApp::spawn_with(|s| s.set("SYNCBRIDGE_ADMIN_TOKEN", ADMIN)).await
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = app.http.request(method, app.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, ct, json)
}

#[tokio::test]
async fn bad_admin_input_and_every_error_answer_is_typed_json_never_a_database_error() {
    use reqwest::Method;
    let app = admin_app().await;
    let bearer = format!("Bearer {ADMIN}");
    let auth = Some(bearer.as_str());
    let json_ct = Some("application/json");
    type Case<'a> = (
        Method,
        String,
        Option<&'a str>,
        Option<&'a str>,
        Option<Vec<u8>>,
        StatusCode,
    );
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/api/sync/events?provider=%00".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/events?provider=bogus".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/events?status=lost".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/events?before_id=abc".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/events?before_id=-5".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/events?limit=0".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/events?limit=99999999999999999999".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/conflicts?before=-262143-01-01T00:00:00Z".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/conflicts?before=9999999-01-01T00:00:00Z".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/conflicts?entity=%00".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/api/sync/conflicts?entity={}", "e".repeat(100)),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/conflicts?provider=nope".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/events/abc".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/events/99999999999999999999999".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/events/12345".into(),
            auth,
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/api/sync/events/x/replay".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/sync/conflicts/not-a-uuid".into(),
            auth,
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/api/sync/conflicts/{}", uuid::Uuid::new_v4()),
            auth,
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            format!("/api/sync/conflicts/{}/resolve", uuid::Uuid::new_v4()),
            auth,
            json_ct,
            Some(b"{not json".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/sync/conflicts/zzz/resolve".into(),
            auth,
            json_ct,
            Some(br#"{"resolution":"local"}"#.to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/sync/full".into(),
            auth,
            json_ct,
            Some(b"{not json".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/sync/full".into(),
            auth,
            None,
            Some(br#"{"entity":"clients","provider":"openphone"}"#.to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::POST,
            "/api/sync/full".into(),
            auth,
            Some("text/plain"),
            Some(br#"{"entity":"clients","provider":"openphone"}"#.to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::POST,
            "/api/sync/full".into(),
            auth,
            json_ct,
            Some(br#"{"entity":"clients","provider":"myspace"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/sync/full".into(),
            auth,
            json_ct,
            Some(br#"{"entity":"cli\u0000ents","provider":"openphone"}"#.to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/sync/full".into(),
            auth,
            json_ct,
            Some(vec![b' '; 2 << 20]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            "/api/sync/retry".into(),
            auth,
            json_ct,
            Some(br#"{"direction":"sideways"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/sync/retry".into(),
            auth,
            json_ct,
            Some(br#"{"provider":"\u0000"}"#.to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/sync/retry".into(),
            auth,
            json_ct,
            Some(br#"{"ids":["nope"]}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/sync/retry".into(),
            auth,
            json_ct,
            Some(br#"{"event_ids":[-1]}"#.to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/api/sync/conflict-rules".into(),
            auth,
            json_ct,
            Some(br#"{"entity_type":"clients","field":"a\u0000","strategy":"merge"}"#.to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/api/sync/conflict-rules".into(),
            auth,
            json_ct,
            Some(br#"{"entity_type":"clients","strategy":"coin_flip"}"#.to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            "/api/sync/status".into(),
            auth,
            None,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/webhooks/openphone".into(),
            None,
            None,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::POST,
            "/webhooks/teli".into(),
            None,
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/webhooks/openphone/a-token".into(),
            None,
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/webhooks/keap".into(),
            None,
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/no/such/route".into(),
            None,
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/sync/status".into(),
            None,
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/sync/status".into(),
            Some("Bearer wrong"),
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/webhooks/openphone".into(),
            None,
            None,
            Some(vec![b'x'; 2 << 20]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (method, path, auth, ct, body, want) in cases {
        let what = format!("{method} {path}");
        let (status, content_type, answer) = call(&app, method, &path, auth, ct, body).await;
        assert_eq!(status, want, "{what}: {answer}");
        assert_eq!(content_type.as_deref(), Some("application/json"), "{what}");
        assert!(
            answer["error"].is_string() && answer["detail"].is_string(),
            "{what}: {answer}"
        );
    }
    // The Bearer scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let token = format!("{scheme} {ADMIN}");
        let (status, _, answer) = call(
            &app,
            Method::GET,
            "/api/sync/status",
            Some(&token),
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {answer}");
    }
    // A good request after all of that still works, with and without a body.
    let (status, _, answer) = call(&app, Method::POST, "/api/sync/retry", auth, None, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _, answer) = call(
        &app,
        Method::GET,
        "/api/sync/conflicts?before=2030-01-01T00:00:00Z&limit=5&provider=keap",
        auth,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    app.stop().await;
}

/// Reads until the peer closes (Ok(bytes read)) or `limit` passes (Err).
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_clients_are_dropped_and_the_others_are_served() {
    let app = TestApp::spawn_with(|s| {
        s.set("SYNCBRIDGE_HEADER_TIMEOUT_S", "1");
        s.set("SYNCBRIDGE_REQUEST_TIMEOUT_S", "1");
    })
    .await;
    // Half a request line, never finished (slowloris).
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"POST /webhooks/openphone HT")
        .await
        .unwrap();
    // Headers, then a body that never arrives in full.
    let mut slow_body = TcpStream::connect(app.addr).await.unwrap();
    slow_body
        .write_all(b"POST /webhooks/openphone HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\":")
        .await
        .unwrap();
    // An idle keep-alive connection after one answered request.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();

    // Meanwhile everybody else is served.
    for _ in 0..5 {
        let (status, answer) = app.post("/webhooks/openphone", &[], b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        let r = app.http.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    // Each is closed by the server (the bound only keeps a broken server
    // from hanging the test; it is no performance figure).
    let bound = Duration::from_secs(20);
    let got = read_until_closed(&mut half, bound)
        .await
        .expect("the half request line is dropped");
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let got = read_until_closed(&mut slow_body, bound)
        .await
        .expect("the slow body is dropped");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("application/json") && text.contains("SYNCBRIDGE_REQUEST_TIMEOUT_S"),
        "{text}"
    );
    let got = read_until_closed(&mut idle, bound)
        .await
        .expect("the idle keep-alive connection is closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    app.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_until_a_slot_frees() {
    let app = TestApp::spawn_with(|s| {
        s.set("SYNCBRIDGE_MAX_CONNECTIONS", "2");
        s.set("SYNCBRIDGE_HEADER_TIMEOUT_S", "1");
    })
    .await;
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // A third client is served once the idle ones are dropped.
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for s in &mut idle {
        let got = read_until_closed(s, Duration::from_secs(1)).await;
        assert_eq!(
            got,
            Ok(Vec::new()),
            "an idle connection held past its header timeout"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn router_claims_are_bounded_by_body_bytes_as_well_as_count() {
    use syncbridge::config::Config;
    use syncbridge::providers::Registry;
    use syncbridge::router::Router;

    let db = TestDb::create().await;
    let c = db.client().await;
    // Ten 300 KB events, stored as the inbox stores them.
    for i in 0..10 {
        let body = message_event(
            &format!("EVbig{i}"),
            &format!("ACbig{i}"),
            "+14155550142",
            &"y".repeat(300_000),
            "2025-03-14T16:05:00.000Z",
        );
        c.execute(
            "INSERT INTO webhook_events (provider, dedup_key, event_type, event_id, headers, body)
             VALUES ('openphone', $1, 'message.received', $1, '{}', $2)",
            &[&format!("EVbig{i}"), &body],
        )
        .await
        .unwrap();
    }
    let mut settings = test_settings(&db.url);
    settings.set("SYNCBRIDGE_ROUTER_BATCH_BYTES", "1048576");
    let config = Config::from_settings(&settings).unwrap();
    let registry = Registry::from_config(&config);
    let pool = syncbridge::db::pool(&db.url, 4).unwrap();
    let router = Router::new(pool, &registry, config.router.clone());
    let openphone = registry
        .get(syncbridge::domain::ProviderName::OpenPhone)
        .unwrap();
    // 1 MiB takes three 300 KB bodies, not the 256 the count allows.
    let mut sizes = Vec::new();
    loop {
        let stats = router.apply_batch(openphone.as_ref()).await.unwrap();
        if stats.total() == 0 {
            break;
        }
        sizes.push(stats.processed);
    }
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(count(&c, "SELECT count(*) FROM communications").await, 10);
}

#[tokio::test]
async fn a_record_too_large_to_push_fails_with_its_size_instead_of_being_read() {
    let fake = FakeOpenPhone::start().await;
    let url = fake.url.clone();
    let app = TestApp::spawn_with(move |s| {
        s.set("OPENPHONE_API_KEY", API_KEY);
        s.set("OPENPHONE_API_URL", url);
    })
    .await;
    let c = app.client().await;
    let big = "z".repeat(1_100_000);
    let id: uuid::Uuid = c
        .query_one(
            "INSERT INTO clients (first_name, last_name, company, phone) VALUES ('Big', 'Row', $1, '+14155550100') RETURNING id",
            &[&big],
        )
        .await
        .unwrap()
        .get(0);
    let mut row = json!(null);
    for _ in 0..400 {
        row = c
            .query_one("SELECT jsonb_build_object('s', sync_status, 'e', sync_error) FROM clients WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        if row["s"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(row["s"], "failed", "{row}");
    assert!(
        row["e"].as_str().unwrap().contains("bytes as JSON"),
        "{row}"
    );
    assert!(fake.writes().is_empty(), "nothing was sent");
    app.stop().await;
}

/// Random and mutated deliveries through the real HTTP front: whatever the
/// bytes and headers, the answer is a 2xx or 4xx JSON answer, never a 5xx,
/// and the router survives what was stored. `PROPTEST_CASES` (default
/// 2,000) sets the number of requests.
#[test]
fn random_and_mutated_deliveries_never_get_a_5xx() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as RunnerConfig, TestRunner};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(TestApp::spawn());
    let fixtures = syncbridge::ops::fixtures::load(&[fixtures_dir()]).unwrap();
    let bodies: Vec<(String, Vec<u8>)> = fixtures
        .iter()
        .map(|(_, f)| (f.provider.clone(), f.body_bytes().unwrap()))
        .filter(|(_, b)| !b.is_empty())
        .collect();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let edit = (
        any::<usize>(),
        proptest::collection::vec(any::<u8>(), 0..6),
        0usize..8,
    );
    let strategy = (
        proptest::sample::select(bodies),
        proptest::collection::vec(edit, 0..3),
        0u8..5,
        "[ -~]{0,80}",
    );
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    runner
        .run(&strategy, |((provider, mut body), edits, signing, junk)| {
            for (at, bytes, cut) in edits {
                let at = at % (body.len() + 1);
                let end = (at + cut).min(body.len());
                body.splice(at..end, bytes);
            }
            let ts = now_ms();
            let (path, headers): (String, Vec<(&str, String)>) = match provider.as_str() {
                "keap" => (
                    format!("/webhooks/keap/{KEAP_WEBHOOK_TOKEN}"),
                    vec![("content-type", "application/json".into())],
                ),
                "resman" => {
                    let key = HmacKey::from_whsec(RESMAN_WEBHOOK_SECRET).unwrap();
                    let id = format!("msg_{}", junk.len());
                    (
                        "/webhooks/resman".into(),
                        vec![
                            ("webhook-id", id.clone()),
                            ("webhook-timestamp", (ts / 1000).to_string()),
                            (
                                "webhook-signature",
                                sign_standard(&key, &id, ts / 1000, &body),
                            ),
                        ],
                    )
                }
                _ => {
                    let h = match signing {
                        0 => vec![(
                            "openphone-signature",
                            sign_openphone_legacy(&legacy_key(), ts, &body),
                        )],
                        1 => vec![
                            ("webhook-id", "msg_prop".into()),
                            ("webhook-timestamp", (ts / 1000).to_string()),
                            (
                                "webhook-signature",
                                sign_standard(&beta_key(), "msg_prop", ts / 1000, &body),
                            ),
                        ],
                        2 => vec![("openphone-signature", junk.clone())],
                        3 => vec![
                            ("webhook-id", junk.clone()),
                            ("webhook-timestamp", junk.clone()),
                            ("webhook-signature", junk.clone()),
                        ],
                        _ => vec![("content-type", junk.clone())],
                    };
                    ("/webhooks/openphone".into(), h)
                }
            };
            let (status, answer) = rt.block_on(app.post(&path, &headers, body));
            *statuses.borrow_mut().entry(status.as_u16()).or_default() += 1;
            prop_assert!(
                !status.is_server_error(),
                "{path} answered {status}: {answer}"
            );
            prop_assert!(answer.is_object(), "{path} answered {status} without JSON");
            Ok(())
        })
        .unwrap();
    let statuses = statuses.into_inner();
    // Not vacuous: some were accepted, some refused.
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert!(statuses.keys().any(|s| *s >= 400), "{statuses:?}");

    // The router applies (or fails, or ignores) everything that was stored
    // without a panic.
    rt.block_on(async {
        let registry = syncbridge::providers::Registry::from_config(&app.config);
        let pool = syncbridge::db::pool(&app.db.url, 4).unwrap();
        let router = syncbridge::router::Router::new(pool, &registry, app.config.router.clone());
        router
            .drain_all(&tokio_util::sync::CancellationToken::new())
            .await
            .unwrap();
        app.stop().await;
    });
}
