-- Change capture (SPEC §2.2): a row change on a synced table writes one
-- outbox row per provider subscribed to that table, except the provider the
-- change came from (syncbridge's own writes run with
-- SET LOCAL syncbridge.origin = '<provider>'), and rings a constant-payload
-- NOTIFY doorbell: Postgres folds equal notifications, so a transaction's
-- many rows ring once and the 8000-byte payload limit is never reached.

-- Which tables are synced to which providers, and which of their columns
-- are bookkeeping that never counts as a change (sync status, link ids).
CREATE TABLE syncbridge_capture (
    table_name     text   NOT NULL,
    provider       text   NOT NULL,
    ignore_columns text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (table_name, provider)
);

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
CREATE INDEX sync_outbox_pending_idx ON sync_outbox (provider, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX sync_outbox_record_idx ON sync_outbox (provider, table_name, record_id)
    WHERE status = 'pending';
CREATE INDEX sync_outbox_failed_idx ON sync_outbox (provider, id) WHERE status = 'failed';

CREATE FUNCTION syncbridge_capture_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_origin  text := coalesce(nullif(current_setting('syncbridge.origin', true), ''), 'local');
    v_sub     record;
    v_changed text[];
    v_old     jsonb;
    v_new     jsonb;
    v_id      uuid;
    v_rung    boolean := false;
BEGIN
    IF TG_OP = 'DELETE' THEN
        v_id := OLD.id;
        v_old := to_jsonb(OLD);
    ELSE
        v_id := NEW.id;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        v_old := to_jsonb(OLD);
        v_new := to_jsonb(NEW);
    END IF;

    FOR v_sub IN
        SELECT provider, ignore_columns FROM syncbridge_capture
        WHERE table_name = TG_TABLE_NAME AND provider <> v_origin
    LOOP
        IF TG_OP = 'UPDATE' THEN
            SELECT array_agg(n.key ORDER BY n.key) INTO v_changed
            FROM jsonb_each(v_new) n
            WHERE n.value IS DISTINCT FROM v_old -> n.key
              AND n.key <> ALL (v_sub.ignore_columns);
            CONTINUE WHEN v_changed IS NULL;
        ELSE
            v_changed := NULL;
        END IF;
        INSERT INTO sync_outbox (provider, table_name, record_id, operation, changed_columns, origin, old_row)
        VALUES (v_sub.provider, TG_TABLE_NAME, v_id, TG_OP, v_changed, v_origin,
                CASE WHEN TG_OP = 'DELETE' THEN v_old END);
        v_rung := true;
    END LOOP;

    IF v_rung THEN
        PERFORM pg_notify('syncbridge_outbox', '');
    END IF;
    RETURN NULL;
END
$$;

-- Starts syncing p_table to p_provider: registers it and installs the
-- capture trigger (once per table). Every synced table is one call:
--   SELECT syncbridge_track_table('clients', 'openphone', ARRAY['sync_status']);
CREATE FUNCTION syncbridge_track_table(p_table text, p_provider text, p_ignore text[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO syncbridge_capture (table_name, provider, ignore_columns)
    VALUES (p_table, p_provider, p_ignore)
    ON CONFLICT (table_name, provider) DO UPDATE SET ignore_columns = EXCLUDED.ignore_columns;
    EXECUTE format('DROP TRIGGER IF EXISTS syncbridge_capture ON %I', p_table);
    EXECUTE format(
        'CREATE TRIGGER syncbridge_capture AFTER INSERT OR UPDATE OR DELETE ON %I
         FOR EACH ROW EXECUTE FUNCTION syncbridge_capture_change()', p_table);
END
$$;

CREATE FUNCTION syncbridge_untrack_table(p_table text, p_provider text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM syncbridge_capture WHERE table_name = p_table AND provider = p_provider;
    IF NOT EXISTS (SELECT 1 FROM syncbridge_capture WHERE table_name = p_table) THEN
        EXECUTE format('DROP TRIGGER IF EXISTS syncbridge_capture ON %I', p_table);
    END IF;
END
$$;

SELECT syncbridge_track_table('clients', 'openphone', ARRAY[
    'updated_at', 'created_at', 'last_synced_at', 'sync_status', 'sync_error',
    'openphone_contact_id', 'openphone_alt_contact_1_id', 'openphone_alt_contact_2_id']);
