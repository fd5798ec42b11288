-- Change capture (SPEC §2.2): a row change on a synced table writes one
-- outbox row per provider subscribed to that table, except the provider the
-- change came from (syncbridge's own writes run with
-- SET LOCAL syncbridge.origin = '<provider>'), and rings a constant-payload
-- NOTIFY doorbell.
--
-- NOTIFY takes a database-wide lock at commit, which serialises every
-- committing transaction that notified; ringing on every change cost the
-- application ~60 % of its UPDATE throughput (pgbench, 8 clients). So the
-- doorbell is armed: the first change after the dispatcher re-arms it rings,
-- later ones see it already rung and only write their outbox row. The
-- dispatcher re-arms before every drain; its timer sweep covers a change
-- whose trigger ran just before a re-arm and committed just after a drain.

-- Which tables are synced to which providers.
CREATE TABLE syncbridge_capture (
    table_name text NOT NULL,
    provider   text NOT NULL,
    PRIMARY KEY (table_name, provider)
);

-- Per synced table: bookkeeping columns that never count as a change.
CREATE TABLE syncbridge_capture_tables (
    table_name     text PRIMARY KEY,
    ignore_columns text[] NOT NULL DEFAULT '{}'
);

CREATE UNLOGGED TABLE syncbridge_doorbell (
    channel text PRIMARY KEY,
    armed   boolean NOT NULL DEFAULT true
);
INSERT INTO syncbridge_doorbell (channel) VALUES ('syncbridge_outbox');

-- The outbox: one row per (change, provider). The dispatcher claims rows
-- with SKIP LOCKED, coalesces a record's pending rows into one push of its
-- latest state, and marks them done.
CREATE TABLE sync_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider        text        NOT NULL,
    table_name      text        NOT NULL,
    record_id       uuid        NOT NULL,
    operation       text        NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'SYNC')),
    changed_columns text[],
    origin          text        NOT NULL DEFAULT 'local',
    txid            bigint      NOT NULL DEFAULT txid_current(),
    old_row         jsonb,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'done', 'failed', 'skipped')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);
CREATE INDEX sync_outbox_pending_idx ON sync_outbox (provider, table_name, record_id, id)
    WHERE status = 'pending';
CREATE INDEX sync_outbox_failed_idx ON sync_outbox (provider, id) WHERE status = 'failed';

-- (Re)writes p_table's capture trigger from the registrations: a function
-- with the table's columns compared one by one (no per-row JSON), the
-- subscribed providers inlined, and the trigger on top. Called by
-- syncbridge_track_table / syncbridge_untrack_table; call it again after
-- adding columns to a synced table.
CREATE FUNCTION syncbridge_refresh_capture(p_table text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_fn        text := 'syncbridge_capture_' || p_table;
    v_providers text[];
    v_ignore    text[];
    v_compare   text;
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
    EXECUTE format(
        'CREATE TRIGGER syncbridge_capture AFTER INSERT OR UPDATE OR DELETE ON %I
         FOR EACH ROW EXECUTE FUNCTION %I()', p_table, v_fn);

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
             FOR EACH ROW EXECUTE FUNCTION %I()', p_table, 'syncbridge_pending_' || p_table);
    END IF;
END
$$;

-- Starts syncing p_table to p_provider; p_ignore names the table's
-- bookkeeping columns (they never count as a change). One call per table
-- and provider:
--   SELECT syncbridge_track_table('clients', 'openphone', ARRAY['sync_status']);
CREATE FUNCTION syncbridge_track_table(p_table text, p_provider text, p_ignore text[] DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO syncbridge_capture (table_name, provider) VALUES (p_table, p_provider)
    ON CONFLICT DO NOTHING;
    INSERT INTO syncbridge_capture_tables (table_name, ignore_columns)
    VALUES (p_table, coalesce(p_ignore, '{}'))
    ON CONFLICT (table_name) DO UPDATE
        SET ignore_columns = coalesce(p_ignore, syncbridge_capture_tables.ignore_columns);
    PERFORM syncbridge_refresh_capture(p_table);
END
$$;

CREATE FUNCTION syncbridge_untrack_table(p_table text, p_provider text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM syncbridge_capture WHERE table_name = p_table AND provider = p_provider;
    PERFORM syncbridge_refresh_capture(p_table);
END
$$;

SELECT syncbridge_track_table('clients', 'openphone', ARRAY[
    'updated_at', 'created_at', 'last_synced_at', 'sync_status', 'sync_error',
    'openphone_contact_id', 'openphone_alt_contact_1_id', 'openphone_alt_contact_2_id']);
