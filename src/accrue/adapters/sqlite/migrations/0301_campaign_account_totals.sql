-- Running totals of the campaign budget accounts, kept by the database itself: every insert into
-- the (immutable, permanent) ledger that touches a campaign:* account adds to them in the same
-- statement, so they are a projection of the ledger that cannot drift; `accrue ledger check`
-- compares them with the postings anyway. A budget check reads one row instead of summing a
-- campaign's whole award history. member_id '' holds the account's total.

CREATE TABLE campaign_account_totals (
    account   TEXT NOT NULL,
    member_id TEXT NOT NULL,
    paid      INTEGER NOT NULL,              -- points paid out of the account, net of returns
    PRIMARY KEY (account, member_id)
) WITHOUT ROWID;

CREATE TRIGGER campaign_account_paid AFTER INSERT ON transfers WHEN NEW.debit_account GLOB 'campaign:*'
BEGIN
    INSERT INTO campaign_account_totals (account, member_id, paid) VALUES (NEW.debit_account, '', NEW.amount)
        ON CONFLICT (account, member_id) DO UPDATE SET paid = paid + excluded.paid;
    INSERT INTO campaign_account_totals (account, member_id, paid) VALUES (NEW.debit_account, NEW.member_id, NEW.amount)
        ON CONFLICT (account, member_id) DO UPDATE SET paid = paid + excluded.paid;
END;

CREATE TRIGGER campaign_account_returned AFTER INSERT ON transfers WHEN NEW.credit_account GLOB 'campaign:*'
BEGIN
    INSERT INTO campaign_account_totals (account, member_id, paid) VALUES (NEW.credit_account, '', -NEW.amount)
        ON CONFLICT (account, member_id) DO UPDATE SET paid = paid + excluded.paid;
    INSERT INTO campaign_account_totals (account, member_id, paid) VALUES (NEW.credit_account, NEW.member_id, -NEW.amount)
        ON CONFLICT (account, member_id) DO UPDATE SET paid = paid + excluded.paid;
END;

-- Postings made before this migration.
INSERT INTO campaign_account_totals (account, member_id, paid)
SELECT account, member_id, SUM(delta) FROM (
    SELECT debit_account AS account, member_id, amount AS delta FROM transfers WHERE debit_account GLOB 'campaign:*'
    UNION ALL
    SELECT credit_account, member_id, -amount FROM transfers WHERE credit_account GLOB 'campaign:*'
    UNION ALL
    SELECT debit_account, '', amount FROM transfers WHERE debit_account GLOB 'campaign:*'
    UNION ALL
    SELECT credit_account, '', -amount FROM transfers WHERE credit_account GLOB 'campaign:*'
)
GROUP BY account, member_id;
