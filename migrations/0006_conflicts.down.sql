ALTER TABLE sync_audit_log DROP COLUMN IF EXISTS detail, DROP COLUMN IF EXISTS error;
DROP TABLE IF EXISTS sync_conflicts;
DROP TABLE IF EXISTS sync_conflict_rules;
