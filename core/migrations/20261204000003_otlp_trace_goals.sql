-- Goal workunits of OTLP builds, for the same reason: goals run one after another, so their
-- spans end (and are exported) in earlier batches than the root. Any batch records candidate
-- goal spans with their parent; the root's batch keeps those that are its direct children.
CREATE TABLE otlp_trace_goals (
    trace_id     BYTEA NOT NULL,
    repo_id      UUID NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    parent_id    TEXT NOT NULL,
    goal         TEXT NOT NULL,
    workunit_id  TEXT NOT NULL,
    start_usecs  BIGINT NOT NULL,
    end_usecs    BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (trace_id, workunit_id)
);

CREATE INDEX otlp_trace_goals_updated_at ON otlp_trace_goals (updated_at);
