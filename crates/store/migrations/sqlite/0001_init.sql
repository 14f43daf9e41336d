-- Berth's metadata. Secrets live only here (the data directory is 0700).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tokens (
    sha256     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE instances (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    project            TEXT NOT NULL,
    engine             TEXT NOT NULL,
    version            TEXT NOT NULL,
    cpus_millis        INTEGER NOT NULL,
    memory_mib         INTEGER NOT NULL,
    storage_mib        INTEGER NOT NULL,
    status             TEXT NOT NULL,
    status_detail      TEXT,
    port               INTEGER NOT NULL,
    superuser_password TEXT NOT NULL,
    agent_token        TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    -- Tombstone: a deleted instance stays so that reconcile knows whose leftovers it sees.
    deleted_at         TEXT,
    purged             INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX instances_live_name ON instances (project, name) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX instances_live_port ON instances (port) WHERE deleted_at IS NULL;

CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    instance_id   TEXT NOT NULL REFERENCES instances (id),
    instance_name TEXT NOT NULL,
    kind          TEXT NOT NULL,
    options       TEXT NOT NULL,
    state         TEXT NOT NULL,
    steps         TEXT NOT NULL,
    error         TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX tasks_by_instance ON tasks (instance_id, created_at);
CREATE INDEX tasks_by_created ON tasks (created_at);
