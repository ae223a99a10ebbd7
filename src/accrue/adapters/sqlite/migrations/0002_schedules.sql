-- When each schedule last fired, so a missed run (the machine was off) is caught up at start.
CREATE TABLE schedule_runs (
    name          TEXT PRIMARY KEY,
    last_fire_at  TEXT NOT NULL,
    last_status   TEXT NOT NULL,
    last_error    TEXT
);
