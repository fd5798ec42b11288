-- batch_upsert_contacts throughput (SPEC §8: >= 0.5x the bare upsert;
-- the seed asks > 1,000 rows/s), with two same-run baselines, each a plain
-- INSERT ... SELECT ... ON CONFLICT (keap_id) DO UPDATE of the same rows,
-- i.e. without validation, dedup, conflict checks, links or audit:
--   copy: into a copy of sync_contacts with the same indexes (and no
--         triggers): SPEC's baseline;
--   plain: into sync_contacts itself (its triggers fire, origin 'keap' as
--         the function sets it): what the function's own contact write
--         costs, so the rest is the function's validation, links and audit.
-- Each phase writes 'batches' batches of 'batch_size' contacts, one
-- transaction per batch, commit included in the time:
--   insert: new keap_ids;  update: the same keap_ids, first_name changed.
-- Each phase has its own keap_ids (same data otherwise), so each inserts
-- into and then updates its own rows. The tables are vacuumed first (the
-- run's own dead rows, with autovacuum off, would otherwise slow the later
-- phases).
--
-- Run it with bench/batch_upsert.sh <db> [batches] [batch_size] [clients].
-- psql variables (all optional):
--   batches (10), batch_size (10000)
--   phases  'all' (default) or 'fn' (batch_upsert_contacts only)
--   run     tag in the generated keap_ids (default: a timestamp)
--   start_at  timestamp to wait for before timing (concurrent clients)
-- The run's rows (contacts, links, outbox, audit) are deleted at the end.
\set ON_ERROR_STOP on
\if :{?batches}
\else
\set batches 10
\endif
\if :{?batch_size}
\else
\set batch_size 10000
\endif
\if :{?phases}
\else
\set phases all
\endif
\if :{?run}
\else
\set run ''
\endif
\if :{?start_at}
\else
\set start_at ''
\endif

SET client_min_messages = warning;
SELECT set_config('bench.batches', :'batches', false),
       set_config('bench.batch_size', :'batch_size', false),
       set_config('bench.phases', :'phases', false),
       set_config('bench.run', coalesce(nullif(:'run', ''),
                                        to_char(clock_timestamp(), 'YYYYMMDDHH24MISSUS')), false)
\gset

-- The batches, generated before any timing: kind 'f' for the function,
-- 'p' for the plain upsert; version 1 (insert), 2 (update).
CREATE TEMP TABLE bench_batch (kind text, ver int, n int, arr jsonb[]);
INSERT INTO bench_batch
SELECT k.kind, v.ver, b.n,
       ARRAY(SELECT jsonb_build_object(
                 'keap_id', 'bench-' || current_setting('bench.run') || '-' || k.kind || '-'
                            || (b.n * 1000000 + i),
                 'email', 'user' || (b.n * 1000000 + i) || '@example.com',
                 'first_name', CASE v.ver WHEN 1 THEN 'First' ELSE 'Changed' END || i,
                 'last_name', 'Last' || i,
                 'phone', '+1415555' || lpad((i % 10000)::text, 4, '0'),
                 'company', 'Company ' || (i % 100),
                 'tags', jsonb_build_array('tag' || (i % 7), 'tag' || (i % 11)),
                 'custom_fields', jsonb_build_object('plan', 'p' || (i % 3), 'score', i % 100))
             FROM generate_series(1, current_setting('bench.batch_size')::int) i)
FROM (VALUES ('f'), ('p'), ('c')) k(kind),
     (VALUES (1), (2)) v(ver),
     generate_series(1, current_setting('bench.batches')::int) b(n)
WHERE k.kind = 'f' OR current_setting('bench.phases') = 'all';

CREATE TEMP TABLE bench_result (phase text, rows bigint, seconds numeric, result text);

-- SPEC's baseline table: a copy of sync_contacts with its indexes, not its
-- triggers (a real table: a temporary one would skip the WAL).
SELECT format('bench_contacts_copy_%s', current_setting('bench.run')) AS copy_table \gset
CREATE TABLE :"copy_table" (LIKE sync_contacts INCLUDING ALL);
SELECT set_config('bench.copy_table', :'copy_table', false) \gset
VACUUM ANALYZE sync_contacts;
VACUUM ANALYZE sync_links;
VACUUM ANALYZE sync_audit_log;

SELECT pg_sleep(greatest(0, extract(epoch FROM (nullif(:'start_at', '')::timestamptz - clock_timestamp()))))
\g /dev/null

-- One transaction per batch: the DO block commits after each.
DO $$
DECLARE
    b      record;
    r      record;
    t0     timestamptz;
    total  numeric;
    v_rows bigint;
    agg    bigint[];
    phases text[] := ARRAY[['f', '1', 'batch_upsert_contacts: insert'],
                           ['c', '1', 'bare upsert, copy: insert'],
                           ['p', '1', 'bare upsert, sync_contacts: insert'],
                           ['f', '2', 'batch_upsert_contacts: update'],
                           ['c', '2', 'bare upsert, copy: update'],
                           ['p', '2', 'bare upsert, sync_contacts: update']];
BEGIN
    FOR i IN 1 .. array_length(phases, 1) LOOP
        CONTINUE WHEN phases[i][1] <> 'f' AND current_setting('bench.phases') <> 'all';
        total := 0; v_rows := 0; agg := ARRAY[0, 0, 0];
        FOR b IN SELECT arr FROM bench_batch
                 WHERE kind = phases[i][1] AND ver = phases[i][2]::int
                 ORDER BY bench_batch.n LOOP
            t0 := clock_timestamp();
            IF phases[i][1] = 'f' THEN
                SELECT * INTO r FROM batch_upsert_contacts(b.arr);
                agg := ARRAY[agg[1] + r.succeeded, agg[2] + r.failed, agg[3] + r.conflicts];
            ELSIF phases[i][1] = 'c' THEN
                EXECUTE format($q$
                INSERT INTO %I AS t
                    (keap_id, email, first_name, last_name, phone, company, tags, custom_fields,
                     source_system, sync_status, last_synced_at)
                SELECT c ->> 'keap_id', c ->> 'email', c ->> 'first_name', c ->> 'last_name',
                       c ->> 'phone', c ->> 'company', c -> 'tags', c -> 'custom_fields',
                       'keap', 'synced', now()
                FROM unnest($1) c
                ON CONFLICT (keap_id) DO UPDATE SET
                    email = EXCLUDED.email, first_name = EXCLUDED.first_name,
                    last_name = EXCLUDED.last_name, phone = EXCLUDED.phone,
                    company = EXCLUDED.company, tags = EXCLUDED.tags,
                    custom_fields = EXCLUDED.custom_fields,
                    sync_status = 'synced', last_synced_at = now()$q$,
                    current_setting('bench.copy_table')) USING b.arr;
            ELSE
                PERFORM set_config('syncbridge.origin', 'keap', true);
                INSERT INTO sync_contacts AS t
                    (keap_id, email, first_name, last_name, phone, company, tags, custom_fields,
                     source_system, sync_status, last_synced_at)
                SELECT c ->> 'keap_id', c ->> 'email', c ->> 'first_name', c ->> 'last_name',
                       c ->> 'phone', c ->> 'company', c -> 'tags', c -> 'custom_fields',
                       'keap', 'synced', now()
                FROM unnest(b.arr) c
                ON CONFLICT (keap_id) DO UPDATE SET
                    email = EXCLUDED.email, first_name = EXCLUDED.first_name,
                    last_name = EXCLUDED.last_name, phone = EXCLUDED.phone,
                    company = EXCLUDED.company, tags = EXCLUDED.tags,
                    custom_fields = EXCLUDED.custom_fields,
                    sync_status = 'synced', last_synced_at = now();
            END IF;
            COMMIT;
            total := total + extract(epoch FROM clock_timestamp() - t0);
            v_rows := v_rows + cardinality(b.arr);
        END LOOP;
        INSERT INTO bench_result VALUES (phases[i][3], v_rows, total,
            CASE WHEN phases[i][1] = 'f'
                 THEN format('succeeded %s, failed %s, conflicts %s', agg[1], agg[2], agg[3]) END);
        COMMIT;
    END LOOP;
END
$$;

\echo
SELECT format('batch_upsert_contacts vs plain INSERT ... ON CONFLICT DO UPDATE: %s batches x %s rows, one transaction per batch',
              current_setting('bench.batches'), current_setting('bench.batch_size')) AS bench;
SELECT phase, rows, round(seconds, 3) AS seconds,
       round(rows / nullif(seconds, 0)) AS rows_per_s, result
FROM bench_result ORDER BY ctid;
SELECT v.op,
       round((SELECT rows / seconds FROM bench_result WHERE phase = 'batch_upsert_contacts: ' || v.op)
           / (SELECT rows / seconds FROM bench_result WHERE phase = 'bare upsert, copy: ' || v.op), 2)
           AS fn_vs_copy,
       round((SELECT rows / seconds FROM bench_result WHERE phase = 'batch_upsert_contacts: ' || v.op)
           / (SELECT rows / seconds FROM bench_result WHERE phase = 'bare upsert, sync_contacts: ' || v.op), 2)
           AS fn_vs_sync_contacts
FROM (VALUES ('insert'), ('update')) v(op)
WHERE current_setting('bench.phases') = 'all';
-- For bench/batch_upsert.sh to add up concurrent clients.
\pset format unaligned
\t on
SELECT 'RESULT|' || phase || '|' || rows || '|' || seconds FROM bench_result ORDER BY ctid;
\t off
\pset format aligned

-- Remove the run's rows.
BEGIN;
SELECT set_config('syncbridge.origin', 'keap', true) \gset
CREATE TEMP TABLE bench_ids ON COMMIT DROP AS
    SELECT id FROM sync_contacts
    WHERE keap_id LIKE 'bench-' || current_setting('bench.run') || '-%';
DELETE FROM sync_audit_log
WHERE entity_type = 'sync_contacts' AND entity_id IN (SELECT id FROM bench_ids);
DELETE FROM sync_links
WHERE entity_type = 'sync_contacts' AND local_id IN (SELECT id FROM bench_ids);
DELETE FROM sync_outbox
WHERE table_name = 'sync_contacts' AND record_id IN (SELECT id FROM bench_ids);
DELETE FROM sync_contacts WHERE id IN (SELECT id FROM bench_ids);
COMMIT;
DROP TABLE :"copy_table";
