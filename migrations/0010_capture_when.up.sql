-- Capture triggers skip the subscriber's own writes without a call: a
-- table synced to one provider gets `WHEN (origin IS DISTINCT FROM that
-- provider)` on its capture and mark-pending triggers, so the router's,
-- fetcher's and dispatcher's writes (origin = the provider) cost no
-- PL/pgSQL call per row. The function bodies are unchanged: a table with
-- several subscribers is still captured for the others.
CREATE OR REPLACE FUNCTION syncbridge_refresh_capture(p_table text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_fn        text := 'syncbridge_capture_' || p_table;
    v_providers text[];
    v_ignore    text[];
    v_compare   text;
    v_when      text := '';
BEGIN
    SELECT array_agg(provider ORDER BY provider) INTO v_providers
    FROM syncbridge_capture WHERE table_name = p_table;
    EXECUTE format('DROP TRIGGER IF EXISTS syncbridge_capture ON %I', p_table);
    EXECUTE format('DROP TRIGGER IF EXISTS syncbridge_mark_pending ON %I', p_table);
    EXECUTE format('DROP FUNCTION IF EXISTS %I()', v_fn);
    EXECUTE format('DROP FUNCTION IF EXISTS %I()', 'syncbridge_pending_' || p_table);
    IF v_providers IS NULL THEN
        -- Nothing subscribes any more; the table's ignore list is kept for
        -- when it is tracked again.
        RETURN;
    END IF;
    SELECT coalesce(ignore_columns, '{}') INTO v_ignore
    FROM syncbridge_capture_tables WHERE table_name = p_table;

    SELECT string_agg(
               format('CASE WHEN OLD.%1$I IS DISTINCT FROM NEW.%1$I THEN %1$L END', a.attname),
               ', ' ORDER BY a.attnum)
    INTO v_compare
    FROM pg_attribute a
    WHERE a.attrelid = p_table::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname <> ALL (coalesce(v_ignore, '{}'));

    EXECUTE format($f$
        CREATE FUNCTION %1$I() RETURNS trigger LANGUAGE plpgsql AS $body$
        DECLARE
            v_origin  text := coalesce(nullif(current_setting('syncbridge.origin', true), ''), 'local');
            v_changed text[];
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                v_changed := array_remove(ARRAY[%2$s]::text[], NULL);
                IF cardinality(v_changed) = 0 THEN
                    RETURN NULL;
                END IF;
            END IF;
            IF TG_OP = 'DELETE' THEN
                INSERT INTO sync_outbox (provider, table_name, record_id, operation, origin, old_row)
                SELECT p, TG_TABLE_NAME, OLD.id, TG_OP, v_origin, to_jsonb(OLD)
                FROM unnest(%3$L::text[]) AS p WHERE p <> v_origin;
            ELSE
                INSERT INTO sync_outbox (provider, table_name, record_id, operation, changed_columns, origin)
                SELECT p, TG_TABLE_NAME, NEW.id, TG_OP, v_changed, v_origin
                FROM unnest(%3$L::text[]) AS p WHERE p <> v_origin;
            END IF;
            IF FOUND THEN
                UPDATE syncbridge_doorbell SET armed = false
                WHERE channel = 'syncbridge_outbox' AND armed;
                IF FOUND THEN
                    PERFORM pg_notify('syncbridge_outbox', '');
                END IF;
            END IF;
            RETURN NULL;
        END
        $body$ $f$, v_fn, coalesce(v_compare, ''), v_providers);
    -- One subscriber: its own writes (origin = that provider) can change
    -- nothing for anyone, so the trigger is not even called for them.
    IF cardinality(v_providers) = 1 THEN
        v_when := format(
            'WHEN (coalesce(current_setting(''syncbridge.origin'', true), '''') IS DISTINCT FROM %L)',
            v_providers[1]);
    END IF;
    EXECUTE format(
        'CREATE TRIGGER syncbridge_capture AFTER INSERT OR UPDATE OR DELETE ON %I
         FOR EACH ROW %s EXECUTE FUNCTION %I()', p_table, v_when, v_fn);

    -- A table with a sync_status column shows 'pending' from the moment a
    -- change that some provider will receive is made until it is pushed.
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p_table::regclass
               AND attname = 'sync_status' AND NOT attisdropped) THEN
        EXECUTE format($f$
            CREATE FUNCTION %1$I() RETURNS trigger LANGUAGE plpgsql AS $body$
            DECLARE
                v_origin text := coalesce(nullif(current_setting('syncbridge.origin', true), ''), 'local');
            BEGIN
                IF v_origin <> ALL (%3$L::text[]) OR cardinality(%3$L::text[]) > 1 THEN
                    IF TG_OP = 'INSERT' THEN
                        NEW.sync_status := 'pending';
                    ELSIF cardinality(array_remove(ARRAY[%2$s]::text[], NULL)) > 0 THEN
                        NEW.sync_status := 'pending';
                    END IF;
                END IF;
                RETURN NEW;
            END
            $body$ $f$, 'syncbridge_pending_' || p_table, coalesce(v_compare, ''), v_providers);
        EXECUTE format(
            'CREATE TRIGGER syncbridge_mark_pending BEFORE INSERT OR UPDATE ON %I
             FOR EACH ROW %s EXECUTE FUNCTION %I()', p_table, v_when, 'syncbridge_pending_' || p_table);
    END IF;
END
$$;


SELECT syncbridge_refresh_capture(table_name) FROM syncbridge_capture_tables;
