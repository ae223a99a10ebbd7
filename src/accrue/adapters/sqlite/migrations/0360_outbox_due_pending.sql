-- Only pending messages are looked up by due time: a partial index holds just those, so marking a
-- message done removes its entry instead of moving it, and the index stays as small as the backlog.
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (available_at) WHERE status = 'pending';
