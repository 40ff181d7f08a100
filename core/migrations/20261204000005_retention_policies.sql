-- Per-repo retention: builds older than retention_days are turned into tombstones on the
-- builds topic, at most every period_minutes. No row = keep forever. dry_run (the default)
-- only counts what would go.
CREATE TABLE retention_policies (
    repo_id          UUID PRIMARY KEY REFERENCES repos (id) ON DELETE CASCADE,
    retention_days   INTEGER NOT NULL CHECK (retention_days BETWEEN 1 AND 36500),
    period_minutes   INTEGER NOT NULL CHECK (period_minutes BETWEEN 1 AND 525600),
    dry_run          BOOLEAN NOT NULL DEFAULT true,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The worker replica working on this policy, until when (a lease: replicas never
    -- repeat each other's pass; a crashed one's lease runs out).
    lease_owner      TEXT,
    lease_until      TIMESTAMPTZ,
    last_run_at      TIMESTAMPTZ,
    last_run_builds  BIGINT,
    last_run_dry     BOOLEAN
);
