-- The inbox's claim moves to a narrow queue table, so that closing an event
-- is a HOT update of its row (measured with `syncbridge-bench apply`:
-- pg_stat_user_tables.n_tup_hot_upd and WAL bytes per event).
--
-- Before: `status` sat in the predicate of the claim index (and of the
-- failed-events index), so every close moved the row to a new place and
-- wrote an entry into each of its four indexes. Now no index of
-- webhook_events covers a column a close writes; the claim reads
-- webhook_queue, which holds one row per event that is pending or failed
-- and loses it on close. Triggers keep the queue in step with
-- webhook_events.status whoever writes it (the router, the admin's retry
-- and replay, a repair), so the invariant holds without every writer
-- knowing of it: an event has a queue row iff its status is pending or
-- failed, with the same next_attempt_at.

CREATE TABLE webhook_queue (
    -- No foreign key: its check would lock every new event row (a WAL
    -- record each) on the ingest path; the delete trigger below removes a
    -- deleted event's row instead.
    event_id        bigint      PRIMARY KEY,
    provider        text        COLLATE "C" NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'failed')),
    next_attempt_at timestamptz NOT NULL
);
-- The router's claim: due pending rows of a provider, oldest first.
CREATE INDEX webhook_queue_due_idx ON webhook_queue (provider, next_attempt_at, event_id)
    WHERE status = 'pending';
-- The admin's retry of failed events.
CREATE INDEX webhook_queue_failed_idx ON webhook_queue (provider, event_id)
    WHERE status = 'failed';

INSERT INTO webhook_queue (event_id, provider, status, next_attempt_at)
SELECT id, provider, status, next_attempt_at FROM webhook_events
WHERE status IN ('pending', 'failed');

DROP INDEX webhook_events_pending_idx;
DROP INDEX webhook_events_failed_idx;

-- Room on every page for a closed copy of each of its rows: a batch closes
-- the events stored together, so all the rows of a page are rewritten in
-- one transaction, and each new version stays HOT only if it fits on the
-- page (measured: see README, Benchmarks).
ALTER TABLE webhook_events SET (fillfactor = 50);

-- Ids and keys compare bytewise: no locale's rules apply to them, and "C"
-- lets btrees use memcmp and abbreviated keys.
ALTER TABLE webhook_events ALTER COLUMN provider TYPE text COLLATE "C",
                           ALTER COLUMN dedup_key TYPE text COLLATE "C";
ALTER TABLE webhook_event_keys ALTER COLUMN provider TYPE text COLLATE "C",
                               ALTER COLUMN dedup_key TYPE text COLLATE "C";
ALTER TABLE sync_fetch_queue ALTER COLUMN provider TYPE text COLLATE "C",
                             ALTER COLUMN object_type TYPE text COLLATE "C",
                             ALTER COLUMN object_id TYPE text COLLATE "C";

CREATE FUNCTION syncbridge_inbox_queue_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_queue (event_id, provider, status, next_attempt_at)
    SELECT id, provider, status, next_attempt_at FROM new_rows
    WHERE status IN ('pending', 'failed');
    RETURN NULL;
END
$$;

CREATE FUNCTION syncbridge_inbox_queue_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Closed: out of the queue.
    DELETE FROM webhook_queue q USING new_rows n
    WHERE q.event_id = n.id AND n.status NOT IN ('pending', 'failed');
    -- Retried, failed for good, or set back to pending.
    INSERT INTO webhook_queue (event_id, provider, status, next_attempt_at)
    SELECT n.id, n.provider, n.status, n.next_attempt_at
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status IN ('pending', 'failed')
      AND (o.status, o.next_attempt_at) IS DISTINCT FROM (n.status, n.next_attempt_at)
    ON CONFLICT (event_id) DO UPDATE
        SET status = excluded.status, next_attempt_at = excluded.next_attempt_at;
    RETURN NULL;
END
$$;

CREATE FUNCTION syncbridge_inbox_queue_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM webhook_queue q USING old_rows o WHERE q.event_id = o.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_events_queue_insert AFTER INSERT ON webhook_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION syncbridge_inbox_queue_insert();
CREATE TRIGGER webhook_events_queue_update AFTER UPDATE ON webhook_events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION syncbridge_inbox_queue_update();
CREATE TRIGGER webhook_events_queue_delete AFTER DELETE ON webhook_events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION syncbridge_inbox_queue_delete();

-- Audit rows and conflicts are only ever appended: a time-ordered UUIDv7
-- (48 bits of Unix milliseconds, then random bits) puts each new key at
-- the right edge of the primary key's btree instead of on a random page.
-- PostgreSQL 18 has uuidv7(); this is its layout for 15 and later.
CREATE FUNCTION syncbridge_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
ALTER TABLE sync_audit_log ALTER COLUMN id SET DEFAULT syncbridge_uuid_v7();
ALTER TABLE sync_conflicts ALTER COLUMN id SET DEFAULT syncbridge_uuid_v7();
