//! Schema migrations, applied in order at open; `PRAGMA user_version` records the last one.

/// Each entry is one migration; never edit a released one, append a new one.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
INSERT INTO tenants (id, created_at) VALUES ('default', strftime('%s', 'now'));

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(id),
    username TEXT NOT NULL,
    email TEXT,
    name TEXT,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant, username)
);

-- Settings as JSON: they are read whole and never queried by field.
CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    secret_hash BLOB,
    settings TEXT NOT NULL,
    owner TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE sessions (
    hash BLOB PRIMARY KEY,
    user_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    auth_time INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE consents (
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT,
    tenant TEXT,
    scope TEXT NOT NULL,
    audiences TEXT NOT NULL,
    auth_time INTEGER,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX grants_client ON grants (client_id);

CREATE TABLE auth_codes (
    hash BLOB PRIMARY KEY,
    grant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT,
    tenant TEXT,
    scope TEXT NOT NULL,
    audiences TEXT NOT NULL,
    auth_time INTEGER,
    created_at INTEGER NOT NULL,
    redirect_uri TEXT NOT NULL,
    redirect_uri_sent INTEGER NOT NULL,
    nonce TEXT,
    code_challenge TEXT,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

CREATE TABLE access_tokens (
    hash BLOB PRIMARY KEY,
    grant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT,
    tenant TEXT,
    scope TEXT NOT NULL,
    audiences TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX access_tokens_grant ON access_tokens (grant_id);

CREATE TABLE refresh_tokens (
    hash BLOB PRIMARY KEY,
    grant_id TEXT NOT NULL,
    access_token_hash BLOB,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);
"#,
    r#"
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    activates_at INTEGER NOT NULL,
    retires_at INTEGER,
    publish_until INTEGER
);
ALTER TABLE sessions ADD COLUMN sid TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN sid TEXT;
ALTER TABLE auth_codes ADD COLUMN sid TEXT;
"#,
    r#"
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    tenant TEXT,
    actor TEXT,
    client_id TEXT,
    ip TEXT,
    request_id TEXT,
    detail TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_at);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
CREATE INDEX sessions_expiry ON sessions (expires_at);
"#,
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
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (user_id);
"#,
    // The refresh retry window: when and into what a refresh token was rotated, and its
    // successor sealed (only while a retry may still need it).
    r#"
ALTER TABLE refresh_tokens ADD COLUMN rotated_at INTEGER;
ALTER TABLE refresh_tokens ADD COLUMN successor_hash BLOB;
ALTER TABLE refresh_tokens ADD COLUMN successor_sealed BLOB;
CREATE INDEX refresh_tokens_sealed_successor ON refresh_tokens (successor_hash)
    WHERE successor_sealed IS NOT NULL;
"#,
    // The PostgreSQL store's shared failure counters; SQLite is one node and counts in
    // memory. Kept so both backends number their migrations alike.
    "SELECT 1",
    // 7: each grant records a bound on the expiry of every token issued under it, so the
    // janitor prunes grants by that bound and the token tables need no index on their grant
    // (one random page per new token; docs/benchmarks.md, session 7). Existing grants get
    // the latest expiry of their tokens, found through the indexes before they go. The
    // bound is kept by the database itself, whoever inserts the token: a token that
    // outlives its grant's bound raises it to one more token lifetime beyond the token, so
    // a refresh chain writes its grant's row once per lifetime rather than per rotation.
    r#"
ALTER TABLE grants ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE grants SET expires_at = max(
    coalesce((SELECT max(expires_at) FROM access_tokens a WHERE a.grant_id = grants.id), 0),
    coalesce((SELECT max(expires_at) FROM refresh_tokens r WHERE r.grant_id = grants.id), 0));
CREATE INDEX grants_expiry ON grants (expires_at);
DROP INDEX access_tokens_grant;
DROP INDEX refresh_tokens_grant;
CREATE TRIGGER access_tokens_keep_grant AFTER INSERT ON access_tokens
BEGIN
    UPDATE grants SET expires_at = NEW.expires_at + max(NEW.expires_at - NEW.issued_at, 0)
    WHERE id = NEW.grant_id AND expires_at < NEW.expires_at;
END;
CREATE TRIGGER refresh_tokens_keep_grant AFTER INSERT ON refresh_tokens
BEGIN
    UPDATE grants SET expires_at = NEW.expires_at + max(NEW.expires_at - NEW.issued_at, 0)
    WHERE id = NEW.grant_id AND expires_at < NEW.expires_at;
END;
"#,
    // 8: the bound of migration 7 is raised by the statement after each token insert
    // (`raise_grant_bound`), not by triggers: a trigger makes the insert a statement of
    // several writes, which SQLite guards with a statement journal, a copy of every page
    // the insert touches (docs/benchmarks.md, session 10). One process serves a SQLite
    // store. An older server still running on a store a newer CLI migrated under it
    // raises no bounds: a token it issues meanwhile can expire early, by at most about as
    // long as that server kept running, unless a current server rotates it first.
    r#"
DROP TRIGGER access_tokens_keep_grant;
DROP TRIGGER refresh_tokens_keep_grant;
"#,
];
