-- SQLite 3.40 checks `x IN ('a', 'b', 'c')` (three values or more) by building a temporary b-tree of
-- the list for every row written: a third of the cost of an insert into notification_sends, which
-- every notification writes three times, and of every outbox message written or marked. The same
-- rules as comparisons; SQLite cannot change a table's checks in place, so both tables are rebuilt.

CREATE TABLE outbox_rebuilt (
    message_id   INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    handler      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status = 'pending' OR status = 'done' OR status = 'dead'),
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at REAL NOT NULL,                 -- epoch seconds: due time or lease expiry
    last_error   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (event_id, handler)
);
INSERT INTO outbox_rebuilt (message_id, event_id, event_name, handler, payload, status, attempts, available_at,
                            last_error, created_at, updated_at)
    SELECT message_id, event_id, event_name, handler, payload, status, attempts, available_at, last_error,
           created_at, updated_at
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (available_at) WHERE status = 'pending';

CREATE TABLE notification_sends_rebuilt (
    send_id         INTEGER PRIMARY KEY,
    dedupe_key      TEXT NOT NULL UNIQUE,      -- notification key (event id + kind) + channel
    notification_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    channel         TEXT NOT NULL CHECK (channel = 'email' OR channel = 'sms' OR channel = 'push'),
    status          TEXT NOT NULL CHECK (status = 'pending' OR status = 'sending' OR status = 'sent'
                                         OR status = 'skipped' OR status = 'failed'),
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
INSERT INTO notification_sends_rebuilt (send_id, dedupe_key, notification_id, user_id, channel, status, reason,
                                        attempts, next_attempt_at, created_at, updated_at)
    SELECT send_id, dedupe_key, notification_id, user_id, channel, status, reason, attempts, next_attempt_at,
           created_at, updated_at
    FROM notification_sends;
DROP TABLE notification_sends;
ALTER TABLE notification_sends_rebuilt RENAME TO notification_sends;
CREATE INDEX notification_sends_due ON notification_sends (next_attempt_at) WHERE status = 'pending';
