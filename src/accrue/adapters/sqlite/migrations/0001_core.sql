-- Loyalty core: members, the double-entry ledger, orders, notifications, the event outbox,
-- idempotency keys and bulk imports.

CREATE TABLE members (
    user_id           TEXT PRIMARY KEY,
    email             TEXT,
    email_key         TEXT UNIQUE,            -- normalised email; NULL once erased
    name              TEXT,
    phone             TEXT,
    balance           INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    lifetime          INTEGER NOT NULL DEFAULT 0 CHECK (lifetime >= 0),
    tier              TEXT NOT NULL DEFAULT 'BRONZE',
    total_spent_cents INTEGER NOT NULL DEFAULT 0,
    referral_code     TEXT UNIQUE,
    erased            INTEGER NOT NULL DEFAULT 0,
    version           INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL
);

CREATE TABLE transfers (
    seq            INTEGER PRIMARY KEY,
    transfer_id    TEXT NOT NULL UNIQUE,       -- the idempotency key of the posting
    debit_account  TEXT NOT NULL,
    credit_account TEXT NOT NULL,
    amount         INTEGER NOT NULL CHECK (amount > 0),
    reason         TEXT NOT NULL,
    reference      TEXT NOT NULL,
    member_id      TEXT NOT NULL,
    member_delta   INTEGER NOT NULL,
    balance_after  INTEGER NOT NULL CHECK (balance_after >= 0),
    created_at     TEXT NOT NULL,
    CHECK (debit_account <> credit_account)
);
CREATE INDEX transfers_by_member ON transfers (member_id, seq);

CREATE TRIGGER transfers_are_immutable BEFORE UPDATE ON transfers
BEGIN SELECT RAISE(ABORT, 'ledger transfers are immutable'); END;
CREATE TRIGGER transfers_are_permanent BEFORE DELETE ON transfers
BEGIN SELECT RAISE(ABORT, 'ledger transfers are permanent'); END;

CREATE TABLE orders (
    seq           INTEGER PRIMARY KEY,
    order_id      TEXT NOT NULL UNIQUE,
    user_id       TEXT NOT NULL REFERENCES members (user_id),
    amount        TEXT NOT NULL,                -- decimal string, exact
    currency      TEXT NOT NULL,
    amount_minor  INTEGER NOT NULL,
    status        TEXT NOT NULL,
    points_earned INTEGER NOT NULL,
    items         TEXT NOT NULL,                -- JSON
    source        TEXT NOT NULL DEFAULT 'api',
    created_at    TEXT NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, seq);
CREATE INDEX orders_by_status ON orders (status, seq);

CREATE TABLE notifications (
    seq             INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL UNIQUE,
    dedupe_key      TEXT NOT NULL UNIQUE,
    event_id        TEXT NOT NULL,
    type            TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    subject         TEXT NOT NULL,
    message         TEXT NOT NULL,              -- JSON {default, email, sms}
    old_tier        TEXT,
    new_tier        TEXT,
    milestones      TEXT NOT NULL DEFAULT '[]',
    data            TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL
);
CREATE INDEX notifications_by_user ON notifications (user_id, seq);

-- Transactional outbox: one row per (event, handler), written in the state change's transaction.
CREATE TABLE outbox (
    message_id   INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    handler      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at REAL NOT NULL,                 -- epoch seconds: due time or lease expiry
    last_error   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (event_id, handler)
);
CREATE INDEX outbox_due ON outbox (status, available_at);

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    status_code  INTEGER,
    body         BLOB,
    locked_until REAL NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at);

-- Bulk point imports: resumable and idempotent per file (identified by its SHA-256).
CREATE TABLE point_imports (
    file_sha256  TEXT PRIMARY KEY,
    file_name    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'completed')),
    rows_done    INTEGER NOT NULL DEFAULT 0,
    rows_awarded INTEGER NOT NULL DEFAULT 0,
    rows_skipped INTEGER NOT NULL DEFAULT 0,
    started_at   TEXT NOT NULL,
    finished_at  TEXT
);
