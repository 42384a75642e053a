-- The Axion table, exactly as existing installations have it (DESIGN §4),
-- created only where it does not exist yet. Where it exists it is used as
-- it is: no index, column or collation of ours is added to it, so Axion and
-- its Python module keep seeing the table they created. Its columns take the
-- database's default collation (often case-insensitive): the daemon's
-- statements compare them exactly all the same.
CREATE TABLE IF NOT EXISTS def_notify_push_subscription (
  User char(255) NOT NULL, Package char(255) NOT NULL, Module char(255),
  Endpoint varchar(2048) NOT NULL, KeysP256dh varchar(512), KeysAuth varchar(512),
  UserAgent varchar(512), CreatedAt datetime, Active char(1) DEFAULT 'Y',
  PRIMARY KEY (User, Package, Endpoint(255))
);
