-- What the broker has acknowledged (its QoS 1 PUBACK), so that a result
-- report or a real-time event that may not have reached it is published
-- again after a crash or a stop — at least once, never at most once.
--
-- The highest report the broker acknowledged: 0 none, 1 the first (every
-- delivery tried once), 2 the final one. `Reported` is the highest due.
-- ReportedAt: when the due report that is not acknowledged yet was (last)
-- handed to the broker, in milliseconds since the epoch; NULL once it is
-- acknowledged. Event: the real-time event, until the broker has
-- acknowledged it (then NULL); EventAt: when it was (last) handed to the
-- broker.
ALTER TABLE axion_push_command
  ADD COLUMN Published integer NOT NULL DEFAULT 0,
  ADD COLUMN ReportedAt bigint,
  ADD COLUMN Event mediumblob,
  ADD COLUMN EventAt bigint,
  ADD INDEX axion_push_command_reported_at (ReportedAt),
  ADD INDEX axion_push_command_event_at (EventAt);
