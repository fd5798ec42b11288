-- Supabase compatibility: the seeds reference auth.users, auth.uid() and the
-- roles anon / authenticated / service_role. They exist on Supabase; on plain
-- Postgres we create them, and remember what we created so the down script
-- removes only that.

CREATE TABLE IF NOT EXISTS syncbridge_owned_objects (
    kind text NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (kind, name)
);

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
                INSERT INTO syncbridge_owned_objects VALUES ('role', r) ON CONFLICT DO NOTHING;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- another database of this cluster created it concurrently
                NULL;
            END;
        END IF;
    END LOOP;
    -- service_role bypasses row level security on Supabase. Roles are
    -- cluster-wide: only alter it when needed, since two databases
    -- migrating at once would otherwise race on the same catalog row
    -- ("tuple concurrently updated").
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role' AND rolbypassrls) THEN
        BEGIN
            ALTER ROLE service_role BYPASSRLS;
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        CREATE SCHEMA auth;
        INSERT INTO syncbridge_owned_objects VALUES ('schema', 'auth');
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS auth.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text,
    created_at timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'auth' AND p.proname = 'uid'
    ) THEN
        -- Supabase's auth.uid(): the JWT subject of the current request, NULL
        -- outside PostgREST.
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS
        $f$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $f$;
        INSERT INTO syncbridge_owned_objects VALUES ('function', 'auth.uid') ON CONFLICT DO NOTHING;
    END IF;
END
$$;
