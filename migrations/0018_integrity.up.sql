-- The engine's own integrity checks (SPEC §5.3), beside each provider's.

-- A monthly partition can no longer be created once the default partition
-- holds rows of that month (Postgres refuses the new bound): the rows are
-- moved into the new partition first, in the same transaction. Same name,
-- arguments and result as 0004's version, so the scheduler keeps calling it.
CREATE OR REPLACE FUNCTION create_monthly_partition(p_table text, p_month date DEFAULT current_date)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_start   date := date_trunc('month', p_month)::date;
    v_end     date := (date_trunc('month', p_month) + interval '1 month')::date;
    v_name    text := p_table || '_' || to_char(v_start, 'YYYY_MM');
    v_default text := p_table || '_default';
BEGIN
    IF to_regclass(format('%I', v_name)) IS NOT NULL THEN
        RETURN v_name;
    END IF;
    IF to_regclass(format('%I', v_default)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            v_name, p_table, v_start, v_end);
        RETURN v_name;
    END IF;
    EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', p_table);
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   v_name, p_table);
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE created_at >= %L AND created_at < %L RETURNING *)
         INSERT INTO %I SELECT * FROM moved',
        v_default, v_start, v_end, v_name);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   p_table, v_name, v_start, v_end);
    RETURN v_name;
END
$$;

-- Records the engine keeps about a local row that no longer exists:
-- links pointing nowhere (`dangling_link`) and open conflicts about a
-- deleted row (`orphaned_conflict`). The tables are the entity types
-- syncbridge wrote itself, quoted with format('%I'), and only those that
-- exist with an `id` column.
CREATE FUNCTION syncbridge_orphans()
RETURNS TABLE (kind text, entity_type text, n bigint, examples text[])
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_type text;
BEGIN
    FOR v_type IN
        SELECT DISTINCT t FROM (
            SELECT l.entity_type AS t FROM sync_links l
            UNION SELECT c.entity_type FROM sync_conflicts c WHERE c.status = 'open'
        ) s
        WHERE EXISTS (SELECT 1 FROM information_schema.columns col
                      WHERE col.table_schema = current_schema()
                        AND col.table_name = s.t AND col.column_name = 'id')
    LOOP
        RETURN QUERY EXECUTE format(
            'SELECT %L::text, %L::text, count(*), (array_agg(l.provider || '':'' || l.remote_id ORDER BY l.id))[1:5]
             FROM sync_links l
             WHERE l.entity_type = %L AND NOT EXISTS (SELECT 1 FROM %I t WHERE t.id = l.local_id)
             HAVING count(*) > 0',
            'dangling_link', v_type, v_type, v_type);
        RETURN QUERY EXECUTE format(
            'SELECT %L::text, %L::text, count(*), (array_agg(c.id::text ORDER BY c.detected_at))[1:5]
             FROM sync_conflicts c
             WHERE c.status = ''open'' AND c.entity_type = %L
               AND NOT EXISTS (SELECT 1 FROM %I t WHERE t.id = c.entity_id)
             HAVING count(*) > 0',
            'orphaned_conflict', v_type, v_type, v_type);
    END LOOP;
END
$$;

-- Repairs what syncbridge_orphans() found, for one entity type: dangling
-- links are removed (they are syncbridge's bookkeeping, not data a
-- provider is the source of truth for; the remote object is untouched and
-- links again when it next arrives), orphaned conflicts are superseded and
-- the changes they held are released. Each repair is audited. Returns the
-- rows repaired.
CREATE FUNCTION syncbridge_fix_orphans(p_kind text, p_entity_type text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns col
                   WHERE col.table_schema = current_schema()
                     AND col.table_name = p_entity_type AND col.column_name = 'id') THEN
        RETURN 0;
    END IF;
    IF p_kind = 'dangling_link' THEN
        EXECUTE format(
            'WITH gone AS (
                 DELETE FROM sync_links l
                 WHERE l.entity_type = %L AND NOT EXISTS (SELECT 1 FROM %I t WHERE t.id = l.local_id)
                 RETURNING l.*),
             audited AS (
                 INSERT INTO sync_audit_log (entity_type, entity_id, operation, old_data,
                                             sync_source, sync_destination, decision)
                 SELECT entity_type, local_id, ''INTEGRITY_FIX'', to_jsonb(gone), ''syncbridge'',
                        provider, ''dangling_link_removed''
                 FROM gone RETURNING 1)
             SELECT count(*) FROM audited',
            p_entity_type, p_entity_type) INTO v_n;
    ELSIF p_kind = 'orphaned_conflict' THEN
        EXECUTE format(
            'WITH closed AS (
                 UPDATE sync_conflicts c SET status = ''superseded'', resolved_at = now(),
                        resolution_notes = ''the record no longer exists (integrity fix)''
                 WHERE c.status = ''open'' AND c.entity_type = %L
                   AND NOT EXISTS (SELECT 1 FROM %I t WHERE t.id = c.entity_id)
                 RETURNING c.*),
             released AS (
                 UPDATE sync_outbox o SET next_attempt_at = now()
                 FROM closed
                 WHERE o.provider = closed.provider AND o.table_name = closed.entity_type
                   AND o.record_id = closed.entity_id AND o.status = ''pending''
                   AND o.next_attempt_at = ''infinity''
                 RETURNING 1),
             audited AS (
                 INSERT INTO sync_audit_log (entity_type, entity_id, operation, old_data,
                                             sync_source, sync_destination, decision)
                 SELECT entity_type, entity_id, ''INTEGRITY_FIX'', to_jsonb(closed), ''syncbridge'',
                        provider, ''orphaned_conflict_superseded''
                 FROM closed RETURNING 1)
             SELECT count(*) FROM audited',
            p_entity_type, p_entity_type) INTO v_n;
    END IF;
    RETURN v_n;
END
$$;
