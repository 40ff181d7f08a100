-- OTLP builds: Pants marks a failed run only on its ERROR spans, which usually arrive in
-- earlier batches than the root span that completes the build. A batch with ERROR spans sets
-- this flag before it is acknowledged; the root's batch reads it. Rows older than two days
-- are removed as roots arrive (a trace that never ends leaves its row until then).
CREATE TABLE otlp_trace_errors (
    trace_id    BYTEA PRIMARY KEY,
    repo_id     UUID NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX otlp_trace_errors_updated_at ON otlp_trace_errors (updated_at);
