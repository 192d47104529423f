//! What Sigil's clients and nodes share on the wire, without either's
//! machinery: the client request tokens ([`token`]). The node
//! (`sigil-node`) verifies them; `sigil-client` and the CLI make them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod token;
