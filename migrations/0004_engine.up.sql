-- The engine's own tables, shared by every provider: one link table (local
-- record <-> remote object, with the last-synced snapshot and the remote
-- version last applied) and one audit log, partitioned by month.

CREATE TABLE sync_links (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_type    text        NOT NULL,
    local_id       uuid        NOT NULL,
    provider       text        NOT NULL,
    slot           text        NOT NULL DEFAULT 'primary',
    remote_id      text        NOT NULL,
    snapshot       jsonb,
    remote_version timestamptz,
    last_synced_at timestamptz,
    deleted_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sync_links_remote_key UNIQUE (provider, entity_type, remote_id),
    CONSTRAINT sync_links_local_key UNIQUE (entity_type, local_id, provider, slot)
);

CREATE TABLE sync_audit_log (
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    entity_type      varchar(50) NOT NULL,
    entity_id        uuid,
    operation        varchar(50) NOT NULL,
    old_data         jsonb,
    new_data         jsonb,
    changed_fields   text[],
    sync_source      varchar(50) NOT NULL,
    sync_destination varchar(50),
    user_id          uuid,
    ip_address       inet,
    user_agent       text,
    event_id         bigint,
    decision         text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX idx_audit_entity ON sync_audit_log (entity_type, entity_id);
CREATE INDEX idx_audit_created ON sync_audit_log (created_at);
CREATE INDEX idx_audit_operation ON sync_audit_log (operation);

-- Rows outside every monthly partition land here instead of failing the
-- write; the scheduler keeps the current and next month's partitions.
CREATE TABLE sync_audit_log_default PARTITION OF sync_audit_log DEFAULT;

-- Creates the monthly partition of p_table holding p_month, if absent, and
-- returns its name. Identifiers are quoted with format('%I').
CREATE FUNCTION create_monthly_partition(p_table text, p_month date DEFAULT current_date)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_start date := date_trunc('month', p_month)::date;
    v_end   date := (date_trunc('month', p_month) + interval '1 month')::date;
    v_name  text := p_table || '_' || to_char(v_start, 'YYYY_MM');
BEGIN
    IF to_regclass(format('%I', v_name)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            v_name, p_table, v_start, v_end);
    END IF;
    RETURN v_name;
END
$$;

SELECT create_monthly_partition('sync_audit_log', current_date);
SELECT create_monthly_partition('sync_audit_log', (current_date + interval '1 month')::date);
