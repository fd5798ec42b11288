//! Keap's integrity check: `count_mismatch`, the contacts Keap counts
//! (`GET /contacts?limit=1` answers `count`, PROVIDERS.md §2.3) against the
//! contacts linked here, allowing for the changes still on their way.

use super::api::Api;
use crate::providers::{Finding, Fix, IntegrityCtx};

pub(super) async fn check(api: &Api, ctx: &IntegrityCtx<'_>) -> Result<Vec<Finding>, String> {
    let remote = api
        .contact_count()
        .await
        .map_err(|e| format!("counting Keap's contacts: {e}"))?;
    let row = ctx
        .db
        .query_one(
            "SELECT (SELECT count(*) FROM sync_contacts
                     WHERE keap_id IS NOT NULL AND deleted_at IS NULL),
                    (SELECT count(DISTINCT record_id) FROM sync_outbox
                     WHERE provider = 'keap' AND table_name = 'sync_contacts'
                       AND status = 'pending'),
                    (SELECT count(*) FROM sync_fetch_queue
                     WHERE provider = 'keap' AND object_type = 'contact')",
            &[],
        )
        .await
        .map_err(|e| format!("counting the linked contacts: {e}"))?;
    let (local, pushing, fetching) = (
        row.get::<_, i64>(0) as u64,
        row.get::<_, i64>(1) as u64,
        row.get::<_, i64>(2) as u64,
    );
    let off = remote.abs_diff(local);
    if off <= pushing + fetching {
        return Ok(Vec::new());
    }
    Ok(vec![Finding {
        provider: "keap",
        check: "count_mismatch",
        table: Some("sync_contacts".into()),
        count: off,
        examples: vec![format!("keap: {remote}"), format!("linked here: {local}")],
        detail: format!(
            "Keap counts {remote} contacts, {local} are linked here ({pushing} being pushed, \
             {fetching} being fetched): a contact Keap did not send a hook for, or one deleted \
             on one side only; a full resync of sync_contacts brings the two together"
        ),
        fix: Fix::Report,
    }])
}
