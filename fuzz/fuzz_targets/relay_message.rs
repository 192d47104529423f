//! What an external party (or a node, for it) sends the relay: the
//! message JSON, then the relay's checks (membership, schedule, signature;
//! a confirmation of the record put to the party) on both paths into a
//! mailbox, and the party-side open.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sigil_crypto::relay::{RelayMessage, SessionSecret, EXTERNAL_PARTY};
use sigil_node::relay::{envelope, Mailbox, MailboxSpec, PartyKeys, SessionKindView};

struct Fixture {
    mailbox: Mailbox,
    node: ed25519_dalek::VerifyingKey,
    secret: SessionSecret,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let party = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let node = ed25519_dalek::SigningKey::from_bytes(&[2; 32]).verifying_key();
        let secret = SessionSecret::generate(&mut rand::rngs::OsRng);
        let keys = PartyKeys {
            verifying_key: hex::encode(party.verifying_key().to_bytes()),
            hpke_public_key: hex::encode(secret.public_key()),
        };
        let mailbox = Mailbox::new(MailboxSpec {
            session_id: [0; 32],
            kind: SessionKindView::Dkg,
            key_id: "k".into(),
            scheme: "frost-ed25519".into(),
            client: "c".into(),
            parties: vec![0, 1, EXTERNAL_PARTY],
            threshold: 2,
            coordinator: 0,
            expects: sigil_crypto::frost::dkg::expects,
            keys,
            identities: HashMap::from([(0, node), (1, node)]),
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(3600),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        mailbox.ask_confirmation(b"record".to_vec(), serde_json::json!({}));
        Fixture { mailbox, node, secret }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = serde_json::from_slice::<RelayMessage>(data) else {
        return;
    };
    let f = fixture();
    let _ = f.mailbox.submit(&m);
    let _ = f.mailbox.accept_from_node(1, &envelope(m.clone(), true));
    let _ = m.open(&f.node, Some(&f.secret));
});
