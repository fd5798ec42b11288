DROP INDEX IF EXISTS idx_audit_event;
DROP TABLE IF EXISTS sync_pull_runs;
