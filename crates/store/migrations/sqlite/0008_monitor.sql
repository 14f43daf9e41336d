-- Metric history (issue 11): one row per bucket of each resolution ("step", in
-- seconds), holding count, sum, minimum and maximum of the samples folded in. A
-- bucket exists only where a sample was taken: no row is missing data, never zero.
-- No foreign key: the history of a deleted instance goes by retention.
CREATE TABLE samples (
    instance_id TEXT NOT NULL,
    member INTEGER NOT NULL,
    metric TEXT NOT NULL,
    step INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (instance_id, metric, step, ts, member)
) WITHOUT ROWID;
CREATE INDEX samples_by_age ON samples (step, ts);

-- Alarms (issue 11): a rule (JSON, `model::metrics::alarm::AlarmRule`) per
-- instance and name, its state and since when, and a silence (Unix seconds).
CREATE TABLE alarms (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    name TEXT NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    state_since TEXT NOT NULL,
    silenced_until INTEGER,
    UNIQUE (instance_id, name)
);

-- Where notifications go; the secret signs each body (HMAC-SHA256).
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- One notification per state change and webhook, retried until delivered or
-- expired; every attempt is a row of its own.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX notifications_due ON notifications (state, next_attempt);
CREATE TABLE notification_attempts (
    notification_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    status INTEGER,
    error TEXT,
    PRIMARY KEY (notification_id, attempt)
);
