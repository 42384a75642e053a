-- The command a receipt was taken with (its `id`), so that the same
-- command delivered again — the broker's redelivery after a daemon died
-- between taking the receipt and publishing its answer — is answered as
-- the first time rather than refused as a replay.
ALTER TABLE axion_push_receipt ADD COLUMN CommandId varchar(128);
