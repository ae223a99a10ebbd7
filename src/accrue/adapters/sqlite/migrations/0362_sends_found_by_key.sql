-- The sends of a notification are found by their key (the notification's key, ':', the channel)
-- through the unique key index; an index by notification id cost an insert per send for that.
DROP INDEX notification_sends_by_notification;
