//! A fake ResMan (PROVIDERS.md Part A, Part B §3): the legacy form-POST
//! methods `MITS/PostLeadManagement4_0` (creates a prospect, or updates the
//! one its `Identification IDType="ProspectID"` names) and
//! `MITS/SearchProspects` (by e-mail, phone or modified window; past
//! `overflow_above` matches it answers 502 "buffer overflow"), both
//! answering the MITS envelope and checking the four credentials; the
//! Partners API `GET /Prospects?propertyId=&modifiedSince=` with Basic auth
//! and `ResMan-Account-Id`, returning prospects with `lastModified >=
//! modifiedSince`; injectable 429 (`Retry-After`), 5xx and slow answers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

pub const PARTNER_ID: &str = "1000";
pub const API_KEY: &str = "resman-test-key";
pub const ACCOUNT: &str = "400";

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (a legacy call: and an `Error` envelope).
    Status(u16),
    /// 429 with `retry-after: secs`.
    RateLimited(u64),
    /// Do the work, answer after this long (a timeout for the caller).
    Slow(Duration),
    /// Answer this request normally.
    Pass,
}

/// A prospect as the fake holds it.
#[derive(Debug, Clone)]
pub struct FakeProspect {
    pub prospect_id: String,
    pub person_id: String,
    pub property_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub status: String,
    pub lost_reason: Option<String>,
    pub last_modified: DateTime<Utc>,
    /// Comments of the events posted with it, in order.
    pub events: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    /// `MITS/PostLeadManagement4_0`, `MITS/SearchProspects`, `GET /Prospects`.
    pub method: String,
    pub status: u16,
    /// The form fields (the key masked) or the query.
    pub fields: HashMap<String, String>,
}

#[derive(Default)]
struct Inner {
    prospects: Vec<FakeProspect>,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    overflow_above: Option<usize>,
    next: u64,
}

#[derive(Clone)]
pub struct FakeResMan {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

fn mits(method: &str, status: &str, error: Option<&str>, prospects: &[FakeProspect]) -> String {
    let mut xml = format!("<ResMan><MethodName>{method}</MethodName><Status>{status}</Status>");
    if let Some(e) = error {
        xml.push_str(&format!(
            "<ErrorDescription>{}</ErrorDescription>",
            escape(e)
        ));
    }
    xml.push_str("<Response><LeadManagement><Prospects>");
    for p in prospects {
        xml.push_str(&format!(
            "<Prospect><Customers><Customer Type=\"prospect\">\
             <Identification IDType=\"ProspectID\" IDValue=\"{}\"/>\
             <Identification IDType=\"PersonID\" IDValue=\"{}\"/>\
             <Name><FirstName>{}</FirstName><LastName>{}</LastName></Name>\
             <Phone PhoneType=\"cell\"><PhoneNumber>{}</PhoneNumber></Phone>\
             <Email>{}</Email></Customer></Customers></Prospect>",
            escape(&p.prospect_id),
            escape(&p.person_id),
            escape(p.first_name.as_deref().unwrap_or_default()),
            escape(p.last_name.as_deref().unwrap_or_default()),
            escape(p.phone.as_deref().unwrap_or_default()),
            escape(p.email.as_deref().unwrap_or_default()),
        ));
    }
    xml.push_str("</Prospects></LeadManagement></Response></ResMan>");
    xml
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn xml_answer(status: StatusCode, xml: String) -> Response {
    (status, [("content-type", "text/xml; charset=utf-8")], xml).into_response()
}

/// The lead document, as the fake reads it (serde over quick-xml).
#[derive(Debug, Deserialize)]
struct LeadDoc {
    #[serde(rename = "Prospects")]
    prospects: LeadProspects,
}
#[derive(Debug, Deserialize)]
struct LeadProspects {
    #[serde(rename = "Prospect")]
    prospect: Vec<LeadProspect>,
}
#[derive(Debug, Deserialize)]
struct LeadProspect {
    #[serde(rename = "Customers")]
    customers: LeadCustomers,
    #[serde(rename = "Events", default)]
    events: Option<LeadEvents>,
}
#[derive(Debug, Deserialize)]
struct LeadCustomers {
    #[serde(rename = "Customer")]
    customer: Vec<LeadCustomer>,
}
#[derive(Debug, Deserialize)]
struct LeadCustomer {
    #[serde(rename = "Identification", default)]
    ids: Vec<LeadId>,
    #[serde(rename = "Name", default)]
    name: Option<LeadName>,
    #[serde(rename = "Phone", default)]
    phone: Option<LeadPhone>,
    #[serde(rename = "Email", default)]
    email: Option<String>,
}
#[derive(Debug, Deserialize)]
struct LeadId {
    #[serde(rename = "@IDType")]
    kind: String,
    #[serde(rename = "@IDValue")]
    value: String,
}
#[derive(Debug, Deserialize)]
struct LeadName {
    #[serde(rename = "FirstName", default)]
    first: Option<String>,
    #[serde(rename = "LastName", default)]
    last: Option<String>,
}
#[derive(Debug, Deserialize)]
struct LeadPhone {
    #[serde(rename = "PhoneNumber", default)]
    number: Option<String>,
}
#[derive(Debug, Deserialize)]
struct LeadEvents {
    #[serde(rename = "Event", default)]
    event: Vec<LeadEvent>,
}
#[derive(Debug, Deserialize)]
struct LeadEvent {
    #[serde(rename = "@EventType")]
    kind: String,
    #[serde(rename = "Comments", default)]
    comments: Option<String>,
}

impl FakeResMan {
    pub async fn start() -> FakeResMan {
        let mut fake = FakeResMan {
            inner: Arc::new(Mutex::new(Inner::default())),
            url: String::new(),
        };
        let app = Router::new()
            .route("/MITS/PostLeadManagement4_0", post(post_lead))
            .route("/MITS/SearchProspects", post(search))
            .route("/Prospects", get(prospects))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        fake.url = format!("http://{}", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    /// Searches matching more than `n` prospects overflow (502).
    pub fn overflow_above(&self, n: usize) {
        self.inner.lock().unwrap().overflow_above = Some(n);
    }

    pub fn prospects(&self) -> Vec<FakeProspect> {
        self.inner.lock().unwrap().prospects.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// A prospect entered in ResMan itself (by a leasing agent).
    pub fn add(&self, property_id: &str, first: &str, email: &str, status: &str) -> String {
        let mut inner = self.inner.lock().unwrap();
        inner.next += 1;
        let n = inner.next;
        let p = FakeProspect {
            prospect_id: format!("prospect-{n:04}"),
            person_id: format!("person-{n:04}"),
            property_id: property_id.to_owned(),
            first_name: Some(first.to_owned()),
            last_name: None,
            email: Some(email.to_owned()),
            phone: None,
            status: status.to_owned(),
            lost_reason: None,
            last_modified: Utc::now(),
            events: Vec::new(),
        };
        let id = p.prospect_id.clone();
        inner.prospects.push(p);
        id
    }

    /// A change made in ResMan: `edit` on the prospect, `lastModified` now.
    pub fn edit(&self, prospect_id: &str, edit: impl FnOnce(&mut FakeProspect)) {
        let mut inner = self.inner.lock().unwrap();
        let p = inner
            .prospects
            .iter_mut()
            .find(|p| p.prospect_id == prospect_id)
            .expect("the fake has that prospect");
        edit(p);
        p.last_modified = Utc::now();
    }

    /// Sets when the prospect was last modified (to spread a test's
    /// prospects over time).
    pub fn modified_at(&self, prospect_id: &str, at: DateTime<Utc>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(p) = inner
            .prospects
            .iter_mut()
            .find(|p| p.prospect_id == prospect_id)
        {
            p.last_modified = at;
        }
    }

    /// The next fault, recorded as the request's answer.
    fn fault(&self, method: &str, fields: &HashMap<String, String>) -> Option<Fault> {
        let mut inner = self.inner.lock().unwrap();
        let f = inner.faults.pop_front();
        let status = match &f {
            Some(Fault::Status(s)) => Some(*s),
            Some(Fault::RateLimited(_)) => Some(429),
            _ => None,
        };
        if let Some(status) = status {
            inner.requests.push(Recorded {
                method: method.into(),
                status,
                fields: fields.clone(),
            });
        }
        f
    }

    fn record(&self, method: &str, status: u16, fields: &HashMap<String, String>) {
        self.inner.lock().unwrap().requests.push(Recorded {
            method: method.into(),
            status,
            fields: fields.clone(),
        });
    }
}

fn masked(form: &HashMap<String, String>) -> HashMap<String, String> {
    let mut f = form.clone();
    if f.contains_key("ApiKey") {
        f.insert("ApiKey".into(), "***".into());
    }
    f
}

/// The legacy credentials: `Some(error)` when they are wrong.
fn legacy_auth(form: &HashMap<String, String>) -> Option<&'static str> {
    if form.get("IntegrationPartnerID").map(String::as_str) != Some(PARTNER_ID) {
        return Some("Invalid IntegrationPartnerID");
    }
    if form.get("ApiKey").map(String::as_str) != Some(API_KEY) {
        return Some("Invalid ApiKey");
    }
    if form.get("AccountID").map(String::as_str) != Some(ACCOUNT) {
        return Some("Invalid AccountID");
    }
    if form.get("PropertyID").is_none_or(|p| p.is_empty()) {
        return Some("PropertyID is required");
    }
    None
}

/// Applies a fault; `Some(answer)` when it replaces the answer.
async fn faulted(
    fake: &FakeResMan,
    method: &str,
    form: &HashMap<String, String>,
    legacy: bool,
) -> (Option<Response>, Option<Duration>) {
    match fake.fault(method, &masked(form)) {
        Some(Fault::Status(s)) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let r = if legacy {
                xml_answer(status, mits(method, "Error", Some("Internal error"), &[]))
            } else {
                (status, Json(json!({"error": "Internal error"}))).into_response()
            };
            (Some(r), None)
        }
        Some(Fault::RateLimited(secs)) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("a number"));
            (Some(r), None)
        }
        Some(Fault::Slow(d)) => (None, Some(d)),
        Some(Fault::Pass) | None => (None, None),
    }
}

async fn post_lead(
    State(fake): State<FakeResMan>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    const METHOD: &str = "MITS/PostLeadManagement4_0";
    let (answer, slow) = faulted(&fake, METHOD, &form, true).await;
    if let Some(a) = answer {
        return a;
    }
    if let Some(e) = legacy_auth(&form) {
        fake.record(METHOD, 200, &masked(&form));
        return xml_answer(
            StatusCode::OK,
            mits("PostLeadManagement4_0", "Error", Some(e), &[]),
        );
    }
    let doc: Result<LeadDoc, String> = form
        .get("Xml")
        .ok_or_else(|| "Xml is required".to_string())
        .and_then(|x| quick_xml::de::from_str(x).map_err(|e| format!("Invalid Xml: {e}")));
    let doc = match doc {
        Ok(d) => d,
        Err(e) => {
            fake.record(METHOD, 200, &masked(&form));
            return xml_answer(
                StatusCode::OK,
                mits("PostLeadManagement4_0", "Error", Some(&e), &[]),
            );
        }
    };
    let property = form.get("PropertyID").cloned().unwrap_or_default();
    let mut answered = Vec::new();
    let mut error = None;
    {
        let mut inner = fake.inner.lock().unwrap();
        for p in doc.prospects.prospect {
            let Some(c) = p.customers.customer.into_iter().next() else {
                continue;
            };
            let events: Vec<(String, Option<String>)> = p
                .events
                .map(|e| e.event.into_iter().map(|e| (e.kind, e.comments)).collect())
                .unwrap_or_default();
            let named = c
                .ids
                .iter()
                .find(|i| i.kind == "ProspectID")
                .map(|i| i.value.clone());
            let target = match &named {
                Some(id) => match inner.prospects.iter().position(|p| &p.prospect_id == id) {
                    Some(i) => i,
                    None => {
                        error = Some(format!("Prospect {id} was not found"));
                        break;
                    }
                },
                None => {
                    inner.next += 1;
                    let n = inner.next;
                    inner.prospects.push(FakeProspect {
                        prospect_id: format!("prospect-{n:04}"),
                        person_id: format!("person-{n:04}"),
                        property_id: property.clone(),
                        first_name: None,
                        last_name: None,
                        email: None,
                        phone: None,
                        status: "Prospect".into(),
                        lost_reason: None,
                        last_modified: Utc::now(),
                        events: Vec::new(),
                    });
                    inner.prospects.len() - 1
                }
            };
            let t = &mut inner.prospects[target];
            if let Some(n) = c.name {
                t.first_name = n.first.or(t.first_name.take());
                t.last_name = n.last.or(t.last_name.take());
            }
            t.phone = c.phone.and_then(|p| p.number).or(t.phone.take());
            t.email = c.email.or(t.email.take());
            t.events.extend(events);
            t.last_modified = Utc::now();
            answered.push(t.clone());
        }
    }
    fake.record(METHOD, 200, &masked(&form));
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    match error {
        Some(e) => xml_answer(
            StatusCode::OK,
            mits("PostLeadManagement4_0", "Error", Some(&e), &[]),
        ),
        None => xml_answer(
            StatusCode::OK,
            mits("PostLeadManagement4_0", "Success", None, &answered),
        ),
    }
}

fn time(form: &HashMap<String, String>, key: &str) -> Option<DateTime<Utc>> {
    form.get(key)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn digits(s: &str) -> String {
    let d: String = s.chars().filter(char::is_ascii_digit).collect();
    d.strip_prefix('1')
        .filter(|r| r.len() == 10)
        .map(str::to_owned)
        .unwrap_or(d)
}

async fn search(
    State(fake): State<FakeResMan>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    const METHOD: &str = "MITS/SearchProspects";
    let (answer, slow) = faulted(&fake, METHOD, &form, true).await;
    if let Some(a) = answer {
        return a;
    }
    if let Some(e) = legacy_auth(&form) {
        fake.record(METHOD, 200, &masked(&form));
        return xml_answer(
            StatusCode::OK,
            mits("SearchProspects", "Error", Some(e), &[]),
        );
    }
    let property = form.get("PropertyID").cloned().unwrap_or_default();
    let (from, to) = (
        time(&form, "ModifiedStartDateTime"),
        time(&form, "ModifiedEndDateTime"),
    );
    let found: Vec<FakeProspect> = {
        let inner = fake.inner.lock().unwrap();
        inner
            .prospects
            .iter()
            .filter(|p| p.property_id == property)
            .filter(|p| {
                form.get("Email").is_none_or(|e| {
                    p.email
                        .as_deref()
                        .is_some_and(|pe| pe.eq_ignore_ascii_case(e))
                })
            })
            .filter(|p| {
                form.get("Phone").is_none_or(|ph| {
                    p.phone
                        .as_deref()
                        .is_some_and(|pp| digits(pp) == digits(ph))
                })
            })
            .filter(|p| from.is_none_or(|f| p.last_modified >= f))
            .filter(|p| to.is_none_or(|t| p.last_modified < t))
            .cloned()
            .collect()
    };
    let overflow = fake.inner.lock().unwrap().overflow_above;
    if overflow.is_some_and(|n| found.len() > n) {
        fake.record(METHOD, 502, &masked(&form));
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway: buffer overflow").into_response();
    }
    fake.record(METHOD, 200, &masked(&form));
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    xml_answer(
        StatusCode::OK,
        mits("SearchProspects", "Success", None, &found),
    )
}

fn partners_auth(headers: &HeaderMap) -> bool {
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{PARTNER_ID}:{API_KEY}"))
    );
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str())
        && headers
            .get("resman-account-id")
            .and_then(|v| v.to_str().ok())
            == Some(ACCOUNT)
}

async fn prospects(
    State(fake): State<FakeResMan>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    const METHOD: &str = "GET /Prospects";
    let (answer, slow) = faulted(&fake, METHOD, &query, false).await;
    if let Some(a) = answer {
        return a;
    }
    if !partners_auth(&headers) {
        fake.record(METHOD, 401, &query);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Unauthorized"})),
        )
            .into_response();
    }
    let Some(since) = query
        .get("modifiedSince")
        .and_then(|s| syncbridge::providers::resman::wire::parse_time(s))
    else {
        fake.record(METHOD, 400, &query);
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "modifiedSince is required"})),
        )
            .into_response();
    };
    if since > Utc::now() + chrono::Duration::seconds(5) {
        fake.record(METHOD, 400, &query);
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "modifiedSince is in the future"})),
        )
            .into_response();
    }
    let property = query.get("propertyId").cloned().unwrap_or_default();
    let list: Vec<Value> = {
        let inner = fake.inner.lock().unwrap();
        inner
            .prospects
            .iter()
            .filter(|p| p.property_id == property && p.last_modified >= since)
            .map(|p| {
                json!({
                    "prospectId": p.prospect_id, "propertyId": p.property_id,
                    "mainPersonId": p.person_id,
                    "lastModified": p.last_modified.to_rfc3339_opts(SecondsFormat::Millis, true),
                    "prospectSourceName": "Website", "status": p.status,
                    "lostReason": p.lost_reason, "lostDate": null,
                    "people": [{"personId": p.person_id, "firstName": p.first_name, "lastName": p.last_name,
                                "email": p.email, "phone": p.phone, "phoneType": "Mobile",
                                "isMainContact": true}]
                })
            })
            .collect()
    };
    fake.record(METHOD, 200, &query);
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    Json(json!({"prospects": list})).into_response()
}
