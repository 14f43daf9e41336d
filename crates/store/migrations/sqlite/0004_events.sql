-- The event log. `seq` is the cursor: AUTOINCREMENT never reuses a value, even after
-- the newest rows are pruned, so a client that resumes after a seq misses nothing.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- RFC 3339, UTC, always milliseconds: text order is time order.
    time          TEXT NOT NULL,
    instance_id   TEXT,
    instance_name TEXT,
    kind          TEXT NOT NULL,
    message       TEXT NOT NULL,
    details       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_instance_name ON events (instance_name, seq);
CREATE INDEX events_by_time ON events (time);
