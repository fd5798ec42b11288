DROP TRIGGER IF EXISTS syncbridge_messages_touch_updated_at ON messages;
DROP TRIGGER IF EXISTS syncbridge_customers_touch_updated_at ON customers;
DROP TRIGGER IF EXISTS syncbridge_businesses_touch_updated_at ON businesses;
DROP INDEX IF EXISTS messages_teli_call_id_key;
DROP INDEX IF EXISTS messages_customer_id_idx;
DROP INDEX IF EXISTS customers_business_phone_key;
DROP INDEX IF EXISTS businesses_teli_agent_id_key;

DO $$
DECLARE
    t text;
    o record;
BEGIN
    -- Tables we created go whole; in the application's own tables, only the
    -- columns we added.
    FOREACH t IN ARRAY ARRAY['messages', 'customers', 'businesses'] LOOP
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
