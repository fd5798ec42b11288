-- Remote ids and the keys beside them compared byte-wise (COLLATE "C"),
-- as the inbox's and fetch queue's keys are since 0019: the link table's
-- lookups by (provider, entity_type, remote_id) and the outbox's claims by
-- (provider, table_name) compare with memcmp instead of the database's
-- locale. These are identifiers, never sorted for people.
--
-- A column a view reads cannot change its collation, so the views that
-- depend on the table (the seeds' monitoring views, and any the
-- application added) are saved, dropped, and made again as they were:
-- definition, options, owner, grants, triggers, comment.

CREATE FUNCTION syncbridge_recollate(p_table regclass, p_columns text[], p_collation text)
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_views jsonb;
    v       jsonb;
    s       text;
BEGIN
    WITH RECURSIVE deps(view, depth) AS (
        SELECT r.ev_class, 1
        FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = p_table
          AND r.ev_class <> p_table
        UNION
        SELECT r.ev_class, deps.depth + 1
        FROM deps
        JOIN pg_depend d ON d.refobjid = deps.view AND d.classid = 'pg_rewrite'::regclass
        JOIN pg_rewrite r ON r.oid = d.objid
        WHERE r.ev_class <> deps.view
    ), views AS (
        SELECT view, max(depth) AS depth FROM deps GROUP BY view
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'depth', w.depth,
               'name', w.view::regclass::text,
               'kind', c.relkind,
               'create', format('CREATE VIEW %s%s AS %s', w.view::regclass,
                                CASE WHEN c.reloptions IS NOT NULL
                                     THEN format(' WITH (%s)', array_to_string(c.reloptions, ', '))
                                     ELSE '' END,
                                pg_get_viewdef(w.view)),
               'after', to_jsonb(ARRAY(
                   SELECT format('ALTER VIEW %s OWNER TO %s', w.view::regclass, c.relowner::regrole)
                   UNION ALL
                   SELECT format('GRANT %s ON %s TO %s%s', a.privilege_type, w.view::regclass,
                                 CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                      ELSE a.grantee::regrole::text END,
                                 CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
                   FROM aclexplode(c.relacl) a
                   UNION ALL
                   SELECT pg_get_triggerdef(t.oid)
                   FROM pg_trigger t WHERE t.tgrelid = w.view AND NOT t.tgisinternal
                   UNION ALL
                   SELECT format('COMMENT ON VIEW %s IS %L', w.view::regclass,
                                 obj_description(w.view, 'pg_class'))
                   WHERE obj_description(w.view, 'pg_class') IS NOT NULL))
           )), '[]')
    INTO v_views
    FROM views w JOIN pg_class c ON c.oid = w.view;

    FOR v IN SELECT e FROM jsonb_array_elements(v_views) e ORDER BY (e ->> 'depth')::int DESC LOOP
        IF v ->> 'kind' <> 'v' THEN
            RAISE EXCEPTION '% depends on %: only views can be rebuilt around a collation change',
                v ->> 'name', p_table;
        END IF;
        EXECUTE format('DROP VIEW %s', v ->> 'name');
    END LOOP;

    SELECT format('ALTER TABLE %s %s', p_table,
                  string_agg(format('ALTER COLUMN %I TYPE text COLLATE %I', col, p_collation), ', '))
    INTO s
    FROM unnest(p_columns) AS col;
    EXECUTE s;

    FOR v IN SELECT e FROM jsonb_array_elements(v_views) e ORDER BY (e ->> 'depth')::int LOOP
        EXECUTE v ->> 'create';
        FOR s IN SELECT jsonb_array_elements_text(v -> 'after') LOOP
            EXECUTE s;
        END LOOP;
    END LOOP;
END
$fn$;

SELECT syncbridge_recollate('sync_links', ARRAY['provider', 'entity_type', 'slot', 'remote_id'], 'C');
SELECT syncbridge_recollate('sync_outbox', ARRAY['provider', 'table_name'], 'C');
