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
