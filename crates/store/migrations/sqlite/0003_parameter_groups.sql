-- Parameter groups: named, reusable engine settings for one engine version.
CREATE TABLE param_groups (
    name        TEXT PRIMARY KEY,
    engine      TEXT NOT NULL,
    version     TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- Bumped on every change; instances record the revision they run with.
    revision    INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE param_values (
    group_name TEXT NOT NULL REFERENCES param_groups (name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (group_name, name)
);

ALTER TABLE instances ADD COLUMN param_group TEXT;
ALTER TABLE instances ADD COLUMN params_revision INTEGER NOT NULL DEFAULT 0;
