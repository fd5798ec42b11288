-- The D1 replica's outbound half and the scheduler's bookkeeping.
--
-- prospects, campaigns and mailboxes are captured for 'd1' like any synced
-- table: every insert, update and delete leaves an outbox row, so deletes
-- and rapid updates coalesce and reach D1. updated_at is bookkeeping (its
-- trigger touches it on every update): alone it is not a change.
-- An application table whose id is not a uuid cannot be captured (the
-- outbox keys records by uuid): it is left alone, and pushed by neither.
SELECT syncbridge_track_table(t, 'd1', ARRAY['updated_at'])
FROM unnest(ARRAY['prospects', 'campaigns', 'mailboxes']) AS t
WHERE (SELECT a.atttypid = 'uuid'::regtype FROM pg_attribute a
       WHERE a.attrelid = t::regclass AND a.attname = 'id' AND NOT a.attisdropped);

-- Durable positions of keyset walks (the replica's reconciliation walks
-- (updated_at, id) per table): a walk resumes where the last confirmed row
-- left it, and never moves past a row the far side did not confirm.
CREATE TABLE sync_cursors (
    name       text PRIMARY KEY,
    position   jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per run of a scheduled or on-demand job (reconciliation, full
-- resync, integrity): the scheduler runs a job when its last run is older
-- than its interval (checked under the job's advisory lock, so several
-- processes run it once), and the status API shows the last run, its
-- progress and its error.
CREATE TABLE sync_job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    ok          boolean,
    -- live while it runs, the summary once done
    progress    jsonb       NOT NULL DEFAULT '{}',
    error       text
);
CREATE INDEX sync_job_runs_job_idx ON sync_job_runs (job, started_at DESC);

-- Integrity runs: what each check found and fixed, for the status API, the
-- dashboard and `syncbridge check`.
CREATE TABLE sync_integrity_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz NOT NULL DEFAULT now(),
    fix         boolean     NOT NULL,
    found       integer     NOT NULL,
    fixed       integer     NOT NULL,
    -- one entry per finding: check, table, count, examples, fixable, fixed
    findings    jsonb       NOT NULL
);
CREATE INDEX sync_integrity_runs_started_idx ON sync_integrity_runs (started_at DESC);
