-- Hint-then-fetch (SPEC §4.2): a provider delivery that only names objects
-- (Keap's REST hooks) becomes one row per object here. Hints for the same
-- object within the debounce window collapse into the row (hints, seq);
-- the fetcher claims due rows with a lease, fetches each object once with
-- syncbridge's own credentials, applies it, and deletes the row unless a
-- new hint arrived meanwhile (seq moved on), which fetches it again.
CREATE TABLE sync_fetch_queue (
    provider      text        NOT NULL,
    object_type   text        NOT NULL,
    object_id     text        NOT NULL,
    hints         integer     NOT NULL DEFAULT 1,
    seq           bigint      NOT NULL DEFAULT 1,
    first_hint_at timestamptz NOT NULL DEFAULT now(),
    last_hint_at  timestamptz NOT NULL DEFAULT now(),
    due_at        timestamptz NOT NULL,
    leased_until  timestamptz,
    attempts      integer     NOT NULL DEFAULT 0,
    error         text,
    -- the latest inbox event that named the object
    event_id      bigint,
    PRIMARY KEY (provider, object_type, object_id)
);
CREATE INDEX sync_fetch_queue_due_idx ON sync_fetch_queue (provider, due_at);
