-- Webhooks in and out.

-- Inbound provider events, once each. The row is written in the same transaction as the event's
-- effect (an order that earns points), so a replayed event id is refused and never applied twice.
CREATE TABLE webhook_events (
    seq          INTEGER PRIMARY KEY,
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('applied', 'ignored')),
    member_id    TEXT,                          -- the member the payload names (found for GDPR erasure)
    reference    TEXT,                          -- what it produced, e.g. order:<id>
    blob_key     TEXT,                          -- archived raw payload and headers
    received_at  TEXT NOT NULL,
    UNIQUE (provider, event_id)
);
CREATE INDEX webhook_events_by_member ON webhook_events (member_id) WHERE member_id IS NOT NULL;

-- Subscriber endpoints for our events (Standard Webhooks signing secret per endpoint).
CREATE TABLE webhook_endpoints (
    seq             INTEGER PRIMARY KEY,
    endpoint_id     TEXT NOT NULL UNIQUE,
    url             TEXT NOT NULL,
    event_types     TEXT NOT NULL,              -- JSON list of public event types
    secret          TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    description     TEXT,
    disabled_reason TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

-- One delivery per (endpoint, event); the worker leases due rows by moving next_attempt_at, so a
-- crash mid-delivery only delays it (receivers de-duplicate by webhook-id, which is the event id).
CREATE TABLE webhook_deliveries (
    seq              INTEGER PRIMARY KEY,
    delivery_id      TEXT NOT NULL UNIQUE,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    member_id        TEXT,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL,                      -- epoch seconds; NULL once finished
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, seq);
CREATE INDEX webhook_deliveries_by_member ON webhook_deliveries (member_id) WHERE member_id IS NOT NULL;

CREATE TABLE webhook_delivery_attempts (
    seq          INTEGER PRIMARY KEY,
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries (delivery_id),
    attempt      INTEGER NOT NULL,
    attempted_at TEXT NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  INTEGER NOT NULL,
    UNIQUE (delivery_id, attempt)
);
