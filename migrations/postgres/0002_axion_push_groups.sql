-- Group membership for `axion/{package}/push/@{group}/...` commands.
CREATE TABLE IF NOT EXISTS axion_push_group_member (
  "Package" varchar(255) NOT NULL,
  "GroupName" varchar(255) NOT NULL,
  "User" varchar(255) NOT NULL,
  "AddedAt" timestamp,
  PRIMARY KEY ("Package", "GroupName", "User")
);
