-- Members: which containers an instance is made of, which one is primary, how many
-- replicas confirm a commit (JSON, model::member::Topology), and the replication
-- account's password. Instances made before members existed are one primary, member 0.
ALTER TABLE instances ADD COLUMN topology TEXT NOT NULL
    DEFAULT '{"members":[0],"primary":0,"sync":0,"sync_mode":"strict"}';
ALTER TABLE instances ADD COLUMN replication_password TEXT;
-- Why commits are not confirmed by as many replicas as asked, while that lasts.
ALTER TABLE instances ADD COLUMN sync_degraded TEXT;
-- The read-only endpoint's host port, fixed for the instance's life like `port`.
-- Instances made before endpoints get theirs on their first bring-back.
ALTER TABLE instances ADD COLUMN ro_port INTEGER;
CREATE UNIQUE INDEX instances_live_ro_port ON instances (ro_port) WHERE deleted_at IS NULL;
