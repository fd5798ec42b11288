-- Pulled providers (Teli's call sync, later the D1 replica and the
-- reconciliations): one row per real run, so an operator and a dashboard see
-- the current or last run of any process, and the audit rows of a pulled
-- delivery are found by its inbox id. Dry runs write nothing, so they have no
-- row here.

CREATE TABLE sync_pull_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider    text        NOT NULL,
    since       timestamptz,
    pages       integer     NOT NULL DEFAULT 0,
    seen        integer     NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- the run's summary once done (the provider's own keys)
    summary     jsonb,
    -- why the run ended early, if it did
    error       text
);
CREATE INDEX sync_pull_runs_provider_idx ON sync_pull_runs (provider, started_at DESC);

-- The audit rows of one inbox event (the pull's summary, the admin event
-- view) without scanning the log.
CREATE INDEX idx_audit_event ON sync_audit_log (event_id) WHERE event_id IS NOT NULL;
