-- A payout run's totals per referrer, kept in the same transaction as each chunk of rewards the run
-- claims: the report streams from this small table (one row per referrer) in referrer order.
-- It replaces the (payout_run_id, referrer_id) index, whose inserts landed all over the index and
-- made a run's memory grow with the number of rewards.
CREATE TABLE payout_lines (
    run_id      TEXT NOT NULL REFERENCES payout_runs (run_id),
    referrer_id TEXT NOT NULL,
    total_cents INTEGER NOT NULL CHECK (total_cents > 0),
    rewards     INTEGER NOT NULL CHECK (rewards > 0),
    PRIMARY KEY (run_id, referrer_id)
);

DROP INDEX referrals_by_run;
