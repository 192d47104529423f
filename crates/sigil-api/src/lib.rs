//! What Sigil's clients and nodes share on the wire, without either's
//! machinery: the client request tokens ([`token`]; the node
//! (`sigil-node`) verifies them, `sigil-client` and the CLI make them)
//! and the canonical bytes of a key record ([`record`]; every party of a
//! key signs them).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod record;
pub mod token;
