-- A stored notification is queued for its channels by the repository, in the transaction that stores
-- it, unless the caller plans its sends in that same transaction (every channel local: it is sent at
-- once, and a queue row would be written only to be deleted). Neither a crash nor a rollback can
-- lose one: it is queued, or planned, with it.
DROP TRIGGER notifications_queue_for_channels;
