//! OpenPhone's integrity check: `unlinked_communication`, calls and
//! messages stored without a client although a client has the other
//! party's number (the client was created, or given that number, after the
//! call or message arrived: the link is made only when it is stored).
//! `--fix` links them, audited; the rows themselves are OpenPhone's and
//! stay as they are.

use super::store;
use crate::providers::{Finding, Fix, IntegrityCtx};

/// The other party's number of a communication, and the client
/// [`store::match_client`] links it to.
fn unlinked() -> String {
    format!(
        "SELECT m.id AS communication_id, {} AS client_id
         FROM (SELECT id, syncbridge_e164(CASE WHEN direction = 'incoming' THEN from_number
                                               ELSE to_number END) AS party
               FROM communications WHERE client_id IS NULL) m
         WHERE m.party IS NOT NULL",
        store::match_client("m.party")
    )
}

pub(super) async fn check(ctx: &IntegrityCtx<'_>) -> Result<Vec<Finding>, String> {
    let db = |e: tokio_postgres::Error| format!("reading communications: {e}");
    let unlinked = unlinked();
    let row = ctx
        .db
        .query_one(
            &format!(
                "SELECT count(*), coalesce((array_agg(communication_id::text ORDER BY communication_id))[1:5], '{{}}')
                 FROM ({unlinked}) u WHERE client_id IS NOT NULL"
            ),
            &[],
        )
        .await
        .map_err(db)?;
    let count = row.get::<_, i64>(0) as u64;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut fixed = 0;
    if ctx.fix {
        fixed = ctx
            .db
            .query_one(
                &format!(
                    "WITH found AS ({unlinked}),
                     linked AS (
                         UPDATE communications m SET client_id = f.client_id
                         FROM found f
                         WHERE m.id = f.communication_id AND f.client_id IS NOT NULL
                           AND m.client_id IS NULL
                         RETURNING m.id, m.client_id),
                     audited AS (
                         INSERT INTO sync_audit_log (entity_type, entity_id, operation,
                             changed_fields, new_data, sync_source, sync_destination, decision)
                         SELECT 'communications', id, 'INTEGRITY_FIX', ARRAY['client_id'],
                                jsonb_build_object('client_id', client_id), 'syncbridge', 'local',
                                'communication_linked'
                         FROM linked RETURNING 1)
                     SELECT count(*) FROM audited"
                ),
                &[],
            )
            .await
            .map_err(db)?
            .get::<_, i64>(0) as u64;
    }
    Ok(vec![Finding {
        provider: "openphone",
        check: "unlinked_communication",
        table: Some("communications".into()),
        count,
        examples: row.get(1),
        detail: format!(
            "{count} calls or messages have no client although a client has the other party's \
             number (it was added after they arrived); --fix links them"
        ),
        fix: Fix::Repair(fixed),
    }])
}
