-- Reverses 0007: stop capturing the four tables, drop what 0007 made, and
-- undo its changes to earlier objects (sync_conflicts' RLS, grants and
-- replica identity; auth.users.raw_user_meta_data only if 0007 added it).

-- Capture: triggers and generated functions go with the registrations;
-- the outbox, link and conflict rows of the dropped tables go too (the
-- dispatcher would find pending changes of a table that no longer exists).
-- Their audit rows stay: the audit log is history.
DO $$
DECLARE
    t text;
    p text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sync_contacts', 'sync_orders', 'sync_tags', 'sync_subscriptions'] LOOP
        -- every provider, not only keap: the last untrack drops the
        -- generated trigger functions
        FOR p IN SELECT provider FROM syncbridge_capture WHERE table_name = t LOOP
            IF to_regclass(t) IS NOT NULL THEN
                PERFORM syncbridge_untrack_table(t, p);
            END IF;
        END LOOP;
        DELETE FROM syncbridge_capture WHERE table_name = t;
        DELETE FROM syncbridge_capture_tables WHERE table_name = t;
        DELETE FROM sync_outbox WHERE table_name = t;
        DELETE FROM sync_links WHERE entity_type = t;
        DELETE FROM sync_conflicts WHERE entity_type = t;
    END LOOP;
END
$$;

ALTER TABLE sync_conflicts REPLICA IDENTITY DEFAULT;

-- Row level security on 0006's sync_conflicts, and the grants 0007 made.
DROP POLICY IF EXISTS admin_conflicts ON sync_conflicts;
DROP POLICY IF EXISTS service_role_all ON sync_conflicts;
ALTER TABLE sync_conflicts DISABLE ROW LEVEL SECURITY;
DO $$
DECLARE
    o record;
BEGIN
    FOR o IN SELECT name FROM syncbridge_owned_objects
             WHERE kind = 'grant' AND name LIKE 'sync_conflicts:%' LOOP
        EXECUTE format('REVOKE %s ON sync_conflicts FROM %I',
                       split_part(o.name, ':', 3), split_part(o.name, ':', 2));
        DELETE FROM syncbridge_owned_objects WHERE kind = 'grant' AND name = o.name;
    END LOOP;
END
$$;
DROP FUNCTION IF EXISTS syncbridge_is_admin();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM syncbridge_owned_objects
               WHERE kind = 'column' AND name = 'auth.users.raw_user_meta_data') THEN
        ALTER TABLE auth.users DROP COLUMN IF EXISTS raw_user_meta_data;
        DELETE FROM syncbridge_owned_objects
        WHERE kind = 'column' AND name = 'auth.users.raw_user_meta_data';
    END IF;
END
$$;

DROP FUNCTION IF EXISTS create_monthly_partition();
DROP FUNCTION IF EXISTS batch_upsert_contacts(jsonb[]);
DROP FUNCTION IF EXISTS detect_sync_conflict(varchar, uuid, jsonb, jsonb);

DROP VIEW IF EXISTS sync_health;
DROP VIEW IF EXISTS sync_status;
DROP VIEW IF EXISTS sync_queue;
DROP FUNCTION IF EXISTS sync_queue_insert();

DROP INDEX IF EXISTS idx_audit_log_created;

-- The tables take their triggers, policies and indexes with them.
DROP TABLE IF EXISTS sync_subscriptions;
DROP TABLE IF EXISTS sync_tags;
DROP TABLE IF EXISTS sync_orders;
DROP TABLE IF EXISTS sync_contacts;
DROP FUNCTION IF EXISTS trigger_sync_on_update();
DROP FUNCTION IF EXISTS sync_contacts_link_waiting();
DROP FUNCTION IF EXISTS sync_link_keap_contact();
