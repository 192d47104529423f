-- Primes imported from a seed file, remembered by a hash so that none is
-- ever imported twice (a restart, or the same file again).
CREATE TABLE IF NOT EXISTS seeded_primes (
    hash BLOB PRIMARY KEY,
    imported_at INTEGER NOT NULL
);
