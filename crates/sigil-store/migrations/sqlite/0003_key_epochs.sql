-- Key epochs (refresh and resharing). A key's next epoch waits here,
-- record and this node's sealed share, until every new party attested
-- it; the switch moves the share into key_shares in one transaction.
-- key_epochs keeps a line per retired epoch (the key's history).
CREATE TABLE IF NOT EXISTS pending_epochs (
    key_id     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    party      INTEGER NOT NULL,
    record     TEXT NOT NULL,
    session    TEXT NOT NULL,
    sealed     BLOB,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, epoch)
);
CREATE TABLE IF NOT EXISTS key_epochs (
    key_id      TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    threshold   INTEGER NOT NULL,
    parties     TEXT NOT NULL,
    record_hash TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER NOT NULL,
    PRIMARY KEY (key_id, epoch)
);
-- The dealing old parties' signatures over the transition to the
-- key's current epoch (empty at epoch 0).
ALTER TABLE keys ADD COLUMN endorsements TEXT NOT NULL DEFAULT '[]';
-- Every party's signature that it activated the key's current epoch.
ALTER TABLE keys ADD COLUMN activations TEXT NOT NULL DEFAULT '[]';
