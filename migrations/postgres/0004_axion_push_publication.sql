-- What the broker has acknowledged (its QoS 1 PUBACK), so that a result
-- report or a real-time event that may not have reached it is published
-- again after a crash or a stop — at least once, never at most once.

-- The highest report the broker acknowledged: 0 none, 1 the first (every
-- delivery tried once), 2 the final one. "Reported" is the highest due.
ALTER TABLE axion_push_command ADD COLUMN IF NOT EXISTS "Published" bigint NOT NULL DEFAULT 0;
-- When the due report that is not acknowledged yet was (last) handed to the
-- broker, in milliseconds since the epoch; NULL once it is acknowledged.
ALTER TABLE axion_push_command ADD COLUMN IF NOT EXISTS "ReportedAt" bigint;
-- The real-time event, until the broker has acknowledged it (then NULL),
-- and when it was (last) handed to the broker.
ALTER TABLE axion_push_command ADD COLUMN IF NOT EXISTS "Event" bytea;
ALTER TABLE axion_push_command ADD COLUMN IF NOT EXISTS "EventAt" bigint;

CREATE INDEX IF NOT EXISTS axion_push_command_reported_at
  ON axion_push_command ("ReportedAt");
CREATE INDEX IF NOT EXISTS axion_push_command_event_at
  ON axion_push_command ("EventAt");
