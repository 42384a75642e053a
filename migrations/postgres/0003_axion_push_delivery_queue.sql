-- The durable delivery queue (DESIGN §1, §3).
--
-- A send is recorded here, with one row per subscription it reaches, in the
-- same transaction, before its MQTT message is acknowledged. A delivery row
-- leaves the queue when its push is delivered, gone, refused or expired; a
-- command row stays for the de-duplication window (delivery.dedup_window),
-- so a send whose id was seen is not delivered twice.

CREATE TABLE IF NOT EXISTS axion_push_command (
  "Package" varchar(255) NOT NULL,
  "Id" varchar(255) NOT NULL,
  -- The user or @group the send addressed: where its results go.
  "Target" varchar(256) NOT NULL,
  "AcceptedAt" bigint NOT NULL,       -- milliseconds since the epoch
  "ExpiresAt" bigint NOT NULL,        -- AcceptedAt + TTL: no attempt after it
  "Payload" bytea NOT NULL,           -- the Web Push plaintext, rendered once
  "Ttl" bigint NOT NULL,
  "Urgency" varchar(16) NOT NULL,
  "Topic" varchar(32),
  "Members" bigint,                   -- group sends: the members reached
  -- For a send that came without an id: a hash of its topic and payload,
  -- so the broker redelivering the very same message is recognised.
  "Digest" varchar(64),
  "Subscriptions" bigint NOT NULL DEFAULT 0,
  "Untried" bigint NOT NULL DEFAULT 0, -- deliveries not yet attempted once
  "Pending" bigint NOT NULL DEFAULT 0, -- deliveries still in the queue
  "Delivered" bigint NOT NULL DEFAULT 0,
  "Failed" bigint NOT NULL DEFAULT 0,
  "Deactivated" bigint NOT NULL DEFAULT 0,
  "Expired" bigint NOT NULL DEFAULT 0,
  -- 0: no result yet; 1: the first result (every delivery tried once) is
  -- out; 2: the final one is.
  "Reported" bigint NOT NULL DEFAULT 0,
  PRIMARY KEY ("Package", "Id")
);

CREATE INDEX IF NOT EXISTS axion_push_command_accepted
  ON axion_push_command ("AcceptedAt");
CREATE INDEX IF NOT EXISTS axion_push_command_digest
  ON axion_push_command ("Package", "Digest");

-- Failed deliveries of a command by cause, for its result's `failures`.
CREATE TABLE IF NOT EXISTS axion_push_command_failure (
  "Package" varchar(255) NOT NULL,
  "CommandId" varchar(255) NOT NULL,
  "Cause" varchar(32) NOT NULL,
  "Count" bigint NOT NULL,
  PRIMARY KEY ("Package", "CommandId", "Cause")
);

-- One push to send. The subscription's keys are copied: the push goes to
-- the browser as it was subscribed when the send was accepted.
-- "NextAt" is when the row may next be claimed, in milliseconds on the
-- database's clock: a claim moves it a lease ahead, so a row whose daemon
-- died becomes due again by itself.
CREATE TABLE IF NOT EXISTS axion_push_delivery (
  "Seq" bigserial PRIMARY KEY,
  "Package" varchar(255) NOT NULL,
  "CommandId" varchar(255) NOT NULL,
  "User" varchar(255) NOT NULL,
  "Endpoint" varchar(2048) NOT NULL,
  "KeysP256dh" varchar(512),
  "KeysAuth" varchar(512),
  "Attempts" bigint NOT NULL DEFAULT 0,
  "Tried" boolean NOT NULL DEFAULT false,
  "NextAt" bigint NOT NULL,
  "LeasedBy" varchar(255)
);

-- Claims take due rows in ("NextAt", "Seq") order.
CREATE INDEX IF NOT EXISTS axion_push_delivery_due
  ON axion_push_delivery ("NextAt", "Seq");
CREATE INDEX IF NOT EXISTS axion_push_delivery_lease
  ON axion_push_delivery ("LeasedBy");
