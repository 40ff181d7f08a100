-- Tenancy and tokens: the service's own state. Builds live in the stores, not here.
CREATE TABLE orgs (
    id          UUID PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE CHECK (slug ~ '^[A-Za-z0-9_-]{1,100}$'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE repos (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    slug        TEXT NOT NULL CHECK (slug ~ '^[A-Za-z0-9_-]{1,100}$'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, slug)
);

-- Long-lived tokens. Only the SHA-256 of the token is kept: a database dump gives no
-- usable credential. Access tokens are not stored: they name their long-lived token
-- (its jid), and a revoked jid invalidates them too.
CREATE TABLE tokens (
    jid          UUID PRIMARY KEY,
    repo_id      UUID NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    scope        TEXT NOT NULL CHECK (scope IN ('ingest', 'read')),
    ci           BOOLEAN NOT NULL DEFAULT false,
    kid          TEXT NOT NULL,
    token_sha256 BYTEA NOT NULL UNIQUE,
    description  TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);

CREATE INDEX tokens_repo_id ON tokens (repo_id);
