-- One recipient of a room's delivery (a list subscriber the mail server
-- refused for good): its own dead letter, retried for that recipient only.
ALTER TABLE outbox ADD COLUMN recipient TEXT;
