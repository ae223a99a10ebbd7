-- The campaign account totals of migration 0301, kept by one trigger instead of two: every insert
-- into the ledger entered both triggers' programs to test their conditions (a quarter of the cost of
-- a posting that touches no campaign). Same statements, same order, each guarded by its condition.
DROP TRIGGER campaign_account_paid;
DROP TRIGGER campaign_account_returned;

CREATE TRIGGER campaign_account_moved AFTER INSERT ON transfers
WHEN NEW.debit_account GLOB 'campaign:*' OR NEW.credit_account GLOB 'campaign:*'
BEGIN
    INSERT INTO campaign_account_totals (account, member_id, paid)
        SELECT NEW.debit_account, '', NEW.amount WHERE NEW.debit_account GLOB 'campaign:*'
        ON CONFLICT (account, member_id) DO UPDATE SET paid = paid + excluded.paid;
    INSERT INTO campaign_account_totals (account, member_id, paid)
        SELECT NEW.debit_account, NEW.member_id, NEW.amount WHERE NEW.debit_account GLOB 'campaign:*'
        ON CONFLICT (account, member_id) DO UPDATE SET paid = paid + excluded.paid;
    INSERT INTO campaign_account_totals (account, member_id, paid)
        SELECT NEW.credit_account, '', -NEW.amount WHERE NEW.credit_account GLOB 'campaign:*'
        ON CONFLICT (account, member_id) DO UPDATE SET paid = paid + excluded.paid;
    INSERT INTO campaign_account_totals (account, member_id, paid)
        SELECT NEW.credit_account, NEW.member_id, -NEW.amount WHERE NEW.credit_account GLOB 'campaign:*'
        ON CONFLICT (account, member_id) DO UPDATE SET paid = paid + excluded.paid;
END;
