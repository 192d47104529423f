//! The README's walk-throughs (curl and CLI), run as written against a
//! `sigil dev` cluster, from a directory holding its `.sigil-dev`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use common::DevCluster;

/// The `sh` blocks of the README section headed `heading`, in order.
fn blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b[..b.find("```").unwrap()].to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walk_throughs_run() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let walk = blocks(&readme, "## Walk-through with curl");
    assert_eq!(walk.len(), 2, "the curl and the CLI walk-through");
    let external = blocks(&readme, "## External parties");
    assert_eq!(external.len(), 1, "the external party walk-through");
    let tmp = tempfile::tempdir().unwrap();
    let dev = DevCluster::start(3, &tmp.path().join(".sigil-dev"), &[]).await;
    // The CLI blocks use the functions the curl block defines.
    let script = format!("set -euo pipefail\n{}\n{}\n{}", walk[0], walk[1], external[0]);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(tmp.path())
        .env("SIGIL_BIN", env!("CARGO_BIN_EXE_sigil"))
        .env("SIGIL_PORT", dev.http.to_string())
        .env("SIGIL_URL", dev.url(0))
        .env("SIGIL_GRPC_PORT", dev.grpc.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walk-through failed\n{stdout}\n{stderr}\n{}",
        dev.logs()
    );
    for want in [
        "Signature Verified Successfully",
        "\"code\":\"replayed\"",
        "signature OK (frost-secp256k1-tr)",
        "attested by every party",
        r#"{"epoch":1,"history":[0]}"#,
        "audit chain intact",
        r#"{"parties":[0,65535],"external":["admin"]}"#,
        "[0,65535]",
        "the nodes alone: refused",
        "[0,1,65535]",
        "signature OK (frost-ed25519)",
        "signature OK (ecdsa-secp256k1)",
    ] {
        assert!(
            stdout.contains(want),
            "walk-through output lacks {want:?}\n{stdout}\n{stderr}"
        );
    }
}
