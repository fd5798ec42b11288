ALTER TABLE sync_conflicts ALTER COLUMN id SET DEFAULT gen_random_uuid();
ALTER TABLE sync_audit_log ALTER COLUMN id SET DEFAULT gen_random_uuid();
DROP FUNCTION syncbridge_uuid_v7();

DROP TRIGGER webhook_events_queue_delete ON webhook_events;
DROP TRIGGER webhook_events_queue_update ON webhook_events;
DROP TRIGGER webhook_events_queue_insert ON webhook_events;
DROP FUNCTION syncbridge_inbox_queue_delete();
DROP FUNCTION syncbridge_inbox_queue_update();
DROP FUNCTION syncbridge_inbox_queue_insert();

ALTER TABLE sync_fetch_queue ALTER COLUMN provider TYPE text COLLATE "default",
                             ALTER COLUMN object_type TYPE text COLLATE "default",
                             ALTER COLUMN object_id TYPE text COLLATE "default";
ALTER TABLE webhook_event_keys ALTER COLUMN provider TYPE text COLLATE "default",
                               ALTER COLUMN dedup_key TYPE text COLLATE "default";
ALTER TABLE webhook_events ALTER COLUMN provider TYPE text COLLATE "default",
                           ALTER COLUMN dedup_key TYPE text COLLATE "default";
ALTER TABLE webhook_events RESET (fillfactor);

CREATE INDEX webhook_events_pending_idx ON webhook_events (provider, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_events_failed_idx ON webhook_events (provider, id) WHERE status = 'failed';
DROP TABLE webhook_queue;
