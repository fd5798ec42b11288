DROP TABLE IF EXISTS sync_integrity_runs;
DROP TABLE IF EXISTS sync_job_runs;
DROP TABLE IF EXISTS sync_cursors;
DELETE FROM sync_outbox WHERE provider = 'd1';
SELECT syncbridge_untrack_table(t, 'd1')
FROM unnest(ARRAY['prospects', 'campaigns', 'mailboxes']) AS t;
