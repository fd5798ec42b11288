//! Self-tests of the fake Keap v1 API (`tests/common/fake_keap.rs`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::fake_keap::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A client that keeps under Keap's 5 requests/s by spacing its requests.
struct Paced {
    http: reqwest::Client,
    base: String,
    last: Mutex<Option<Instant>>,
}

const GAP: Duration = Duration::from_millis(210);

impl Paced {
    fn new(fake: &FakeKeap) -> Paced {
        Paced {
            http: reqwest::Client::new(),
            base: fake.url.clone(),
            last: Mutex::new(None),
        }
    }

    async fn pace(&self) {
        let wait = {
            let mut last = self.last.lock().unwrap();
            let now = Instant::now();
            let due = last.map_or(now, |l| (l + GAP).max(now));
            *last = Some(due);
            due - now
        };
        tokio::time::sleep(wait).await;
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
        self.pace().await;
        let resp = req
            .header("X-Keap-API-Key", API_KEY)
            .send()
            .await
            .expect("the fake answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, headers, body)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let (status, _, body) = self.send(req).await;
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn auth_is_required_with_either_header() {
    let fake = FakeKeap::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/hooks/event_keys", fake.url);

    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Invalid Access Token");
    assert_eq!(body["code"], 401);

    let r = http
        .get(&url)
        .header("X-Keap-API-Key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = http
        .get(&url)
        .header("X-Keap-API-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-keap-product-throttle-limit"), "240");
    let keys: Vec<String> = r.json().await.unwrap();
    for k in [
        "contact.add",
        "contact.edit",
        "contact.delete",
        "order.add",
        "order.edit",
        "order.delete",
        "contactGroup.applied",
        "contactGroup.removed",
        "contactGroup.delete",
        "subscription.add",
        "subscription.edit",
        "subscription.delete",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
    }

    let r = http.get(&url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = http
        .get(format!("{}/nowhere", fake.url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["message"].is_string());

    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 200, 200, 404]);
    assert_eq!(fake.gets_of("/hooks/event_keys"), 4);
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn contacts_crud_and_optional_properties() {
    let fake = FakeKeap::start().await;
    let c = Paced::new(&fake);

    let dana = fake.put_contact(json!({
        "given_name": "Dana", "family_name": "Ortiz",
        "email_addresses": [{"email": "dana@ortiz.example", "field": "EMAIL1"}],
        "phone_numbers": [{"number": "+14155550142", "extension": "", "field": "PHONE1", "type": "Mobile"}],
        "tag_ids": [101, 204],
        "custom_fields": [{"id": 182, "content": "qualified"}],
    }));
    assert_eq!(dana["id"], 1000);
    let updated = dana["last_updated"].as_str().unwrap();
    assert!(
        updated.ends_with("+0000") && updated.len() == 28,
        "{updated}"
    );
    assert_eq!(
        parse_keap_date(updated).unwrap().timestamp_millis(),
        dana["last_updated_utc_millis"].as_i64().unwrap()
    );

    // Optional fields only when asked for.
    let (s, got) = c.get("/contacts/1000").await;
    assert_eq!(s, 200);
    assert_eq!(got["given_name"], "Dana");
    assert_eq!(got["tag_ids"], json!([101, 204]));
    assert_eq!(got["company"], Value::Null);
    for f in ["custom_fields", "lead_source_id", "job_title"] {
        assert!(
            got.get(f).is_none(),
            "{f} shown without optional_properties"
        );
    }
    let (s, got) = c
        .get("/contacts/1000?optional_properties=custom_fields,lead_source_id")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        got["custom_fields"],
        json!([{"id": 182, "content": "qualified"}])
    );
    assert!(got.get("lead_source_id").is_some());
    assert!(got.get("job_title").is_none());

    // Create.
    let (s, lee) = c
        .call(
            Method::POST,
            "/contacts",
            Some(json!({"given_name": "Lee",
                "phone_numbers": [{"number": "+12125550187", "field": "PHONE1", "type": "Work"}]})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(lee["id"], 1001);
    let (s, err) = c
        .call(
            Method::POST,
            "/contacts",
            Some(json!({"family_name": "Nobody"})),
        )
        .await;
    assert_eq!(s, 400, "{err}");

    // Patch: given fields replaced, others kept, last_updated moves on.
    let (s, patched) = c
        .call(
            Method::PATCH,
            "/contacts/1001",
            Some(json!({"family_name": "Park",
                "email_addresses": [{"email": "lee@park.example", "field": "EMAIL1"}]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(patched["given_name"], "Lee");
    assert_eq!(patched["family_name"], "Park");
    assert!(patched["last_updated_utc_millis"].as_i64() > lee["last_updated_utc_millis"].as_i64());

    // Upsert by email: an update (200), then a create (201).
    let (s, up) = c
        .call(
            Method::PUT,
            "/contacts",
            Some(json!({"duplicate_option": "Email", "job_title": "Owner",
                "email_addresses": [{"email": "DANA@ortiz.example", "field": "EMAIL1"}]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(up["id"], 1000);
    assert_eq!(fake.contact(1000).unwrap()["job_title"], "Owner");
    let (s, new) = c
        .call(
            Method::PUT,
            "/contacts",
            Some(json!({"duplicate_option": "Email", "given_name": "Kim",
                "email_addresses": [{"email": "kim@lee.example", "field": "EMAIL1"}]})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(new["id"], 1002);

    // Delete, then 404.
    let (s, _) = c.call(Method::DELETE, "/contacts/1001", None).await;
    assert_eq!(s, 204);
    let (s, err) = c.get("/contacts/1001").await;
    assert_eq!(s, 404);
    assert_eq!(err["message"], "Contact with id 1001 not found");
    assert_eq!(err["code"], 404);
    let (s, _) = c
        .call(
            Method::PATCH,
            "/contacts/9999",
            Some(json!({"given_name": "X"})),
        )
        .await;
    assert_eq!(s, 404);

    let writes: Vec<(String, u16)> = fake
        .writes()
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(
        writes,
        [
            ("POST".into(), 201),
            ("PATCH".into(), 200),
            ("PUT".into(), 200),
            ("PUT".into(), 201),
            ("DELETE".into(), 204)
        ]
    );
    assert_eq!(fake.gets_of("/contacts/1001"), 1);
    assert_eq!(fake.throttled(), 0);
    assert!(fake.max_requests_in(Duration::from_secs(1)) <= 5);

    // Admin edits: last_updated strictly increases, even within a millisecond.
    let mut last = fake.contact(1000).unwrap()["last_updated_utc_millis"]
        .as_i64()
        .unwrap();
    for i in 0..50 {
        let c = fake.edit_contact(1000, |c| c["middle_name"] = json!(format!("M{i}")));
        let now = c["last_updated_utc_millis"].as_i64().unwrap();
        assert!(now > last);
        assert_eq!(
            parse_keap_date(c["last_updated"].as_str().unwrap())
                .unwrap()
                .timestamp_millis(),
            now
        );
        last = now;
    }
    fake.delete_contact(1000);
    assert!(fake.contact(1000).is_none());
    assert_eq!(fake.contacts().len(), 1);
}

#[tokio::test]
async fn list_filters_by_email_and_pages() {
    let fake = FakeKeap::start().await;
    let c = Paced::new(&fake);
    let email = |e: &str| json!([{"email": e, "field": "EMAIL1"}]);
    fake.put_contact(json!({"given_name": "Dana", "email_addresses": email("dana@ortiz.example")}));
    let lee = fake
        .put_contact(json!({"given_name": "Lee", "email_addresses": email("lee@park.example")}));
    fake.put_contact(json!({"given_name": "Kim", "email_addresses": email("kim@lee.example")}));

    let (s, page) = c.get("/contacts?email=DANA@Ortiz.example").await;
    assert_eq!(s, 200);
    assert_eq!(page["count"], 1);
    assert_eq!(page["contacts"][0]["given_name"], "Dana");
    assert_eq!(page["next"], Value::Null);
    assert_eq!(page["previous"], Value::Null);

    let (s, page) = c.get("/contacts?limit=2&offset=0").await;
    assert_eq!(s, 200);
    assert_eq!(page["count"], 3);
    assert_eq!(page["contacts"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_owned();
    assert!(
        next.starts_with(&format!("{}/contacts/?", fake.url)),
        "{next}"
    );
    assert!(next.contains("offset=2"), "{next}");

    let (s, _, page) = c.send(c.http.get(&next)).await;
    assert_eq!(s, 200);
    assert_eq!(page["contacts"].as_array().unwrap().len(), 1);
    assert_eq!(page["contacts"][0]["given_name"], "Kim");
    assert_eq!(page["next"], Value::Null);
    assert!(page["previous"].is_string());

    // since is on last_updated, inclusive; the `+` must be URL-encoded.
    let since = lee["last_updated"].as_str().unwrap();
    let url = format!("{}/contacts", fake.url);
    let (s, _, page) = c
        .send(c.http.get(&url).query(&[("since", since), ("order", "id")]))
        .await;
    assert_eq!(s, 200);
    let names: Vec<&str> = page["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["given_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Lee", "Kim"]);
}

#[tokio::test]
async fn throttles_a_sixth_request_within_a_second() {
    let fake = FakeKeap::start().await;
    let http = reqwest::Client::new();
    let get = || {
        http.get(format!("{}/hooks", fake.url))
            .header("X-Keap-API-Key", API_KEY)
            .send()
    };
    for _ in 0..5 {
        assert_eq!(get().await.unwrap().status(), 200);
    }
    let r = get().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        header(r.headers(), "x-keap-product-throttle-available"),
        "0"
    );
    assert!(r.headers().contains_key("x-keap-product-throttle-limit"));
    assert_eq!(header(r.headers(), "retry-after"), "1");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"code":"429","message":"Quota Exceeded","status":"Request Throttled","details":null})
    );
    assert_eq!(fake.throttled(), 1);
    assert!(fake.max_requests_in(Duration::from_secs(1)) >= 6);

    tokio::time::sleep(Duration::from_millis(1050)).await;
    let r = get().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(r.headers(), "x-keap-product-throttle-available"),
        "234"
    );
    assert_eq!(fake.throttled(), 1);
}

#[tokio::test]
async fn injected_faults_come_in_order() {
    let fake = FakeKeap::start().await;
    let c = Paced::new(&fake);
    fake.fail_next([
        Fault::Status(503),
        Fault::RateLimited(7),
        Fault::Drop,
        Fault::Slow(Duration::from_millis(300)),
    ]);
    let (s, body) = c.get("/hooks").await;
    assert_eq!(s, 503);
    assert_eq!(body["code"], 503);

    let (s, headers, body) = c.send(c.http.get(format!("{}/hooks", fake.url))).await;
    assert_eq!(s, 429);
    assert_eq!(header(&headers, "retry-after"), "7");
    assert_eq!(body["message"], "Quota Exceeded");

    c.pace().await;
    let dropped = c
        .http
        .get(format!("{}/hooks", fake.url))
        .header("X-Keap-API-Key", API_KEY)
        .send()
        .await;
    assert!(dropped.is_err(), "{dropped:?}");

    let started = Instant::now();
    let (s, _) = c.get("/hooks").await;
    assert_eq!(s, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let (s, _) = c.get("/hooks").await;
    assert_eq!(s, 200);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 429, 0, 200, 200]);
    assert_eq!(fake.throttled(), 0);
}

type Received = Arc<Mutex<Vec<(String, Option<String>, Bytes)>>>;

/// A hook receiver: `/echo` answers the handshake properly, `/silent`
/// answers 200 without echoing, `/gone` echoes but answers deliveries 410.
async fn receiver() -> (String, Received) {
    async fn hook(
        State(log): State<Received>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let secret = headers
            .get("x-hook-secret")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let path = uri.path().to_owned();
        log.lock()
            .unwrap()
            .push((path.clone(), secret.clone(), body));
        match (path.as_str(), secret) {
            ("/echo" | "/gone", Some(s)) => {
                (StatusCode::OK, [("x-hook-secret", s)]).into_response()
            }
            ("/gone", None) => StatusCode::GONE.into_response(),
            _ => StatusCode::OK.into_response(),
        }
    }
    let log = Received::default();
    let app = Router::new().fallback(hook).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, log)
}

#[tokio::test]
async fn hooks_are_verified_by_the_secret_echo() {
    let fake = FakeKeap::start().await;
    let c = Paced::new(&fake);
    let (recv, log) = receiver().await;

    let (s, echo) = c
        .call(
            Method::POST,
            "/hooks",
            Some(json!({"eventKey": "contact.edit", "hookUrl": format!("{recv}/echo")})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(echo["status"], "Verified");
    assert_eq!(echo["eventKey"], "contact.edit");
    {
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1);
        let (path, secret, body) = &log[0];
        assert_eq!(path, "/echo");
        uuid::Uuid::parse_str(secret.as_deref().unwrap()).unwrap();
        assert!(body.is_empty());
    }

    let (s, silent) = c
        .call(
            Method::POST,
            "/hooks",
            Some(json!({"eventKey": "contact.add", "hookUrl": format!("{recv}/silent")})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(silent["status"], "Unverified");
    let key = silent["key"].as_str().unwrap().to_owned();
    let sent = log.lock().unwrap()[1].1.clone().unwrap();
    assert_eq!(fake.hook_secret(&key).as_deref(), Some(sent.as_str()));

    let (s, _) = c
        .call(
            Method::POST,
            "/hooks",
            Some(json!({"eventKey": "no.such", "hookUrl": format!("{recv}/echo")})),
        )
        .await;
    assert_eq!(s, 400);

    let (s, hooks) = c.get("/hooks").await;
    assert_eq!(s, 200);
    assert_eq!(hooks.as_array().unwrap().len(), 2);

    // Delayed confirmation: the secret must match the one sent.
    let url = format!("{}/hooks/{key}/delayedVerify", fake.url);
    let (s, _, _) = c
        .send(c.http.post(&url).header("X-Hook-Secret", "not-it"))
        .await;
    assert_eq!(s, 400);
    let (s, _, hook) = c
        .send(c.http.post(&url).header("X-Hook-Secret", &sent))
        .await;
    assert_eq!(s, 200);
    assert_eq!(hook["status"], "Verified");

    let (s, _) = c.call(Method::DELETE, &format!("/hooks/{key}"), None).await;
    assert_eq!(s, 204);
    let (s, _) = c.get(&format!("/hooks/{key}")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn fire_delivers_batches_to_verified_hooks() {
    let fake = FakeKeap::start().await;
    let c = Paced::new(&fake);
    let (recv, log) = receiver().await;
    let mut keys = Vec::new();
    for (event, path) in [
        ("contact.edit", "/echo"),
        ("contact.edit", "/silent"),
        ("order.add", "/gone"),
    ] {
        let (s, h) = c
            .call(
                Method::POST,
                "/hooks",
                Some(json!({"eventKey": event, "hookUrl": format!("{recv}{path}")})),
            )
            .await;
        assert_eq!(s, 200);
        keys.push(h["key"].as_str().unwrap().to_owned());
    }
    log.lock().unwrap().clear();

    assert_eq!(fake.fire("contact.edit", &[1570, 1574]).await, [200]);
    {
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1, "only the verified hook gets it");
        let (path, secret, body) = &log[0];
        assert_eq!(path, "/echo");
        assert!(secret.is_none());
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["event_key"], "contact.edit");
        assert_eq!(body["object_type"], "contact");
        let objects = body["object_keys"].as_array().unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0]["id"], 1570);
        assert_eq!(objects[1]["id"], 1574);
        assert_eq!(objects[0]["apiUrl"], format!("{}/contacts/1570", fake.url));
        let ts = objects[0]["timestamp"].as_str().unwrap();
        assert!(ts.ends_with("+0000"), "{ts}");
        assert!(parse_keap_date(ts).is_some());
    }

    let many: Vec<i64> = (1..=1500).collect();
    assert_eq!(fake.fire("contact.edit", &many).await, [200, 200]);
    {
        let log = log.lock().unwrap();
        let sizes: Vec<usize> = log[1..]
            .iter()
            .map(|(_, _, b)| {
                serde_json::from_slice::<Value>(b).unwrap()["object_keys"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes, [1000, 500]);
    }

    // A 410 makes the hook Inactive; /verify brings it back.
    assert_eq!(fake.fire("order.add", &[7]).await, [410]);
    let body: Value = serde_json::from_slice(&log.lock().unwrap().last().unwrap().2).unwrap();
    assert_eq!(body["object_type"], "order");
    assert_eq!(
        body["object_keys"][0]["apiUrl"],
        format!("{}/orders/7", fake.url)
    );
    let (s, hook) = c.get(&format!("/hooks/{}", keys[2])).await;
    assert_eq!(s, 200);
    assert_eq!(hook["status"], "Inactive");
    assert!(fake.fire("order.add", &[7]).await.is_empty());
    let (s, hook) = c
        .call(Method::POST, &format!("/hooks/{}/verify", keys[2]), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(hook["status"], "Verified");
    assert!(fake.fire("contactGroup.applied", &[5]).await.is_empty());
}

#[tokio::test]
async fn orders_tags_and_subscriptions_by_id() {
    let fake = FakeKeap::start().await;
    let c = Paced::new(&fake);
    let order = fake.put_order(json!({"title": "Online Order #1234", "status": "PAID",
        "contact": {"id": 1570, "email": "dana@ortiz.example", "first_name": "Dana", "last_name": "Ortiz"},
        "total": 100.0, "total_paid": 100.0}));
    let tag =
        fake.put_tag(json!({"id": 101, "name": "VIP", "category": {"id": 3, "name": "Tier"}}));
    let sub =
        fake.put_subscription(json!({"contact_id": 1570, "product_id": 9, "billing_amount": 49.0}));
    assert_eq!(order["id"], 1000);
    assert_eq!(order["total_due"], 0.0);
    assert!(order["modification_date"]
        .as_str()
        .unwrap()
        .ends_with("+0000"));
    assert_eq!(sub["status"], "Active");
    assert_eq!(sub["active"], true);

    let (s, got) = c.get("/orders/1000").await;
    assert_eq!((s, got), (200, order));
    let (s, got) = c.get("/tags/101").await;
    assert_eq!((s, got), (200, tag));
    let (s, got) = c.get(&format!("/subscriptions/{}", sub["id"])).await;
    assert_eq!((s, got), (200, sub));
    fake.delete_tag(101);
    let (s, got) = c.get("/tags/101").await;
    assert_eq!(s, 404);
    assert_eq!(got["message"], "Tag with id 101 not found");
}
