//! The master key leaves the environment once taken (its own test binary:
//! it changes the process environment).
#![allow(clippy::unwrap_used)]

use sigil_store::{take_master_key_env, MasterKey, MASTER_KEY_ENV};

#[test]
fn the_master_key_is_taken_out_of_the_environment() {
    let hex = "ab".repeat(32);
    std::env::set_var(MASTER_KEY_ENV, &hex);
    take_master_key_env();
    assert!(std::env::var(MASTER_KEY_ENV).is_err(), "removed from the environment");
    let key = MasterKey::load(None).unwrap();
    assert_eq!(key.to_hex().as_str(), hex, "still usable by the process");
    assert!(MasterKey::load(None).is_ok(), "more than once");
}
