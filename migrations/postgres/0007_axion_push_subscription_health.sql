-- What became of each subscription's pushes: the last delivery, receipt
-- and failure, and for how long its pushes have been refused for it alone
-- (the rule that expires a subscription as `stale` reads that). A table of
-- our own: Axion's table gets no column. Keyed by the subscription's stable
-- id (`list` shows it), which the package and endpoint decide.
CREATE TABLE IF NOT EXISTS axion_push_subscription_health (
  "Package" varchar(255) NOT NULL,
  "Subscription" varchar(32) NOT NULL,
  "User" varchar(255) NOT NULL,
  "Origin" varchar(255),                  -- the push service, e.g. https://fcm.googleapis.com
  "DeliveredAt" bigint,                   -- ms since the epoch: a push service took a push
  "ReceiptAt" bigint,                     -- the last receipt from the browser
  "Receipt" varchar(16),                  -- shown, failed, clicked, closed
  "FailedAt" bigint,                      -- the last push that failed for good
  "Failure" varchar(64),                  -- its cause: an HTTP status, timeout, policy…
  "Failures" integer NOT NULL DEFAULT 0,  -- failures since the last delivery
  "RefusedSince" bigint,                  -- refused for it alone, while others were delivered, since
  PRIMARY KEY ("Package", "Subscription")
);
