-- Group membership for `axion/{package}/push/@{group}/...` commands.
--
-- Every table of ours is InnoDB (row locks, transactions) in utf8mb4 with
-- the binary collation: names and endpoints that differ only in case are
-- different. (utf8mb4_bin ignores trailing spaces, as Axion's CHAR columns
-- do.)
CREATE TABLE IF NOT EXISTS axion_push_group_member (
  Package varchar(255) NOT NULL,
  GroupName varchar(255) NOT NULL,
  User varchar(255) NOT NULL,
  AddedAt datetime,
  PRIMARY KEY (Package, GroupName, User)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
