-- The conflict engine's tables (SPEC §2.4): the rule table and the one
-- conflicts table every provider shares. The rules are read by the router
-- (src/conflict.rs holds the logic); edit them with SQL or through the
-- admin API:
--   INSERT INTO sync_conflict_rules (entity_type, field, strategy)
--   VALUES ('sync_contacts', 'email', 'prefer_local')
--   ON CONFLICT (entity_type, field) DO UPDATE SET strategy = EXCLUDED.strategy;
--
-- Lookup for a field of an entity: (entity, field), then (entity, '*'),
-- then ('*', field), then ('*', '*'); last_write_wins if none matches.
CREATE TABLE sync_conflict_rules (
    entity_type text        NOT NULL,
    field       text        NOT NULL DEFAULT '*',
    strategy    text        NOT NULL CHECK (strategy IN
        ('last_write_wins', 'prefer_local', 'prefer_remote', 'merge', 'manual')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_type, field)
);
INSERT INTO sync_conflict_rules (entity_type, field, strategy)
VALUES ('*', '*', 'last_write_wins');

-- One row per conflict left for review (the `manual` strategy) or recorded
-- by detect_sync_conflict(). Column names are the Keap seed's, whatever the
-- provider: keap_data is the provider's version, supabase_data the local
-- one. The engine's own columns follow.
CREATE TABLE sync_conflicts (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    entity_type         varchar(50) NOT NULL,
    entity_id           uuid        NOT NULL,
    keap_data           jsonb       NOT NULL,
    supabase_data       jsonb       NOT NULL,
    conflict_fields     text[]      NOT NULL DEFAULT '{}',
    detected_at         timestamptz NOT NULL DEFAULT now(),
    resolution_strategy varchar(50) CHECK (resolution_strategy IN
        ('keap_wins', 'supabase_wins', 'manual', 'merge',
         'last_write_wins', 'prefer_local', 'prefer_remote')),
    resolved_at         timestamptz,
    resolved_by         uuid,
    resolution_notes    text,
    provider            text        NOT NULL DEFAULT 'keap',
    remote_id           text,
    -- the last-synced snapshot the two versions were compared against
    base_data           jsonb,
    remote_version      timestamptz,
    status              text        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'resolved', 'superseded')),
    resolution          text CHECK (resolution IN ('local', 'remote', 'merged')),
    resolved_data       jsonb,
    event_id            bigint
);
CREATE INDEX idx_sync_conflicts_entity ON sync_conflicts (entity_type, entity_id);
CREATE INDEX idx_sync_conflicts_detected ON sync_conflicts (detected_at);
CREATE INDEX idx_sync_conflicts_resolved ON sync_conflicts (resolved_at);
CREATE INDEX idx_sync_conflicts_open ON sync_conflicts (detected_at) WHERE status = 'open';

-- Every decision the engine makes is audited with both versions: `detail`
-- holds {local, remote, base, merged, fields: {name: {strategy, winner}}};
-- `error` the reason a row could not be applied.
ALTER TABLE sync_audit_log ADD COLUMN detail jsonb, ADD COLUMN error text;
