//! The soak, short: `sigil bench soak --minutes 2` runs mixed load against
//! three real node processes while its chaos loop kill -9s, SIGSTOPs and
//! restarts them, then checks every signature and plaintext, that every
//! key is on every node and still signs, that no nonce was used twice and
//! that no node panicked. The README gives a 30-minute run's counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::free_port;

/// The value of the row `| label | value |` in the soak's report.
fn count(out: &str, label: &str) -> Option<u64> {
    out.lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .and_then(|l| l.trim_end_matches('|').rsplit('|').next())
        .and_then(|v| v.trim().trim_matches('*').parse().ok())
}

#[test]
fn two_minutes_of_load_and_chaos_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/primes-1536.txt");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["bench", "soak", "--minutes", "2", "--paillier-bits", "512"])
        .args(["--http-port", &free_port().to_string()])
        .args(["--peer-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(tmp.path().join("soak"))
        .arg("--prime-seed-file")
        .arg(&fixtures)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "soak failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    assert_eq!(count(&stdout, "keys lost"), Some(0), "{stdout}");
    assert_eq!(count(&stdout, "nonces used twice"), Some(0), "{stdout}");
    assert_eq!(count(&stdout, "node panics"), Some(0), "{stdout}");
    assert_eq!(count(&stdout, "fatal findings"), Some(0), "{stdout}");
    assert!(
        count(&stdout, "signatures verified (independent verifiers)").unwrap() > 50,
        "{stdout}"
    );
    assert!(count(&stdout, "plaintexts checked").unwrap() > 5, "{stdout}");
    let faults =
        count(&stdout, "fault injected: kill -9").unwrap_or(0) + count(&stdout, "fault injected: SIGSTOP").unwrap_or(0);
    assert!(faults >= 10, "the chaos loop ran: {stdout}");
}
