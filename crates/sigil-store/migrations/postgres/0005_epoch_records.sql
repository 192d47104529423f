-- The whole attested record of each retired epoch (JSON, with its
-- attestations, endorsements and activations), so that a node that missed
-- several epochs can check every transition from its own epoch to the
-- current one. Empty for epochs retired before this migration.
ALTER TABLE key_epochs ADD COLUMN record TEXT NOT NULL DEFAULT '';
