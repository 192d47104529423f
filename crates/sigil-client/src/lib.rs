//! `sigil-client`: a typed client of Sigil's REST API that signs every
//! request with the client's key ([`rest`]), and the *external party*: a
//! client that holds one share of a key itself and takes part in its key
//! generation and signatures through one node, the relay ([`party`],
//! [`external`]). Its share lives sealed in a file of the caller's
//! choosing ([`keyfile`]) and is never sent anywhere.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use sigil_client::{external, keyfile::Unlock, party, rest};
//! let tokens = rest::Tokens::load("alice", "alice.key".as_ref(), "sigil-dev")?;
//! let client = rest::Client::with_url("http://127.0.0.1:7070", tokens);
//! let identities = party::parse_identities(&std::fs::read_to_string("certs/identities.json")?)?;
//! let unlock = Unlock::Passphrase(zeroize::Zeroizing::new("a long passphrase".into()));
//! // 2-of-2: node 0 and this process.
//! let key = external::keygen(&client, &identities, external::KeygenArgs {
//!     scheme: "frost-ed25519".parse()?,
//!     threshold: 2,
//!     parties: Some(vec![0]),
//!     label: None,
//!     require_external: false,
//!     key_file: "alice-share.json".as_ref(),
//!     unlock: &unlock,
//!     primes: None, // ECDSA only: made here when not given
//! }).await?;
//! let sig = external::sign(&client, &identities, "alice-share.json".as_ref(), &unlock, b"hello", &[]).await?;
//! # let _ = (key, sig); Ok(()) }
//! ```
//!
//! Trust: the party checks every message's sender against the caller's
//! own `identities.json` (never the relay's word), seals its
//! point-to-point messages to each node's session key (HPKE), and checks
//! the cluster's result against its own computation.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod external;
pub mod grpc;
pub mod keyfile;
pub mod rest;

/// The external party's runner (`sigil_crypto::party`): the protocol
/// over a [`party::Relay`].
pub use sigil_crypto::party;

pub use grpc::GrpcClient;
pub use rest::{Client, KeyOptions, Tokens};
