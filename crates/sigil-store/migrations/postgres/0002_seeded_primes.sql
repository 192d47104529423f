-- Primes imported from a seed file, remembered by a hash so that none is
-- ever imported twice (a restart, or the same file again).
CREATE TABLE seeded_primes (
    hash BYTEA PRIMARY KEY,
    imported_at BIGINT NOT NULL
);
