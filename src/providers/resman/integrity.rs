//! ResMan's integrity check: `lead_mismatch`, conversations whose
//! `resman_lead_id` column disagrees with the ResMan lead they are linked
//! to (`sync_links`, which the push and the poll go by): set by hand, copied
//! with the row, or left behind by a lead linked elsewhere. Which one is
//! right is an operator's call: reported only.

use crate::providers::{Finding, Fix, IntegrityCtx};

pub(super) async fn check(ctx: &IntegrityCtx<'_>) -> Result<Vec<Finding>, String> {
    let row = ctx
        .db
        .query_one(
            "SELECT count(*), coalesce((array_agg(c.id::text ORDER BY c.id))[1:5], '{}')
             FROM conversation c
             LEFT JOIN sync_links l
               ON l.entity_type = 'conversation' AND l.local_id = c.id
              AND l.provider = 'resman' AND l.slot = 'primary'
             WHERE (c.resman_lead_id IS NOT NULL OR l.remote_id IS NOT NULL)
               AND c.resman_lead_id IS DISTINCT FROM l.remote_id",
            &[],
        )
        .await
        .map_err(|e| format!("reading conversations: {e}"))?;
    let count = row.get::<_, i64>(0) as u64;
    if count == 0 {
        return Ok(Vec::new());
    }
    Ok(vec![Finding {
        provider: "resman",
        check: "lead_mismatch",
        table: Some("conversation".into()),
        count,
        examples: row.get(1),
        detail: format!(
            "{count} conversations hold a resman_lead_id other than the ResMan lead they are \
             linked to (lead_sync_mapping); correct the column or the mapping"
        ),
        fix: Fix::Report,
    }])
}
