//! Client tokens: any string as a bearer token, checked by a verifier
//! with one Ed25519 client.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sigil_node::auth::{ClientEntry, Role, Verifier};

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let (_, public_key) = sigil_node::auth::generate_client_key(false).expect("key");
        let clients = vec![ClientEntry {
            id: "alice".into(),
            public_key,
            roles: vec![Role::Create],
        }];
        Verifier::new("fuzz", &clients, 0).expect("verifier")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verifier().check(token, "POST", "/v1/keys", Some(b"{}"));
        let _ = verifier().check(token, "GET", "/v1/keys", None);
    }
});
