-- Sigil store schema v1 (PostgreSQL): the tables of the SQLite schema, with
-- BYTEA for sealed blobs and BIGINT for integers.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE keys (
    key_id         TEXT PRIMARY KEY,
    scheme         TEXT NOT NULL,
    threshold      BIGINT NOT NULL,
    parties        TEXT NOT NULL,
    public_key     BYTEA NOT NULL,
    public_package BYTEA NOT NULL,
    epoch          BIGINT NOT NULL,
    label          TEXT,
    created_at     BIGINT NOT NULL,
    status         TEXT NOT NULL,
    policy         TEXT NOT NULL DEFAULT '{}',
    created_by     TEXT NOT NULL DEFAULT '',
    create_jti     TEXT NOT NULL DEFAULT '',
    attestations   TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX keys_status_key_id ON keys (status, key_id);
CREATE TABLE aux_info (
    party_set TEXT NOT NULL,
    party     BIGINT NOT NULL,
    sealed    BYTEA NOT NULL,
    committed BOOLEAN NOT NULL DEFAULT FALSE,
    evidence  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (party_set, party)
);
CREATE TABLE presignatures (
    seq        BIGSERIAL PRIMARY KEY,
    key_id     TEXT NOT NULL,
    signer_set TEXT NOT NULL,
    party      BIGINT NOT NULL,
    presig_id  TEXT NOT NULL,
    sealed     BYTEA NOT NULL,
    UNIQUE (key_id, signer_set, party, presig_id)
);
CREATE INDEX presignatures_party_id ON presignatures (party, presig_id);
CREATE TABLE primes (
    id     BIGSERIAL PRIMARY KEY,
    bits   BIGINT NOT NULL,
    sealed BYTEA NOT NULL
);
CREATE INDEX primes_bits_id ON primes (bits, id);
CREATE TABLE audit (
    seq     BIGINT PRIMARY KEY,
    record  TEXT NOT NULL
);
CREATE TABLE key_shares (
    key_id  TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    party   BIGINT NOT NULL,
    epoch   BIGINT NOT NULL,
    sealed  BYTEA NOT NULL,
    PRIMARY KEY (key_id, party, epoch)
);
