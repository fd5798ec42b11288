-- Keap seed (001-keap-comprehensive-sync-schema): the four synced entity
-- tables, the seed's functions, views, policies and indexes, corrected for
-- Postgres and built on the engine's own tables (SPEC §3, "one engine, not
-- one per provider"): the seed's sync_queue, sync_status and sync_conflicts
-- are the outbox, a view over links/outbox/conflicts, and 0006's conflicts
-- table; its sync_audit_log is 0004's. Nothing here copies their data.
--
-- Seed corrections made throughout: gen_random_uuid() instead of
-- uuid-ossp's uuid_generate_v4(); MySQL-style inline INDEX clauses become
-- CREATE INDEX; the sync_status values 'completed' and 'error', which no
-- CHECK allows, become 'synced' and 'failed'; pg_cron jobs are not
-- scheduled (the service's scheduler keeps the audit partitions, autovacuum
-- does the seed's nightly VACUUM ANALYZE).

-- ---------------------------------------------------------------------------
-- Entity tables
-- ---------------------------------------------------------------------------

-- Keap contacts. keap_id keeps the seed's varchar(255) (Keap ids are
-- numbers; the seed's functions handle them as text) under a UNIQUE
-- constraint, the arbiter of every upsert; local-only contacts have none.
-- Corrected: email is nullable (a Keap contact may have no address), the
-- seed's separate keap_id index is dropped (the constraint is that index),
-- every status column is constrained, the auth.users references are
-- ON DELETE SET NULL (deleting a user must not fail on their contacts).
CREATE TABLE sync_contacts (
    id             uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    keap_id        varchar(255),
    email          varchar(255),
    first_name     varchar(255),
    last_name      varchar(255),
    phone          varchar(50),
    company        varchar(255),
    tags           jsonb        DEFAULT '[]'::jsonb,
    custom_fields  jsonb        DEFAULT '{}'::jsonb,
    source_system  varchar(50)  NOT NULL DEFAULT 'supabase'
        CHECK (source_system IN ('keap', 'supabase', 'manual')),
    -- sync metadata
    last_synced_at timestamptz,
    sync_status    text         NOT NULL DEFAULT 'pending'
        CHECK (sync_status IN ('pending', 'synced', 'failed', 'skipped', 'conflict')),
    sync_error     text,
    version        integer      NOT NULL DEFAULT 1,
    -- audit fields
    created_at     timestamptz  NOT NULL DEFAULT now(),
    updated_at     timestamptz  NOT NULL DEFAULT now(),
    created_by     uuid REFERENCES auth.users (id) ON DELETE SET NULL,
    updated_by     uuid REFERENCES auth.users (id) ON DELETE SET NULL,
    -- soft delete
    deleted_at     timestamptz,
    deleted_by     uuid REFERENCES auth.users (id) ON DELETE SET NULL,
    CONSTRAINT sync_contacts_keap_id_key UNIQUE (keap_id)
);
CREATE INDEX idx_sync_contacts_email ON sync_contacts (email);
-- Corrected: the seed indexes every row's status; the queries that use it
-- look for the rows needing attention, so synced rows stay out of it.
CREATE INDEX idx_sync_contacts_sync_status ON sync_contacts (sync_status)
    WHERE sync_status <> 'synced';
CREATE INDEX idx_sync_contacts_updated_at ON sync_contacts (updated_at);

-- Keap orders. keap_contact_id is Keap's id of the order's contact, so an
-- order that arrives before its contact keeps the reference; contact_id is
-- filled from it as soon as the contact exists (triggers below).
CREATE TABLE sync_orders (
    id               uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    keap_id          varchar(255),
    contact_id       uuid REFERENCES sync_contacts (id) ON DELETE SET NULL,
    keap_contact_id  varchar(255),
    order_number     varchar(255),
    order_date       timestamptz   NOT NULL,
    total_amount     numeric(10,2) NOT NULL,
    currency         varchar(3)    NOT NULL DEFAULT 'USD',
    status           varchar(50)   NOT NULL,
    line_items       jsonb         DEFAULT '[]'::jsonb,
    shipping_address jsonb,
    billing_address  jsonb,
    -- sync metadata
    last_synced_at   timestamptz,
    sync_status      text          NOT NULL DEFAULT 'pending'
        CHECK (sync_status IN ('pending', 'synced', 'failed', 'skipped', 'conflict')),
    sync_error       text,
    version          integer       NOT NULL DEFAULT 1,
    -- audit fields
    created_at       timestamptz   NOT NULL DEFAULT now(),
    updated_at       timestamptz   NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CONSTRAINT sync_orders_keap_id_key UNIQUE (keap_id),
    CONSTRAINT sync_orders_order_number_key UNIQUE (order_number)
);
CREATE INDEX idx_sync_orders_contact_id ON sync_orders (contact_id);
CREATE INDEX idx_sync_orders_order_date ON sync_orders (order_date);
CREATE INDEX idx_sync_orders_status ON sync_orders (status);
-- Orders still waiting for their contact.
CREATE INDEX idx_sync_orders_keap_contact_unlinked ON sync_orders (keap_contact_id)
    WHERE contact_id IS NULL AND keap_contact_id IS NOT NULL;

-- Keap tags. Corrected: the seed makes name UNIQUE, but Keap does not
-- (two categories may each hold a tag of the same name), and a second one
-- would fail the sync; name is indexed instead. keap_id identifies a tag.
CREATE TABLE sync_tags (
    id             uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    keap_id        varchar(255),
    name           varchar(255) NOT NULL,
    category       varchar(255),
    description    text,
    color          varchar(7),
    -- sync metadata
    last_synced_at timestamptz,
    sync_status    text         NOT NULL DEFAULT 'pending'
        CHECK (sync_status IN ('pending', 'synced', 'failed', 'skipped', 'conflict')),
    sync_error     text,
    created_at     timestamptz  NOT NULL DEFAULT now(),
    updated_at     timestamptz  NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    CONSTRAINT sync_tags_keap_id_key UNIQUE (keap_id)
);
CREATE INDEX idx_sync_tags_name ON sync_tags (name);

-- Keap subscriptions. Keap's subscription carries product and plan ids,
-- not a product name, so product_name is nullable here (corrected: the
-- seed's NOT NULL would reject every subscription Keap sends) and the ids
-- are kept beside it, with the billing frequency and next bill date.
CREATE TABLE sync_subscriptions (
    id                uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    keap_id           varchar(255),
    contact_id        uuid REFERENCES sync_contacts (id) ON DELETE SET NULL,
    keap_contact_id   varchar(255),
    keap_product_id   varchar(255),
    keap_plan_id      varchar(255),
    product_name      varchar(255),
    status            varchar(50)   NOT NULL,
    start_date        timestamptz   NOT NULL,
    end_date          timestamptz,
    billing_cycle     varchar(50),
    billing_frequency integer,
    amount            numeric(10,2),
    next_bill_date    timestamptz,
    -- sync metadata
    last_synced_at    timestamptz,
    sync_status       text          NOT NULL DEFAULT 'pending'
        CHECK (sync_status IN ('pending', 'synced', 'failed', 'skipped', 'conflict')),
    sync_error        text,
    created_at        timestamptz   NOT NULL DEFAULT now(),
    updated_at        timestamptz   NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    CONSTRAINT sync_subscriptions_keap_id_key UNIQUE (keap_id)
);
CREATE INDEX idx_sync_subscriptions_contact_id ON sync_subscriptions (contact_id);
CREATE INDEX idx_sync_subscriptions_status ON sync_subscriptions (status);
CREATE INDEX idx_sync_subscriptions_keap_contact_unlinked ON sync_subscriptions (keap_contact_id)
    WHERE contact_id IS NULL AND keap_contact_id IS NOT NULL;

-- The seed's performance indexes. Corrected: 'completed' is no sync_status
-- value; 'synced' is what it meant.
CREATE INDEX idx_sync_contacts_email_status ON sync_contacts (email, sync_status)
    WHERE deleted_at IS NULL;
CREATE INDEX idx_sync_orders_date_status ON sync_orders (order_date DESC, sync_status)
    WHERE sync_status <> 'synced';
CREATE INDEX idx_active_contacts ON sync_contacts (updated_at DESC)
    WHERE deleted_at IS NULL AND sync_status = 'synced';
CREATE INDEX idx_contacts_tags ON sync_contacts USING gin (tags);
CREATE INDEX idx_contacts_custom ON sync_contacts USING gin (custom_fields);
-- On the partitioned parent: every partition, present and future, gets it.
CREATE INDEX idx_audit_log_created ON sync_audit_log USING brin (created_at);

-- ---------------------------------------------------------------------------
-- Contact links of orders and subscriptions
-- ---------------------------------------------------------------------------

-- Keeps contact_id and keap_contact_id in step on an order or subscription:
-- a Keap contact id with no local contact yet resolves when it can; a local
-- change of contact_id carries the contact's Keap id along (that is what a
-- push to Keap sends).
CREATE FUNCTION sync_link_keap_contact() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.contact_id IS NOT NULL
       AND (TG_OP = 'INSERT' AND NEW.keap_contact_id IS NULL
            OR TG_OP = 'UPDATE' AND NEW.contact_id IS DISTINCT FROM OLD.contact_id
                                AND NEW.keap_contact_id IS NOT DISTINCT FROM OLD.keap_contact_id) THEN
        SELECT c.keap_id INTO NEW.keap_contact_id FROM sync_contacts c WHERE c.id = NEW.contact_id;
    ELSIF NEW.contact_id IS NULL AND NEW.keap_contact_id IS NOT NULL THEN
        SELECT c.id INTO NEW.contact_id FROM sync_contacts c WHERE c.keap_id = NEW.keap_contact_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER sync_orders_link_contact
    BEFORE INSERT OR UPDATE OF contact_id, keap_contact_id ON sync_orders
    FOR EACH ROW EXECUTE FUNCTION sync_link_keap_contact();
CREATE TRIGGER sync_subscriptions_link_contact
    BEFORE INSERT OR UPDATE OF contact_id, keap_contact_id ON sync_subscriptions
    FOR EACH ROW EXECUTE FUNCTION sync_link_keap_contact();

-- When contacts arrive (or get their Keap id), the orders and subscriptions
-- that were waiting for them are linked: once per statement, joining the
-- waiting rows (the partial indexes above; normally none, and then the
-- check is one index probe) to their contacts. Not per row and without
-- transition tables, which would copy every row of a bulk upsert.
CREATE FUNCTION sync_contacts_link_waiting() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM sync_orders
               WHERE contact_id IS NULL AND keap_contact_id IS NOT NULL) THEN
        UPDATE sync_orders o SET contact_id = c.id
        FROM sync_contacts c
        WHERE o.contact_id IS NULL AND o.keap_contact_id IS NOT NULL
          AND c.keap_id = o.keap_contact_id;
    END IF;
    IF EXISTS (SELECT 1 FROM sync_subscriptions
               WHERE contact_id IS NULL AND keap_contact_id IS NOT NULL) THEN
        UPDATE sync_subscriptions s SET contact_id = c.id
        FROM sync_contacts c
        WHERE s.contact_id IS NULL AND s.keap_contact_id IS NOT NULL
          AND c.keap_id = s.keap_contact_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER sync_contacts_link_waiting
    AFTER INSERT OR UPDATE OF keap_id ON sync_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION sync_contacts_link_waiting();

-- ---------------------------------------------------------------------------
-- trigger_sync_on_update()
-- ---------------------------------------------------------------------------

-- BEFORE UPDATE on sync_contacts and sync_orders, as the seed attaches it:
-- when the row's data changed (any column but the bookkeeping ones below),
-- bump version and updated_at, and audit the change with its real origin.
-- Corrected:
--  * the seed queued every update into sync_queue; the capture trigger
--    (0005) already writes the outbox for exactly the changes a provider
--    must receive, so a second row would push twice. Nothing is queued here.
--  * the seed audited every write as 'supabase'; the origin is the
--    transaction's syncbridge.origin ('supabase' when unset). Writes by the
--    service itself (origin = a provider) are audited by the engine with its
--    decision, so they are not audited twice here.
--  * a write that changes only bookkeeping (the dispatcher marking a row
--    synced) is not a new version and is not audited.
CREATE FUNCTION trigger_sync_on_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_origin text := coalesce(nullif(current_setting('syncbridge.origin', true), ''), 'supabase');
    v_data   record;
    v_old    jsonb;
    v_new    jsonb;
BEGIN
    -- A record's Keap link always names its keap_id: when keap_id changes,
    -- a link to another Keap object is stale (the next sync makes the new
    -- one). batch_upsert_contacts relies on it.
    IF NEW.keap_id IS DISTINCT FROM OLD.keap_id THEN
        DELETE FROM sync_links
        WHERE entity_type = TG_TABLE_NAME AND local_id = NEW.id AND provider = 'keap'
          AND slot = 'primary' AND remote_id IS DISTINCT FROM NEW.keap_id;
    END IF;

    -- NEW with the bookkeeping columns put back to OLD's values: equal to
    -- OLD exactly when no data column changed.
    v_data := NEW;
    v_data.updated_at     := OLD.updated_at;
    v_data.created_at     := OLD.created_at;
    v_data.version        := OLD.version;
    v_data.last_synced_at := OLD.last_synced_at;
    v_data.sync_status    := OLD.sync_status;
    v_data.sync_error     := OLD.sync_error;
    v_data.keap_id        := OLD.keap_id;
    IF v_data IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;

    NEW.updated_at := now();
    NEW.version    := OLD.version + 1;

    IF v_origin IN ('supabase', 'local', 'manual') THEN
        v_old := to_jsonb(OLD);
        v_new := to_jsonb(NEW);
        INSERT INTO sync_audit_log
            (entity_type, entity_id, operation, old_data, new_data, changed_fields,
             sync_source, user_id)
        VALUES (
            TG_TABLE_NAME, NEW.id, TG_OP, v_old, v_new,
            ARRAY(SELECT n.key FROM jsonb_each(v_new) n
                  WHERE n.value IS DISTINCT FROM v_old -> n.key
                    AND n.key NOT IN ('updated_at', 'created_at', 'version', 'last_synced_at',
                                      'sync_status', 'sync_error', 'keap_id')
                  ORDER BY n.key),
            v_origin, auth.uid());
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER sync_contacts_update
    BEFORE UPDATE ON sync_contacts
    FOR EACH ROW EXECUTE FUNCTION trigger_sync_on_update();
CREATE TRIGGER sync_orders_update
    BEFORE UPDATE ON sync_orders
    FOR EACH ROW EXECUTE FUNCTION trigger_sync_on_update();
-- Tags and subscriptions have no version; their updated_at is kept current
-- by 0003's trigger function.
CREATE TRIGGER sync_tags_touch_updated_at
    BEFORE UPDATE ON sync_tags
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();
CREATE TRIGGER sync_subscriptions_touch_updated_at
    BEFORE UPDATE ON sync_subscriptions
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();

-- ---------------------------------------------------------------------------
-- sync_queue: the seed's queue, as a view over the outbox
-- ---------------------------------------------------------------------------

-- One row per outbox row, under the seed's names. The outbox holds no copy
-- of the record (the dispatcher pushes the record's state at push time), so
-- payload describes the change: provider, origin, changed columns, and for a
-- delete the row as it was. priority is the seed's default (the outbox is
-- first in, first out per record); max_attempts is the dispatcher's
-- SYNCBRIDGE_PUSH_MAX_ATTEMPTS default.
CREATE VIEW sync_queue AS
SELECT o.id,
       CASE o.operation
           WHEN 'INSERT' THEN 'create'
           WHEN 'UPDATE' THEN 'update'
           WHEN 'DELETE' THEN 'delete'
           ELSE 'sync'
       END::varchar(50)                       AS operation,
       o.table_name::varchar(50)              AS entity_type,
       o.record_id                            AS entity_id,
       jsonb_strip_nulls(jsonb_build_object(
           'provider', o.provider,
           'origin', o.origin,
           'changed_columns', to_jsonb(o.changed_columns),
           'old_row', o.old_row))             AS payload,
       5                                      AS priority,
       CASE o.status WHEN 'done' THEN 'completed' ELSE o.status END::varchar(50) AS status,
       o.attempts,
       8                                      AS max_attempts,
       o.next_attempt_at                      AS scheduled_at,
       NULL::timestamptz                      AS started_at,
       o.processed_at                         AS completed_at,
       o.error                                AS error_message,
       o.created_at,
       o.provider,
       o.origin
FROM sync_outbox o;

-- The seed's INSERT INTO sync_queue (operation, entity_type, entity_id,
-- payload, ...) lands in the outbox: provider from payload->>'provider',
-- else 'keap'; only for a table that provider is tracking (the dispatcher
-- refuses others); the doorbell is rung as the capture trigger does.
CREATE FUNCTION sync_queue_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_provider text := coalesce(NEW.provider, NEW.payload ->> 'provider', 'keap');
    v_op       text;
    v_status   text;
BEGIN
    v_op := CASE lower(coalesce(NEW.operation, 'sync'))
                WHEN 'create' THEN 'INSERT' WHEN 'insert' THEN 'INSERT'
                WHEN 'update' THEN 'UPDATE'
                WHEN 'delete' THEN 'DELETE'
                WHEN 'sync'   THEN 'SYNC'
            END;
    IF v_op IS NULL THEN
        RAISE EXCEPTION 'sync_queue: operation % is not create, update, delete or sync', NEW.operation
            USING ERRCODE = 'check_violation';
    END IF;
    v_status := CASE lower(coalesce(NEW.status, 'pending'))
                    WHEN 'completed' THEN 'done' WHEN 'done' THEN 'done'
                    WHEN 'error' THEN 'failed' WHEN 'failed' THEN 'failed'
                    WHEN 'skipped' THEN 'skipped'
                    ELSE 'pending'
                END;
    IF NOT EXISTS (SELECT 1 FROM syncbridge_capture
                   WHERE table_name = NEW.entity_type AND provider = v_provider) THEN
        RAISE EXCEPTION 'sync_queue: table % is not synced to %', NEW.entity_type, v_provider
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'SELECT syncbridge_track_table(table, provider, ignore_columns)';
    END IF;

    INSERT INTO sync_outbox (provider, table_name, record_id, operation, changed_columns,
                             origin, old_row, status, attempts, next_attempt_at, error,
                             processed_at)
    VALUES (v_provider, NEW.entity_type, NEW.entity_id, v_op,
            CASE WHEN jsonb_typeof(NEW.payload -> 'changed_columns') = 'array' THEN
                ARRAY(SELECT jsonb_array_elements_text(NEW.payload -> 'changed_columns'))
            END,
            coalesce(nullif(current_setting('syncbridge.origin', true), ''), 'local'),
            CASE WHEN v_op = 'DELETE' THEN coalesce(NEW.payload -> 'old_row', NEW.payload) END,
            v_status, coalesce(NEW.attempts, 0), coalesce(NEW.scheduled_at, now()),
            NEW.error_message, NEW.completed_at)
    RETURNING id, created_at INTO NEW.id, NEW.created_at;

    IF v_status = 'pending' THEN
        UPDATE syncbridge_doorbell SET armed = false
        WHERE channel = 'syncbridge_outbox' AND armed;
        IF FOUND THEN
            PERFORM pg_notify('syncbridge_outbox', '');
        END IF;
    END IF;
    -- What RETURNING shows: the row as the view now reads it.
    NEW.operation    := CASE v_op WHEN 'INSERT' THEN 'create' ELSE lower(v_op) END;
    NEW.status       := CASE v_status WHEN 'done' THEN 'completed' ELSE v_status END;
    NEW.priority     := 5;
    NEW.max_attempts := 8;
    NEW.attempts     := coalesce(NEW.attempts, 0);
    NEW.scheduled_at := coalesce(NEW.scheduled_at, now());
    NEW.provider     := v_provider;
    NEW.origin       := coalesce(nullif(current_setting('syncbridge.origin', true), ''), 'local');
    RETURN NEW;
END
$$;

CREATE TRIGGER sync_queue_insert
    INSTEAD OF INSERT ON sync_queue
    FOR EACH ROW EXECUTE FUNCTION sync_queue_insert();

-- ---------------------------------------------------------------------------
-- sync_status: the seed's status table, as a view
-- ---------------------------------------------------------------------------

-- One row per (entity, provider) the engine knows: linked, with changes in
-- the outbox, or in open conflict. Corrected: the seed kept a table the
-- service would have had to update beside the link table and the outbox;
-- this view reads them. The status is the most urgent of: an open
-- conflict, changes waiting (pending), a push failed since the last
-- successful sync (failed), synced. id is stable per (entity, provider).
CREATE VIEW sync_status AS
SELECT md5(e.entity_type || ':' || e.entity_id || ':' || e.provider)::uuid AS id,
       e.entity_type::varchar(50)                           AS entity_type,
       e.entity_id,
       l.remote_id::varchar(255)                            AS keap_id,
       e.entity_id                                          AS supabase_id,
       (CASE WHEN cap.provider IS NOT NULL THEN 'bidirectional'
             ELSE e.provider || '_to_supabase' END)::varchar(50) AS sync_direction,
       l.last_synced_at                                     AS last_sync_at,
       (CASE
            WHEN c.open_conflicts > 0 THEN 'conflict'
            WHEN o.pending > 0 THEN 'pending'
            WHEN o.last_failed_at > coalesce(l.last_synced_at, '-infinity') THEN 'failed'
            WHEN l.last_synced_at IS NOT NULL THEN 'synced'
            ELSE 'pending'
        END)::varchar(50)                                   AS last_sync_status,
       o.last_error                                         AS last_sync_error,
       coalesce(o.retry_count, 0)                           AS retry_count,
       o.next_retry_at,
       coalesce(l.created_at, least(o.first_at, c.first_at)) AS created_at,
       greatest(l.updated_at, o.last_at, c.last_at)         AS updated_at,
       e.provider
FROM (
    SELECT entity_type, local_id AS entity_id, provider
    FROM sync_links WHERE slot = 'primary' AND deleted_at IS NULL
    UNION
    SELECT table_name, record_id, provider
    FROM sync_outbox WHERE status = 'pending' OR status = 'failed'
    UNION
    SELECT entity_type, entity_id, provider
    FROM sync_conflicts WHERE status = 'open'
) e
LEFT JOIN sync_links l
       ON l.entity_type = e.entity_type AND l.local_id = e.entity_id
      AND l.provider = e.provider AND l.slot = 'primary' AND l.deleted_at IS NULL
LEFT JOIN (
    SELECT table_name, record_id, provider,
           count(*) FILTER (WHERE status = 'pending')                          AS pending,
           max(attempts) FILTER (WHERE status = 'pending')                     AS retry_count,
           min(next_attempt_at) FILTER (WHERE status = 'pending' AND attempts > 0) AS next_retry_at,
           max(coalesce(processed_at, created_at)) FILTER (WHERE status = 'failed') AS last_failed_at,
           (array_agg(error ORDER BY id DESC) FILTER (WHERE error IS NOT NULL))[1] AS last_error,
           min(created_at)                                                     AS first_at,
           max(coalesce(processed_at, created_at))                             AS last_at
    FROM sync_outbox
    -- OR, not IN: each arm can use its partial index (0005)
    WHERE status = 'pending' OR status = 'failed'
    GROUP BY table_name, record_id, provider
) o ON o.table_name = e.entity_type AND o.record_id = e.entity_id AND o.provider = e.provider
LEFT JOIN (
    SELECT entity_type, entity_id, provider,
           count(*) AS open_conflicts, min(detected_at) AS first_at, max(detected_at) AS last_at
    FROM sync_conflicts
    WHERE status = 'open'
    GROUP BY entity_type, entity_id, provider
) c ON c.entity_type = e.entity_type AND c.entity_id = e.entity_id AND c.provider = e.provider
LEFT JOIN syncbridge_capture cap
       ON cap.table_name = e.entity_type AND cap.provider = e.provider;

-- Corrected: the seed grants this to anon; sync state is not for
-- unauthenticated callers.
GRANT SELECT ON sync_status TO authenticated, service_role;

-- ---------------------------------------------------------------------------
-- sync_health
-- ---------------------------------------------------------------------------

-- Per entity type: the seed's columns plus the engine's queue, conflict and
-- audit figures. Corrected: the seed counted 'completed'/'error' rows of a
-- status table no one writes; here the record counts come from the Keap
-- tables' own sync_status, queue depth and failed pushes from the outbox,
-- open conflicts from sync_conflicts (status 'open', not every row ever
-- recorded), recent activity from the audit log (last 24 hours, which the
-- partitioning prunes to). avg_sync_time is the seconds from a local change
-- to its push over the last hour (the seed's last_synced_at - created_at
-- measured the record's age, not the sync). Other synced tables (clients,
-- ...) appear with the engine's figures only.
CREATE VIEW sync_health AS
SELECT entity_type::varchar(50) AS entity_type,
       t.total_records,
       t.synced,
       t.errors,
       q.avg_sync_time,
       t.pending,
       t.conflicted,
       coalesce(q.queue_depth, 0)        AS queue_depth,
       q.oldest_pending_at,
       coalesce(q.failed_pushes, 0)      AS failed_pushes,
       coalesce(c.open_conflicts, 0)     AS open_conflicts,
       coalesce(a.audit_events_24h, 0)   AS audit_events_24h,
       coalesce(a.audit_errors_24h, 0)   AS audit_errors_24h,
       a.last_activity_at
FROM (
    SELECT 'sync_contacts'::text AS entity_type, count(*) AS total_records,
           count(*) FILTER (WHERE sync_status = 'synced')   AS synced,
           count(*) FILTER (WHERE sync_status = 'failed')   AS errors,
           count(*) FILTER (WHERE sync_status = 'pending')  AS pending,
           count(*) FILTER (WHERE sync_status = 'conflict') AS conflicted
    FROM sync_contacts WHERE deleted_at IS NULL
    UNION ALL
    SELECT 'sync_orders', count(*),
           count(*) FILTER (WHERE sync_status = 'synced'),
           count(*) FILTER (WHERE sync_status = 'failed'),
           count(*) FILTER (WHERE sync_status = 'pending'),
           count(*) FILTER (WHERE sync_status = 'conflict')
    FROM sync_orders WHERE deleted_at IS NULL
    UNION ALL
    SELECT 'sync_tags', count(*),
           count(*) FILTER (WHERE sync_status = 'synced'),
           count(*) FILTER (WHERE sync_status = 'failed'),
           count(*) FILTER (WHERE sync_status = 'pending'),
           count(*) FILTER (WHERE sync_status = 'conflict')
    FROM sync_tags WHERE deleted_at IS NULL
    UNION ALL
    SELECT 'sync_subscriptions', count(*),
           count(*) FILTER (WHERE sync_status = 'synced'),
           count(*) FILTER (WHERE sync_status = 'failed'),
           count(*) FILTER (WHERE sync_status = 'pending'),
           count(*) FILTER (WHERE sync_status = 'conflict')
    FROM sync_subscriptions WHERE deleted_at IS NULL
) t
FULL JOIN (
    SELECT table_name AS entity_type,
           count(*) FILTER (WHERE status = 'pending') AS queue_depth,
           min(created_at) FILTER (WHERE status = 'pending') AS oldest_pending_at,
           count(*) FILTER (WHERE status = 'failed') AS failed_pushes,
           round(avg(extract(epoch FROM processed_at - created_at))
                 FILTER (WHERE status = 'done' AND processed_at > now() - interval '1 hour'), 3)
               AS avg_sync_time
    FROM sync_outbox
    GROUP BY table_name
) q USING (entity_type)
FULL JOIN (
    SELECT entity_type::text AS entity_type, count(*) AS open_conflicts
    FROM sync_conflicts WHERE status = 'open'
    GROUP BY entity_type
) c USING (entity_type)
FULL JOIN (
    SELECT entity_type::text AS entity_type,
           count(*) AS audit_events_24h,
           count(*) FILTER (WHERE error IS NOT NULL OR decision = 'failed') AS audit_errors_24h,
           max(created_at) AS last_activity_at
    FROM sync_audit_log
    WHERE created_at > now() - interval '24 hours'
    GROUP BY entity_type
) a USING (entity_type);

-- ---------------------------------------------------------------------------
-- detect_sync_conflict()
-- ---------------------------------------------------------------------------

-- The seed's signature and comparison: the keys whose values differ
-- between the Keap and the local version. When any differ, records an open
-- conflict (superseding the entity's earlier open ones, so one stays open)
-- with the link's remote id and last-synced snapshot, and returns its id;
-- NULL when the versions are equal (or one is missing: nothing to
-- compare). Corrected: the seed left earlier conflicts open beside the new
-- one, and two concurrent calls could both insert; a transaction-scoped
-- advisory lock per entity serialises them.
CREATE FUNCTION detect_sync_conflict(
    p_entity_type   varchar,
    p_entity_id     uuid,
    p_keap_data     jsonb,
    p_supabase_data jsonb
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_conflict_id     uuid;
    v_conflict_fields text[];
BEGIN
    IF p_entity_type IS NULL OR p_entity_id IS NULL
       OR p_keap_data IS NULL OR p_supabase_data IS NULL THEN
        RETURN NULL;
    END IF;

    SELECT array_agg(key ORDER BY key) INTO v_conflict_fields
    FROM jsonb_each(p_keap_data) k
    FULL JOIN jsonb_each(p_supabase_data) s USING (key)
    WHERE k.value IS DISTINCT FROM s.value;

    IF v_conflict_fields IS NULL THEN
        RETURN NULL;
    END IF;

    PERFORM pg_advisory_xact_lock(hashtextextended('sync_conflicts:' || p_entity_type || ':' || p_entity_id, 0));
    UPDATE sync_conflicts SET status = 'superseded'
    WHERE entity_type = p_entity_type AND entity_id = p_entity_id
      AND provider = 'keap' AND status = 'open';

    INSERT INTO sync_conflicts (entity_type, entity_id, keap_data, supabase_data,
                                conflict_fields, provider, remote_id, base_data, status)
    SELECT p_entity_type, p_entity_id, p_keap_data, p_supabase_data, v_conflict_fields,
           'keap', l.remote_id, l.snapshot, 'open'
    FROM (SELECT 1) one
    LEFT JOIN sync_links l
           ON l.entity_type = p_entity_type AND l.local_id = p_entity_id
          AND l.provider = 'keap' AND l.slot = 'primary'
    RETURNING id INTO v_conflict_id;

    RETURN v_conflict_id;
END
$$;

-- ---------------------------------------------------------------------------
-- batch_upsert_contacts()
-- ---------------------------------------------------------------------------

-- Applies a batch of Keap contacts, set-based (the seed looped row by row
-- with an exception block, i.e. a subtransaction, per row).
-- Each element is an object with keap_id and any of email, first_name,
-- last_name, phone, company, tags (array), custom_fields (object); a key
-- that is absent keeps the stored value, a null clears it.
--
--  * failed: no usable keap_id, or data the table cannot hold (not an
--    object, an invalid email, a value too long, tags not an array,
--    custom_fields not an object); one audit row each, with the reason.
--  * a keap_id repeated in the batch: the last valid element wins; the
--    earlier ones are counted with the winner's outcome.
--  * conflicts: the local row holds a change Keap has not received
--    (sync_status pending, conflict or failed) and differs from Keap's: it is
--    not overwritten, its status becomes 'conflict', and a sync_conflicts
--    row (both versions, the differing fields, the last-synced snapshot)
--    replaces the contact's earlier open one.
--  * succeeded: inserted or updated, sync_status 'synced', last_synced_at
--    now(); the Keap link (sync_links) and its snapshot upserted; one audit
--    row each.
-- Everything runs with syncbridge.origin = 'keap' (the previous value is
-- restored), so the capture trigger does not send the rows back to Keap.
-- Corrected from the seed: its unique_violation branch could never fire
-- (ON CONFLICT absorbs it) and took the local uuid from the Keap payload;
-- its failure branch queued a push of invalid data; it set the status
-- 'completed', which is not a status; it never recorded the Keap link.
--
-- Two statements. The first validates, audits the failures and reduces the
-- batch to one element per keap_id. The second applies it; it is run with
-- EXECUTE so that it is planned for the batch at hand: its CTEs join each
-- other, and a cached generic plan (which assumes ten rows) joins them by
-- nested loop, quadratic in the batch (seconds for 10,000 rows). Planned
-- with the real size it hashes them; lookups in the tables are LATERAL or
-- = ANY(array) index probes either way. JIT is off: compiling this
-- statement costs more than running it.
CREATE FUNCTION batch_upsert_contacts(p_contacts jsonb[])
RETURNS TABLE (succeeded integer, failed integer, conflicts integer)
LANGUAGE plpgsql
SET jit = off
AS $fn$
#variable_conflict use_column
DECLARE
    v_prev_origin text := current_setting('syncbridge.origin', true);
    v_total       integer := coalesce(cardinality(p_contacts), 0);
    v_failed      integer;
    v_conflicts   integer;
    v_keys        text[];
    v_docs        jsonb[];
    v_copies      integer[];
BEGIN
    IF v_total = 0 THEN
        RETURN QUERY SELECT 0, 0, 0;
        RETURN;
    END IF;
    PERFORM set_config('syncbridge.origin', 'keap', true);

    -- 1. Validate; audit the failures; the last valid element per keap_id
    --    and how many elements it stands for.
    WITH input AS (
        SELECT u.ord, u.c,
               CASE WHEN jsonb_typeof(u.c -> 'keap_id') IN ('string', 'number')
                    THEN nullif(btrim(u.c ->> 'keap_id'), '') END AS keap_id
        FROM unnest(p_contacts) WITH ORDINALITY AS u(c, ord)
    ),
    checked AS (
        SELECT i.*,
               CASE
                   WHEN i.c IS NULL OR jsonb_typeof(i.c) <> 'object' THEN 'not a JSON object'
                   WHEN jsonb_typeof(i.c -> 'keap_id') NOT IN ('string', 'number', 'null')
                       THEN 'keap_id is not a string or number'
                   WHEN i.keap_id IS NULL THEN 'missing keap_id'
                   WHEN length(i.keap_id) > 255 THEN 'keap_id longer than 255 characters'
                   WHEN jsonb_typeof(i.c -> 'email') NOT IN ('string', 'null') THEN 'email is not a string'
                   WHEN length(i.c ->> 'email') > 255 THEN 'email longer than 255 characters'
                   WHEN nullif(btrim(i.c ->> 'email'), '') !~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'
                       THEN 'invalid email'
                   WHEN jsonb_typeof(i.c -> 'first_name') NOT IN ('string', 'null') THEN 'first_name is not a string'
                   WHEN length(i.c ->> 'first_name') > 255 THEN 'first_name longer than 255 characters'
                   WHEN jsonb_typeof(i.c -> 'last_name') NOT IN ('string', 'null') THEN 'last_name is not a string'
                   WHEN length(i.c ->> 'last_name') > 255 THEN 'last_name longer than 255 characters'
                   WHEN jsonb_typeof(i.c -> 'phone') NOT IN ('string', 'number', 'null') THEN 'phone is not a string'
                   WHEN length(i.c ->> 'phone') > 50 THEN 'phone longer than 50 characters'
                   WHEN jsonb_typeof(i.c -> 'company') NOT IN ('string', 'null') THEN 'company is not a string'
                   WHEN length(i.c ->> 'company') > 255 THEN 'company longer than 255 characters'
                   WHEN jsonb_typeof(i.c -> 'tags') NOT IN ('array', 'null') THEN 'tags is not an array'
                   WHEN jsonb_typeof(i.c -> 'custom_fields') NOT IN ('object', 'null') THEN 'custom_fields is not an object'
               END AS error
        FROM input i
    ),
    audited AS (
        INSERT INTO sync_audit_log (entity_type, entity_id, operation, new_data, sync_source,
                                    sync_destination, decision, error)
        SELECT 'sync_contacts', NULL, 'batch_upsert', k.c, 'keap', 'local', 'failed', k.error
        FROM checked k WHERE k.error IS NOT NULL
    ),
    grouped AS (
        SELECT DISTINCT ON (keap_id) keap_id, c,
               (count(*) OVER (PARTITION BY keap_id))::integer AS copies
        FROM checked WHERE error IS NULL
        ORDER BY keap_id, ord DESC
    )
    SELECT (SELECT count(*) FROM checked WHERE error IS NOT NULL),
           array_agg(keap_id), array_agg(c), array_agg(copies)
    INTO v_failed, v_keys, v_docs, v_copies
    FROM grouped;

    -- 2. Apply.
    EXECUTE $sql$
    WITH diffed AS (
        -- Keap's version to apply (an absent key keeps the local value),
        -- beside the local row as of this statement's snapshot.
        SELECT m.*,
               array_remove(ARRAY[
                   CASE WHEN l_company IS DISTINCT FROM company THEN 'company' END,
                   CASE WHEN l_custom_fields IS DISTINCT FROM custom_fields THEN 'custom_fields' END,
                   CASE WHEN l_email IS DISTINCT FROM email THEN 'email' END,
                   CASE WHEN l_first_name IS DISTINCT FROM first_name THEN 'first_name' END,
                   CASE WHEN l_last_name IS DISTINCT FROM last_name THEN 'last_name' END,
                   CASE WHEN l_phone IS DISTINCT FROM phone THEN 'phone' END,
                   CASE WHEN l_tags IS DISTINCT FROM tags THEN 'tags' END
               ], NULL) AS fields,
               jsonb_build_object('email', email, 'first_name', first_name, 'last_name', last_name,
                                  'phone', phone, 'company', company, 'tags', tags,
                                  'custom_fields', custom_fields) AS snap,
               CASE WHEN local_id IS NOT NULL THEN
                   jsonb_build_object('email', l_email, 'first_name', l_first_name,
                                      'last_name', l_last_name, 'phone', l_phone,
                                      'company', l_company, 'tags', l_tags,
                                      'custom_fields', l_custom_fields)
               END AS local_snap
        FROM (
            SELECT w.keap_id, w.copies, t.id AS local_id,
                   CASE WHEN w.c ? 'email' THEN nullif(btrim(w.c ->> 'email'), '') ELSE t.email END AS email,
                   CASE WHEN w.c ? 'first_name' THEN w.c ->> 'first_name' ELSE t.first_name END AS first_name,
                   CASE WHEN w.c ? 'last_name' THEN w.c ->> 'last_name' ELSE t.last_name END AS last_name,
                   CASE WHEN w.c ? 'phone' THEN w.c ->> 'phone' ELSE t.phone END AS phone,
                   CASE WHEN w.c ? 'company' THEN w.c ->> 'company' ELSE t.company END AS company,
                   CASE WHEN w.c ? 'tags' THEN coalesce(nullif(w.c -> 'tags', 'null'), '[]')
                        ELSE coalesce(t.tags, '[]') END AS tags,
                   CASE WHEN w.c ? 'custom_fields' THEN coalesce(nullif(w.c -> 'custom_fields', 'null'), '{}')
                        ELSE coalesce(t.custom_fields, '{}') END AS custom_fields,
                   t.email AS l_email, t.first_name AS l_first_name, t.last_name AS l_last_name,
                   t.phone AS l_phone, t.company AS l_company, t.tags AS l_tags,
                   t.custom_fields AS l_custom_fields
            FROM unnest($1::text[], $2::jsonb[], $3::integer[]) AS w(keap_id, c, copies)
            LEFT JOIN LATERAL (
                SELECT * FROM sync_contacts t WHERE t.keap_id = w.keap_id LIMIT 1
            ) t ON true
        ) m
    ),
    -- A local row holding a change Keap has not received (pending, or
    -- conflict/failed) that differs from Keap's version is left alone. The
    -- WHERE is checked on the locked, latest row, so a local change
    -- committed after this statement's snapshot is not overwritten either.
    up AS (
        INSERT INTO sync_contacts AS t
            (keap_id, email, first_name, last_name, phone, company, tags, custom_fields,
             source_system, sync_status, last_synced_at)
        SELECT keap_id, email, first_name, last_name, phone, company, tags, custom_fields,
               'keap', 'synced', now()
        FROM diffed
        ON CONFLICT (keap_id) DO UPDATE SET
            email          = EXCLUDED.email,
            first_name     = EXCLUDED.first_name,
            last_name      = EXCLUDED.last_name,
            phone          = EXCLUDED.phone,
            company        = EXCLUDED.company,
            tags           = EXCLUDED.tags,
            custom_fields  = EXCLUDED.custom_fields,
            sync_status    = 'synced',
            sync_error     = NULL,
            last_synced_at = now()
        WHERE t.sync_status NOT IN ('pending', 'conflict', 'failed')
           OR (t.email, t.first_name, t.last_name, t.phone, t.company, t.tags, t.custom_fields)
              IS NOT DISTINCT FROM
              (EXCLUDED.email, EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.phone,
               EXCLUDED.company, EXCLUDED.tags, EXCLUDED.custom_fields)
        RETURNING t.id, t.keap_id
    ),
    applied AS (
        SELECT up.id, d.keap_id, d.snap, d.local_snap, d.fields
        FROM up JOIN diffed d ON d.keap_id = up.keap_id
    ),
    clashed AS (
        SELECT d.keap_id, d.local_id, d.copies, d.snap, d.local_snap, d.fields
        FROM diffed d
        WHERE d.local_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM up WHERE up.keap_id = d.keap_id)
    ),
    -- Arbiter: the remote id. A link left by a deleted local row is taken
    -- over by the new one; a record's own link never names another Keap
    -- id (trigger_sync_on_update drops it when keap_id changes).
    links AS (
        INSERT INTO sync_links (entity_type, local_id, provider, slot, remote_id, snapshot,
                                last_synced_at)
        SELECT 'sync_contacts', a.id, 'keap', 'primary', a.keap_id, a.snap, now()
        FROM applied a
        ON CONFLICT (provider, entity_type, remote_id) DO UPDATE SET
            local_id = EXCLUDED.local_id, snapshot = EXCLUDED.snapshot,
            last_synced_at = now(), deleted_at = NULL, updated_at = now()
    ),
    superseded AS (
        UPDATE sync_conflicts sc SET status = 'superseded'
        WHERE sc.entity_type = 'sync_contacts'
          AND sc.entity_id = ANY ((SELECT array_agg(local_id) FROM clashed)::uuid[])
          AND sc.provider = 'keap' AND sc.status = 'open'
    ),
    recorded AS (
        INSERT INTO sync_conflicts (entity_type, entity_id, keap_data, supabase_data,
                                    conflict_fields, provider, remote_id, base_data, status)
        SELECT 'sync_contacts', k.local_id, k.snap, k.local_snap, k.fields, 'keap', k.keap_id,
               (SELECT l.snapshot FROM sync_links l
                WHERE l.provider = 'keap' AND l.entity_type = 'sync_contacts'
                  AND l.remote_id = k.keap_id),
               'open'
        FROM clashed k
        RETURNING entity_id
    ),
    marked AS (
        UPDATE sync_contacts t SET sync_status = 'conflict'
        WHERE t.id = ANY ((SELECT array_agg(local_id) FROM clashed)::uuid[])
    ),
    audited AS (
        INSERT INTO sync_audit_log (entity_type, entity_id, operation, old_data, new_data,
                                    changed_fields, sync_source, sync_destination, decision)
        SELECT 'sync_contacts', a.id, 'batch_upsert', a.local_snap, a.snap, a.fields,
               'keap', 'local', 'applied'
        FROM applied a
        UNION ALL
        SELECT 'sync_contacts', r.entity_id, 'batch_upsert', NULL, NULL, NULL,
               'keap', 'local', 'conflict'
        FROM recorded r
    )
    SELECT coalesce(sum(copies), 0) FROM clashed
    $sql$
    INTO v_conflicts
    USING v_keys, v_docs, v_copies;

    PERFORM set_config('syncbridge.origin', coalesce(v_prev_origin, ''), true);
    RETURN QUERY SELECT v_total - v_failed - v_conflicts, v_failed, v_conflicts;
END
$fn$;

-- ---------------------------------------------------------------------------
-- create_monthly_partition()
-- ---------------------------------------------------------------------------

-- The seed's no-argument form: the audit log's current and next month
-- (the seed made only the current one, so the first write of a new month
-- could race the job). Calls 0004's create_monthly_partition(table, month).
CREATE FUNCTION create_monthly_partition() RETURNS void
LANGUAGE sql AS $$
    SELECT create_monthly_partition('sync_audit_log', current_date);
    SELECT create_monthly_partition('sync_audit_log', (current_date + interval '1 month')::date);
$$;

-- ---------------------------------------------------------------------------
-- Row level security
-- ---------------------------------------------------------------------------

-- The admin policy reads the caller's role from auth.users'
-- raw_user_meta_data (Supabase's column). Plain Postgres's auth.users (0001)
-- lacks it: add it, and remember that we did.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'auth.users'::regclass AND attname = 'raw_user_meta_data'
                     AND NOT attisdropped) THEN
        ALTER TABLE auth.users ADD COLUMN raw_user_meta_data jsonb;
        INSERT INTO syncbridge_owned_objects VALUES ('column', 'auth.users.raw_user_meta_data')
        ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- Whether the caller is an admin. Corrected: the seed's policy queried
-- auth.users directly, which runs with the caller's privileges, and
-- authenticated may not read auth.users (on Supabase neither): every
-- authenticated query of sync_conflicts would fail. This function reads it
-- as its owner.
CREATE FUNCTION syncbridge_is_admin() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM auth.users
        WHERE id = auth.uid() AND raw_user_meta_data ->> 'role' = 'admin')
$$;
REVOKE ALL ON FUNCTION syncbridge_is_admin() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncbridge_is_admin() TO authenticated, service_role;

-- The table owner (the service) is not subject to these policies, and
-- service_role bypasses them on Supabase (and from 0001 here); the
-- service_role_all policies keep it working where it does not. Corrected:
-- the seed enables RLS on sync_orders without any policy (nobody but the
-- owner could read it) and gives its policies no WITH CHECK.
ALTER TABLE sync_contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_conflicts ENABLE ROW LEVEL SECURITY;

CREATE POLICY service_role_all ON sync_contacts
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON sync_orders
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY service_role_all ON sync_conflicts
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY users_read_own ON sync_contacts
    FOR SELECT TO authenticated
    USING (created_by = auth.uid() OR updated_by = auth.uid());

CREATE POLICY admin_conflicts ON sync_conflicts
    FOR ALL TO authenticated
    USING (syncbridge_is_admin()) WITH CHECK (syncbridge_is_admin());

-- Table privileges (Supabase grants these by default; plain Postgres does
-- not), so that the policies above are what decides. sync_conflicts is
-- 0006's table: grant only what a role lacks and remember it, so the down
-- script revokes only that. authenticated gets SELECT and UPDATE there (the
-- seed grants SELECT; an admin resolving a conflict updates it).
GRANT SELECT, INSERT, UPDATE, DELETE
    ON sync_contacts, sync_orders, sync_tags, sync_subscriptions TO service_role;
GRANT SELECT ON sync_contacts TO authenticated;
DO $$
DECLARE
    g text[];
BEGIN
    FOREACH g SLICE 1 IN ARRAY ARRAY[['authenticated', 'SELECT'], ['authenticated', 'UPDATE'],
                                     ['service_role', 'SELECT'], ['service_role', 'INSERT'],
                                     ['service_role', 'UPDATE'], ['service_role', 'DELETE']] LOOP
        IF NOT has_table_privilege(g[1], 'sync_conflicts', g[2]) THEN
            EXECUTE format('GRANT %s ON sync_conflicts TO %I', g[2], g[1]);
            INSERT INTO syncbridge_owned_objects
            VALUES ('grant', 'sync_conflicts:' || g[1] || ':' || g[2])
            ON CONFLICT DO NOTHING;
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Real-time and change capture
-- ---------------------------------------------------------------------------

-- The seed's REPLICA IDENTITY FULL for real-time subscriptions (whole old
-- rows in logical decoding). sync_status is a view now, which needs none.
ALTER TABLE sync_contacts REPLICA IDENTITY FULL;
ALTER TABLE sync_conflicts REPLICA IDENTITY FULL;

-- Local changes of sync_contacts push to Keap. Not changes: timestamps,
-- sync bookkeeping, version, keap_id (written by the push itself), who
-- made the row, where it came from. Orders, tags and subscriptions mirror
-- Keap one way: Keap's v1 API has no update for them (an order, a tag or a
-- subscription is created once and changed in Keap), so they are not
-- tracked; `SELECT syncbridge_track_table('sync_orders', 'keap', …)` would
-- queue pushes the Keap provider refuses.
SELECT syncbridge_track_table('sync_contacts', 'keap', ARRAY[
    'updated_at', 'created_at', 'last_synced_at', 'sync_status', 'sync_error', 'version',
    'keap_id', 'created_by', 'updated_by', 'deleted_by', 'source_system']);
