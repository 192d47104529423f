-- A pending epoch its node acknowledged (phase 1 of the epoch commit):
-- kept until the switch; never deleted by an abort or a sweep, nor
-- replaced by another reshare's pending epoch (the store enforces it in
-- the statements that delete and replace).
ALTER TABLE pending_epochs ADD COLUMN acked BOOLEAN NOT NULL DEFAULT FALSE;
