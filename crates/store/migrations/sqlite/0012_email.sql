-- Alarm notifications by email (issue 11): who gets them, and each notification's
-- channel beside the id of its webhook or recipient.
CREATE TABLE email_recipients (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
ALTER TABLE notifications RENAME COLUMN webhook_id TO target_id;
ALTER TABLE notifications ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook';
