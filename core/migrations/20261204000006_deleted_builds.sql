-- Builds a tombstone deleted from the stores. Sinks drop any later record of such a build
-- (a late workunit update, a batch re-upload of an old run, a replay of the topic), so a
-- deleted build never comes back. Written by whoever publishes or first applies the
-- tombstone; forgotten after retention.forget_deleted_days, by which time the topic no longer
-- holds the build's records and the policy's age check still drops re-uploads of it.
CREATE TABLE deleted_builds (
    build_key   TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    deleted_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX deleted_builds_deleted_at ON deleted_builds (deleted_at);
