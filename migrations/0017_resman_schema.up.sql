-- ResMan lead sync (seed 004): the leasing assistant's tables (property,
-- property_manager, "user", conversation, lead_notification), the
-- per-property integration, and the seed's control tables as views over the
-- engine's own (SPEC §3: one inbox, one outbox, one conflicts table, one
-- audit log, one link table).
--
-- The application's tables may exist already: they are created when
-- absent, the seed's columns added when absent, and both remembered in
-- syncbridge_owned_objects so the down script removes only what was added.
--
-- Seed corrections:
-- - the "index" UNIQUE (conversation_id, created_at) on lead_sync_log is
--   gone (lead_sync_log is a view; the audit log has its own indexes);
-- - the triggers compare with IS DISTINCT FROM (the seed's != is never true
--   when either side is NULL, so a first summary never reset the status);
-- - gen_random_uuid() instead of uuid_generate_v4() (no extension needed);
-- - sync_success_rates takes the property from the conversation (the seed's
--   lead_sync_log has no property_id); property_sync_status counts with
--   subqueries (the seed's two LEFT JOINs multiplied queue items by
--   conflicts);
-- - the CHECKs "synced needs an id" are written so a NULL status passes
--   as any other non-synced one.

DO $$
BEGIN
    IF to_regclass('public.property') IS NULL THEN
        CREATE TABLE property (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'property');
    END IF;
    IF to_regclass('public.property_manager') IS NULL THEN
        CREATE TABLE property_manager (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'property_manager');
    END IF;
    IF to_regclass('public."user"') IS NULL THEN
        CREATE TABLE "user" (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'user');
    END IF;
    IF to_regclass('public.conversation') IS NULL THEN
        CREATE TABLE conversation (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'conversation');
    END IF;
    IF to_regclass('public.lead_notification') IS NULL THEN
        CREATE TABLE lead_notification (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'lead_notification');
    END IF;
END
$$;

SELECT syncbridge_add_owned_column(tbl, col, def) FROM (VALUES
    ('property',          'name',                  'text'),
    ('property',          'address',               'text'),
    ('property',          'created_at',            'timestamptz NOT NULL DEFAULT now()'),
    ('property',          'updated_at',            'timestamptz NOT NULL DEFAULT now()'),
    ('property_manager',  'property_id',           'uuid REFERENCES property (id) ON DELETE SET NULL'),
    ('property_manager',  'first_name',            'text'),
    ('property_manager',  'last_name',             'text'),
    ('property_manager',  'email',                 'text'),
    ('property_manager',  'created_at',            'timestamptz NOT NULL DEFAULT now()'),
    ('user',              'first_name',            'text'),
    ('user',              'last_name',             'text'),
    ('user',              'email',                 'text'),
    ('user',              'phone',                 'text'),
    ('user',              'created_at',            'timestamptz NOT NULL DEFAULT now()'),
    ('user',              'updated_at',            'timestamptz NOT NULL DEFAULT now()'),
    ('user',              'resman_contact_id',     'varchar(100)'),
    ('user',              'resman_sync_status',    $c$varchar(50) DEFAULT 'not_synced' CHECK (resman_sync_status IN ('not_synced', 'syncing', 'synced', 'failed', 'conflict'))$c$),
    ('user',              'resman_last_sync_at',   'timestamptz'),
    ('user',              'resman_sync_version',   'integer NOT NULL DEFAULT 0 CHECK (resman_sync_version >= 0)'),
    ('user',              'resman_custom_fields',  'jsonb'),
    ('conversation',      'property_id',           'uuid REFERENCES property (id) ON DELETE SET NULL'),
    ('conversation',      'user_id',               'uuid REFERENCES "user" (id) ON DELETE SET NULL'),
    ('conversation',      'status',                'text'),
    ('conversation',      'is_qualified',          'boolean NOT NULL DEFAULT false'),
    ('conversation',      'is_book_tour',          'boolean NOT NULL DEFAULT false'),
    ('conversation',      'ai_intent_summary',     'text'),
    ('conversation',      'created_at',            'timestamptz NOT NULL DEFAULT now()'),
    ('conversation',      'updated_at',            'timestamptz NOT NULL DEFAULT now()'),
    ('conversation',      'resman_lead_id',        'varchar(100)'),
    ('conversation',      'resman_sync_status',    $c$varchar(50) DEFAULT 'not_synced' CHECK (resman_sync_status IN ('not_synced', 'syncing', 'synced', 'failed', 'conflict'))$c$),
    ('conversation',      'resman_last_sync_at',   'timestamptz'),
    ('conversation',      'resman_sync_version',   'integer NOT NULL DEFAULT 0 CHECK (resman_sync_version >= 0)'),
    ('conversation',      'resman_custom_fields',  'jsonb'),
    -- what ResMan reports: Prospect | Lost | Applicant | Resident, and why lost
    ('conversation',      'resman_status',         'text'),
    ('conversation',      'resman_lost_reason',    'text'),
    ('lead_notification', 'conversation_id',       'uuid REFERENCES conversation (id) ON DELETE CASCADE'),
    ('lead_notification', 'property_id',           'uuid REFERENCES property (id) ON DELETE SET NULL'),
    ('lead_notification', 'notification_type',     'text'),
    ('lead_notification', 'message',               'text'),
    ('lead_notification', 'created_at',            'timestamptz NOT NULL DEFAULT now()'),
    ('lead_notification', 'resman_notification_id','varchar(100)'),
    ('lead_notification', 'resman_sync_status',    $c$varchar(50) DEFAULT 'not_synced' CHECK (resman_sync_status IN ('not_synced', 'syncing', 'synced', 'failed'))$c$),
    ('lead_notification', 'resman_last_sync_at',   'timestamptz')
) AS t(tbl, col, def);

-- "synced" needs the remote id (the seed's constraints, NULL-safe).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_resman_sync_mapping') THEN
        ALTER TABLE conversation ADD CONSTRAINT chk_resman_sync_mapping
            CHECK (resman_sync_status IS DISTINCT FROM 'synced' OR resman_lead_id IS NOT NULL);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_user_resman_sync_mapping') THEN
        ALTER TABLE "user" ADD CONSTRAINT chk_user_resman_sync_mapping
            CHECK (resman_sync_status IS DISTINCT FROM 'synced' OR resman_contact_id IS NOT NULL);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'chk_notification_resman_sync_mapping') THEN
        ALTER TABLE lead_notification ADD CONSTRAINT chk_notification_resman_sync_mapping
            CHECK (resman_sync_status IS DISTINCT FROM 'synced' OR resman_notification_id IS NOT NULL);
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS idx_conversation_resman_lead_id ON conversation (resman_lead_id);
CREATE INDEX IF NOT EXISTS idx_conversation_resman_sync_status ON conversation (resman_sync_status);
CREATE INDEX IF NOT EXISTS idx_conversation_resman_last_sync ON conversation (resman_last_sync_at);
CREATE INDEX IF NOT EXISTS idx_conversation_property ON conversation (property_id);
CREATE INDEX IF NOT EXISTS idx_conversation_user ON conversation (user_id);
CREATE INDEX IF NOT EXISTS idx_user_resman_contact_id ON "user" (resman_contact_id);
CREATE INDEX IF NOT EXISTS idx_user_resman_sync_status ON "user" (resman_sync_status);
CREATE INDEX IF NOT EXISTS idx_lead_notification_resman_id ON lead_notification (resman_notification_id);
CREATE INDEX IF NOT EXISTS idx_lead_notification_resman_sync ON lead_notification (resman_sync_status);

DROP TRIGGER IF EXISTS syncbridge_conversation_touch_updated_at ON conversation;
CREATE TRIGGER syncbridge_conversation_touch_updated_at BEFORE UPDATE ON conversation
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();
DROP TRIGGER IF EXISTS syncbridge_user_touch_updated_at ON "user";
CREATE TRIGGER syncbridge_user_touch_updated_at BEFORE UPDATE ON "user"
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();

-- ---------------------------------------------------------------------------
-- resman_integration: per property (the seed's table, kept as a table: it
-- is configuration, not a copy of engine data)
-- ---------------------------------------------------------------------------

-- api_credentials holds ResMan's ids for the property (account_id, …),
-- never a secret: the integration partner id and API key come from the
-- environment (RESMAN_INTEGRATION_PARTNER_ID, RESMAN_API_KEY). The CHECK
-- refuses the usual secret keys.
CREATE TABLE resman_integration (
    id                      uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    property_id             uuid        REFERENCES property (id) ON DELETE CASCADE,
    resman_property_id      varchar(100) NOT NULL,
    api_credentials         jsonb       NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(api_credentials) = 'object'
               AND NOT api_credentials ?| ARRAY['api_key', 'apiKey', 'ApiKey', 'password',
                                                'secret', 'token', 'access_token']),
    webhook_url             varchar(255),
    sync_enabled            boolean     NOT NULL DEFAULT true,
    sync_direction          varchar(20) NOT NULL DEFAULT 'bidirectional'
        CHECK (sync_direction IN ('to_resman', 'from_resman', 'bidirectional')),
    sync_frequency          varchar(20) NOT NULL DEFAULT 'realtime'
        CHECK (sync_frequency IN ('realtime', 'hourly', 'daily')),
    last_sync_at            timestamptz DEFAULT now(),
    last_successful_sync_at timestamptz,
    sync_status             varchar(50) NOT NULL DEFAULT 'active'
        CHECK (sync_status IN ('active', 'paused', 'error', 'disconnected')),
    error_count             integer     NOT NULL DEFAULT 0,
    -- the last failure's text, for the status API
    last_error              text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_resman_integration_property UNIQUE (property_id)
);
CREATE TRIGGER resman_integration_touch_updated_at BEFORE UPDATE ON resman_integration
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();
COMMENT ON TABLE resman_integration IS 'Configuration for ResMan integration per property';
COMMENT ON COLUMN resman_integration.api_credentials IS
    'ResMan ids for the property (account_id); never a secret: the API key comes from the environment';

-- Prospects polled from ResMan, as ResMan last reported them (the mirror
-- the router applies from, like Keap's mirror tables): also those no
-- conversation maps to (recorded, not dropped).
CREATE TABLE resman_prospects (
    prospect_id        text        PRIMARY KEY,
    property_id        uuid        REFERENCES property (id) ON DELETE SET NULL,
    resman_property_id text,
    conversation_id    uuid        REFERENCES conversation (id) ON DELETE SET NULL,
    status             text,
    lost_reason        text,
    main_person        jsonb,
    data               jsonb       NOT NULL,
    last_modified      timestamptz,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resman_prospects_conversation_idx ON resman_prospects (conversation_id);
CREATE INDEX resman_prospects_property_idx ON resman_prospects (property_id, last_modified);

-- The severity of a conflict on a field (lead_sync_conflicts): status
-- conflicts high, contact fields medium, anything else low. Edit to taste.
CREATE TABLE lead_sync_severity (
    field    text PRIMARY KEY,
    severity varchar(20) NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical'))
);
INSERT INTO lead_sync_severity VALUES
    ('status', 'high'), ('resman_status', 'high'), ('resman_lost_reason', 'high'),
    ('first_name', 'medium'), ('last_name', 'medium'), ('email', 'medium'), ('phone', 'medium');

-- ---------------------------------------------------------------------------
-- The seed's control tables, as views over the engine's
-- ---------------------------------------------------------------------------

-- lead_sync_log: the audit log's ResMan rows. A push or poll writes its
-- processing time, response and error in the audit row's detail.
CREATE VIEW lead_sync_log AS
SELECT a.id,
       CASE WHEN a.entity_type = 'conversation' THEN a.entity_id END AS conversation_id,
       coalesce(a.detail ->> 'resman_lead_id', a.detail ->> 'remote_id')::varchar(100) AS resman_lead_id,
       (CASE WHEN a.sync_source = 'resman' THEN 'from_resman' ELSE 'to_resman' END)::varchar(20)
           AS sync_direction,
       (CASE WHEN a.error IS NOT NULL THEN 'failed'
             WHEN a.decision = 'manual' THEN 'conflict'
             WHEN a.decision = 'retry' THEN 'retry'
             ELSE 'success' END)::varchar(50) AS sync_status,
       coalesce(a.detail ->> 'sync_type',
                CASE WHEN a.operation = 'INSERT' THEN 'create'
                     WHEN a.decision = 'status_change' THEN 'status_change'
                     ELSE 'update' END)::varchar(50) AS sync_type,
       a.new_data AS sync_data,
       a.detail -> 'response' AS response_data,
       a.error AS error_message,
       (a.detail ->> 'error_code')::varchar(100) AS error_code,
       (CASE a.detail ->> 'strategy'
             WHEN 'prefer_remote' THEN 'resman_wins'
             WHEN 'prefer_local' THEN 'domiq_wins'
             WHEN 'merge' THEN 'merged'
             WHEN 'manual' THEN 'manual_review' END)::varchar(50) AS conflict_resolution,
       a.detail -> 'fields' AS conflict_details,
       coalesce((a.detail ->> 'retry_count')::int, 0) AS retry_count,
       (a.detail ->> 'processing_time_ms')::int AS processing_time_ms,
       a.created_at,
       -- beyond the seed: the property, for the per-property views
       coalesce((a.detail ->> 'property_id')::uuid,
                (SELECT c.property_id FROM conversation c
                 WHERE a.entity_type = 'conversation' AND c.id = a.entity_id)) AS property_id
FROM sync_audit_log a
WHERE a.sync_source = 'resman' OR a.sync_destination = 'resman';

-- lead_sync_queue: the outbox's ResMan rows.
CREATE VIEW lead_sync_queue AS
SELECT o.id,
       CASE WHEN o.table_name = 'conversation' THEN o.record_id END AS conversation_id,
       (SELECT l.remote_id FROM sync_links l
        WHERE l.entity_type = o.table_name AND l.local_id = o.record_id
          AND l.provider = 'resman' AND l.slot = 'primary')::varchar(100) AS resman_lead_id,
       'push'::varchar(50) AS sync_operation,
       jsonb_strip_nulls(jsonb_build_object(
           'table', o.table_name, 'record_id', o.record_id, 'operation', o.operation,
           'changed_columns', to_jsonb(o.changed_columns), 'origin', o.origin)) AS sync_data,
       2 AS priority,
       o.attempts AS retry_count,
       8 AS max_retries,
       o.next_attempt_at AS next_retry_at,
       (CASE o.status WHEN 'done' THEN 'completed' WHEN 'skipped' THEN 'cancelled'
                      ELSE o.status END)::varchar(50) AS status,
       o.error AS error_message,
       o.processed_at,
       o.created_at,
       coalesce(o.processed_at, o.created_at) AS updated_at
FROM sync_outbox o
WHERE o.provider = 'resman';

-- The seed's INSERT INTO lead_sync_queue (conversation_id, sync_operation,
-- sync_data, priority) queues a push of the conversation (once: a push
-- already pending carries the conversation's state when it runs).
CREATE FUNCTION lead_sync_queue_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.conversation_id IS NULL THEN
        RAISE EXCEPTION 'lead_sync_queue: conversation_id is required'
            USING ERRCODE = 'not_null_violation';
    END IF;
    SELECT o.id, o.created_at INTO NEW.id, NEW.created_at FROM sync_outbox o
    WHERE o.provider = 'resman' AND o.table_name = 'conversation'
      AND o.record_id = NEW.conversation_id AND o.status = 'pending'
    ORDER BY o.id LIMIT 1;
    IF NEW.id IS NULL THEN
        INSERT INTO sync_outbox (provider, table_name, record_id, operation, origin)
        VALUES ('resman', 'conversation', NEW.conversation_id, 'SYNC',
                coalesce(nullif(current_setting('syncbridge.origin', true), ''), 'local'))
        RETURNING id, created_at INTO NEW.id, NEW.created_at;
        UPDATE syncbridge_doorbell SET armed = false
        WHERE channel = 'syncbridge_outbox' AND armed;
        IF FOUND THEN
            PERFORM pg_notify('syncbridge_outbox', '');
        END IF;
    END IF;
    NEW.status := 'pending';
    NEW.sync_operation := coalesce(NEW.sync_operation, 'push');
    NEW.priority := coalesce(NEW.priority, 2);
    NEW.retry_count := 0;
    NEW.max_retries := 8;
    RETURN NEW;
END
$$;
CREATE TRIGGER lead_sync_queue_insert INSTEAD OF INSERT ON lead_sync_queue
    FOR EACH ROW EXECUTE FUNCTION lead_sync_queue_insert();

-- lead_sync_mapping: the links of conversations to ResMan prospects, and
-- the prospects ResMan has that no conversation maps to (from_resman).
-- Unique both ways: sync_links' keys (one prospect per conversation, one
-- conversation per prospect).
CREATE VIEW lead_sync_mapping AS
SELECT md5('resman-link:' || l.id)::uuid AS id,
       l.local_id AS conversation_id,
       l.remote_id::varchar(100) AS resman_lead_id,
       c.property_id,
       (CASE WHEN l.deleted_at IS NOT NULL THEN 'deleted' ELSE 'active' END)::varchar(50)
           AS mapping_status,
       l.last_synced_at AS last_sync_at,
       coalesce(c.resman_sync_version, 0) + 1 AS sync_version,
       l.created_at,
       l.updated_at
FROM sync_links l
LEFT JOIN conversation c ON c.id = l.local_id
WHERE l.provider = 'resman' AND l.entity_type = 'conversation' AND l.slot = 'primary'
UNION ALL
SELECT md5('resman-prospect:' || p.prospect_id)::uuid,
       NULL,
       p.prospect_id::varchar(100),
       p.property_id,
       'from_resman'::varchar(50),
       p.updated_at,
       1,
       p.first_seen_at,
       p.updated_at
FROM resman_prospects p
WHERE NOT EXISTS (SELECT 1 FROM sync_links l
                  WHERE l.provider = 'resman' AND l.entity_type = 'conversation'
                    AND l.remote_id = p.prospect_id);

-- lead_sync_conflicts: the conflicts table's ResMan rows, with the seed's
-- type, severity (lead_sync_severity) and strategy names.
CREATE VIEW lead_sync_conflicts AS
SELECT s.id,
       CASE WHEN s.entity_type = 'conversation' THEN s.entity_id
            ELSE (SELECT c.id FROM conversation c WHERE c.user_id = s.entity_id
                  ORDER BY c.created_at DESC LIMIT 1) END AS conversation_id,
       s.remote_id::varchar(100) AS resman_lead_id,
       (CASE WHEN s.keap_data ? 'duplicate_of' THEN 'duplicate_lead'
             WHEN s.conflict_fields && ARRAY['status', 'resman_status', 'resman_lost_reason']
                 THEN 'status_conflict'
             WHEN cardinality(s.conflict_fields) = 1 THEN 'field_mismatch'
             ELSE 'data_conflict' END)::varchar(50) AS conflict_type,
       s.conflict_fields[1]::varchar(100) AS conflict_field,
       s.keap_data -> s.conflict_fields[1] AS resman_value,
       s.supabase_data -> s.conflict_fields[1] AS domiq_value,
       coalesce((SELECT v.severity FROM lead_sync_severity v
                 WHERE v.field = ANY (s.conflict_fields)
                 ORDER BY array_position(ARRAY['critical', 'high', 'medium', 'low'], v.severity::text)
                 LIMIT 1), 'low')::varchar(20) AS conflict_severity,
       (CASE WHEN s.status = 'open' THEN 'pending'
             -- decided by the rules: recorded already resolved, in one go
             WHEN s.resolved_at = s.detected_at THEN 'auto_resolved'
             ELSE 'resolved' END)::varchar(50) AS resolution_status,
       (CASE s.resolution_strategy
             WHEN 'prefer_remote' THEN 'resman_wins'
             WHEN 'prefer_local' THEN 'domiq_wins'
             WHEN 'merge' THEN 'merged'
             WHEN 'manual' THEN 'manual_review'
             WHEN 'last_write_wins' THEN CASE s.resolution WHEN 'local' THEN 'domiq_wins'
                                                           WHEN 'remote' THEN 'resman_wins'
                                                           ELSE 'merged' END
        END)::varchar(50) AS resolution_strategy,
       s.resolved_data AS resolved_value,
       s.resolved_by,
       s.resolved_at,
       s.resolution_notes AS notes,
       s.detected_at AS created_at,
       coalesce(s.resolved_at, s.detected_at) AS updated_at,
       s.entity_type
FROM sync_conflicts s
WHERE s.provider = 'resman';

-- ---------------------------------------------------------------------------
-- Archiving (the scheduler runs these daily)
-- ---------------------------------------------------------------------------

CREATE TABLE lead_sync_log_archive (LIKE lead_sync_log, archived_at timestamptz DEFAULT now());
CREATE TABLE lead_sync_conflicts_archive (LIKE lead_sync_conflicts, archived_at timestamptz DEFAULT now());
CREATE TABLE lead_sync_queue_archive (LIKE lead_sync_queue, archived_at timestamptz DEFAULT now());

-- ResMan's audit rows older than 90 days move to the archive.
CREATE FUNCTION archive_old_sync_logs() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_before timestamptz := now() - interval '90 days';
BEGIN
    INSERT INTO lead_sync_log_archive
    SELECT *, now() FROM lead_sync_log WHERE created_at < v_before;
    DELETE FROM sync_audit_log
    WHERE created_at < v_before AND (sync_source = 'resman' OR sync_destination = 'resman');
END
$$;

-- ResMan conflicts resolved more than 30 days ago move to the archive.
CREATE FUNCTION archive_resolved_conflicts() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_before timestamptz := now() - interval '30 days';
BEGIN
    INSERT INTO lead_sync_conflicts_archive
    SELECT *, now() FROM lead_sync_conflicts
    WHERE resolution_status IN ('resolved', 'auto_resolved') AND resolved_at < v_before;
    DELETE FROM sync_conflicts
    WHERE provider = 'resman' AND status <> 'open' AND resolved_at < v_before;
END
$$;

-- ResMan outbox rows finished more than 7 days ago (done, failed,
-- skipped) move to the archive; pending ones always stay.
CREATE FUNCTION cleanup_old_queue_items() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_before timestamptz := now() - interval '7 days';
BEGIN
    INSERT INTO lead_sync_queue_archive
    SELECT *, now() FROM lead_sync_queue
    WHERE status IN ('completed', 'failed', 'cancelled') AND created_at < v_before;
    DELETE FROM sync_outbox
    WHERE provider = 'resman' AND status IN ('done', 'failed', 'skipped')
      AND created_at < v_before;
END
$$;

-- ---------------------------------------------------------------------------
-- Monitoring views
-- ---------------------------------------------------------------------------

CREATE VIEW sync_success_rates AS
SELECT property_id,
       sync_direction,
       sync_type,
       count(*) AS total_operations,
       count(*) FILTER (WHERE sync_status = 'success') AS successful_operations,
       round(count(*) FILTER (WHERE sync_status = 'success')::numeric / count(*) * 100, 2)
           AS success_rate,
       avg(processing_time_ms) AS avg_processing_time,
       max(created_at) AS last_operation
FROM lead_sync_log
WHERE created_at >= now() - interval '24 hours'
GROUP BY property_id, sync_direction, sync_type;

CREATE VIEW conflict_resolution_stats AS
SELECT conflict_type,
       conflict_severity,
       resolution_status,
       count(*) AS total_conflicts,
       count(*) FILTER (WHERE resolution_status IN ('resolved', 'auto_resolved'))
           AS resolved_conflicts,
       avg(extract(epoch FROM (resolved_at - created_at)) / 3600) AS avg_resolution_hours
FROM lead_sync_conflicts
WHERE created_at >= now() - interval '30 days'
GROUP BY conflict_type, conflict_severity, resolution_status;

CREATE VIEW queue_performance_metrics AS
SELECT sync_operation,
       priority,
       status,
       count(*) AS queue_items,
       avg(extract(epoch FROM (processed_at - created_at))) AS avg_processing_seconds,
       max(retry_count) AS max_retries,
       count(*) FILTER (WHERE status = 'failed') AS failed_items
FROM lead_sync_queue
WHERE created_at >= now() - interval '24 hours'
GROUP BY sync_operation, priority, status;

CREATE VIEW property_sync_status AS
SELECT p.id AS property_id,
       p.name AS property_name,
       ri.sync_enabled,
       ri.sync_status,
       ri.last_successful_sync_at,
       ri.error_count,
       (SELECT count(*) FROM lead_sync_queue q JOIN conversation c ON c.id = q.conversation_id
        WHERE c.property_id = p.id AND q.status = 'pending') AS pending_queue_items,
       (SELECT count(*) FROM lead_sync_conflicts f JOIN conversation c ON c.id = f.conversation_id
        WHERE c.property_id = p.id AND f.resolution_status = 'pending') AS pending_conflicts
FROM property p
LEFT JOIN resman_integration ri ON ri.property_id = p.id;

CREATE VIEW sync_health_monitoring AS
SELECT 'sync_failures' AS metric, count(*) AS count, max(created_at) AS last_occurrence
FROM lead_sync_log
WHERE sync_status = 'failed' AND created_at >= now() - interval '1 hour'
UNION ALL
SELECT 'pending_conflicts', count(*), max(created_at)
FROM lead_sync_conflicts WHERE resolution_status = 'pending'
UNION ALL
SELECT 'queue_backlog', count(*), max(created_at)
FROM lead_sync_queue WHERE status = 'pending';

-- ---------------------------------------------------------------------------
-- The seed's triggers, feeding the engine's outbox
-- ---------------------------------------------------------------------------

-- A synced conversation whose lead data changes is not synced any more
-- (and its version moves on).
CREATE FUNCTION update_conversation_sync_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.resman_sync_status = 'synced' AND
       (NEW.ai_intent_summary IS DISTINCT FROM OLD.ai_intent_summary OR
        NEW.is_qualified IS DISTINCT FROM OLD.is_qualified OR
        NEW.is_book_tour IS DISTINCT FROM OLD.is_book_tour OR
        NEW.status IS DISTINCT FROM OLD.status) THEN
        NEW.resman_sync_status := 'not_synced';
        NEW.resman_sync_version := OLD.resman_sync_version + 1;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER trigger_update_conversation_sync_status BEFORE UPDATE ON conversation
    FOR EACH ROW EXECUTE FUNCTION update_conversation_sync_status();

CREATE FUNCTION update_user_sync_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.resman_sync_status = 'synced' AND
       (NEW.first_name IS DISTINCT FROM OLD.first_name OR
        NEW.last_name IS DISTINCT FROM OLD.last_name OR
        NEW.email IS DISTINCT FROM OLD.email OR
        NEW.phone IS DISTINCT FROM OLD.phone) THEN
        NEW.resman_sync_status := 'not_synced';
        NEW.resman_sync_version := OLD.resman_sync_version + 1;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER trigger_update_user_sync_status BEFORE UPDATE ON "user"
    FOR EACH ROW EXECUTE FUNCTION update_user_sync_status();

-- A conversation that becomes unsynced is queued for a push (through the
-- lead_sync_queue view into the outbox: once, if none is pending).
CREATE FUNCTION add_sync_queue_item() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.resman_sync_status = 'not_synced' AND
       OLD.resman_sync_status IS DISTINCT FROM 'not_synced' THEN
        INSERT INTO lead_sync_queue (conversation_id, sync_operation, sync_data, priority)
        VALUES (NEW.id, 'push',
                jsonb_build_object('conversation_id', NEW.id,
                                   'sync_version', NEW.resman_sync_version),
                2);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER trigger_add_sync_queue_item AFTER UPDATE ON conversation
    FOR EACH ROW EXECUTE FUNCTION add_sync_queue_item();

-- Every lead-relevant change of a conversation or its user is captured for
-- ResMan like any synced table; the push decides what becomes a lead (a
-- qualified conversation, a booked tour, a status change, or any change
-- once it is mapped). Bookkeeping columns never count.
-- (An application table whose id is not a uuid cannot be captured.)
SELECT syncbridge_track_table(t, 'resman', ignore)
FROM (VALUES
    ('conversation', ARRAY[
        'created_at', 'updated_at', 'resman_lead_id', 'resman_sync_status',
        'resman_last_sync_at', 'resman_sync_version', 'resman_custom_fields',
        'resman_status', 'resman_lost_reason']),
    ('user', ARRAY[
        'created_at', 'updated_at', 'resman_contact_id', 'resman_sync_status',
        'resman_last_sync_at', 'resman_sync_version', 'resman_custom_fields'])
) AS v(t, ignore)
WHERE (SELECT a.atttypid = 'uuid'::regtype FROM pg_attribute a
       WHERE a.attrelid = format('%I', t)::regclass AND a.attname = 'id' AND NOT a.attisdropped);
