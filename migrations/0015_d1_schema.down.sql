DROP TRIGGER IF EXISTS syncbridge_mailboxes_touch_updated_at ON mailboxes;
DROP TRIGGER IF EXISTS syncbridge_campaigns_touch_updated_at ON campaigns;
DROP TRIGGER IF EXISTS syncbridge_prospects_touch_updated_at ON prospects;
DROP INDEX IF EXISTS prospects_updated_idx;
DROP INDEX IF EXISTS campaigns_updated_idx;
DROP INDEX IF EXISTS mailboxes_updated_idx;
DROP INDEX IF EXISTS emails_message_id_idx;
DROP INDEX IF EXISTS emails_prospect_id_idx;

DO $$
DECLARE
    t text;
    o record;
BEGIN
    -- Tables we created go whole; in the application's own tables, only the
    -- columns we added.
    FOREACH t IN ARRAY ARRAY['emails', 'mailboxes', 'campaigns', 'prospects'] LOOP
        IF EXISTS (SELECT 1 FROM syncbridge_owned_objects WHERE kind = 'table' AND name = t) THEN
            EXECUTE format('DROP TABLE %I', t);
            DELETE FROM syncbridge_owned_objects WHERE kind = 'table' AND name = t;
            DELETE FROM syncbridge_owned_objects WHERE kind = 'column' AND name LIKE t || '.%';
        ELSE
            FOR o IN SELECT name FROM syncbridge_owned_objects
                     WHERE kind = 'column' AND name LIKE t || '.%' LOOP
                EXECUTE format('ALTER TABLE %I DROP COLUMN IF EXISTS %I', t, split_part(o.name, '.', 2));
                DELETE FROM syncbridge_owned_objects WHERE kind = 'column' AND name = o.name;
            END LOOP;
        END IF;
    END LOOP;
END
$$;
