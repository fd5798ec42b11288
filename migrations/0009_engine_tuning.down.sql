CREATE INDEX IF NOT EXISTS idx_audit_created ON sync_audit_log (created_at);
ALTER TABLE sync_links RESET (fillfactor);
DROP INDEX IF EXISTS clients_openphone_alt_contact_1_idx;
DROP INDEX IF EXISTS clients_openphone_alt_contact_2_idx;
