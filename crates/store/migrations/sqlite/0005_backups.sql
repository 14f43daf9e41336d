-- Backups outlive their instance: no foreign key to instances.
CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    engine TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    object TEXT NOT NULL,
    size_bytes INTEGER,
    sha256 TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    error TEXT
);
CREATE INDEX backups_by_instance ON backups (instance_name, started_at);
