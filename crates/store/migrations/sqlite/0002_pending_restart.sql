-- Engine settings changed while running that take effect only at the next restart.
ALTER TABLE instances ADD COLUMN pending_restart TEXT NOT NULL DEFAULT '[]';
