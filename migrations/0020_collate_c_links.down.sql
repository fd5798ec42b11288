SELECT syncbridge_recollate('sync_outbox', ARRAY['provider', 'table_name'], 'default');
SELECT syncbridge_recollate('sync_links', ARRAY['provider', 'entity_type', 'slot', 'remote_id'], 'default');
DROP FUNCTION syncbridge_recollate(regclass, text[], text);
