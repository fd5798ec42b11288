-- Teli seed (003-teli-organization-call-sync): businesses (each with the Teli
-- agent that answers for it), their customers by phone number, and one
-- message per call with the call's detail in teli_data. The tables may
-- already belong to the application: create them when absent, add the
-- columns when present, and remember which so the down script removes only
-- what we added.
--
-- Seed corrections: the seed deduplicates calls by looking for
-- teli_data->>'call_id' before inserting (two runs at once both insert);
-- here a unique index on that expression makes the database refuse the
-- second. customers are unique per (business_id, phone_number), phone
-- numbers in E.164, so one caller of two businesses is two customers and
-- never merged across them.

DO $$
BEGIN
    IF to_regclass('public.businesses') IS NULL THEN
        CREATE TABLE businesses (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'businesses');
    END IF;
    IF to_regclass('public.customers') IS NULL THEN
        CREATE TABLE customers (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'customers');
    END IF;
    IF to_regclass('public.messages') IS NULL THEN
        CREATE TABLE messages (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'messages');
    END IF;
END
$$;

-- Columns a seed's code uses, added where the application's table lacks
-- them and remembered, so the down script drops only those (used again by
-- later migrations).
CREATE FUNCTION syncbridge_add_owned_column(tbl text, col text, def text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = 'public' AND table_name = tbl AND column_name = col) THEN
        EXECUTE format('ALTER TABLE %I ADD COLUMN %I %s', tbl, col, def);
        INSERT INTO syncbridge_owned_objects VALUES ('column', tbl || '.' || col)
            ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- The down side: the table if syncbridge created it, else only the columns
-- it added.
CREATE FUNCTION syncbridge_drop_owned(tbl text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    o record;
BEGIN
    IF EXISTS (SELECT 1 FROM syncbridge_owned_objects WHERE kind = 'table' AND name = tbl) THEN
        EXECUTE format('DROP TABLE %I', tbl);
        DELETE FROM syncbridge_owned_objects WHERE kind = 'table' AND name = tbl;
        DELETE FROM syncbridge_owned_objects
        WHERE kind = 'column' AND split_part(name, '.', 1) = tbl;
    ELSE
        FOR o IN SELECT name FROM syncbridge_owned_objects
                 WHERE kind = 'column' AND split_part(name, '.', 1) = tbl LOOP
            EXECUTE format('ALTER TABLE %I DROP COLUMN IF EXISTS %I', tbl, split_part(o.name, '.', 2));
            DELETE FROM syncbridge_owned_objects WHERE kind = 'column' AND name = o.name;
        END LOOP;
    END IF;
END
$$;

SELECT syncbridge_add_owned_column(tbl, col, def) FROM (VALUES
    ('businesses', 'name',            'text'),
    ('businesses', 'teli_agent_id',   'text'),
    ('businesses', 'updated_at',      'timestamptz NOT NULL DEFAULT now()'),
    ('customers',  'business_id',     'uuid REFERENCES businesses (id) ON DELETE CASCADE'),
    ('customers',  'phone_number',    'text'),
    ('customers',  'name',            'text'),
    ('customers',  'updated_at',      'timestamptz NOT NULL DEFAULT now()'),
    -- the start of the newest call applied to this customer: an older call
    -- applied later does not rename them
    ('customers',  'last_call_at',    'timestamptz'),
    ('messages',   'customer_id',     'uuid REFERENCES customers (id) ON DELETE CASCADE'),
    ('messages',   'teli_data',       'jsonb'),
    ('messages',   'updated_at',      'timestamptz NOT NULL DEFAULT now()'),
    -- Teli's updated_at of the stored detail: a later version (analysis
    -- finished after the call) replaces it, an older one never does
    ('messages',   'teli_updated_at', 'timestamptz')
) AS t(tbl, col, def);

CREATE UNIQUE INDEX IF NOT EXISTS businesses_teli_agent_id_key ON businesses (teli_agent_id);
CREATE UNIQUE INDEX IF NOT EXISTS customers_business_phone_key
    ON customers (business_id, phone_number);
CREATE UNIQUE INDEX IF NOT EXISTS messages_teli_call_id_key
    ON messages ((teli_data ->> 'call_id'));
CREATE INDEX IF NOT EXISTS messages_customer_id_idx ON messages (customer_id);

DROP TRIGGER IF EXISTS syncbridge_businesses_touch_updated_at ON businesses;
CREATE TRIGGER syncbridge_businesses_touch_updated_at BEFORE UPDATE ON businesses
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();
DROP TRIGGER IF EXISTS syncbridge_customers_touch_updated_at ON customers;
CREATE TRIGGER syncbridge_customers_touch_updated_at BEFORE UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();
DROP TRIGGER IF EXISTS syncbridge_messages_touch_updated_at ON messages;
CREATE TRIGGER syncbridge_messages_touch_updated_at BEFORE UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();
