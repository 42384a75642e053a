-- Receipts already taken (see src/receipt.rs): one row per push and kind
-- of receipt, so a token sent again is refused as a replay. A row is kept
-- as long as its token is accepted at all (30 days after its send).
CREATE TABLE IF NOT EXISTS axion_push_receipt (
  Package varchar(255) NOT NULL,
  -- The token's MAC, base64url: unique per push.
  Tag varchar(32) NOT NULL,
  Kind varchar(16) NOT NULL,          -- shown, failed, clicked, closed
  SentAt bigint NOT NULL,             -- the send's acceptance, ms since the epoch
  Replays integer NOT NULL DEFAULT 0, -- times the same receipt came again
  PRIMARY KEY (Package, Tag, Kind)
);

CREATE INDEX IF NOT EXISTS axion_push_receipt_sent ON axion_push_receipt (SentAt);
