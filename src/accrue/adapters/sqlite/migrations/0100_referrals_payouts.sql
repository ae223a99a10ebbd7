-- Referrals and monthly payouts.

-- Referrer counters live on every member from enrolment (a default, never a missing row), and
-- change only by relative updates (count = count + 1) inside the signup's transaction.
ALTER TABLE members ADD COLUMN referral_count INTEGER NOT NULL DEFAULT 0 CHECK (referral_count >= 0);
ALTER TABLE members ADD COLUMN referral_rewards_cents INTEGER NOT NULL DEFAULT 0
    CHECK (referral_rewards_cents >= 0);

-- The mailbox an email delivers to (accrue.domain.referrals.email_identity, mirrored here so it can
-- be indexed): the local part before any '+tag', without dots for gmail.com/googlemail.com.
-- email_key is already trimmed and lower-cased by the application. A property test checks that
-- this expression and the domain function agree.
ALTER TABLE members ADD COLUMN email_identity TEXT GENERATED ALWAYS AS (
    CASE
        WHEN email_key IS NULL THEN NULL
        WHEN instr(email_key, '@') = 0 THEN email_key
        WHEN substr(email_key, instr(email_key, '@') + 1) IN ('gmail.com', 'googlemail.com') THEN
            replace(
                CASE WHEN instr(substr(email_key, 1, instr(email_key, '@') - 1), '+') > 0
                     THEN substr(email_key, 1, instr(substr(email_key, 1, instr(email_key, '@') - 1), '+') - 1)
                     ELSE substr(email_key, 1, instr(email_key, '@') - 1) END,
                '.', '') || '@gmail.com'
        ELSE
            CASE WHEN instr(substr(email_key, 1, instr(email_key, '@') - 1), '+') > 0
                 THEN substr(email_key, 1, instr(substr(email_key, 1, instr(email_key, '@') - 1), '+') - 1)
                 ELSE substr(email_key, 1, instr(email_key, '@') - 1) END
            || '@' || substr(email_key, instr(email_key, '@') + 1)
    END
) VIRTUAL;
CREATE INDEX members_by_email_identity ON members (email_identity);

CREATE TABLE payout_runs (
    seq             INTEGER PRIMARY KEY,
    run_id          TEXT NOT NULL UNIQUE,
    month           TEXT NOT NULL UNIQUE,          -- YYYY-MM: one run per month, ever
    status          TEXT NOT NULL CHECK (status IN ('running', 'failed', 'completed')),
    phase           TEXT NOT NULL CHECK (phase IN ('assigning', 'reporting', 'marking', 'done')),
    cutoff_at       TEXT NOT NULL,                 -- rewards created before it belong to the month
    payout_date     TEXT NOT NULL,
    report_key      TEXT,
    report_location TEXT,
    referrers       INTEGER NOT NULL DEFAULT 0,
    rewards         INTEGER NOT NULL DEFAULT 0,
    total_cents     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 1,
    last_error      TEXT,
    started_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    completed_at    TEXT,
    CHECK ((status = 'completed') = (phase = 'done'))
);

CREATE TABLE referrals (
    seq             INTEGER PRIMARY KEY,
    referral_id     TEXT NOT NULL UNIQUE,
    referrer_id     TEXT NOT NULL REFERENCES members (user_id),
    referred_id     TEXT NOT NULL UNIQUE REFERENCES members (user_id),  -- a member is referred once
    referral_code   TEXT NOT NULL,
    referral_number INTEGER NOT NULL CHECK (referral_number >= 1),
    reward_cents    INTEGER NOT NULL CHECK (reward_cents > 0),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'held', 'paid', 'rejected')),
    payout_run_id   TEXT REFERENCES payout_runs (run_id),
    paid_at         TEXT,
    review_decision TEXT CHECK (review_decision IN ('approved', 'rejected')),
    reviewed_by     TEXT,
    reviewed_at     TEXT,
    created_at      TEXT NOT NULL,
    CHECK (referrer_id <> referred_id),
    CHECK ((status = 'paid') = (paid_at IS NOT NULL)),
    CHECK (status <> 'paid' OR payout_run_id IS NOT NULL),
    CHECK (payout_run_id IS NULL OR status IN ('pending', 'paid'))
);
CREATE INDEX referrals_by_referrer ON referrals (referrer_id, seq);
CREATE INDEX referrals_by_referrer_time ON referrals (referrer_id, created_at);
CREATE INDEX referrals_held ON referrals (seq) WHERE status = 'held';
-- What the next payout run may claim.
CREATE INDEX referrals_unclaimed ON referrals (created_at) WHERE status = 'pending' AND payout_run_id IS NULL;
-- A run's report: grouped by referrer straight from the index (no sort, no temporary table).
CREATE INDEX referrals_by_run ON referrals (payout_run_id, referrer_id, reward_cents)
    WHERE payout_run_id IS NOT NULL;
-- A run's rewards still to mark paid; a row leaves the index when it is paid.
CREATE INDEX referrals_to_pay ON referrals (payout_run_id) WHERE status = 'pending' AND payout_run_id IS NOT NULL;
