-- The inbox: every verified webhook delivery, raw, exactly once per
-- (provider, dedup_key). The unique constraint IS the deduplication.
CREATE TABLE webhook_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider        text        NOT NULL,
    dedup_key       text        NOT NULL,
    event_type      text,
    event_id        text,
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    body            bytea       NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    occurred_at     timestamptz,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processed', 'ignored', 'skipped_stale', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    error           text,
    processed_at    timestamptz,
    CONSTRAINT webhook_events_provider_dedup_key_key UNIQUE (provider, dedup_key)
);

-- The router's claim query: pending rows due now, oldest first.
CREATE INDEX webhook_events_pending_idx ON webhook_events (provider, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);
CREATE INDEX webhook_events_failed_idx ON webhook_events (provider, id) WHERE status = 'failed';

-- Per-object dedup for batched hint deliveries (Keap: event_key|id|timestamp
-- per object key). A delivery is a duplicate when none of its keys is new;
-- each key belongs to the first delivery that brought it.
CREATE TABLE webhook_event_keys (
    provider  text   NOT NULL,
    dedup_key text   NOT NULL,
    event_id  bigint NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    PRIMARY KEY (provider, dedup_key)
);
CREATE INDEX webhook_event_keys_event_idx ON webhook_event_keys (event_id);
