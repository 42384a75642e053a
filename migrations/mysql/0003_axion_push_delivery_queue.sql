-- The durable delivery queue (DESIGN §1, §3).
--
-- A send is recorded here, with one row per subscription it reaches, in the
-- same transaction, before its MQTT message is acknowledged. A delivery row
-- leaves the queue when its push is delivered, gone, refused or expired; a
-- command row stays for the de-duplication window (delivery.dedup_window),
-- so a send whose id was seen is not delivered twice.

CREATE TABLE IF NOT EXISTS axion_push_command (
  Package varchar(255) NOT NULL,
  Id varchar(255) NOT NULL,
  -- The user or @group the send addressed: where its results go.
  Target varchar(256) NOT NULL,
  AcceptedAt bigint NOT NULL,        -- milliseconds since the epoch
  ExpiresAt bigint NOT NULL,         -- AcceptedAt + TTL: no attempt after it
  Payload mediumblob NOT NULL,       -- the Web Push plaintext, rendered once
  Ttl integer NOT NULL,
  Urgency varchar(16) NOT NULL,
  Topic varchar(32),
  Members integer,                   -- group sends: the members reached
  -- For a send that came without an id: a hash of its topic and payload,
  -- so the broker redelivering the very same message is recognised.
  Digest varchar(64),
  Subscriptions integer NOT NULL DEFAULT 0,
  Untried integer NOT NULL DEFAULT 0, -- deliveries not yet attempted once
  Pending integer NOT NULL DEFAULT 0, -- deliveries still in the queue
  Delivered integer NOT NULL DEFAULT 0,
  Failed integer NOT NULL DEFAULT 0,
  Deactivated integer NOT NULL DEFAULT 0,
  Expired integer NOT NULL DEFAULT 0,
  -- 0: no result yet; 1: the first result (every delivery tried once) is
  -- out; 2: the final one is.
  Reported integer NOT NULL DEFAULT 0,
  PRIMARY KEY (Package, Id),
  INDEX axion_push_command_accepted (AcceptedAt),
  INDEX axion_push_command_digest (Package, Digest)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Failed deliveries of a command by cause, for its result's `failures`.
CREATE TABLE IF NOT EXISTS axion_push_command_failure (
  Package varchar(255) NOT NULL,
  CommandId varchar(255) NOT NULL,
  Cause varchar(32) NOT NULL,
  Count integer NOT NULL,
  PRIMARY KEY (Package, CommandId, Cause)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One push to send. The subscription's keys are copied: the push goes to
-- the browser as it was subscribed when the send was accepted.
-- NextAt is when the row may next be claimed: a claim moves it a lease
-- ahead, so a row whose daemon died becomes due again by itself.
-- A claim reads the due rows in (NextAt, Seq) order and the rows held for
-- it in (LeasedBy, NextAt, Seq) order, each straight from an index, so it
-- locks only the rows it takes.
CREATE TABLE IF NOT EXISTS axion_push_delivery (
  Seq bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
  Package varchar(255) NOT NULL,
  CommandId varchar(255) NOT NULL,
  User varchar(255) NOT NULL,
  Endpoint varchar(2048) NOT NULL,
  KeysP256dh varchar(512),
  KeysAuth varchar(512),
  Attempts integer NOT NULL DEFAULT 0,
  Tried integer NOT NULL DEFAULT 0,
  NextAt bigint NOT NULL,
  LeasedBy varchar(255),
  INDEX axion_push_delivery_due (NextAt),
  INDEX axion_push_delivery_lease (LeasedBy, NextAt)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
