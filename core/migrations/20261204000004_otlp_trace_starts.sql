-- OTLP builds: the first acknowledged batch of a trace also reported the run start. Written
-- only after the broker acknowledged that batch, so a failed (503) first batch that the
-- exporter retries reports the start again. Rows expire with the other per-trace state.
CREATE TABLE otlp_trace_starts (
    trace_id    BYTEA PRIMARY KEY,
    repo_id     UUID NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX otlp_trace_starts_updated_at ON otlp_trace_starts (updated_at);
