-- Sigil store schema v1 (SQLite). IF NOT EXISTS throughout: stores made
-- before migrations existed already hold these tables; the columns they
-- lack are added at open (see sqlite.rs, LEGACY_COLUMNS).
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key_id         TEXT PRIMARY KEY,
    scheme         TEXT NOT NULL,
    threshold      INTEGER NOT NULL,
    parties        TEXT NOT NULL,
    public_key     BLOB NOT NULL,
    public_package BLOB NOT NULL,
    epoch          INTEGER NOT NULL,
    label          TEXT,
    created_at     INTEGER NOT NULL,
    status         TEXT NOT NULL,
    policy         TEXT NOT NULL DEFAULT '{}',
    created_by     TEXT NOT NULL DEFAULT '',
    create_jti     TEXT NOT NULL DEFAULT '',
    attestations   TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS aux_info (
    party_set TEXT NOT NULL,
    party     INTEGER NOT NULL,
    sealed    BLOB NOT NULL,
    committed INTEGER NOT NULL DEFAULT 1,
    evidence  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (party_set, party)
);
CREATE TABLE IF NOT EXISTS presignatures (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id     TEXT NOT NULL,
    signer_set TEXT NOT NULL,
    party      INTEGER NOT NULL,
    presig_id  TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    UNIQUE (key_id, signer_set, party, presig_id)
);
CREATE TABLE IF NOT EXISTS primes (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    bits   INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY,
    record  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_shares (
    key_id  TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    party   INTEGER NOT NULL,
    epoch   INTEGER NOT NULL,
    sealed  BLOB NOT NULL,
    PRIMARY KEY (key_id, party, epoch)
);
