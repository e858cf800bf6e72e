//! Schema migrations, applied in order at connect under an advisory lock;
//! `tessera_schema_version` records how many have been applied.
//!
//! The tables are those of the SQLite store (`tessera-store-sqlite/src/migrations.rs`)
//! in PostgreSQL types: BYTEA for hashes, BIGINT for Unix times, BOOLEAN for flags.

/// Each entry is one migration, run in one transaction with the version bump; never edit
/// a released one, append a new one.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
INSERT INTO tenants (id, created_at) VALUES ('default', EXTRACT(EPOCH FROM now())::BIGINT);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(id),
    username TEXT NOT NULL,
    email TEXT,
    name TEXT,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant, username)
);

-- Settings as JSON text: they are read whole and never queried by field.
CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    secret_hash BYTEA,
    settings TEXT NOT NULL,
    owner TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    hash BYTEA PRIMARY KEY,
    sid TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE consents (
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
CREATE INDEX consents_client ON consents (client_id);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT,
    tenant TEXT,
    scope TEXT NOT NULL,
    audiences TEXT NOT NULL,
    auth_time BIGINT,
    sid TEXT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX grants_client ON grants (client_id);

CREATE TABLE auth_codes (
    hash BYTEA PRIMARY KEY,
    grant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT,
    tenant TEXT,
    scope TEXT NOT NULL,
    audiences TEXT NOT NULL,
    auth_time BIGINT,
    sid TEXT,
    created_at BIGINT NOT NULL,
    redirect_uri TEXT NOT NULL,
    redirect_uri_sent BOOLEAN NOT NULL,
    nonce TEXT,
    code_challenge TEXT,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX auth_codes_client ON auth_codes (client_id);
CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);

CREATE TABLE access_tokens (
    hash BYTEA PRIMARY KEY,
    grant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT,
    tenant TEXT,
    scope TEXT NOT NULL,
    audiences TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX access_tokens_grant ON access_tokens (grant_id);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_at);

CREATE TABLE refresh_tokens (
    hash BYTEA PRIMARY KEY,
    grant_id TEXT NOT NULL,
    access_token_hash BYTEA,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    activates_at BIGINT NOT NULL,
    retires_at BIGINT,
    publish_until BIGINT
);

CREATE TABLE audit_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    tenant TEXT,
    actor TEXT,
    client_id TEXT,
    ip TEXT,
    request_id TEXT,
    detail TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
"#,
    // 2 and 3: the first migration already holds SQLite's versions 1 to 3 (signing keys,
    // audit trail); these keep the two backends' version numbers in step.
    "SELECT 1",
    "SELECT 1",
    // 4: developer self-service (settings pages).
    r#"
CREATE INDEX clients_owner ON clients (owner);
CREATE INDEX grants_user_client ON grants (user_id, client_id);
CREATE INDEX auth_codes_user_client ON auth_codes (user_id, client_id);
CREATE TABLE personal_access_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (user_id);
"#,
    // The refresh retry window: when and into what a refresh token was rotated, and its
    // successor sealed (only while a retry may still need it).
    r#"
ALTER TABLE refresh_tokens ADD COLUMN rotated_at BIGINT;
ALTER TABLE refresh_tokens ADD COLUMN successor_hash BYTEA;
ALTER TABLE refresh_tokens ADD COLUMN successor_sealed BYTEA;
CREATE INDEX refresh_tokens_sealed_successor ON refresh_tokens (successor_hash)
    WHERE successor_sealed IS NOT NULL;
"#,
    // Failure counters shared by the nodes of a cluster (abuse limits). UNLOGGED: losing
    // a minute of counts in a crash is harmless, and it spares the WAL.
    r#"
CREATE UNLOGGED TABLE failure_counters (
    key TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);
"#,
    // 7: each grant records a bound on the expiry of every token issued under it, so the
    // janitor prunes grants by that bound and the token tables need no index on their grant
    // (one random page per new token; docs/benchmarks.md, session 7). Existing grants get
    // the latest expiry of their tokens, found through the indexes before they go. The
    // bound is kept by the database itself, whoever inserts the token (a node of an older
    // version too, while a cluster is being upgraded): a token that outlives its grant's
    // bound raises it to one more token lifetime beyond the token, so a refresh chain
    // writes its grant's row once per lifetime rather than per rotation.
    r#"
ALTER TABLE grants ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
UPDATE grants SET expires_at = GREATEST(
    COALESCE((SELECT max(expires_at) FROM access_tokens a WHERE a.grant_id = grants.id), 0),
    COALESCE((SELECT max(expires_at) FROM refresh_tokens r WHERE r.grant_id = grants.id), 0));
CREATE INDEX grants_expiry ON grants (expires_at);
DROP INDEX access_tokens_grant;
DROP INDEX refresh_tokens_grant;
CREATE FUNCTION tessera_keep_grant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE grants SET expires_at = NEW.expires_at + GREATEST(NEW.expires_at - NEW.issued_at, 0)
    WHERE id = NEW.grant_id AND expires_at < NEW.expires_at;
    RETURN NULL;
END
$$;
CREATE TRIGGER access_tokens_keep_grant AFTER INSERT ON access_tokens
    FOR EACH ROW EXECUTE FUNCTION tessera_keep_grant();
CREATE TRIGGER refresh_tokens_keep_grant AFTER INSERT ON refresh_tokens
    FOR EACH ROW EXECUTE FUNCTION tessera_keep_grant();
"#,
    // 8: SQLite replaces its token tables' triggers by a statement after each insert (a
    // trigger there costs a statement journal per insert). PostgreSQL has no such cost and
    // keeps its triggers for nodes of older versions during a rolling upgrade; kept so
    // both backends number their migrations alike.
    "SELECT 1",
];
