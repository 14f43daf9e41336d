-- Each instance's backup schedule and retention. No foreign key: the policy
-- outlives its instance, so retention goes on removing a deleted instance's backups.
CREATE TABLE backup_policies (
    instance_id TEXT PRIMARY KEY,
    instance_name TEXT NOT NULL,
    schedule TEXT NOT NULL,
    keep_days INTEGER,
    keep_count INTEGER,
    -- The slot of the last scheduled run (or when the schedule was set), RFC 3339.
    last_slot TEXT NOT NULL
);
