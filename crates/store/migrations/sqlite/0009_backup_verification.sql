-- The last verification of each backup by restoring it, and each instance's policy
-- for verifying its backups by themselves (weekly until one is set).
ALTER TABLE backups ADD COLUMN verify_outcome TEXT;
ALTER TABLE backups ADD COLUMN verify_at TEXT;
ALTER TABLE backups ADD COLUMN verify_detail TEXT;
ALTER TABLE backup_policies ADD COLUMN verify TEXT NOT NULL DEFAULT 'weekly';
