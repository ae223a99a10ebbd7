-- Payments (seed 004): payments with their workflow cursor, batch files, the durable queue (the
-- local stand-in for SQS) and the hash-chained audit log.

CREATE TABLE payments (
    seq               INTEGER PRIMARY KEY,
    payment_id        TEXT NOT NULL UNIQUE,
    amount_minor      INTEGER NOT NULL CHECK (amount_minor > 0),
    currency          TEXT NOT NULL,
    user_id           TEXT,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'processed', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    failure_reason    TEXT,
    last_error        TEXT,
    gateway_reference TEXT,
    points_earned     INTEGER NOT NULL DEFAULT 0,
    batch_ref         INTEGER,                 -- payment_batches.seq (a small key: millions of rows)
    batch_line        INTEGER,
    workflow_step     TEXT,                    -- next step to run; NULL once the workflow ended
    step_attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL,                    -- epoch seconds: a retry is not due before
    lease_until       REAL,                    -- epoch seconds: a worker is calling the gateway
    version           INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX payments_by_status ON payments (status, seq);
CREATE INDEX payments_by_created ON payments (created_at);
CREATE INDEX payments_by_batch ON payments (batch_ref, batch_line) WHERE batch_ref IS NOT NULL;

-- One row per uploaded file; the id is the file's SHA-256, so a re-upload finds its batch.
CREATE TABLE payment_batches (
    seq            INTEGER PRIMARY KEY,
    batch_id       TEXT NOT NULL UNIQUE,
    status         TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    source         TEXT NOT NULL,
    file_name      TEXT,
    blob_key       TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    byte_offset    INTEGER NOT NULL DEFAULT 0,  -- resume point: next byte to read
    line_number    INTEGER NOT NULL DEFAULT 0,  -- last line done
    total_rows     INTEGER NOT NULL DEFAULT 0,
    accepted_rows  INTEGER NOT NULL DEFAULT 0,
    rejected_rows  INTEGER NOT NULL DEFAULT 0,
    duplicate_rows INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    completed_at   TEXT,
    CHECK (total_rows = accepted_rows + rejected_rows + duplicate_rows)
);
CREATE INDEX payment_batches_unfinished ON payment_batches (status, created_at);

CREATE TABLE payment_batch_issues (
    batch_id TEXT NOT NULL,
    line     INTEGER NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('invalid', 'duplicate')),
    reason   TEXT NOT NULL,
    PRIMARY KEY (batch_id, line)
) WITHOUT ROWID;

-- Durable queues with SQS semantics. A dead letter stays in the table with status 'dead'.
CREATE TABLE queue_messages (
    message_id    INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: receipt handles stay unique
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'dead')),
    visible_at    REAL NOT NULL,               -- epoch seconds
    receive_count INTEGER NOT NULL DEFAULT 0,
    sent_at       REAL NOT NULL,
    last_error    TEXT,
    dead_at       REAL
);
CREATE INDEX queue_messages_ready ON queue_messages (queue, status, visible_at);

-- Append-only, hash-chained audit log. seq is the position in the chain.
CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY,
    occurred_at  TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    details      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_log_by_subject ON audit_log (subject_type, subject_id, seq);

CREATE TRIGGER audit_log_is_append_only BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_is_permanent BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit entries are permanent'); END;
