-- Campaigns: declarative reward rules. What a campaign has awarded is not stored here: it is the
-- ledger's record of transfers drawn from the campaign's budget account (campaign:{id}:budget).

CREATE TABLE campaigns (
    seq             INTEGER PRIMARY KEY,
    campaign_id     TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    type            TEXT NOT NULL CHECK (type IN ('signup_bonus', 'purchase_multiplier', 'fixed_bonus',
                                                  'referral_bonus', 'milestone_bonus')),
    occasion        TEXT NOT NULL CHECK (occasion IN ('signup', 'purchase', 'referral', 'milestone')),
    rule            TEXT NOT NULL,          -- JSON: points, multiplier, conditions, budget, description
    priority        INTEGER NOT NULL,
    exclusive       INTEGER NOT NULL CHECK (exclusive IN (0, 1)),
    starts_at       TEXT,                   -- UTC ISO-8601 (sorts in time order); NULL: from creation
    ends_at         TEXT,                   -- NULL: open-ended
    ended_at        TEXT,                   -- set when ended early
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX campaigns_by_occasion ON campaigns (occasion, priority);

-- Budget checks sum one campaign account's postings inside the award's transaction. These partial
-- covering indexes hold only campaign postings, so ordinary earning pays nothing for them. Queries
-- repeat the GLOB term verbatim: SQLite uses a partial index only when the WHERE clause contains it.
CREATE INDEX transfers_campaign_debits ON transfers (debit_account, member_id, amount)
    WHERE debit_account GLOB 'campaign:*';
CREATE INDEX transfers_campaign_credits ON transfers (credit_account, member_id, amount)
    WHERE credit_account GLOB 'campaign:*';
