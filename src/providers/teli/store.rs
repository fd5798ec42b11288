//! Teli's writes and reads: the router's apply of a pulled call (business
//! by agent, customer by phone, one message per call, one audit row), and
//! the lookups the pull and its audit make.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::GenericClient;
use serde_json::Value;
use uuid::Uuid;

use super::wire::Detail;
use crate::apply::Applied;
use crate::db::DbError;
use crate::domain::{E164Phone, ProviderName};
use crate::providers::ApplyCtx;

/// Applies one pulled call in the router's transaction.
pub async fn apply_call(ctx: &ApplyCtx<'_, '_>, call: &Value) -> Result<Applied, DbError> {
    let detail = match Detail::parse(call) {
        Ok(d) => d,
        Err(why) => return Ok(Applied::Ignored(format!("not a Teli call: {why}"))),
    };
    let agents = detail.listed.agents();
    if agents.is_empty() {
        return Ok(Applied::Ignored("the call names no agent".into()));
    }
    let stmt = ctx
        .tx
        .prepare_cached(
            "SELECT id, name FROM businesses WHERE teli_agent_id = ANY($1)
             ORDER BY array_position($1, teli_agent_id) LIMIT 1",
        )
        .await?;
    let agent_list: Vec<&str> = agents.clone();
    let Some(business) = ctx.tx.query_opt(&stmt, &[&agent_list]).await? else {
        return Ok(Applied::Ignored(format!(
            "unknown agent: no business has teli_agent_id {}",
            agents.join(" or ")
        )));
    };
    let business_id: Uuid = business.get(0);
    let business_name: Option<String> = business.get(1);
    let Some(phone) = detail.phone.as_deref().and_then(E164Phone::parse) else {
        return Ok(Applied::Ignored(match &detail.phone {
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

    // The customer, the call's message and its audit row in one
    // statement. A call older than the stored one leaves the message (and
    // writes no audit row); its customer is upserted all the same.
    let stmt = ctx
        .tx
        .prepare_cached(
            "WITH customer AS (
                 INSERT INTO customers (business_id, phone_number, name, last_call_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (business_id, phone_number) DO UPDATE SET
                     name = CASE WHEN EXCLUDED.last_call_at IS NOT DISTINCT FROM NULL
                                      OR EXCLUDED.last_call_at >= coalesce(customers.last_call_at, '-infinity')
                                 THEN coalesce(EXCLUDED.name, customers.name)
                                 ELSE customers.name END,
                     last_call_at = greatest(customers.last_call_at, EXCLUDED.last_call_at)
                 RETURNING id, (xmax = 0) AS new_customer
             ), message AS (
                 INSERT INTO messages (customer_id, teli_data, teli_updated_at)
                 SELECT id, $5::jsonb, $6::timestamptz FROM customer
                 ON CONFLICT ((teli_data ->> 'call_id')) DO UPDATE SET
                     customer_id = EXCLUDED.customer_id,
                     teli_data = EXCLUDED.teli_data,
                     teli_updated_at = EXCLUDED.teli_updated_at
                 WHERE messages.teli_updated_at IS NULL
                    OR EXCLUDED.teli_updated_at > messages.teli_updated_at
                 RETURNING id, (xmax = 0) AS inserted
             ), audited AS (
                 INSERT INTO sync_audit_log (entity_type, entity_id, operation, new_data,
                     changed_fields, sync_source, sync_destination, event_id, decision, detail)
                 SELECT 'messages', m.id, CASE WHEN m.inserted THEN 'insert' ELSE 'update' END,
                        jsonb_build_object('call_id', $7::text, 'customer_id', c.id,
                                           'business_id', $1::uuid),
                        '{}'::text[], $8, 'local', $9,
                        CASE WHEN m.inserted THEN 'inserted' ELSE 'refreshed' END,
                        jsonb_build_object('business', $10::text, 'newCustomer', c.new_customer)
                 FROM message m, customer c
             )
             SELECT id, inserted FROM message",
        )
        .await?;
    let Some(row) = ctx
        .tx
        .query_opt(
            &stmt,
            &[
                &business_id,
                &phone.as_str(),
                &detail.name,
                &detail.listed.started,
                &data,
                &detail.listed.updated_at,
                &detail.listed.call_id,
                &ProviderName::Teli.as_str(),
                &ctx.inbox_id,
                &business_name,
            ],
        )
        .await?
    else {
        return Ok(Applied::Stale(format!(
            "call {} at {:?} is not newer than the stored one",
            detail.listed.call_id, detail.listed.version
        )));
    };
    let message_id: Uuid = row.get(0);
    let inserted: bool = row.get(1);
    Ok(if inserted {
        Applied::Inserted(message_id)
    } else {
        Applied::Updated(message_id)
    })
}

/// The stored version (`teli_updated_at`) of each of these calls that is
/// stored.
pub async fn stored_versions(
    db: &impl GenericClient,
    call_ids: &[&str],
) -> Result<HashMap<String, Option<chrono::DateTime<chrono::Utc>>>, DbError> {
    let stmt = db
        .prepare_cached(
            "SELECT teli_data ->> 'call_id', teli_updated_at FROM messages
             WHERE teli_data ->> 'call_id' = ANY($1)",
        )
        .await?;
    let rows = db.query(&stmt, &[&call_ids]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
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
