-- Notification channels: member preferences, one de-duplicated send per (notification, channel),
-- and the local outbox that stands in for SMS and push providers (and for SMTP when none is set).

CREATE TABLE notification_preferences (
    user_id    TEXT PRIMARY KEY,
    email      INTEGER NOT NULL CHECK (email IN (0, 1)),
    sms        INTEGER NOT NULL CHECK (sms IN (0, 1)),
    push       INTEGER NOT NULL CHECK (push IN (0, 1)),
    updated_at TEXT NOT NULL
);

-- Every stored notification is queued for channel delivery in the transaction that stores it, so
-- neither a crash nor a rollback can lose or invent one.
CREATE TABLE notification_queue (
    notification_id TEXT PRIMARY KEY,
    queued_at       TEXT NOT NULL
);
CREATE TRIGGER notifications_queue_for_channels AFTER INSERT ON notifications
BEGIN
    INSERT INTO notification_queue (notification_id, queued_at) VALUES (NEW.notification_id, NEW.created_at)
    ON CONFLICT (notification_id) DO NOTHING;
END;

-- A send is claimed ('sending') in its own committed transaction before the message leaves; a crash
-- after that leaves it 'sending' and it is never sent again automatically (at most once).
CREATE TABLE notification_sends (
    send_id         INTEGER PRIMARY KEY,
    dedupe_key      TEXT NOT NULL UNIQUE,      -- notification key (event id + kind) + channel
    notification_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'skipped', 'failed')),
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX notification_sends_due ON notification_sends (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notification_sends_by_notification ON notification_sends (notification_id);

-- Messages "sent" to the local SMS and push outboxes (and email without SMTP): inspect them here.
CREATE TABLE local_channel_outbox (
    seq        INTEGER PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    channel    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX local_channel_outbox_by_user ON local_channel_outbox (user_id);
