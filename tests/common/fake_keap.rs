//! A fake Keap REST v1 API (PROVIDERS.md Part A "Outbound APIs and limits",
//! Part B §2), served at the root of a loopback server: the service is
//! configured with `KEAP_API_URL=<fake.url>` and calls `<fake.url>/contacts/1570`.
//!
//! - Auth: `X-Keap-API-Key: <API_KEY>` or `Authorization: Bearer <API_KEY>`,
//!   else 401. Every request is recorded, refused or not.
//! - Throttle as for a PAT/SAK: at most 5 accepted requests in any 1 s and
//!   240 in any 60 s; over either → 429 with the `x-keap-product-throttle-*`
//!   headers, `Retry-After` and the body Keap's gateway sends.
//! - Faults: the next requests (after auth and the throttle) can fail with a
//!   status, a 429, a slow answer or a dropped connection.
//! - Contacts (get, list, create, patch, upsert, delete), orders, tags and
//!   subscriptions by id, in v1 shapes with v1 dates (`+0000`, no colon).
//! - REST hooks with the `X-Hook-Secret` handshake, and `fire()` to deliver
//!   batched events to verified hooks.
//! - Admin methods (`put_contact`, `edit_contact`, …) change data as a Keap
//!   user would in the app; they are not requests and are not recorded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};

pub const API_KEY: &str = "keap_test_key_0123456789";

/// Accepted requests allowed in any 1 s window (SAK spike arrest, 5/s).
pub const PER_SECOND: usize = 5;
/// Accepted requests allowed in any 60 s window (PAT/SAK, 240/min).
pub const PER_MINUTE: usize = 240;
/// The daily PAT/SAK quota, reported in the quota headers.
pub const PER_DAY: usize = 30_000;
/// Objects in one hook delivery, at most.
pub const MAX_BATCH: usize = 1000;

/// What `GET /hooks/event_keys` lists.
pub const EVENT_KEYS: &[&str] = &[
    "appointment.add",
    "appointment.delete",
    "appointment.edit",
    "contact.add",
    "contact.delete",
    "contact.edit",
    "contactGroup.applied",
    "contactGroup.delete",
    "contactGroup.removed",
    "invoice.add",
    "invoice.delete",
    "invoice.edit",
    "invoice.payment.add",
    "opportunity.add",
    "opportunity.delete",
    "opportunity.edit",
    "order.add",
    "order.delete",
    "order.edit",
    "subscription.add",
    "subscription.delete",
    "subscription.edit",
];

/// Contact fields v1 leaves out unless named in `optional_properties`.
const OPTIONAL_CONTACT_FIELDS: &[&str] = &["custom_fields", "lead_source_id", "job_title"];
/// Contact fields a request cannot set.
const READ_ONLY_CONTACT_FIELDS: &[&str] = &[
    "id",
    "date_created",
    "last_updated",
    "last_updated_utc_millis",
    "ScoreValue",
];
const FIRST_ID: i64 = 1000;
const THROTTLED_BODY: &str =
    r#"{"code":"429","message":"Quota Exceeded","status":"Request Throttled","details":null}"#;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and a v1 error body.
    Status(u16),
    /// 429 with Keap's throttle body and `Retry-After: secs`.
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
    /// The body as JSON; a body that is not JSON is kept as a string.
    pub body: Option<Value>,
    pub at: Instant,
    /// 0 when the connection was dropped.
    pub status: u16,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Contact,
    Order,
    Tag,
    Subscription,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Contact => "Contact",
            Kind::Order => "Order",
            Kind::Tag => "Tag",
            Kind::Subscription => "Subscription",
        }
    }
}

#[derive(Default)]
struct Objects {
    items: BTreeMap<i64, Value>,
    next_id: i64,
}

impl Objects {
    fn assign(&mut self, wanted: Option<i64>) -> i64 {
        let id = wanted.unwrap_or(self.next_id.max(FIRST_ID));
        self.next_id = self.next_id.max(id + 1).max(FIRST_ID);
        id
    }
}

#[derive(Debug, Clone)]
struct Hook {
    key: u64,
    event_key: String,
    hook_url: String,
    status: &'static str,
    /// The last `X-Hook-Secret` sent to the hook URL.
    secret: Option<String>,
}

impl Hook {
    fn json(&self) -> Value {
        json!({"key": self.key.to_string(), "eventKey": self.event_key,
               "hookUrl": self.hook_url, "status": self.status})
    }
}

#[derive(Default)]
struct Inner {
    /// A misbehaving API or proxy: list filters are ignored.
    ignore_filters: bool,
    contacts: Objects,
    orders: Objects,
    tags: Objects,
    subscriptions: Objects,
    hooks: BTreeMap<u64, Hook>,
    next_hook: u64,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    /// Accepted requests of the last 60 s.
    window: VecDeque<Instant>,
    accepted: usize,
    throttled: usize,
    last_stamp: Option<DateTime<Utc>>,
    /// `None`: Keap's limits (5/s, 240/min); tests of other things may
    /// lift them (`set_limits`).
    limits: Option<(usize, usize)>,
    /// The next PATCH of this contact: a Keap user's edit lands first, and
    /// the PATCH is answered only after the delay (applied all the same).
    on_patch: Option<OnPatch>,
}

type ContactEdit = Box<dyn FnOnce(&mut Value) + Send>;
type EditLanded = Box<dyn FnOnce(&Value) + Send>;

struct OnPatch {
    id: i64,
    edit: ContactEdit,
    answer_after: Duration,
    /// Told the contact as the edit left it (its `last_updated` too).
    fired: Option<EditLanded>,
}

enum Admission {
    Unauthorized,
    Throttled {
        retry_after: u64,
    },
    Fault(Fault),
    Pass {
        slow: Option<Duration>,
        minute: usize,
        day: usize,
    },
}

impl Inner {
    fn objects(&mut self, kind: Kind) -> &mut Objects {
        match kind {
            Kind::Contact => &mut self.contacts,
            Kind::Order => &mut self.orders,
            Kind::Tag => &mut self.tags,
            Kind::Subscription => &mut self.subscriptions,
        }
    }

    /// Now to the millisecond, strictly after every stamp issued before.
    fn stamp(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let t = match self.last_stamp {
            Some(last) if now <= last => last + TimeDelta::milliseconds(1),
            _ => now,
        };
        self.last_stamp = Some(t);
        t
    }

    fn admit(&mut self, authorized: bool, now: Instant) -> Admission {
        if !authorized {
            return Admission::Unauthorized;
        }
        while self
            .window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.window.pop_front();
        }
        let last_second = self
            .window
            .iter()
            .rev()
            .take_while(|t| now.saturating_duration_since(**t) < Duration::from_secs(1))
            .count();
        let (per_second, per_minute) = self.limits.unwrap_or((PER_SECOND, PER_MINUTE));
        if last_second >= per_second {
            self.throttled += 1;
            return Admission::Throttled { retry_after: 1 };
        }
        if self.window.len() >= per_minute {
            self.throttled += 1;
            let oldest = *self.window.front().expect("window is full");
            let left =
                Duration::from_secs(60).saturating_sub(now.saturating_duration_since(oldest));
            let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Admission::Throttled {
                retry_after: retry_after.max(1),
            };
        }
        self.window.push_back(now);
        self.accepted += 1;
        match self.faults.pop_front() {
            Some(Fault::Slow(d)) => Admission::Pass {
                slow: Some(d),
                minute: self.window.len(),
                day: self.accepted,
            },
            Some(fault) => Admission::Fault(fault),
            None => Admission::Pass {
                slow: None,
                minute: self.window.len(),
                day: self.accepted,
            },
        }
    }

    fn put(&mut self, kind: Kind, value: Value) -> Value {
        let Value::Object(mut m) = value else {
            panic!("fake Keap: a {} must be a JSON object", kind.noun());
        };
        let wanted = m.get("id").filter(|v| !v.is_null()).map(|v| {
            v.as_i64()
                .unwrap_or_else(|| panic!("fake Keap: {} id must be an integer", kind.noun()))
        });
        let stamp = self.stamp();
        let objects = self.objects(kind);
        let id = objects.assign(wanted);
        m.insert("id".into(), json!(id));
        let prev = objects.items.get(&id).cloned();
        normalize(kind, &mut m, prev.as_ref(), stamp);
        let v = Value::Object(m);
        objects.items.insert(id, v.clone());
        v
    }

    fn edit(&mut self, kind: Kind, id: i64, edit: impl FnOnce(&mut Value)) -> Value {
        let stamp = self.stamp();
        let obj = self
            .objects(kind)
            .items
            .get_mut(&id)
            .unwrap_or_else(|| panic!("fake Keap: no {} {id}", kind.noun()));
        edit(obj);
        if let Some(m) = obj.as_object_mut() {
            m.insert("id".into(), json!(id));
            touch(kind, m, stamp);
        }
        obj.clone()
    }
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    m.entry(key.to_owned()).or_insert(value);
}

/// Fills the fields a stored object of this kind always has, and its dates.
fn normalize(kind: Kind, m: &mut Map<String, Value>, prev: Option<&Value>, stamp: DateTime<Utc>) {
    let created = |field: &str| {
        prev.and_then(|p| p.get(field))
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or_else(|| json!(keap_date(stamp)))
    };
    match kind {
        Kind::Contact => {
            for k in [
                "given_name",
                "family_name",
                "middle_name",
                "company",
                "owner_id",
                "ScoreValue",
                "lead_source_id",
                "job_title",
            ] {
                set_default(m, k, Value::Null);
            }
            for k in [
                "email_addresses",
                "phone_numbers",
                "addresses",
                "tag_ids",
                "custom_fields",
            ] {
                set_default(m, k, json!([]));
            }
            set_default(m, "email_opted_in", json!(false));
            set_default(m, "email_status", json!("NonMarketable"));
            if m.get("date_created").is_none_or(Value::is_null) {
                m.insert("date_created".into(), created("date_created"));
            }
        }
        Kind::Order => {
            set_default(m, "title", json!(""));
            set_default(m, "status", json!("UNPAID"));
            set_default(m, "recurring", json!(false));
            set_default(m, "contact", Value::Null);
            set_default(m, "notes", Value::Null);
            set_default(m, "terms", Value::Null);
            set_default(m, "order_items", json!([]));
            set_default(m, "total", json!(0.0));
            set_default(m, "total_paid", json!(0.0));
            let due = m["total"].as_f64().unwrap_or(0.0) - m["total_paid"].as_f64().unwrap_or(0.0);
            set_default(m, "total_due", json!(due));
            set_default(m, "refund_total", json!(0.0));
            if m.get("creation_date").is_none_or(Value::is_null) {
                m.insert("creation_date".into(), created("creation_date"));
            }
            let creation = m["creation_date"].clone();
            set_default(m, "order_date", creation);
        }
        Kind::Tag => {
            set_default(m, "name", json!(""));
            set_default(m, "description", Value::Null);
            set_default(m, "category", Value::Null);
        }
        Kind::Subscription => {
            for k in [
                "contact_id",
                "product_id",
                "subscription_plan_id",
                "end_date",
                "next_bill_date",
            ] {
                set_default(m, k, Value::Null);
            }
            let active = match (m.get("active").and_then(Value::as_bool), m.get("status")) {
                (Some(a), _) => a,
                (None, Some(s)) => s == "Active",
                (None, None) => true,
            };
            set_default(m, "active", json!(active));
            set_default(
                m,
                "status",
                json!(if active { "Active" } else { "Inactive" }),
            );
            set_default(m, "billing_amount", json!(0.0));
            set_default(m, "billing_cycle", json!("MONTH"));
            set_default(m, "billing_frequency", json!(1));
            set_default(m, "quantity", json!(1));
            set_default(m, "auto_charge", json!(true));
            set_default(m, "start_date", json!(stamp.format("%Y-%m-%d").to_string()));
        }
    }
    touch(kind, m, stamp);
}

/// Marks an object changed at `stamp`.
fn touch(kind: Kind, m: &mut Map<String, Value>, stamp: DateTime<Utc>) {
    match kind {
        Kind::Contact => {
            m.insert("last_updated".into(), json!(keap_date(stamp)));
            m.insert(
                "last_updated_utc_millis".into(),
                json!(stamp.timestamp_millis()),
            );
        }
        Kind::Order => {
            m.insert("modification_date".into(), json!(keap_date(stamp)));
        }
        Kind::Tag | Kind::Subscription => {}
    }
}

/// A date as Keap v1 writes it: `2025-03-14T16:20:31.000+0000`.
pub fn keap_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Parses a Keap v1 date, RFC 3339, a date-time without offset (UTC) or a
/// bare date.
pub fn parse_keap_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[derive(Clone)]
pub struct FakeKeap {
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
    pub url: String,
}

impl FakeKeap {
    pub async fn start() -> FakeKeap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeKeap {
            inner: Arc::default(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            url: format!("http://{}", listener.local_addr().unwrap()),
        };
        let app = Router::new().fallback(handle).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A dropped connection panics a handler; never while holding this.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a hook's status as Keap would after failed deliveries
    /// (`Inactive`).
    pub fn set_hook_status(&self, key: &str, status: &'static str) {
        let Ok(key) = key.parse::<u64>() else { return };
        if let Some(h) = self.lock().hooks.get_mut(&key) {
            h.status = status;
        }
    }

    /// Replaces Keap's rate limits (for tests that drive many requests and
    /// test something else).
    /// From now on the contact list ignores its filters (as a broken proxy
    /// or API would) and answers every contact.
    pub fn ignore_filters(&self) {
        self.lock().ignore_filters = true;
    }

    pub fn set_limits(&self, per_second: usize, per_minute: usize) {
        self.lock().limits = Some((per_second, per_minute));
    }

    /// The next requests (after auth and the throttle) fail as given, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Non-GET requests that succeeded (status < 300).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET" && (1..300).contains(&r.status))
            .collect()
    }

    /// GET requests to exactly this path (no query), whatever their status.
    pub fn gets_of(&self, path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method == "GET" && r.path == path)
            .count()
    }

    /// Requests the throttle refused with 429 (not counting injected 429s).
    pub fn throttled(&self) -> usize {
        self.lock().throttled
    }

    /// The most recorded requests (any status) that arrived within any
    /// window of this length.
    pub fn max_requests_in(&self, window: Duration) -> usize {
        let mut at: Vec<Instant> = self.lock().requests.iter().map(|r| r.at).collect();
        at.sort();
        let (mut best, mut first) = (0, 0);
        for last in 0..at.len() {
            while at[last].duration_since(at[first]) >= window {
                first += 1;
            }
            best = best.max(last - first + 1);
        }
        best
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
            "fake Keap: timed out waiting for {what}; got {:#?}",
            self.requests()
        );
    }

    // ---- admin: data changed as a Keap user would, not through HTTP ----

    /// Inserts or replaces a contact (v1 shape). Missing `id` → the next id
    /// (from 1000); missing fields get their v1 defaults; `date_created` is
    /// kept or set, `last_updated` set to now. Returns the stored contact.
    pub fn put_contact(&self, c: Value) -> Value {
        self.lock().put(Kind::Contact, c)
    }

    /// The next PATCH of contact `id` finds `edit` made by a Keap user just
    /// before it (between a push's read and its write), is applied over it,
    /// and is answered only after `answer_after` (a client timing out then
    /// does not know it landed).
    pub fn on_next_patch(
        &self,
        id: i64,
        edit: impl FnOnce(&mut Value) + Send + 'static,
        answer_after: Duration,
    ) {
        self.lock().on_patch = Some(OnPatch {
            id,
            edit: Box::new(edit),
            answer_after,
            fired: None,
        });
    }

    /// As [`on_next_patch`](Self::on_next_patch), and `fired` is told the
    /// contact as the edit left it, when (if ever) it lands. A hook armed
    /// while another waits replaces it (that edit never happens).
    pub fn on_next_patch_then(
        &self,
        id: i64,
        edit: impl FnOnce(&mut Value) + Send + 'static,
        answer_after: Duration,
        fired: impl FnOnce(&Value) + Send + 'static,
    ) {
        self.lock().on_patch = Some(OnPatch {
            id,
            edit: Box::new(edit),
            answer_after,
            fired: Some(Box::new(fired)),
        });
    }

    /// Applies `edit` to a stored contact and bumps its `last_updated`.
    pub fn edit_contact(&self, id: i64, edit: impl FnOnce(&mut Value)) -> Value {
        self.lock().edit(Kind::Contact, id, edit)
    }

    /// Edits a contact without moving its `last_updated`, as Keap does for
    /// two edits within one tick of its timestamps.
    pub fn edit_contact_in_the_same_tick(&self, id: i64, edit: impl FnOnce(&mut Value)) -> Value {
        let mut inner = self.lock();
        let obj = inner
            .contacts
            .items
            .get_mut(&id)
            .unwrap_or_else(|| panic!("fake Keap: no contact {id}"));
        edit(obj);
        obj.clone()
    }

    pub fn delete_contact(&self, id: i64) {
        self.lock().contacts.items.remove(&id);
    }

    /// The stored contact, with every field (also the optional ones).
    pub fn contact(&self, id: i64) -> Option<Value> {
        self.lock().contacts.items.get(&id).cloned()
    }

    /// All stored contacts, by id.
    pub fn contacts(&self) -> Vec<Value> {
        self.lock().contacts.items.values().cloned().collect()
    }

    /// Inserts or replaces an order; sets `creation_date` if missing and
    /// `modification_date` to now.
    pub fn put_order(&self, o: Value) -> Value {
        self.lock().put(Kind::Order, o)
    }

    /// Applies `edit` to a stored order and bumps its `modification_date`.
    pub fn edit_order(&self, id: i64, edit: impl FnOnce(&mut Value)) -> Value {
        self.lock().edit(Kind::Order, id, edit)
    }

    pub fn delete_order(&self, id: i64) {
        self.lock().orders.items.remove(&id);
    }

    pub fn order(&self, id: i64) -> Option<Value> {
        self.lock().orders.items.get(&id).cloned()
    }

    pub fn orders(&self) -> Vec<Value> {
        self.lock().orders.items.values().cloned().collect()
    }

    pub fn put_tag(&self, t: Value) -> Value {
        self.lock().put(Kind::Tag, t)
    }

    pub fn edit_tag(&self, id: i64, edit: impl FnOnce(&mut Value)) -> Value {
        self.lock().edit(Kind::Tag, id, edit)
    }

    pub fn delete_tag(&self, id: i64) {
        self.lock().tags.items.remove(&id);
    }

    pub fn tag(&self, id: i64) -> Option<Value> {
        self.lock().tags.items.get(&id).cloned()
    }

    pub fn tags(&self) -> Vec<Value> {
        self.lock().tags.items.values().cloned().collect()
    }

    pub fn put_subscription(&self, s: Value) -> Value {
        self.lock().put(Kind::Subscription, s)
    }

    pub fn edit_subscription(&self, id: i64, edit: impl FnOnce(&mut Value)) -> Value {
        self.lock().edit(Kind::Subscription, id, edit)
    }

    pub fn delete_subscription(&self, id: i64) {
        self.lock().subscriptions.items.remove(&id);
    }

    pub fn subscription(&self, id: i64) -> Option<Value> {
        self.lock().subscriptions.items.get(&id).cloned()
    }

    pub fn subscriptions(&self) -> Vec<Value> {
        self.lock().subscriptions.items.values().cloned().collect()
    }

    /// The hook subscriptions, as `GET /hooks` shows them.
    pub fn hooks(&self) -> Vec<Value> {
        self.lock().hooks.values().map(Hook::json).collect()
    }

    fn hook_json(&self, key: u64) -> Option<Value> {
        self.lock().hooks.get(&key).map(Hook::json)
    }

    /// The last `X-Hook-Secret` sent for the hook with this key.
    pub fn hook_secret(&self, key: &str) -> Option<String> {
        let k: u64 = key.parse().ok()?;
        self.lock().hooks.get(&k).and_then(|h| h.secret.clone())
    }

    // ---- test control ----

    /// Delivers `event_key` for `ids` to every Verified hook of that key, in
    /// batches of at most 1000 objects, one POST per batch and hook; returns
    /// the statuses (0: no answer). A 410 makes the hook Inactive.
    pub async fn fire(&self, event_key: &str, ids: &[i64]) -> Vec<u16> {
        let hooks: Vec<(u64, String)> = self
            .lock()
            .hooks
            .values()
            .filter(|h| h.event_key == event_key && h.status == "Verified")
            .map(|h| (h.key, h.hook_url.clone()))
            .collect();
        let prefix = event_key.split('.').next().unwrap_or(event_key);
        let (object_type, collection) = match prefix {
            "contact" => ("contact", "contacts".to_owned()),
            "contactGroup" => ("tag", "tags".to_owned()),
            "order" => ("order", "orders".to_owned()),
            "subscription" => ("subscription", "subscriptions".to_owned()),
            other => (other, format!("{other}s")),
        };
        let mut statuses = Vec::new();
        for (key, hook_url) in hooks {
            for chunk in ids.chunks(MAX_BATCH) {
                let timestamp = keap_date(Utc::now());
                let object_keys: Vec<Value> = chunk
                    .iter()
                    .map(|id| {
                        json!({"id": id, "apiUrl": format!("{}/{collection}/{id}", self.url),
                               "timestamp": timestamp})
                    })
                    .collect();
                let body = json!({"event_key": event_key, "object_type": object_type,
                                  "object_keys": object_keys});
                let status = match self.http.post(&hook_url).json(&body).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                statuses.push(status);
                if status == 410 {
                    if let Some(h) = self.lock().hooks.get_mut(&key) {
                        h.status = "Inactive";
                    }
                    break;
                }
            }
        }
        statuses
    }

    /// Sends the `X-Hook-Secret` handshake to the hook's URL; Verified if it
    /// answers 200 echoing the secret. None if the hook is gone.
    async fn handshake(&self, key: u64) -> Option<Value> {
        let secret = uuid::Uuid::new_v4().to_string();
        let url = {
            let mut inner = self.lock();
            let hook = inner.hooks.get_mut(&key)?;
            hook.secret = Some(secret.clone());
            hook.hook_url.clone()
        };
        let echoed = match self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hook-secret", &secret)
            .send()
            .await
        {
            Ok(r) => {
                r.status() == StatusCode::OK
                    && r.headers()
                        .get("x-hook-secret")
                        .and_then(|v| v.to_str().ok())
                        == Some(secret.as_str())
            }
            Err(_) => false,
        };
        let mut inner = self.lock();
        let hook = inner.hooks.get_mut(&key)?;
        if echoed {
            hook.status = "Verified";
        } else if hook.status != "Inactive" {
            hook.status = "Unverified";
        }
        Some(hook.json())
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "code": status.as_u16(),
                    "status": status.canonical_reason(), "details": []})),
    )
        .into_response()
}

fn not_found(kind: Kind, id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("{} with id {id} not found", kind.noun()),
    )
}

fn throttled_response(retry_after: u64) -> Response {
    let mut r = (StatusCode::TOO_MANY_REQUESTS, THROTTLED_BODY).into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-keap-product-throttle-limit", PER_MINUTE.into());
    h.insert("x-keap-product-throttle-available", 0.into());
    h.insert(
        "x-keap-product-throttle-time-unit",
        HeaderValue::from_static("minute"),
    );
    h.insert("x-keap-product-throttle-interval", 1.into());
    h.insert("retry-after", retry_after.into());
    r
}

fn authorized(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = header("x-keap-api-key") == Some(API_KEY);
    let bearer = header("authorization")
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && token == API_KEY);
    key || bearer
}

/// Auth, throttle, faults and recording around every route.
async fn handle(
    State(fake): State<FakeKeap>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: HashMap<String, String> = Query::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
        )
    };
    let authorized = authorized(&headers);
    // Arrival time taken under the lock, so the throttle window stays sorted.
    let (admission, at) = {
        let mut inner = fake.lock();
        let at = Instant::now();
        (inner.admit(authorized, at), at)
    };
    let record = |status: u16| {
        fake.lock().requests.push(Recorded {
            method: method.as_str().to_owned(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
            at,
            status,
        })
    };
    let (slow, minute, day) = match admission {
        Admission::Unauthorized => {
            record(401);
            return error(StatusCode::UNAUTHORIZED, "Invalid Access Token");
        }
        Admission::Throttled { retry_after } => {
            record(429);
            return throttled_response(retry_after);
        }
        Admission::Fault(Fault::Status(s)) => {
            record(s);
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, "Injected failure");
        }
        Admission::Fault(Fault::RateLimited(secs)) => {
            record(429);
            return throttled_response(secs);
        }
        Admission::Fault(_) => {
            record(0);
            // Hyper closes the connection without a response when the
            // handler's task panics.
            panic!("fake Keap: dropping the connection as instructed");
        }
        Admission::Pass { slow, minute, day } => (slow, minute, day),
    };
    let mut response = route(&fake, &method, &path, &query, body.as_ref(), &headers).await;
    let h = response.headers_mut();
    h.insert("x-keap-product-throttle-limit", PER_MINUTE.into());
    h.insert(
        "x-keap-product-throttle-available",
        PER_MINUTE.saturating_sub(minute).into(),
    );
    h.insert("x-keap-product-throttle-used", minute.into());
    h.insert(
        "x-keap-product-throttle-time-unit",
        HeaderValue::from_static("minute"),
    );
    h.insert("x-keap-product-throttle-interval", 1.into());
    h.insert("x-keap-product-quota-limit", PER_DAY.into());
    h.insert(
        "x-keap-product-quota-available",
        PER_DAY.saturating_sub(day).into(),
    );
    h.insert("x-keap-product-quota-used", day.into());
    h.insert(
        "x-keap-product-quota-time-unit",
        HeaderValue::from_static("day"),
    );
    h.insert("x-keap-product-quota-interval", 1.into());
    record(response.status().as_u16());
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    response
}

async fn route(
    fake: &FakeKeap,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: Option<&Value>,
    headers: &HeaderMap,
) -> Response {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let m = method.as_str();
    match (m, segs.as_slice()) {
        ("GET", ["contacts"]) => list_contacts(fake, query),
        ("POST", ["contacts"]) => create_contact(fake, body),
        ("PUT", ["contacts"]) => upsert_contact(fake, body),
        ("GET", ["contacts", id]) => with_id(Kind::Contact, id, |id| {
            match fake.lock().contacts.items.get(&id) {
                Some(c) => Json(visible(c, &optional_properties(query))).into_response(),
                None => not_found(Kind::Contact, &id.to_string()),
            }
        }),
        ("PATCH", ["contacts", id]) => {
            let hook = id.parse::<i64>().ok().and_then(|n| {
                let mut inner = fake.lock();
                match inner.on_patch.take() {
                    Some(h) if h.id == n => {
                        let edited = inner.edit(Kind::Contact, n, h.edit);
                        if let Some(fired) = h.fired {
                            fired(&edited);
                        }
                        Some(h.answer_after)
                    }
                    other => {
                        inner.on_patch = other;
                        None
                    }
                }
            });
            let response = with_id(Kind::Contact, id, |id| patch_contact(fake, id, query, body));
            if let Some(d) = hook {
                tokio::time::sleep(d).await;
            }
            response
        }
        ("DELETE", ["contacts", id]) => with_id(Kind::Contact, id, |id| {
            match fake.lock().contacts.items.remove(&id) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => not_found(Kind::Contact, &id.to_string()),
            }
        }),
        ("GET", [collection @ ("orders" | "tags" | "subscriptions"), id]) => {
            let kind = match *collection {
                "orders" => Kind::Order,
                "tags" => Kind::Tag,
                _ => Kind::Subscription,
            };
            with_id(kind, id, |id| {
                match fake.lock().objects(kind).items.get(&id) {
                    Some(o) => Json(o.clone()).into_response(),
                    None => not_found(kind, &id.to_string()),
                }
            })
        }
        ("GET", ["hooks", "event_keys"]) => Json(EVENT_KEYS).into_response(),
        ("GET", ["hooks"]) => Json(fake.hooks()).into_response(),
        ("POST", ["hooks"]) => {
            let (event_key, hook_url) = match hook_request(body) {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            let key = {
                let mut inner = fake.lock();
                inner.next_hook += 1;
                let key = inner.next_hook;
                inner.hooks.insert(
                    key,
                    Hook {
                        key,
                        event_key,
                        hook_url,
                        status: "Unverified",
                        secret: None,
                    },
                );
                key
            };
            hook_response(fake.handshake(key).await, key)
        }
        (_, ["hooks", key]) if matches!(m, "GET" | "PUT" | "DELETE") => {
            let Ok(k) = key.parse::<u64>() else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("Hook with key {key} not found"),
                );
            };
            match m {
                "GET" => hook_response(fake.hook_json(k), k),
                "DELETE" => {
                    let removed = fake.lock().hooks.remove(&k);
                    match removed {
                        Some(_) => StatusCode::NO_CONTENT.into_response(),
                        None => hook_response(None, k),
                    }
                }
                _ => {
                    let (event_key, hook_url) = match hook_request(body) {
                        Ok(r) => r,
                        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                    };
                    let reverify = {
                        let mut inner = fake.lock();
                        let Some(hook) = inner.hooks.get_mut(&k) else {
                            return hook_response(None, k);
                        };
                        let moved = hook.hook_url != hook_url;
                        hook.event_key = event_key;
                        hook.hook_url = hook_url;
                        moved
                    };
                    let hook = if reverify {
                        fake.handshake(k).await
                    } else {
                        fake.hook_json(k)
                    };
                    hook_response(hook, k)
                }
            }
        }
        ("POST", ["hooks", key, "verify"]) => match key.parse::<u64>() {
            Ok(k) => hook_response(fake.handshake(k).await, k),
            Err(_) => error(
                StatusCode::NOT_FOUND,
                &format!("Hook with key {key} not found"),
            ),
        },
        ("POST", ["hooks", key, "delayedVerify"]) => {
            let Ok(k) = key.parse::<u64>() else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("Hook with key {key} not found"),
                );
            };
            let given = headers.get("x-hook-secret").and_then(|v| v.to_str().ok());
            let mut inner = fake.lock();
            let Some(hook) = inner.hooks.get_mut(&k) else {
                return hook_response(None, k);
            };
            match (given, hook.secret.as_deref()) {
                (None, _) => error(
                    StatusCode::BAD_REQUEST,
                    "The X-Hook-Secret header is required",
                ),
                (Some(g), Some(s)) if g == s => {
                    hook.status = "Verified";
                    Json(hook.json()).into_response()
                }
                _ => error(
                    StatusCode::BAD_REQUEST,
                    "X-Hook-Secret does not match the secret sent",
                ),
            }
        }
        (_, segs) if known_path(segs) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        }
        _ => error(StatusCode::NOT_FOUND, &format!("No resource at {path}")),
    }
}

fn known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["contacts"]
            | ["contacts", _]
            | ["orders" | "tags" | "subscriptions", _]
            | ["hooks"]
            | ["hooks", _]
            | ["hooks", _, "verify" | "delayedVerify"]
    )
}

fn with_id(kind: Kind, raw: &str, f: impl FnOnce(i64) -> Response) -> Response {
    match raw.parse::<i64>() {
        Ok(id) => f(id),
        Err(_) => error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid {} id: {raw}", kind.noun().to_lowercase()),
        ),
    }
}

fn hook_response(hook: Option<Value>, key: u64) -> Response {
    match hook {
        Some(h) => Json(h).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("Hook with key {key} not found"),
        ),
    }
}

/// `{eventKey, hookUrl}` from a hook create/update body.
fn hook_request(body: Option<&Value>) -> Result<(String, String), String> {
    let bad = |m: &str| Err(m.to_owned());
    let Some(b) = body.filter(|b| b.is_object()) else {
        return bad("A JSON body {eventKey, hookUrl} is required");
    };
    let Some(event_key) = b.get("eventKey").and_then(Value::as_str) else {
        return bad("eventKey is required");
    };
    if !EVENT_KEYS.contains(&event_key) {
        return bad(&format!("Invalid eventKey: {event_key}"));
    }
    let Some(hook_url) = b.get("hookUrl").and_then(Value::as_str) else {
        return bad("hookUrl is required");
    };
    match reqwest::Url::parse(hook_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => return bad(&format!("Invalid hookUrl: {hook_url}")),
    }
    Ok((event_key.to_owned(), hook_url.to_owned()))
}

fn optional_properties(query: &HashMap<String, String>) -> Vec<String> {
    query
        .get("optional_properties")
        .map(|s| {
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A stored contact as v1 returns it: the optional fields only if asked for.
fn visible(c: &Value, optional: &[String]) -> Value {
    let mut c = c.clone();
    if let Some(m) = c.as_object_mut() {
        for f in OPTIONAL_CONTACT_FIELDS {
            if !optional.iter().any(|o| o == f) {
                m.remove(*f);
            }
        }
    }
    c
}

fn field_of(item: &Value) -> Option<&str> {
    item.get("field").and_then(Value::as_str)
}

fn email1(c: &Value) -> Option<String> {
    c.get("email_addresses")?
        .as_array()?
        .iter()
        .find(|e| field_of(e) == Some("EMAIL1"))
        .and_then(|e| e.get("email")?.as_str())
        .map(str::to_lowercase)
}

fn has_email(c: &Value, email: &str) -> bool {
    c["email_addresses"].as_array().is_some_and(|list| {
        list.iter().any(|e| {
            e.get("email")
                .and_then(Value::as_str)
                .is_some_and(|x| x.eq_ignore_ascii_case(email))
        })
    })
}

/// Checks a contact body as v1 would; returns the message of a 400.
fn validate_contact(m: &Map<String, Value>) -> Result<(), String> {
    let list = |key: &str, fields: &[&str], value_key: &str| -> Result<(), String> {
        let Some(v) = m.get(key) else { return Ok(()) };
        let Some(items) = v.as_array() else {
            return Err(format!("{key} must be an array"));
        };
        let mut seen = Vec::new();
        for item in items {
            let Some(field) = field_of(item) else {
                return Err(format!("{key}[].field is required"));
            };
            if !fields.contains(&field) {
                return Err(format!("Invalid {key}[].field: {field}"));
            }
            if seen.contains(&field) {
                return Err(format!("Duplicate {key}[].field: {field}"));
            }
            seen.push(field);
            if !value_key.is_empty() && !item.get(value_key).is_some_and(Value::is_string) {
                return Err(format!("{key}[].{value_key} is required"));
            }
        }
        Ok(())
    };
    list("email_addresses", &["EMAIL1", "EMAIL2", "EMAIL3"], "email")?;
    list(
        "phone_numbers",
        &["PHONE1", "PHONE2", "PHONE3", "PHONE4", "PHONE5"],
        "number",
    )?;
    list("addresses", &["BILLING", "SHIPPING", "OTHER"], "")?;
    if let Some(emails) = m.get("email_addresses").and_then(Value::as_array) {
        for e in emails {
            let email = e["email"].as_str().unwrap_or_default();
            if !email.contains('@') {
                return Err(format!("Invalid email address: {email}"));
            }
        }
    }
    if let Some(c) = m.get("company").filter(|c| !c.is_null()) {
        if !c.get("id").is_some_and(Value::is_i64) {
            return Err("company.id must be an integer".into());
        }
    }
    if let Some(t) = m.get("tag_ids") {
        if !t.as_array().is_some_and(|a| a.iter().all(Value::is_i64)) {
            return Err("tag_ids must be an array of integers".into());
        }
    }
    if let Some(cf) = m.get("custom_fields") {
        let ok = cf
            .as_array()
            .is_some_and(|a| a.iter().all(|f| f.get("id").is_some_and(Value::is_i64)));
        if !ok {
            return Err("custom_fields must be an array of {id, content}".into());
        }
    }
    Ok(())
}

fn contact_body(body: Option<&Value>) -> Result<Map<String, Value>, String> {
    let Some(Value::Object(m)) = body else {
        return Err("A JSON object body is required".into());
    };
    validate_contact(m)?;
    Ok(m.clone())
}

/// What a create needs: an email, a phone number or a given name.
fn creatable(m: &Map<String, Value>) -> bool {
    let non_empty = |k: &str| {
        m.get(k)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    non_empty("email_addresses")
        || non_empty("phone_numbers")
        || m.get("given_name")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
}

/// Sets the given top-level fields (arrays replaced, custom fields merged
/// by id, as v1 does), skipping read-only ones.
fn merge_contact(stored: &mut Value, patch: &Map<String, Value>, mask: Option<&[String]>) {
    for (k, v) in patch {
        if READ_ONLY_CONTACT_FIELDS.contains(&k.as_str()) {
            continue;
        }
        if mask.is_some_and(|m| !m.iter().any(|f| f == k)) {
            continue;
        }
        if k == "custom_fields" {
            let mut fields = stored[k].as_array().cloned().unwrap_or_default();
            for new in v.as_array().into_iter().flatten() {
                match fields.iter_mut().find(|f| f["id"] == new["id"]) {
                    Some(f) => *f = new.clone(),
                    None => fields.push(new.clone()),
                }
            }
            stored[k] = Value::Array(fields);
        } else {
            stored[k.as_str()] = v.clone();
        }
    }
}

fn create_contact(fake: &FakeKeap, body: Option<&Value>) -> Response {
    let mut m = match contact_body(body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    if !creatable(&m) {
        return error(
            StatusCode::BAD_REQUEST,
            "A contact needs an email address, a phone number or a given name",
        );
    }
    for k in READ_ONLY_CONTACT_FIELDS {
        m.remove(*k);
    }
    let c = fake.lock().put(Kind::Contact, Value::Object(m));
    (StatusCode::CREATED, Json(c)).into_response()
}

fn patch_contact(
    fake: &FakeKeap,
    id: i64,
    query: &HashMap<String, String>,
    body: Option<&Value>,
) -> Response {
    let m = match contact_body(body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let mask: Option<Vec<String>> = query
        .get("update_mask")
        .map(|s| s.split(',').map(|f| f.trim().to_owned()).collect());
    let mut inner = fake.lock();
    if !inner.contacts.items.contains_key(&id) {
        return not_found(Kind::Contact, &id.to_string());
    }
    let c = inner.edit(Kind::Contact, id, |c| merge_contact(c, &m, mask.as_deref()));
    Json(c).into_response()
}

fn upsert_contact(fake: &FakeKeap, body: Option<&Value>) -> Response {
    let mut m = match contact_body(body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let option = match m.remove("duplicate_option") {
        None | Some(Value::Null) => "Email".to_owned(),
        Some(Value::String(s)) if s == "Email" || s == "EmailAndName" => s,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid duplicate_option: {other}"),
            )
        }
    };
    let probe = Value::Object(m.clone());
    let email = email1(&probe);
    let name = |c: &Value, k: &str| c[k].as_str().unwrap_or_default().to_lowercase();
    let mut inner = fake.lock();
    let found = email.and_then(|e| {
        inner
            .contacts
            .items
            .values()
            .find(|c| {
                email1(c).as_deref() == Some(e.as_str())
                    && (option == "Email"
                        || (name(c, "given_name") == name(&probe, "given_name")
                            && name(c, "family_name") == name(&probe, "family_name")))
            })
            .and_then(|c| c["id"].as_i64())
    });
    match found {
        Some(id) => {
            let c = inner.edit(Kind::Contact, id, |c| merge_contact(c, &m, None));
            Json(c).into_response()
        }
        None if !creatable(&m) => error(
            StatusCode::BAD_REQUEST,
            "A contact needs an email address, a phone number or a given name",
        ),
        None => {
            for k in READ_ONLY_CONTACT_FIELDS {
                m.remove(*k);
            }
            let c = inner.put(Kind::Contact, Value::Object(m));
            (StatusCode::CREATED, Json(c)).into_response()
        }
    }
}

fn list_contacts(fake: &FakeKeap, q: &HashMap<String, String>) -> Response {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, &m);
    let number = |k: &str, default: usize| match q.get(k) {
        None => Ok(default),
        Some(s) => s.parse::<usize>().map_err(|_| format!("Invalid {k}: {s}")),
    };
    let (limit, offset) = match (number("limit", 1000), number("offset", 0)) {
        (Ok(l), Ok(o)) => (l.clamp(1, 1000), o),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let date = |k: &str| match q.get(k) {
        None => Ok(None),
        Some(s) => parse_keap_date(s)
            .map(|t| Some(t.timestamp_millis()))
            .ok_or_else(|| format!("Invalid {k}: {s}")),
    };
    let (since, until) = match (date("since"), date("until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let order = q.get("order").map(|s| s.to_lowercase());
    if let Some(o) = &order {
        if !matches!(
            o.as_str(),
            "id" | "date_created" | "last_updated" | "name" | "email"
        ) {
            return bad(format!("Invalid order: {o}"));
        }
    }
    let descending = match q.get("order_direction").map(|s| s.to_uppercase()) {
        None => false,
        Some(d) if d == "ASCENDING" => false,
        Some(d) if d == "DESCENDING" => true,
        Some(d) => return bad(format!("Invalid order_direction: {d}")),
    };
    let text = |c: &Value, k: &str| c[k].as_str().unwrap_or_default().to_lowercase();
    let optional = optional_properties(q);

    let inner = fake.lock();
    let mut matched: Vec<&Value> = inner
        .contacts
        .items
        .values()
        .filter(|c| inner.ignore_filters || q.get("email").is_none_or(|e| has_email(c, e)))
        .filter(|c| {
            q.get("given_name")
                .is_none_or(|n| text(c, "given_name") == n.to_lowercase())
        })
        .filter(|c| {
            q.get("family_name")
                .is_none_or(|n| text(c, "family_name") == n.to_lowercase())
        })
        .filter(|c| {
            let t = c["last_updated_utc_millis"].as_i64().unwrap_or(0);
            since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
        })
        .collect();
    let millis = |c: &Value, k: &str| {
        c[k].as_str()
            .and_then(parse_keap_date)
            .map_or(0, |t| t.timestamp_millis())
    };
    matched.sort_by(|a, b| {
        let by = match order.as_deref() {
            Some("date_created") => millis(a, "date_created").cmp(&millis(b, "date_created")),
            Some("last_updated") => millis(a, "last_updated").cmp(&millis(b, "last_updated")),
            Some("name") => (text(a, "family_name"), text(a, "given_name"))
                .cmp(&(text(b, "family_name"), text(b, "given_name"))),
            Some("email") => email1(a).cmp(&email1(b)),
            _ => std::cmp::Ordering::Equal,
        };
        let by = by.then(a["id"].as_i64().cmp(&b["id"].as_i64()));
        if descending {
            by.reverse()
        } else {
            by
        }
    });
    let count = matched.len();
    let page: Vec<Value> = matched
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| visible(c, &optional))
        .collect();
    let page_url = |offset: usize| {
        let mut params: Vec<(String, String)> = vec![
            ("limit".into(), limit.to_string()),
            ("offset".into(), offset.to_string()),
        ];
        let mut rest: Vec<(&String, &String)> = q
            .iter()
            .filter(|(k, _)| *k != "limit" && *k != "offset")
            .collect();
        rest.sort();
        params.extend(rest.into_iter().map(|(k, v)| (k.clone(), v.clone())));
        reqwest::Url::parse_with_params(&format!("{}/contacts/", fake.url), &params)
            .map(|u| u.to_string())
            .unwrap_or_default()
    };
    let next = (offset + limit < count).then(|| page_url(offset + limit));
    let previous = (offset > 0).then(|| page_url(offset.saturating_sub(limit)));
    Json(json!({"contacts": page, "count": count, "next": next, "previous": previous}))
        .into_response()
}
