DELETE FROM sync_outbox WHERE provider = 'resman' AND table_name IN ('conversation', 'user');
SELECT syncbridge_untrack_table('conversation', 'resman')
WHERE to_regclass('public.conversation') IS NOT NULL;
SELECT syncbridge_untrack_table('user', 'resman')
WHERE to_regclass('public."user"') IS NOT NULL;

DROP TRIGGER IF EXISTS trigger_add_sync_queue_item ON conversation;
DROP TRIGGER IF EXISTS trigger_update_conversation_sync_status ON conversation;
DROP TRIGGER IF EXISTS trigger_update_user_sync_status ON "user";
DROP FUNCTION IF EXISTS add_sync_queue_item();
DROP FUNCTION IF EXISTS update_conversation_sync_status();
DROP FUNCTION IF EXISTS update_user_sync_status();

DROP VIEW IF EXISTS sync_health_monitoring;
DROP VIEW IF EXISTS property_sync_status;
DROP VIEW IF EXISTS queue_performance_metrics;
DROP VIEW IF EXISTS conflict_resolution_stats;
DROP VIEW IF EXISTS sync_success_rates;
DROP FUNCTION IF EXISTS cleanup_old_queue_items();
DROP FUNCTION IF EXISTS archive_resolved_conflicts();
DROP FUNCTION IF EXISTS archive_old_sync_logs();
DROP TABLE IF EXISTS lead_sync_queue_archive;
DROP TABLE IF EXISTS lead_sync_conflicts_archive;
DROP TABLE IF EXISTS lead_sync_log_archive;
DROP VIEW IF EXISTS lead_sync_conflicts;
DROP VIEW IF EXISTS lead_sync_mapping;
DROP VIEW IF EXISTS lead_sync_queue;
DROP FUNCTION IF EXISTS lead_sync_queue_insert();
DROP VIEW IF EXISTS lead_sync_log;
DROP TABLE IF EXISTS lead_sync_severity;
DROP TABLE IF EXISTS resman_prospects;
DROP TABLE IF EXISTS resman_integration;

DROP TRIGGER IF EXISTS syncbridge_conversation_touch_updated_at ON conversation;
DROP TRIGGER IF EXISTS syncbridge_user_touch_updated_at ON "user";
DROP INDEX IF EXISTS idx_conversation_resman_lead_id;
DROP INDEX IF EXISTS idx_conversation_resman_sync_status;
DROP INDEX IF EXISTS idx_conversation_resman_last_sync;
DROP INDEX IF EXISTS idx_conversation_property;
DROP INDEX IF EXISTS idx_conversation_user;
DROP INDEX IF EXISTS idx_user_resman_contact_id;
DROP INDEX IF EXISTS idx_user_resman_sync_status;
DROP INDEX IF EXISTS idx_lead_notification_resman_id;
DROP INDEX IF EXISTS idx_lead_notification_resman_sync;
ALTER TABLE IF EXISTS conversation DROP CONSTRAINT IF EXISTS chk_resman_sync_mapping;
ALTER TABLE IF EXISTS "user" DROP CONSTRAINT IF EXISTS chk_user_resman_sync_mapping;
ALTER TABLE IF EXISTS lead_notification DROP CONSTRAINT IF EXISTS chk_notification_resman_sync_mapping;

-- Tables we created go whole (dependents first); in the application's own
-- tables, only the columns we added.
SELECT syncbridge_drop_owned('lead_notification');
SELECT syncbridge_drop_owned('conversation');
SELECT syncbridge_drop_owned('user');
SELECT syncbridge_drop_owned('property_manager');
SELECT syncbridge_drop_owned('property');
