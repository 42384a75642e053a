-- The Axion table (DESIGN §4) in PostgreSQL's spelling, created only where
-- it does not exist yet. Every identifier is quoted: unquoted, PostgreSQL
-- folds names to lower case, and `User` is a reserved word that compares
-- with `current_user`. PostgreSQL has no prefix indexes, so the key is the
-- whole "Endpoint".
--
-- A table that is already there (Axion's, or one another tool created) is
-- used as it is: not altered, not even indexed, since building an index
-- locks the table against the writes of the software that owns it. Its
-- index on ("Package", "Endpoint") only comes with a table created here.
DO $$
BEGIN
  -- Looked up in the catalog, not information_schema, which hides tables
  -- the daemon's role has no privilege on.
  IF to_regclass(quote_ident(current_schema()) || '.def_notify_push_subscription') IS NULL THEN
    CREATE TABLE IF NOT EXISTS def_notify_push_subscription (
      "User" char(255) NOT NULL,
      "Package" char(255) NOT NULL,
      "Module" char(255),
      "Endpoint" varchar(2048) NOT NULL,
      "KeysP256dh" varchar(512),
      "KeysAuth" varchar(512),
      "UserAgent" varchar(512),
      "CreatedAt" timestamp,
      "Active" char(1) DEFAULT 'Y',
      PRIMARY KEY ("User", "Package", "Endpoint")
    );
    -- Finds the other users of a re-subscribed endpoint (a browser shared
    -- by two accounts) without a table scan.
    CREATE INDEX IF NOT EXISTS axion_push_subscription_endpoint
      ON def_notify_push_subscription ("Package", "Endpoint");
  END IF;
END
$$;
