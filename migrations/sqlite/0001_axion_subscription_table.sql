-- The Axion table, exactly as existing installations have it (DESIGN §4),
-- created only where it does not exist yet. SQLite has no prefix indexes, so
-- the key is the whole Endpoint.
CREATE TABLE IF NOT EXISTS def_notify_push_subscription (
  User char(255) NOT NULL,
  Package char(255) NOT NULL,
  Module char(255),
  Endpoint varchar(2048) NOT NULL,
  KeysP256dh varchar(512),
  KeysAuth varchar(512),
  UserAgent varchar(512),
  CreatedAt datetime,
  Active char(1) DEFAULT 'Y',
  PRIMARY KEY (User, Package, Endpoint)
);

-- Finds the other users of a re-subscribed endpoint (a browser shared by
-- two accounts) without a table scan.
CREATE INDEX IF NOT EXISTS axion_push_subscription_endpoint
  ON def_notify_push_subscription (Package, Endpoint);
