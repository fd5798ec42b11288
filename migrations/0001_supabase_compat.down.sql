DO $$
DECLARE
    o record;
BEGIN
    IF EXISTS (SELECT 1 FROM syncbridge_owned_objects WHERE kind = 'function' AND name = 'auth.uid') THEN
        DROP FUNCTION IF EXISTS auth.uid();
    END IF;
    IF EXISTS (SELECT 1 FROM syncbridge_owned_objects WHERE kind = 'schema' AND name = 'auth') THEN
        DROP SCHEMA IF EXISTS auth CASCADE;
    END IF;
    FOR o IN SELECT name FROM syncbridge_owned_objects WHERE kind = 'role' LOOP
        BEGIN
            EXECUTE format('DROP ROLE IF EXISTS %I', o.name);
        EXCEPTION WHEN dependent_objects_still_exist OR object_in_use THEN
            -- Roles are cluster-wide: another database still uses it.
            RAISE NOTICE 'role % kept: still used elsewhere in the cluster', o.name;
        END;
    END LOOP;
END
$$;
DROP TABLE IF EXISTS syncbridge_owned_objects;
