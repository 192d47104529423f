// Shared by the simulation tests (`mod common_snapshot;`): pinned at-rest
// encodings under `tests/snapshots/`.

/// Compares `bytes` with the snapshot `name`, or writes it when
/// `SIGIL_UPDATE_SNAPSHOTS=1`. Returns the stored bytes, so the caller
/// also checks that what is stored today still decodes.
pub fn snapshot(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = format!("{}/tests/snapshots/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var("SIGIL_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, bytes).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (SIGIL_UPDATE_SNAPSHOTS=1 writes it)"));
    assert!(
        stored == bytes,
        "the at-rest encoding {name} changed: stored records would no longer match. If the change is \
         intended, give the format a new version and regenerate with SIGIL_UPDATE_SNAPSHOTS=1"
    );
    stored
}
