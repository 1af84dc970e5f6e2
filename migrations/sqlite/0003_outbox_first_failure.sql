-- When a delivery first failed: `outbox.give_up_after` counts from then, not
-- from when the event was queued (a row that waited behind an outage gets
-- its full time to be retried).
ALTER TABLE outbox ADD COLUMN first_failed_ms INTEGER;
