//! Teli's writes and reads: the router's apply of a pulled call (business
//! by agent, customer by phone, one message per call, one audit row), and
//! the lookups the pull and its audit make.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use uuid::Uuid;

use super::wire::Detail;
use crate::apply::checked::Upserted;
use crate::apply::Applied;
use crate::db::DbError;
use crate::domain::{E164Phone, ProviderName};
use crate::providers::ApplyCtx;

/// A pulled call ready to write: its business found, its phone parsed, the
/// business's name (from the database, not the extraction) set into its
/// data.
pub struct ReadyCall {
    pub call_id: String,
    version: String,
    business_id: Uuid,
    business_name: Option<String>,
    /// E.164: the customer's key beside the business.
    pub phone: String,
    name: Option<String>,
    started: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    data: Value,
}

impl ReadyCall {
    /// The customer the call belongs to.
    pub fn customer(&self) -> (Uuid, &str) {
        (self.business_id, &self.phone)
    }

    /// Why a call older than the stored one changes nothing.
    pub fn stale(&self) -> String {
        format!(
            "call {} at {:?} is not newer than the stored one",
            self.call_id, self.version
        )
    }
}

/// The business (id, name) of each of these agent ids that has one.
pub async fn businesses(
    db: &impl GenericClient,
    agents: &[&str],
) -> Result<HashMap<String, (Uuid, Option<String>)>, DbError> {
    let stmt = db
        .prepare_cached(
            "SELECT teli_agent_id, id, name FROM businesses WHERE teli_agent_id = ANY($1)",
        )
        .await?;
    let rows = db.query(&stmt, &[&agents]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// A pulled call's agent ids, when it parses (what [`ready`] looks up).
pub fn agents_of(call: &Value) -> Vec<String> {
    Detail::parse(call)
        .map(|d| d.listed.agents().into_iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A pulled call made ready to write against the businesses known for its
/// agents (its first agent that has one), or why it is ignored.
pub fn ready(
    call: &Value,
    businesses: &HashMap<String, (Uuid, Option<String>)>,
) -> Result<ReadyCall, Applied> {
    let detail = match Detail::parse(call) {
        Ok(d) => d,
        Err(why) => return Err(Applied::Ignored(format!("not a Teli call: {why}"))),
    };
    let agents = detail.listed.agents();
    if agents.is_empty() {
        return Err(Applied::Ignored("the call names no agent".into()));
    }
    let Some((business_id, business_name)) = agents.iter().find_map(|a| businesses.get(*a)) else {
        return Err(Applied::Ignored(format!(
            "unknown agent: no business has teli_agent_id {}",
            agents.join(" or ")
        )));
    };
    let Some(phone) = detail.phone.as_deref().and_then(E164Phone::parse) else {
        return Err(Applied::Ignored(match &detail.phone {
            Some(p) => format!("no phone number: {p:?} is not a phone number"),
            None => "no phone number: the call has no caller number".into(),
        }));
    };
    // The business's name from the database, not the extraction.
    let mut data = call.clone();
    if let Some(obj) = data.as_object_mut() {
        let fields = obj
            .entry("extracted_fields")
            .or_insert_with(|| Value::Object(Default::default()));
        if !fields.is_object() {
            *fields = Value::Object(Default::default());
        }
        if let Some(f) = fields.as_object_mut() {
            f.insert(
                "business_name".into(),
                business_name.clone().map_or(Value::Null, Value::String),
            );
        }
    }
    Ok(ReadyCall {
        call_id: detail.listed.call_id,
        version: detail.listed.version,
        business_id: *business_id,
        business_name: business_name.clone(),
        phone: phone.as_str().to_owned(),
        name: detail.name,
        started: detail.listed.started,
        updated_at: detail.listed.updated_at,
        data,
    })
}

/// Applies one pulled call in the router's transaction ([`write_calls`]
/// of one).
pub async fn apply_call(ctx: &ApplyCtx<'_, '_>, call: &Value) -> Result<Applied, DbError> {
    let agents = agents_of(call);
    let agents: Vec<&str> = agents.iter().map(String::as_str).collect();
    let known = if agents.is_empty() {
        HashMap::new()
    } else {
        businesses(ctx.tx, &agents).await?
    };
    let call = match ready(call, &known) {
        Ok(c) => c,
        Err(ignored) => return Ok(ignored),
    };
    let written = write_calls(ctx.tx, &[(&call, ctx.inbox_id, Uuid::new_v4())]).await?;
    Ok(Upserted::single(written, || call.stale()))
}

/// Writes calls — each one's customer, its message and its audit row — in
/// one statement; `calls` name distinct calls and distinct customers, each
/// with the inbox event it comes from and the row id a new message gets.
/// A call older than the stored one leaves the message (and writes no
/// audit row) and is not among the result; its customer is upserted all
/// the same.
pub async fn write_calls(
    db: &impl GenericClient,
    calls: &[(&ReadyCall, i64, Uuid)],
) -> Result<Vec<Upserted>, DbError> {
    let stmt = db
        .prepare_cached(
            "WITH x AS (
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],
                                      $5::jsonb[], $6::timestamptz[], $7::text[], $8::bigint[],
                                      $9::text[], $10::uuid[])
                     AS x(business_id, phone, name, started, data, updated_at, call_id,
                          event_id, business_name, new_id)
             ), customer AS (
                 INSERT INTO customers (business_id, phone_number, name, last_call_at)
                 SELECT business_id, phone, name, started FROM x
                 ON CONFLICT (business_id, phone_number) DO UPDATE SET
                     name = CASE WHEN EXCLUDED.last_call_at IS NOT DISTINCT FROM NULL
                                      OR EXCLUDED.last_call_at >= coalesce(customers.last_call_at, '-infinity')
                                 THEN coalesce(EXCLUDED.name, customers.name)
                                 ELSE customers.name END,
                     last_call_at = greatest(customers.last_call_at, EXCLUDED.last_call_at)
                 RETURNING id, business_id, phone_number, (xmax = 0) AS new_customer
             ), message AS (
                 INSERT INTO messages (id, customer_id, teli_data, teli_updated_at)
                 SELECT x.new_id, c.id, x.data, x.updated_at
                 FROM x JOIN customer c
                   ON c.business_id = x.business_id AND c.phone_number = x.phone
                 ON CONFLICT ((teli_data ->> 'call_id')) DO UPDATE SET
                     customer_id = EXCLUDED.customer_id,
                     teli_data = EXCLUDED.teli_data,
                     teli_updated_at = EXCLUDED.teli_updated_at
                 WHERE messages.teli_updated_at IS NULL
                    OR EXCLUDED.teli_updated_at > messages.teli_updated_at
                 RETURNING id, customer_id, teli_data ->> 'call_id' AS call_id,
                           (xmax = 0) AS inserted
             ), audited AS (
                 INSERT INTO sync_audit_log (entity_type, entity_id, operation, new_data,
                     changed_fields, sync_source, sync_destination, event_id, decision, detail)
                 SELECT 'messages', m.id, CASE WHEN m.inserted THEN 'insert' ELSE 'update' END,
                        jsonb_build_object('call_id', x.call_id, 'customer_id', c.id,
                                           'business_id', x.business_id),
                        '{}'::text[], $11, 'local', x.event_id,
                        CASE WHEN m.inserted THEN 'inserted' ELSE 'refreshed' END,
                        jsonb_build_object('business', x.business_name, 'newCustomer', c.new_customer)
                 FROM message m
                 JOIN x ON x.call_id = m.call_id
                 JOIN customer c ON c.id = m.customer_id
                 ORDER BY x.event_id
             )
             SELECT call_id, id, inserted FROM message",
        )
        .await?;
    let n = calls.len();
    let mut business = Vec::with_capacity(n);
    let mut phone = Vec::with_capacity(n);
    let mut name = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut data = Vec::with_capacity(n);
    let mut updated_at = Vec::with_capacity(n);
    let mut call_id = Vec::with_capacity(n);
    let mut event_id = Vec::with_capacity(n);
    let mut business_name = Vec::with_capacity(n);
    let mut new_id = Vec::with_capacity(n);
    for (c, event, id) in calls {
        business.push(c.business_id);
        phone.push(c.phone.as_str());
        name.push(c.name.as_deref());
        started.push(c.started);
        data.push(&c.data);
        updated_at.push(c.updated_at);
        call_id.push(c.call_id.as_str());
        event_id.push(*event);
        business_name.push(c.business_name.as_deref());
        new_id.push(*id);
    }
    let rows = db
        .query(
            &stmt,
            &[
                &business,
                &phone,
                &name,
                &started,
                &data,
                &updated_at,
                &call_id,
                &event_id,
                &business_name,
                &new_id,
                &ProviderName::Teli.as_str(),
            ],
        )
        .await?;
    Ok(rows.iter().map(Upserted::from_row).collect())
}

/// The stored message (id, `teli_updated_at`) of each of these calls that
/// is stored.
pub async fn stored_messages(
    db: &impl GenericClient,
    call_ids: &[&str],
) -> Result<HashMap<String, (Uuid, Option<DateTime<Utc>>)>, DbError> {
    let stmt = db
        .prepare_cached(
            "SELECT teli_data ->> 'call_id', id, teli_updated_at FROM messages
             WHERE teli_data ->> 'call_id' = ANY($1)",
        )
        .await?;
    let rows = db.query(&stmt, &[&call_ids]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// The stored version (`teli_updated_at`) of each of these calls that is
/// stored.
pub async fn stored_versions(
    db: &impl GenericClient,
    call_ids: &[&str],
) -> Result<HashMap<String, Option<chrono::DateTime<chrono::Utc>>>, DbError> {
    Ok(stored_messages(db, call_ids)
        .await?
        .into_iter()
        .map(|(call, (_, version))| (call, version))
        .collect())
}

/// Which of these agent ids a business answers for.
pub async fn known_agents(
    db: &impl GenericClient,
    agents: &[&str],
) -> Result<HashSet<String>, DbError> {
    let stmt = db
        .prepare_cached("SELECT teli_agent_id FROM businesses WHERE teli_agent_id = ANY($1)")
        .await?;
    let rows = db.query(&stmt, &[&agents]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What the last application of each of these inbox events did, from its
/// audit row (a pulled event applied again in a later run has one per
/// application; the latest is this run's): the business the call went to
/// and whether its customer was new.
pub async fn applied_calls(
    db: &impl GenericClient,
    inbox_ids: &[i64],
) -> Result<HashMap<i64, (Option<String>, bool)>, DbError> {
    let stmt = db
        .prepare_cached(
            "SELECT DISTINCT ON (event_id)
                    event_id, detail ->> 'business', coalesce((detail ->> 'newCustomer')::boolean, false)
             FROM sync_audit_log
             WHERE event_id = ANY($1) AND entity_type = 'messages' AND sync_source = 'teli'
             ORDER BY event_id, created_at DESC",
        )
        .await?;
    let rows = db.query(&stmt, &[&inbox_ids]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Every stored call id, and the customers no message belongs to.
pub async fn local_calls(db: &impl GenericClient) -> Result<(HashSet<String>, Vec<Uuid>), DbError> {
    let calls = db
        .query(
            "SELECT teli_data ->> 'call_id' FROM messages WHERE teli_data ? 'call_id'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let orphans = db
        .query(
            "SELECT c.id FROM customers c
             WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.customer_id = c.id)
             ORDER BY c.created_at, c.id",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((calls, orphans))
}
