//! A fake OpenPhone v1 contacts API (shapes of
//! `shared/specs/openphone-v1.json`, PROVIDERS.md §1.6): checks the raw
//! `Authorization` key (no `Bearer`), enforces 10 requests/s per key with
//! 429 + `Retry-After`, records every request, and can be told to fail the
//! next requests with a status, a 429, a slow answer or a dropped
//! connection.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub const API_KEY: &str = "op_test_key_0123456789";

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and the v1 error envelope.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// Handle the request normally, but answer only after this long.
    Slow(Duration),
    /// Close the connection without answering.
    Drop,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: Option<Value>,
    pub at: Instant,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    /// A misbehaving API or proxy: the `externalIds` filter is ignored.
    ignore_filters: bool,
    contacts: HashMap<String, Value>,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    window: VecDeque<Instant>,
    next_id: u64,
}

#[derive(Clone, Default)]
pub struct FakeOpenPhone {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl FakeOpenPhone {
    pub async fn start() -> FakeOpenPhone {
        let mut fake = FakeOpenPhone::default();
        let app = Router::new()
            .route("/v1/contacts", get(list).post(create))
            .route("/v1/contacts/{id}", get(fetch).patch(update).delete(remove))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        fake.url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// The next requests fail as given, in order.
    /// From now on the contact list ignores `externalIds` (as a broken
    /// proxy or API would) and answers any contacts.
    pub fn ignore_filters(&self) {
        self.inner.lock().unwrap().ignore_filters = true;
    }

    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Requests that change contacts (POST, PATCH, DELETE) and succeeded.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET" && r.status < 300)
            .collect()
    }

    pub fn contacts(&self) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .contacts
            .values()
            .cloned()
            .collect()
    }

    pub fn contacts_with_external_id(&self, ext: &str) -> Vec<Value> {
        self.contacts()
            .into_iter()
            .filter(|c| c["externalId"] == ext)
            .collect()
    }

    /// Admin access for tests: change a contact as if a user did in the app.
    pub fn contact(&self, id: &str) -> Option<Value> {
        self.inner.lock().unwrap().contacts.get(id).cloned()
    }

    /// Changes a contact as a user of the app would: `edit` gets the stored
    /// contact, `updatedAt` is set to `at`. Returns the new contact.
    pub fn edit_contact(&self, id: &str, at: &str, edit: impl FnOnce(&mut Value)) -> Value {
        let mut inner = self.inner.lock().unwrap();
        let c = inner.contacts.get_mut(id).expect("contact exists");
        edit(c);
        c["updatedAt"] = json!(at);
        c.clone()
    }

    /// Waits until `pred` holds for the recorded requests (10 s at most).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Recorded]) -> bool) {
        for _ in 0..400 {
            if pred(&self.requests()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "fake OpenPhone: timed out waiting for {what}; got {:#?}",
            self.requests()
        );
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(
            json!({"message": message, "code": code, "status": status.as_u16(),
                    "docs": "https://openphone.com/docs", "title": status.canonical_reason()}),
        ),
    )
        .into_response()
}

/// Auth, rate limit, faults and recording around every handler.
async fn gate(
    fake: &FakeOpenPhone,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    body: Option<Value>,
    handle: impl FnOnce(&mut Inner) -> Response,
) -> Response {
    let (fault, response) = {
        let mut inner = fake.inner.lock().unwrap();
        let now = Instant::now();
        let record = |inner: &mut Inner, status: u16| {
            inner.requests.push(Recorded {
                method: method.into(),
                path: path.into(),
                query: query.clone(),
                body: body.clone(),
                at: now,
                status,
            })
        };
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
            record(&mut inner, 401);
            return error(StatusCode::UNAUTHORIZED, "0800401", "Unauthorized");
        }
        while inner
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            inner.window.pop_front();
        }
        if inner.window.len() >= 10 {
            record(&mut inner, 429);
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "0800429",
                "Too many requests",
            );
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            return r;
        }
        inner.window.push_back(now);
        let fault = inner.faults.pop_front();
        match &fault {
            Some(Fault::Status(s)) => {
                record(&mut inner, *s);
                let status = StatusCode::from_u16(*s).unwrap();
                return error(status, "0801500", "Injected failure");
            }
            Some(Fault::RateLimited(secs)) => {
                record(&mut inner, 429);
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "0800429",
                    "Too many requests",
                );
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
                return r;
            }
            Some(Fault::Drop) => {
                record(&mut inner, 0);
                (fault, None)
            }
            _ => {
                let response = handle(&mut inner);
                record(&mut inner, response.status().as_u16());
                (fault, Some(response))
            }
        }
    };
    match (fault, response) {
        (Some(Fault::Slow(d)), Some(r)) => {
            tokio::time::sleep(d).await;
            r
        }
        (_, Some(r)) => r,
        // Dropping the connection: hyper closes it when the handler task
        // panics, without writing a response.
        (_, None) => panic!("fake OpenPhone: dropping the connection as instructed"),
    }
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Gives phone/email items ids, as the real API does.
fn with_item_ids(fields: &mut Value) {
    for list in ["emails", "phoneNumbers"] {
        if let Some(items) = fields.get_mut(list).and_then(Value::as_array_mut) {
            for (i, item) in items.iter_mut().enumerate() {
                if item.get("id").is_none() {
                    item["id"] = json!(format!("{}{i}", &list[..2]));
                }
            }
        }
    }
}

async fn create(
    State(fake): State<FakeOpenPhone>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let b = body.clone();
    gate(
        &fake,
        &headers,
        "POST",
        "/v1/contacts",
        &HashMap::new(),
        Some(body),
        move |inner| {
            let Some(fields) = b.get("defaultFields").filter(|f| f.is_object()) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "0801400",
                    "defaultFields is required",
                );
            };
            if fields.get("firstName").is_none() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "0801400",
                    "defaultFields.firstName is required",
                );
            }
            inner.next_id += 1;
            let id = format!("664d0db69fcac7cf2e{:06x}", inner.next_id);
            let mut fields = fields.clone();
            with_item_ids(&mut fields);
            let contact = json!({
                "id": id, "externalId": b.get("externalId").cloned().unwrap_or(Value::Null),
                "source": b.get("source").cloned().unwrap_or(json!("public-api")),
                "sourceUrl": b.get("sourceUrl").cloned().unwrap_or(Value::Null),
                "defaultFields": fields, "customFields": [],
                "createdAt": now_iso(), "updatedAt": now_iso(), "createdByUserId": "USa1B2c3D4",
            });
            inner.contacts.insert(id, contact.clone());
            (StatusCode::CREATED, Json(json!({"data": contact}))).into_response()
        },
    )
    .await
}

async fn list(
    State(fake): State<FakeOpenPhone>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let q2 = q.clone();
    gate(
        &fake,
        &headers,
        "GET",
        "/v1/contacts",
        &q,
        None,
        move |inner| {
            let (Some(ext), Some(max)) = (q2.get("externalIds"), q2.get("maxResults")) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "0801400",
                    "externalIds and maxResults are required",
                );
            };
            let max: usize = max.parse().unwrap_or(10).clamp(1, 50);
            let data: Vec<Value> = inner
                .contacts
                .values()
                .filter(|c| inner.ignore_filters || c["externalId"] == ext.as_str())
                .take(max)
                .cloned()
                .collect();
            Json(json!({"data": data, "totalItems": data.len(), "nextPageToken": null}))
                .into_response()
        },
    )
    .await
}

async fn fetch(
    State(fake): State<FakeOpenPhone>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/contacts/{id}");
    gate(
        &fake,
        &headers,
        "GET",
        &path,
        &HashMap::new(),
        None,
        move |inner| match inner.contacts.get(&id) {
            Some(c) => Json(json!({"data": c})).into_response(),
            None => error(StatusCode::NOT_FOUND, "0800404", "Not Found"),
        },
    )
    .await
}

async fn update(
    State(fake): State<FakeOpenPhone>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/v1/contacts/{id}");
    let b = body.clone();
    gate(
        &fake,
        &headers,
        "PATCH",
        &path,
        &HashMap::new(),
        Some(body),
        move |inner| {
            let Some(c) = inner.contacts.get_mut(&id) else {
                return error(StatusCode::NOT_FOUND, "0800404", "Not Found");
            };
            if let Some(fields) = b.get("defaultFields").and_then(Value::as_object) {
                for (k, v) in fields {
                    c["defaultFields"][k] = v.clone();
                }
                with_item_ids(&mut c["defaultFields"]);
            }
            for k in ["externalId", "source", "sourceUrl"] {
                if let Some(v) = b.get(k) {
                    c[k] = v.clone();
                }
            }
            c["updatedAt"] = json!(now_iso());
            Json(json!({"data": c})).into_response()
        },
    )
    .await
}

async fn remove(
    State(fake): State<FakeOpenPhone>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/contacts/{id}");
    gate(
        &fake,
        &headers,
        "DELETE",
        &path,
        &HashMap::new(),
        None,
        move |inner| match inner.contacts.remove(&id) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => error(StatusCode::NOT_FOUND, "0800404", "Not Found"),
        },
    )
    .await
}
