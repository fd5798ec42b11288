DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT DISTINCT table_name FROM syncbridge_capture LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS syncbridge_capture ON %I', t);
        EXECUTE format('DROP TRIGGER IF EXISTS syncbridge_mark_pending ON %I', t);
        EXECUTE format('DROP FUNCTION IF EXISTS %I()', 'syncbridge_capture_' || t);
        EXECUTE format('DROP FUNCTION IF EXISTS %I()', 'syncbridge_pending_' || t);
    END LOOP;
END
$$;
DROP FUNCTION IF EXISTS syncbridge_untrack_table(text, text);
DROP FUNCTION IF EXISTS syncbridge_track_table(text, text, text[]);
DROP FUNCTION IF EXISTS syncbridge_refresh_capture(text);
DROP TABLE IF EXISTS sync_outbox;
DROP TABLE IF EXISTS syncbridge_doorbell;
DROP TABLE IF EXISTS syncbridge_capture_tables;
DROP TABLE IF EXISTS syncbridge_capture;
