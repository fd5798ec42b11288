DROP FUNCTION IF EXISTS create_monthly_partition(text, date);
DROP TABLE IF EXISTS sync_audit_log;
DROP TABLE IF EXISTS sync_links;
